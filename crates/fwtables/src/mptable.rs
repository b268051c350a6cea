//! Intel MultiProcessor Specification 1.4 tables: the floating pointer structure and the
//! configuration table right after it. Linux reads them when ACPI is off or absent, and
//! other guests (older BSDs) only ever read these.

use crate::checksum;
use crate::isa::{isa_routes, INTI_CONFORMS};
use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_ADDR, MPTABLE_REGION_END};
use crate::{Blob, Error, Platform};

/// Floating pointer structure length; its `length` field counts 16-byte paragraphs.
const FLOATING_LEN: usize = 16;
const FLOATING_PARAGRAPHS: u8 = 1;
const FLOATING_CHECKSUM: usize = 10;
/// MP specification revision 1.4.
const SPEC_REV: u8 = 4;

const CONFIG_HEADER_LEN: usize = 44;
const CONFIG_LENGTH_AT: usize = 4;
const CONFIG_CHECKSUM: usize = 7;
const CONFIG_ENTRY_COUNT_AT: usize = 34;
const OEM_ID: [u8; 8] = *b"VMDLNX  ";
const PRODUCT_ID: [u8; 12] = *b"VMD-KVM     ";

/// Processor entries are 20 bytes; every other entry type is [`ENTRY_LEN`].
const PROCESSOR_ENTRY_LEN: usize = 20;
const ENTRY_LEN: usize = 8;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

/// The version KVM's local APIC reports; 0x1X marks an integrated (not 82489DX) APIC,
/// which decides how Linux starts the other CPUs.
const LAPIC_VERSION: u8 = 0x14;
/// The version KVM's I/O APIC reports.
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// Family 6: any x86-64 CPU a guest may see reports at least this; only informational.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX FPU and APIC bits, which every vCPU has.
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const IOAPIC_ENABLED: u8 = 1 << 0;

const ISA_BUS_ID: u8 = 0;
const ISA_BUS_TYPE: [u8; 6] = *b"ISA   ";

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Destination local APIC id meaning "every processor".
const ALL_LAPICS: u8 = 0xFF;
/// LINT0 takes the 8259's ExtINT (virtual wire mode), LINT1 the NMI.
const EXTINT_LINT: u8 = 0;
const NMI_LINT: u8 = 1;

// The MP spec has only 32-bit pointers, and guests scan for the floating pointer on 16-byte
// boundaries: the region must allow both.
const _: () = assert!(MPTABLE_REGION_END <= u32::MAX as u64);
const _: () = assert!(MPTABLE_ADDR.next_multiple_of(FLOATING_LEN as u64) == MPTABLE_ADDR);

/// Builds the MP tables for `p` as one [`Blob`] at [`MPTABLE_ADDR`]: the floating pointer,
/// then the configuration table it points to.
pub fn mp_table(p: &Platform) -> Result<Blob, Error> {
    p.validate()?;
    build_at(p, MPTABLE_ADDR, MPTABLE_REGION_END)
}

/// The tables placed at `addr`, refused if they would reach past `limit`; a separate
/// function so a test can shrink the limit.
fn build_at(p: &Platform, addr: u64, limit: u64) -> Result<Blob, Error> {
    let config_addr = addr + FLOATING_LEN as u64;
    let config = config_table(p);
    let end = config_addr + config.len() as u64;
    if end > limit {
        return Err(Error::DoesNotFit {
            table: "MP configuration table",
            end,
            limit,
        });
    }
    let mut bytes = floating_pointer(config_addr as u32);
    bytes.extend_from_slice(&config);
    Ok(Blob { addr, bytes })
}

fn floating_pointer(config_addr: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(FLOATING_LEN);
    b.extend_from_slice(b"_MP_");
    b.extend_from_slice(&config_addr.to_le_bytes());
    b.extend_from_slice(&[FLOATING_PARAGRAPHS, SPEC_REV, 0]);
    // Feature bytes all zero: a configuration table follows (no default configuration), and
    // the IMCR is absent, i.e. virtual wire mode, which is what an 8259 on LINT0 means.
    b.resize(FLOATING_LEN, 0);
    checksum::fill(&mut b, FLOATING_CHECKSUM);
    b
}

fn config_table(p: &Platform) -> Vec<u8> {
    let ioapic_id = p.cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    let mut add = |entry: &[u8]| {
        entries.extend_from_slice(entry);
        count += 1;
    };

    // Processor entries come first and in APIC id order: Linux numbers CPUs as it meets them.
    for cpu in 0..p.cpus {
        add(&processor(cpu));
    }
    let mut bus = [0u8; ENTRY_LEN];
    bus[..2].copy_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    bus[2..].copy_from_slice(&ISA_BUS_TYPE);
    add(&bus);
    let a = IOAPIC_ADDR.to_le_bytes();
    add(&[
        ENTRY_IOAPIC,
        ioapic_id,
        IOAPIC_VERSION,
        IOAPIC_ENABLED,
        a[0],
        a[1],
        a[2],
        a[3],
    ]);
    for r in isa_routes() {
        let pin = r.gsi;
        add(&interrupt(
            ENTRY_IO_INTERRUPT,
            INT_TYPE_INT,
            r.flags,
            r.irq,
            ioapic_id,
            pin,
        ));
    }
    let local = ENTRY_LOCAL_INTERRUPT;
    add(&interrupt(
        local,
        INT_TYPE_EXTINT,
        INTI_CONFORMS,
        0,
        ALL_LAPICS,
        EXTINT_LINT,
    ));
    add(&interrupt(
        local,
        INT_TYPE_NMI,
        INTI_CONFORMS,
        0,
        ALL_LAPICS,
        NMI_LINT,
    ));

    let mut b = Vec::with_capacity(CONFIG_HEADER_LEN + entries.len());
    b.extend_from_slice(b"PCMP");
    b.extend_from_slice(&[0, 0, SPEC_REV, 0]); // length and checksum filled below
    b.extend_from_slice(&OEM_ID);
    b.extend_from_slice(&PRODUCT_ID);
    // No OEM table: its pointer and size stay zero.
    b.resize(CONFIG_ENTRY_COUNT_AT, 0);
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    // No extended table: its length and checksum stay zero.
    b.resize(CONFIG_HEADER_LEN, 0);
    b.extend_from_slice(&entries);

    // At most MAX_CPUS * 20 + a few hundred bytes: far below u16::MAX.
    let len = b.len() as u16;
    b[CONFIG_LENGTH_AT..CONFIG_LENGTH_AT + 2].copy_from_slice(&len.to_le_bytes());
    checksum::fill(&mut b, CONFIG_CHECKSUM);
    b
}

/// The processor entry of vCPU `cpu`, whose APIC id is `cpu`; vCPU 0 is the bootstrap one.
fn processor(cpu: u8) -> [u8; PROCESSOR_ENTRY_LEN] {
    let flags = if cpu == 0 {
        CPU_ENABLED | CPU_BOOTSTRAP
    } else {
        CPU_ENABLED
    };
    let fields = [ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]
        .into_iter()
        .chain(CPU_SIGNATURE.to_le_bytes())
        .chain(CPU_FEATURES.to_le_bytes());
    // The bytes after the feature flags are reserved and stay zero.
    let mut e = [0u8; PROCESSOR_ENTRY_LEN];
    e.iter_mut().zip(fields).for_each(|(dst, src)| *dst = src);
    e
}

/// An I/O or local interrupt assignment entry (both share one layout). Sources are ISA.
fn interrupt(
    kind: u8,
    int_type: u8,
    flags: u16,
    src_irq: u8,
    dst: u8,
    dst_pin: u8,
) -> [u8; ENTRY_LEN] {
    let f = flags.to_le_bytes();
    [
        kind, int_type, f[0], f[1], ISA_BUS_ID, src_irq, dst, dst_pin,
    ]
}

#[cfg(test)]
mod tests;
