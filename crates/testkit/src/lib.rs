//! Test guests and a serial-console harness for the VMM.
//!
//! This crate owns:
//! - tiny guests, one per boot path the VMM supports (PVH ELF, Linux bzImage,
//!   OpenBSD-style ELF plain and gzipped, BIOS reset vector), built from the C
//!   and assembly sources in `guest/` by `build.rs` with the system gcc and
//!   binutils; [`guest`] gives their paths;
//! - the line protocol those guests print on COM1 (documented in README.md)
//!   and host-side parsers for it ([`E820Entry`], [`fnv1a32`], [`blk_pattern`]);
//! - a harness ([`Vmm`]) that runs any VMM command line (our `vmrun`, QEMU),
//!   feeds its stdin, reads its stdout line by line with deadlines and never
//!   leaves the process behind.
//!
//! It never talks to KVM itself and holds no VMM logic: it only builds guest
//! images and drives a VMM from outside, as a user would.

mod boot;
mod guests;
mod harness;
pub mod iso;
mod protocol;

pub use boot::{qemu_unavailable_reason, Boot, QEMU};
pub use guests::{guest, qemu_loader_shim, Guest};
pub use harness::{HarnessError, Vmm};
pub use protocol::{blk_pattern, fnv1a32, parse_e820, E820Entry, SECTOR_SIZE};

/// Exit statuses of `vmrun`, our foreground VMM command.
pub mod vmrun_exit {
    /// The guest powered off (ACPI S5).
    pub const POWEROFF: i32 = 0;
    /// A VMM error (bad file, bad value, KVM failure).
    pub const ERROR: i32 = 1;
    /// Bad command-line usage.
    pub const USAGE: i32 = 2;
    /// The guest rebooted (reset register, i8042 0xFE, triple fault).
    pub const REBOOT: i32 = 3;
    /// The guest crashed (internal error, unhandled exit).
    pub const CRASH: i32 = 4;
}
