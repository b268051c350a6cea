//! Our own reading of the qcow2 header, before imago sees the file: the checks imago does not
//! make (encryption, which it would silently misread; tables beyond EOF; incompatible bits
//! named for the user) and the backing file name and format, which the chain resolution needs
//! without opening the image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::DiskError;

/// "QFI\xfb".
pub(crate) const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// Length of the version 2 header; version 3 fields follow it.
const V2_HEADER_LEN: u64 = 72;
/// Smallest valid `header_length` of a version 3 image.
const V3_MIN_HEADER_LEN: u64 = 104;
/// Smallest and largest cluster_bits: imago supports 512 bytes to 2 MiB, as does QEMU.
const CLUSTER_BITS: std::ops::RangeInclusive<u32> = 9..=21;
/// Refcount orders imago supports (1 to 64 bit refcounts).
const REFCOUNT_ORDERS: std::ops::RangeInclusive<u32> = 0..=6;
/// Refcount order of version 2 images (16-bit refcounts).
const V2_REFCOUNT_ORDER: u32 = 4;
/// QEMU refuses longer backing file names; so do we.
const MAX_BACKING_NAME: u32 = 1023;
/// Header extension type: the end of the list.
const EXT_END: u32 = 0;
/// Header extension type: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Size of an extension's type+length prefix.
const EXT_HEADER_LEN: u64 = 8;
/// Extensions are padded to this alignment.
const EXT_ALIGN: u64 = 8;
/// Bytes per L1, L2 and refcount-table entry.
const TABLE_ENTRY: u64 = 8;
/// QEMU's limit on the L1 table (QCOW_MAX_L1_SIZE); it bounds the work of checking it.
const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on the refcount table (QCOW_MAX_REFTABLE_SIZE).
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Host offset bits of L1 and L2 (standard cluster) entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Refcount-table entries use every bit above the low 9 for the offset.
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;
/// L2 entry flag: the cluster is compressed.
const L2_COMPRESSED: u64 = 1 << 62;
/// Compressed-cluster descriptors: the offset takes the low `62 - (cluster_bits - 8)` bits.
const COMPRESSED_OFFSET_BITS_BASE: u32 = 70;

/// Incompatible feature bits, named as in the qcow2 specification.
const INCOMPATIBLE_NAMES: [&str; 5] = [
    "dirty (lazy refcounts not written back; repair with `qemu-img check -r all`)",
    "corrupt (marked corrupt; repair with `qemu-img check -r all`)",
    "external data file",
    "compression type (non-zlib compression)",
    "extended L2 entries (subclusters)",
];

/// What the header tells us.
#[derive(Debug, Clone)]
pub(crate) struct Qcow2Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size.
    pub size: u64,
    /// Backing file name exactly as stored.
    pub backing: Option<String>,
    /// Backing format from the header extension, if any.
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Reads exactly `buf.len()` bytes at `offset`, or reports a truncated header.
fn read_header_bytes(
    file: &File,
    path: &Path,
    file_len: u64,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), DiskError> {
    let need = offset + buf.len() as u64;
    if need > file_len {
        return Err(DiskError::TruncatedHeader {
            path: path.into(),
            len: file_len,
            need,
        });
    }
    file.read_exact_at(buf, offset)
        .map_err(|e| DiskError::io(path, "read header", e))
}

/// Checks that `len` bytes at `offset` lie within the file.
fn check_inside(
    path: &Path,
    table: &'static str,
    offset: u64,
    len: u64,
    file_len: u64,
) -> Result<(), DiskError> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(DiskError::OutsideFile {
            path: path.into(),
            table,
            offset,
            len,
            file_len,
        }),
    }
}

/// Parses and checks the header of the qcow2 image in `file`.
pub(crate) fn read(file: &File, path: &Path) -> Result<Qcow2Header, DiskError> {
    let invalid = |reason: String| DiskError::InvalidHeader {
        path: path.into(),
        reason,
    };
    let unsupported = |feature: String| DiskError::Unsupported {
        path: path.into(),
        feature,
    };
    let file_len = file
        .metadata()
        .map_err(|e| DiskError::io(path, "stat", e))?
        .len();
    let mut h = [0u8; V3_MIN_HEADER_LEN as usize];
    read_header_bytes(file, path, file_len, &mut h[..4], 0)?;
    if h[..4] != QCOW2_MAGIC {
        return Err(DiskError::NotQcow2 { path: path.into() });
    }
    read_header_bytes(file, path, file_len, &mut h[..V2_HEADER_LEN as usize], 0)?;
    let version = be32(&h, 4);
    if version != 2 && version != 3 {
        return Err(unsupported(format!("version {version}")));
    }
    let cluster_bits = be32(&h, 20);
    if !CLUSTER_BITS.contains(&cluster_bits) {
        return Err(invalid(format!(
            "cluster_bits {cluster_bits} outside {}..={}",
            CLUSTER_BITS.start(),
            CLUSTER_BITS.end()
        )));
    }
    let cluster_size = 1u64 << cluster_bits;
    match be32(&h, 32) {
        0 => {}
        1 => return Err(unsupported("encryption (AES)".into())),
        2 => return Err(unsupported("encryption (LUKS)".into())),
        m => return Err(unsupported(format!("encryption (method {m})"))),
    }

    let mut header_len = V2_HEADER_LEN;
    // Version 2 images always have 16-bit refcounts.
    let mut refcount_order = V2_REFCOUNT_ORDER;
    if version == 3 {
        read_header_bytes(file, path, file_len, &mut h, 0)?;
        let incompatible = be64(&h, 72);
        if incompatible != 0 {
            let bit = incompatible.trailing_zeros() as usize;
            let name = INCOMPATIBLE_NAMES
                .get(bit)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("unknown incompatible feature bit {bit}"));
            return Err(unsupported(name));
        }
        refcount_order = be32(&h, 96);
        if !REFCOUNT_ORDERS.contains(&refcount_order) {
            return Err(unsupported(format!("refcount order {refcount_order}")));
        }
        header_len = u64::from(be32(&h, 100));
        if header_len < V3_MIN_HEADER_LEN || header_len > cluster_size {
            return Err(invalid(format!("header length {header_len}")));
        }
    }

    let l1_entries = u64::from(be32(&h, 36));
    check_inside(
        path,
        "L1 table",
        be64(&h, 40),
        l1_entries * TABLE_ENTRY,
        file_len,
    )?;
    let rt_clusters = u64::from(be32(&h, 56));
    if rt_clusters == 0 {
        return Err(invalid("no refcount table".into()));
    }
    if rt_clusters * cluster_size > MAX_REFTABLE_BYTES {
        return Err(unsupported(format!(
            "refcount table of {} bytes (limit {MAX_REFTABLE_BYTES})",
            rt_clusters * cluster_size
        )));
    }
    check_inside(
        path,
        "refcount table",
        be64(&h, 48),
        rt_clusters * cluster_size,
        file_len,
    )?;

    let backing = match (be64(&h, 8), be32(&h, 16)) {
        (0, _) => None,
        (_, len) if len > MAX_BACKING_NAME => {
            return Err(invalid(format!("backing file name of {len} bytes")))
        }
        (offset, len) => {
            let end = offset.checked_add(u64::from(len));
            if end.is_none_or(|end| end > cluster_size) {
                return Err(invalid(
                    "backing file name outside the first cluster".into(),
                ));
            }
            let mut name = vec![0u8; len as usize];
            read_header_bytes(file, path, file_len, &mut name, offset)?;
            Some(
                String::from_utf8(name)
                    .map_err(|_| invalid("backing file name is not UTF-8".into()))?,
            )
        }
    };

    let backing_format = read_backing_format(file, path, file_len, header_len, cluster_size)?;
    let l1_bytes = l1_entries * TABLE_ENTRY;
    if l1_bytes > MAX_L1_BYTES {
        return Err(unsupported(format!(
            "L1 table of {l1_bytes} bytes (limit {MAX_L1_BYTES})"
        )));
    }
    // Like QEMU, require the L1 table to cover the virtual size: imago would otherwise grow
    // it on the first write far out, and a header claiming exabytes would make that huge.
    let virtual_size = be64(&h, 24);
    let bytes_per_l1_entry = cluster_size * (cluster_size / TABLE_ENTRY);
    let l1_needed = virtual_size.div_ceil(bytes_per_l1_entry);
    if l1_entries < l1_needed {
        return Err(invalid(format!(
            "L1 table of {l1_entries} entries is too small for a virtual size of {virtual_size} (needs {l1_needed})"
        )));
    }
    let l1_offset = be64(&h, 40);
    let rt_offset = be64(&h, 48);
    let mut tables = Tables {
        file,
        path,
        file_len,
        cluster_bits,
        used: Vec::new(),
    };
    tables.use_range(0, cluster_size); // the header
    tables.use_range(l1_offset, l1_bytes);
    tables.use_range(rt_offset, rt_clusters * cluster_size);
    tables.check_l1(l1_offset, l1_entries)?;
    let refblocks =
        tables.check_refcount_table(rt_offset, rt_clusters * cluster_size / TABLE_ENTRY)?;
    tables.check_refcounts(&refblocks, refcount_order)?;
    Ok(Qcow2Header {
        version,
        cluster_bits,
        size: virtual_size,
        backing,
        backing_format,
    })
}

/// Walks the header extensions (v2 images may have them too: QEMU writes the backing format
/// there) and returns the backing format, if named.
fn read_backing_format(
    file: &File,
    path: &Path,
    file_len: u64,
    mut at: u64,
    cluster_size: u64,
) -> Result<Option<String>, DiskError> {
    let invalid = |reason: &str| DiskError::InvalidHeader {
        path: path.into(),
        reason: reason.into(),
    };
    // Each step advances by at least EXT_HEADER_LEN and stops at the first cluster's end.
    while at + EXT_HEADER_LEN <= cluster_size.min(file_len) {
        let mut eh = [0u8; EXT_HEADER_LEN as usize];
        read_header_bytes(file, path, file_len, &mut eh, at)?;
        let (kind, len) = (be32(&eh, 0), u64::from(be32(&eh, 4)));
        at += EXT_HEADER_LEN;
        if kind == EXT_END {
            return Ok(None);
        }
        if at + len > cluster_size {
            return Err(invalid("header extension beyond the first cluster"));
        }
        if kind == EXT_BACKING_FORMAT {
            let mut name = vec![0u8; len as usize];
            read_header_bytes(file, path, file_len, &mut name, at)?;
            return String::from_utf8(name)
                .map(Some)
                .map_err(|_| invalid("backing format name is not UTF-8"));
        }
        at += len.next_multiple_of(EXT_ALIGN);
    }
    Ok(None)
}

/// Checks that every L2 table, data cluster and refcount block the tables point at lies
/// inside the file, and that every cluster in use has a refcount. imago reads beyond the end
/// as zeroes and would write there in place, and it recurses without bound when a cluster in
/// use has no refcount block; QEMU calls both corruption. The cost is reading the allocated
/// metadata once at open.
struct Tables<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
    cluster_bits: u32,
    /// Host cluster indices in use (metadata and data), for the refcount check.
    used: Vec<u64>,
}

impl Tables<'_> {
    fn read_entries(&self, offset: u64, count: u64) -> Result<Vec<u64>, DiskError> {
        let mut raw = vec![0u8; (count * TABLE_ENTRY) as usize];
        self.file
            .read_exact_at(&mut raw, offset)
            .map_err(|e| DiskError::io(self.path, "read metadata", e))?;
        Ok(raw
            .chunks_exact(TABLE_ENTRY as usize)
            .map(|c| be64(c, 0))
            .collect())
    }

    /// Records the clusters of `len` bytes at `offset` as in use.
    fn use_range(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = (offset + len - 1) >> self.cluster_bits;
        self.used.extend(first..=last);
    }

    /// A cluster-aligned pointer to a whole cluster inside the file, then in use.
    fn check_cluster(&mut self, what: &'static str, offset: u64) -> Result<(), DiskError> {
        let cluster = 1u64 << self.cluster_bits;
        if offset % cluster != 0 {
            return Err(DiskError::InvalidHeader {
                path: self.path.into(),
                reason: format!("{what} at unaligned offset {offset}"),
            });
        }
        check_inside(self.path, what, offset, cluster, self.file_len)?;
        self.use_range(offset, cluster);
        Ok(())
    }

    fn check_l1(&mut self, offset: u64, entries: u64) -> Result<(), DiskError> {
        let l2_entries = (1u64 << self.cluster_bits) / TABLE_ENTRY;
        for l1e in self.read_entries(offset, entries)? {
            let l2 = l1e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            self.check_cluster("L2 table", l2)?;
            for l2e in self.read_entries(l2, l2_entries)? {
                if l2e & L2_COMPRESSED != 0 {
                    let bits = COMPRESSED_OFFSET_BITS_BASE - self.cluster_bits;
                    let data = l2e & ((1u64 << bits) - 1);
                    check_inside(self.path, "compressed cluster", data, 1, self.file_len)?;
                    self.use_range(data, 1);
                } else if l2e & OFFSET_MASK != 0 {
                    self.check_cluster("data cluster", l2e & OFFSET_MASK)?;
                }
            }
        }
        Ok(())
    }

    /// Checks the refcount table; returns the refcount blocks' offsets (0: none) by index.
    fn check_refcount_table(&mut self, offset: u64, entries: u64) -> Result<Vec<u64>, DiskError> {
        let mut blocks = self.read_entries(offset, entries)?;
        for rb in &mut blocks {
            *rb &= REFTABLE_OFFSET_MASK;
            if *rb != 0 {
                self.check_cluster("refcount block", *rb)?;
            }
        }
        Ok(blocks)
    }

    /// Every cluster in use must have a non-zero refcount.
    fn check_refcounts(&mut self, refblocks: &[u64], refcount_order: u32) -> Result<(), DiskError> {
        let cluster_size = 1usize << self.cluster_bits;
        let width = 1usize << refcount_order;
        // Refcounts per block: cluster_size * 8 / width, a power of two.
        let per_block_bits = self.cluster_bits + 3 - refcount_order;
        let mut used = std::mem::take(&mut self.used);
        used.sort_unstable();
        used.dedup();
        let mut block: Option<(u64, Vec<u8>)> = None;
        for cluster in used {
            let rt_index = cluster >> per_block_bits;
            let in_block = (cluster & ((1 << per_block_bits) - 1)) as usize;
            let rb = refblocks.get(rt_index as usize).copied().unwrap_or(0);
            let unreferenced = || DiskError::InvalidHeader {
                path: self.path.into(),
                reason: format!("cluster {cluster} is in use but has refcount 0"),
            };
            if rb == 0 {
                return Err(unreferenced());
            }
            if block.as_ref().is_none_or(|(at, _)| *at != rb) {
                let mut data = vec![0u8; cluster_size];
                self.file
                    .read_exact_at(&mut data, rb)
                    .map_err(|e| DiskError::io(self.path, "read metadata", e))?;
                block = Some((rb, data));
            }
            let data = &block.as_ref().expect("just read").1;
            let bit = in_block * width;
            let nonzero = if width < 8 {
                (data[bit / 8] >> (bit % 8)) & ((1u8 << width) - 1) != 0
            } else {
                data[bit / 8..(bit + width) / 8].iter().any(|&b| b != 0)
            };
            if !nonzero {
                return Err(unreferenced());
            }
        }
        Ok(())
    }
}
