//! The MCFG: where bus 0's ECAM window is. Without it guests reach configuration space only
//! through ports 0xCF8/0xCFC, one exit per dword and no extended (PCIe) space.

use super::sdt;
use crate::layout::PCI_ECAM_BASE;

/// MCFG revision of the PCI Firmware Specification 3.0.
const MCFG_REVISION: u8 = 1;
/// Bytes between the header and the first allocation structure.
const RESERVED_LEN: usize = 8;
/// The one PCI segment group.
const SEGMENT: u16 = 0;
/// The window decodes bus 0 only.
const FIRST_BUS: u8 = 0;
const LAST_BUS: u8 = 0;

/// The MCFG with one allocation structure: segment 0, bus 0, at [`PCI_ECAM_BASE`].
pub(super) fn build() -> Vec<u8> {
    let mut t = sdt(*b"MCFG", MCFG_REVISION);
    t.append_slice(&[0; RESERVED_LEN]);
    t.append_slice(&u64::from(PCI_ECAM_BASE).to_le_bytes());
    t.append_slice(&SEGMENT.to_le_bytes());
    t.append_slice(&[FIRST_BUS, LAST_BUS]);
    t.append_slice(&[0; 4]);
    t.as_slice().to_vec()
}
