//! `vmrun`: boot one VM in the foreground with its console on stdin/stdout, and exit when
//! it stops. For debugging, scripts and benchmarks; the daemon runs VMs the same way.
//!
//! Exit status: 0 guest powered off, 3 guest rebooted, 4 guest crashed, 5 stopped by a
//! second SIGINT/SIGTERM, 1 error before or while running (bad image, bad size, KVM
//! failure), 2 usage error. The first SIGINT/SIGTERM presses the ACPI power button.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hypervisor::{boot, BootDevice, BootImage, CdromImage, ExitReason, Vm, VmConfig};

mod signals;
mod size;

const EXIT_POWEROFF: u8 = 0;
const EXIT_ERROR: u8 = 1;
const EXIT_REBOOT: u8 = 3;
const EXIT_CRASH: u8 = 4;
const EXIT_STOPPED: u8 = 5;
/// vmd's default memory size (F-LIFE-04).
const DEFAULT_MEMORY: &str = "512M";

#[derive(Parser, Debug)]
#[command(
    name = "vmrun",
    version,
    about = "Boot one VM in the foreground, console on stdio",
    after_help = "Exit status: 0 poweroff, 3 reboot, 4 crash, 1 error, 2 usage."
)]
struct Args {
    /// Kernel (bzImage, PVH ELF, OpenBSD ELF, gzip'd ELF) or BIOS image to boot.
    #[arg(short = 'b', value_name = "path")]
    boot: PathBuf,
    /// Memory size: bytes, or a number with K, M, G or T.
    #[arg(short = 'm', value_name = "size", default_value = DEFAULT_MEMORY)]
    memory: String,
    /// Number of vCPUs.
    #[arg(short = 'p', value_name = "cpus", default_value_t = 1)]
    cpus: u32,
    /// Disk image, `[raw:|qcow2:]path` (virtio-blk; up to 4).
    #[arg(short = 'd', value_name = "disk")]
    disk: Vec<String>,
    /// Boot device for a BIOS: disk, cdrom or net (spec §5.3).
    #[arg(short = 'B', value_name = "device", value_parser = ["disk", "cdrom", "net"])]
    boot_device: Option<String>,
    /// ISO image for the CD-ROM (virtio-scsi, read-only).
    #[arg(short = 'r', value_name = "iso")]
    iso: Option<PathBuf>,
    /// Initial ramdisk for a Linux or PVH kernel.
    #[arg(long, value_name = "path")]
    initrd: Option<PathBuf>,
    /// Kernel command line for a Linux or PVH kernel.
    #[arg(long, value_name = "string", default_value = "")]
    cmdline: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any thread exists, so every thread inherits the mask and the signals wait
    // for the one thread that handles them.
    if let Err(e) = signals::block() {
        eprintln!("vmrun: blocking signals: {e}");
        return ExitCode::from(EXIT_ERROR);
    }
    match run(args) {
        Ok(reason) => ExitCode::from(report(&reason)),
        Err(e) => {
            eprintln!("vmrun: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn report(reason: &ExitReason) -> u8 {
    match reason {
        ExitReason::Poweroff => {
            eprintln!("vmrun: guest powered off");
            EXIT_POWEROFF
        }
        ExitReason::Reboot => {
            eprintln!("vmrun: guest rebooted");
            EXIT_REBOOT
        }
        ExitReason::Crash(why) => {
            eprintln!("vmrun: guest crashed: {why}");
            EXIT_CRASH
        }
        ExitReason::Stopped => {
            eprintln!("vmrun: VM stopped");
            EXIT_STOPPED
        }
    }
}

/// Open `[raw:|qcow2:]path` for reading and writing (locked against a second writer).
fn open_disk(spec: &str) -> Result<Box<dyn disk::BlockBackend>, String> {
    let (format, path) = match spec.split_once(':') {
        Some(("raw", p)) => (Some(disk::Format::Raw), p),
        Some(("qcow2", p)) => (Some(disk::Format::Qcow2), p),
        _ => (None, spec),
    };
    disk::open_path(std::path::Path::new(path), format, true).map_err(|e| e.to_string())
}

fn open(path: &PathBuf) -> Result<File, String> {
    File::open(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(args: Args) -> Result<ExitReason, String> {
    let disks = args
        .disk
        .iter()
        .map(|d| open_disk(d))
        .collect::<Result<Vec<_>, _>>()?;
    let cdrom = match &args.iso {
        Some(p) => Some(CdromImage {
            file: open(p)?,
            name: p.display().to_string(),
        }),
        None => None,
    };
    let memory =
        size::parse(&args.memory).map_err(|e| format!("memory size {:?}: {e}", args.memory))?;
    let name = args.boot.display().to_string();
    let bytes = boot::read_image(open(&args.boot)?, &name).map_err(|e| e.to_string())?;
    let (bytes, kind) = boot::classify(bytes, &name).map_err(|e| e.to_string())?;
    let initrd = match &args.initrd {
        Some(p) => {
            Some(boot::read_image(open(p)?, &p.display().to_string()).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let console_out = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("stdout: {e}"))?;
    let console_in = io::stdin().as_fd().try_clone_to_owned().ok();
    let vm = Vm::new(VmConfig {
        memory,
        vcpus: args.cpus,
        boot: BootImage {
            bytes,
            kind,
            name,
            initrd,
            cmdline: args.cmdline,
        },
        console_out: Box::new(File::from(console_out)),
        console_in,
        kvm: None,
        disks,
        cdrom,
        nics: Vec::new(),
        boot_device: args.boot_device.as_deref().and_then(BootDevice::from_name),
    })
    .map_err(|e| e.to_string())?;
    signals::forward_to(vm.handle());
    vm.run().map_err(|e| e.to_string())
}
