//! The legacy devices of every VM (docs/platform.md), their bus ranges and interrupt lines.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use devices::fw_cfg::{self, E820Entry, FwCfg};
use devices::{AcpiPm, Bus, ExitSignal, Rtc, Serial, I8042};
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::Error;
use crate::layout::{MemType, MemoryLayout};
use crate::lock;
use crate::vm::ConsoleFeed;

/// The devices the supervisor thread talks to after start.
pub struct Platform {
    serial: Arc<Mutex<Serial>>,
    rtc: Arc<Mutex<Rtc>>,
    pm: Arc<Mutex<AcpiPm>>,
    /// Signalled by KVM when the guest acknowledges the level-triggered SCI.
    sci_resample: EventFd,
}

/// An eventfd wired to KVM as the interrupt line `gsi`.
fn irq_line(vm: &VmFd, gsi: u32, what: &'static str) -> Result<EventFd, Error> {
    let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::host(what))?;
    vm.register_irqfd(&fd, gsi).map_err(Error::kvm(what))?;
    Ok(fd)
}

fn insert(
    bus: &mut Bus,
    dev: Arc<Mutex<dyn devices::BusDevice>>,
    base: u16,
    len: u64,
    what: &'static str,
) -> Result<(), Error> {
    bus.insert(dev, u64::from(base), len)
        .map_err(|e| Error::Device {
            what,
            reason: e.to_string(),
        })
}

impl Platform {
    /// Create the devices and map them on `pio`.
    pub fn new(
        vm: &Arc<VmFd>,
        pio: &mut Bus,
        layout: &MemoryLayout,
        exit: ExitSignal,
        console_out: Box<dyn Write + Send>,
    ) -> Result<Self, Error> {
        let serial = Arc::new(Mutex::new(Serial::new(
            console_out,
            irq_line(vm, devices::serial::COM1_IRQ, "COM1 interrupt")?,
        )));
        insert(
            pio,
            serial.clone(),
            devices::serial::COM1_BASE,
            devices::serial::SERIAL_PORT_LEN,
            "COM1",
        )?;
        let rtc = Arc::new(Mutex::new(Rtc::new(
            layout.ram_below_4g(),
            layout.high_size,
            Some(irq_line(vm, devices::rtc::RTC_IRQ, "RTC interrupt")?),
        )));
        insert(
            pio,
            rtc.clone(),
            devices::rtc::RTC_BASE,
            devices::rtc::RTC_PORT_LEN,
            "RTC",
        )?;
        let i8042 = Arc::new(Mutex::new(I8042::new(exit.clone())));
        insert(
            pio,
            i8042,
            devices::i8042::I8042_DATA_PORT,
            devices::i8042::I8042_PORT_LEN,
            "i8042",
        )?;

        let sci = EventFd::new(EFD_NONBLOCK).map_err(Error::host("SCI eventfd"))?;
        let sci_resample =
            EventFd::new(EFD_NONBLOCK).map_err(Error::host("SCI resample eventfd"))?;
        vm.register_irqfd_with_resample(&sci, &sci_resample, devices::pm::SCI_IRQ)
            .map_err(Error::kvm("SCI interrupt"))?;
        let pm = Arc::new(Mutex::new(AcpiPm::new(exit, sci)));
        insert(
            pio,
            pm.clone(),
            devices::pm::PM_BASE,
            devices::pm::PM_PORT_LEN,
            "ACPI PM",
        )?;
        Ok(Platform {
            serial,
            rtc,
            pm,
            sci_resample,
        })
    }

    /// Move up to `max` bytes of console input from `fd` into the UART.
    pub(crate) fn feed_console(&self, fd: RawFd, max: usize) -> ConsoleFeed {
        let room = lock(&self.serial).input_space().min(max);
        if room == 0 {
            return ConsoleFeed::Full;
        }
        let mut buf = [0u8; 256];
        let want = room.min(buf.len());
        match nix_read(fd, &mut buf[..want]) {
            Ok(0) => ConsoleFeed::Closed,
            Ok(n) => {
                lock(&self.serial).enqueue_input(&buf[..n]);
                ConsoleFeed::Fed
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                ConsoleFeed::Fed
            }
            Err(_) => ConsoleFeed::Closed,
        }
    }

    /// Whether the UART can take more input.
    pub(crate) fn console_has_room(&self) -> bool {
        lock(&self.serial).input_space() > 0
    }

    /// The eventfd KVM signals when the guest has serviced the SCI.
    pub(crate) fn sci_resample_fd(&self) -> RawFd {
        self.sci_resample.as_raw_fd()
    }

    /// The guest serviced the SCI: re-assert it if events are still pending.
    pub(crate) fn sci_resampled(&self) {
        let _ = self.sci_resample.read();
        lock(&self.pm).resample();
    }

    /// COM1, for [`crate::VmHandle`].
    pub(crate) fn serial(&self) -> Arc<Mutex<Serial>> {
        self.serial.clone()
    }

    /// The ACPI PM block, for [`crate::VmHandle`].
    pub(crate) fn pm(&self) -> Arc<Mutex<AcpiPm>> {
        self.pm.clone()
    }

    /// Periodic device work: RTC update interrupts.
    pub(crate) fn tick(&self) {
        lock(&self.rtc).tick();
    }
}

/// Map fw_cfg (spec §5.3 item 4, F-HW-10) on `pio`. Every VM gets it, as in vmd: only a BIOS
/// reads it (direct-boot kernels find no ACPI/DT node for it and never probe the ports).
/// Files: `etc/e820` (the memory map), `etc/screen-and-debug` = 0 (so SeaBIOS does not print
/// its screen output twice on the serial console, as vmd sets it), and, when the VM has a
/// disk, a `bootorder` that boots the first virtio-blk disk and nothing else (F-BOOT-04).
pub fn add_fw_cfg(
    pio: &mut Bus,
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    vcpus: u32,
    boot_disk_slot: Option<u8>,
    boot_device: Option<BootDevice>,
) -> Result<(), Error> {
    let cpus = u16::try_from(vcpus).unwrap_or(u16::MAX);
    let mut dev = FwCfg::new(mem.clone(), layout.size, cpus);
    let e820: Vec<E820Entry> = layout
        .e820()
        .iter()
        .map(|r| E820Entry {
            addr: r.start,
            size: r.len,
            kind: match r.kind {
                MemType::Ram => fw_cfg::E820_RAM,
                MemType::Reserved => fw_cfg::E820_RESERVED,
            },
        })
        .collect();
    let mut files = vec![
        ("etc/e820", fw_cfg::e820_file(&e820)),
        ("etc/screen-and-debug", 0u32.to_le_bytes().to_vec()),
    ];
    if let Some(order) = bootorder(boot_device, boot_disk_slot)? {
        files.push(("bootorder", order));
    }
    for (name, bytes) in files {
        dev.add_file(name, bytes).map_err(|e| Error::Device {
            what: "fw_cfg",
            reason: e.to_string(),
        })?;
    }
    insert(
        pio,
        Arc::new(Mutex::new(dev)),
        fw_cfg::FW_CFG_BASE,
        fw_cfg::FW_CFG_PORT_LEN,
        "fw_cfg",
    )
}

/// SeaBIOS `bootorder` for "boot device disk" (spec §5.3 item 3): the virtio-blk device at
/// PCI `slot` (SeaBIOS writes device numbers in hex), then `HALT` so it never falls back to
/// another device; NUL-terminated as vmd writes it.
/// The `bootorder` file for a BIOS, if any: the first disk by default or when forced, `HALT`
/// for a forced disk boot without a disk and for a BIOS net boot (vmd has none either).
fn bootorder(device: Option<BootDevice>, disk_slot: Option<u8>) -> Result<Option<Vec<u8>>, Error> {
    Ok(match (device, disk_slot) {
        (None | Some(BootDevice::Disk), Some(slot)) => Some(bootorder_disk(slot)),
        (None, None) => None,
        (Some(BootDevice::Disk | BootDevice::Net), _) => Some(BOOTORDER_HALT.to_vec()),
        (Some(BootDevice::Cdrom), _) => {
            return Err(Error::Device {
                what: "boot device",
                reason: "cdrom: this VMM has no CD-ROM device yet".into(),
            })
        }
    })
}

/// A `bootorder` that boots nothing: SeaBIOS halts.
const BOOTORDER_HALT: &[u8] = b"HALT\0";

/// The device a BIOS boots from (`boot device`, `vmctl start -B`; spec §5.3 item 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// The first disk.
    Disk,
    /// The CD-ROM.
    Cdrom,
    /// The network (with a BIOS: nothing, as in vmd).
    Net,
}

impl BootDevice {
    /// The device named as vm.conf and `vmctl start -B` write it.
    pub fn from_name(name: &str) -> Option<BootDevice> {
        match name {
            "disk" => Some(BootDevice::Disk),
            "cdrom" => Some(BootDevice::Cdrom),
            "net" => Some(BootDevice::Net),
            _ => None,
        }
    }
}

fn bootorder_disk(slot: u8) -> Vec<u8> {
    format!("/pci@i0cf8/*@{slot:x}\nHALT\0").into_bytes()
}

fn nix_read(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the whole call, and
    // `fd` stays open while the VM owns its console input.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_device_chooses_the_bootorder() {
        assert_eq!(bootorder(None, None).unwrap(), None);
        assert_eq!(
            bootorder(None, Some(2)).unwrap().unwrap(),
            b"/pci@i0cf8/*@2\nHALT\0"
        );
        assert_eq!(
            bootorder(Some(BootDevice::Disk), Some(3)).unwrap().unwrap(),
            b"/pci@i0cf8/*@3\nHALT\0"
        );
        assert_eq!(
            bootorder(Some(BootDevice::Disk), None).unwrap().unwrap(),
            b"HALT\0"
        );
        assert_eq!(
            bootorder(Some(BootDevice::Net), Some(2)).unwrap().unwrap(),
            b"HALT\0"
        );
        assert!(bootorder(Some(BootDevice::Cdrom), Some(2)).is_err());
        assert_eq!(BootDevice::from_name("net"), Some(BootDevice::Net));
        assert_eq!(BootDevice::from_name("floppy"), None);
    }

    #[test]
    fn bootorder_names_the_slot_in_hex() {
        assert_eq!(bootorder_disk(2), b"/pci@i0cf8/*@2\nHALT\0");
        assert_eq!(bootorder_disk(0x1f), b"/pci@i0cf8/*@1f\nHALT\0");
    }
}
