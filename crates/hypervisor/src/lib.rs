//! One virtual machine on `/dev/kvm`: guest memory laid out as vmd does (spec §5.2), the
//! in-kernel irqchip and PIT, vCPU threads with CPUID and boot state, the boot loaders
//! (Linux bzImage, PVH, OpenBSD ELF, BIOS), ACPI/MP tables, and the run loop that turns the
//! guest's end into an [`ExitReason`].
//!
//! This crate never opens a path on its own (images and `/dev/kvm` come in as open files or
//! bytes, so a sandboxed VM process can use it), never panics on anything a guest or an image
//! does, and leaves no KVM object behind when building a VM fails.

pub mod boot;
pub mod cpu;
pub mod cpuid;
mod disk;
mod error;
pub mod firmware;
pub mod layout;
mod pause;
mod pci;
mod platform;
pub mod snapshot;
mod vcpu;
mod vm;

pub use boot::{BootImage, BootKind};
pub use disk::DiskBackend;
pub use error::Error;
pub use pci::CdromImage;
pub use platform::BootDevice;
pub use snapshot::SnapshotError;
pub use vcpu::ExitReason;
pub use vm::{NicConfig, ShutdownPath, Vm, VmConfig, VmHandle, GRACEFUL_STOP_TIMEOUT};

/// Lock `m` even if a thread panicked while holding it: device and VM state is plain data,
/// and refusing every later access would hang the guest instead.
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
