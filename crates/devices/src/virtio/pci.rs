//! The transitional virtio-pci transport (virtio 1.x §4.1, legacy §4.1.4.8).
//!
//! BAR layout of every device:
//! * BAR 0, I/O, [`LEGACY_BAR_SIZE`]: the legacy register block (features, queue PFN, queue
//!   size/select/notify, status, ISR, MSI-X vectors when enabled) followed by the device
//!   configuration. OpenBSD 6.9 and SeaBIOS use it.
//! * BAR 1, memory, [`MODERN_BAR_SIZE`]: the modern structures the vendor capabilities point
//!   at: common configuration at 0, ISR at [`ISR_OFFSET`], device configuration at
//!   [`DEVICE_CFG_OFFSET`], notifications at [`NOTIFY_OFFSET`] + 4 × queue. Linux uses it.
//! * BAR 2, memory, [`MSIX_BAR_SIZE`]: MSI-X table at 0 and PBA at [`MSIX_PBA_OFFSET`], when
//!   the caller provides an MSI trigger.
//!
//! Legacy-only devices (vmmci) have BAR 0 alone.
//!
//! Queue notifications (a write to the notify register) are turned into a write to the
//! queue's [`EventFd`]: the hypervisor registers the same eventfd as a KVM ioeventfd at the
//! [`NotifyAddress`] so that the fast path never traps, and runs the device's
//! [`VirtioDevice::process_queue`] when it fires.

mod state;

pub use state::{QueueState, TransportState};

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    InterruptKind, VirtioDevice, VirtioInterrupt, STATUS_DRIVER_OK, STATUS_FAILED,
    STATUS_NEEDS_RESET, VIRTIO_F_RING_EVENT_IDX,
};
use crate::pci::config::{BarSpace, ConfigSpace, COMMAND_INTX_DISABLE};
use crate::pci::msix::{MsiTrigger, Msix};
use crate::pci::PciDevice;

/// Index of the legacy I/O BAR.
pub const LEGACY_BAR: usize = 0;
/// Index of the modern memory BAR.
pub const MODERN_BAR: usize = 1;
/// Index of the MSI-X memory BAR.
pub const MSIX_BAR: usize = 2;
/// One 4 KiB slot of port space, as vmd gives every virtio device (spec §5.4).
pub const LEGACY_BAR_SIZE: u64 = 0x1000;
/// Four 4 KiB pages: common config, ISR, device config, notifications.
pub const MODERN_BAR_SIZE: u64 = 0x4000;
/// Offset of the ISR byte in the modern BAR.
pub const ISR_OFFSET: u64 = 0x1000;
/// Offset of the device configuration in the modern BAR.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification area in the modern BAR.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notify registers (notify_off_multiplier).
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// Size of each modern region the capabilities describe.
const REGION_SIZE: u64 = 0x1000;
/// MSI-X table and PBA in one page each.
pub const MSIX_BAR_SIZE: u64 = 0x2000;
/// Offset of the PBA in the MSI-X BAR.
pub const MSIX_PBA_OFFSET: u64 = 0x1000;
/// "No vector" for config_msix_vector / queue_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;
/// Interrupt pin INTA#.
const INTA: u8 = 1;
/// Legacy rings align the used ring to 4 KiB (virtio 0.9 VIRTIO_PCI_VRING_ALIGN).
const LEGACY_VRING_ALIGN: u64 = 4096;
/// Legacy queue addresses are written as page frame numbers.
const LEGACY_PFN_SHIFT: u32 = 12;

// Legacy register offsets in BAR 0.
const L_DEVICE_FEATURES: u64 = 0;
const L_DRIVER_FEATURES: u64 = 4;
const L_QUEUE_PFN: u64 = 8;
const L_QUEUE_SIZE: u64 = 12;
const L_QUEUE_SELECT: u64 = 14;
const L_QUEUE_NOTIFY: u64 = 16;
const L_STATUS: u64 = 18;
const L_ISR: u64 = 19;
const L_CONFIG_VECTOR: u64 = 20;
const L_QUEUE_VECTOR: u64 = 22;
/// Device configuration starts here, or at [`L_CONFIG_MSIX`] while MSI-X is enabled.
const L_CONFIG: u64 = 20;
const L_CONFIG_MSIX: u64 = 24;

// Modern common configuration offsets (virtio 1.x §4.1.4.3).
const C_DEVICE_FEATURE_SELECT: u64 = 0x00;
const C_DEVICE_FEATURE: u64 = 0x04;
const C_DRIVER_FEATURE_SELECT: u64 = 0x08;
const C_DRIVER_FEATURE: u64 = 0x0c;
const C_CONFIG_VECTOR: u64 = 0x10;
const C_NUM_QUEUES: u64 = 0x12;
const C_STATUS: u64 = 0x14;
const C_CONFIG_GENERATION: u64 = 0x15;
const C_QUEUE_SELECT: u64 = 0x16;
const C_QUEUE_SIZE: u64 = 0x18;
const C_QUEUE_VECTOR: u64 = 0x1a;
const C_QUEUE_ENABLE: u64 = 0x1c;
const C_QUEUE_NOTIFY_OFF: u64 = 0x1e;
const C_QUEUE_DESC: u64 = 0x20;
const C_QUEUE_DRIVER: u64 = 0x28;
const C_QUEUE_DEVICE: u64 = 0x30;
/// Bytes of the common configuration structure.
const COMMON_CFG_LEN: usize = 0x38;

/// ISR bit: a queue has used buffers.
const ISR_QUEUE: u8 = 1;
/// ISR bit: configuration changed.
const ISR_CONFIG: u8 = 2;

// Virtio PCI capability (virtio 1.x §4.1.4).
const PCI_CAP_ID_VENDOR: u8 = 0x09;
const CAP_COMMON_CFG: u8 = 1;
const CAP_NOTIFY_CFG: u8 = 2;
const CAP_ISR_CFG: u8 = 3;
const CAP_DEVICE_CFG: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
/// Bytes of the pci_cfg_data window after the PCI_CFG capability header.
const PCI_CFG_DATA_LEN: usize = 4;
const VIRTIO_CAP_LEN: usize = 16;
const NOTIFY_CAP_LEN: usize = 20;

/// How the device's interrupts reach the guest.
pub struct PciIrq {
    /// INTx: the hypervisor binds it as a KVM irqfd with a resample fd on the device's GSI
    /// (the line is level-triggered; call [`VirtioPciDevice::intx_resample`] when the
    /// resample fd fires).
    pub intx: Option<EventFd>,
    /// The interrupt line number written into configuration space (the GSI).
    pub line: u8,
    /// MSI-X delivery; with `None` the device has no MSI-X capability.
    pub msi: Option<Arc<dyn MsiTrigger>>,
}

/// Where a queue's notify register is, for a KVM ioeventfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyAddress {
    /// Queue index.
    pub queue: u16,
    /// Port (legacy) or memory (modern) space.
    pub space: BarSpace,
    /// Guest address of the register.
    pub addr: u64,
    /// Access width drivers use (2 bytes: the queue index).
    pub len: u8,
    /// The value drivers write (the queue index).
    pub datamatch: u64,
}

#[derive(Debug, Clone, Copy)]
struct QueueConfig {
    max: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max: u16) -> Self {
        QueueConfig {
            max,
            size: max,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// State the interrupt path shares with the device's worker thread.
struct Interrupts {
    isr: AtomicU8,
    intx: Option<EventFd>,
    msix: Option<Mutex<Msix>>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    needs_reset: AtomicBool,
    generation: AtomicU8,
    /// COMMAND.INTX_DISABLE as the guest last wrote it.
    intx_disabled: AtomicBool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Interrupts {
    fn msix_enabled(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| lock(m).enabled())
    }

    fn pulse_intx(&self) {
        if self.intx_disabled.load(Ordering::SeqCst) {
            return;
        }
        if let Some(fd) = &self.intx {
            // A full counter still leaves the fd readable: nothing is lost.
            let _ = fd.write(1);
        }
    }
}

impl VirtioInterrupt for Interrupts {
    fn trigger(&self, kind: InterruptKind) {
        if kind == InterruptKind::Config {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(m) = &self.msix {
            let mut m = lock(m);
            if m.enabled() {
                let v = match kind {
                    InterruptKind::Config => self.config_vector.load(Ordering::SeqCst),
                    InterruptKind::Queue(q) => self
                        .queue_vectors
                        .get(usize::from(q))
                        .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst)),
                };
                if v != NO_VECTOR {
                    m.signal(v);
                }
                return;
            }
        }
        let bit = match kind {
            InterruptKind::Config => ISR_CONFIG,
            InterruptKind::Queue(_) => ISR_QUEUE,
        };
        self.isr.fetch_or(bit, Ordering::SeqCst);
        self.pulse_intx();
    }

    fn needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.trigger(InterruptKind::Config);
    }
}

/// A virtio device on PCI.
pub struct VirtioPciDevice {
    config: ConfigSpace,
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    irq: Arc<Interrupts>,
    legacy_only: bool,
    device_features: u64,
    driver_features: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    queue_select: u16,
    status: u8,
    queues: Vec<QueueConfig>,
    queue_events: Vec<EventFd>,
    activated: bool,
    /// Offset of the VIRTIO_PCI_CAP_PCI_CFG capability.
    pci_cfg_cap: Option<usize>,
}

fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

fn virtio_cap(cfg_type: u8, bar: u8, offset: u32, length: u32, extra: Option<u32>) -> Vec<u8> {
    let len = if extra.is_some() {
        NOTIFY_CAP_LEN
    } else {
        VIRTIO_CAP_LEN
    };
    let mut cap = vec![0u8; len];
    cap[0] = PCI_CAP_ID_VENDOR;
    cap[2] = len as u8;
    cap[3] = cfg_type;
    cap[4] = bar;
    cap[8..12].copy_from_slice(&offset.to_le_bytes());
    cap[12..16].copy_from_slice(&length.to_le_bytes());
    if let Some(x) = extra {
        cap[16..20].copy_from_slice(&x.to_le_bytes());
    }
    cap
}

impl VirtioPciDevice {
    /// Present `device` on PCI, its queues in `mem`, interrupting through `irq`.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        irq: PciIrq,
    ) -> std::io::Result<Self> {
        let (ids, legacy_only, sizes, features) = {
            let d = lock(&device);
            (
                d.pci_ids(),
                d.legacy_only(),
                d.queue_max_sizes().to_vec(),
                d.features(),
            )
        };
        let mut config = ConfigSpace::new(ids);
        config.add_bar(LEGACY_BAR, BarSpace::Io, LEGACY_BAR_SIZE);
        config.set_interrupt(INTA, irq.line);
        let nq = sizes.len();
        let mut pci_cfg_cap = None;
        let msix = match (&irq.msi, legacy_only) {
            (Some(t), false) => {
                // One vector per queue plus one for configuration changes.
                let mut m = Msix::new(nq as u16 + 1, t.clone());
                config.add_bar(MSIX_BAR, BarSpace::Memory, MSIX_BAR_SIZE);
                m.install(&mut config, MSIX_BAR as u8, 0, MSIX_PBA_OFFSET as u32);
                Some(Mutex::new(m))
            }
            _ => None,
        };
        if !legacy_only {
            config.add_bar(MODERN_BAR, BarSpace::Memory, MODERN_BAR_SIZE);
            let bar = MODERN_BAR as u8;
            let region = REGION_SIZE as u32;
            for cap in [
                virtio_cap(CAP_COMMON_CFG, bar, 0, COMMON_CFG_LEN as u32, None),
                virtio_cap(CAP_ISR_CFG, bar, ISR_OFFSET as u32, 1, None),
                virtio_cap(CAP_DEVICE_CFG, bar, DEVICE_CFG_OFFSET as u32, region, None),
                virtio_cap(
                    CAP_NOTIFY_CFG,
                    bar,
                    NOTIFY_OFFSET as u32,
                    region,
                    Some(NOTIFY_MULTIPLIER),
                ),
            ] {
                config.add_capability(&cap, &[]);
            }
            // VIRTIO_PCI_CAP_PCI_CFG: BAR access through configuration space, which SeaBIOS
            // needs in 16-bit mode where the memory BAR is out of reach. The guest writes
            // bar, offset and length, then reads or writes pci_cfg_data.
            let cap = virtio_cap(CAP_PCI_CFG, 0, 0, 0, Some(0));
            let mut wmask = [0u8; NOTIFY_CAP_LEN];
            wmask[4] = 0xff;
            wmask[8..16].fill(0xff);
            pci_cfg_cap = Some(config.add_capability(&cap, &wmask));
        }
        let queue_events = (0..nq)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let device_features = if legacy_only {
            // The legacy interface has only 32 feature bits.
            features & u64::from(u32::MAX)
        } else {
            features
        };
        Ok(VirtioPciDevice {
            config,
            device,
            mem,
            irq: Arc::new(Interrupts {
                isr: AtomicU8::new(0),
                intx: irq.intx,
                msix,
                config_vector: AtomicU16::new(NO_VECTOR),
                queue_vectors: (0..nq).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
                needs_reset: AtomicBool::new(false),
                generation: AtomicU8::new(0),
                intx_disabled: AtomicBool::new(false),
            }),
            legacy_only,
            device_features,
            driver_features: 0,
            device_feature_select: 0,
            driver_feature_select: 0,
            queue_select: 0,
            status: 0,
            queues: sizes.into_iter().map(QueueConfig::new).collect(),
            queue_events,
            activated: false,
            pci_cfg_cap,
        })
    }

    /// If `[offset, offset + len)` touches pci_cfg_data: the BAR, the offset in it and the
    /// config-space range of the data window that is accessed (the length the driver set).
    fn pci_cfg_window(
        &self,
        offset: usize,
        len: usize,
    ) -> Option<(usize, u64, std::ops::Range<usize>)> {
        let cap = self.pci_cfg_cap?;
        let data = cap + VIRTIO_CAP_LEN;
        if offset >= data + PCI_CFG_DATA_LEN || offset + len <= data {
            return None;
        }
        let bar = usize::from(self.config.u16_at(cap + 4) as u8);
        let bar_off = u64::from(self.config.u32_at(cap + 8));
        let n = (self.config.u32_at(cap + 12) as usize).min(PCI_CFG_DATA_LEN);
        Some((bar, bar_off, data..data + n))
    }

    /// The device behind the transport, for the thread that runs its queues.
    pub fn device(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        self.device.clone()
    }

    /// One eventfd per queue, signalled on every notify the transport sees. Register each as
    /// a KVM ioeventfd at [`VirtioPciDevice::notify_addresses`] and call
    /// [`VirtioDevice::process_queue`] when it becomes readable.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The notify registers of every queue at the BARs' current addresses: the legacy one in
    /// port space and, unless legacy-only, the modern one in memory space.
    pub fn notify_addresses(&self) -> Vec<NotifyAddress> {
        let mut out = Vec::new();
        for q in 0..self.queues.len() as u16 {
            if let Some((space, base, _)) = self.config.bar(LEGACY_BAR) {
                out.push(NotifyAddress {
                    queue: q,
                    space,
                    addr: base + L_QUEUE_NOTIFY,
                    len: 2,
                    datamatch: u64::from(q),
                });
            }
            if let Some((space, base, _)) = self.config.bar(MODERN_BAR) {
                out.push(NotifyAddress {
                    queue: q,
                    space,
                    addr: base + NOTIFY_OFFSET + u64::from(q) * u64::from(NOTIFY_MULTIPLIER),
                    len: 2,
                    datamatch: u64::from(q),
                });
            }
        }
        out
    }

    /// KVM's resample fd fired (the guest EOI'd the level-triggered INTx): assert the line
    /// again if the ISR still holds an unread cause.
    pub fn intx_resample(&self) {
        if self.irq.isr.load(Ordering::SeqCst) != 0 && !self.irq.msix_enabled() {
            self.irq.pulse_intx();
        }
    }

    /// The driver status register as the guest reads it.
    pub fn status(&self) -> u8 {
        let mut s = self.status;
        if self.irq.needs_reset.load(Ordering::SeqCst) {
            s |= STATUS_NEEDS_RESET;
        }
        s
    }

    fn selected(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn notify(&self, queue: u64) {
        if let Some(fd) = usize::try_from(queue)
            .ok()
            .and_then(|q| self.queue_events.get(q))
        {
            let _ = fd.write(1);
        }
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        self.status = 0;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max);
        }
        self.irq.isr.store(0, Ordering::SeqCst);
        self.irq.needs_reset.store(false, Ordering::SeqCst);
        self.irq.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        for v in &self.irq.queue_vectors {
            v.store(NO_VECTOR, Ordering::SeqCst);
        }
        self.activated = false;
    }

    fn set_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET is the device's to set.
        self.status = v & !STATUS_NEEDS_RESET;
        if v & STATUS_DRIVER_OK != 0 && v & STATUS_FAILED == 0 && !self.activated {
            self.activate(false);
        }
    }

    /// Hand the enabled queues to the device. `resume`: the rings were in use before (a
    /// restored snapshot), so each queue takes up at the index of its used ring.
    fn activate(&mut self, resume: bool) {
        let event_idx = self.driver_features & VIRTIO_F_RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for c in &self.queues {
            let Ok(mut q) = Queue::new(c.max) else {
                self.irq.needs_reset();
                return;
            };
            if c.ready {
                let ok = q.try_set_size(c.size).is_ok()
                    && q.try_set_desc_table_address(GuestAddress(c.desc)).is_ok()
                    && q.try_set_avail_ring_address(GuestAddress(c.avail)).is_ok()
                    && q.try_set_used_ring_address(GuestAddress(c.used)).is_ok();
                q.set_ready(true);
                q.set_event_idx(event_idx);
                if !ok || !q.is_valid(&self.mem) {
                    tracing::warn!("virtio: driver enabled a queue outside guest memory");
                    self.irq.needs_reset();
                    return;
                }
                if resume {
                    // A valid queue's used ring lies in guest memory, so this read succeeds.
                    let used = q.used_idx(&self.mem, Ordering::Acquire).map_or(0, |u| u.0);
                    q.set_next_avail(used);
                    q.set_next_used(used);
                }
            }
            queues.push(q);
        }
        self.activated = true;
        let irq: Arc<dyn VirtioInterrupt> = self.irq.clone();
        lock(&self.device).activate(self.mem.clone(), irq, queues, self.driver_features);
    }

    // Legacy interface.

    fn legacy_config_offset(&self) -> u64 {
        if self.irq.msix_enabled() {
            L_CONFIG_MSIX
        } else {
            L_CONFIG
        }
    }

    fn legacy_read(&mut self, offset: u64, data: &mut [u8]) {
        let cfg = self.legacy_config_offset();
        if offset >= cfg {
            lock(&self.device).read_config(offset - cfg, data);
            return;
        }
        let q = self.queues.get(usize::from(self.queue_select)).copied();
        let mut regs = [0u8; L_CONFIG_MSIX as usize];
        let mut put = |reg: u64, bytes: &[u8]| {
            regs[reg as usize..reg as usize + bytes.len()].copy_from_slice(bytes)
        };
        put(
            L_DEVICE_FEATURES,
            &(self.device_features as u32).to_le_bytes(),
        );
        put(
            L_DRIVER_FEATURES,
            &(self.driver_features as u32).to_le_bytes(),
        );
        let pfn = q
            .filter(|q| q.ready)
            .map_or(0, |q| (q.desc >> LEGACY_PFN_SHIFT) as u32);
        put(L_QUEUE_PFN, &pfn.to_le_bytes());
        put(L_QUEUE_SIZE, &q.map_or(0, |q| q.max).to_le_bytes());
        put(L_QUEUE_SELECT, &self.queue_select.to_le_bytes());
        put(L_STATUS, &[self.status()]);
        let covers = |reg: u64| offset <= reg && reg < offset + data.len() as u64;
        if covers(L_ISR) {
            // Reading the ISR acknowledges it (the level INTx drops with it).
            put(L_ISR, &[self.irq.isr.swap(0, Ordering::SeqCst)]);
        }
        let cv = self.irq.config_vector.load(Ordering::SeqCst);
        put(L_CONFIG_VECTOR, &cv.to_le_bytes());
        let qv = self
            .irq
            .queue_vectors
            .get(usize::from(self.queue_select))
            .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst));
        put(L_QUEUE_VECTOR, &qv.to_le_bytes());
        super::copy_window(&regs[..cfg as usize], offset, data, 0xff);
    }

    fn legacy_write(&mut self, offset: u64, data: &[u8]) {
        let cfg = self.legacy_config_offset();
        if offset >= cfg {
            lock(&self.device).write_config(offset - cfg, data);
            return;
        }
        let v = le_value(data);
        match offset {
            L_DRIVER_FEATURES => {
                self.driver_features = v & self.device_features & u64::from(u32::MAX);
            }
            L_QUEUE_PFN => {
                if let Some(q) = self.selected() {
                    if v == 0 {
                        *q = QueueConfig::new(q.max);
                    } else {
                        // The legacy layout: descriptors, then the available ring, then the
                        // used ring on the next 4 KiB boundary; the size is the maximum.
                        let size = u64::from(q.max);
                        q.size = q.max;
                        q.desc = (v & u64::from(u32::MAX)) << LEGACY_PFN_SHIFT;
                        q.avail = q.desc + 16 * size;
                        let avail_end = q.avail + 6 + 2 * size;
                        q.used = avail_end.next_multiple_of(LEGACY_VRING_ALIGN);
                        q.ready = true;
                    }
                }
            }
            L_QUEUE_SELECT => self.queue_select = v as u16,
            L_QUEUE_NOTIFY => self.notify(v & 0xffff),
            L_STATUS => self.set_status(v as u8),
            L_CONFIG_VECTOR if cfg == L_CONFIG_MSIX => self.set_config_vector(v as u16),
            L_QUEUE_VECTOR if cfg == L_CONFIG_MSIX => self.set_queue_vector(v as u16),
            // Device features, queue size and ISR are read-only.
            _ => {}
        }
    }

    fn set_config_vector(&self, v: u16) {
        self.irq.config_vector.store(v, Ordering::SeqCst);
    }

    fn set_queue_vector(&self, v: u16) {
        if let Some(q) = self.irq.queue_vectors.get(usize::from(self.queue_select)) {
            q.store(v, Ordering::SeqCst);
        }
    }

    // Modern interface.

    fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let mut r = [0u8; COMMON_CFG_LEN];
        let put32 = |r: &mut [u8; COMMON_CFG_LEN], o: u64, v: u32| {
            r[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes())
        };
        let put16 = |r: &mut [u8; COMMON_CFG_LEN], o: u64, v: u16| {
            r[o as usize..o as usize + 2].copy_from_slice(&v.to_le_bytes())
        };
        put32(&mut r, C_DEVICE_FEATURE_SELECT, self.device_feature_select);
        let page = match self.device_feature_select {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        };
        put32(&mut r, C_DEVICE_FEATURE, page);
        put32(&mut r, C_DRIVER_FEATURE_SELECT, self.driver_feature_select);
        let page = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        put32(&mut r, C_DRIVER_FEATURE, page);
        put16(
            &mut r,
            C_CONFIG_VECTOR,
            self.irq.config_vector.load(Ordering::SeqCst),
        );
        put16(&mut r, C_NUM_QUEUES, self.queues.len() as u16);
        r[C_STATUS as usize] = self.status();
        r[C_CONFIG_GENERATION as usize] = self.irq.generation.load(Ordering::SeqCst);
        put16(&mut r, C_QUEUE_SELECT, self.queue_select);
        let qs = usize::from(self.queue_select);
        if let Some(q) = self.queues.get(qs).copied() {
            put16(&mut r, C_QUEUE_SIZE, q.size);
            let v = self.irq.queue_vectors[qs].load(Ordering::SeqCst);
            put16(&mut r, C_QUEUE_VECTOR, v);
            put16(&mut r, C_QUEUE_ENABLE, u16::from(q.ready));
            put16(&mut r, C_QUEUE_NOTIFY_OFF, self.queue_select);
            for (o, a) in [
                (C_QUEUE_DESC, q.desc),
                (C_QUEUE_DRIVER, q.avail),
                (C_QUEUE_DEVICE, q.used),
            ] {
                r[o as usize..o as usize + 8].copy_from_slice(&a.to_le_bytes());
            }
        }
        super::copy_window(&r, offset, data, 0xff);
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let v = le_value(data);
        match offset {
            C_DEVICE_FEATURE_SELECT => self.device_feature_select = v as u32,
            C_DRIVER_FEATURE_SELECT => self.driver_feature_select = v as u32,
            C_DRIVER_FEATURE if self.status & STATUS_DRIVER_OK == 0 => {
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let page = (u64::from(u32::MAX) << shift) & self.device_features;
                self.driver_features =
                    (self.driver_features & !page) | ((v & 0xffff_ffff) << shift & page);
            }
            C_CONFIG_VECTOR => self.set_config_vector(v as u16),
            C_STATUS => self.set_status(v as u8),
            C_QUEUE_SELECT => self.queue_select = v as u16,
            C_QUEUE_VECTOR => self.set_queue_vector(v as u16),
            _ => self.queue_write(offset, data.len(), v),
        }
    }

    /// Writes to the selected queue's fields; ignored once the queue is enabled (virtio 1.x
    /// §4.1.4.3.2: the driver must not change an enabled queue).
    fn queue_write(&mut self, offset: u64, len: usize, v: u64) {
        let Some(q) = self.selected() else { return };
        if q.ready {
            return;
        }
        let set_addr = |field: &mut u64, base: u64| match (offset - base, len) {
            (0, 8) => *field = v,
            (0, 4) => *field = (*field & !u64::from(u32::MAX)) | (v & u64::from(u32::MAX)),
            (4, 4) => *field = (*field & u64::from(u32::MAX)) | (v << 32),
            _ => {}
        };
        match offset {
            C_QUEUE_SIZE => {
                let s = v as u16;
                if s.is_power_of_two() && s <= q.max {
                    q.size = s;
                }
            }
            C_QUEUE_ENABLE => q.ready = v == 1,
            o if (C_QUEUE_DESC..C_QUEUE_DRIVER).contains(&o) => set_addr(&mut q.desc, C_QUEUE_DESC),
            o if (C_QUEUE_DRIVER..C_QUEUE_DEVICE).contains(&o) => {
                set_addr(&mut q.avail, C_QUEUE_DRIVER)
            }
            o if (C_QUEUE_DEVICE..COMMON_CFG_LEN as u64).contains(&o) => {
                set_addr(&mut q.used, C_QUEUE_DEVICE)
            }
            _ => {}
        }
    }

    fn modern_read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            o if o < REGION_SIZE => self.common_read(o, data),
            o if o < ISR_OFFSET + REGION_SIZE => {
                data.fill(0);
                if o == ISR_OFFSET {
                    data[0] = self.irq.isr.swap(0, Ordering::SeqCst);
                }
            }
            o if o < DEVICE_CFG_OFFSET + REGION_SIZE => {
                lock(&self.device).read_config(o - DEVICE_CFG_OFFSET, data)
            }
            // The notification area reads as zero.
            _ => data.fill(0),
        }
    }

    fn modern_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < REGION_SIZE => self.common_write(o, data),
            o if o < ISR_OFFSET + REGION_SIZE => {}
            o if o < DEVICE_CFG_OFFSET + REGION_SIZE => {
                lock(&self.device).write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o => self.notify((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)),
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
        if let Some(window) = self.pci_cfg_window(offset, data.len()) {
            let (bar, bar_off, range) = window;
            let mut bytes = [0u8; PCI_CFG_DATA_LEN];
            self.bar_read(bar, bar_off, &mut bytes[..range.len()]);
            for (i, b) in range.clone().enumerate() {
                if let Some(d) = b.checked_sub(offset).and_then(|o| data.get_mut(o)) {
                    *d = bytes[i];
                }
            }
        }
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        // pci_cfg_data is a window, not storage: a write there goes to the BAR.
        if let Some((bar, bar_off, range)) = self.pci_cfg_window(offset, data.len()) {
            if range.start == offset && range.len() == data.len() {
                self.bar_write(bar, bar_off, data);
            }
            return;
        }
        self.config.write(offset, data);
        let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
        self.irq.intx_disabled.store(disabled, Ordering::SeqCst);
        if let Some(m) = &self.irq.msix {
            lock(m).update_from_config(&self.config);
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        match bar {
            LEGACY_BAR => self.legacy_read(offset, data),
            MODERN_BAR if !self.legacy_only => self.modern_read(offset, data),
            MSIX_BAR => match &self.irq.msix {
                Some(m) if offset < MSIX_PBA_OFFSET => lock(m).table_read(offset, data),
                Some(m) => lock(m).pba_read(offset - MSIX_PBA_OFFSET, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match bar {
            LEGACY_BAR => self.legacy_write(offset, data),
            MODERN_BAR if !self.legacy_only => self.modern_write(offset, data),
            MSIX_BAR if offset < MSIX_PBA_OFFSET => {
                if let Some(m) = &self.irq.msix {
                    lock(m).table_write(offset, data);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::msix::MsiMessage;
    use crate::pci::{
        BarAllocator, PciRoot, ECAM_SIZE, PCI_IO_END, PCI_IO_START, PCI_MMIO_HOLE_END,
        PCI_MMIO_HOLE_START,
    };
    use crate::testutil::XorShift;
    use crate::virtio::queue::testing::memory;
    use crate::virtio::rng::Rng;
    use crate::virtio::{
        STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, VIRTIO_F_VERSION_1,
    };
    use crate::Bus;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::split::Descriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;

    const BUF: u64 = 0x10_0000;

    #[derive(Default)]
    pub(crate) struct MsiLog(pub Mutex<Vec<(u16, MsiMessage)>>);
    impl MsiTrigger for MsiLog {
        fn trigger(&self, vector: u16, msg: MsiMessage) {
            self.0.lock().unwrap().push((vector, msg));
        }
    }

    fn rng_transport(
        mem: &GuestMemoryMmap,
        msi: Option<Arc<MsiLog>>,
    ) -> (VirtioPciDevice, EventFd) {
        let intx = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = VirtioPciDevice::new(
            Arc::new(Mutex::new(Rng::new())),
            mem.clone(),
            PciIrq {
                intx: Some(intx.try_clone().unwrap()),
                line: 10,
                msi: msi.map(|m| m as Arc<dyn MsiTrigger>),
            },
        )
        .unwrap();
        (dev, intx)
    }

    /// The guest side of the bus: PCI root, config ports and BAR windows.
    struct Guest {
        pio: Bus,
        mmio: Bus,
    }

    fn guest_with(dev: Arc<Mutex<VirtioPciDevice>>) -> Guest {
        let ecam = PCI_MMIO_HOLE_START..PCI_MMIO_HOLE_START + ECAM_SIZE;
        let alloc = BarAllocator::new(
            PCI_IO_START..PCI_IO_END,
            PCI_MMIO_HOLE_START..PCI_MMIO_HOLE_END,
            ecam.clone(),
        );
        let root = Arc::new(Mutex::new(PciRoot::new(alloc)));
        assert_eq!(root.lock().unwrap().add_device(dev), Ok(1));
        let (mut pio, mut mmio) = (Bus::new(), Bus::new());
        crate::pci::map_root(&root, &mut pio, &mut mmio, ecam.start).unwrap();
        Guest { pio, mmio }
    }

    impl Guest {
        fn cfg32(&self, reg: u32) -> u32 {
            self.pio
                .write(0xcf8, &(0x8000_0000u32 | 1 << 11 | reg).to_le_bytes());
            let mut d = [0u8; 4];
            self.pio.read(0xcfc, &mut d);
            u32::from_le_bytes(d)
        }
        fn cfg8(&self, reg: u32) -> u8 {
            (self.cfg32(reg & !3) >> (8 * (reg & 3))) as u8
        }
        fn cfg_write16(&self, reg: u32, v: u16) {
            self.pio.write(
                0xcf8,
                &(0x8000_0000u32 | 1 << 11 | (reg & !3)).to_le_bytes(),
            );
            self.pio.write(0xcfc + u64::from(reg & 3), &v.to_le_bytes());
        }
        fn r(&self, bus: &Bus, addr: u64, n: usize) -> u64 {
            let mut d = [0u8; 8];
            bus.read(addr, &mut d[..n]);
            u64::from_le_bytes(d)
        }
        fn w(&self, bus: &Bus, addr: u64, n: usize, v: u64) {
            bus.write(addr, &v.to_le_bytes()[..n]);
        }
        /// Walk the capability list: (cfg_type or 0 for non-virtio, id, offset).
        fn caps(&self) -> Vec<(u8, u8, u32)> {
            let mut out = vec![];
            let mut p = u32::from(self.cfg8(0x34));
            while p != 0 {
                let id = self.cfg8(p);
                let t = if id == PCI_CAP_ID_VENDOR {
                    self.cfg8(p + 3)
                } else {
                    0
                };
                out.push((t, id, p));
                p = u32::from(self.cfg8(p + 1));
            }
            out
        }
    }

    #[test]
    fn state_restores_a_running_device_on_its_rings() {
        let mem = memory();
        let (mut dev, _intx) = rng_transport(&mem, Some(Arc::new(MsiLog::default())));
        let w = |d: &mut VirtioPciDevice, reg: u64, n: usize, v: u64| {
            d.bar_write(LEGACY_BAR, reg, &v.to_le_bytes()[..n])
        };
        w(
            &mut dev,
            L_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
        );
        w(&mut dev, L_DRIVER_FEATURES, 4, VIRTIO_F_RING_EVENT_IDX);
        let ring = 0x4_0000u64;
        w(&mut dev, L_QUEUE_PFN, 4, ring >> 12);
        let ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK;
        w(&mut dev, L_STATUS, 1, u64::from(ok));
        let size = 64u64;
        let avail = ring + 16 * size;
        let used = (avail + 6 + 2 * size).next_multiple_of(4096);
        for i in 0..2u16 {
            let d = Descriptor::new(BUF + 64 * u64::from(i), 32, VRING_DESC_F_WRITE as u16, 0);
            mem.write_obj(
                RawDescriptor::from(d),
                GuestAddress(ring + 16 * u64::from(i)),
            )
            .unwrap();
            mem.write_obj(i, GuestAddress(avail + 4 + 2 * u64::from(i)))
                .unwrap();
        }
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        dev.device().lock().unwrap().process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 1);
        let state_of = |d: &VirtioPciDevice| d.state(&*d.device().lock().unwrap());
        let state = state_of(&dev);
        assert!(state.activated);
        assert_eq!(state.isr, ISR_QUEUE);

        // A new transport over the same (restored) memory takes up where the rings are.
        let (mut fresh, intx) = rng_transport(&mem, Some(Arc::new(MsiLog::default())));
        fresh.restore(&state).unwrap();
        assert_eq!(state_of(&fresh), state);
        assert_eq!(intx.read().unwrap(), 1, "the unread ISR asserts INTx again");
        let mut b = [0u8; 4];
        fresh.bar_read(LEGACY_BAR, L_QUEUE_PFN, &mut b);
        assert_eq!(u64::from(u32::from_le_bytes(b)), ring >> 12);
        mem.write_obj(2u16, GuestAddress(avail + 2)).unwrap();
        fresh.device().lock().unwrap().process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 2);
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(used + 4 + 8)).unwrap(),
            1,
            "the second chain, not the first again"
        );

        // Another device's record is refused before anything changes.
        let mut other = state.clone();
        other.device_features ^= 1;
        assert!(fresh.restore(&other).is_err());
        let mut big = state;
        big.queues[0].size = 1024;
        assert!(fresh.restore(&big).is_err());
    }

    #[test]
    fn legacy_driver_reads_entropy_through_the_bus() {
        let mem = memory();
        let (dev, intx) = rng_transport(&mem, None);
        let dev = Arc::new(Mutex::new(dev));
        let g = guest_with(dev.clone());
        assert_eq!(g.cfg32(0), 0x1005_1af4, "transitional entropy device");
        assert_eq!(g.cfg32(0x2c) >> 16, 4, "subsystem id = virtio type");
        assert_eq!(g.cfg32(0x08) & 0xff, 0, "revision 0");
        assert_eq!(g.cfg32(0x3c) & 0xffff, 0x010a, "INTA#, line 10");
        let io = u64::from(g.cfg32(0x10) & !3);
        assert_eq!(io, PCI_IO_START);
        let (pio, r, w) = (
            &g.pio,
            |a, n| g.r(&g.pio, io + a, n),
            |a, n, v| g.w(&g.pio, io + a, n, v),
        );
        w(L_STATUS, 1, 0);
        w(L_STATUS, 1, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
        let f = r(L_DEVICE_FEATURES, 4);
        assert_eq!(f & VIRTIO_F_VERSION_1, 0, "legacy sees 32 bits");
        assert_ne!(f & VIRTIO_F_RING_EVENT_IDX, 0);
        w(L_DRIVER_FEATURES, 4, 0);
        w(L_QUEUE_SELECT, 2, 0);
        let size = r(L_QUEUE_SIZE, 2);
        assert_eq!(size, 64);
        w(L_QUEUE_SELECT, 2, 1);
        assert_eq!(r(L_QUEUE_SIZE, 2), 0, "no queue 1");
        w(L_QUEUE_SELECT, 2, 0);
        let ring = 0x4_0000u64;
        w(L_QUEUE_PFN, 4, ring >> 12);
        assert_eq!(r(L_QUEUE_PFN, 4), ring >> 12);
        w(
            L_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK),
        );
        // One 32-byte buffer in the legacy layout.
        let avail = ring + 16 * size;
        let used = (avail + 6 + 2 * size).next_multiple_of(4096);
        let d = Descriptor::new(BUF, 32, VRING_DESC_F_WRITE as u16, 0);
        mem.write_obj(RawDescriptor::from(d), GuestAddress(ring))
            .unwrap();
        mem.write_obj(0u16, GuestAddress(avail + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(avail + 2)).unwrap();
        w(L_QUEUE_NOTIFY, 2, 0);
        let evt = dev.lock().unwrap().queue_events()[0].read().unwrap();
        assert_eq!(evt, 1, "notify reached the queue eventfd");
        let d = dev.lock().unwrap().device();
        d.lock().unwrap().process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 1);
        assert_eq!(mem.read_obj::<u32>(GuestAddress(used + 8)).unwrap(), 32);
        assert_eq!(intx.read().unwrap(), 1, "INTx pulsed");
        dev.lock().unwrap().intx_resample();
        assert_eq!(
            intx.read().unwrap(),
            1,
            "still asserted until the ISR is read"
        );
        assert_eq!(r(L_ISR, 1), u64::from(ISR_QUEUE));
        assert_eq!(r(L_ISR, 1), 0, "read clears");
        dev.lock().unwrap().intx_resample();
        assert!(intx.read().is_err());
        // Device reset.
        w(L_STATUS, 1, 0);
        assert_eq!(r(L_STATUS, 1), 0);
        assert_eq!(r(L_QUEUE_PFN, 4), 0);
        let _ = pio;
    }

    #[test]
    fn modern_driver_with_msix_and_event_idx() {
        let mem = memory();
        let msi = Arc::new(MsiLog::default());
        let (dev, intx) = rng_transport(&mem, Some(msi.clone()));
        let dev = Arc::new(Mutex::new(dev));
        let g = guest_with(dev.clone());
        let caps = g.caps();
        let types: Vec<u8> = caps.iter().map(|c| c.0).collect();
        assert_eq!(
            types,
            vec![
                0,
                CAP_COMMON_CFG,
                CAP_ISR_CFG,
                CAP_DEVICE_CFG,
                CAP_NOTIFY_CFG,
                CAP_PCI_CFG
            ]
        );
        assert_eq!(caps[0].1, crate::pci::msix::MSIX_CAP_ID);
        let notify_cap = caps[4].2;
        assert_eq!(g.cfg32(notify_cap + 16), NOTIFY_MULTIPLIER);
        assert_eq!(g.cfg8(caps[1].2 + 4), MODERN_BAR as u8);
        let bar1 = u64::from(g.cfg32(0x10 + 4 * MODERN_BAR as u32) & !0xf);
        let bar2 = u64::from(g.cfg32(0x10 + 4 * MSIX_BAR as u32) & !0xf);
        let m = &g.mmio;
        let r = |a: u64, n| g.r(m, bar1 + a, n);
        let w = |a: u64, n, v| g.w(m, bar1 + a, n, v);
        w(C_STATUS, 1, 0);
        w(C_STATUS, 1, u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER));
        w(C_DEVICE_FEATURE_SELECT, 4, 1);
        assert_eq!(r(C_DEVICE_FEATURE, 4), VIRTIO_F_VERSION_1 >> 32);
        w(C_DEVICE_FEATURE_SELECT, 4, 0);
        let lo = r(C_DEVICE_FEATURE, 4);
        w(C_DRIVER_FEATURE_SELECT, 4, 0);
        w(C_DRIVER_FEATURE, 4, lo | 1); // bit 0 is not offered: dropped
        w(C_DRIVER_FEATURE_SELECT, 4, 1);
        w(C_DRIVER_FEATURE, 4, 1);
        w(C_DRIVER_FEATURE_SELECT, 4, 0);
        assert_eq!(r(C_DRIVER_FEATURE, 4), lo);
        w(
            C_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
        );
        assert_ne!(r(C_STATUS, 1) as u8 & STATUS_FEATURES_OK, 0);
        assert_eq!(r(C_NUM_QUEUES, 2), 1);
        // MSI-X: enable, program vector 1 for the queue.
        let msix_cap = caps[0].2;
        g.cfg_write16(msix_cap + 2, 0x8000);
        g.w(m, bar2 + 16, 4, 0xfee0_0000);
        g.w(m, bar2 + 24, 4, 0x31);
        g.w(m, bar2 + 28, 4, 0);
        w(C_CONFIG_VECTOR, 2, 0);
        w(C_QUEUE_SELECT, 2, 0);
        w(C_QUEUE_VECTOR, 2, 1);
        assert_eq!(r(C_QUEUE_VECTOR, 2), 1);
        w(C_QUEUE_SIZE, 2, 16);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x8_0000), 16);
        // The mock lays the used ring over the avail ring's used_event; EVENT_IDX needs them
        // apart.
        let used = GuestAddress(0x9_0000);
        for (off, a) in [
            (C_QUEUE_DESC, vq.desc_table_addr()),
            (C_QUEUE_DRIVER, vq.avail_addr()),
            (C_QUEUE_DEVICE, used),
        ] {
            w(off, 4, a.0 & 0xffff_ffff);
            w(off + 4, 4, a.0 >> 32);
        }
        w(C_QUEUE_ENABLE, 2, 1);
        w(
            C_STATUS,
            1,
            u64::from(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        );
        // The driver asks for an interrupt only after the second buffer (used_event = 1).
        let used_event = vq.avail_addr().0 + 4 + 2 * 16;
        vq.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                BUF,
                16,
                VRING_DESC_F_WRITE as u16,
                0,
            ))],
            0,
        )
        .unwrap();
        mem.write_obj(1u16, GuestAddress(used_event)).unwrap();
        let notify = dev.lock().unwrap().notify_addresses();
        let modern = notify.iter().find(|n| n.space == BarSpace::Memory).unwrap();
        assert_eq!(modern.addr, bar1 + NOTIFY_OFFSET);
        g.w(m, modern.addr, 2, 0);
        assert_eq!(dev.lock().unwrap().queue_events()[0].read().unwrap(), 1);
        let d = dev.lock().unwrap().device();
        d.lock().unwrap().process_queue(0);
        assert!(
            msi.0.lock().unwrap().is_empty(),
            "EVENT_IDX suppressed the first"
        );
        vq.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                BUF,
                16,
                VRING_DESC_F_WRITE as u16,
                0,
            ))],
            1,
        )
        .unwrap();
        mem.write_obj(1u16, GuestAddress(used_event)).unwrap();
        d.lock().unwrap().process_queue(0);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(used.0 + 2)).unwrap(), 2);
        let pba = g.r(m, bar2 + MSIX_PBA_OFFSET, 8);
        assert_eq!(pba, 0);
        assert_eq!(
            *msi.0.lock().unwrap(),
            vec![(
                1,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x31
                }
            )]
        );
        assert!(intx.read().is_err(), "no INTx under MSI-X");
        assert_eq!(r(ISR_OFFSET, 1), 0);
        // The avail_event the device publishes tells the driver where to notify next.
        let avail_event = used.0 + 4 + 8 * 16;
        assert_eq!(mem.read_obj::<u16>(GuestAddress(avail_event)).unwrap(), 2);
    }

    #[test]
    fn bad_avail_index_needs_reset_then_reset_recovers() {
        let mem = memory();
        let (mut dev, intx) = rng_transport(&mem, None);
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x8_0000), 16);
        dev.modern_write(
            C_STATUS,
            &[STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK],
        );
        dev.modern_write(C_QUEUE_SIZE, &16u16.to_le_bytes());
        dev.modern_write(C_QUEUE_DESC, &vq.desc_table_addr().0.to_le_bytes());
        dev.modern_write(C_QUEUE_DRIVER, &vq.avail_addr().0.to_le_bytes());
        dev.modern_write(C_QUEUE_DEVICE, &vq.used_addr().0.to_le_bytes());
        dev.modern_write(C_QUEUE_ENABLE, &1u16.to_le_bytes());
        dev.modern_write(
            C_STATUS,
            &[STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
        );
        let mut gen = [0u8];
        dev.modern_read(C_CONFIG_GENERATION, &mut gen);
        // More available entries than the ring holds.
        vq.avail().idx().store(40);
        dev.device().lock().unwrap().process_queue(0);
        let mut st = [0u8];
        dev.modern_read(C_STATUS, &mut st);
        assert_ne!(st[0] & STATUS_NEEDS_RESET, 0);
        assert_eq!(intx.read().unwrap(), 1);
        let mut isr = [0u8];
        dev.modern_read(ISR_OFFSET, &mut isr);
        assert_eq!(isr[0], ISR_CONFIG);
        let mut gen2 = [0u8];
        dev.modern_read(C_CONFIG_GENERATION, &mut gen2);
        assert_ne!(gen, gen2, "config change bumps the generation");
        dev.modern_write(C_STATUS, &[0]);
        dev.modern_read(C_STATUS, &mut st);
        assert_eq!(st[0], 0);
        // A queue outside guest memory is refused at DRIVER_OK.
        dev.modern_write(C_QUEUE_DESC, &(1u64 << 40).to_le_bytes());
        dev.modern_write(C_QUEUE_ENABLE, &1u16.to_le_bytes());
        dev.modern_write(C_STATUS, &[STATUS_DRIVER_OK]);
        dev.modern_read(C_STATUS, &mut st);
        assert_ne!(st[0] & STATUS_NEEDS_RESET, 0);
    }

    /// Random register traffic on every BAR and config space, with queues pointed at memory
    /// full of garbage, and the device processing in between: nothing may panic.
    #[test]
    fn fuzz_transport_registers_and_rings() {
        let mem = memory();
        let msi = Arc::new(MsiLog::default());
        let (mut dev, _intx) = rng_transport(&mem, Some(msi));
        let mut rng = XorShift::new(0x1af4);
        let mut garbage = vec![0u8; 0x1_0000];
        rng.fill(&mut garbage);
        mem.write_slice(&garbage, GuestAddress(0)).unwrap();
        for i in 0..100_000u32 {
            let r = rng.next();
            let width = rng.width();
            let mut data = [0u8; 8];
            rng.fill(&mut data);
            // Keep queue addresses mostly inside the garbage page so rings get exercised.
            if r.is_multiple_of(3) {
                data[2..8].fill(0);
            }
            let bar = [LEGACY_BAR, MODERN_BAR, MSIX_BAR][(r >> 8) as usize % 3];
            let limit = [0x40, MODERN_BAR_SIZE, MSIX_BAR_SIZE][(r >> 8) as usize % 3];
            let off = rng.offset(limit) % limit;
            match r % 5 {
                0 => dev.bar_read(bar, off, &mut data[..width]),
                1 | 2 => dev.bar_write(bar, off, &data[..width]),
                3 => dev.write_config((off % 256) as usize, &data[..width]),
                _ => {
                    let q = (r >> 16) as usize % 2;
                    dev.device().lock().unwrap().process_queue(q);
                }
            }
            if i.is_multiple_of(4096) {
                rng.fill(&mut garbage);
                mem.write_slice(&garbage, GuestAddress(0)).unwrap();
            }
        }
    }

    #[test]
    fn pci_cfg_capability_reaches_the_bars() {
        let mem = memory();
        let (mut dev, _) = rng_transport(&mem, None);
        let cap = dev.pci_cfg_cap.unwrap();
        assert_eq!(dev.config.u16_at(cap) >> 8, 0, "last capability");
        // Select the modern BAR, num_queues (2 bytes).
        dev.write_config(cap + 4, &[MODERN_BAR as u8]);
        dev.write_config(cap + 8, &(C_NUM_QUEUES as u32).to_le_bytes());
        dev.write_config(cap + 12, &2u32.to_le_bytes());
        let mut d = [0u8; 4];
        dev.read_config(cap + VIRTIO_CAP_LEN, &mut d);
        assert_eq!(u16::from_le_bytes([d[0], d[1]]), 1);
        // Write the status byte through the window.
        dev.write_config(cap + 8, &(C_STATUS as u32).to_le_bytes());
        dev.write_config(cap + 12, &1u32.to_le_bytes());
        dev.write_config(cap + VIRTIO_CAP_LEN, &[STATUS_ACKNOWLEDGE]);
        assert_eq!(dev.status(), STATUS_ACKNOWLEDGE);
        // Legacy BAR through the window too.
        dev.write_config(cap + 4, &[LEGACY_BAR as u8]);
        dev.write_config(cap + 8, &(L_QUEUE_SIZE as u32).to_le_bytes());
        dev.write_config(cap + 12, &2u32.to_le_bytes());
        dev.read_config(cap + VIRTIO_CAP_LEN, &mut d);
        assert_eq!(u16::from_le_bytes([d[0], d[1]]), 64);
    }

    #[test]
    fn intx_disable_in_command_register() {
        let mem = memory();
        let (mut dev, intx) = rng_transport(&mem, None);
        let cmd = dev.config.command() | COMMAND_INTX_DISABLE;
        dev.write_config(4, &cmd.to_le_bytes());
        dev.irq.trigger(InterruptKind::Config);
        assert!(intx.read().is_err());
        let mut isr = [0u8];
        dev.legacy_read(L_ISR, &mut isr);
        assert_eq!(isr[0], ISR_CONFIG, "the cause is still recorded");
        dev.write_config(4, &(cmd & !COMMAND_INTX_DISABLE).to_le_bytes());
        dev.irq.trigger(InterruptKind::Config);
        assert_eq!(intx.read().unwrap(), 1);
    }
}
