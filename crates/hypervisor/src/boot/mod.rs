//! Boot paths, chosen by sniffing the image (never by its name): Linux bzImage, ELF with a
//! PVH note, OpenBSD-style ELF (optionally gzip-compressed), and anything else as a BIOS.

pub mod bios;
pub mod elf;
pub mod linux;
pub mod openbsd;
pub mod pvh;

use std::io::Read;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::cpu::Entry;
use crate::error::Error;
use crate::layout::MemoryLayout;

/// Largest kernel, initrd or BIOS file we read (and largest gzip expansion we accept).
pub const MAX_IMAGE_SIZE: u64 = 1 << 30;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Offset of the "HdrS" magic in a Linux boot-protocol image.
const LINUX_HDRS_OFFSET: usize = 0x202;
const LINUX_HDRS_MAGIC: &[u8; 4] = b"HdrS";

/// What a boot image turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// Linux boot protocol (bzImage).
    Linux,
    /// ELF with a Xen PVH entry note.
    Pvh,
    /// ELF without a PVH note: vmd's OpenBSD boot-loader emulation.
    OpenBsd,
    /// Anything else: a BIOS image started at the reset vector.
    Bios,
}

/// A kernel or BIOS image with what goes with it.
pub struct BootImage {
    /// Image bytes, gzip already undone.
    pub bytes: Vec<u8>,
    /// What `bytes` is.
    pub kind: BootKind,
    /// Name used in error messages (usually the path).
    pub name: String,
    /// Initial ramdisk for Linux and PVH kernels.
    pub initrd: Option<Vec<u8>>,
    /// Kernel command line for Linux and PVH kernels.
    pub cmdline: String,
}

/// What loading left for the VM builder to do.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    /// How the boot processor enters.
    pub entry: Entry,
    /// Whether our ACPI and MP tables should be placed (not for a BIOS, which makes its own).
    pub firmware_tables: bool,
}

/// Read a whole image from `reader`, refusing anything over [`MAX_IMAGE_SIZE`].
pub fn read_image(reader: impl Read, what: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_IMAGE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::BootImageIo {
            what: what.to_string(),
            source,
        })?;
    if bytes.len() as u64 > MAX_IMAGE_SIZE {
        return Err(Error::image(what, "larger than 1 GiB"));
    }
    Ok(bytes)
}

/// Undo gzip if `bytes` is compressed; vmd reads every kernel through zlib.
fn gunzip(bytes: Vec<u8>, what: &str) -> Result<(Vec<u8>, bool), Error> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok((bytes, false));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_IMAGE_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::image(what, format!("bad gzip data: {e}")))?;
    if out.len() as u64 > MAX_IMAGE_SIZE {
        return Err(Error::image(what, "expands to more than 1 GiB"));
    }
    Ok((out, true))
}

/// Classify a kernel/BIOS image by its contents.
pub fn classify(bytes: Vec<u8>, what: &str) -> Result<(Vec<u8>, BootKind), Error> {
    if bytes.is_empty() {
        return Err(Error::image(what, "file is empty"));
    }
    let (bytes, compressed) = gunzip(bytes, what)?;
    if elf::is_elf(&bytes) {
        let info = elf::parse(&bytes).map_err(|e| Error::image(what, e))?;
        let kind = if info.pvh_entry.is_some() {
            BootKind::Pvh
        } else {
            BootKind::OpenBsd
        };
        return Ok((bytes, kind));
    }
    if compressed {
        return Err(Error::image(
            what,
            "gzip-compressed image is not an ELF kernel (BIOS images must not be compressed)",
        ));
    }
    if bytes.get(LINUX_HDRS_OFFSET..LINUX_HDRS_OFFSET + 4) == Some(LINUX_HDRS_MAGIC) {
        return Ok((bytes, BootKind::Linux));
    }
    Ok((bytes, BootKind::Bios))
}

/// Load `image` into guest memory and say how to enter it.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
) -> Result<Loaded, Error> {
    let takes_args = matches!(image.kind, BootKind::Linux | BootKind::Pvh);
    if !takes_args && (image.initrd.is_some() || !image.cmdline.is_empty()) {
        return Err(Error::image(
            &image.name,
            "an initrd or command line needs a Linux bzImage or PVH kernel",
        ));
    }
    let entry = match image.kind {
        BootKind::Linux => linux::load(mem, layout, image)?,
        BootKind::Pvh => pvh::load(mem, layout, image)?,
        BootKind::OpenBsd => openbsd::load(mem, layout, image)?,
        BootKind::Bios => bios::load(mem, layout, image)?,
    };
    Ok(Loaded {
        entry,
        firmware_tables: image.kind != BootKind::Bios,
    })
}

/// Write the NUL-terminated command line at [`crate::layout::CMDLINE_ADDR`].
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<(), Error> {
    if cmdline.as_bytes().contains(&0) {
        return Err(Error::Cmdline("contains a NUL byte".into()));
    }
    if cmdline.len() + 1 > max {
        return Err(Error::Cmdline(format!(
            "{} bytes, longer than the kernel's limit of {} bytes",
            cmdline.len(),
            max - 1
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    write(mem, crate::layout::CMDLINE_ADDR, &bytes, "command line")
}

/// Place the initrd as high as it fits below `max_end`, above `floor`; returns its address.
fn place_initrd(
    mem: &GuestMemoryMmap,
    initrd: &[u8],
    floor: u64,
    max_end: u64,
) -> Result<u64, Error> {
    const ALIGN: u64 = 0x1000;
    let size = initrd.len() as u64;
    let addr = max_end
        .checked_sub(size)
        .map(|a| a & !(ALIGN - 1))
        .filter(|&a| a >= floor)
        .ok_or_else(|| {
            Error::image(
                "initrd",
                format!("{size} bytes do not fit in guest RAM between {floor:#x} and {max_end:#x}"),
            )
        })?;
    write(mem, addr, initrd, "initrd")?;
    Ok(addr)
}

fn write(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8], what: &str) -> Result<(), Error> {
    mem.write_slice(bytes, GuestAddress(addr)).map_err(|e| {
        Error::image(
            what,
            format!(
                "{} bytes at {addr:#x} do not fit in guest RAM: {e}",
                bytes.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_kind() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(classify(bz, "k").unwrap().1, BootKind::Linux);
        assert_eq!(classify(vec![0xEA; 100], "b").unwrap().1, BootKind::Bios);
        assert!(matches!(
            classify(vec![], "e"),
            Err(Error::BootImage { .. })
        ));
    }

    #[test]
    fn gzip_of_non_elf_is_refused_and_garbage_gzip_is_an_error() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[0x90; 4096]).unwrap();
        let gz = enc.finish().unwrap();
        let err = classify(gz, "bios.gz").unwrap_err().to_string();
        assert!(err.contains("not an ELF kernel"), "{err}");
        let err = classify(vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "bad.gz")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.gz: bad gzip data"), "{err}");
    }

    #[test]
    fn truncated_elf_is_an_error_naming_the_file() {
        let mut e = b"\x7fELF\x02\x01\x01".to_vec();
        e.resize(20, 0);
        let err = classify(e, "/boot/bsd").unwrap_err().to_string();
        assert!(err.starts_with("/boot/bsd: "), "{err}");
    }
}
