//! qcow2 images through imago: one `FormatAccess` per image of the chain, each owning the one
//! below it as its backing image. imago does the mapping, copy-on-write and allocation.
//!
//! Crash safety (a killed VM process must leave an image `qemu-img check` accepts; leaked
//! clusters are fine, a reference to a cluster with refcount 0 is not): imago writes a new data
//! cluster before the L2 entry pointing at it, a new L2 table before the L1 entry pointing at it,
//! and its two metadata caches write refcount blocks before L2 tables while clusters are being
//! allocated. But it keeps refcount blocks cached until a flush or an eviction, and writes the L1
//! entry for a new L2 table straight to the file. Two things close that: every call that may
//! allocate ends with imago's `flush` (cached metadata to the file, refcount blocks first, no
//! fsync; it only writes what is dirty, so a write into allocated clusters pays next to nothing),
//! and the storage under imago ([`crate::ordered::OrderedFile`]) holds L1 writes back until that
//! flush has written the refcounts. A kill at any point leaves at most leaked clusters.
//! All of this is about the page cache, which outlives the process; surviving a host power loss
//! also needs the guest's FLUSH, which is [`BlockBackend::flush`]: the same write-back, then
//! fsync.

use std::fs::File;
use std::io;
use std::path::Path;

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};

use crate::ordered::OrderedFile;
use crate::{check_range, read_only_error, BlockBackend, DiskError, Format};

/// One image of a chain as imago sees it.
pub(crate) type Access = FormatAccess<OrderedFile>;

/// A qcow2 image, with its backing chain if it has one.
pub struct Qcow2Backend {
    access: Access,
    size: u64,
    read_only: bool,
    /// Version 3 has zero clusters; on version 2, zeroing means writing zeroes.
    zero_clusters: bool,
}

/// Largest zero buffer written at once where zero clusters are not available.
const ZERO_CHUNK: u64 = 1 << 20;

impl std::fmt::Debug for Qcow2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Backend")
            .field("size", &self.size)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Opens one image of a chain with imago, on top of `backing` (already opened, read-only).
/// The headers were checked by [`crate::header::read`] before; imago checks the tables.
pub(crate) fn open_level(
    file: File,
    path: &Path,
    format: Format,
    writable: bool,
    backing: Option<Access>,
) -> Result<Access, DiskError> {
    let storage = OrderedFile::new(file, path, writable, format == Format::Qcow2)
        .map_err(|e| DiskError::io(path, "open", e))?;
    // The gate forbids imago to open anything by itself: every file of the chain is passed.
    let gate = DenyImplicitOpenGate::default();
    let bad = |source| DiskError::BadImage {
        path: path.into(),
        source,
    };
    match format {
        Format::Raw => Raw::builder(storage)
            .write(writable)
            .open(gate)
            .map(FormatAccess::new)
            .map_err(bad),
        Format::Qcow2 => Qcow2::<OrderedFile>::builder(storage)
            .write(writable)
            .backing(backing)
            .data_file(None)
            .open(gate)
            .map(FormatAccess::new)
            .map_err(bad),
    }
}

impl Qcow2Backend {
    pub(crate) fn new(access: Access, read_only: bool, version: u32) -> Qcow2Backend {
        Qcow2Backend {
            size: access.size(),
            access,
            read_only,
            zero_clusters: version >= 3,
        }
    }

    /// Writes `buf`, then the metadata this allocated (see the module comment for why).
    fn write_and_commit(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.access.write(buf, offset)?;
        self.access.flush()
    }

    fn write_zero_buffers(&mut self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(len) as usize];
        let end = offset + len;
        while offset < end {
            let n = (zeroes.len() as u64).min(end - offset);
            self.write_and_commit(&zeroes[..n as usize], offset)?;
            offset += n;
        }
        Ok(())
    }

    fn writable_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        check_range(self.size, offset, len)
    }
}

impl BlockBackend for Qcow2Backend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.access.read(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable_range(offset, buf.len() as u64)?;
        self.write_and_commit(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        // flush writes the cached metadata (in dependency order); sync makes it durable.
        self.access.flush()?;
        self.access.sync()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable_range(offset, len)?;
        if !self.zero_clusters {
            return self.write_zero_buffers(offset, len);
        }
        // To zero rather than to backing: a guest must not see old base data reappear.
        self.access.discard_to_zero(offset, len)?;
        // Zero flags may need new L2 tables, and freed clusters' refcounts go down: both cached.
        self.access.flush()
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable_range(offset, len)?;
        if !self.zero_clusters {
            return self.write_zero_buffers(offset, len);
        }
        self.access.write_zeroes(offset, len)?;
        // Zero flags may need new L2 tables, or replace allocations: cached metadata either way.
        self.access.flush()
    }
}
