//! virtio-rng, the entropy device (spec §5.6 viornd; F-HW-13).
//!
//! Each device-writable buffer is filled with bytes from the host's `getrandom(2)`, up to
//! [`MAX_RNG_BYTES_PER_DESCRIPTOR`] per descriptor as vmd does, so a guest cannot make one
//! request cost unbounded host work.

use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::queue::{ActiveQueues, ChainError};
use super::{transitional_ids, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use crate::pci::config::PciIds;

/// Queue size (vmd's VIORND_QUEUE_SIZE).
pub const RNG_QUEUE_SIZE: u16 = 64;
/// Most bytes handed out per descriptor (vmd: 64 KiB).
pub const MAX_RNG_BYTES_PER_DESCRIPTOR: usize = 64 << 10;
/// PCI class "system peripheral", subclass "other", as vmd presents viornd.
const PCI_CLASS_SYSTEM: u8 = 0x08;
const PCI_SUBCLASS_SYSTEM_MISC: u8 = 0x80;

/// The entropy device.
pub struct Rng {
    active: Option<ActiveQueues>,
    buf: Vec<u8>,
}

impl Rng {
    /// A new device; it has no configuration.
    pub fn new() -> Self {
        Rng {
            active: None,
            buf: Vec::new(),
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

fn fill(buf: &mut Vec<u8>, mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<u32, ChainError> {
    let mut written = 0u32;
    for d in descs.iter().filter(|d| d.is_write_only()) {
        let n = (d.len() as usize).min(MAX_RNG_BYTES_PER_DESCRIPTOR);
        buf.resize(n, 0);
        // getrandom only fails if the kernel lacks the syscall; give the guest nothing then
        // rather than predictable bytes.
        if getrandom::fill(&mut buf[..n]).is_err() {
            break;
        }
        mem.write_slice(&buf[..n], d.addr())
            .map_err(|_| ChainError::OutOfMemory {
                addr: d.addr().0,
                len: d.len(),
            })?;
        written += n as u32;
    }
    Ok(written)
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }
    fn pci_ids(&self) -> PciIds {
        transitional_ids(VIRTIO_ID_RNG, PCI_CLASS_SYSTEM, PCI_SUBCLASS_SYSTEM_MISC)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[RNG_QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        RING_FEATURES
    }
    fn read_config(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        _features: u64,
    ) {
        self.active = Some(ActiveQueues::new(mem, interrupt, queues));
    }
    fn process_queue(&mut self, index: usize) {
        let buf = &mut self.buf;
        if let Some(a) = self.active.as_mut() {
            a.process(index, &mut |mem, descs| fill(buf, mem, descs));
        }
    }
    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::queue::testing::{memory, Recorder};
    use crate::virtio::InterruptKind;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueT;
    use vm_memory::GuestAddress;

    const BUF: u64 = 0x10_0000;

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn fills_requested_length_through_mock_queue() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, RNG_QUEUE_SIZE);
        vq.add_desc_chains(
            &[
                desc(BUF, 100, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
                desc(BUF + 0x1000, 28, VRING_DESC_F_WRITE, 0),
                desc(BUF + 0x2000, 200_000, VRING_DESC_F_WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let q: Queue = vq.create_queue().unwrap();
        let irq = Arc::new(Recorder::default());
        let mut rng = Rng::new();
        rng.activate(mem.clone(), irq.clone(), vec![q], RING_FEATURES);
        rng.process_queue(0);
        assert_eq!(vq.used().idx().load(), 2);
        let e0 = vq.used().ring().ref_at(0).unwrap().load();
        let e1 = vq.used().ring().ref_at(1).unwrap().load();
        assert_eq!((e0.id(), e0.len()), (0, 128));
        assert_eq!(
            (e1.id(), e1.len()),
            (2, MAX_RNG_BYTES_PER_DESCRIPTOR as u32),
            "bounded per descriptor"
        );
        let mut got = [0u8; 100];
        mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
        assert!(got.iter().any(|&b| b != 0), "random bytes written");
        assert_eq!(*irq.kinds.lock().unwrap(), vec![InterruptKind::Queue(0)]);
        assert!(!*irq.needs_reset.lock().unwrap());
    }

    #[test]
    fn looping_chain_needs_reset() {
        let mem = memory();
        let vq = MockSplitQueue::new(&mem, RNG_QUEUE_SIZE);
        // 0 -> 1 -> 0 -> ...
        vq.desc_table()
            .store(0, desc(BUF, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1))
            .unwrap();
        vq.desc_table()
            .store(1, desc(BUF, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0))
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0);
        vq.avail().idx().store(1);
        let q: Queue = vq.create_queue().unwrap();
        let irq = Arc::new(Recorder::default());
        let mut rng = Rng::new();
        rng.activate(mem.clone(), irq.clone(), vec![q], 0);
        rng.process_queue(0);
        assert!(*irq.needs_reset.lock().unwrap());
        assert_eq!(vq.used().idx().load(), 0);
        // Broken until reset: further notifications do nothing.
        rng.process_queue(0);
        assert!(rng.active.as_ref().unwrap().broken());
        assert!(rng.active.as_ref().unwrap().queues[0].ready());
    }
}
