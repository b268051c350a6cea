//! Guest-visible device models: the port-I/O and MMIO buses, the legacy PC devices
//! (16550 COM1, CMOS RTC, i8042, ACPI PM block, fw_cfg), PCI bus 0 ([`pci`]: host bridge,
//! configuration mechanism 1, ECAM, BARs, INTx and MSI-X) and the virtio-pci devices
//! ([`virtio`]).
//!
//! This crate owns the register-level behaviour of each device and nothing else: it never
//! touches `/dev/kvm`, never opens a path, and never panics or blocks on anything a guest
//! writes to a register. Interrupts leave through [`vmm_sys_util::eventfd::EventFd`]s that
//! the hypervisor wires to KVM irqfds; requests to end the VM leave through [`ExitSignal`].

pub mod bus;
pub mod exit;
pub mod fw_cfg;
pub mod i8042;
pub mod pci;
pub mod pm;
pub mod rtc;
pub mod serial;
pub mod state;
pub mod virtio;

#[cfg(test)]
mod testutil;

pub use bus::{Bus, BusDevice, BusError};
pub use exit::{ExitRequest, ExitSignal};
pub use fw_cfg::FwCfg;
pub use i8042::I8042;
pub use pm::AcpiPm;
pub use rtc::Rtc;
pub use serial::Serial;
pub use state::StateError;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    /// The four legacy devices at their docs/platform.md ports, driven through the bus.
    #[test]
    fn platform_ports_through_the_bus() {
        let exit = ExitSignal::new().unwrap();
        let fd = || EventFd::new(EFD_NONBLOCK).unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        struct Out(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Out {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut bus = Bus::new();
        let serial = Serial::new(Box::new(Out(out.clone())), fd());
        bus.insert(
            Arc::new(Mutex::new(serial)),
            serial::COM1_BASE.into(),
            serial::SERIAL_PORT_LEN,
        )
        .unwrap();
        let rtc = Rtc::new(256 << 20, 0, None);
        bus.insert(
            Arc::new(Mutex::new(rtc)),
            rtc::RTC_BASE.into(),
            rtc::RTC_PORT_LEN,
        )
        .unwrap();
        let kbc = I8042::new(exit.clone());
        bus.insert(
            Arc::new(Mutex::new(kbc)),
            i8042::I8042_DATA_PORT.into(),
            i8042::I8042_PORT_LEN,
        )
        .unwrap();
        let pm = AcpiPm::new(exit.clone(), fd());
        bus.insert(
            Arc::new(Mutex::new(pm)),
            pm::PM_BASE.into(),
            pm::PM_PORT_LEN,
        )
        .unwrap();

        assert!(bus.write(0x3f8, b"K"));
        assert_eq!(&*out.lock().unwrap(), b"K");
        assert!(bus.write(0x70, &[0x15]));
        let mut b = [0u8; 1];
        assert!(bus.read(0x71, &mut b));
        assert_eq!(b, [0x80], "640 KiB base memory, low byte");
        assert!(bus.read(0x64, &mut b));
        assert_eq!(b[0] & 0x01, 0, "i8042 output buffer empty");
        let mut t = [0u8; 4];
        assert!(bus.read(0x608, &mut t));
        assert!(!bus.read(0x60d, &mut b), "past the PM block");
        assert_eq!(exit.pending(), None);
        assert!(bus.write(0x60c, &[pm::RESET_VALUE]));
        assert_eq!(exit.pending(), Some(ExitRequest::Reboot));
    }
}
