//! PCI bus 0 of a VM (spec §5.5): the host bridge, virtio entropy, one virtio-blk per disk,
//! their BAR windows on the buses, INTx lines and MSI-X delivered through KVM.

use std::sync::{Arc, Mutex};

use devices::pci::{
    map_root, BarAllocator, MsiMessage, MsiTrigger, PciRoot, ECAM_SIZE, PCI_IO_END, PCI_IO_START,
    PCI_MMIO_HOLE_END, PCI_MMIO_HOLE_START,
};
use devices::virtio::blk::Block;
use devices::virtio::rng::Rng;
use devices::virtio::vmmci::{Vmmci, VmmciHandle};
use devices::virtio::{PciIrq, VirtioDevice, VirtioPciDevice};
use devices::Bus;
use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::disk::DiskBackend;
use crate::error::Error;

/// ECAM for bus 0 at the bottom of the MMIO hole; memory BARs above it.
pub const ECAM_BASE: u64 = PCI_MMIO_HOLE_START;
/// ISA IRQs PCI INTx lines take, in vmd's order (spec §5.5) without the SCI's 9.
const INTX_IRQS: [u32; 9] = [3, 5, 6, 7, 10, 11, 12, 14, 15];
/// Most disks a VM gets (vmd's `VM_MAX_DISKS_PER_VM`).
pub const MAX_DISKS: usize = 4;

/// MSI-X messages go straight to KVM (KVM_SIGNAL_MSI), so no GSI routes are needed.
struct KvmMsi {
    vm: Arc<VmFd>,
}

impl MsiTrigger for KvmMsi {
    fn trigger(&self, _vector: u16, msg: MsiMessage) {
        let msi = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        // A message the guest programmed badly is its own problem; nothing to report.
        let _ = self.vm.signal_msi(msi);
    }
}

/// One queue of one device: what the supervisor polls and runs.
pub struct QueueEvent {
    /// Signalled when the guest notifies the queue.
    pub event: EventFd,
    /// The device that owns it.
    pub device: Arc<Mutex<dyn VirtioDevice>>,
    /// Queue index.
    pub index: usize,
}

/// What bus 0 gives the VM: the queues to run and the vmmci control device's host side.
pub struct PciDevices {
    /// Virtio queues, run by the supervisor when notified.
    pub queues: Vec<QueueEvent>,
    /// OpenBSD's vmmci, for graceful shutdown of guests that bind it.
    pub vmmci: VmmciHandle,
    /// PCI slot of the first virtio-blk device, the BIOS boot disk (spec §5.3 item 3).
    pub first_disk_slot: Option<u8>,
}

/// Build bus 0 with its devices — entropy, the disks, then vmmci, vmd's order (spec §5.5)
/// — and map it on `pio` and `mmio`.
pub fn build(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pio: &mut Bus,
    mmio: &mut Bus,
    disks: Vec<DiskBackend>,
) -> Result<PciDevices, Error> {
    if disks.len() > MAX_DISKS {
        return Err(Error::Device {
            what: "disks",
            reason: format!("{} disks, at most {MAX_DISKS}", disks.len()),
        });
    }
    let dev_err = |reason: String| Error::Device {
        what: "PCI",
        reason,
    };
    let allocator = BarAllocator::new(
        PCI_IO_START..PCI_IO_END,
        ECAM_BASE + ECAM_SIZE..PCI_MMIO_HOLE_END,
        ECAM_BASE..ECAM_BASE + ECAM_SIZE,
    );
    let root = Arc::new(Mutex::new(PciRoot::new(allocator)));
    let msi: Arc<dyn MsiTrigger> = Arc::new(KvmMsi { vm: vm.clone() });
    let mut devices: Vec<Arc<Mutex<dyn VirtioDevice>>> = vec![Arc::new(Mutex::new(Rng::new()))];
    // Index in `devices` of the first disk: its slot is known once it is on the bus.
    let first_disk = (!disks.is_empty()).then_some(devices.len());
    for (i, d) in disks.into_iter().enumerate() {
        devices.push(Arc::new(Mutex::new(Block::new(
            Box::new(d),
            &format!("vmd-disk{i}"),
        ))));
    }
    let (vmmci, vmmci_handle) = Vmmci::new().map_err(Error::host("vmmci eventfd"))?;
    devices.push(Arc::new(Mutex::new(vmmci)));
    let mut queues = Vec::new();
    let mut first_disk_slot = None;
    for (n, device) in devices.into_iter().enumerate() {
        let line = INTX_IRQS[n % INTX_IRQS.len()];
        let intx = EventFd::new(EFD_NONBLOCK).map_err(Error::host("INTx eventfd"))?;
        vm.register_irqfd(&intx, line)
            .map_err(Error::kvm("INTx irqfd"))?;
        let irq = PciIrq {
            intx: Some(intx),
            line: line as u8,
            msi: Some(msi.clone()),
        };
        let transport = VirtioPciDevice::new(device.clone(), mem.clone(), irq)
            .map_err(Error::host("virtio transport"))?;
        for (index, ev) in transport.queue_events().iter().enumerate() {
            queues.push(QueueEvent {
                event: ev.try_clone().map_err(Error::host("queue eventfd"))?,
                device: device.clone(),
                index,
            });
        }
        let slot = crate::lock(&root)
            .add_device(Arc::new(Mutex::new(transport)))
            .map_err(|e| dev_err(e.to_string()))?;
        if Some(n) == first_disk {
            first_disk_slot = Some(slot);
        }
    }
    map_root(&root, pio, mmio, ECAM_BASE).map_err(|e| dev_err(e.to_string()))?;
    Ok(PciDevices {
        queues,
        vmmci: vmmci_handle,
        first_disk_slot,
    })
}
