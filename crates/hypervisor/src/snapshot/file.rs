//! Snapshot files (issue 8 item 4): a stream whose guest RAM is a memory image — whole,
//! uncompressed, at page-aligned offsets ([`super::stream::MemoryImage`]) — is restored by
//! mapping that RAM from the file copy-on-write (`MAP_PRIVATE`) instead of reading it, so a
//! large VM is ready at once and its pages come in from the file (the page cache) as the guest
//! touches them. The table was checked against the machine by the reader; here the file itself
//! is checked (a regular file, every region at a page boundary of the file and inside it)
//! before anything is mapped.

use std::fs::File;
use std::io::{self, Seek};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::stream::{MemoryImage, PAGE_SIZE};
use super::SnapshotError;

/// A regular file a stream is restored from.
pub(crate) struct Source<'f> {
    file: &'f File,
    /// File offset where the reader starts: stream offset `read` (the bytes the caller read
    /// of the stream before) is here.
    start: u64,
    read: u64,
    /// The file's size.
    len: u64,
}

impl<'f> Source<'f> {
    /// `file` at its current position, which must be a regular file, holding the stream
    /// from its offset `read` on.
    pub fn new(file: &'f File, read: usize) -> Result<Self, SnapshotError> {
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
            read: read as u64,
            len: meta.len(),
        })
    }

    /// Map the RAM of `image` (its table checked by the reader) copy-on-write from the file,
    /// after checking that every region lies page-aligned inside the file.
    pub fn map(&self, image: &MemoryImage) -> Result<GuestMemoryMmap, SnapshotError> {
        const WHAT: &str = "the memory image";
        let malformed = |reason: String| SnapshotError::Malformed { what: WHAT, reason };
        let payload = image
            .payload_at
            .checked_sub(self.read)
            .and_then(|at| at.checked_add(self.start))
            .ok_or_else(|| malformed("it is not in the file".into()))?;
        let mut regions = Vec::with_capacity(image.regions.len());
        for r in &image.regions {
            let offset = payload
                .checked_add(r.offset)
                .ok_or_else(|| malformed(format!("region at {:#x}: offset overflows", r.addr)))?;
            if !offset.is_multiple_of(PAGE_SIZE) || !r.len.is_multiple_of(PAGE_SIZE) {
                return Err(malformed(format!(
                    "the RAM at guest {:#x} is at file offset {offset:#x}, not at a page \
                     boundary: it cannot be mapped",
                    r.addr
                )));
            }
            if offset.checked_add(r.len).is_none_or(|end| end > self.len) {
                return Err(SnapshotError::Truncated { what: WHAT });
            }
            let len = usize::try_from(r.len).map_err(|_| SnapshotError::TooLarge {
                what: WHAT,
                len: r.len,
                limit: usize::MAX as u64,
            })?;
            let fd = self.file.try_clone().map_err(SnapshotError::Read)?;
            let mapping = MmapRegionBuilder::new(len)
                .with_file_offset(FileOffset::new(fd, offset))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
                .build()
                .map_err(|e| SnapshotError::Read(io::Error::other(format!("mapping: {e}"))))?;
            let region = GuestRegionMmap::new(mapping, GuestAddress(r.addr))
                .ok_or_else(|| malformed(format!("a region at {:#x} overflows", r.addr)))?;
            regions.push(region);
        }
        GuestMemoryMmap::from_regions(regions).map_err(|e| malformed(e.to_string()))
    }
}
