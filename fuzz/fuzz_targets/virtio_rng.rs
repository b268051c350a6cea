//! A guest's descriptor ring into virtio-rng: arbitrary descriptor tables (addresses,
//! lengths, flags, chains, indirect tables) and avail ring entries must end in used buffers
//! or NEEDS_RESET — never a panic or a hang — and a device marked NEEDS_RESET writes nothing
//! more until it is reset.
#![no_main]

mod virtio_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use devices::virtio::rng::Rng;
use devices::virtio::{InterruptKind, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_common::fill_queue;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{GuestAddress, GuestMemoryMmap};

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

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    // Lengths up to twice the device's 64 KiB cap per descriptor.
    fill_queue(&vq, &mem, MEM_SIZE, QUEUE_SIZE, data, 0x2_0000);
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
