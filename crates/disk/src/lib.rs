//! Disk images for vmd: the block backend a virtio-blk device reads and writes through, and the
//! creation/conversion behind `vmctl create`.
//!
//! This crate owns the on-disk formats (raw, and qcow2 v2/v3 with chains of base images),
//! format detection, the OFD lock that keeps two writers off one image, and image creation.
//! qcow2 metadata handling is delegated to the `imago` crate (written by a QEMU block-layer
//! maintainer; it does copy-on-write from backing images, refcounts with flush ordering between
//! L2 and refcount caches, discard, compressed-cluster reads and image creation); this crate
//! adds the checks it does not make (encryption, external data files, tables beyond EOF),
//! the chain resolution and the locks.
//!
//! It never opens files on behalf of a caller that should do access checks: the daemon's parent
//! opens every image of a chain itself (see [`inspect`] and [`open_chain`]); only the tool
//! convenience [`open_path`] and the `create` functions open paths.
//!
//! Run-time I/O errors are `std::io::Error` (the device turns them into a guest I/O error);
//! open and create errors are [`DiskError`], which names the file and the problem.

mod chain;
mod create;
mod error;
mod header;
mod lock;
mod ordered;
mod qcow2;
mod raw;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use chain::{inspect, open_chain, open_path, ChainImage, ImageInfo, MAX_CHAIN_IMAGES};
pub use create::{convert, create_overlay, create_qcow2, create_raw, Progress, CONVERT_CHUNK};
pub use error::DiskError;
pub use qcow2::Qcow2Backend;
pub use raw::RawBackend;

/// A disk as a device sees it: a fixed-size array of bytes.
///
/// Ranges must lie inside `0..size()`; a range outside yields `InvalidInput`.
pub trait BlockBackend: Send + std::fmt::Debug {
    /// Virtual size in bytes.
    fn size(&self) -> u64;
    /// True when writes, discards and write-zeroes are refused.
    fn read_only(&self) -> bool;
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (virtio-blk FLUSH).
    fn flush(&mut self) -> io::Result<()>;
    /// Tells the backend `len` bytes at `offset` are no longer needed; they read back as zeroes.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read as zeroes, deallocating where cheap.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// The file that holds the disk's bytes at the disk's own offsets, if there is one (a raw
    /// image): a caller whose memory cannot be lent as `&mut [u8]` (guest memory) moves data
    /// between it and the file with vectored I/O instead of through a copy. Such a caller
    /// makes the range and read-only checks the other methods make.
    fn raw_file(&self) -> Option<&File> {
        None
    }
}

/// Image formats we read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A plain file.
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
}

impl Format {
    /// The name used in configs, `path:format` suffixes and qcow2 backing-format extensions.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    /// Parses a format name as written in vm.conf or a qcow2 header (case-insensitive).
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            _ => None,
        }
    }
}

/// Chooses the format of an open image: the explicit one if given, else qcow2 when the file
/// starts with the qcow2 magic, else raw (spec §7.3; the extension rule is vmctl's business).
pub fn detect_format(file: &File, explicit: Option<Format>) -> io::Result<Format> {
    if let Some(format) = explicit {
        return Ok(format);
    }
    let mut magic = [0u8; 4];
    // pread, not read: the fd may be shared with the parent, whose file offset we leave alone.
    let mut got = 0;
    while got < magic.len() {
        match file.read_at(&mut magic[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(if got == magic.len() && magic == header::QCOW2_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Detects the format of the file at `path` (see [`detect_format`]).
pub fn detect_path(path: &Path, explicit: Option<Format>) -> Result<Format, DiskError> {
    let file = File::open(path).map_err(|e| DiskError::io(path, "open", e))?;
    detect_format(&file, explicit).map_err(|e| DiskError::io(path, "read", e))
}

/// Checks that `offset..offset+len` lies inside a disk of `size` bytes.
pub(crate) fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset}+{len} beyond disk size {size}"),
        )),
    }
}

/// The error a write to a read-only backend returns.
pub(crate) fn read_only_error() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "disk is read-only")
}
