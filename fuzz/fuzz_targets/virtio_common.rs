//! What the virtio fuzz targets share: an interrupt sink, reading the input as numbers, and
//! filling a mock split queue's descriptor table, avail ring and guest memory from fuzz input. Each target
//! includes it with `mod virtio_common;` (it is not a target itself).

// Each target compiles its own copy and uses only part of it.
#![allow(dead_code)]

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use devices::virtio::{InterruptKind, VirtioInterrupt};

/// Bytes of input per descriptor: address, length, flags, next.
pub const DESC_INPUT: usize = 16;
/// Where [`fill_queue`] puts the input that follows the descriptor table in guest memory, and
/// how much of it.
pub const PAYLOAD_AT: u64 = 0x2_0000;
pub const PAYLOAD_LEN: usize = 0x8000;

/// Interrupts go nowhere.
pub struct NoIrq;

impl VirtioInterrupt for NoIrq {
    fn trigger(&self, _kind: InterruptKind) {}
    fn needs_reset(&self) {}
}

/// The little-endian u64 at `i`, zero-padded past the end of `d`.
pub fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// Fill the descriptor table from `table` ([`DESC_INPUT`] bytes each): `addr(raw)` maps the
/// raw address (targets keep it near guest memory so lookups both hit and miss), lengths
/// below `max_len`, any flags, `next` a little past the table so bad links occur.
pub fn fill_descriptors(
    vq: &MockSplitQueue<'_, GuestMemoryMmap>,
    size: u16,
    table: &[u8],
    max_len: u32,
    addr: impl Fn(u64) -> u64,
) {
    for i in 0..size {
        let off = usize::from(i) * DESC_INPUT;
        let a = addr(u64_at(table, off));
        let len = u64_at(table, off + 8) as u32 % max_len;
        let flags = (u64_at(table, off + 12) & 0x7) as u16;
        let next = (u64_at(table, off + 14) % u64::from(size + 2)) as u16;
        let _ = vq
            .desc_table()
            .store(i, RawDescriptor::from(Descriptor::new(a, len, flags, next)));
    }
}

/// Publish `n` avail entries whose heads come from `heads` (a little past the table too).
pub fn fill_avail(vq: &MockSplitQueue<'_, GuestMemoryMmap>, size: u16, heads: &[u8], n: u16) {
    for j in 0..n.min(size) {
        if let Ok(r) = vq.avail().ring().ref_at(usize::from(j)) {
            let head = heads.get(usize::from(j)).copied().unwrap_or(0);
            r.store(u16::from(head) % (size + 2));
        }
    }
    vq.avail().idx().store(n);
}

/// One queue as the single-queue targets fill it: the descriptor table from the start of
/// `data` (lengths below `max_len`, addresses in or just past `mem_size` bytes of guest
/// memory, so lookups both hit and miss), and the rest of `data` both in guest memory at
/// [`PAYLOAD_AT`] (request headers, indirect tables) and as the avail ring's heads.
pub fn fill_queue(
    vq: &MockSplitQueue<'_, GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    mem_size: usize,
    size: u16,
    data: &[u8],
    max_len: u32,
) {
    fill_descriptors(vq, size, data, max_len, |a| a % (mem_size as u64 + 0x1000));
    let rest = data.get(usize::from(size) * DESC_INPUT..).unwrap_or(&[]);
    let _ = mem.write_slice(
        &rest[..rest.len().min(PAYLOAD_LEN)],
        GuestAddress(PAYLOAD_AT),
    );
    fill_avail(vq, size, rest, rest.len() as u16 % (size + 4));
}
