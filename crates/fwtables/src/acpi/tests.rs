//! Reads the built tables back at the offsets the ACPI specification (6.0, §5.2) gives,
//! independently of how they were written.

use super::place;
use crate::layout::*;
use crate::{acpi_tables, Blob, Error, Platform};

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn tables(cpus: u8) -> Vec<Blob> {
    acpi_tables(&Platform { cpus }).unwrap()
}

fn find<'a>(blobs: &'a [Blob], sig: &[u8]) -> &'a Blob {
    let mut found = blobs.iter().filter(|b| b.bytes.starts_with(sig));
    let blob = found.next().expect("table missing");
    assert!(found.next().is_none(), "two tables with one signature");
    blob
}

fn at(blobs: &[Blob], addr: u64) -> &Blob {
    blobs
        .iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("nothing placed at {addr:#x}"))
}

const COUNTS: [u8; 3] = [1, 4, MAX_CPUS];

#[test]
fn every_checksum_sums_to_zero_and_lengths_match() {
    for cpus in COUNTS {
        let blobs = tables(cpus);
        let rsdp = &blobs[0].bytes;
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        for sig in [b"XSDT", b"RSDT", b"FACP", b"DSDT", b"APIC", b"MCFG"] {
            let t = &find(&blobs, sig).bytes;
            assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(u32_at(t, 4) as usize, t.len(), "header length");
        }
        // The FACS has no checksum, but its length field must still be right.
        let facs = &find(&blobs, b"FACS").bytes;
        assert_eq!(u32_at(facs, 4) as usize, facs.len());
    }
}

#[test]
fn rsdp_is_first_and_points_at_both_root_tables() {
    let blobs = tables(1);
    let rsdp = &blobs[0];
    assert_eq!(rsdp.addr, ACPI_RSDP_ADDR);
    assert_eq!(&rsdp.bytes[..8], b"RSD PTR ");
    assert_eq!(rsdp.bytes[15], 2, "revision");
    assert_eq!(u32_at(&rsdp.bytes, 20), 36, "length");
    assert_eq!(rsdp.bytes.len(), 36);
    let xsdt = find(&blobs, b"XSDT");
    let rsdt = find(&blobs, b"RSDT");
    assert_eq!(u64_at(&rsdp.bytes, 24), xsdt.addr);
    assert_eq!(u64::from(u32_at(&rsdp.bytes, 16)), rsdt.addr);
}

#[test]
fn root_tables_list_exactly_fadt_madt_and_mcfg() {
    let blobs = tables(4);
    let xsdt = &find(&blobs, b"XSDT").bytes;
    let rsdt = &find(&blobs, b"RSDT").bytes;
    let x: Vec<u64> = (36..xsdt.len())
        .step_by(8)
        .map(|o| u64_at(xsdt, o))
        .collect();
    let r: Vec<u64> = (36..rsdt.len())
        .step_by(4)
        .map(|o| u64::from(u32_at(rsdt, o)))
        .collect();
    assert_eq!(x, r, "XSDT and RSDT disagree");
    let mut sigs: Vec<&[u8]> = x.iter().map(|a| &at(&blobs, *a).bytes[..4]).collect();
    sigs.sort();
    assert_eq!(sigs, [b"APIC", b"FACP", b"MCFG"]);
    for addr in x {
        let t = &at(&blobs, addr).bytes;
        assert_eq!(u32_at(t, 4) as usize, t.len());
    }
}

/// F-HW-10: the MCFG's one allocation structure names bus 0's ECAM window.
#[test]
fn mcfg_describes_bus_0_ecam() {
    let blobs = tables(1);
    let m = &find(&blobs, b"MCFG").bytes;
    assert_eq!(m.len(), 36 + 8 + 16, "header, reserved, one allocation");
    assert_eq!(m[8], 1, "revision");
    assert_eq!(u64_at(m, 44), u64::from(PCI_ECAM_BASE));
    assert_eq!(u16_at(m, 52), 0, "segment");
    assert_eq!((m[54], m[55]), (0, 0), "bus 0 only");
}

#[test]
fn intx_lines_follow_vmds_order_and_skip_the_bridge() {
    assert_eq!(pci_intx_gsi(0), None, "host bridge");
    let lines: Vec<u8> = (1..=10).map(|s| pci_intx_gsi(s).unwrap()).collect();
    assert_eq!(lines, [3, 5, 6, 7, 10, 11, 12, 14, 15, 3]);
    assert!(!lines.contains(&SCI_IRQ));
    assert_eq!(pci_intx_gsi(PCI_SLOTS), None, "no slot 32");
}

#[test]
fn fadt_fields_sit_at_their_spec_offsets() {
    let blobs = tables(1);
    let f = &find(&blobs, b"FACP").bytes;
    let facs = find(&blobs, b"FACS");
    let dsdt = find(&blobs, b"DSDT");
    assert_eq!(f.len(), 276);
    assert_eq!(f[8], 6, "revision");
    assert_eq!(u64::from(u32_at(f, 36)), facs.addr, "FIRMWARE_CTRL");
    assert_eq!(u64::from(u32_at(f, 40)), dsdt.addr, "DSDT");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always in ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(f, 60), 0, "PM1b_EVT_BLK");
    assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(f, 68), 0, "PM1b_CNT_BLK");
    assert_eq!(u32_at(f, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(u32_at(f, 80), 0, "GPE0_BLK");
    assert_eq!(
        (f[88], f[89], f[91]),
        (4, 2, 4),
        "PM1_EVT/PM1_CNT/PM_TMR_LEN"
    );
    assert_eq!(f[108], 0x32, "CENTURY: the CMOS register with the century");
    let boot_arch = u16_at(f, 109);
    assert_eq!(boot_arch & 0b11, 0b11, "LEGACY_DEVICES and 8042");
    assert_eq!(boot_arch & (1 << 5), 0, "CMOS RTC is present");

    let flags = u32_at(f, 112);
    let (wbinvd, proc_c1, pwr_button, slp_button) = (1, 1 << 2, 1 << 4, 1 << 5);
    let (tmr_val_ext, reset_reg_sup, hw_reduced) = (1 << 8, 1 << 10, 1 << 20);
    assert_eq!(
        flags,
        wbinvd | proc_c1 | slp_button | reset_reg_sup,
        "flags {flags:#x}"
    );
    assert_eq!(flags & (pwr_button | tmr_val_ext | hw_reduced), 0);

    // RESET_REG: a GAS in system I/O space, 8 bits wide, at offset 0.
    assert_eq!(&f[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(f, 120), 0x60C);
    assert_eq!(f[128], 0x06, "RESET_VALUE");
    assert_eq!(
        u64_at(f, 132),
        0,
        "X_FIRMWARE_CTRL: must be 0 with FIRMWARE_CTRL set"
    );
    assert_eq!(u64_at(f, 140), dsdt.addr, "X_DSDT");

    // X_ register blocks: (offset, bit width, port).
    for (off, bits, port) in [(148, 32, 0x600), (172, 16, 0x604), (208, 32, 0x608)] {
        assert_eq!(f[off], 1, "system I/O at {off}");
        assert_eq!(f[off + 1], bits, "bit width at {off}");
        assert_eq!(f[off + 2], 0, "bit offset at {off}");
        assert_eq!(u64_at(f, off + 4), port, "address at {off}");
    }
    for unused in [160, 184, 196, 220, 232, 244, 256] {
        assert!(
            f[unused..unused + 12].iter().all(|b| *b == 0),
            "GAS at {unused}"
        );
    }
}

#[test]
fn facs_is_64_byte_aligned_version_2() {
    let blobs = tables(1);
    let facs = find(&blobs, b"FACS");
    assert_eq!(facs.addr % 64, 0);
    assert_eq!(facs.bytes.len(), 64);
    assert_eq!(facs.bytes[32], 2);
}

#[test]
fn dsdt_is_the_s5_package_then_the_pci_root() {
    let blobs = tables(1);
    let d = &find(&blobs, b"DSDT").bytes;
    assert_eq!(d[8], 2, "revision 2: 64-bit AML integers");
    // Name (_S5_, Package (0x04) { 0x05, 0x05, Zero, Zero }), encoded per ACPI 6.0 §20:
    // NameOp, NameSeg, PackageOp, PkgLength (8 bytes incl. itself), NumElements,
    // BytePrefix 5, BytePrefix 5, ZeroOp, ZeroOp.
    let expected = [
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00,
    ];
    assert_eq!(&d[36..36 + expected.len()], &expected);
    let rest = &d[36 + expected.len()..];
    // DeviceOp (ExtOpPrefix 0x5B, 0x82) for \_SB.PCI0 with _HID EisaId ("PNP0A03").
    assert_eq!(&rest[..2], &[0x5B, 0x82]);
    let has = |needle: &[u8]| rest.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"_SB_PCI0"), "device path");
    assert!(
        has(&[b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x0A, 0x03]),
        "PNP0A03"
    );
    // The memory window of the BARs: DWordMemory min 0xF0100000, max 0xFEBFFFFF.
    assert!(has(&0xF010_0000u32.to_le_bytes()) && has(&0xFEBF_FFFFu32.to_le_bytes()));
    assert!(has(b"_PRT"), "INTx routing");
    // \_SB.MRES (PNP0C02) with Memory32Fixed (0x86) over the ECAM window.
    assert!(
        has(b"_SB_MRES") && has(&[0x41, 0xD0, 0x0C, 0x02]),
        "PNP0C02"
    );
    let ecam = [
        &[0x86, 9, 0, 0][..],
        &PCI_ECAM_BASE.to_le_bytes(),
        &PCI_ECAM_LEN.to_le_bytes(),
    ]
    .concat();
    assert!(has(&ecam), "ECAM reserved");
}

/// MADT structures as (type, bytes including type and length).
fn madt_entries(m: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = 44;
    while off < m.len() {
        let len = usize::from(m[off + 1]);
        assert!(len >= 2 && off + len <= m.len(), "bad entry at {off}");
        out.push((m[off], &m[off..off + len]));
        off += len;
    }
    assert_eq!(off, m.len(), "entries overrun the table");
    out
}

#[test]
fn madt_describes_each_cpu_the_ioapic_and_the_overrides() {
    for cpus in COUNTS {
        let blobs = tables(cpus);
        let m = &find(&blobs, b"APIC").bytes;
        assert_eq!(u32_at(m, 36), 0xFEE0_0000, "local APIC address");
        assert_eq!(u32_at(m, 40) & 1, 1, "PCAT_COMPAT");
        let entries = madt_entries(m);

        let lapics: Vec<&[u8]> = entries.iter().filter(|e| e.0 == 0).map(|e| e.1).collect();
        assert_eq!(lapics.len(), usize::from(cpus));
        for (i, e) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!((e[2], e[3]), (i as u8, i as u8), "UID and APIC id");
            assert_eq!(u32_at(e, 4), 1, "enabled");
        }

        let ioapics: Vec<&[u8]> = entries.iter().filter(|e| e.0 == 1).map(|e| e.1).collect();
        assert_eq!(ioapics.len(), 1);
        let io = ioapics[0];
        assert_eq!(io.len(), 12);
        assert_eq!(io[2], cpus, "I/O APIC id follows the vCPUs");
        assert_eq!(u32_at(io, 4), 0xFEC0_0000);
        assert_eq!(u32_at(io, 8), 0, "GSI base");

        let overrides: Vec<(u8, u8, u32, u16)> = entries
            .iter()
            .filter(|e| e.0 == 2)
            .map(|e| {
                assert_eq!(e.1.len(), 10);
                (e.1[2], e.1[3], u32_at(e.1, 4), u16_at(e.1, 8))
            })
            .collect();
        // (bus ISA, IRQ, GSI, flags): only the SCI, IRQ9 level, active high (IRQ0 is
        // identity-mapped, see layout::PIT_GSI).
        assert_eq!(overrides, [(0, 9, 9, 0b1101)]);

        let nmis: Vec<&[u8]> = entries.iter().filter(|e| e.0 == 4).map(|e| e.1).collect();
        assert_eq!(nmis, [&[4u8, 6, 0xFF, 0, 0, 1][..]], "NMI on LINT1 of all");
        assert_eq!(entries.len(), usize::from(cpus) + 3, "no other entries");
    }
}

#[test]
fn tables_are_disjoint_and_inside_the_region() {
    for cpus in COUNTS {
        let blobs = tables(cpus);
        assert_eq!(blobs[0].addr, ACPI_RSDP_ADDR);
        for pair in blobs.windows(2) {
            let end = pair[0].addr + pair[0].bytes.len() as u64;
            assert!(end <= pair[1].addr, "overlap at {:#x}", pair[1].addr);
        }
        let last = blobs.last().unwrap();
        assert!(last.addr + last.bytes.len() as u64 <= ACPI_REGION_END);
    }
}

#[test]
fn bad_cpu_counts_are_refused() {
    assert_eq!(acpi_tables(&Platform { cpus: 0 }), Err(Error::NoCpus));
    assert_eq!(
        acpi_tables(&Platform { cpus: MAX_CPUS + 1 }),
        Err(Error::TooManyCpus {
            cpus: MAX_CPUS + 1,
            max: MAX_CPUS
        })
    );
}

#[test]
fn tables_that_do_not_fit_are_refused() {
    let p = Platform { cpus: MAX_CPUS };
    let blobs = place(&p, ACPI_RSDP_ADDR, ACPI_REGION_END).unwrap();
    let last = blobs.last().unwrap();
    let end = last.addr + last.bytes.len() as u64;
    // A region exactly as large as needed works; one byte less does not.
    assert_eq!(place(&p, ACPI_RSDP_ADDR, end).unwrap(), blobs);
    assert_eq!(
        place(&p, ACPI_RSDP_ADDR, end - 1),
        Err(Error::DoesNotFit {
            table: "MCFG",
            end,
            limit: end - 1
        })
    );
}
