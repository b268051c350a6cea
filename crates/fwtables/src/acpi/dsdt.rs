//! The DSDT: the AML namespace. Today it holds only the sleep-state package a guest needs to
//! power off; device objects (the PCI root first) are pushed onto the same builder.

use ::acpi_tables::aml::{Name, Package, Path};
use ::acpi_tables::sdt::Sdt;
use ::acpi_tables::Aml;

use super::sdt;
use crate::layout::S5_SLP_TYP;

/// Revision 2: integers in this DSDT's AML are 64-bit.
const DSDT_REVISION: u8 = 2;

/// A DSDT under construction: objects are appended to the root scope in push order.
pub(super) struct DsdtBuilder {
    table: Sdt,
}

impl DsdtBuilder {
    pub(super) fn new() -> Self {
        DsdtBuilder {
            table: sdt(*b"DSDT", DSDT_REVISION),
        }
    }

    /// Appends one AML object (a `Name`, `Device`, `Scope`, ...) to the root scope.
    pub(super) fn push(&mut self, object: &dyn Aml) {
        let mut aml = Vec::new();
        object.to_aml_bytes(&mut aml);
        self.table.append_slice(&aml);
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.table.as_slice().to_vec()
    }
}

/// `Name (_S5, Package () { SLP_TYPa, SLP_TYPb, 0, 0 })`. Without it Linux has no S5 and
/// `poweroff` falls back to halting. Both SLP_TYP values are the same because there is only
/// a PM1a control block; the last two elements are reserved.
fn s5_sleep_state() -> Name {
    let reserved = 0u8;
    Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&S5_SLP_TYP, &S5_SLP_TYP, &reserved, &reserved]),
    )
}

/// The DSDT for this platform.
pub(super) fn platform_dsdt() -> Vec<u8> {
    let mut dsdt = DsdtBuilder::new();
    dsdt.push(&s5_sleep_state());
    dsdt.finish()
}
