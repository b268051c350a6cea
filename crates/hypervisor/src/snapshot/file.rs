//! Snapshot files (issue 8 item 4): a stream whose guest RAM is a memory image — whole,
//! uncompressed, at page-aligned offsets ([`super::stream::MemoryImage`]) — is restored by
//! mapping that RAM from the file copy-on-write (`MAP_PRIVATE`) instead of reading it, so a
//! large VM is ready at once and its pages come in from the file (the page cache) as the guest
//! touches them. The table was checked against the machine by the reader; here the file itself
//! is checked (a regular file, the stream at a page boundary, long enough) before anything is
//! mapped.

use std::fs::File;
use std::io::{self, Seek};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::stream::{MemoryImage, PAGE_SIZE};
use super::SnapshotError;

/// A regular file a stream is restored from.
pub(crate) struct Source<'f> {
    file: &'f File,
    /// File offset of the stream's first byte.
    start: u64,
    /// The file's size.
    len: u64,
}

impl<'f> Source<'f> {
    /// `file` at its current position, which must be a regular file.
    pub fn new(file: &'f File) -> Result<Self, SnapshotError> {
        let meta = file.metadata().map_err(SnapshotError::Read)?;
        if !meta.is_file() {
            return Err(SnapshotError::Read(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a snapshot file to map must be a regular file",
            )));
        }
        let mut f = file;
        let start = f.stream_position().map_err(SnapshotError::Read)?;
        Ok(Source {
            file,
            start,
            len: meta.len(),
        })
    }

    /// Map the RAM of `image` (its table checked by the reader) copy-on-write from the file,
    /// after checking that every region lies page-aligned inside the file.
    pub fn map(&self, image: &MemoryImage) -> Result<GuestMemoryMmap, SnapshotError> {
        const WHAT: &str = "the memory image";
        if !self.start.is_multiple_of(PAGE_SIZE) {
            return Err(SnapshotError::Malformed {
                what: WHAT,
                reason: format!(
                    "the stream starts at file offset {:#x}, not at a page boundary: its RAM \
                     cannot be mapped",
                    self.start
                ),
            });
        }
        let end = self.start.checked_add(image.end());
        if end.is_none_or(|end| end > self.len) {
            return Err(SnapshotError::Truncated { what: WHAT });
        }
        let mut regions = Vec::with_capacity(image.regions.len());
        for r in &image.regions {
            let offset = self.start + r.offset;
            let len = usize::try_from(r.len).map_err(|_| SnapshotError::TooLarge {
                what: WHAT,
                len: r.len,
                limit: usize::MAX as u64,
            })?;
            if !offset.is_multiple_of(PAGE_SIZE) || !r.len.is_multiple_of(PAGE_SIZE) {
                return Err(SnapshotError::Malformed {
                    what: WHAT,
                    reason: format!(
                        "{:#x} bytes at file offset {offset:#x} are not whole pages",
                        r.len
                    ),
                });
            }
            let fd = self.file.try_clone().map_err(SnapshotError::Read)?;
            let mapping = MmapRegionBuilder::new(len)
                .with_file_offset(FileOffset::new(fd, offset))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
                .map_err(|e| SnapshotError::Read(io::Error::other(format!("mapping: {e}"))))?;
            let region = GuestRegionMmap::new(mapping, GuestAddress(r.addr)).ok_or(
                SnapshotError::Malformed {
                    what: WHAT,
                    reason: format!("a region at {:#x} overflows", r.addr),
                },
            )?;
            regions.push(region);
        }
        GuestMemoryMmap::from_regions(regions).map_err(|e| SnapshotError::Malformed {
            what: WHAT,
            reason: e.to_string(),
        })
    }
}
