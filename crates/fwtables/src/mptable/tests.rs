//! Reads the MP tables back at the offsets of the MP specification 1.4, chapter 4.

use super::build_at;
use crate::layout::*;
use crate::{mp_table, Error, Platform};

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Splits the configuration table's entries, checking each type's fixed length.
fn entries(config: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < config.len() {
        let len = if config[off] == 0 { 20 } else { 8 };
        assert!(config[off] <= 4, "unknown entry type {}", config[off]);
        out.push(&config[off..off + len]);
        off += len;
    }
    assert_eq!(off, config.len());
    out
}

#[test]
fn floating_pointer_and_config_table_are_valid() {
    for cpus in [1, 4, MAX_CPUS] {
        let blob = mp_table(&Platform { cpus }).unwrap();
        assert_eq!(blob.addr, MPTABLE_ADDR);
        let b = &blob.bytes;
        let fp = &b[..16];
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(sum(fp), 0, "floating pointer checksum");
        assert_eq!((fp[8], fp[9]), (1, 4), "length in paragraphs, spec 1.4");
        assert_eq!(fp[11], 0, "a configuration table is present");
        let config_addr = u64::from(u32_at(fp, 4));
        assert_eq!(config_addr, MPTABLE_ADDR + 16);

        let config = &b[16..];
        assert_eq!(&config[..4], b"PCMP");
        assert_eq!(
            usize::from(u16_at(config, 4)),
            config.len(),
            "base table length"
        );
        assert_eq!(config[6], 4, "spec revision");
        assert_eq!(sum(config), 0, "configuration table checksum");
        assert_eq!(u32_at(config, 36), 0xFEE0_0000, "local APIC address");
        assert!(MPTABLE_ADDR + b.len() as u64 <= MPTABLE_REGION_END);

        let e = entries(config);
        // CPUs, one bus, one I/O APIC, 15 ISA IRQs (not the cascade), ExtINT and NMI.
        assert_eq!(usize::from(u16_at(config, 34)), e.len());
        assert_eq!(e.len(), usize::from(cpus) + 19);
    }
}

#[test]
fn entries_describe_cpus_bus_ioapic_and_interrupts() {
    let cpus = 4;
    let blob = mp_table(&Platform { cpus }).unwrap();
    let e = entries(&blob.bytes[16..]);
    let of = |t: u8| e.iter().filter(move |x| x[0] == t).copied();

    let procs: Vec<&[u8]> = of(0).collect();
    assert_eq!(procs.len(), 4);
    for (i, p) in procs.iter().enumerate() {
        assert_eq!(p[1], i as u8, "APIC id = index");
        assert_eq!(p[3] & 1, 1, "enabled");
        assert_eq!(
            p[3] & 2 != 0,
            i == 0,
            "only CPU 0 is the bootstrap processor"
        );
        assert!(p[2] >= 0x10, "integrated APIC version");
    }
    assert_eq!(of(1).collect::<Vec<_>>(), [b"\x01\x00ISA   "]);
    let ioapics: Vec<&[u8]> = of(2).collect();
    assert_eq!(ioapics.len(), 1);
    assert_eq!(
        (ioapics[0][1], ioapics[0][3]),
        (cpus, 1),
        "id = cpus, enabled"
    );
    assert_eq!(u32_at(ioapics[0], 4), 0xFEC0_0000);

    // (IRQ, I/O APIC pin, flags) per I/O interrupt entry; all INT type, ISA bus, to id cpus.
    let mut routes = Vec::new();
    for x in of(3) {
        assert_eq!((x[1], x[4], x[6]), (0, 0, cpus));
        routes.push((x[5], x[7], u16_at(x, 2)));
    }
    let mut expected: Vec<(u8, u8, u16)> = (0..16).filter(|i| *i != 2).map(|i| (i, i, 0)).collect();
    expected[8] = (9, 9, 0b1101); // index 8: IRQ 2 is skipped
    assert_eq!(routes, expected);

    // (type, LAPIC id, LINT): ExtINT to LINT0 and NMI to LINT1 of every CPU.
    let locals: Vec<(u8, u8, u8)> = of(4).map(|x| (x[1], x[6], x[7])).collect();
    assert_eq!(locals, [(3, 0xFF, 0), (1, 0xFF, 1)]);
}

#[test]
fn bad_counts_and_small_regions_are_refused() {
    assert_eq!(mp_table(&Platform { cpus: 0 }), Err(Error::NoCpus));
    assert!(matches!(
        mp_table(&Platform { cpus: MAX_CPUS + 1 }),
        Err(Error::TooManyCpus { .. })
    ));
    let p = Platform { cpus: MAX_CPUS };
    let len = mp_table(&p).unwrap().bytes.len() as u64;
    assert!(build_at(&p, MPTABLE_ADDR, MPTABLE_ADDR + len).is_ok());
    assert_eq!(
        build_at(&p, MPTABLE_ADDR, MPTABLE_ADDR + len - 1),
        Err(Error::DoesNotFit {
            table: "MP configuration table",
            end: MPTABLE_ADDR + len,
            limit: MPTABLE_ADDR + len - 1
        })
    );
}
