//! A guest's descriptor ring and requests into virtio-blk: arbitrary descriptor tables
//! (addresses, lengths, flags, chains, indirect tables), avail ring entries and request
//! headers must end in a status, IOERR or NEEDS_RESET — never a panic or a hang.
#![no_main]

use std::io;
use std::sync::Arc;

use devices::virtio::blk::{Block, BlockBackend};
use devices::virtio::{InterruptKind, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x4_0000;
const QUEUE_SIZE: u16 = 16;
const DISK_SIZE: usize = 64 * 1024;

#[derive(Default)]
struct MemDisk(Vec<u8>);

impl BlockBackend for MemDisk {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let o = offset as usize;
        let src = self
            .0
            .get(o..o + buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let o = offset as usize;
        let dst = self
            .0
            .get_mut(o..o + buf.len())
            .ok_or(io::ErrorKind::InvalidInput)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
}

struct NoIrq;

impl VirtioInterrupt for NoIrq {
    fn trigger(&self, _kind: InterruptKind) {}
    fn needs_reset(&self) {}
}

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    // 16 bytes per descriptor: address (masked to stay near guest memory so lookups hit and
    // miss), length, flags, next.
    for i in 0..QUEUE_SIZE {
        let off = usize::from(i) * 16;
        let addr = u64_at(data, off) % (MEM_SIZE as u64 + 0x1000);
        let len = u64_at(data, off + 8) as u32 % 0x3000;
        let flags = (u64_at(data, off + 12) & 0x7) as u16;
        let next = (u64_at(data, off + 14) % u64::from(QUEUE_SIZE + 2)) as u16;
        let _ = vq.desc_table().store(
            i,
            RawDescriptor::from(Descriptor::new(addr, len, flags, next)),
        );
    }
    // The rest of the input is what lies in guest memory (request headers, indirect tables).
    let rest = data.get(usize::from(QUEUE_SIZE) * 16..).unwrap_or(&[]);
    let _ = mem.write_slice(&rest[..rest.len().min(0x8000)], GuestAddress(0x2_0000));
    let avail = rest.len() as u16 % (QUEUE_SIZE + 4);
    for j in 0..avail.min(QUEUE_SIZE) {
        if let Ok(r) = vq.avail().ring().ref_at(usize::from(j)) {
            r.store(u16::from(rest.get(usize::from(j)).copied().unwrap_or(0)) % (QUEUE_SIZE + 2));
        }
    }
    vq.avail().idx().store(avail);
    let Ok(q) = vq.create_queue() else { return };
    let mut blk = Block::new(Box::new(MemDisk(vec![0; DISK_SIZE])), "fuzz");
    blk.activate(mem.clone(), Arc::new(NoIrq), vec![q], RING_FEATURES);
    blk.process_queue(0);
    blk.process_queue(0);
});
