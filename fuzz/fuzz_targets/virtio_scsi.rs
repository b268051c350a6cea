//! A guest's descriptor rings and requests into the virtio-scsi CD-ROM: arbitrary descriptor
//! tables (addresses, lengths, flags, chains, indirect tables) on the control, event or
//! request queue, avail ring entries, request headers and CDBs, driver-chosen sense and CDB
//! sizes, and an image that fails reads past a point. Every chain must end in a response, be
//! held (event queue) or end in NEEDS_RESET — never a panic or a hang.
//!
//! Input: one control byte (bits 0-1 the queue: control, event, request, request; bit 2 set
//! sense_size from byte 1; bit 3 set cdb_size from byte 2; bit 4 the image's last blocks
//! unreadable; bit 5 start guest memory with a request for LUN 0 whose opcode byte 3
//! picks), two size bytes, an opcode byte, 16 bytes per descriptor, then guest memory.
#![no_main]

mod virtio_common;

use std::io;
use std::sync::Arc;

use devices::virtio::blk::BlockBackend;
use devices::virtio::scsi::Scsi;
use devices::virtio::{VirtioDevice, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_common::{fill_avail, fill_descriptors, NoIrq, DESC_INPUT};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x4_0000;
const QUEUE_SIZE: u16 = 16;
/// Rings of the control, event and request queues.
const RINGS: [u64; 3] = [0, 0x1000, 0x2000];
/// Where the input's tail lands in guest memory, and how much of it.
const DATA: u64 = 0x2_0000;
const DATA_LEN: usize = 0x8000;
/// Descriptors aimed at the input's tail land in it or just past it.
const DATA_WINDOW: u64 = DATA_LEN as u64 + 0x1000;
const BLOCK: usize = 2048;
const BLOCKS: usize = 20;
/// The ISO 9660 primary volume descriptor's sector, and the terminator after it.
const PVD_SECTOR: usize = 16;
/// Blocks at the end that fail to read when the control byte asks for it.
const BAD_BLOCKS: usize = 3;
/// Control byte, sense size, CDB size, opcode index.
const HEADER_LEN: usize = 4;
/// Target 0, LUN 0, and where the CDB starts in a request.
const LUN0: [u8; 8] = [1, 0, 0x40, 0, 0, 0, 0, 0];
const CDB_OFFSET: u64 = 19;
/// The opcodes the CD-ROM implements, and a write.
const OPCODES: [u8; 20] = [
    0x00, 0x03, 0x08, 0x12, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x43, 0x46, 0x4a, 0x51, 0x5a, 0x88,
    0x9e, 0xa0, 0xa8, 0xbd,
];
/// Offsets of sense_size and cdb_size in the device configuration.
const CFG_SENSE_SIZE: u64 = 20;
const CFG_CDB_SIZE: u64 = 24;

/// An ISO image in memory whose reads fail from `readable` on (a file that shrank).
struct Iso {
    data: Vec<u8>,
    readable: usize,
}

impl Iso {
    fn new(readable: usize) -> Self {
        let mut data: Vec<u8> = (0..BLOCKS * BLOCK).map(|i| i as u8).collect();
        for (sector, kind) in [(PVD_SECTOR, 1u8), (PVD_SECTOR + 1, 255)] {
            let o = sector * BLOCK;
            data[o] = kind;
            data[o + 1..o + 6].copy_from_slice(b"CD001");
            data[o + 6] = 1;
        }
        Iso { data, readable }
    }
}

impl BlockBackend for Iso {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let o = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let src = o
            .checked_add(buf.len())
            .filter(|&end| end <= self.readable)
            .and_then(|end| self.data.get(o..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let ctl = data.first().copied().unwrap_or(0);
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let table = data.get(HEADER_LEN..).unwrap_or(&[]);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let vqs: Vec<_> = RINGS
        .iter()
        .map(|&a| MockSplitQueue::create(&mem, GuestAddress(a), QUEUE_SIZE))
        .collect();
    let target = usize::from(ctl & 3).min(2);
    let vq = &vqs[target];
    // 16 bytes per descriptor: address, length, flags, next. Addresses with the top bit
    // clear point into the input's tail, so that the fuzzer controls what the device reads
    // there (a request must start with a valid LUN to reach the command set); the others
    // stay near guest memory so lookups hit and miss.
    fill_descriptors(&vq, QUEUE_SIZE, table, 0x3000, |raw| {
        if raw >> 63 == 0 {
            DATA + raw % DATA_WINDOW
        } else {
            raw % (MEM_SIZE as u64 + 0x1000)
        }
    });
    // The rest of the input is what lies in guest memory (request headers, CDBs, indirect
    // tables).
    let rest = table
        .get(usize::from(QUEUE_SIZE) * DESC_INPUT..)
        .unwrap_or(&[]);
    let _ = mem.write_slice(&rest[..rest.len().min(DATA_LEN)], GuestAddress(DATA));
    if ctl & 0x20 != 0 {
        // A jump start past the LUN check and the opcode dispatch, which coverage feedback
        // alone finds slowly; the rest of the CDB stays the fuzzer's.
        let _ = mem.write_slice(&LUN0, GuestAddress(DATA));
        let op = OPCODES[usize::from(byte(3)) % OPCODES.len()];
        let _ = mem.write_obj(op, GuestAddress(DATA + CDB_OFFSET));
    }
    fill_avail(&vq, QUEUE_SIZE, rest, rest.len() as u16 % (QUEUE_SIZE + 4));
    let Ok(queues) = vqs
        .iter()
        .map(|v| v.create_queue())
        .collect::<Result<Vec<Queue>, _>>()
    else {
        return;
    };
    let readable = if ctl & 0x10 != 0 {
        (BLOCKS - BAD_BLOCKS) * BLOCK
    } else {
        BLOCKS * BLOCK
    };
    let mut scsi = Scsi::with_backend(Box::new(Iso::new(readable))).unwrap();
    if ctl & 0x04 != 0 {
        scsi.write_config(CFG_SENSE_SIZE, &[byte(1)]);
    }
    if ctl & 0x08 != 0 {
        scsi.write_config(CFG_CDB_SIZE, &[byte(2)]);
    }
    scsi.activate(mem.clone(), Arc::new(NoIrq), queues, RING_FEATURES);
    scsi.process_queue(target);
    scsi.process_queue(target);
});
