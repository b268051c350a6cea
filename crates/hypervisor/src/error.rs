//! What can go wrong building or running a VM, named by the thing that failed.

use std::io;

/// Errors from building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The memory size cannot be laid out.
    #[error("memory size {size} bytes: {reason}")]
    MemorySize { size: u64, reason: &'static str },
    /// The vCPU count is out of range.
    #[error("{requested} vCPUs requested: this host's KVM allows 1 to {max}")]
    VcpuCount { requested: u32, max: u32 },
    /// Opening or querying `/dev/kvm` failed.
    #[error("/dev/kvm: {0}")]
    Kvm(#[source] kvm_ioctls::Error),
    /// A KVM ioctl on the VM or a vCPU failed.
    #[error("KVM {what}: {source}")]
    KvmIoctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be mapped.
    #[error("guest memory of {size} bytes: {reason}")]
    GuestMemory { size: u64, reason: String },
    /// A boot image (kernel, initrd, BIOS) is unusable.
    #[error("{what}: {reason}")]
    BootImage { what: String, reason: String },
    /// Reading a boot image failed.
    #[error("{what}: {source}")]
    BootImageIo {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The kernel command line is unusable.
    #[error("kernel command line: {0}")]
    Cmdline(String),
    /// Building the ACPI or MP tables failed.
    #[error("firmware tables: {0}")]
    Firmware(String),
    /// A device could not be set up.
    #[error("device {what}: {reason}")]
    Device { what: &'static str, reason: String },
    /// A host resource (thread, eventfd, epoll, signal) failed.
    #[error("{what}: {source}")]
    Host {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::KvmIoctl { what, source }
    }

    pub(crate) fn host(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Host { what, source }
    }

    pub(crate) fn image(what: &str, reason: impl Into<String>) -> Error {
        Error::BootImage {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}
