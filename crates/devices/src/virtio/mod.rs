//! Virtio devices on a transitional virtio-pci transport (spec §5.6, F-HW-11, F-HW-13,
//! F-HW-15).
//!
//! A device ([`VirtioDevice`]) knows its queues and configuration layout; the transport
//! ([`VirtioPciDevice`]) presents it on PCI through both the legacy 0.9 registers in an I/O
//! BAR (OpenBSD 6.9, SeaBIOS) and the modern 1.x capabilities in a memory BAR (Linux), and
//! delivers its interrupts through INTx + ISR or MSI-X. Queues are `virtio-queue` split rings
//! over `vm-memory` guest memory; the request path takes chains and returns used elements
//! through the ring slices of `split.rs`, virtio-queue keeping the ring positions and the
//! notification suppression.
//!
//! A guest can never make a device panic: a malformed ring or descriptor chain marks the
//! device `DEVICE_NEEDS_RESET` and raises a configuration-change interrupt (spec §5.6), and
//! the device processes nothing more until the driver resets it.

pub mod blk;
pub mod net;
pub mod pci;
mod queue;
pub mod rng;
pub mod scsi;
mod split;
mod stream;
pub mod vmmci;

pub use pci::{NotifyAddress, PciIrq, VirtioPciDevice};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::pci::config::PciIds;
use crate::state::StateError;

/// VIRTIO_F_VERSION_1: the modern interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// VIRTIO_F_RING_INDIRECT_DESC: indirect descriptor tables (followed in `split.rs`, and by
/// virtio-queue for virtio-net's receive queue).
pub const VIRTIO_F_RING_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// VIRTIO_F_RING_EVENT_IDX: used_event/avail_event notification suppression.
pub const VIRTIO_F_RING_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// Transport features every ring-based device here offers.
pub const RING_FEATURES: u64 =
    VIRTIO_F_VERSION_1 | VIRTIO_F_RING_INDIRECT_DESC | VIRTIO_F_RING_EVENT_IDX;

/// Device status bits (virtio 1.x §2.1).
pub const STATUS_ACKNOWLEDGE: u8 =
    virtio_bindings::virtio_config::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
pub const STATUS_DRIVER: u8 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER as u8;
pub const STATUS_DRIVER_OK: u8 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK as u8;
pub const STATUS_FEATURES_OK: u8 =
    virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FEATURES_OK as u8;
pub const STATUS_NEEDS_RESET: u8 =
    virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
pub const STATUS_FAILED: u8 = virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FAILED as u8;

/// PCI vendor of virtio devices (Qumranet, now Red Hat).
pub const PCI_VENDOR_VIRTIO: u16 = 0x1af4;

/// What a device wants to tell the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    /// Queue `n` has new used buffers.
    Queue(u16),
    /// The device configuration (or status) changed.
    Config,
}

/// The transport's interrupt path, handed to a device at activation.
pub trait VirtioInterrupt: Send + Sync {
    /// Raise `kind` (ISR bit + INTx, or the MSI-X vector the driver chose).
    fn trigger(&self, kind: InterruptKind);
    /// The driver broke the device's rules: set DEVICE_NEEDS_RESET and tell it.
    fn needs_reset(&self);
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (2 block, 4 entropy, ...).
    fn device_type(&self) -> u32;
    /// PCI identity the transport presents.
    fn pci_ids(&self) -> PciIds;
    /// Only the legacy interface (vmmci: spec §5.6); no modern BAR, no MSI-X.
    fn legacy_only(&self) -> bool {
        false
    }
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered.
    fn features(&self) -> u64;
    /// Read device configuration space at `offset`.
    fn read_config(&mut self, offset: u64, data: &mut [u8]);
    /// Write device configuration space at `offset`; read-only by default.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// The driver set DRIVER_OK: start serving `queues` (one per
    /// [`VirtioDevice::queue_max_sizes`] entry; those the driver did not enable are not
    /// ready) with the negotiated `features`.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        features: u64,
    );
    /// Handle everything the driver made available on queue `index`.
    fn process_queue(&mut self, index: usize);
    /// The driver reset the device: drop the queues and go back to the initial state.
    fn reset(&mut self);
    /// State beyond the transport's registers and the rings in guest memory, for a snapshot
    /// ([`crate::state`]). By default there is none.
    fn state(&self) -> DeviceState {
        DeviceState::None
    }
    /// Load `state`, after the transport re-activated the device if the driver had.
    fn restore(&mut self, state: &DeviceState) -> Result<(), StateError> {
        match state {
            DeviceState::None => Ok(()),
            other => Err(StateError::new(
                "virtio device",
                format!(
                    "{} state for a device of type {}",
                    other.kind(),
                    self.device_type()
                ),
            )),
        }
    }
}

/// What a virtio device holds beyond its transport registers and the rings in guest memory,
/// for a snapshot. The rings carry the queue positions: a restored queue takes up at the used
/// ring's index, so a chain a device had taken but not completed is taken again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceState {
    /// Nothing more: entropy, block (docs/snapshot.md lists what net and SCSI drop).
    None,
    /// OpenBSD's vmmci: the pending host command and the latched time.
    Vmmci(vmmci::VmmciState),
}

impl DeviceState {
    fn kind(&self) -> &'static str {
        match self {
            DeviceState::None => "no",
            DeviceState::Vmmci(_) => "vmmci",
        }
    }
}

/// Copy bytes `[offset, offset + data.len())` of `regs` into `data`; bytes past the end of
/// `regs` (or an offset that does not fit) read as `past_end`. Device configuration spaces
/// read zeros there, transport registers all-ones.
pub(crate) fn copy_window(regs: &[u8], offset: u64, data: &mut [u8], past_end: u8) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| regs.get(o))
            .copied()
            .unwrap_or(past_end);
    }
}

/// PCI device id of a transitional device of virtio type `device_type` (virtio 1.x §4.1.2.1).
pub fn transitional_device_id(device_type: u32) -> u16 {
    match device_type {
        virtio_bindings::virtio_ids::VIRTIO_ID_NET => 0x1000,
        virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK => 0x1001,
        virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON => 0x1002,
        virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE => 0x1003,
        virtio_bindings::virtio_ids::VIRTIO_ID_SCSI => 0x1004,
        virtio_bindings::virtio_ids::VIRTIO_ID_RNG => 0x1005,
        // Types without a transitional id get the modern one.
        t => 0x1040 + t as u16,
    }
}

/// The PCI identity of a transitional virtio device: revision 0 and the virtio type as
/// subsystem id, which is how legacy drivers (OpenBSD's virtio_pci) find the device type.
pub fn transitional_ids(device_type: u32, class: u8, subclass: u8) -> PciIds {
    PciIds {
        vendor: PCI_VENDOR_VIRTIO,
        device: transitional_device_id(device_type),
        revision: 0,
        class,
        subclass,
        prog_if: 0,
        subsystem_vendor: PCI_VENDOR_VIRTIO,
        subsystem_id: device_type as u16,
    }
}

#[cfg(test)]
mod tests {
    //! The devices wired the way the hypervisor does it: one PCI root, vmd's creation order,
    //! BAR windows on the buses, notify addresses following a BAR move.

    use super::blk::{Block, RawFile};
    use super::rng::Rng;
    use super::vmmci::Vmmci;
    use super::*;
    use crate::pci::{
        BarAllocator, BarMove, BarSpace, PciRoot, ECAM_SIZE, PCI_IO_END, PCI_IO_START,
        PCI_MMIO_HOLE_END, PCI_MMIO_HOLE_START,
    };
    use crate::Bus;
    use std::sync::Mutex;

    #[test]
    fn vmd_topology_on_the_bus() {
        let mem = queue::testing::memory();
        let ecam = PCI_MMIO_HOLE_START..PCI_MMIO_HOLE_START + ECAM_SIZE;
        let alloc = BarAllocator::new(
            PCI_IO_START..PCI_IO_END,
            ecam.end..PCI_MMIO_HOLE_END,
            ecam.clone(),
        );
        let root = Arc::new(Mutex::new(PciRoot::new(alloc)));
        let irq = |line| PciIrq {
            intx: None,
            line,
            msi: None,
        };
        let file = std::fs::File::open("/dev/null").unwrap();
        let disk = Block::new(Box::new(RawFile::new(file, true).unwrap()), "");
        let (vmmci, _host) = Vmmci::new().unwrap();
        let devices: Vec<Arc<Mutex<dyn VirtioDevice>>> = vec![
            Arc::new(Mutex::new(Rng::new())),
            Arc::new(Mutex::new(disk)),
            Arc::new(Mutex::new(vmmci)),
        ];
        let mut transports = vec![];
        for (i, d) in devices.into_iter().enumerate() {
            let t = Arc::new(Mutex::new(
                VirtioPciDevice::new(d, mem.clone(), irq(3 + i as u8)).unwrap(),
            ));
            let slot = root.lock().unwrap().add_device(t.clone()).unwrap();
            assert_eq!(usize::from(slot), i + 1, "creation order");
            transports.push(t);
        }
        let moves = Arc::new(Mutex::new(Vec::<BarMove>::new()));
        let m = moves.clone();
        root.lock()
            .unwrap()
            .set_bar_move_handler(Box::new(move |mv| m.lock().unwrap().push(*mv)));
        let (mut pio, mut mmio) = (Bus::new(), Bus::new());
        crate::pci::map_root(&root, &mut pio, &mut mmio, PCI_MMIO_HOLE_START).unwrap();
        // vmd's I/O BARs: 0x1000, 0x2000, 0x3000 in slot order.
        for (i, t) in transports.iter().enumerate() {
            let io = t.lock().unwrap().notify_addresses();
            let legacy = io.iter().find(|n| n.space == BarSpace::Io);
            if i < 2 {
                assert_eq!(legacy.unwrap().addr, PCI_IO_START * (i as u64 + 1) + 16);
            }
        }
        assert!(
            transports[2].lock().unwrap().notify_addresses().is_empty(),
            "vmmci has no queues"
        );
        // The guest moves the rng's I/O BAR: the handler hears it and the notify address
        // follows.
        pio.write(0xcf8, &(0x8000_0000u32 | 1 << 11 | 0x10).to_le_bytes());
        pio.write(0xcfc, &0xc000u32.to_le_bytes());
        let mv = moves.lock().unwrap()[0];
        assert_eq!((mv.slot, mv.bar, mv.old, mv.new), (1, 0, 0x1000, 0xc000));
        let n = transports[0].lock().unwrap().notify_addresses();
        assert_eq!(n[0].addr, 0xc000 + 16);
        let mut b = [0u8; 2];
        pio.read(0xc000 + 12, &mut b);
        assert_eq!(
            u16::from_le_bytes(b),
            rng::RNG_QUEUE_SIZE,
            "decoded at the new place"
        );
    }
}
