//! virtio-blk over a [`BlockBackend`] (spec §5.6 vioblk; F-HW-11, F-HW-15).
//!
//! Requests: READ, WRITE, FLUSH (→ the backend's flush, `fdatasync` for a raw file), GET_ID,
//! DISCARD and WRITE_ZEROES, in 512-byte sectors. Beyond vmd (which answers GET_ID with
//! UNSUPP and offers no FLUSH) because Linux relies on FLUSH for crash consistency and
//! DESIGN.md §6 requires honouring it.
//!
//! Requests are read framing-agnostically (virtio 1.x §2.7.4: any split of header, data and
//! status over descriptors is legal): the device-readable buffers form one byte stream (header
//! then data out), the device-writable ones another (data in then the status byte). Guest
//! errors (sector past the end, length not a sector multiple, write to a read-only disk)
//! and host I/O errors are answered with an IOERR status; only a chain with no room for the
//! status byte, which cannot be answered at all, marks the device NEEDS_RESET.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::Queue;
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{GuestMemoryMmap, VolatileSlice};

use super::queue::{ActiveQueues, ChainError};
use super::stream::Stream;
use super::{transitional_ids, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use crate::pci::config::PciIds;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size (vmd's VIOBLK_QUEUE_SIZE).
pub const BLK_QUEUE_SIZE: u16 = 128;
/// Data segments per request: the queue size less the header and status descriptors
/// (vmd's SEG_MAX).
pub const SEG_MAX: u32 = BLK_QUEUE_SIZE as u32 - 2;
/// Bytes of the GET_ID answer (VIRTIO_BLK_ID_BYTES).
pub const BLK_ID_BYTES: usize = 20;
/// Largest discard or write-zeroes range, in sectors (1 GiB): bounds the host work of one
/// request.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Ranges per discard or write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 16;
/// Bytes moved through the bounce buffer at a time, so a huge request costs bounded memory.
pub const BOUNCE_CHUNK: usize = 1 << 20;
/// Bytes of the request header: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// Bytes of one discard / write-zeroes range: sector, sector count, flags.
const DISCARD_SEGMENT_LEN: usize = 16;
/// WRITE_ZEROES flag: the device may unmap; the only flag defined.
const WRITE_ZEROES_UNMAP: u32 = 1;
/// Bytes of `struct virtio_blk_config` we present.
pub const BLK_CONFIG_LEN: usize = 60;
/// PCI class "mass storage", subclass "SCSI", as vmd presents vioblk.
const PCI_CLASS_MASS_STORAGE: u8 = 0x01;
const PCI_SUBCLASS_MASS_STORAGE_SCSI: u8 = 0x00;

// Offsets in struct virtio_blk_config.
const CFG_CAPACITY: usize = 0;
const CFG_SEG_MAX: usize = 12;
const CFG_BLK_SIZE: usize = 20;
const CFG_NUM_QUEUES: usize = 34;
const CFG_MAX_DISCARD_SECTORS: usize = 36;
const CFG_MAX_DISCARD_SEG: usize = 40;
const CFG_DISCARD_ALIGNMENT: usize = 44;
const CFG_MAX_WRITE_ZEROES_SECTORS: usize = 48;
const CFG_MAX_WRITE_ZEROES_SEG: usize = 52;

/// The storage behind a disk. Kept minimal so the `disk` crate's images (raw, qcow2) adapt
/// to it in a few lines.
pub trait BlockBackend: Send {
    /// Fill `buf` from byte `offset`; a short read is an error.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at byte `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Make every completed write durable (`fdatasync`).
    fn flush(&mut self) -> io::Result<()>;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether writes must be refused.
    fn read_only(&self) -> bool;
    /// The guest no longer needs `[offset, offset + len)`. A hint: the default keeps the data.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Make `[offset, offset + len)` read as zeros. The default writes zeros.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; BOUNCE_CHUNK.min(len as usize)];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
    /// Fill the guest buffers `bufs`, one after the other, from byte `offset`; a short read
    /// is an error. The default reads into `bounce` (the device's scratch buffer, kept from
    /// request to request) with [`BlockBackend::read_at`] and copies into the guest; a backend
    /// that can read into guest memory itself overrides it.
    fn read_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        read_through_bounce(bufs, bounce, |b| self.read_at(b, offset))
    }
    /// Write all of the guest buffers `bufs`, one after the other, at byte `offset`. The
    /// default copies them into `bounce` and calls [`BlockBackend::write_at`].
    fn write_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        write_through_bounce(bufs, bounce, |b| self.write_at(b, offset))
    }
}

/// Fills the guest buffers `bufs` by having `read` fill `bounce` (grown to their total
/// length), then copying: for storage that reads only into host memory.
pub fn read_through_bounce(
    bufs: &[VolatileSlice<'_>],
    bounce: &mut Vec<u8>,
    read: impl FnOnce(&mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    let len = bufs.iter().map(|b| b.len()).sum();
    bounce.resize(len, 0);
    read(&mut bounce[..len])?;
    let mut at = 0;
    for b in bufs {
        b.copy_from(&bounce[at..at + b.len()]);
        at += b.len();
    }
    Ok(())
}

/// Copies the guest buffers `bufs` into `bounce`, one after the other, and hands them to
/// `write` as one slice: for storage that writes only from host memory.
pub fn write_through_bounce(
    bufs: &[VolatileSlice<'_>],
    bounce: &mut Vec<u8>,
    write: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let len = bufs.iter().map(|b| b.len()).sum();
    bounce.resize(len, 0);
    let mut at = 0;
    for b in bufs {
        b.copy_to(&mut bounce[at..at + b.len()]);
        at += b.len();
    }
    write(&bounce[..len])
}

/// A raw image file.
pub struct RawFile {
    file: File,
    read_only: bool,
    size: u64,
}

impl RawFile {
    /// Serve `file` (opened read-only when `read_only`).
    pub fn new(file: File, read_only: bool) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(RawFile {
            file,
            read_only,
            size,
        })
    }
}

impl BlockBackend for RawFile {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    /// `preadv(2)` straight into guest memory: no bounce buffer, no copy.
    fn read_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        _bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        read_file_vectored(&self.file, bufs, offset)
    }
    /// `pwritev(2)` straight from guest memory.
    fn write_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        _bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        write_file_vectored(&self.file, bufs, offset)
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Ok(());
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by `self.file`
        // and open for the duration of the call.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        // Discard is a hint: a filesystem without hole punching keeps the data.
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Fills the guest buffers `bufs` from `file` at byte `offset` with `preadv(2)`, no copy;
/// reaching the end of the file first is an error.
pub fn read_file_vectored(file: &File, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
    file_vectored_io(file, bufs, offset, Direction::Read)
}

/// Writes the guest buffers `bufs` to `file` at byte `offset` with `pwritev(2)`, no copy.
pub fn write_file_vectored(file: &File, bufs: &[VolatileSlice<'_>], offset: u64) -> io::Result<()> {
    file_vectored_io(file, bufs, offset, Direction::Write)
}

/// Which way [`file_vectored_io`] moves data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// File to guest memory (`preadv`).
    Read,
    /// Guest memory to file (`pwritev`).
    Write,
}

/// iovecs handed to one `preadv`/`pwritev`.
const MAX_IOVECS: usize = 32;

/// Move all of `bufs` between `file` at `offset` and guest memory with positioned vectored
/// I/O, going on after short transfers; reaching the end of the file is an error.
fn file_vectored_io(
    file: &File,
    bufs: &[VolatileSlice<'_>],
    mut offset: u64,
    dir: Direction,
) -> io::Result<()> {
    // Position in `bufs`: the first buffer not yet done and how much of it is.
    let (mut first, mut skip) = (0, 0);
    let mut left: usize = bufs.iter().map(|b| b.len()).sum();
    while left > 0 {
        let head = bufs[first]
            .offset(skip)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let n = if first + 1 == bufs.len() {
            single_io(file, head, off, dir)
        } else {
            vectored_io(file, head, &bufs[first + 1..], off, dir)
        };
        let mut n = match n {
            0 if dir == Direction::Read => return Err(io::ErrorKind::UnexpectedEof.into()),
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n if n > 0 => n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        offset += n as u64;
        left -= n;
        while n > 0 {
            let rest = bufs[first].len() - skip;
            if n < rest {
                skip += n;
                break;
            }
            n -= rest;
            first += 1;
            skip = 0;
        }
    }
    Ok(())
}

/// One `pread`/`pwrite` between `file` at `off` and one piece of guest memory: the common
/// request has one data buffer, and the vectored calls cost the kernel an iovec import more.
fn single_io(file: &File, buf: VolatileSlice<'_>, off: libc::off_t, dir: Direction) -> isize {
    // vm-memory hands out raw pointers only through guards, valid while the guard lives:
    // this one lives across the system call.
    let guard = buf.ptr_guard_mut();
    let fd = file.as_raw_fd();
    // SAFETY: the pointer and length are a guard's of a vm-memory volatile slice (mapped
    // guest memory, bounds-checked when the slice was made), alive until after the call; the
    // kernel accesses at most that many bytes, and the guest expects its memory to change at
    // any time. The fd is owned by `file`.
    unsafe {
        match dir {
            Direction::Read => libc::pread(fd, guard.as_ptr().cast(), guard.len(), off),
            Direction::Write => libc::pwrite(fd, guard.as_ptr().cast(), guard.len(), off),
        }
    }
}

/// One `preadv`/`pwritev` between `file` at `off` and `head` followed by as many of `rest` as
/// [`MAX_IOVECS`] allows.
fn vectored_io(
    file: &File,
    head: VolatileSlice<'_>,
    rest: &[VolatileSlice<'_>],
    off: libc::off_t,
    dir: Direction,
) -> isize {
    let mut pieces = std::iter::once(head).chain(rest.iter().copied());
    // Guards, as in `single_io`, alive across the call.
    let guards: [Option<PtrGuardMut>; MAX_IOVECS] =
        std::array::from_fn(|_| pieces.next().map(|p| p.ptr_guard_mut()));
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOVECS];
    let mut count = 0;
    for (v, g) in iov.iter_mut().zip(guards.iter().flatten()) {
        *v = libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: g.len(),
        };
        count += 1;
    }
    let fd = file.as_raw_fd();
    // SAFETY: the first `count` iovecs are the pointers and lengths of guards of vm-memory
    // volatile slices (ranges of mapped guest memory, bounds-checked when the slices were
    // made), alive until after the call; the kernel accesses at most `iov_len` bytes at each,
    // and other users of guest memory (the guest) expect it to change at any time. `count`
    // is at most MAX_IOVECS, below IOV_MAX; the fd is owned by `file`.
    unsafe {
        match dir {
            Direction::Read => libc::preadv(fd, iov.as_ptr(), count as libc::c_int, off),
            Direction::Write => libc::pwritev(fd, iov.as_ptr(), count as libc::c_int, off),
        }
    }
}

/// Outcome of one request: status byte and bytes of data written to the guest.
type Outcome = Result<(u8, usize), ChainError>;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// State the request path needs, apart from the queues.
struct Disk {
    backend: Box<dyn BlockBackend>,
    capacity: u64,
    read_only: bool,
    id: [u8; BLK_ID_BYTES],
    bounce: Vec<u8>,
    /// Host I/O errors are logged once per device, not once per request.
    logged_io_error: bool,
}

impl Disk {
    /// Byte range of `sectors` from `sector`, if it lies inside the disk.
    fn range(&self, sector: u64, bytes: u64) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(bytes)?;
        (end <= self.capacity * SECTOR_SIZE).then_some(off)
    }

    fn io_error(&mut self, e: io::Error) -> u8 {
        if !self.logged_io_error {
            self.logged_io_error = true;
            tracing::warn!("virtio-blk: disk I/O error: {e}");
        }
        IOERR
    }

    fn request(&mut self, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<u32, ChainError> {
        let out = Stream::new(descs, false);
        let inp = Stream::new(descs, true);
        // Without a status byte nothing can be answered: the chain is unusable.
        let Some(data_in) = inp.len.checked_sub(1) else {
            return Err(ChainError::Malformed);
        };
        let (status, written) = if out.len < HEADER_LEN {
            (IOERR, 0)
        } else {
            let mut h = [0u8; HEADER_LEN];
            out.read(mem, 0, &mut h)?;
            let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let sector = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
            let data_out = out.len - HEADER_LEN;
            match kind {
                VIRTIO_BLK_T_IN => self.read(mem, &inp, sector, data_in)?,
                VIRTIO_BLK_T_OUT => self.write(mem, &out, sector, data_out)?,
                VIRTIO_BLK_T_FLUSH => match self.backend.flush() {
                    Ok(()) => (OK, 0),
                    Err(e) => (self.io_error(e), 0),
                },
                VIRTIO_BLK_T_GET_ID => {
                    let n = data_in.min(BLK_ID_BYTES);
                    inp.write(mem, 0, &self.id[..n])?;
                    (OK, n)
                }
                VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                    self.ranges(mem, &out, data_out, kind)?
                }
                _ => (UNSUPP, 0),
            }
        };
        inp.write(mem, data_in, &[status])?;
        Ok((written + 1) as u32)
    }

    fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        inp: &Stream<'_>,
        sector: u64,
        len: usize,
    ) -> Outcome {
        let Some(off) = self
            .range(sector, len as u64)
            .filter(|_| (len as u64).is_multiple_of(SECTOR_SIZE))
        else {
            return Ok((IOERR, 0));
        };
        let mut done = 0;
        while done < len {
            let bufs = inp.slices(mem, done, (len - done).min(BOUNCE_CHUNK))?;
            if let Err(e) =
                self.backend
                    .read_vectored_at(bufs.as_slice(), off + done as u64, &mut self.bounce)
            {
                return Ok((self.io_error(e), done));
            }
            done += bufs.len;
        }
        Ok((OK, len))
    }

    fn write(
        &mut self,
        mem: &GuestMemoryMmap,
        out: &Stream<'_>,
        sector: u64,
        len: usize,
    ) -> Outcome {
        let Some(off) = self
            .range(sector, len as u64)
            .filter(|_| (len as u64).is_multiple_of(SECTOR_SIZE))
        else {
            return Ok((IOERR, 0));
        };
        if self.read_only {
            return Ok((IOERR, 0));
        }
        let mut done = 0;
        while done < len {
            let bufs = out.slices(mem, HEADER_LEN + done, (len - done).min(BOUNCE_CHUNK))?;
            if let Err(e) =
                self.backend
                    .write_vectored_at(bufs.as_slice(), off + done as u64, &mut self.bounce)
            {
                return Ok((self.io_error(e), 0));
            }
            done += bufs.len;
        }
        Ok((OK, 0))
    }

    /// DISCARD and WRITE_ZEROES: a list of (sector, count, flags) ranges.
    fn ranges(
        &mut self,
        mem: &GuestMemoryMmap,
        out: &Stream<'_>,
        len: usize,
        kind: u32,
    ) -> Outcome {
        let count = len / DISCARD_SEGMENT_LEN;
        if self.read_only
            || !len.is_multiple_of(DISCARD_SEGMENT_LEN)
            || count == 0
            || count > MAX_DISCARD_SEGMENTS as usize
        {
            return Ok((IOERR, 0));
        }
        for i in 0..count {
            let mut s = [0u8; DISCARD_SEGMENT_LEN];
            out.read(mem, HEADER_LEN + i * DISCARD_SEGMENT_LEN, &mut s)?;
            let sector = u64::from_le_bytes(s[0..8].try_into().unwrap_or_default());
            let sectors = u32::from_le_bytes(s[8..12].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(s[12..16].try_into().unwrap_or_default());
            let allowed = if kind == VIRTIO_BLK_T_WRITE_ZEROES {
                WRITE_ZEROES_UNMAP
            } else {
                0
            };
            if flags & !allowed != 0 {
                return Ok((UNSUPP, 0));
            }
            let bytes = u64::from(sectors) * SECTOR_SIZE;
            let Some(off) = self
                .range(sector, bytes)
                .filter(|_| sectors <= MAX_DISCARD_SECTORS)
            else {
                return Ok((IOERR, 0));
            };
            let r = if kind == VIRTIO_BLK_T_DISCARD {
                self.backend.discard(off, bytes)
            } else {
                self.backend.write_zeroes(off, bytes)
            };
            if let Err(e) = r {
                return Ok((self.io_error(e), 0));
            }
        }
        Ok((OK, 0))
    }
}

/// A virtio block device.
pub struct Block {
    disk: Disk,
    config: [u8; BLK_CONFIG_LEN],
    features: u64,
    active: Option<ActiveQueues>,
}

impl Block {
    /// A disk over `backend` answering GET_ID with `id` (at most [`BLK_ID_BYTES`] bytes
    /// used). The capacity is the backend's size in whole sectors, fixed from now on: an image
    /// that shrinks later answers reads past its end with IOERR.
    pub fn new(backend: Box<dyn BlockBackend>, id: &str) -> Self {
        let capacity = backend.size() / SECTOR_SIZE;
        let read_only = backend.read_only();
        let mut idb = [0u8; BLK_ID_BYTES];
        let n = id.len().min(BLK_ID_BYTES);
        idb[..n].copy_from_slice(&id.as_bytes()[..n]);
        let mut config = [0u8; BLK_CONFIG_LEN];
        let mut put = |off: usize, b: &[u8]| config[off..off + b.len()].copy_from_slice(b);
        put(CFG_CAPACITY, &capacity.to_le_bytes());
        put(CFG_SEG_MAX, &SEG_MAX.to_le_bytes());
        // Geometry stays zero (SeaBIOS reads it unconditionally: spec §5.6).
        put(CFG_BLK_SIZE, &(SECTOR_SIZE as u32).to_le_bytes());
        put(CFG_NUM_QUEUES, &1u16.to_le_bytes());
        put(CFG_MAX_DISCARD_SECTORS, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(CFG_MAX_DISCARD_SEG, &MAX_DISCARD_SEGMENTS.to_le_bytes());
        put(CFG_DISCARD_ALIGNMENT, &1u32.to_le_bytes());
        put(
            CFG_MAX_WRITE_ZEROES_SECTORS,
            &MAX_DISCARD_SECTORS.to_le_bytes(),
        );
        put(
            CFG_MAX_WRITE_ZEROES_SEG,
            &MAX_DISCARD_SEGMENTS.to_le_bytes(),
        );
        let bit = |b: u32| 1u64 << b;
        let mut features = RING_FEATURES
            | bit(VIRTIO_BLK_F_SEG_MAX)
            | bit(VIRTIO_BLK_F_BLK_SIZE)
            | bit(VIRTIO_BLK_F_FLUSH);
        features |= if read_only {
            bit(VIRTIO_BLK_F_RO)
        } else {
            bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES)
        };
        Block {
            disk: Disk {
                backend,
                capacity,
                read_only,
                id: idb,
                bounce: Vec::new(),
                logged_io_error: false,
            },
            config,
            features,
            active: None,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }
    fn pci_ids(&self) -> PciIds {
        transitional_ids(
            VIRTIO_ID_BLOCK,
            PCI_CLASS_MASS_STORAGE,
            PCI_SUBCLASS_MASS_STORAGE_SCSI,
        )
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[BLK_QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::copy_window(&self.config, offset, data, 0);
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        _features: u64,
    ) {
        self.active = Some(ActiveQueues::new(mem, interrupt, queues));
    }
    fn process_queue(&mut self, index: usize) {
        let disk = &mut self.disk;
        if let Some(a) = self.active.as_mut() {
            a.process(index, &mut |mem, descs| disk.request(mem, descs));
        }
    }
    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use crate::virtio::queue::testing::{memory, Recorder};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const DISK_SIZE: usize = 64 * SECTOR_SIZE as usize;
    const HEADER: u64 = 0x10_0000;
    const STATUS: u64 = 0x18_0000;
    const OUT_BASE: u64 = 0x20_0000;
    const IN_BASE: u64 = 0x40_0000;
    const SEG_STRIDE: u64 = 0x1_0000;

    /// An in-memory disk that counts flushes.
    #[derive(Clone)]
    struct MemDisk {
        data: Arc<Mutex<Vec<u8>>>,
        flushes: Arc<AtomicUsize>,
        ro: bool,
    }

    impl MemDisk {
        fn new(ro: bool) -> Self {
            MemDisk {
                data: Arc::new(Mutex::new(vec![0; DISK_SIZE])),
                flushes: Arc::new(AtomicUsize::new(0)),
                ro,
            }
        }
    }

    impl BlockBackend for MemDisk {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let d = self.data.lock().unwrap();
            let o = offset as usize;
            let src = d
                .get(o..o + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            let mut d = self.data.lock().unwrap();
            let o = offset as usize;
            d.get_mut(o..o + buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?
                .copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn read_only(&self) -> bool {
            self.ro
        }
    }

    struct Harness<'a> {
        mem: &'a GuestMemoryMmap,
        vq: MockSplitQueue<'a, GuestMemoryMmap>,
        next: u16,
        blk: Block,
        irq: Arc<Recorder>,
    }

    fn harness<'a>(mem: &'a GuestMemoryMmap, backend: Box<dyn BlockBackend>) -> Harness<'a> {
        let vq = MockSplitQueue::new(mem, BLK_QUEUE_SIZE);
        let q: Queue = vq.create_queue().unwrap();
        let irq = Arc::new(Recorder::default());
        let mut blk = Block::new(backend, "vmd-disk-0");
        blk.activate(mem.clone(), irq.clone(), vec![q], RING_FEATURES);
        Harness {
            mem,
            vq,
            next: 0,
            blk,
            irq,
        }
    }

    fn header(kind: u32, sector: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    impl Harness<'_> {
        /// Submit one chain: the header, `out` segments, `inp` writable segments of the given
        /// sizes, and a status byte; returns (status, used length, data read).
        fn request(&mut self, head: &[u8], out: &[&[u8]], inp: &[u32]) -> (u8, u32, Vec<u8>) {
            let mut descs = vec![(HEADER, head.len() as u32, 0)];
            self.mem.write_slice(head, GuestAddress(HEADER)).unwrap();
            for (i, seg) in out.iter().enumerate() {
                let a = OUT_BASE + i as u64 * SEG_STRIDE;
                self.mem.write_slice(seg, GuestAddress(a)).unwrap();
                descs.push((a, seg.len() as u32, 0));
            }
            for (i, &len) in inp.iter().enumerate() {
                descs.push((IN_BASE + i as u64 * SEG_STRIDE, len, VRING_DESC_F_WRITE));
            }
            descs.push((STATUS, 1, VRING_DESC_F_WRITE));
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            let n = descs.len() as u16;
            let raw: Vec<_> = descs
                .iter()
                .enumerate()
                .map(|(i, &(a, l, f))| {
                    let last = i as u16 == n - 1;
                    let flags = if last { f } else { f | VRING_DESC_F_NEXT };
                    RawDescriptor::from(Descriptor::new(
                        a,
                        l,
                        flags as u16,
                        self.next + i as u16 + 1,
                    ))
                })
                .collect();
            self.vq.add_desc_chains(&raw, self.next).unwrap();
            self.next += n;
            self.blk.process_queue(0);
            let idx = self.vq.used().idx().load();
            let e = self
                .vq
                .used()
                .ring()
                .ref_at(usize::from(idx - 1))
                .unwrap()
                .load();
            let status = self.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap();
            let mut data = Vec::new();
            for (i, &len) in inp.iter().enumerate() {
                let mut b = vec![0u8; len as usize];
                self.mem
                    .read_slice(&mut b, GuestAddress(IN_BASE + i as u64 * SEG_STRIDE))
                    .unwrap();
                data.extend(b);
            }
            (status, e.len(), data)
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn write_then_read_back_multi_segment() {
        let mem = memory();
        let disk = MemDisk::new(false);
        let mut h = harness(&mem, Box::new(disk.clone()));
        let a = pattern(512, 1);
        let b = pattern(1024, 2);
        let (st, used, _) = h.request(&header(VIRTIO_BLK_T_OUT, 3), &[&a, &b], &[]);
        assert_eq!((st, used), (OK, 1));
        assert_eq!(&disk.data.lock().unwrap()[3 * 512..4 * 512], &a[..]);
        // Read back split differently: 1024 + 256 + 256.
        let (st, used, got) = h.request(&header(VIRTIO_BLK_T_IN, 3), &[], &[1024, 256, 256]);
        assert_eq!((st, used), (OK, 1536 + 1));
        assert_eq!(got, [a, b].concat());
        assert!(h.irq.kinds.lock().unwrap().len() >= 2);
    }

    #[test]
    fn flush_reaches_the_backend() {
        let mem = memory();
        let disk = MemDisk::new(false);
        let mut h = harness(&mem, Box::new(disk.clone()));
        assert_eq!(h.request(&header(VIRTIO_BLK_T_FLUSH, 0), &[], &[]).0, OK);
        assert_eq!(disk.flushes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn get_id_string() {
        let mem = memory();
        let mut h = harness(&mem, Box::new(MemDisk::new(false)));
        let (st, used, id) =
            h.request(&header(VIRTIO_BLK_T_GET_ID, 0), &[], &[BLK_ID_BYTES as u32]);
        assert_eq!((st, used), (OK, BLK_ID_BYTES as u32 + 1));
        assert_eq!(&id[..10], b"vmd-disk-0");
        assert!(id[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn out_of_range_and_odd_lengths_are_ioerr() {
        let mem = memory();
        let mut h = harness(&mem, Box::new(MemDisk::new(false)));
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_IN, 64), &[], &[512]).0,
            IOERR
        );
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_IN, 63), &[], &[1024]).0,
            IOERR
        );
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_IN, u64::MAX), &[], &[512]).0,
            IOERR
        );
        assert_eq!(h.request(&header(VIRTIO_BLK_T_IN, 63), &[], &[512]).0, OK);
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_OUT, 0), &[&[1; 100]], &[]).0,
            IOERR
        );
        assert_eq!(h.request(&header(99, 0), &[], &[]).0, UNSUPP);
        assert_eq!(h.request(&[0; 8], &[], &[]).0, IOERR, "short header");
        assert!(!*h.irq.needs_reset.lock().unwrap());
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let mem = memory();
        let disk = MemDisk::new(true);
        let mut h = harness(&mem, Box::new(disk.clone()));
        assert_ne!(h.blk.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(h.blk.features() & (1 << VIRTIO_BLK_F_DISCARD), 0);
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_OUT, 0), &[&[1; 512]], &[]).0,
            IOERR
        );
        assert!(disk.data.lock().unwrap().iter().all(|&b| b == 0));
        assert_eq!(h.request(&header(VIRTIO_BLK_T_IN, 0), &[], &[512]).0, OK);
    }

    #[test]
    fn discard_and_write_zeroes() {
        let mem = memory();
        let disk = MemDisk::new(false);
        disk.data.lock().unwrap().fill(0xaa);
        let mut h = harness(&mem, Box::new(disk.clone()));
        let seg = |sector: u64, n: u32, flags: u32| {
            [
                sector.to_le_bytes().to_vec(),
                n.to_le_bytes().to_vec(),
                flags.to_le_bytes().to_vec(),
            ]
            .concat()
        };
        let s = seg(2, 3, WRITE_ZEROES_UNMAP);
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_WRITE_ZEROES, 0), &[&s], &[])
                .0,
            OK
        );
        {
            let d = disk.data.lock().unwrap();
            assert!(d[1024..2560].iter().all(|&b| b == 0));
            assert_eq!(d[1023], 0xaa);
            assert_eq!(d[2560], 0xaa);
        }
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_DISCARD, 0), &[&seg(0, 1, 0)], &[])
                .0,
            OK
        );
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_DISCARD, 0), &[&seg(0, 1, 1)], &[])
                .0,
            UNSUPP
        );
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_DISCARD, 0), &[&seg(60, 8, 0)], &[])
                .0,
            IOERR
        );
        assert_eq!(
            h.request(&header(VIRTIO_BLK_T_DISCARD, 0), &[&[0; 8]], &[])
                .0,
            IOERR
        );
    }

    #[test]
    fn chain_without_status_needs_reset() {
        let mem = memory();
        let mut h = harness(&mem, Box::new(MemDisk::new(false)));
        mem.write_slice(&header(VIRTIO_BLK_T_IN, 0), GuestAddress(HEADER))
            .unwrap();
        h.vq.add_desc_chains(&[RawDescriptor::from(Descriptor::new(HEADER, 16, 0, 0))], 0)
            .unwrap();
        h.blk.process_queue(0);
        assert!(*h.irq.needs_reset.lock().unwrap());
        assert_eq!(h.vq.used().idx().load(), 0);
    }

    #[test]
    fn buffer_outside_memory_needs_reset() {
        let mem = memory();
        let mut h = harness(&mem, Box::new(MemDisk::new(false)));
        mem.write_slice(&header(VIRTIO_BLK_T_IN, 0), GuestAddress(HEADER))
            .unwrap();
        let raw = [
            RawDescriptor::from(Descriptor::new(HEADER, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(Descriptor::new(
                1 << 40,
                512,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                2,
            )),
            RawDescriptor::from(Descriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0)),
        ];
        h.vq.add_desc_chains(&raw, 0).unwrap();
        h.blk.process_queue(0);
        assert!(*h.irq.needs_reset.lock().unwrap());
    }

    /// A raw file of `len` bytes, already unlinked, for the device and for the test to check.
    fn temp_file(name: &str, len: usize) -> (RawFile, File) {
        let path =
            std::env::temp_dir().join(format!("devices-blk-{name}-{}.img", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(len as u64).unwrap();
        std::fs::remove_file(&path).unwrap();
        let view = f.try_clone().unwrap();
        (RawFile::new(f, false).unwrap(), view)
    }

    #[test]
    fn raw_file_backend_round_trip() {
        let (mut raw, _) = temp_file("round-trip", DISK_SIZE);
        assert_eq!(raw.size(), DISK_SIZE as u64);
        raw.write_at(&[5; 512], 512).unwrap();
        raw.flush().unwrap();
        raw.discard(0, 512).unwrap();
        let mut b = [0u8; 512];
        raw.read_at(&mut b, 512).unwrap();
        assert_eq!(b, [5; 512]);
        assert!(
            raw.read_at(&mut b, DISK_SIZE as u64).is_err(),
            "past the end"
        );
        let mem = memory();
        let mut h = harness(&mem, Box::new(raw));
        let (st, _, got) = h.request(&header(VIRTIO_BLK_T_IN, 1), &[], &[512]);
        assert_eq!((st, got), (OK, vec![5; 512]));
    }

    /// The raw file reads into and writes from guest memory itself (preadv/pwritev): more
    /// buffers than one call takes, a request split over descriptors, and a read that runs
    /// into the end of the file.
    #[test]
    fn raw_file_vectored_io_in_guest_memory() {
        let (mut raw, view) = temp_file("vectored", 200);
        let data = pattern(200, 3);
        view.write_all_at(&data, 0).unwrap();
        let mut host = vec![0u8; 200];
        let bufs: Vec<_> = host.chunks_mut(5).map(VolatileSlice::from).collect();
        assert!(bufs.len() > MAX_IOVECS);
        raw.read_vectored_at(&bufs, 0, &mut Vec::new()).unwrap();
        assert_eq!(host, data);
        let back: Vec<u8> = data.iter().rev().copied().collect();
        let mut src = back.clone();
        let bufs: Vec<_> = src.chunks_mut(7).map(VolatileSlice::from).collect();
        raw.write_vectored_at(&bufs, 0, &mut Vec::new()).unwrap();
        let mut got = vec![0u8; 200];
        view.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got, back);
        let (mut a, mut b) = ([0u8; 3], [0u8; 5]);
        let bufs = [
            VolatileSlice::from(&mut a[..]),
            VolatileSlice::from(&mut b[..]),
        ];
        let e = raw
            .read_vectored_at(&bufs, 196, &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // One buffer (pread/pwrite): whole, and running into the end of the file.
        let mut one = [0u8; 10];
        raw.read_vectored_at(&[VolatileSlice::from(&mut one[..])], 50, &mut Vec::new())
            .unwrap();
        assert_eq!(one[..], back[50..60]);
        let mut ones = [0x77u8; 10];
        raw.write_vectored_at(&[VolatileSlice::from(&mut ones[..])], 0, &mut Vec::new())
            .unwrap();
        view.read_exact_at(&mut one, 0).unwrap();
        assert_eq!(one, [0x77; 10]);
        let e = raw
            .read_vectored_at(&[VolatileSlice::from(&mut one[..])], 195, &mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        let (raw, view) = temp_file("device", DISK_SIZE);
        let mem = memory();
        let mut h = harness(&mem, Box::new(raw));
        let (a, b) = (pattern(512, 1), pattern(1024, 2));
        let (st, _, _) = h.request(&header(VIRTIO_BLK_T_OUT, 3), &[&a, &b], &[]);
        assert_eq!(st, OK);
        let mut got = vec![0u8; 1536];
        view.read_exact_at(&mut got, 3 * 512).unwrap();
        assert_eq!(got, [a.clone(), b.clone()].concat());
        let (st, used, got) = h.request(&header(VIRTIO_BLK_T_IN, 3), &[], &[1024, 256, 256]);
        assert_eq!((st, used), (OK, 1536 + 1));
        assert_eq!(got, [a, b].concat());
    }

    /// Random descriptor tables and available rings: the device answers, or marks itself
    /// NEEDS_RESET, and never panics or touches memory outside the guest.
    #[test]
    fn fuzz_descriptor_tables() {
        let mut rng = XorShift::new(0xb10c);
        for round in 0..300 {
            let mem = memory();
            let mut h = harness(&mem, Box::new(MemDisk::new(round % 7 == 0)));
            for i in 0..BLK_QUEUE_SIZE {
                let d = crate::virtio::queue::testing::random_descriptor(
                    rng.next(),
                    HEADER,
                    STATUS,
                    1,
                    512,
                    BLK_QUEUE_SIZE,
                );
                h.vq.desc_table().store(i, d).unwrap();
            }
            let mut hdr = header((rng.next() % 16) as u32, rng.next() % 80);
            rng.fill(&mut hdr[4..8]);
            mem.write_slice(&hdr, GuestAddress(HEADER)).unwrap();
            let n = (rng.next() % 8) as u16;
            for j in 0..n {
                h.vq.avail()
                    .ring()
                    .ref_at(usize::from(j))
                    .unwrap()
                    .store((rng.next() % 140) as u16);
            }
            h.vq.avail()
                .idx()
                .store(if round % 11 == 0 { 500 } else { n });
            h.blk.process_queue(0);
            h.blk.process_queue(0);
        }
    }

    #[test]
    fn config_through_legacy_and_modern_registers() {
        use crate::pci::PciDevice;
        use crate::virtio::pci::{DEVICE_CFG_OFFSET, LEGACY_BAR, MODERN_BAR};
        use crate::virtio::{PciIrq, VirtioPciDevice};
        let mem = memory();
        let blk = Block::new(Box::new(MemDisk::new(false)), "x");
        let mut dev = VirtioPciDevice::new(
            Arc::new(Mutex::new(blk)),
            mem,
            PciIrq {
                intx: None,
                line: 11,
                msi: None,
            },
        )
        .unwrap();
        let mut cfg = [0u8; 4];
        dev.config().read(0, &mut cfg);
        assert_eq!(u32::from_le_bytes(cfg), 0x1001_1af4);
        let mut cap = [0u8; 8];
        // Legacy: device config right after the 20-byte header (no MSI-X).
        dev.bar_read(LEGACY_BAR, 20, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
        dev.bar_read(MODERN_BAR, DEVICE_CFG_OFFSET, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
        let mut seg = [0u8; 4];
        dev.bar_read(MODERN_BAR, DEVICE_CFG_OFFSET + CFG_SEG_MAX as u64, &mut seg);
        assert_eq!(u32::from_le_bytes(seg), SEG_MAX);
        let mut geo = [0xffu8; 4];
        dev.bar_read(LEGACY_BAR, 20 + 16, &mut geo);
        assert_eq!(geo, [0; 4], "geometry reads zero");
    }

    #[test]
    fn indirect_descriptor_table() {
        use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;
        let mem = memory();
        let disk = MemDisk::new(false);
        disk.data.lock().unwrap()[512..1024].fill(0x5a);
        let mut h = harness(&mem, Box::new(disk));
        let table = 0x50_0000u64;
        let entries = [
            Descriptor::new(HEADER, 16, VRING_DESC_F_NEXT as u16, 1),
            Descriptor::new(
                IN_BASE,
                512,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                2,
            ),
            Descriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in entries.iter().enumerate() {
            mem.write_obj(RawDescriptor::from(*d), GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        mem.write_slice(&header(VIRTIO_BLK_T_IN, 1), GuestAddress(HEADER))
            .unwrap();
        let head = Descriptor::new(table, 48, VRING_DESC_F_INDIRECT as u16, 0);
        h.vq.add_desc_chains(&[RawDescriptor::from(head)], 0)
            .unwrap();
        h.blk.process_queue(0);
        assert_eq!(h.vq.used().idx().load(), 1);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(IN_BASE + 511)).unwrap(),
            0x5a
        );
        // An indirect table whose length is not a whole number of descriptors is malformed.
        let bad = Descriptor::new(table, 40, VRING_DESC_F_INDIRECT as u16, 0);
        h.vq.add_desc_chains(&[RawDescriptor::from(bad)], 1)
            .unwrap();
        h.blk.process_queue(0);
        assert!(*h.irq.needs_reset.lock().unwrap());
    }
}
