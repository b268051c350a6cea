//! The MADT: local APICs, the I/O APIC, ISA interrupt overrides and the LINT1 NMI.

use ::acpi_tables::sdt::Sdt;

use super::sdt;
use crate::isa::{isa_routes, INTI_CONFORMS};
use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::Platform;

/// The MADT revision of ACPI 6.0; nothing used here is newer.
const MADT_REVISION: u8 = 3;
/// MADT flags: a dual 8259 is present. Linux then masks and programs it, which PVM hosts
/// need (an unprogrammed 8259 there injects stray ExtINT vectors).
const PCAT_COMPAT: u32 = 1 << 0;

const TYPE_LOCAL_APIC: u8 = 0;
const TYPE_IO_APIC: u8 = 1;
const TYPE_SOURCE_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
/// Type and length bytes that open every structure.
const ENTRY_PREFIX_LEN: usize = 2;

/// Local APIC flags: this processor is usable.
const LOCAL_APIC_ENABLED: u32 = 1 << 0;
/// Interrupt source overrides name the bus their IRQ comes from; 0 is ISA.
const BUS_ISA: u8 = 0;
/// ACPI processor UID meaning "all processors".
const ALL_PROCESSORS: u8 = 0xFF;
/// Local APIC input the NMI is wired to (LINT0 carries the 8259's ExtINT).
const NMI_LINT: u8 = 1;
/// The only I/O APIC serves GSIs from 0.
const IOAPIC_GSI_BASE: u32 = 0;

/// The MADT for `p`. vCPU `i` gets ACPI processor UID `i` and APIC id `i`; the I/O APIC
/// takes id `p.cpus`, the first id after them.
pub(super) fn build(p: &Platform) -> Vec<u8> {
    let mut t = sdt(*b"APIC", MADT_REVISION);
    t.append_slice(&LAPIC_ADDR.to_le_bytes());
    t.append_slice(&PCAT_COMPAT.to_le_bytes());

    for cpu in 0..p.cpus {
        let mut e = vec![cpu, cpu];
        e.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
        append_entry(&mut t, TYPE_LOCAL_APIC, &e);
    }

    let mut e = vec![p.cpus, 0];
    e.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    e.extend_from_slice(&IOAPIC_GSI_BASE.to_le_bytes());
    append_entry(&mut t, TYPE_IO_APIC, &e);

    for route in isa_routes().filter(|r| r.overrides_default()) {
        let mut e = vec![BUS_ISA, route.irq];
        e.extend_from_slice(&u32::from(route.gsi).to_le_bytes());
        e.extend_from_slice(&route.flags.to_le_bytes());
        append_entry(&mut t, TYPE_SOURCE_OVERRIDE, &e);
    }

    let mut e = vec![ALL_PROCESSORS];
    e.extend_from_slice(&INTI_CONFORMS.to_le_bytes());
    e.push(NMI_LINT);
    append_entry(&mut t, TYPE_LOCAL_APIC_NMI, &e);

    t.as_slice().to_vec()
}

/// Appends an interrupt controller structure: type, total length, then `body`.
fn append_entry(t: &mut Sdt, kind: u8, body: &[u8]) {
    // Every MADT structure is a handful of bytes, far below the one-byte length limit.
    let len = (ENTRY_PREFIX_LEN + body.len()) as u8;
    t.append_slice(&[kind, len]);
    t.append_slice(body);
}
