//! Taking chains off a split virtqueue (virtio 1.x §2.7) through slices of guest memory made
//! once per pass over the queue.
//!
//! virtio-queue's iterators look each ring entry and descriptor up in guest memory on their
//! own; with a pass's worth of requests that lookup was the largest item of the device path.
//! Here the descriptor table and the available ring are each one bounds-checked
//! [`VolatileSlice`], taken when the pass begins, and every read is a volatile load at an
//! offset checked against that slice. The rules are virtio-queue's: a chain ends silently on
//! a loop, an index outside its table, a nested or malformed indirect table, or more than
//! 2^32 bytes, and [`super::queue::collect_chain`] turns an early end into an error. Used
//! elements go into the used ring the same way. Turning notifications on and off stays with
//! [`Queue`], which is also where the ring positions live between passes.

use std::num::Wrapping;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory, VolatileSlice};

use super::queue::ChainError;

/// Bytes of one descriptor.
const DESC_LEN: usize = 16;
/// Bytes of the available ring's flags and index, before its entries.
const AVAIL_HEADER: usize = 4;
/// Offset of the available ring's index.
const AVAIL_IDX: usize = 2;
/// Bytes of one available ring entry.
const AVAIL_ENTRY: usize = 2;
/// Bytes of the used ring's flags and index, before its elements.
const USED_HEADER: usize = 4;
/// Offset of the used ring's index.
const USED_IDX: usize = 2;
/// Bytes of one used element: id, then length.
const USED_ELEM: usize = 8;

/// One pass's view of a queue's rings.
pub(crate) struct SplitRing<'m> {
    mem: &'m GuestMemoryMmap,
    table: VolatileSlice<'m>,
    /// The available ring, `used_event` included.
    avail: VolatileSlice<'m>,
    used: VolatileSlice<'m>,
    size: u16,
    /// The driver's available index when last read.
    avail_idx: Wrapping<u16>,
    /// The used index when the pass began: the driver has been told about everything before.
    first_used: Wrapping<u16>,
}

impl<'m> SplitRing<'m> {
    /// The rings of `q`, which is ready. A ring that is not one piece of guest memory is an
    /// error: no driver puts one across the end of a memory region.
    pub fn new(q: &Queue, mem: &'m GuestMemoryMmap) -> Result<Self, ChainError> {
        let size = q.size();
        // The transport only takes powers of two; a size of zero must not reach a modulo.
        if size == 0 {
            return Err(virtio_queue::Error::InvalidSize.into());
        }
        let n = usize::from(size);
        let slice = |addr: u64, len: usize| {
            mem.get_slice(GuestAddress(addr), len)
                .map_err(|_| ChainError::OutOfMemory {
                    addr,
                    len: len as u32,
                })
        };
        Ok(SplitRing {
            mem,
            table: slice(q.desc_table(), DESC_LEN * n)?,
            avail: slice(q.avail_ring(), AVAIL_HEADER + AVAIL_ENTRY * n + AVAIL_ENTRY)?,
            used: slice(q.used_ring(), USED_HEADER + USED_ELEM * n)?,
            size,
            avail_idx: Wrapping(q.next_avail()),
            first_used: Wrapping(q.next_used()),
        })
    }

    /// The head of the next chain the driver made available, consumed from `q`; `None` when
    /// the driver has made none since.
    pub fn pop(&mut self, q: &mut Queue) -> Result<Option<u16>, ChainError> {
        let next = Wrapping(q.next_avail());
        if next == self.avail_idx {
            self.avail_idx = Wrapping(u16::from_le(
                self.avail
                    .get_atomic_ref::<AtomicU16>(AVAIL_IDX)
                    .map_err(|_| ChainError::Malformed)?
                    .load(Ordering::Acquire),
            ));
            // More than a ring's worth of new entries: the driver lies about its index.
            if (self.avail_idx - next).0 > self.size {
                return Err(virtio_queue::Error::InvalidAvailRingIndex.into());
            }
            if next == self.avail_idx {
                return Ok(None);
            }
        }
        let entry = AVAIL_HEADER + AVAIL_ENTRY * usize::from(next.0 % self.size);
        let head = self
            .avail
            .get_ref::<u16>(entry)
            .map_err(|_| ChainError::Malformed)?
            .load();
        q.set_next_avail((next + Wrapping(1)).0);
        Ok(Some(u16::from_le(head)))
    }

    /// Returns the chain at `head` to the driver with `len` bytes written into it, and
    /// advances `q`'s used index.
    pub fn add_used(&mut self, q: &mut Queue, head: u16, len: u32) -> Result<(), ChainError> {
        let next = Wrapping(q.next_used());
        let elem = USED_HEADER + USED_ELEM * usize::from(next.0 % self.size);
        let value = u64::from(head) | u64::from(len) << 32;
        self.used
            .get_ref::<u64>(elem)
            .map_err(|_| ChainError::Malformed)?
            .store(value.to_le());
        let next = next + Wrapping(1);
        // The element is written before the driver can see the index that covers it.
        self.used
            .get_atomic_ref::<AtomicU16>(USED_IDX)
            .map_err(|_| ChainError::Malformed)?
            .store(next.0.to_le(), Ordering::Release);
        q.set_next_used(next.0);
        Ok(())
    }

    /// Whether the driver wants an interrupt for the chains returned this pass: always
    /// without EVENT_IDX, else when they went past its `used_event` (§2.7.10).
    pub fn needs_notification(&self, q: &Queue) -> bool {
        let now = Wrapping(q.next_used());
        if now == self.first_used {
            return false;
        }
        if !q.event_idx_enabled() {
            return true;
        }
        // The used index is written before the driver's wish is read.
        fence(Ordering::SeqCst);
        let Ok(event) = self
            .avail
            .get_ref::<u16>(AVAIL_HEADER + AVAIL_ENTRY * usize::from(self.size))
        else {
            return true;
        };
        let event = Wrapping(u16::from_le(event.load()));
        now - event - Wrapping(1) < now - self.first_used
    }

    /// The descriptors of the chain at `head`, indirect tables followed.
    pub fn chain(&self, head: u16) -> Chain<'m> {
        Chain {
            mem: self.mem,
            table: self.table,
            table_len: self.size,
            next: head,
            ttl: self.size,
            indirect: false,
            bytes: 0,
        }
    }
}

/// The descriptors of one chain, in order.
pub(crate) struct Chain<'m> {
    mem: &'m GuestMemoryMmap,
    /// The table being walked: the queue's, or an indirect one.
    table: VolatileSlice<'m>,
    table_len: u16,
    next: u16,
    /// Descriptors the chain may still take from this table: no loop runs forever.
    ttl: u16,
    indirect: bool,
    /// Bytes of the buffers so far.
    bytes: u32,
}

impl Chain<'_> {
    /// Walk the indirect table `desc` refers to from its start; false if it may not be.
    fn enter_indirect(&mut self, desc: &Descriptor) -> bool {
        let len = desc.len() as usize;
        // One level only (§2.7.5.3.1); whole descriptors; at most a u16's worth.
        if self.indirect || !len.is_multiple_of(DESC_LEN) || len / DESC_LEN > usize::from(u16::MAX)
        {
            return false;
        }
        let Ok(table) = self.mem.get_slice(desc.addr(), len) else {
            return false;
        };
        self.table = table;
        self.table_len = (len / DESC_LEN) as u16;
        self.ttl = self.table_len;
        self.next = 0;
        self.indirect = true;
        true
    }
}

impl Iterator for Chain<'_> {
    type Item = Descriptor;

    fn next(&mut self) -> Option<Descriptor> {
        if self.ttl == 0 || self.next >= self.table_len {
            return None;
        }
        let desc: Descriptor = self
            .table
            .get_ref(DESC_LEN * usize::from(self.next))
            .ok()?
            .load();
        if desc.refers_to_indirect_table() {
            if !self.enter_indirect(&desc) {
                return None;
            }
            return self.next();
        }
        self.bytes = self.bytes.checked_add(desc.len())?;
        if desc.has_next() {
            self.next = desc.next();
            self.ttl -= 1;
        } else {
            self.ttl = 0;
        }
        Some(desc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use crate::virtio::queue::testing::{memory, random_descriptor};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::Bytes;

    const SIZE: u16 = 16;
    /// Where the random descriptors' "request" addresses point: an indirect table lives there.
    const TABLE: u64 = 0x10_0000;
    const INDIRECT_ENTRIES: u64 = 8;
    const AREA: u64 = 0x20_0000;

    fn fields(d: &Descriptor) -> (u64, u32, u16, u16) {
        (d.addr().0, d.len(), d.flags(), d.next())
    }

    /// The random tables of both kinds yield, chain for chain, the descriptors virtio-queue's
    /// own walk yields: loops, indexes past the table, nested and odd-sized indirect tables,
    /// zero lengths and huge ones all end the same way.
    #[test]
    fn chains_match_virtio_queue_on_random_tables() {
        let mut rng = XorShift::new(0x5911_7e57);
        let mut differing_lengths = std::collections::BTreeSet::new();
        for _ in 0..4000 {
            let mem = memory();
            let vq = MockSplitQueue::new(&mem, SIZE);
            let mut draw = || {
                random_descriptor(
                    rng.next(),
                    TABLE,
                    AREA,
                    16 * INDIRECT_ENTRIES as u32,
                    0x1000,
                    SIZE,
                )
            };
            for i in 0..SIZE {
                vq.desc_table().store(i, draw()).unwrap();
            }
            for i in 0..INDIRECT_ENTRIES {
                let d: RawDescriptor = draw();
                mem.write_obj(d, GuestAddress(TABLE + 16 * i)).unwrap();
            }
            let head = (rng.next() % u64::from(SIZE + 2)) as u16;
            vq.avail().ring().ref_at(0).unwrap().store(head);
            vq.avail().idx().store(1);

            let mut theirs: Queue = vq.create_queue().unwrap();
            let expected: Vec<_> = match theirs.iter(&mem).unwrap().next() {
                Some(chain) => chain.map(|d| fields(&d)).collect(),
                None => Vec::new(),
            };
            let mut q: Queue = vq.create_queue().unwrap();
            let mut ring = SplitRing::new(&q, &mem).unwrap();
            let got = ring.pop(&mut q).unwrap().expect("one chain available");
            assert_eq!(got, head);
            let ours: Vec<_> = ring.chain(got).map(|d| fields(&d)).collect();
            assert_eq!(ours, expected, "head {head}");
            differing_lengths.insert(ours.len());
            assert_eq!(
                ring.pop(&mut q).unwrap(),
                None,
                "only one chain was made available"
            );
        }
        // The tables were varied enough to walk empty, short and long chains.
        assert!(differing_lengths.len() >= 4, "{differing_lengths:?}");
    }

    #[test]
    fn an_available_index_more_than_a_ring_ahead_is_an_error() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, SIZE);
        let mut q: Queue = vq.create_queue().unwrap();
        vq.avail().idx().store(SIZE + 1);
        let mut ring = SplitRing::new(&q, &mem).unwrap();
        assert!(matches!(
            ring.pop(&mut q),
            Err(ChainError::Ring(virtio_queue::Error::InvalidAvailRingIndex))
        ));
        assert_eq!(q.next_avail(), 0, "nothing consumed");
    }

    #[test]
    fn a_ring_across_two_memory_regions_is_refused() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1_0000),
            (GuestAddress(0x1_0000), 0x1_0000),
        ])
        .unwrap();
        let mut q = Queue::new(SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(0x1_0000 - 0x80))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(0x1_1000))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(0x1_2000)).unwrap();
        q.set_ready(true);
        assert!(
            q.is_valid(&mem),
            "virtio-queue takes a table across regions"
        );
        assert!(matches!(
            SplitRing::new(&q, &mem),
            Err(ChainError::OutOfMemory {
                addr: 0xff80,
                len: 256
            })
        ));
    }

    /// Used elements land where the driver reads them, and EVENT_IDX asks for an interrupt
    /// exactly when the pass's completions reach `used_event`.
    #[test]
    fn used_elements_and_event_idx_notification() {
        const AVAIL: u64 = 0x2000;
        const USED: u64 = 0x3000;
        let mem = memory();
        // Laid out by hand: the mock queue's used ring overlaps `used_event`.
        let mut q = Queue::new(SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(0x1000)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL)).unwrap();
        q.try_set_used_ring_address(GuestAddress(USED)).unwrap();
        q.set_ready(true);
        q.set_event_idx(true);
        let used_event = GuestAddress(AVAIL + 4 + 2 * u64::from(SIZE));
        // The driver wants an interrupt once the third chain (used index 2) is returned.
        mem.write_obj(2u16.to_le(), used_event).unwrap();
        let mut ring = SplitRing::new(&q, &mem).unwrap();
        assert!(!ring.needs_notification(&q), "nothing returned yet");
        ring.add_used(&mut q, 5, 0x1234).unwrap();
        ring.add_used(&mut q, 9, 7).unwrap();
        assert!(!ring.needs_notification(&q), "used_event not reached");
        ring.add_used(&mut q, 3, 1).unwrap();
        assert!(ring.needs_notification(&q));
        assert_eq!(q.next_used(), 3);
        let idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(u16::from_le(idx), 3);
        let elems: Vec<_> = (0..3)
            .map(|i| {
                let e: [u32; 2] = mem.read_obj(GuestAddress(USED + 4 + 8 * i)).unwrap();
                (u32::from_le(e[0]), u32::from_le(e[1]))
            })
            .collect();
        assert_eq!(elems, [(5, 0x1234), (9, 7), (3, 1)]);

        // The next pass starts after the driver was told: returning past used_event again
        // needs no second interrupt.
        let mut ring = SplitRing::new(&q, &mem).unwrap();
        ring.add_used(&mut q, 1, 0).unwrap();
        assert!(!ring.needs_notification(&q));

        // Without EVENT_IDX every pass that returned something interrupts.
        q.set_event_idx(false);
        let mut ring = SplitRing::new(&q, &mem).unwrap();
        assert!(!ring.needs_notification(&q));
        ring.add_used(&mut q, 2, 0).unwrap();
        assert!(ring.needs_notification(&q));
    }
}
