//! PCI bus 0 of a VM (spec §5.5): the host bridge, virtio entropy, one virtio-blk per disk,
//! their BAR windows on the buses, INTx lines and MSI-X delivered through KVM, and queue
//! notifications through KVM ioeventfds so the guest's notify write never leaves the kernel.

use std::fs::File;
use std::sync::{Arc, Mutex};

use devices::pci::{
    map_root, BarAllocator, BarMove, BarSpace, MsiMessage, MsiTrigger, PciRoot, ECAM_SIZE,
    PCI_IO_END, PCI_IO_START, PCI_MMIO_HOLE_END, PCI_MMIO_HOLE_START,
};
use devices::virtio::blk::Block;
use devices::virtio::net::{Net, TapBackend};
use devices::virtio::rng::Rng;
use devices::virtio::scsi::Scsi;
use devices::virtio::vmmci::{Vmmci, VmmciHandle};
use devices::virtio::{PciIrq, VirtioDevice, VirtioPciDevice};
use devices::Bus;
use kvm_bindings::kvm_msi;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::disk::DiskBackend;
use crate::error::Error;
use crate::platform::BootSlots;

/// ECAM for bus 0 at the bottom of the MMIO hole; memory BARs above it.
pub const ECAM_BASE: u64 = PCI_MMIO_HOLE_START;
// The MCFG and the motherboard resources in the DSDT describe this window.
const _: () = assert!(ECAM_BASE == fwtables::layout::PCI_ECAM_BASE as u64);
const _: () = assert!(ECAM_SIZE == fwtables::layout::PCI_ECAM_LEN as u64);
/// Most disks a VM gets (vmd's `VM_MAX_DISKS_PER_VM`).
pub const MAX_DISKS: usize = 4;
/// Most NICs a VM gets (vmd's `VM_MAX_NICS_PER_VM`).
pub const MAX_NICS: usize = 4;

/// A virtio-net device, kept concrete so the supervisor can feed it frames from its tap.
pub type SharedNet = Arc<Mutex<Net>>;

/// The devices a VM's configuration puts on bus 0 besides the fixed ones.
pub struct BusDevices {
    /// One virtio-blk each.
    pub disks: Vec<DiskBackend>,
    /// One virtio-net each.
    pub nics: Vec<crate::NicConfig>,
    /// The virtio-scsi CD-ROM's ISO image.
    pub cdrom: Option<CdromImage>,
}

/// An ISO image for the CD-ROM and the name errors call it by.
pub struct CdromImage {
    /// Opened read-only.
    pub file: File,
    /// Its path, for messages.
    pub name: String,
}

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

/// A device's INTx line: KVM lowers it when the guest acknowledges (EOI) the interrupt and
/// signals `resample`; the transport then raises it again if a cause is still unread.
pub struct IntxLine {
    /// Readable after each EOI of the line.
    pub resample: EventFd,
    /// The transport whose ISR decides.
    pub transport: Arc<Mutex<VirtioPciDevice>>,
}

/// What bus 0 gives the VM: the queues to run and the vmmci control device's host side.
pub struct PciDevices {
    /// Virtio queues, run by the supervisor when notified.
    pub queues: Vec<QueueEvent>,
    /// INTx lines to re-raise after each EOI.
    pub intx: Vec<IntxLine>,
    /// The virtio-net devices, in NIC order.
    pub nics: Vec<SharedNet>,
    /// OpenBSD's vmmci, for graceful shutdown of guests that bind it.
    pub vmmci: VmmciHandle,
    /// PCI slots of the first virtio-blk device and of the CD-ROM, for the BIOS's boot order
    /// (spec §5.3 item 3).
    pub boot_slots: BootSlots,
    /// Bus 0, for snapshots.
    pub root: Arc<Mutex<PciRoot>>,
    /// Every virtio function and its slot, in slot order, for snapshots.
    pub transports: Vec<(u8, Arc<Mutex<VirtioPciDevice>>)>,
}

/// Build bus 0 with its devices — entropy, the disks, the NICs, the CD-ROM, then vmmci,
/// vmd's order (spec §5.5) — and map it on `pio` and `mmio`.
pub fn build(
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    pio: &mut Bus,
    mmio: &mut Bus,
    wanted: BusDevices,
) -> Result<PciDevices, Error> {
    let BusDevices { disks, nics, cdrom } = wanted;
    if disks.len() > MAX_DISKS {
        return Err(Error::Device {
            what: "disks",
            reason: format!("{} disks, at most {MAX_DISKS}", disks.len()),
        });
    }
    if nics.len() > MAX_NICS {
        return Err(Error::Device {
            what: "network interfaces",
            reason: format!("{} interfaces, at most {MAX_NICS}", nics.len()),
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
    let mut nic_devices = Vec::with_capacity(nics.len());
    for (i, nic) in nics.into_iter().enumerate() {
        let backend = TapBackend::new(nic.tap).map_err(|e| Error::Device {
            what: "network interface",
            reason: format!("tap of interface {i}: {e}"),
        })?;
        let mut net = Net::new(Box::new(backend), nic.mac, nic.locked);
        if let Some(r) = nic.responder {
            net = net.with_local_responder(r);
        }
        let net = Arc::new(Mutex::new(net));
        devices.push(net.clone());
        nic_devices.push(net);
    }
    let cdrom_index = cdrom.is_some().then_some(devices.len());
    if let Some(iso) = cdrom {
        let scsi = Scsi::new(iso.file).map_err(|e| Error::Device {
            what: "cdrom",
            reason: format!("{}: {e}", iso.name),
        })?;
        devices.push(Arc::new(Mutex::new(scsi)));
    }
    let (vmmci, vmmci_handle) = Vmmci::new().map_err(Error::host("vmmci eventfd"))?;
    devices.push(Arc::new(Mutex::new(vmmci)));
    let mut queues = Vec::new();
    let mut intx = Vec::new();
    let mut transports = Vec::new();
    let mut boot_slots = BootSlots::default();
    for (n, device) in devices.into_iter().enumerate() {
        // Slots are taken in creation order after the host bridge: device n lands in n + 1.
        let slot = u8::try_from(n + 1).map_err(|_| dev_err("too many devices".into()))?;
        let line = fwtables::layout::pci_intx_gsi(slot)
            .ok_or_else(|| dev_err(format!("no INTx line for slot {slot}")))?;
        let (raise, resample) = intx_irqfd(vm, line)?;
        let irq = PciIrq {
            intx: Some(raise),
            line,
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
        let transport = Arc::new(Mutex::new(transport));
        let got = crate::lock(&root)
            .add_device(transport.clone())
            .map_err(|e| dev_err(e.to_string()))?;
        if got != slot {
            return Err(dev_err(format!(
                "device {n} went to slot {got}, not {slot}"
            )));
        }
        if Some(n) == first_disk {
            boot_slots.disk = Some(slot);
        }
        if Some(n) == cdrom_index {
            boot_slots.cdrom = Some(slot);
        }
        intx.push(IntxLine {
            resample,
            transport: transport.clone(),
        });
        transports.push((slot, transport));
    }
    let mut notifiers = Notifiers::register(vm, &transports)?;
    crate::lock(&root).set_bar_move_handler(Box::new(move |mv| notifiers.bar_moved(mv)));
    map_root(&root, pio, mmio, ECAM_BASE).map_err(|e| dev_err(e.to_string()))?;
    Ok(PciDevices {
        queues,
        intx,
        nics: nic_devices,
        vmmci: vmmci_handle,
        boot_slots,
        root,
        transports,
    })
}

/// A level-triggered INTx line on `gsi`: the eventfd that raises it and the one KVM signals
/// when the guest's EOI lowers it.
fn intx_irqfd(vm: &VmFd, gsi: u8) -> Result<(EventFd, EventFd), Error> {
    let raise = EventFd::new(EFD_NONBLOCK).map_err(Error::host("INTx eventfd"))?;
    let resample = EventFd::new(EFD_NONBLOCK).map_err(Error::host("INTx resample eventfd"))?;
    vm.register_irqfd_with_resample(&raise, &resample, u32::from(gsi))
        .map_err(Error::kvm("INTx irqfd"))?;
    Ok((raise, resample))
}

/// One queue notify register bound to a KVM ioeventfd.
struct Notifier {
    slot: u8,
    space: BarSpace,
    addr: u64,
    datamatch: u16,
    event: EventFd,
    /// KVM accepted it; otherwise the write exits and the transport signals the event.
    bound: bool,
}

/// Every queue's notify registers as ioeventfds, moved when the guest moves a BAR.
struct Notifiers {
    vm: Arc<VmFd>,
    list: Vec<Notifier>,
}

impl Notifiers {
    fn register(
        vm: &Arc<VmFd>,
        transports: &[(u8, Arc<Mutex<VirtioPciDevice>>)],
    ) -> Result<Self, Error> {
        let mut list = Vec::new();
        for (slot, t) in transports {
            let t = crate::lock(t);
            for n in t.notify_addresses() {
                let event = t.queue_events()[usize::from(n.queue)]
                    .try_clone()
                    .map_err(Error::host("queue eventfd"))?;
                list.push(Notifier {
                    slot: *slot,
                    space: n.space,
                    addr: n.addr,
                    datamatch: n.datamatch as u16,
                    event,
                    bound: false,
                });
            }
        }
        let mut this = Notifiers {
            vm: vm.clone(),
            list,
        };
        for i in 0..this.list.len() {
            this.bind(i);
        }
        Ok(this)
    }

    fn address(n: &Notifier) -> IoEventAddress {
        match n.space {
            BarSpace::Io => IoEventAddress::Pio(n.addr),
            BarSpace::Memory => IoEventAddress::Mmio(n.addr),
        }
    }

    /// Bind notifier `i`. A refusal (an address another BAR's notifier holds while the
    /// guest sizes BARs) only costs speed: the write then exits and the transport signals
    /// the same event.
    fn bind(&mut self, i: usize) {
        let n = &mut self.list[i];
        n.bound = self
            .vm
            .register_ioevent(&n.event, &Self::address(n), n.datamatch)
            .is_ok();
    }

    fn unbind(&mut self, i: usize) {
        let n = &mut self.list[i];
        if n.bound {
            let _ = self
                .vm
                .unregister_ioevent(&n.event, &Self::address(n), n.datamatch);
            n.bound = false;
        }
    }

    /// The guest moved a BAR of `mv.slot`: the notify registers inside it follow.
    fn bar_moved(&mut self, mv: &BarMove) {
        let old = mv.old..mv.old.saturating_add(mv.size);
        for i in 0..self.list.len() {
            let n = &self.list[i];
            if n.slot != mv.slot || n.space != mv.space || !old.contains(&n.addr) {
                continue;
            }
            let moved = n.addr - mv.old + mv.new;
            self.unbind(i);
            self.list[i].addr = moved;
            self.bind(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    /// KVM refuses a second ioeventfd on an address and datamatch already bound, so a probe
    /// registration tells whether an address is bound.
    fn bound(vm: &VmFd, addr: u64) -> bool {
        let probe = EventFd::new(0).unwrap();
        let free = vm
            .register_ioevent(&probe, &IoEventAddress::Pio(addr), 0u16)
            .is_ok();
        if free {
            vm.unregister_ioevent(&probe, &IoEventAddress::Pio(addr), 0u16)
                .unwrap();
        }
        !free
    }

    #[test]
    fn notify_ioeventfds_follow_a_moved_bar() {
        let Ok(kvm) = Kvm::new() else {
            println!("SKIPPED: no /dev/kvm");
            return;
        };
        let vm = Arc::new(kvm.create_vm().unwrap());
        let notifier = |slot, addr| Notifier {
            slot,
            space: BarSpace::Io,
            addr,
            datamatch: 0,
            event: EventFd::new(0).unwrap(),
            bound: false,
        };
        let mut n = Notifiers {
            vm: vm.clone(),
            list: vec![notifier(1, 0x1010), notifier(2, 0x2010)],
        };
        n.bind(0);
        n.bind(1);
        assert!(bound(&vm, 0x1010) && bound(&vm, 0x2010));
        n.bar_moved(&BarMove {
            slot: 1,
            bar: 0,
            space: BarSpace::Io,
            old: 0x1000,
            new: 0xc000,
            size: 0x40,
        });
        assert_eq!(n.list[0].addr, 0xc010);
        assert!(!bound(&vm, 0x1010), "the old address is released");
        assert!(bound(&vm, 0xc010), "the new address is bound");
        assert!(bound(&vm, 0x2010), "another slot's notifier stays");
        // A memory BAR of slot 2 moving does not touch its port notifier.
        n.bar_moved(&BarMove {
            slot: 2,
            bar: 1,
            space: BarSpace::Memory,
            old: 0x2000,
            new: 0x9000,
            size: 0x1000,
        });
        assert_eq!(n.list[1].addr, 0x2010);
    }
}
