//! ACPI tables, packed from [`ACPI_RSDP_ADDR`] upwards.
//!
//! Which parts come from the `acpi_tables` crate (rust-vmm), and why:
//! - AML (the DSDT body) and the FADT: the crate's AML objects get package-length encoding
//!   right and are what the PCI root device will be written with; its FADT struct has every
//!   field at its spec offset and public.
//! - [`Sdt`] for the common 36-byte header and a checksum kept current on every append.
//! - By hand: the RSDP (the crate's cannot carry an RSDT address), the MADT (the crate's
//!   cannot set PCAT_COMPAT and has no interrupt source override or local APIC NMI entries),
//!   and the FACS (the crate's carries version 1, which belongs to ACPI 2.0/3.0, next to a
//!   6.0 FADT).

mod dsdt;
mod fadt;
mod madt;
mod mcfg;
mod rsdp;

use ::acpi_tables::sdt::Sdt;

use crate::layout::{ACPI_REGION_END, ACPI_RSDP_ADDR};
use crate::{Blob, Error, Platform};

/// OEM ID in every table header (and the RSDP).
const OEM_ID: [u8; 6] = *b"VMDLNX";
/// OEM table ID in every header: the FADT's must match the RSDT's, so all share one.
const OEM_TABLE_ID: [u8; 8] = *b"VMDKVM  ";
/// Bumped when the tables change in a way a guest could notice.
const OEM_REVISION: u32 = 1;

/// Tables the XSDT and RSDT list: the FADT, the MADT and the MCFG (the DSDT and FACS hang off
/// the FADT).
const ROOT_ENTRIES: usize = 3;

/// Guests scan for the RSDP on 16-byte boundaries.
const RSDP_ALIGN: u64 = 16;
/// The FACS must be 64-byte aligned (ACPI 6.0 §5.2.10).
const FACS_ALIGN: u64 = 64;
/// Not required by the spec, but keeps the 64-bit fields of each table naturally aligned.
const TABLE_ALIGN: u64 = 8;

// Every table address lands in a 32-bit field somewhere (RSDT, FADT.DSDT), so the region must
// stay below 4 GiB for the `as u32` conversions in this module to be lossless.
const _: () = assert!(ACPI_REGION_END <= u32::MAX as u64);
const _: () = assert!(ACPI_RSDP_ADDR.next_multiple_of(RSDP_ALIGN) == ACPI_RSDP_ADDR);

/// A fresh table with the project's header; `Sdt` keeps length and checksum current as
/// bytes are appended.
fn sdt(signature: [u8; 4], revision: u8) -> Sdt {
    Sdt::new(
        signature,
        rsdp::SDT_HEADER_LEN,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    )
}

/// Builds the ACPI tables for `p`: one [`Blob`] per table, in ascending address order,
/// the first being the RSDP at [`ACPI_RSDP_ADDR`]. All of them lie below [`ACPI_REGION_END`].
pub fn acpi_tables(p: &Platform) -> Result<Vec<Blob>, Error> {
    p.validate()?;
    place(p, ACPI_RSDP_ADDR, ACPI_REGION_END)
}

/// Hands out addresses in `next..limit`, refusing what would spill past `limit`.
struct Space {
    next: u64,
    limit: u64,
}

impl Space {
    fn alloc(&mut self, table: &'static str, len: usize, align: u64) -> Result<u64, Error> {
        let addr = self.next.next_multiple_of(align);
        let end = addr + len as u64;
        if end > self.limit {
            return Err(Error::DoesNotFit {
                table,
                end,
                limit: self.limit,
            });
        }
        self.next = end;
        Ok(addr)
    }
}

/// Lays the tables out from `base` and builds them. Separate from [`acpi_tables`] so a test
/// can shrink `limit` and see the overflow check work; no valid vCPU count reaches it today,
/// but DSDT growth (PCI, more devices) will come closer.
fn place(p: &Platform, base: u64, limit: u64) -> Result<Vec<Blob>, Error> {
    let dsdt = dsdt::platform_dsdt();
    let madt = madt::build(p);
    let facs = fadt::facs();
    let mcfg = mcfg::build();

    let mut space = Space { next: base, limit };
    let rsdp_at = space.alloc("RSDP", rsdp::RSDP_LEN, RSDP_ALIGN)?;
    let xsdt_at = space.alloc("XSDT", rsdp::xsdt_len(ROOT_ENTRIES), TABLE_ALIGN)?;
    let rsdt_at = space.alloc("RSDT", rsdp::rsdt_len(ROOT_ENTRIES), TABLE_ALIGN)?;
    let fadt_at = space.alloc("FACP", fadt::FADT_LEN, TABLE_ALIGN)?;
    let facs_at = space.alloc("FACS", facs.len(), FACS_ALIGN)?;
    let dsdt_at = space.alloc("DSDT", dsdt.len(), TABLE_ALIGN)?;
    let madt_at = space.alloc("APIC", madt.len(), TABLE_ALIGN)?;
    let mcfg_at = space.alloc("MCFG", mcfg.len(), TABLE_ALIGN)?;

    let pointed: [u64; ROOT_ENTRIES] = [fadt_at, madt_at, mcfg_at];
    let blob = |addr, bytes| Blob { addr, bytes };
    Ok(vec![
        blob(rsdp_at, rsdp::rsdp(rsdt_at as u32, xsdt_at)),
        blob(xsdt_at, rsdp::xsdt(&pointed)),
        blob(rsdt_at, rsdp::rsdt(&pointed)),
        blob(fadt_at, fadt::build(facs_at, dsdt_at)),
        blob(facs_at, facs),
        blob(dsdt_at, dsdt),
        blob(madt_at, madt),
        blob(mcfg_at, mcfg),
    ])
}

#[cfg(test)]
mod tests;
