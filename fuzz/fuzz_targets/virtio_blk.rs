//! A guest's descriptor ring and requests into virtio-blk: arbitrary descriptor tables
//! (addresses, lengths, flags, chains, indirect tables), avail ring entries and request
//! headers must end in a status, IOERR or NEEDS_RESET — never a panic or a hang.
#![no_main]

mod virtio_common;

use std::io;
use std::sync::Arc;

use devices::virtio::blk::{Block, BlockBackend};
use devices::virtio::{VirtioDevice, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_common::{fill_queue, NoIrq};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{GuestAddress, GuestMemoryMmap};

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

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    fill_queue(&vq, &mem, MEM_SIZE, QUEUE_SIZE, data, 0x3000);
    let Ok(q) = vq.create_queue() else { return };
    let mut blk = Block::new(Box::new(MemDisk(vec![0; DISK_SIZE])), "fuzz");
    blk.activate(mem.clone(), Arc::new(NoIrq), vec![q], RING_FEATURES);
    blk.process_queue(0);
    blk.process_queue(0);
});
