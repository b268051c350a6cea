//! Paths of the guest images that build.rs put in OUT_DIR.

use std::path::{Path, PathBuf};

/// One test guest image per boot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// ELF64 with a Xen PVH note (32-bit entry, EBX = hvm_start_info).
    Pvh,
    /// Linux boot protocol 2.15 image: real-mode, 32-bit and 64-bit entries.
    BzImage,
    /// ELF64 without PVH note, OpenBSD boot-loader hand-off, entry 0xffffffff81001000.
    OpenBsd,
    /// [`Guest::OpenBsd`] compressed with gzip.
    OpenBsdGz,
    /// 64 KiB flat real-mode BIOS image.
    Bios,
}

impl Guest {
    /// Every guest, for loops over all boot paths.
    pub const ALL: [Guest; 5] = [
        Guest::Pvh,
        Guest::BzImage,
        Guest::OpenBsd,
        Guest::OpenBsdGz,
        Guest::Bios,
    ];

    fn file_name(self) -> &'static str {
        match self {
            Guest::Pvh => "pvh",
            Guest::BzImage => "bzimage",
            Guest::OpenBsd => "openbsd",
            Guest::OpenBsdGz => "openbsd.gz",
            Guest::Bios => "bios.bin",
        }
    }
}

/// Path of a built guest image. The files live in this crate's build output
/// directory, so they exist whenever the crate compiled.
pub fn guest(kind: Guest) -> PathBuf {
    Path::new(env!("OUT_DIR")).join(kind.file_name())
}

/// A PVH kernel that boots the image QEMU gives it as `-initrd` the way a
/// direct-boot VMM does and QEMU cannot: an ELF64 through vmd's OpenBSD
/// boot-loader hand-off, a bzImage through its 64-bit entry (zero page with
/// e820 and the shim's own command line). Only for validating
/// [`Guest::OpenBsd`] and [`Guest::BzImage`] without our VMM.
pub fn qemu_loader_shim() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("loadershim")
}
