//! What to boot, and the VMM command lines that boot it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The QEMU binary the validation tests use.
pub const QEMU: &str = "qemu-system-x86_64";

/// A VM to boot: image, optional initrd and command line, memory, vCPUs, disks and CD-ROM.
#[derive(Clone, Debug)]
pub struct Boot {
    image: PathBuf,
    firmware: bool,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
    mem_mib: u64,
    cpus: u32,
    disks: Vec<PathBuf>,
    cdrom: Option<PathBuf>,
}

impl Boot {
    /// A directly booted kernel (PVH ELF, bzImage, OpenBSD ELF): 256 MiB, 1 vCPU.
    pub fn kernel(image: impl Into<PathBuf>) -> Boot {
        Boot {
            image: image.into(),
            firmware: false,
            initrd: None,
            cmdline: None,
            mem_mib: 256,
            cpus: 1,
            disks: Vec::new(),
            cdrom: None,
        }
    }

    /// A BIOS image started at the reset vector.
    pub fn bios(image: impl Into<PathBuf>) -> Boot {
        Boot {
            firmware: true,
            ..Boot::kernel(image)
        }
    }

    /// Initial ramdisk (PVH module / Linux ramdisk).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Boot {
        self.initrd = Some(path.into());
        self
    }

    /// Kernel command line; the guests read their test words from it.
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Boot {
        self.cmdline = Some(cmdline.into());
        self
    }

    /// Guest memory in MiB (default 256).
    pub fn mem_mib(mut self, mib: u64) -> Boot {
        self.mem_mib = mib;
        self
    }

    /// Number of vCPUs (default 1).
    pub fn cpus(mut self, cpus: u32) -> Boot {
        self.cpus = cpus;
        self
    }

    /// A raw disk image on a virtio-blk device (repeatable: one device per disk, in order).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Boot {
        self.disks.push(path.into());
        self
    }

    /// An ISO image in a CD-ROM on virtio-scsi (target 0, LUN 0).
    pub fn cdrom(mut self, path: impl Into<PathBuf>) -> Boot {
        self.cdrom = Some(path.into());
        self
    }

    /// `vmrun -b IMAGE -m SIZE -p CPUS [-d DISK]... [-r ISO] [--initrd F] [--cmdline S]`:
    /// vmrun sniffs the image, so kernels and BIOS images take the same flag.
    pub fn vmrun_command(&self, vmrun: &Path) -> Command {
        let mut c = Command::new(vmrun);
        c.arg("-b")
            .arg(&self.image)
            .arg("-m")
            .arg(format!("{}M", self.mem_mib))
            .arg("-p")
            .arg(self.cpus.to_string());
        for disk in &self.disks {
            c.arg("-d").arg(disk);
        }
        if let Some(iso) = &self.cdrom {
            c.arg("-r").arg(iso);
        }
        if let Some(initrd) = &self.initrd {
            c.arg("--initrd").arg(initrd);
        }
        if let Some(cmdline) = &self.cmdline {
            c.arg("--cmdline").arg(cmdline);
        }
        c
    }

    /// The same VM under QEMU/KVM (q35: full ACPI with PM1a_CNT, which the
    /// guests' poweroff needs). `-cpu host` minus ARCH_CAPABILITIES, which a
    /// PVM host refuses to set, and minus PV send-IPI, which hangs there.
    /// Disks become transitional virtio-blk-pci devices, the CD-ROM a scsi-cd
    /// on a virtio-scsi-pci controller; `-nodefaults` leaves out everything else.
    pub fn qemu_command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(["-enable-kvm", "-M", "q35", "-cpu"])
            .arg("host,-arch-capabilities,-kvm-pv-ipi")
            .args([
                "-nographic",
                "-no-reboot",
                "-nodefaults",
                "-serial",
                "stdio",
            ])
            .arg("-m")
            .arg(self.mem_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string());
        if self.firmware {
            c.arg("-bios").arg(&self.image);
        } else {
            c.arg("-kernel").arg(&self.image);
        }
        if let Some(initrd) = &self.initrd {
            c.arg("-initrd").arg(initrd);
        }
        if let Some(cmdline) = &self.cmdline {
            c.arg("-append").arg(cmdline);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            c.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=disk{i}",
                    qemu_path(disk)
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{i}"));
        }
        if let Some(iso) = &self.cdrom {
            c.args(["-device", "virtio-scsi-pci,id=scsi", "-drive"])
                .arg(format!(
                    "file={},format=raw,if=none,id=cd,media=cdrom,readonly=on",
                    qemu_path(iso)
                ))
                .args(["-device", "scsi-cd,drive=cd,bus=scsi.0"]);
        }
        c
    }
}

/// A path inside a QEMU option string, where a comma must be doubled.
fn qemu_path(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Why QEMU/KVM tests cannot run here, or None when they can.
pub fn qemu_unavailable_reason() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("/dev/kvm is not usable: {e}"));
    }
    match Command::new(QEMU).arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("{QEMU} --version failed: {}", o.status)),
        Err(e) => Some(format!("{QEMU} not found: {e}")),
    }
}
