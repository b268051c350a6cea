//! Guest-visible device models: the port-I/O and MMIO buses and the legacy PC devices
//! (16550 COM1, CMOS RTC, i8042, ACPI PM block).
//!
//! This crate owns the register-level behaviour of each device and nothing else: it never
//! touches `/dev/kvm`, never opens a path, and never panics or blocks on anything a guest
//! writes to a register. Interrupts leave through [`vmm_sys_util::eventfd::EventFd`]s that
//! the hypervisor wires to KVM irqfds; requests to end the VM leave through [`ExitSignal`].

pub mod bus;
pub mod exit;
pub mod i8042;
pub mod pm;
pub mod rtc;
pub mod serial;

#[cfg(test)]
mod testutil;

pub use bus::{Bus, BusDevice, BusError};
pub use exit::{ExitRequest, ExitSignal};
pub use i8042::I8042;
pub use pm::AcpiPm;
pub use rtc::Rtc;
pub use serial::Serial;
