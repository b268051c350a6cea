//! A guest's descriptor ring into virtio-rng: arbitrary descriptor tables (addresses,
//! lengths, flags, chains, indirect tables) and avail ring entries must end in used buffers
//! or NEEDS_RESET — never a panic or a hang — and a device marked NEEDS_RESET writes nothing
//! more until it is reset.
#![no_main]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use devices::virtio::rng::Rng;
use devices::virtio::{InterruptKind, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x4_0000;
const QUEUE_SIZE: u16 = 16;

#[derive(Default)]
struct Irq {
    needs_reset: AtomicBool,
}

impl VirtioInterrupt for Irq {
    fn trigger(&self, _kind: InterruptKind) {}
    fn needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
    }
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
    // miss), length (up to twice the device's 64 KiB cap per descriptor), flags, next.
    for i in 0..QUEUE_SIZE {
        let off = usize::from(i) * 16;
        let addr = u64_at(data, off) % (MEM_SIZE as u64 + 0x1000);
        let len = u64_at(data, off + 8) as u32 % 0x2_0000;
        let flags = (u64_at(data, off + 12) & 0x7) as u16;
        let next = (u64_at(data, off + 14) % u64::from(QUEUE_SIZE + 2)) as u16;
        let _ = vq.desc_table().store(
            i,
            RawDescriptor::from(Descriptor::new(addr, len, flags, next)),
        );
    }
    // The rest of the input is what lies in guest memory (indirect tables).
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
    let irq = Arc::new(Irq::default());
    let mut rng = Rng::new();
    rng.activate(mem.clone(), irq.clone(), vec![q], RING_FEATURES);
    rng.process_queue(0);
    // Buffers may overlap the rings (the guest's business), so the used ring holds whatever
    // random bytes landed there: only a broken device's silence can be checked.
    let used = vq.used().idx().load();
    let broken = irq.needs_reset.load(Ordering::SeqCst);
    rng.process_queue(0);
    if broken {
        assert_eq!(vq.used().idx().load(), used, "a broken device stays quiet");
    }
});
