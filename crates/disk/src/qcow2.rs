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
use std::os::unix::fs::FileExt;
use std::path::Path;

use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, ShallowMapping};

use crate::ordered::OrderedFile;
use crate::{check_range, read_only_error, BlockBackend, DiskError, Format, ImageInfo};

/// One image of a chain as imago sees it.
pub(crate) type Access = FormatAccess<OrderedFile>;

/// A qcow2 image, with its backing chain if it has one.
///
/// Reads of the top image's own data clusters skip imago: its per-request mapping lookup (an
/// L2 cache search behind its locks) was all that made a 4 KiB read of an allocated cluster
/// slower than on a raw image (issue 6 benchmark). So the backend remembers where each such
/// cluster it has read lies in the top image's file (`MappingCache`) and reads it there with
/// one `pread` on a duplicate of that file's descriptor. Everything else (zero and unallocated
/// clusters, clusters of backing images, compressed clusters) is read through imago. Only a
/// write, discard or write-zeroes through this backend moves a guest cluster or changes what
/// it reads as (the image is locked against other writers, and imago remaps nothing on its
/// own), so each of those forgets its range before calling imago. A data write reaches the
/// file before imago returns (the storage under it holds back only L1 and header writes, see
/// `OrderedFile`), so a `pread` after it sees it.
pub struct Qcow2Backend {
    access: Access,
    /// The top image's file (a duplicate of the descriptor imago owns), for cached reads.
    file: File,
    cache: MappingCache,
    size: u64,
    read_only: bool,
    /// Version 3 has zero clusters; on version 2, zeroing means writing zeroes.
    zero_clusters: bool,
}

/// Largest zero buffer written at once where zero clusters are not available.
const ZERO_CHUNK: u64 = 1 << 20;

/// Slots of the mapping cache: 16 bytes each, so 512 KiB (touched as used), remembering up to
/// 2 GiB of a guest disk with 64 KiB clusters. A cluster whose slot is taken replaces the
/// cluster in it, so no workload makes the cache grow or costs more than a lookup miss.
const MAPPING_CACHE_SLOTS: usize = 1 << 15;

/// Guest cluster → host offset of the top image's own, uncompressed data clusters.
///
/// Direct-mapped (slot = guest cluster number modulo [`MAPPING_CACHE_SLOTS`]): a lookup is a
/// mask and a compare, cheaper than hashing, and consecutive guest clusters never collide.
struct MappingCache {
    cluster_bits: u32,
    /// Per slot: guest cluster number + 1 (0 marks an empty slot, so the table starts out as
    /// zeroed memory), host offset of that cluster's first byte.
    slots: Vec<[u64; 2]>,
}

impl MappingCache {
    fn new(cluster_bits: u32) -> MappingCache {
        MappingCache {
            cluster_bits,
            slots: vec![[0; 2]; MAPPING_CACHE_SLOTS],
        }
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn slot(cluster: u64) -> usize {
        (cluster % MAPPING_CACHE_SLOTS as u64) as usize
    }

    /// The host offset of guest byte `offset`, if its cluster is cached.
    fn get(&self, offset: u64) -> Option<u64> {
        let cluster = offset >> self.cluster_bits;
        let [tag, host] = self.slots[Self::slot(cluster)];
        (tag == cluster + 1).then(|| host + (offset & (self.cluster_size() - 1)))
    }

    /// Remembers that guest cluster number `cluster` is at `host` in the top image's file.
    fn insert(&mut self, cluster: u64, host: u64) {
        self.slots[Self::slot(cluster)] = [cluster + 1, host];
    }

    /// How many bytes from guest `offset` (cached at `host`), at most `max`, lie in cached
    /// clusters that follow each other in the file too: one `pread` reads them all.
    fn contiguous(&self, offset: u64, host: u64, max: usize) -> usize {
        let cs = self.cluster_size();
        let mut len = (cs - (offset & (cs - 1))).min(max as u64);
        while len < max as u64 {
            match self.get(offset + len) {
                Some(next) if next == host + len => len = (len + cs).min(max as u64),
                _ => break,
            }
        }
        len as usize
    }

    /// Forgets every cluster that guest bytes `offset..offset+len` touch.
    fn invalidate(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = (offset + len - 1) >> self.cluster_bits;
        if last - first >= MAPPING_CACHE_SLOTS as u64 {
            return self.clear();
        }
        for cluster in first..=last {
            let slot = &mut self.slots[Self::slot(cluster)];
            if slot[0] == cluster + 1 {
                *slot = [0; 2];
            }
        }
    }

    fn clear(&mut self) {
        self.slots.fill([0; 2]);
    }
}

/// Fills `buf` from `offset` of `file`; bytes past its end read as zeroes, as they do through
/// imago (whose reads this replaces): a data cluster at the end of an image need not have been
/// written out in full.
fn read_host(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                buf.fill(0);
                break;
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

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
    /// `access` is the top image of the chain, `file` a duplicate of its descriptor and `top`
    /// what its header says.
    pub(crate) fn new(
        access: Access,
        file: File,
        read_only: bool,
        top: &ImageInfo,
    ) -> Qcow2Backend {
        let cluster_size = top.cluster_size.expect("a qcow2 image has a cluster size");
        let version = top.qcow2_version.expect("a qcow2 image has a version");
        Qcow2Backend {
            size: access.size(),
            access,
            file,
            cache: MappingCache::new(cluster_size.trailing_zeros()),
            read_only,
            zero_clusters: version >= 3,
        }
    }

    /// Runs `change`, which changes what guest bytes `offset..offset+len` read as or where
    /// they are, after forgetting their clusters' mappings. When it fails, imago may have
    /// done part of it: every mapping is forgotten.
    fn changing(
        &mut self,
        offset: u64,
        len: u64,
        change: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> io::Result<()> {
        self.cache.invalidate(offset, len);
        let result = change(self);
        if result.is_err() {
            self.cache.clear();
        }
        result
    }

    /// Reads from `offset` into `buf` what imago maps there, caching the top image's own data
    /// clusters; returns how many bytes it read (from one mapping: fewer than asked when the
    /// mapping changes).
    fn read_uncached(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        // The shallow mapping is this layer's own view: a raw mapping is one of the top
        // image's own data clusters, in its own file (external data files are refused when
        // opening, and imago is given none). Backing clusters come back as indirect and
        // compressed ones as special, so neither is ever cached.
        let (mapping, len) = self.access.get_shallow_mapping(offset, buf.len() as u64)?;
        let len = len as usize; // imago caps it at the length asked for
        if len == 0 {
            // Only at the end of the image, which `check_range` keeps reads from: let imago
            // deal with it rather than loop.
            self.access.read(&mut *buf, offset)?;
            return Ok(buf.len());
        }
        let chunk = &mut buf[..len];
        match mapping {
            ShallowMapping::Raw { offset: host, .. } => {
                // Every cluster the range touches was checked by imago to follow the first
                // one in the file, up to the last, however little of that is read.
                let in_cluster = offset & (self.cache.cluster_size() - 1);
                let first = offset >> self.cache.cluster_bits;
                let last = (offset + len as u64 - 1) >> self.cache.cluster_bits;
                for (i, cluster) in (first..=last).enumerate() {
                    self.cache.insert(
                        cluster,
                        host - in_cluster + ((i as u64) << self.cache.cluster_bits),
                    );
                }
                read_host(&self.file, chunk, host)?;
            }
            ShallowMapping::Zero { .. } => chunk.fill(0),
            // Read the backing image directly, as imago would after looking the top image up
            // once more.
            ShallowMapping::Indirect { layer, offset, .. } => layer.read(chunk, offset)?,
            // Compressed clusters: imago decompresses them.
            _ => self.access.read(chunk, offset)?,
        }
        Ok(len)
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
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let rest = &mut buf[done..];
            done += match self.cache.get(at) {
                Some(host) => {
                    let len = self.cache.contiguous(at, host, rest.len());
                    read_host(&self.file, &mut rest[..len], host)?;
                    len
                }
                None => self.read_uncached(rest, at)?,
            };
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable_range(offset, buf.len() as u64)?;
        // A write may move its clusters (copy-on-write from a backing image or of a cluster an
        // internal snapshot shares) or turn zero clusters into data.
        self.changing(offset, buf.len() as u64, |b| {
            b.write_and_commit(buf, offset)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        // flush writes the cached metadata (in dependency order); sync makes it durable.
        let result = self.access.flush().and_then(|()| self.access.sync());
        if result.is_err() {
            // A flush remaps nothing (it writes metadata back and frees clusters already
            // unmapped), but after a failed one imago's state is unknown: look everything up
            // again.
            self.cache.clear();
        }
        result
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable_range(offset, len)?;
        self.changing(offset, len, |b| {
            if !b.zero_clusters {
                return b.write_zero_buffers(offset, len);
            }
            // To zero rather than to backing: a guest must not see old base data reappear.
            b.access.discard_to_zero(offset, len)?;
            // Zero flags may need new L2 tables, and freed clusters' refcounts go down: both
            // cached.
            b.access.flush()
        })
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.writable_range(offset, len)?;
        self.changing(offset, len, |b| {
            if !b.zero_clusters {
                return b.write_zero_buffers(offset, len);
            }
            b.access.write_zeroes(offset, len)?;
            // Zero flags may need new L2 tables, or replace allocations: cached metadata
            // either way.
            b.access.flush()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CLUSTER: u64 = 64 << 10;

    fn qemu(tool: &str, args: &[&str]) {
        let out = Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// xorshift64*: test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    /// Opens a chain (top first) as `open_chain` does, keeping the concrete backend so tests
    /// can see what it cached.
    fn open(paths: &[&Path], writable: bool) -> Qcow2Backend {
        let mut below = None;
        let mut top = None;
        for (i, path) in paths.iter().enumerate().rev() {
            let write = writable && i == 0;
            let file = File::options().read(true).write(write).open(path).unwrap();
            let info = crate::inspect(&file, path, None).unwrap();
            if i == 0 {
                top = Some((file.try_clone().unwrap(), info.clone()));
            }
            below = Some(open_level(file, path, info.format, write, below.take()).unwrap());
        }
        let (file, info) = top.unwrap();
        Qcow2Backend::new(below.unwrap(), file, !writable, &info)
    }

    fn read(d: &mut Qcow2Backend, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        d.read_at(&mut buf, offset).unwrap();
        buf
    }

    #[test]
    fn cache_slots_are_replaced_on_collision_and_ranges_forgotten() {
        let mut c = MappingCache::new(9);
        c.insert(3, 0x10_0000);
        assert_eq!(c.get(3 * 512 + 7), Some(0x10_0007));
        assert_eq!(c.get(2 * 512), None);
        // The same slot, one cache size further on.
        let alias = 3 + MAPPING_CACHE_SLOTS as u64;
        c.insert(alias, 0x20_0000);
        assert_eq!(c.get(3 * 512), None);
        assert_eq!(c.get(alias * 512 + 1), Some(0x20_0001));
        // Three clusters, the third not adjacent in the file: one read covers the first two.
        c.insert(10, 0x1000);
        c.insert(11, 0x1200);
        c.insert(12, 0x8000);
        assert_eq!(c.contiguous(10 * 512 + 100, 0x1064, 4096), 924);
        assert_eq!(c.contiguous(10 * 512 + 100, 0x1064, 600), 600);
        // A range touching the last byte of 10 and the first of 12 forgets 10..=12.
        c.invalidate(11 * 512 - 1, 514);
        assert_eq!(
            (c.get(10 * 512), c.get(11 * 512), c.get(12 * 512)),
            (None, None, None)
        );
        assert!(c.get(alias * 512).is_some());
        // A range longer than the cache clears it.
        c.invalidate(0, (MAPPING_CACHE_SLOTS as u64 + 1) * 512);
        assert_eq!(c.get(alias * 512), None);
    }

    #[test]
    fn a_write_that_moves_a_cached_cluster_reads_the_new_data() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("snap.qcow2");
        qemu("qemu-img", &["create", "-q", "-f", "qcow2", s(&img), "4M"]);
        qemu(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 17 0 256k", s(&img)],
        );
        // The snapshot shares every data cluster: a write must copy its cluster elsewhere.
        qemu("qemu-img", &["snapshot", "-c", "s1", s(&img)]);
        let mut d = open(&[&img], true);
        assert!(read(&mut d, 0, 4 * CLUSTER).iter().all(|&b| b == 17));
        let before = d.cache.get(0).expect("data cluster cached");

        d.write_at(&[34; 4096], 4096).unwrap();
        let mut expect = vec![17u8; 4 * CLUSTER as usize];
        expect[4096..8192].fill(34);
        assert!(read(&mut d, 0, 4 * CLUSTER) == expect);
        let after = d.cache.get(0).expect("data cluster cached again");
        assert_ne!(
            before, after,
            "the write did not move the cluster: test is void"
        );

        // Now the cluster is the image's own: written in place, read from the cache.
        d.write_at(&[51; 100], 9000).unwrap();
        expect[9000..9100].fill(51);
        assert!(read(&mut d, 0, 4 * CLUSTER) == expect);
        assert_eq!(d.cache.get(0), Some(after));
        drop(d);
        qemu("qemu-img", &["check", "-q", s(&img)]);
    }

    #[test]
    fn copy_on_write_of_a_backing_cluster_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        qemu("qemu-img", &["create", "-q", "-f", "qcow2", s(&base), "4M"]);
        qemu(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 68 0 4M", s(&base)],
        );
        crate::create_overlay(&top, "base.qcow2", None).unwrap();
        let mut d = open(&[&top, &base], true);
        assert!(read(&mut d, 0, 2 * CLUSTER).iter().all(|&b| b == 68));
        assert_eq!(d.cache.get(0), None, "a backing cluster was cached");

        d.write_at(&[85; 1000], 1000).unwrap();
        let mut expect = vec![68u8; 2 * CLUSTER as usize];
        expect[1000..2000].fill(85);
        assert!(read(&mut d, 0, 2 * CLUSTER) == expect);
        assert!(
            d.cache.get(0).is_some(),
            "the copied cluster is the top's own"
        );
        assert_eq!(d.cache.get(CLUSTER), None);
        assert!(read(&mut d, 0, 2 * CLUSTER) == expect);
    }

    #[test]
    fn discarded_and_zeroed_cached_clusters_read_zeroes_v2_and_v3() {
        let dir = tempfile::tempdir().unwrap();
        for compat in ["0.10", "1.1"] {
            let img = dir.path().join(format!("z-{compat}.qcow2"));
            let opts = format!("compat={compat}");
            qemu(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", "-o", &opts, s(&img), "1M"],
            );
            let mut d = open(&[&img], true);
            let mut expect = vec![0u8; 6 * CLUSTER as usize];
            Rng(5).fill(&mut expect);
            d.write_at(&expect, 0).unwrap();
            assert!(read(&mut d, 0, 6 * CLUSTER) == expect);
            assert!(d.cache.get(CLUSTER).is_some());

            // Whole clusters and pieces of them.
            for (offset, len) in [(CLUSTER, CLUSTER), (140_000, 10_000), (4 * CLUSTER - 5, 10)] {
                d.discard(offset, len).unwrap();
                expect[offset as usize..(offset + len) as usize].fill(0);
                assert!(
                    read(&mut d, 0, 6 * CLUSTER) == expect,
                    "{compat} discard {offset}"
                );
            }
            for (offset, len) in [(0, 4096), (5 * CLUSTER, CLUSTER)] {
                d.write_zeroes(offset, len).unwrap();
                expect[offset as usize..(offset + len) as usize].fill(0);
                assert!(
                    read(&mut d, 0, 6 * CLUSTER) == expect,
                    "{compat} zeroes {offset}"
                );
            }
            drop(d);
            qemu("qemu-img", &["check", "-q", s(&img)]);
        }
    }

    #[test]
    fn compressed_clusters_read_through_imago_and_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let img = dir.path().join("c.qcow2");
        let expect_path = dir.path().join("expect.raw");
        // Cluster 0 compresses, cluster 1 does not (so qemu-img stores it as is), 2 is zero.
        let mut data = vec![0u8; 4 * CLUSTER as usize];
        data[..CLUSTER as usize].fill(0x5a);
        Rng(9).fill(&mut data[CLUSTER as usize..2 * CLUSTER as usize]);
        data[3 * CLUSTER as usize..].fill(0xa5);
        std::fs::write(&src, &data).unwrap();
        qemu(
            "qemu-img",
            &["convert", "-c", "-O", "qcow2", s(&src), s(&img)],
        );
        qemu(
            "qemu-img",
            &["convert", "-O", "raw", s(&img), s(&expect_path)],
        );
        let expect = std::fs::read(&expect_path).unwrap();
        assert!(expect == data);

        let mut d = open(&[&img], false);
        // One read across all four, then again from the cache, then cluster by cluster.
        assert!(read(&mut d, 0, 4 * CLUSTER) == expect);
        assert_eq!(d.cache.get(0), None, "a compressed cluster was cached");
        assert!(d.cache.get(CLUSTER).is_some());
        assert_eq!(d.cache.get(2 * CLUSTER), None);
        assert!(read(&mut d, 0, 4 * CLUSTER) == expect);
        for offset in (0..4 * CLUSTER).step_by(12_345) {
            let len = 12_345.min(4 * CLUSTER - offset);
            let want = &expect[offset as usize..(offset + len) as usize];
            assert!(read(&mut d, offset, len) == want, "at {offset}");
        }
    }

    /// Random reads, writes, discards and write-zeroes on an overlay with small clusters over
    /// a base, every read checked against a model of the disk.
    #[test]
    fn random_io_on_an_overlay_matches_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let top = dir.path().join("top.qcow2");
        let size = 2u64 << 20;
        let mut rng = Rng(3);
        let mut model = vec![0u8; size as usize];
        rng.fill(&mut model);
        std::fs::write(&base, &model).unwrap();
        qemu(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                "base.raw",
                "-o",
                "cluster_size=4k",
                s(&top),
            ],
        );
        let mut d = open(&[&top, &base], true);
        let mut buf = vec![0u8; 40_000];
        for i in 0..3000 {
            let len = 1 + rng.below(buf.len() as u64);
            let offset = rng.below(size - len);
            let range = offset as usize..(offset + len) as usize;
            match rng.below(10) {
                0 => {
                    d.discard(offset, len).unwrap();
                    model[range].fill(0);
                }
                1 => {
                    d.write_zeroes(offset, len).unwrap();
                    model[range].fill(0);
                }
                2 | 3 => {
                    rng.fill(&mut buf[..len as usize]);
                    d.write_at(&buf[..len as usize], offset).unwrap();
                    model[range].copy_from_slice(&buf[..len as usize]);
                }
                _ => {
                    d.read_at(&mut buf[..len as usize], offset).unwrap();
                    assert!(
                        buf[..len as usize] == model[range],
                        "op {i}: read {offset}+{len}"
                    );
                }
            }
        }
        let mut all = vec![0u8; size as usize];
        d.read_at(&mut all, 0).unwrap();
        assert!(all == model);
        drop(d);
        qemu("qemu-img", &["check", "-q", s(&top)]);
    }
}
