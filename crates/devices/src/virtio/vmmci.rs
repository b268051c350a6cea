//! vmmci, OpenBSD's VMM control device (spec §5.7, F-HW-15): the host asks an OpenBSD guest
//! to shut down, reboot or resync its clock, and the guest acknowledges or asks to power off.
//!
//! Legacy virtio only (vendor OpenBSD, product "VMM Control", subsystem id 0xFFFF), no
//! queues. Device configuration (from the device-specific area of the legacy registers):
//!
//! | offset | read | write |
//! |---|---|---|
//! | +0 | pending host command | guest acknowledgement or guest-initiated command |
//! | +4 | host time, seconds, low 32 bits (reading latches the wall clock) | — |
//! | +8 | seconds, high 32 bits | — |
//! | +12 | microseconds, low 32 bits | — |
//! | +16 | microseconds, high 32 bits | — |
//!
//! The host side is a [`VmmciHandle`]; the timers of spec §5.7 belong to the VM process,
//! which watches [`VmmciHandle::event_fd`]:
//! * after a successful [`VmmciHandle::request_shutdown`] / [`VmmciHandle::request_reboot`],
//!   arm [`VMMCI_TIMEOUT_SHORT`];
//! * on [`VmmciEvent::Acknowledged`], extend it to [`VMMCI_TIMEOUT_LONG`];
//! * on [`VmmciEvent::GuestShutdown`], arm [`VMMCI_TIMEOUT_SHORT`];
//! * on expiry stop the VM, or reboot it if [`VmmciHandle::pending_command`] is
//!   [`VmmciCommand::Reboot`].
//!
//! Unlike vmd, the seconds-high register returns the high half (vmd shifts the wrong way
//! and always returns 0, harmless until 2106).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{DeviceState, InterruptKind, VirtioDevice, VirtioInterrupt};
use crate::pci::config::PciIds;
use crate::pci::{PCI_PRODUCT_OPENBSD_CONTROL, PCI_VENDOR_OPENBSD};
use crate::state::StateError;

/// Feature: the guest keeps its clock in sync by reading the time registers.
pub const VMMCI_F_TIMESYNC: u64 = 1 << 0;
/// Feature: the guest acknowledges commands.
pub const VMMCI_F_ACK: u64 = 1 << 1;
/// Feature: the guest resyncs its RTC on request.
pub const VMMCI_F_SYNCRTC: u64 = 1 << 2;
/// OpenBSD's private virtio device id for vmmci (PCI_PRODUCT_VIRTIO_VMMCI), also the PCI
/// subsystem id.
pub const VIRTIO_ID_VMMCI: u32 = 0xffff;
/// Time the guest has to acknowledge a request, or to power off after asking to.
pub const VMMCI_TIMEOUT_SHORT: Duration = Duration::from_secs(3);
/// Time an acknowledging guest has to finish shutting down (rc.shutdown can be slow).
pub const VMMCI_TIMEOUT_LONG: Duration = Duration::from_secs(120);
/// PCI class "communications", subclass "other", as vmd presents vmmci.
const PCI_CLASS_COMMUNICATIONS: u8 = 0x07;
const PCI_SUBCLASS_COMMUNICATIONS_MISC: u8 = 0x80;
/// Bytes of the device configuration: five 32-bit registers.
const CONFIG_LEN: usize = 20;
const REG_COMMAND: u64 = 0;
const REG_TIME_SEC_LO: u64 = 4;
/// Events the VM process has not collected yet; a guest spamming writes cannot grow it
/// beyond this.
const MAX_PENDING_EVENTS: usize = 16;

/// A host command (register +0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmciCommand {
    None = 0,
    Shutdown = 1,
    Reboot = 2,
    SyncRtc = 3,
}

impl VmmciCommand {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::Shutdown),
            2 => Some(Self::Reboot),
            3 => Some(Self::SyncRtc),
            _ => None,
        }
    }
}

/// What the guest did, for the VM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmciEvent {
    /// The guest acknowledged the pending shutdown or reboot request.
    Acknowledged(VmmciCommand),
    /// The guest asked to be powered off (shutdown written with no request pending).
    GuestShutdown,
}

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VmmciError {
    /// No guest driver has bound the device (driver status not OK): use the ACPI power
    /// button or stop the VM hard.
    #[error("the guest has no vmmci driver bound")]
    NotBound,
}

/// Wall-clock time since the epoch; injectable for tests.
type WallClock = Box<dyn Fn() -> Duration + Send + Sync>;

struct State {
    command: VmmciCommand,
    guest_features: u64,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    /// The time latched by the last read of the seconds-low register.
    latched: Duration,
    events: VecDeque<VmmciEvent>,
}

struct Shared {
    state: Mutex<State>,
    event: EventFd,
    clock: WallClock,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host side of the device, held by the VM process.
#[derive(Clone)]
pub struct VmmciHandle {
    shared: Arc<Shared>,
}

impl VmmciHandle {
    /// Ask the guest to shut down (spec §5.7).
    pub fn request_shutdown(&self) -> Result<(), VmmciError> {
        self.request(VmmciCommand::Shutdown)
    }

    /// Ask the guest to reboot.
    pub fn request_reboot(&self) -> Result<(), VmmciError> {
        self.request(VmmciCommand::Reboot)
    }

    /// Ask the guest to resync its RTC (after a pause or host suspend). Returns whether it
    /// was sent: only guests that negotiated SYNCRTC are asked.
    pub fn request_rtc_sync(&self) -> Result<bool, VmmciError> {
        let mut s = lock(&self.shared);
        let Some(irq) = s.interrupt.clone() else {
            return Err(VmmciError::NotBound);
        };
        if s.guest_features & VMMCI_F_SYNCRTC == 0 {
            return Ok(false);
        }
        s.command = VmmciCommand::SyncRtc;
        drop(s);
        irq.trigger(InterruptKind::Config);
        Ok(true)
    }

    fn request(&self, cmd: VmmciCommand) -> Result<(), VmmciError> {
        let mut s = lock(&self.shared);
        let Some(irq) = s.interrupt.clone() else {
            return Err(VmmciError::NotBound);
        };
        // Repeating the pending command raises nothing new (as vmd).
        if s.command == cmd {
            return Ok(());
        }
        s.command = cmd;
        drop(s);
        irq.trigger(InterruptKind::Config);
        Ok(())
    }

    /// Whether a guest driver has the device bound (driver status OK).
    pub fn driver_bound(&self) -> bool {
        lock(&self.shared).interrupt.is_some()
    }

    /// The command the guest was last asked to carry out.
    pub fn pending_command(&self) -> VmmciCommand {
        lock(&self.shared).command
    }

    /// Readable when an event is waiting in [`VmmciHandle::take_event`].
    pub fn event_fd(&self) -> &EventFd {
        &self.shared.event
    }

    /// The oldest event not collected yet.
    pub fn take_event(&self) -> Option<VmmciEvent> {
        lock(&self.shared).events.pop_front()
    }
}

/// The device half, put behind a [`super::VirtioPciDevice`].
pub struct Vmmci {
    shared: Arc<Shared>,
}

impl Vmmci {
    /// A device reading the host's wall clock, and its host-side handle.
    pub fn new() -> std::io::Result<(Vmmci, VmmciHandle)> {
        Self::with_clock(Box::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        }))
    }

    fn with_clock(clock: WallClock) -> std::io::Result<(Vmmci, VmmciHandle)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                command: VmmciCommand::None,
                guest_features: 0,
                interrupt: None,
                latched: Duration::ZERO,
                events: VecDeque::new(),
            }),
            event: EventFd::new(EFD_NONBLOCK)?,
            clock,
        });
        Ok((
            Vmmci {
                shared: shared.clone(),
            },
            VmmciHandle { shared },
        ))
    }

    fn push_event(&self, s: &mut State, e: VmmciEvent) {
        if s.events.len() < MAX_PENDING_EVENTS {
            s.events.push_back(e);
        }
        // A full counter still leaves the fd readable.
        let _ = self.shared.event.write(1);
    }

    /// A guest write of register +0.
    fn guest_command(&self, v: u32) {
        let mut s = lock(&self.shared);
        match VmmciCommand::from_u32(v) {
            Some(VmmciCommand::None) => {}
            Some(VmmciCommand::Shutdown) if s.command == VmmciCommand::None => {
                self.push_event(&mut s, VmmciEvent::GuestShutdown)
            }
            Some(c @ (VmmciCommand::Shutdown | VmmciCommand::Reboot)) if c == s.command => {
                self.push_event(&mut s, VmmciEvent::Acknowledged(c))
            }
            Some(VmmciCommand::SyncRtc) => s.command = VmmciCommand::None,
            // An ack of something not asked for, or garbage: nothing to do.
            _ => {}
        }
    }
}

impl VirtioDevice for Vmmci {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VMMCI
    }
    fn pci_ids(&self) -> PciIds {
        PciIds {
            vendor: PCI_VENDOR_OPENBSD,
            device: PCI_PRODUCT_OPENBSD_CONTROL,
            revision: 0,
            class: PCI_CLASS_COMMUNICATIONS,
            subclass: PCI_SUBCLASS_COMMUNICATIONS_MISC,
            prog_if: 0,
            subsystem_vendor: PCI_VENDOR_OPENBSD,
            subsystem_id: VIRTIO_ID_VMMCI as u16,
        }
    }
    fn legacy_only(&self) -> bool {
        true
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[]
    }
    fn features(&self) -> u64 {
        VMMCI_F_TIMESYNC | VMMCI_F_ACK | VMMCI_F_SYNCRTC
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        let mut s = lock(&self.shared);
        let covers = offset <= REG_TIME_SEC_LO && REG_TIME_SEC_LO < offset + data.len() as u64;
        if covers {
            s.latched = (self.shared.clock)();
        }
        let secs = s.latched.as_secs();
        let usecs = u64::from(s.latched.subsec_micros());
        let mut regs = [0u8; CONFIG_LEN];
        for (i, v) in [
            s.command as u32,
            secs as u32,
            (secs >> 32) as u32,
            usecs as u32,
            (usecs >> 32) as u32,
        ]
        .into_iter()
        .enumerate()
        {
            regs[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        super::copy_window(&regs, offset, data, 0);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == REG_COMMAND && !data.is_empty() {
            let mut b = [0u8; 4];
            let n = data.len().min(4);
            b[..n].copy_from_slice(&data[..n]);
            self.guest_command(u32::from_le_bytes(b));
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        _queues: Vec<Queue>,
        features: u64,
    ) {
        let mut s = lock(&self.shared);
        s.interrupt = Some(interrupt);
        s.guest_features = features;
    }
    fn process_queue(&mut self, _index: usize) {}
    fn reset(&mut self) {
        let mut s = lock(&self.shared);
        s.interrupt = None;
        s.guest_features = 0;
        s.command = VmmciCommand::None;
    }
    fn state(&self) -> DeviceState {
        let s = lock(&self.shared);
        DeviceState::Vmmci(VmmciState {
            command: s.command as u32,
            latched_secs: s.latched.as_secs(),
            latched_nanos: s.latched.subsec_nanos(),
        })
    }
    fn restore(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Vmmci(v) = state else {
            return Err(StateError::new("vmmci", "the state of another device"));
        };
        let command = VmmciCommand::from_u32(v.command)
            .ok_or_else(|| StateError::new("vmmci", format!("unknown command {}", v.command)))?;
        if v.latched_nanos >= 1_000_000_000 {
            return Err(StateError::new(
                "vmmci",
                "latched time has more than 1 s of nanoseconds",
            ));
        }
        let mut s = lock(&self.shared);
        s.command = command;
        s.latched = Duration::new(v.latched_secs, v.latched_nanos);
        Ok(())
    }
}

/// vmmci's own state, for a snapshot ([`crate::state`]); whether the driver bound it and
/// the features it took are the transport's. Events the VM process had not collected are
/// dropped: their timers ran in the old VM process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmciState {
    /// The pending host command (0 none, 1 shutdown, 2 reboot, 3 sync RTC).
    pub command: u32,
    /// The time latched by the guest's last read of the seconds register.
    pub latched_secs: u64,
    pub latched_nanos: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciDevice;
    use crate::testutil::XorShift;
    use crate::virtio::pci::LEGACY_BAR;
    use crate::virtio::queue::testing::memory;
    use crate::virtio::{
        PciIrq, VirtioPciDevice, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
    };

    // Legacy registers used by the OpenBSD driver.
    const GUEST_FEATURES: u64 = 4;
    const STATUS: u64 = 18;
    const ISR: u64 = 19;
    const CFG: u64 = 20;

    struct Rig {
        dev: VirtioPciDevice,
        host: VmmciHandle,
        intx: EventFd,
    }

    fn rig(now: Duration) -> Rig {
        let (v, host) = Vmmci::with_clock(Box::new(move || now)).unwrap();
        let intx = EventFd::new(EFD_NONBLOCK).unwrap();
        let dev = VirtioPciDevice::new(
            Arc::new(Mutex::new(v)),
            memory(),
            PciIrq {
                intx: Some(intx.try_clone().unwrap()),
                line: 9,
                msi: None,
            },
        )
        .unwrap();
        Rig { dev, host, intx }
    }

    impl Rig {
        fn r32(&mut self, off: u64) -> u32 {
            let mut b = [0u8; 4];
            self.dev.bar_read(LEGACY_BAR, off, &mut b);
            u32::from_le_bytes(b)
        }
        fn w32(&mut self, off: u64, v: u32) {
            self.dev.bar_write(LEGACY_BAR, off, &v.to_le_bytes());
        }
        fn isr(&mut self) -> u8 {
            let mut b = [0u8];
            self.dev.bar_read(LEGACY_BAR, ISR, &mut b);
            b[0]
        }
        fn bind(&mut self, features: u32) {
            self.dev
                .bar_write(LEGACY_BAR, STATUS, &[STATUS_ACKNOWLEDGE | STATUS_DRIVER]);
            assert_eq!(self.r32(0), 0b111, "TIMESYNC | ACK | SYNCRTC offered");
            self.w32(GUEST_FEATURES, features);
            self.dev.bar_write(
                LEGACY_BAR,
                STATUS,
                &[STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK],
            );
        }
    }

    #[test]
    fn state_keeps_the_binding_and_the_pending_command() {
        let mut r = rig(Duration::from_secs(7));
        r.bind((VMMCI_F_ACK | VMMCI_F_SYNCRTC) as u32);
        r.host.request_shutdown().unwrap();
        assert_eq!(r.r32(CFG + 4), 7, "latches the time");
        let state_of = |d: &VirtioPciDevice| d.state(&*d.device().lock().unwrap());
        let state = state_of(&r.dev);
        let mut fresh = rig(Duration::from_secs(100));
        fresh.dev.restore(&state).unwrap();
        assert!(fresh.host.driver_bound());
        assert_eq!(fresh.host.pending_command(), VmmciCommand::Shutdown);
        assert_eq!(fresh.r32(CFG + 8), 0, "latched seconds, high half");
        assert_eq!(fresh.intx.read().unwrap(), 1, "the unread ISR asserts INTx");
        assert_eq!(fresh.isr(), 2);
        assert_eq!(
            fresh.host.request_rtc_sync(),
            Ok(true),
            "SYNCRTC was negotiated"
        );
        let mut bad = state_of(&fresh.dev);
        bad.device = DeviceState::Vmmci(VmmciState {
            command: 9,
            latched_secs: 0,
            latched_nanos: 0,
        });
        assert!(rig(Duration::ZERO).dev.restore(&bad).is_err());
        bad.device = DeviceState::None;
        assert!(rig(Duration::ZERO).dev.restore(&bad).is_err());
    }

    #[test]
    fn pci_identity_and_legacy_only() {
        let r = rig(Duration::ZERO);
        let mut id = [0u8; 4];
        r.dev.config().read(0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x0777_0b5d);
        r.dev.config().read(0x2c, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0xffff_0b5d);
        r.dev.config().read(0x08, &mut id);
        assert_eq!(id[3], PCI_CLASS_COMMUNICATIONS);
        assert!(r.dev.config().bar(1).is_none(), "no modern BAR");
        assert_eq!(r.dev.config().u16_at(0x34) & 0xff, 0, "no capabilities");
    }

    #[test]
    fn shutdown_request_interrupts_and_ack_extends() {
        let mut r = rig(Duration::ZERO);
        assert_eq!(r.host.request_shutdown(), Err(VmmciError::NotBound));
        assert!(!r.host.driver_bound());
        r.bind((VMMCI_F_ACK | VMMCI_F_TIMESYNC) as u32);
        assert!(r.host.driver_bound());
        r.host.request_shutdown().unwrap();
        assert_eq!(r.intx.read().unwrap(), 1, "config-change interrupt");
        assert_eq!(r.isr(), 2);
        assert_eq!(r.isr(), 0, "reading the ISR clears it");
        assert_eq!(r.r32(CFG), VmmciCommand::Shutdown as u32);
        // Asking again raises nothing.
        r.host.request_shutdown().unwrap();
        assert!(r.intx.read().is_err());
        assert!(r.host.event_fd().read().is_err());
        r.w32(CFG, VmmciCommand::Shutdown as u32);
        assert_eq!(r.host.event_fd().read().unwrap(), 1);
        assert_eq!(
            r.host.take_event(),
            Some(VmmciEvent::Acknowledged(VmmciCommand::Shutdown))
        );
        assert_eq!(r.host.take_event(), None);
        // A reboot request replaces it; a mismatched ack is ignored.
        r.host.request_reboot().unwrap();
        r.w32(CFG, VmmciCommand::Shutdown as u32);
        assert_eq!(r.host.take_event(), None);
        r.w32(CFG, VmmciCommand::Reboot as u32);
        assert_eq!(
            r.host.take_event(),
            Some(VmmciEvent::Acknowledged(VmmciCommand::Reboot))
        );
        assert_eq!(r.host.pending_command(), VmmciCommand::Reboot);
        // Driver reset unbinds.
        r.dev.bar_write(LEGACY_BAR, STATUS, &[0]);
        assert!(!r.host.driver_bound());
        assert_eq!(r.host.pending_command(), VmmciCommand::None);
    }

    #[test]
    fn guest_initiated_shutdown() {
        let mut r = rig(Duration::ZERO);
        r.bind(VMMCI_F_ACK as u32);
        r.w32(CFG, VmmciCommand::Shutdown as u32);
        assert_eq!(r.host.take_event(), Some(VmmciEvent::GuestShutdown));
        r.w32(CFG, 77);
        assert_eq!(r.host.take_event(), None);
    }

    #[test]
    fn rtc_sync_only_when_negotiated() {
        let mut r = rig(Duration::ZERO);
        r.bind(VMMCI_F_ACK as u32);
        assert_eq!(r.host.request_rtc_sync(), Ok(false));
        assert!(r.intx.read().is_err());
        r.dev.bar_write(LEGACY_BAR, STATUS, &[0]);
        r.bind((VMMCI_F_ACK | VMMCI_F_SYNCRTC) as u32);
        assert_eq!(r.host.request_rtc_sync(), Ok(true));
        assert_eq!(r.intx.read().unwrap(), 1);
        assert_eq!(r.r32(CFG), VmmciCommand::SyncRtc as u32);
        r.w32(CFG, VmmciCommand::SyncRtc as u32);
        assert_eq!(r.r32(CFG), VmmciCommand::None as u32);
    }

    #[test]
    fn time_registers_latch_on_seconds_low() {
        let now = Duration::new(0x1_0000_0005, 123_456_000);
        let mut r = rig(now);
        r.bind(VMMCI_F_TIMESYNC as u32);
        assert_eq!(r.r32(CFG + 8), 0, "nothing latched yet");
        assert_eq!(r.r32(CFG + 4), 5);
        assert_eq!(r.r32(CFG + 8), 1);
        assert_eq!(r.r32(CFG + 12), 123_456);
        assert_eq!(r.r32(CFG + 16), 0);
    }

    #[test]
    fn fuzz_registers_and_host_requests() {
        let mut r = rig(Duration::new(1_700_000_000, 0));
        let mut rng = XorShift::new(0x0777);
        for _ in 0..50_000 {
            let x = rng.next();
            let off = rng.offset(48) % 48;
            let width = rng.width();
            let mut data = [0u8; 8];
            rng.fill(&mut data);
            match x % 8 {
                0..=2 => r.dev.bar_read(LEGACY_BAR, off, &mut data[..width]),
                3..=5 => r.dev.bar_write(LEGACY_BAR, off, &data[..width]),
                6 => {
                    let _ = match (x >> 8) % 3 {
                        0 => r.host.request_shutdown().map(|_| true),
                        1 => r.host.request_reboot().map(|_| true),
                        _ => r.host.request_rtc_sync(),
                    };
                }
                _ => {
                    let _ = r.host.take_event();
                }
            }
            assert!(lock(&r.host.shared).events.len() <= MAX_PENDING_EVENTS);
        }
    }
}
