//! The buffers of one direction of a descriptor chain as one byte stream (virtio-blk,
//! virtio-scsi, virtio-net).
//!
//! Virtio 1.x §2.7.4 lets a driver split a request's header, data and response over
//! descriptors any way it likes, so offsets into a request are offsets into the
//! concatenation of its device-readable (or device-writable) buffers. `collect_chain` has
//! already checked every buffer against guest memory, and every access here goes through a
//! vm-memory [`VolatileSlice`] of the piece it touches, checked again when it is made; reads
//! and writes stop at the end of the stream. A stream borrows the chain's descriptors, so
//! making one allocates nothing.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::queue::ChainError;

/// Most pieces of guest memory one [`Slices`] holds: what one vectored I/O moves.
pub const MAX_SLICES: usize = 32;

/// One direction of a chain.
pub struct Stream<'d> {
    descs: &'d [Descriptor],
    writable: bool,
    /// Total bytes.
    pub len: usize,
}

impl<'d> Stream<'d> {
    /// The device-writable buffers of `descs` if `writable`, else the device-readable ones.
    pub fn new(descs: &'d [Descriptor], writable: bool) -> Self {
        let mut s = Stream {
            descs,
            writable,
            len: 0,
        };
        // At most MAX_CHAIN_DESCRIPTORS lengths of 32 bits: no overflow.
        s.len = s.segments().map(|(_, n)| n).sum();
        s
    }

    /// Address and length of each non-empty buffer of this direction, in order.
    fn segments(&self) -> impl Iterator<Item = (GuestAddress, usize)> + 'd {
        let writable = self.writable;
        self.descs
            .iter()
            .filter(move |d| d.is_write_only() == writable && d.len() > 0)
            .map(|d| (d.addr(), d.len() as usize))
    }

    /// Call `f(slice, offset from start)` on each piece of `[start, start + len)` that lies
    /// in the stream, in order, until it returns false.
    fn for_each<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
        start: usize,
        len: usize,
        mut f: impl FnMut(VolatileSlice<'m>, usize) -> bool,
    ) -> Result<(), ChainError> {
        let mut skip = start;
        let mut done = 0;
        for (addr, seg_len) in self.segments() {
            if done == len {
                break;
            }
            if skip >= seg_len {
                skip -= seg_len;
                continue;
            }
            let n = (seg_len - skip).min(len - done);
            let at = addr.checked_add(skip as u64).ok_or(ChainError::Malformed)?;
            skip = 0;
            if let Ok(s) = mem.get_slice(at, n) {
                if !f(s, done) {
                    return Ok(());
                }
                done += n;
                continue;
            }
            // The piece runs from one memory region into the next.
            for s in GuestMemoryBackend::get_slices(mem, at, n) {
                let s = s.map_err(|_| ChainError::OutOfMemory {
                    addr: at.0,
                    len: n as u32,
                })?;
                if !f(s, done) {
                    return Ok(());
                }
                done += s.len();
            }
        }
        Ok(())
    }

    /// Fill `buf` from stream offset `start`.
    pub fn read(
        &self,
        mem: &GuestMemoryMmap,
        start: usize,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        self.for_each(mem, start, buf.len(), |s, at| {
            s.copy_to(&mut buf[at..at + s.len()]);
            true
        })
    }

    /// Write `buf` at stream offset `start`.
    pub fn write(&self, mem: &GuestMemoryMmap, start: usize, buf: &[u8]) -> Result<(), ChainError> {
        self.for_each(mem, start, buf.len(), |s, at| {
            s.copy_from(&buf[at..at + s.len()]);
            true
        })
    }

    /// The guest memory of `[start, start + len)`, or of as much of its beginning as
    /// [`MAX_SLICES`] pieces hold, for vectored I/O straight to or from the guest. Nothing of
    /// it in the stream is an error.
    pub fn slices<'m>(
        &self,
        mem: &'m GuestMemoryMmap,
        start: usize,
        len: usize,
    ) -> Result<Slices<'m>, ChainError> {
        let mut out = Slices::new();
        self.for_each(mem, start, len, |s, _| out.push(s))?;
        if out.len == 0 && len > 0 {
            return Err(ChainError::Malformed);
        }
        Ok(out)
    }
}

/// Up to [`MAX_SLICES`] pieces of guest memory, in order, held on the stack.
pub struct Slices<'m> {
    slices: [VolatileSlice<'m>; MAX_SLICES],
    count: usize,
    /// Total bytes.
    pub len: usize,
}

impl<'m> Slices<'m> {
    fn new() -> Self {
        let none: &'static mut [u8] = &mut [];
        Slices {
            slices: [VolatileSlice::from(none); MAX_SLICES],
            count: 0,
            len: 0,
        }
    }

    /// Add `s`; returns whether there is room for more.
    fn push(&mut self, s: VolatileSlice<'m>) -> bool {
        self.slices[self.count] = s;
        self.count += 1;
        self.len += s.len();
        self.count < MAX_SLICES
    }

    /// The pieces.
    pub fn as_slice(&self) -> &[VolatileSlice<'m>] {
        &self.slices[..self.count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::testing::memory;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use vm_memory::Bytes;

    #[test]
    fn offsets_span_descriptors() {
        let mem = memory();
        let w = VRING_DESC_F_WRITE as u16;
        let descs = [
            Descriptor::new(0x1000, 3, w, 0),
            Descriptor::new(0x2000, 100, 0, 0),
            Descriptor::new(0x3000, 0, w, 0),
            Descriptor::new(0x4000, 5, w, 0),
        ];
        let s = Stream::new(&descs, true);
        assert_eq!(s.len, 8);
        s.write(&mem, 2, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut b = [0u8; 3];
        mem.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [0, 0, 1]);
        let mut b = [0u8; 6];
        mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
        assert_eq!(b, [2, 3, 4, 5, 6, 0], "cut at the end of the stream");
        let mut back = [0u8; 4];
        s.read(&mem, 1, &mut back).unwrap();
        assert_eq!(back, [0, 1, 2, 3]);
        assert_eq!(Stream::new(&descs, false).len, 100);

        let sl = s.slices(&mem, 2, 100).unwrap();
        let lens: Vec<_> = sl.as_slice().iter().map(|v| v.len()).collect();
        assert_eq!(
            (lens, sl.len),
            (vec![1, 5], 6),
            "cut at the end of the stream"
        );
        assert!(s.slices(&mem, 8, 1).is_err(), "past the end");
    }

    #[test]
    fn slices_stop_at_the_limit() {
        let mem = memory();
        let descs: Vec<_> = (0..MAX_SLICES as u64 + 5)
            .map(|i| Descriptor::new(0x1000 * i, 10, 0, 0))
            .collect();
        let s = Stream::new(&descs, false);
        let sl = s.slices(&mem, 5, s.len).unwrap();
        assert_eq!(sl.as_slice().len(), MAX_SLICES);
        assert_eq!(sl.len, 5 + 10 * (MAX_SLICES - 1));
        let rest = s.slices(&mem, 5 + sl.len, s.len).unwrap();
        assert_eq!(rest.len, s.len - 5 - sl.len);
    }

    #[test]
    fn a_buffer_across_two_regions() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        let descs = [Descriptor::new(0xff0, 0x20, VRING_DESC_F_WRITE as u16, 0)];
        let s = Stream::new(&descs, true);
        let data: Vec<u8> = (1..=0x20).collect();
        s.write(&mem, 0, &data).unwrap();
        let mut back = [0u8; 0x20];
        mem.read_slice(&mut back, GuestAddress(0xff0)).unwrap();
        assert_eq!(back[..], data[..]);
        let mut again = [0u8; 0x1e];
        s.read(&mem, 2, &mut again).unwrap();
        assert_eq!(again[..], data[2..]);
        assert_eq!(s.slices(&mem, 0, 0x20).unwrap().as_slice().len(), 2);
    }
}
