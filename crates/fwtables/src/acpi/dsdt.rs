//! The DSDT: the AML namespace. It holds the sleep-state package a guest needs to power off,
//! the PCI root with its interrupt routing, and the motherboard resources that reserve the
//! ECAM window.

use ::acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, IO,
};
use ::acpi_tables::sdt::Sdt;
use ::acpi_tables::Aml;

use super::sdt;
use crate::layout::{
    pci_intx_gsi, PCI_CONFIG_PORT, PCI_CONFIG_PORT_LEN, PCI_ECAM_BASE, PCI_ECAM_LEN, PCI_IO_WINDOW,
    PCI_MEM_WINDOW, PCI_SLOTS, S5_SLP_TYP,
};

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

/// `_PRT` address of every function of `slot` (ACPI 6.0 §6.2.13).
fn prt_address(slot: u8) -> u32 {
    u32::from(slot) << 16 | 0xFFFF
}
/// `_PRT` pin number of INTA.
const PIN_INTA: u8 = 0;
/// `_PRT` source 0: the last element is a GSI, not a link device.
const PRT_GSI_SOURCE: u8 = 0;

/// One `_PRT` entry per slot that has a line: INTA -> its GSI ([`pci_intx_gsi`]). A GSI given
/// directly is level-triggered, active-low; the hypervisor's resampled irqfds behave so.
fn prt_entries() -> Vec<(u32, u8, u8, u32)> {
    (0..PCI_SLOTS)
        .filter_map(|s| {
            pci_intx_gsi(s).map(|g| (prt_address(s), PIN_INTA, PRT_GSI_SOURCE, u32::from(g)))
        })
        .collect()
}

/// `\_SB.PCI0`, the PCI host bridge (PNP0A03) of bus 0, the windows its BARs live in and
/// its interrupt routing. With ACPI on, Linux scans PCI only below such a device; without
/// `_PRT` it guesses INTx lines from configuration space and warns.
fn pci_root(sink: &mut Vec<u8>) {
    let hid = EISAName::new("PNP0A03");
    let bus = AddressSpace::new_bus_number(0u16, 0u16);
    let config = IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, PCI_CONFIG_PORT_LEN);
    let io = AddressSpace::new_io(
        *PCI_IO_WINDOW.start() as u16,
        *PCI_IO_WINDOW.end() as u16,
        None,
    );
    let mem = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        *PCI_MEM_WINDOW.start(),
        *PCI_MEM_WINDOW.end(),
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &config, &io, &mem]);
    let entries = prt_entries();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(addr, pin, source, gsi)| Package::new(vec![addr, pin, source, gsi]))
        .collect();
    let prt = Package::new(packages.iter().map(|p| p as &dyn Aml).collect());
    let zero = 0u8;
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_UID".into(), &zero),
        Name::new("_SEG".into(), &zero),
        Name::new("_BBN".into(), &zero),
        Name::new("_CRS".into(), &crs),
        Name::new("_PRT".into(), &prt),
    ];
    let children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    Device::new("_SB_.PCI0".into(), children).to_aml_bytes(sink);
}

/// `\_SB.MRES`, motherboard resources (PNP0C02) holding the ECAM window: Linux uses the
/// MCFG's window only if such a device reserves it.
fn motherboard_resources(sink: &mut Vec<u8>) {
    let hid = EISAName::new("PNP0C02");
    let ecam = Memory32Fixed::new(false, PCI_ECAM_BASE, PCI_ECAM_LEN);
    let crs = ResourceTemplate::new(vec![&ecam]);
    let uid = 1u8;
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_UID".into(), &uid),
        Name::new("_CRS".into(), &crs),
    ];
    let children: Vec<&dyn Aml> = names.iter().map(|n| n as &dyn Aml).collect();
    Device::new("_SB_.MRES".into(), children).to_aml_bytes(sink);
}

/// The DSDT for this platform.
pub(super) fn platform_dsdt() -> Vec<u8> {
    let mut dsdt = DsdtBuilder::new();
    dsdt.push(&s5_sleep_state());
    let mut pci = Vec::new();
    pci_root(&mut pci);
    motherboard_resources(&mut pci);
    dsdt.table.append_slice(&pci);
    dsdt.finish()
}
