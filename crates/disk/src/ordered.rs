//! A storage layer under imago that holds back writes to a qcow2 image's L1 table (and the
//! header's L1 pointer) until imago flushes, so a killed VM process never leaves an L1 entry
//! on disk ahead of the refcount of the L2 table it points to (issue 6: "refcounts and L1/L2
//! updates ordered so a killed VM process leaves an image that `qemu-img check` accepts").
//!
//! imago 0.2 allocates a new L2 table with its refcount only in its cache, writes the table,
//! then writes the L1 entry straight to the file; the refcount block reaches the file at the
//! next flush. Killed in between, the image has a table in use with refcount 0: corruption.
//! imago's flush writes back every cached table and refcount block before it flushes the
//! storage, so releasing the held L1 writes in [`Storage::flush`] puts them after the
//! refcounts. A process killed before that loses only the new mapping (the data clusters and
//! the table are then leaked, which `qemu-img check` reports as leaks, not corruption).
//!
//! imago never reads its L1 table back after opening, and a held write is released before
//! any other request touches its bytes, so nothing ever sees stale data. Only the process's
//! own ordering of writes matters here (process kill, not power loss: writes reach the page
//! cache in the order they are issued).

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use imago::file::File as ImagoFile;
use imago::io_buffers::{IoVector, IoVectorMut};
use imago::storage::drivers::CommonStorageHelper;
use imago::storage::PreallocateMode;
use imago::{Storage, StorageExt};

/// Bytes 36..48 of a qcow2 header: `l1_size` (u32) and `l1_table_offset` (u64), big-endian.
const L1_POINTER: Range<u64> = 36..48;
/// Bytes per L1 entry.
const L1_ENTRY_LEN: u64 = 8;

/// An image file; for a qcow2 image, L1 writes are held until flush.
#[derive(Debug)]
pub(crate) struct OrderedFile {
    inner: ImagoFile,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Whether this is a qcow2 image whose L1 writes are held (a raw image's bytes are all
    /// guest data).
    qcow2: bool,
    /// Where the L1 table is in the file now.
    l1: Range<u64>,
    /// Held writes, in issue order.
    writes: Vec<(u64, Vec<u8>)>,
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Where `pointer` (the header's bytes 36..48) says the L1 table is.
fn l1_range(pointer: &[u8; 12]) -> Range<u64> {
    let entries = u64::from(u32::from_be_bytes([
        pointer[0], pointer[1], pointer[2], pointer[3],
    ]));
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&pointer[4..]);
    let start = u64::from_be_bytes(offset);
    start..start.saturating_add(entries.saturating_mul(L1_ENTRY_LEN))
}

impl OrderedFile {
    /// Wrap `file`; `qcow2` images get their L1 writes held. The header has been checked by
    /// the caller (`header.rs`), so the L1 pointer is read as it is.
    pub(crate) fn new(
        file: File,
        filename: &Path,
        writable: bool,
        qcow2: bool,
    ) -> io::Result<OrderedFile> {
        let mut held = Held {
            qcow2,
            ..Held::default()
        };
        if qcow2 {
            let mut pointer = [0u8; 12];
            file.read_exact_at(&mut pointer, L1_POINTER.start)?;
            held.l1 = l1_range(&pointer);
        }
        let opts = imago::StorageOpenOptions::new()
            .filename(filename)
            .write(writable);
        Ok(OrderedFile {
            inner: ImagoFile::from_open_file(file, opts)?,
            held: Mutex::new(held),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // The held writes stay valid even if a holder panicked: keep serving them.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write every held write, in order, and follow a moved L1 table.
    fn release(&self, held: &mut Held) -> io::Result<()> {
        let mut moved = false;
        for (offset, data) in std::mem::take(&mut held.writes) {
            moved |= overlaps(&(offset..offset + data.len() as u64), &L1_POINTER);
            self.inner.write(&data[..], offset)?;
        }
        if moved {
            let mut pointer = [0u8; 12];
            self.inner.read(&mut pointer[..], L1_POINTER.start)?;
            held.l1 = l1_range(&pointer);
        }
        Ok(())
    }

    /// Release held writes first if `range` touches any of them.
    fn settle(&self, range: Range<u64>) -> io::Result<()> {
        let mut held = self.lock();
        if held
            .writes
            .iter()
            .any(|(o, d)| overlaps(&range, &(*o..*o + d.len() as u64)))
        {
            self.release(&mut held)?;
        }
        Ok(())
    }

    fn release_all(&self) -> io::Result<()> {
        let mut held = self.lock();
        self.release(&mut held)
    }
}

impl fmt::Display for OrderedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Storage for OrderedFile {
    fn mem_align(&self) -> usize {
        self.inner.mem_align()
    }

    fn req_align(&self) -> usize {
        self.inner.req_align()
    }

    fn zero_align(&self) -> usize {
        self.inner.zero_align()
    }

    fn discard_align(&self) -> usize {
        self.inner.discard_align()
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn resolve_relative_path<P: AsRef<Path>>(&self, relative: P) -> io::Result<PathBuf> {
        self.inner.resolve_relative_path(relative)
    }

    fn get_filename(&self) -> Option<PathBuf> {
        self.inner.get_filename()
    }

    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        self.settle(offset..offset + bufv.len())?;
        // SAFETY: the caller's guarantees for `pure_readv` (no concurrent intersecting
        // requests) are passed on unchanged.
        unsafe { self.inner.pure_readv(bufv, offset) }
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        let range = offset..offset + bufv.len();
        {
            let mut held = self.lock();
            if held.qcow2 && (overlaps(&range, &L1_POINTER) || overlaps(&range, &held.l1)) {
                let mut data = vec![0u8; bufv.len() as usize];
                bufv.copy_into_slice(&mut data);
                held.writes.push((offset, data));
                return Ok(());
            }
        }
        self.settle(range)?;
        // SAFETY: as for `pure_readv`.
        unsafe { self.inner.pure_writev(bufv, offset) }
    }

    unsafe fn pure_write_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        self.settle(offset..offset.saturating_add(length))?;
        // SAFETY: as for `pure_readv`.
        unsafe { self.inner.pure_write_zeroes(offset, length) }
    }

    unsafe fn pure_write_allocated_zeroes(&self, offset: u64, length: u64) -> io::Result<()> {
        self.settle(offset..offset.saturating_add(length))?;
        // SAFETY: as for `pure_readv`.
        unsafe { self.inner.pure_write_allocated_zeroes(offset, length) }
    }

    unsafe fn pure_discard(&self, offset: u64, length: u64) -> io::Result<()> {
        self.settle(offset..offset.saturating_add(length))?;
        // SAFETY: as for `pure_readv`.
        unsafe { self.inner.pure_discard(offset, length) }
    }

    fn flush(&self) -> io::Result<()> {
        self.release_all()?;
        self.inner.flush()
    }

    fn sync(&self) -> io::Result<()> {
        self.release_all()?;
        self.inner.sync()
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        self.release_all()?;
        // SAFETY: as for `pure_readv`.
        unsafe { self.inner.invalidate_cache() }
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        self.inner.get_storage_helper()
    }

    fn resize(&self, new_size: u64, prealloc_mode: PreallocateMode) -> io::Result<()> {
        self.release_all()?;
        self.inner.resize(new_size, prealloc_mode)
    }
}

#[cfg(test)]
mod tests {
    //! What a kill in the middle of an allocating write leaves on disk: the file is copied
    //! right after imago's write returns and before anything flushes it, which is exactly
    //! what a process killed at that point leaves behind.

    use std::process::Command;

    use imago::qcow2::Qcow2;
    use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder};

    use super::*;

    /// A fresh 2 GiB qcow2 image (64 KiB clusters) from qemu-img, or `None` without it.
    fn image(dir: &Path) -> Option<PathBuf> {
        let path = dir.join("t.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("2G")
            .status();
        made.is_ok_and(|s| s.success()).then_some(path)
    }

    /// `qemu-img check`'s exit status for `path`: 0 clean, 2 corrupt, 3 leaks only.
    fn check(path: &Path) -> i32 {
        let out = Command::new("qemu-img")
            .arg("check")
            .arg(path)
            .output()
            .unwrap();
        out.status.code().unwrap_or(-1)
    }

    /// Write into a guest range without an L2 table yet (so imago allocates one and writes
    /// its L1 entry), then copy the file as a kill would leave it.
    fn write_then_copy(path: &Path, hold: bool, copy: &Path) -> FormatAccess<OrderedFile> {
        let file = File::options().read(true).write(true).open(path).unwrap();
        let storage = OrderedFile::new(file, path, true, hold).unwrap();
        let qcow2 = Qcow2::<OrderedFile>::builder(storage)
            .write(true)
            .open(DenyImplicitOpenGate::default())
            .unwrap();
        let access = FormatAccess::new(qcow2);
        access.write(&[0xAB; 4096][..], 1 << 30).unwrap();
        std::fs::copy(path, copy).unwrap();
        access
    }

    #[test]
    fn a_kill_inside_an_l2_allocating_write_leaves_only_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = image(dir.path()) else {
            println!("SKIPPED: qemu-img is not installed");
            return;
        };
        let killed = dir.path().join("killed.qcow2");
        let access = write_then_copy(&path, true, &killed);
        let status = check(&killed);
        assert!(
            status == 0 || status == 3,
            "qemu-img check exit {status} on the image a kill would leave"
        );
        // After the flush the write is complete and the image clean.
        access.flush().unwrap();
        drop(access);
        assert_eq!(check(&path), 0);
        let out = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&path)
            .arg(dir.path().join("t.raw"))
            .status()
            .unwrap();
        assert!(out.success());
        let raw = File::open(dir.path().join("t.raw")).unwrap();
        let mut back = [0u8; 4096];
        raw.read_exact_at(&mut back, 1 << 30).unwrap();
        assert_eq!(back, [0xAB; 4096]);
    }

    /// The same sequence without holding the L1 write corrupts the image: what the wrapper
    /// is for, and proof that the test above can fail.
    #[test]
    fn without_holding_the_same_kill_corrupts_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let Some(path) = image(dir.path()) else {
            println!("SKIPPED: qemu-img is not installed");
            return;
        };
        let killed = dir.path().join("killed.qcow2");
        let access = write_then_copy(&path, false, &killed);
        assert_eq!(check(&killed), 2, "imago wrote the L1 entry first");
        drop(access);
    }

    #[test]
    fn l1_range_follows_the_header_fields() {
        let mut p = [0u8; 12];
        p[..4].copy_from_slice(&4u32.to_be_bytes());
        p[4..].copy_from_slice(&0x3_0000u64.to_be_bytes());
        assert_eq!(l1_range(&p), 0x3_0000..0x3_0020);
        assert!(overlaps(&(0x3_0018..0x3_0020), &l1_range(&p)));
        assert!(!overlaps(&(0x3_0020..0x3_0028), &l1_range(&p)));
    }
}
