//! The buffers of one direction of a descriptor chain as one byte stream.
//!
//! Virtio 1.x §2.7.4 lets a driver split the request header, data and response over
//! descriptors any way it likes, so offsets into a request are offsets into the
//! concatenation of its device-readable (or device-writable) buffers. `collect_chain` has
//! already checked every buffer against guest memory; reads and writes stop at the end of
//! the stream.

use std::ops::Range;

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::virtio::queue::ChainError;

/// One direction of a chain.
pub struct Stream {
    segs: Vec<(GuestAddress, usize)>,
    /// Total bytes.
    pub len: usize,
}

impl Stream {
    /// The device-writable buffers of `descs` if `writable`, else the device-readable ones.
    pub fn new(descs: &[Descriptor], writable: bool) -> Self {
        let segs: Vec<_> = descs
            .iter()
            .filter(|d| d.is_write_only() == writable && d.len() > 0)
            .map(|d| (d.addr(), d.len() as usize))
            .collect();
        let len = segs.iter().map(|s| s.1).sum();
        Stream { segs, len }
    }

    /// Apply `f(address, range of the caller's buffer)` to each piece of
    /// `[start, start + len)` that lies in the stream.
    fn walk(
        &self,
        start: usize,
        len: usize,
        mut f: impl FnMut(GuestAddress, Range<usize>) -> Result<(), ChainError>,
    ) -> Result<(), ChainError> {
        let mut skip = start;
        let mut done = 0;
        for &(addr, seg_len) in &self.segs {
            if done == len {
                break;
            }
            if skip >= seg_len {
                skip -= seg_len;
                continue;
            }
            let n = (seg_len - skip).min(len - done);
            let at = addr.checked_add(skip as u64).ok_or(ChainError::Malformed)?;
            f(at, done..done + n)?;
            done += n;
            skip = 0;
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
        self.walk(start, buf.len(), |a, r| {
            let len = r.len() as u32;
            mem.read_slice(&mut buf[r], a)
                .map_err(|_| ChainError::OutOfMemory { addr: a.0, len })
        })
    }

    /// Write `buf` at stream offset `start`.
    pub fn write(&self, mem: &GuestMemoryMmap, start: usize, buf: &[u8]) -> Result<(), ChainError> {
        self.walk(start, buf.len(), |a, r| {
            let len = r.len() as u32;
            mem.write_slice(&buf[r], a)
                .map_err(|_| ChainError::OutOfMemory { addr: a.0, len })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::testing::memory;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

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
    }
}
