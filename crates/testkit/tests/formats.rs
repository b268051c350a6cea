//! Guards the guest image formats against the loaders the VMM uses: a
//! bzImage that linux-loader rejects, or a PVH note it cannot find, would
//! otherwise only show up as a VM that never prints.

use std::fs::{self, File};
use std::io::Read;

use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use testkit::{guest, Guest};
use vm_memory::{GuestAddress, GuestMemoryMmap};

fn memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
}

#[test]
fn bzimage_loads_with_linux_loader() {
    let mem = memory();
    let mut f = File::open(guest(Guest::BzImage)).unwrap();
    let r = BzImage::load(&mem, None, &mut f, Some(GuestAddress(0x100000))).unwrap();
    assert_eq!(r.kernel_load, GuestAddress(0x100000));
    let h = r
        .setup_header
        .expect("bzImage loader returns the setup header");
    let (version, xloadflags, pref) = (h.version, h.xloadflags, h.pref_address);
    assert_eq!(version, 0x020f);
    assert_eq!(xloadflags & 1, 1, "XLF_KERNEL_64");
    assert_eq!(pref, 0x100000);
    let (init_size, syssize, image_len) = (h.init_size, h.syssize, r.kernel_end - 0x100000);
    assert!(
        u64::from(init_size) >= image_len,
        "init_size covers the payload"
    );
    assert_eq!(u64::from(syssize), image_len.div_ceil(16));
}

/// QEMU only exercises the real-mode and 32-bit entries; the 64-bit one must
/// sit at exactly +0x200 of the payload (`mov $KIND_LINUX64, %edi`).
#[test]
fn bzimage_64bit_entry_at_0x200() {
    let image = fs::read(guest(Guest::BzImage)).unwrap();
    let payload = (usize::from(image[0x1f1]) + 1) * 512;
    assert_eq!(
        &image[payload + 0x200..payload + 0x205],
        &[0xbf, 2, 0, 0, 0]
    );
}

#[test]
fn pvh_guest_has_pvh_note() {
    let mem = memory();
    let mut f = File::open(guest(Guest::Pvh)).unwrap();
    let r = Elf::load(&mem, None, &mut f, Some(GuestAddress(0x100000))).unwrap();
    match r.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            assert!((0x100000..r.kernel_end).contains(&entry.0), "{entry:?}")
        }
        other => panic!("no PVH entry: {other:?}"),
    }
}

#[test]
fn openbsd_guest_is_a_plain_high_entry_elf() {
    let elf = fs::read(guest(Guest::OpenBsd)).unwrap();
    assert_eq!(&elf[..5], b"\x7fELF\x02");
    let entry = u64::from_le_bytes(elf[0x18..0x20].try_into().unwrap());
    assert_eq!(
        entry, 0xffff_ffff_8100_1000,
        "linked like an OpenBSD kernel"
    );
    assert_eq!(entry & 0x0fff_ffff, 0x0100_1000, "vmd's LOADADDR mask");
    // No PVH note: a VMM must take the OpenBSD path for it.
    let mem = memory();
    let mut f = File::open(guest(Guest::OpenBsd)).unwrap();
    let r = Elf::load(&mem, None, &mut f, None).unwrap();
    assert!(
        !matches!(r.pvh_boot_cap, PvhBootCapability::PvhEntryPresent(_)),
        "{:?}",
        r.pvh_boot_cap
    );

    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(File::open(guest(Guest::OpenBsdGz)).unwrap())
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, elf);
}

#[test]
fn bios_image_has_reset_vector() {
    let bios = fs::read(guest(Guest::Bios)).unwrap();
    assert_eq!(bios.len(), 0x10000);
    assert_eq!(bios[0xfff0], 0xea, "far jmp at the reset vector");
    assert_eq!(&bios[0xfff3..0xfff5], &[0x00, 0xf0], "into segment 0xF000");
}

/// The PVM emulator kills the guest on these (DESIGN.md §5); the build flags
/// should keep gcc from emitting them, and this catches a flag going missing
/// or an assembly slip.
#[test]
fn guests_avoid_instructions_pvm_lacks() {
    let out = guest(Guest::Pvh).parent().unwrap().to_path_buf();
    for elf in ["pvh", "openbsd", "linux.elf"] {
        let dis = std::process::Command::new("objdump")
            .arg("-d")
            .arg(out.join(elf))
            .output()
            .expect("objdump (binutils) runs");
        assert!(dis.status.success());
        let text = String::from_utf8_lossy(&dis.stdout);
        for bad in [
            "%xmm",
            "%ymm",
            "%zmm",
            "cmpxchg16b",
            "xsave",
            "xrstor",
            "popcnt",
            "int3",
        ] {
            let hit = text.lines().find(|l| l.contains(bad));
            assert!(hit.is_none(), "{elf}: {bad}: {hit:?}");
        }
    }
}
