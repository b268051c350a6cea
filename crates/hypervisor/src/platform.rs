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
    i8042: Arc<Mutex<I8042>>,
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
            i8042.clone(),
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
            i8042,
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

    /// The CMOS RTC, for snapshots.
    pub(crate) fn rtc(&self) -> Arc<Mutex<Rtc>> {
        self.rtc.clone()
    }

    /// The keyboard controller, for snapshots.
    pub(crate) fn i8042(&self) -> Arc<Mutex<I8042>> {
        self.i8042.clone()
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
/// disk or CD-ROM, a `bootorder` ([`bootorder`], F-BOOT-04). Returns the device, for
/// snapshots.
pub fn add_fw_cfg(
    pio: &mut Bus,
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    vcpus: u32,
    boot_slots: BootSlots,
    boot_device: Option<BootDevice>,
) -> Result<Arc<Mutex<FwCfg>>, Error> {
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
    if let Some(order) = bootorder(boot_device, boot_slots) {
        files.push(("bootorder", order));
    }
    for (name, bytes) in files {
        dev.add_file(name, bytes).map_err(|e| Error::Device {
            what: "fw_cfg",
            reason: e.to_string(),
        })?;
    }
    let dev = Arc::new(Mutex::new(dev));
    insert(
        pio,
        dev.clone(),
        fw_cfg::FW_CFG_BASE,
        fw_cfg::FW_CFG_PORT_LEN,
        "fw_cfg",
    )?;
    Ok(dev)
}

/// PCI slots of the bootable devices on bus 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootSlots {
    /// The first virtio-blk disk.
    pub disk: Option<u8>,
    /// The virtio-scsi CD-ROM.
    pub cdrom: Option<u8>,
}

/// The `bootorder` file for a BIOS (spec §5.3 item 3), NUL-terminated as vmd writes it. A
/// forced device is the only entry, then `HALT` (no fallback, as in vmd; a missing device or
/// a BIOS net boot is just `HALT`). By default the first disk, then the CD-ROM, so a blank
/// disk falls through to an installer CD; with neither, no file.
fn bootorder(device: Option<BootDevice>, slots: BootSlots) -> Option<Vec<u8>> {
    let disk = slots.disk.map(bootorder_disk);
    let cdrom = slots.cdrom.map(bootorder_cdrom);
    let entries: Vec<String> = match device {
        None if disk.is_none() && cdrom.is_none() => return None,
        None => disk.into_iter().chain(cdrom).collect(),
        Some(BootDevice::Disk) => disk.into_iter().collect(),
        Some(BootDevice::Cdrom) => cdrom.into_iter().collect(),
        Some(BootDevice::Net) => Vec::new(),
    };
    let mut file = String::new();
    for e in entries {
        file.push_str(&e);
        file.push('\n');
    }
    file.push_str("HALT\0");
    Some(file.into_bytes())
}

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

/// The virtio-blk device at PCI `slot` (SeaBIOS writes device numbers in hex).
fn bootorder_disk(slot: u8) -> String {
    format!("/pci@i0cf8/*@{slot:x}")
}

/// Target 0, LUN 0 of the virtio-scsi controller at `slot`, as SeaBIOS names it
/// (`/*@0/*@<target>,<lun>`). vmd 7.x writes LUN `40000100` because its REPORT LUNS answer
/// makes SeaBIOS decode that number; our device reports LUN 0 in the SAM format.
fn bootorder_cdrom(slot: u8) -> String {
    format!("/pci@i0cf8/*@{slot:x}/*@0/*@0,0")
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
        let none = BootSlots::default();
        let disk = BootSlots {
            disk: Some(2),
            cdrom: None,
        };
        let both = BootSlots {
            disk: Some(2),
            cdrom: Some(0x1f),
        };
        let cd_only = BootSlots {
            disk: None,
            cdrom: Some(3),
        };
        let order = |d, s| bootorder(d, s).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(order(None, none), None);
        assert_eq!(order(None, disk).unwrap(), "/pci@i0cf8/*@2\nHALT\0");
        assert_eq!(
            order(None, both).unwrap(),
            "/pci@i0cf8/*@2\n/pci@i0cf8/*@1f/*@0/*@0,0\nHALT\0",
            "a blank disk falls through to the CD"
        );
        assert_eq!(
            order(Some(BootDevice::Disk), both).unwrap(),
            "/pci@i0cf8/*@2\nHALT\0"
        );
        assert_eq!(
            order(Some(BootDevice::Cdrom), both).unwrap(),
            "/pci@i0cf8/*@1f/*@0/*@0,0\nHALT\0"
        );
        assert_eq!(order(Some(BootDevice::Disk), cd_only).unwrap(), "HALT\0");
        assert_eq!(order(Some(BootDevice::Cdrom), disk).unwrap(), "HALT\0");
        assert_eq!(order(Some(BootDevice::Net), both).unwrap(), "HALT\0");
        assert_eq!(BootDevice::from_name("net"), Some(BootDevice::Net));
        assert_eq!(BootDevice::from_name("floppy"), None);
    }
}
