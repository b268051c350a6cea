//! The driver's side of a split virtqueue (virtio 1.x §2.7), as a guest driver keeps it:
//! descriptor table, available ring and used ring in guest memory, chains posted in batches
//! and completions reaped from the used ring. Also the interrupt line the device raises.
//!
//! Shared by `bench-blk` and `bench-net` (which includes this file with `#[path]`). One
//! thread plays both driver and device, so "notifying the device" is calling its
//! `process_queue` and an interrupt is an eventfd write, as the hypervisor's irqfds are.

use std::num::Wrapping;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use devices::virtio::{InterruptKind, VirtioInterrupt};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{
    ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory,
    VolatileSlice,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory one ring of up to 256 entries occupies from its base.
pub const RING_AREA: u64 = 0x2000;
/// Bytes of one descriptor, of the rings' flags + idx header and of one used element.
const DESC_LEN: usize = 16;
const RING_HEADER: usize = 4;
const USED_ELEM_LEN: usize = 8;

/// One buffer of a chain.
#[derive(Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (a read's data, a status byte, a receive buffer).
    pub device_writes: bool,
}

/// A split ring whose chains all have `N` descriptors. Chain slot `s` owns descriptors
/// `s*N .. s*N+N`, so a completion's head names its slot and the caller can keep per-slot
/// buffers (headers, data, status bytes) at addresses derived from it.
///
/// Like a guest driver, it reaches its rings through plain (volatile) loads and stores on
/// one mapping, not through a guest-memory lookup per access.
pub struct Vring<'m, const N: usize> {
    area: VolatileSlice<'m>,
    base: u64,
    size: u16,
    /// Offsets of the available and used rings in `area`; the descriptor table is at 0.
    avail: usize,
    used: usize,
    free: Vec<u16>,
    avail_idx: Wrapping<u16>,
    last_used: Wrapping<u16>,
    in_flight: u16,
}

impl<'m, const N: usize> Vring<'m, N> {
    /// A ring of `size` entries laid out (and zeroed) at `base` in `mem`.
    pub fn new(mem: &'m GuestMemoryMmap, base: u64, size: u16) -> Self {
        let area = mem
            .get_slice(GuestAddress(base), RING_AREA as usize)
            .expect("ring inside guest memory");
        let n = usize::from(size);
        let avail = DESC_LEN * n;
        // flags, idx, ring[size], used_event; the used ring is 4-byte aligned.
        let used = (avail + RING_HEADER + 2 * n + 2).next_multiple_of(4);
        assert!(
            used + RING_HEADER + USED_ELEM_LEN * n + 2 <= area.len(),
            "ring of {size} entries too big"
        );
        area.write_slice(&[0u8; RING_AREA as usize], 0)
            .expect("zero the ring");
        Vring {
            area,
            base,
            size,
            avail,
            used,
            free: (0..size / N as u16).rev().collect(),
            avail_idx: Wrapping(0),
            last_used: Wrapping(0),
            in_flight: 0,
        }
    }

    /// The device's view of the ring, as the transport builds it at DRIVER_OK: ready, with
    /// EVENT_IDX (which vmd offers and Linux accepts).
    pub fn queue(&self, mem: &GuestMemoryMmap) -> Queue {
        let at = |off: usize| GuestAddress(self.base + off as u64);
        let mut q = Queue::new(self.size).expect("queue size");
        q.try_set_size(self.size).expect("queue size");
        q.try_set_desc_table_address(at(0))
            .expect("descriptor table address");
        q.try_set_avail_ring_address(at(self.avail))
            .expect("available ring address");
        q.try_set_used_ring_address(at(self.used))
            .expect("used ring address");
        q.set_ready(true);
        q.set_event_idx(true);
        assert!(q.is_valid(mem), "queue outside guest memory");
        q
    }

    /// Chains posted and not yet returned.
    pub fn in_flight(&self) -> u16 {
        self.in_flight
    }

    fn put<T: ByteValued>(&self, off: usize, v: T) {
        self.area.get_ref(off).expect("inside the ring").store(v);
    }

    fn get<T: ByteValued>(&self, off: usize) -> T {
        self.area.get_ref(off).expect("inside the ring").load()
    }

    fn index(&self, off: usize) -> &AtomicU16 {
        self.area.get_atomic_ref(off).expect("ring index")
    }

    /// Posts the chain `chain(slot)` builds for a free slot; the device sees it after
    /// [`Vring::publish`].
    pub fn push(&mut self, chain: impl FnOnce(u16) -> [Buf; N]) {
        let slot = self
            .free
            .pop()
            .expect("more chains in flight than the ring holds");
        let head = slot * N as u16;
        for (i, b) in chain(slot).iter().enumerate() {
            let index = head + i as u16;
            let mut flags = if b.device_writes {
                VRING_DESC_F_WRITE
            } else {
                0
            };
            if i + 1 < N {
                flags |= VRING_DESC_F_NEXT;
            }
            // addr; then len, flags, next packed little-endian into the second 8 bytes.
            let rest = u64::from(b.len) | u64::from(flags) << 32 | u64::from(index + 1) << 48;
            let d = DESC_LEN * usize::from(index);
            self.put(d, b.addr.to_le());
            self.put(d + 8, rest.to_le());
        }
        let entry = self.avail + RING_HEADER + 2 * usize::from(self.avail_idx.0 % self.size);
        self.put(entry, head.to_le());
        self.avail_idx += 1;
        self.in_flight += 1;
    }

    /// Makes the posted chains visible to the device and asks for one interrupt, when the
    /// last chain in flight is used (`used_event`, as Linux does with EVENT_IDX).
    pub fn publish(&mut self) {
        let want = self.last_used + Wrapping(self.in_flight) - Wrapping(1);
        self.put(
            self.avail + RING_HEADER + 2 * usize::from(self.size),
            want.0.to_le(),
        );
        self.index(self.avail + 2)
            .store(self.avail_idx.0.to_le(), Ordering::Release);
    }

    /// Hands each chain the device returned to `done(slot, used length)` and frees its slot;
    /// returns how many there were.
    pub fn reap(&mut self, mut done: impl FnMut(u16, u32)) -> u16 {
        let used_idx = u16::from_le(self.index(self.used + 2).load(Ordering::Acquire));
        let mut n = 0;
        while self.last_used.0 != used_idx {
            let elem =
                self.used + RING_HEADER + USED_ELEM_LEN * usize::from(self.last_used.0 % self.size);
            let id = u32::from_le(self.get(elem));
            let len = u32::from_le(self.get(elem + 4));
            assert_eq!(
                id % N as u32,
                0,
                "device returned a descriptor that is no head"
            );
            let slot = (id / N as u32) as u16;
            done(slot, len);
            self.free.push(slot);
            self.last_used += 1;
            n += 1;
        }
        self.in_flight -= n;
        n
    }
}

/// The device's interrupt line: an eventfd write per interrupt, like the irqfd the
/// hypervisor wires to KVM. Counts interrupts and remembers a NEEDS_RESET.
pub struct Irq {
    fd: EventFd,
    needs_reset: AtomicBool,
}

impl Irq {
    pub fn new() -> Self {
        Irq {
            fd: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
            needs_reset: AtomicBool::new(false),
        }
    }

    /// Interrupts raised since the last call; panics if the device needed a reset, which
    /// means the driver here is wrong.
    pub fn take(&self) -> u64 {
        assert!(
            !self.needs_reset.load(Ordering::SeqCst),
            "device set NEEDS_RESET"
        );
        self.fd.read().unwrap_or(0)
    }
}

impl VirtioInterrupt for Irq {
    fn trigger(&self, _kind: InterruptKind) {
        self.fd.write(1).expect("eventfd write");
    }
    fn needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
    }
}
