//! Running a device's queues: walking and checking descriptor chains, returning used
//! buffers, notification suppression, and NEEDS_RESET on anything malformed.

use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemory, GuestMemoryMmap, Permissions};

use super::split::SplitRing;
use super::{InterruptKind, VirtioInterrupt};

/// Most descriptors one chain may have, indirect tables included. Far above what any
/// driver sends (virtio-blk's SEG_MAX is 126) and small enough that a hostile chain costs
/// little to reject.
pub const MAX_CHAIN_DESCRIPTORS: usize = 1024;

/// Why a chain or ring was rejected; any of these sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain loops, points outside the table, is empty, or has a bad indirect table.
    #[error("malformed descriptor chain")]
    Malformed,
    /// More descriptors than [`MAX_CHAIN_DESCRIPTORS`].
    #[error("descriptor chain longer than {MAX_CHAIN_DESCRIPTORS}")]
    TooLong,
    /// A buffer lies (partly) outside guest memory.
    #[error("descriptor buffer {addr:#x}+{len:#x} outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    /// The rings themselves (available index, used ring) are broken.
    #[error("virtqueue: {0}")]
    Ring(#[from] virtio_queue::Error),
}

/// Append the descriptors of one chain to `descs`, in order, each buffer checked to lie
/// inside guest memory. `descs` is the caller's, reused from chain to chain so that taking a
/// chain allocates nothing.
pub(crate) fn collect_chain<I>(
    chain: I,
    mem: &GuestMemoryMmap,
    descs: &mut Vec<Descriptor>,
) -> Result<(), ChainError>
where
    I: Iterator<Item = Descriptor>,
{
    let start = descs.len();
    for d in chain {
        if descs.len() - start == MAX_CHAIN_DESCRIPTORS {
            return Err(ChainError::TooLong);
        }
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !mem.check_range(d.addr(), d.len() as usize, access) {
            return Err(ChainError::OutOfMemory {
                addr: d.addr().0,
                len: d.len(),
            });
        }
        descs.push(d);
    }
    // virtio-queue ends a chain silently on a loop, an index past the table, an unreadable
    // descriptor or a bad indirect table; a chain that ends on a NEXT flag (or never starts)
    // is therefore one it cut short.
    match descs[start..].last() {
        Some(d) if !d.has_next() => Ok(()),
        _ => Err(ChainError::Malformed),
    }
}

/// What a device does with one chain: returns the number of bytes it wrote into the
/// chain's device-writable buffers (the used length).
pub(crate) type ChainHandler<'a> =
    dyn FnMut(&GuestMemoryMmap, &[Descriptor]) -> Result<u32, ChainError> + 'a;

/// A device's queues after activation.
pub(crate) struct ActiveQueues {
    pub mem: GuestMemoryMmap,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub queues: Vec<Queue>,
    /// Set once the driver broke a rule; nothing is processed until reset.
    broken: bool,
    /// The chain being served, kept from chain to chain.
    descs: Vec<Descriptor>,
}

impl ActiveQueues {
    pub fn new(
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Self {
        ActiveQueues {
            mem,
            interrupt,
            queues,
            broken: false,
            descs: Vec::new(),
        }
    }

    /// Whether the device has been marked NEEDS_RESET.
    #[cfg(test)]
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Serve every available chain of queue `index` with `handle`, then interrupt the driver
    /// if it asked for one.
    pub fn process(&mut self, index: usize, handle: &mut ChainHandler<'_>) {
        if self.broken {
            return;
        }
        let Some(q) = self.queues.get_mut(index) else {
            return;
        };
        if !q.ready() {
            return;
        }
        match drain(q, &self.mem, &mut self.descs, handle) {
            Ok(true) => self.interrupt.trigger(InterruptKind::Queue(index as u16)),
            Ok(false) => {}
            Err(e) => {
                // Logged once: the device stays broken until the driver resets it.
                tracing::warn!("virtio queue {index}: {e}; device needs reset");
                self.broken = true;
                self.interrupt.needs_reset();
            }
        }
    }
}

/// Serve every available chain of `q` with `handle`, returning each with the length it
/// reports; then say whether the driver wants an interrupt for them.
pub(crate) fn drain(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    descs: &mut Vec<Descriptor>,
    handle: &mut ChainHandler<'_>,
) -> Result<bool, ChainError> {
    let mut ring = SplitRing::new(q, mem)?;
    loop {
        q.disable_notification(mem)?;
        while let Some(head) = ring.pop(q)? {
            descs.clear();
            collect_chain(ring.chain(head), mem, descs)?;
            let len = handle(mem, descs)?;
            ring.add_used(q, head, len)?;
        }
        // Re-enabling notifications races with the driver adding more: go round again if it
        // did, so no request waits for a notification that was suppressed.
        if !q.enable_notification(mem)? {
            break;
        }
    }
    Ok(ring.needs_notification(q))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the device tests: guest memory, a recording interrupt and mock queues.

    use super::*;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    /// Guest memory for tests: 16 MiB from address 0.
    pub const TEST_MEM_SIZE: usize = 16 << 20;

    pub fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TEST_MEM_SIZE)]).unwrap()
    }

    /// A random descriptor for the robustness tests, drawn from `r`: its address is the
    /// request area `request`, near the response area `response`, anywhere in (or just past)
    /// guest memory, or far outside; its length 0, `small`, `large` or anything; any flags;
    /// `next` a little past a table of `size` entries.
    pub fn random_descriptor(
        r: u64,
        request: u64,
        response: u64,
        small: u32,
        large: u32,
        size: u16,
    ) -> virtio_queue::desc::RawDescriptor {
        let addr = match r % 4 {
            0 => request,
            1 => response + (r >> 8) % 64,
            2 => (r >> 8) % (TEST_MEM_SIZE as u64 + 4096),
            _ => r >> 3,
        };
        let len = match (r >> 16) % 4 {
            0 => 0,
            1 => small,
            2 => large,
            _ => (r >> 20) as u32,
        };
        let flags = (r >> 40) as u16 & 0x7;
        let next = (r >> 48) as u16 % (size + 4);
        Descriptor::new(addr, len, flags, next).into()
    }

    /// Records every interrupt and NEEDS_RESET.
    #[derive(Default)]
    pub struct Recorder {
        pub kinds: Mutex<Vec<InterruptKind>>,
        pub needs_reset: Mutex<bool>,
    }

    impl VirtioInterrupt for Recorder {
        fn trigger(&self, kind: InterruptKind) {
            self.kinds.lock().unwrap().push(kind);
        }
        fn needs_reset(&self) {
            *self.needs_reset.lock().unwrap() = true;
        }
    }
}
