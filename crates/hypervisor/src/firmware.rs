//! Places the ACPI and MP tables (built by `fwtables`) in guest memory.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::Error;

/// Where the RSDP lies; boot protocols that can pass it do.
pub const ACPI_RSDP_ADDR: u64 = fwtables::layout::ACPI_RSDP_ADDR;
/// Most vCPUs the tables can describe.
pub const MAX_CPUS: u32 = fwtables::layout::MAX_CPUS as u32;

/// Build and write the ACPI and MP tables for a VM with `cpus` vCPUs.
pub fn write_tables(mem: &GuestMemoryMmap, cpus: u32) -> Result<(), Error> {
    let platform = fwtables::Platform {
        cpus: u8::try_from(cpus).map_err(|_| Error::Firmware(format!("{cpus} vCPUs")))?,
    };
    let mut blobs = fwtables::acpi_tables(&platform).map_err(|e| Error::Firmware(e.to_string()))?;
    blobs.push(fwtables::mp_table(&platform).map_err(|e| Error::Firmware(e.to_string()))?);
    for b in blobs {
        mem.write_slice(&b.bytes, GuestAddress(b.addr))
            .map_err(|e| {
                Error::Firmware(format!("{} bytes at {:#x}: {e}", b.bytes.len(), b.addr))
            })?;
    }
    Ok(())
}
