//! The root of the ACPI tree: RSDP, and the XSDT/RSDT that list the other tables.

use super::{sdt, OEM_ID};
use crate::checksum;

/// Length of the common system description table header.
pub(super) const SDT_HEADER_LEN: u32 = 36;

/// ACPI 2.0+ RSDP length (the 1.0 structure was the first 20 bytes).
pub(super) const RSDP_LEN: usize = 36;
/// Bytes covered by the RSDP's first (ACPI 1.0) checksum.
const RSDP_V1_LEN: usize = 20;
/// Revision 2 = ACPI 2.0+: the structure carries the XSDT address.
const RSDP_REVISION: u8 = 2;
const RSDP_SIGNATURE: &[u8; 8] = b"RSD PTR ";
const RSDP_CHECKSUM: usize = 8;
const RSDP_OEM_ID: usize = 9;
const RSDP_REVISION_AT: usize = 15;
const RSDP_RSDT_ADDRESS: usize = 16;
const RSDP_LENGTH: usize = 20;
const RSDP_XSDT_ADDRESS: usize = 24;
const RSDP_EXTENDED_CHECKSUM: usize = 32;

/// XSDT and RSDT are both at revision 1, the only one defined.
const ROOT_TABLE_REVISION: u8 = 1;

/// The RSDP pointing at both root tables, so that ACPI 1.0-only guests find the RSDT.
pub(super) fn rsdp(rsdt_addr: u32, xsdt_addr: u64) -> Vec<u8> {
    let mut b = vec![0u8; RSDP_LEN];
    b[..RSDP_SIGNATURE.len()].copy_from_slice(RSDP_SIGNATURE);
    b[RSDP_OEM_ID..RSDP_OEM_ID + OEM_ID.len()].copy_from_slice(&OEM_ID);
    b[RSDP_REVISION_AT] = RSDP_REVISION;
    b[RSDP_RSDT_ADDRESS..RSDP_RSDT_ADDRESS + 4].copy_from_slice(&rsdt_addr.to_le_bytes());
    b[RSDP_LENGTH..RSDP_LENGTH + 4].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    b[RSDP_XSDT_ADDRESS..RSDP_XSDT_ADDRESS + 8].copy_from_slice(&xsdt_addr.to_le_bytes());
    // The first checksum covers only the 1.0 part, so it is filled before the extended one,
    // which covers it too.
    checksum::fill(&mut b[..RSDP_V1_LEN], RSDP_CHECKSUM);
    checksum::fill(&mut b, RSDP_EXTENDED_CHECKSUM);
    b
}

/// Length of an XSDT listing `entries` tables.
pub(super) fn xsdt_len(entries: usize) -> usize {
    SDT_HEADER_LEN as usize + entries * size_of::<u64>()
}

/// Length of an RSDT listing `entries` tables.
pub(super) fn rsdt_len(entries: usize) -> usize {
    SDT_HEADER_LEN as usize + entries * size_of::<u32>()
}

/// The XSDT: 64-bit pointers to `tables`.
pub(super) fn xsdt(tables: &[u64]) -> Vec<u8> {
    let mut t = sdt(*b"XSDT", ROOT_TABLE_REVISION);
    for addr in tables {
        t.append_slice(&addr.to_le_bytes());
    }
    t.as_slice().to_vec()
}

/// The RSDT: 32-bit pointers to `tables`, which all lie below 4 GiB (see the module
/// assertion in `acpi`).
pub(super) fn rsdt(tables: &[u64]) -> Vec<u8> {
    let mut t = sdt(*b"RSDT", ROOT_TABLE_REVISION);
    for addr in tables {
        t.append_slice(&(*addr as u32).to_le_bytes());
    }
    t.as_slice().to_vec()
}
