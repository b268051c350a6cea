//! Firmware tables that describe the guest-visible platform (`docs/platform.md`) to a guest:
//! ACPI (RSDP, XSDT, RSDT, FADT, FACS, DSDT, MADT) and the Intel MP specification 1.4 table.
//!
//! This crate owns the byte layout of those tables and their placement inside the legacy
//! hole ([`layout`]). It must never touch KVM, guest memory or the host: every builder is a
//! pure function from a [`Platform`] to [`Blob`]s, and the hypervisor copies the bytes to the
//! given guest-physical addresses. Because it is pure, anything a guest could read from these
//! tables is fixed by the VM configuration alone and can be tested byte for byte.
//!
//! The tables describe a full (not hardware-reduced) ACPI PC with a dual 8259 present: on
//! PVM hosts an unprogrammed 8259 delivers stray ExtINTs, and only a full-ACPI or MP-table
//! platform makes Linux program it.

#![forbid(unsafe_code)]

mod acpi;
mod checksum;
mod isa;
pub mod layout;
mod mptable;

pub use acpi::acpi_tables;
pub use mptable::mp_table;

/// What the tables describe that varies from VM to VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Number of vCPUs, `1..=`[`layout::MAX_CPUS`]. vCPU `i` has APIC id `i`; the I/O APIC
    /// takes id `cpus`.
    pub cpus: u8,
}

/// Bytes to be copied into guest memory at `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Guest-physical address of the first byte.
    pub addr: u64,
    /// The table contents.
    pub bytes: Vec<u8>,
}

/// Why a set of tables could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A VM without a vCPU has nothing to describe.
    #[error("a VM needs at least one vCPU")]
    NoCpus,
    /// More vCPUs than the platform supports.
    #[error("{cpus} vCPUs requested, at most {max} supported")]
    TooManyCpus {
        /// The count asked for.
        cpus: u8,
        /// [`layout::MAX_CPUS`].
        max: u8,
    },
    /// The tables would spill out of their region of the legacy hole.
    #[error("firmware table {table} would end at {end:#x}, past its region's end {limit:#x}")]
    DoesNotFit {
        /// Signature or name of the table that did not fit.
        table: &'static str,
        /// Address one past the table's last byte.
        end: u64,
        /// First address past the region.
        limit: u64,
    },
}

impl Platform {
    /// Rejects vCPU counts the tables cannot describe, before any byte is built.
    fn validate(&self) -> Result<(), Error> {
        match self.cpus {
            0 => Err(Error::NoCpus),
            n if n > layout::MAX_CPUS => Err(Error::TooManyCpus {
                cpus: n,
                max: layout::MAX_CPUS,
            }),
            _ => Ok(()),
        }
    }
}
