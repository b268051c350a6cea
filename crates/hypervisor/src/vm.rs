//! Build one VM on `/dev/kvm` and run it to its end.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::virtio::vmmci::{VmmciEvent, VmmciHandle};
use devices::{Bus, ExitRequest, ExitSignal};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::boot::{self, BootImage};
use crate::cpu;
use crate::cpuid;
use crate::error::Error;
use crate::firmware;
use crate::layout::{MemoryLayout, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::lock;
use crate::platform::Platform;
use crate::vcpu::{self, ExitReason, Shared};

/// Signal that kicks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}
/// How often a stopping vCPU is kicked again (a kick can land just before `KVM_RUN`).
const KICK_INTERVAL: Duration = Duration::from_micros(200);
/// How often pausing kicks the vCPUs that have not parked yet.
const PAUSE_KICK_INTERVAL: Duration = Duration::from_millis(10);
/// How long stopping waits for vCPU threads before giving up on them.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Console input read at once.
const CONSOLE_CHUNK: usize = 64;
/// Poll interval while the guest's UART has no room for input.
const INPUT_BACKOFF_MS: i32 = 5;
/// Longest wait between periodic device work (RTC update interrupts).
const TICK_MS: i32 = 250;

const TOKEN_EXIT: u64 = 1;
const TOKEN_CONSOLE: u64 = 2;
const TOKEN_SCI_RESAMPLE: u64 = 3;
const TOKEN_VMMCI: u64 = 4;
/// Tokens from here on are virtio queues (index into `Vm::queues`).
const TOKEN_QUEUE_BASE: u64 = 16;
/// Tokens from here on are INTx resample events (index into `Vm::intx`).
const TOKEN_INTX_BASE: u64 = 1 << 32;
/// Tokens from here on are taps with frames for the guest (index into `Vm::nics`).
const TOKEN_NIC_BASE: u64 = 2 << 32;

/// What an epoll token stands for.
enum Token {
    Fixed(u64),
    Queue(usize),
    Intx(usize),
    Nic(usize),
}

fn token(data: u64) -> Token {
    if data >= TOKEN_NIC_BASE {
        Token::Nic((data - TOKEN_NIC_BASE) as usize)
    } else if data >= TOKEN_INTX_BASE {
        Token::Intx((data - TOKEN_INTX_BASE) as usize)
    } else if data >= TOKEN_QUEUE_BASE {
        Token::Queue((data - TOKEN_QUEUE_BASE) as usize)
    } else {
        Token::Fixed(data)
    }
}

/// Everything needed to build a VM.
pub struct VmConfig {
    /// Guest RAM in bytes (rounded down to whole MiB).
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The kernel or BIOS to start.
    pub boot: BootImage,
    /// Where the guest's COM1 output goes.
    pub console_out: Box<dyn Write + Send>,
    /// Where COM1 input comes from (a pty master, stdin), if anywhere.
    pub console_in: Option<OwnedFd>,
    /// An open `/dev/kvm`; opened here when `None`.
    pub kvm: Option<Kvm>,
    /// Disk images, one virtio-blk device each (at most four).
    pub disks: Vec<Box<dyn disk::BlockBackend>>,
    /// ISO image for the virtio-scsi CD-ROM (read-only).
    pub cdrom: Option<crate::pci::CdromImage>,
    /// Network interfaces, one virtio-net device each.
    pub nics: Vec<NicConfig>,
    /// The device a BIOS boots from; `None` boots the first disk, then the CD-ROM.
    pub boot_device: Option<crate::BootDevice>,
}

/// One network interface: a tap the daemon (or the caller) created and what the device
/// enforces on it (spec §6, F-NET-07, F-NET-10).
pub struct NicConfig {
    /// The tap's fd (`/dev/net/tun` after TUNSETIFF).
    pub tap: OwnedFd,
    /// The guest's MAC.
    pub mac: [u8; 6],
    /// `locked lladdr`: only frames from and to `mac` (plus broadcast and multicast) pass.
    pub locked: bool,
    /// For `local interface`s: answers the guest's DHCP inside the VM process.
    pub responder: Option<devices::virtio::net::LocalResponder>,
}

/// Controls a VM from other threads while [`Vm::run`] runs it.
#[derive(Clone)]
pub struct VmHandle {
    shared: Arc<Shared>,
    pm: Arc<Mutex<devices::AcpiPm>>,
    serial: Arc<Mutex<devices::Serial>>,
    vm: Arc<VmFd>,
    vmmci: VmmciHandle,
    vcpus: u32,
    /// The guest clock when it was paused, restored on resume.
    pub(crate) clock: Arc<Mutex<Option<kvm_bindings::kvm_clock_data>>>,
    /// What a snapshot reads.
    pub(crate) parts: Arc<crate::snapshot::Parts>,
}

/// How a graceful stop reached the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPath {
    /// OpenBSD's vmmci driver was asked (it has 3 s to acknowledge, then 120 s to go down).
    Vmmci,
    /// The ACPI power button was pressed (the guest has 120 s to power off).
    AcpiButton,
    /// Nothing in the guest listens: the caller should stop the VM.
    Ignored,
}

/// Time a guest gets to acknowledge a vmmci request (vmd's `VMMCI_TIMEOUT`).
const VMMCI_ACK_TIMEOUT: Duration = devices::virtio::vmmci::VMMCI_TIMEOUT_SHORT;
/// Time a guest that acknowledged (or that listens to the power button) gets to go down
/// (vmd 7.x's `VMMCI_SHUTDOWN_TIMEOUT`).
pub const GRACEFUL_STOP_TIMEOUT: Duration = devices::virtio::vmmci::VMMCI_TIMEOUT_LONG;

impl VmHandle {
    /// Ask the guest to shut down: through vmmci when its driver is bound, else the ACPI
    /// power button (spec §4.7, §5.7). A guest that does not go down in time is stopped.
    pub fn request_shutdown(&self) -> ShutdownPath {
        let now = Instant::now();
        let path = if self.vmmci.request_shutdown().is_ok() {
            self.set_deadline(now + VMMCI_ACK_TIMEOUT);
            ShutdownPath::Vmmci
        } else if self.press_power_button() {
            self.set_deadline(now + GRACEFUL_STOP_TIMEOUT);
            ShutdownPath::AcpiButton
        } else {
            ShutdownPath::Ignored
        };
        // Wake the supervisor so it watches the deadline.
        let _ = self.shared.exit.event().write(1);
        path
    }

    fn set_deadline(&self, at: Instant) {
        *lock(&self.shared.graceful_deadline) = Some(at);
    }

    /// Park every vCPU and freeze the guest clock. Pausing a paused VM does nothing.
    pub fn pause(&self) -> Result<(), Error> {
        if self.shared.pause.is_paused() {
            return Ok(());
        }
        self.shared.pause.set_paused();
        let deadline = Instant::now() + crate::pause::PAUSE_TIMEOUT;
        // A kick that lands just before a vCPU enters KVM_RUN is lost: kick until all park.
        loop {
            self.shared.kick_all(kick_signal());
            if self
                .shared
                .pause
                .wait_parked(self.vcpus, PAUSE_KICK_INTERVAL)
            {
                break;
            }
            if Instant::now() >= deadline {
                self.shared.pause.resume();
                return Err(Error::Device {
                    what: "pause",
                    reason: "vCPUs did not stop in time".into(),
                });
            }
        }
        // Hosts without KVM_GET_CLOCK still pause; the guest then sees the paused time pass.
        *lock(&self.clock) = self.vm.get_clock().ok();
        Ok(())
    }

    /// Resume a paused VM with its clock where it stopped.
    pub fn unpause(&self) {
        if let Some(mut clock) = lock(&self.clock).take() {
            clock.flags = 0;
            let _ = self.vm.set_clock(&clock);
        }
        self.shared.pause.resume();
        // Wake the supervisor to serve what the devices were asked while paused.
        let _ = self.shared.exit.event().write(1);
    }

    /// Whether the VM is paused.
    pub fn is_paused(&self) -> bool {
        self.shared.pause.is_paused()
    }

    /// Send a BREAK on COM1 (OpenBSD guests enter ddb).
    pub fn send_break(&self) {
        lock(&self.serial).send_break();
    }

    /// Press the ACPI power button: a guest with ACPI shuts down gracefully. Returns whether
    /// the guest listens to the button at all (its ACPI driver enabled the event).
    pub fn press_power_button(&self) -> bool {
        let mut pm = lock(&self.pm);
        pm.press_power_button();
        pm.power_button_enabled()
    }

    /// Stop the VM now, whatever the guest is doing ([`ExitReason::Stopped`]).
    pub fn force_stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        // Wakes the supervisor without recording a guest request.
        let _ = self.shared.exit.event().write(1);
    }
}

/// A built VM, ready to run.
pub struct Vm {
    _kvm: Kvm,
    vm: Arc<VmFd>,
    /// Virtio queues the supervisor runs when the guest notifies them.
    queues: Vec<crate::pci::QueueEvent>,
    /// PCI INTx lines, re-raised after each EOI while their device has an unread cause.
    intx: Vec<crate::pci::IntxLine>,
    /// virtio-net devices, fed when their tap has frames.
    nics: Vec<crate::pci::SharedNet>,
    /// Disk images, flushed when the VM ends.
    disks: Vec<crate::disk::DiskBackend>,
    /// The vmmci control device's host side.
    vmmci: VmmciHandle,
    pub(crate) vcpus: Vec<kvm_ioctls::VcpuFd>,
    vcpu_count: u32,
    shared: Arc<Shared>,
    platform: Platform,
    console_in: Option<OwnedFd>,
    /// What a snapshot reads and a restore loads.
    pub(crate) parts: Arc<crate::snapshot::Parts>,
}

impl Vm {
    /// Build the VM: memory, irqchip, devices, boot image, vCPUs. Nothing of the guest
    /// runs yet, and an error leaves nothing behind.
    pub fn new(cfg: VmConfig) -> Result<Self, Error> {
        Self::build(cfg, true)
    }

    /// [`Vm::new`], or with `load_boot` false the same VM with nothing in guest memory and
    /// the vCPUs in their reset state, for a snapshot to fill in (`cfg.boot` then only says
    /// whether the BIOS copy region exists).
    pub(crate) fn build(cfg: VmConfig, load_boot: bool) -> Result<Self, Error> {
        Self::build_with(cfg, load_boot, None)
    }

    /// [`Vm::build`] on guest memory the caller mapped (a snapshot file's RAM), which must
    /// have the regions of `cfg`'s memory layout; `None` maps fresh anonymous memory.
    pub(crate) fn build_with(
        cfg: VmConfig,
        load_boot: bool,
        mem: Option<GuestMemoryMmap>,
    ) -> Result<Self, Error> {
        let kvm = match cfg.kvm {
            Some(k) => k,
            None => Kvm::new().map_err(Error::Kvm)?,
        };
        let max = kvm.get_max_vcpus() as u32;
        if cfg.vcpus == 0 || cfg.vcpus > max || cfg.vcpus > firmware::MAX_CPUS {
            return Err(Error::VcpuCount {
                requested: cfg.vcpus,
                max: max.min(firmware::MAX_CPUS),
            });
        }
        let layout = MemoryLayout::new(cfg.memory)?;
        let vm = Arc::new(kvm.create_vm().map_err(Error::kvm("create VM"))?);
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(Error::kvm("set TSS address"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(Error::kvm("set identity map address"))?;
        vm.create_irq_chip().map_err(Error::kvm("create irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(Error::kvm("create PIT"))?;

        let mem = create_memory(&vm, &layout, cfg.boot.kind == boot::BootKind::Bios, mem)?;
        let loaded = if load_boot {
            let loaded = boot::load(&mem, &layout, &cfg.boot)?;
            if loaded.firmware_tables {
                firmware::write_tables(&mem, cfg.vcpus)?;
            }
            Some(loaded)
        } else {
            None
        };

        let exit = ExitSignal::new().map_err(Error::host("exit eventfd"))?;
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let platform = Platform::new(&vm, &mut pio, &layout, exit.clone(), cfg.console_out)?;
        let disks: Vec<_> = cfg
            .disks
            .into_iter()
            .map(crate::disk::DiskBackend::new)
            .collect();
        let pci = crate::pci::build(
            &vm,
            &mem,
            &mut pio,
            &mut mmio,
            crate::pci::BusDevices {
                disks: disks.clone(),
                nics: cfg.nics,
                cdrom: cfg.cdrom,
            },
        )?;
        let fw_cfg = crate::platform::add_fw_cfg(
            &mut pio,
            &mem,
            &layout,
            cfg.vcpus,
            pci.boot_slots,
            cfg.boot_device,
        )?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("get supported CPUID"))?;
        let pvm = cpuid::host_is_pvm();
        let mut vcpus = Vec::with_capacity(cfg.vcpus as usize);
        for i in 0..cfg.vcpus {
            let vcpu = vm
                .create_vcpu(u64::from(i))
                .map_err(Error::kvm("create vCPU"))?;
            vcpu.set_cpuid2(&cpuid::for_vcpu(&supported, i, cfg.vcpus, pvm))
                .map_err(Error::kvm("set CPUID"))?;
            cpu::setup_common(&vcpu)?;
            if let (0, Some(loaded)) = (i, &loaded) {
                cpu::setup_boot_cpu(&vcpu, &mem, loaded.entry)?;
            }
            vcpus.push(vcpu);
        }

        let shared = Arc::new(Shared {
            pio,
            mmio,
            exit,
            crash: Mutex::new(None),
            stopping: Default::default(),
            mem,
            pause: Default::default(),
            threads: Mutex::new(Vec::new()),
            graceful_deadline: Mutex::new(None),
        });
        let parts = Arc::new(crate::snapshot::Parts::new(
            &kvm,
            &vm,
            &shared,
            &platform,
            fw_cfg,
            &pci,
            crate::snapshot::Shape {
                layout,
                vcpus: cfg.vcpus,
                bios_copy: cfg.boot.kind == boot::BootKind::Bios,
                vcpu0_cpuid: cpuid::for_vcpu(&supported, 0, cfg.vcpus, pvm),
                disks: disks.clone(),
            },
        )?);
        Ok(Vm {
            _kvm: kvm,
            vm,
            queues: pci.queues,
            intx: pci.intx,
            nics: pci.nics,
            vmmci: pci.vmmci,
            disks,
            vcpu_count: cfg.vcpus,
            vcpus,
            shared,
            platform,
            console_in: cfg.console_in,
            parts,
        })
    }

    /// A handle for stopping the VM from another thread.
    pub fn handle(&self) -> VmHandle {
        VmHandle {
            shared: self.shared.clone(),
            pm: self.platform.pm(),
            serial: self.platform.serial(),
            vm: self.vm.clone(),
            vmmci: self.vmmci.clone(),
            vcpus: self.vcpu_count,
            clock: Arc::default(),
            parts: self.parts.clone(),
        }
    }

    /// Run the guest until it powers off, resets or crashes.
    pub fn run(mut self) -> Result<ExitReason, Error> {
        // The handler only has to exist: its delivery is what interrupts KVM_RUN.
        register_signal_handler(kick_signal(), noop_handler).map_err(|e| Error::Host {
            what: "vCPU kick signal",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for (i, vcpu) in self.vcpus.drain(..).enumerate() {
            let shared = self.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{i}"))
                .spawn(move || vcpu::run(vcpu, i as u32, shared))
                .map_err(Error::host("spawn vCPU thread"));
            match t {
                Ok(t) => {
                    lock(&self.shared.threads).push(t.as_pthread_t());
                    threads.push(t);
                }
                Err(e) => {
                    stop_vcpus(&self.shared, threads);
                    return Err(e);
                }
            }
        }
        let result = self.supervise();
        stop_vcpus(&self.shared, threads);
        for d in &self.disks {
            d.flush().map_err(Error::host("flushing a disk image"))?;
        }
        result?;
        let crash = lock(&self.shared.crash).take();
        Ok(match (crash, self.shared.exit.pending()) {
            (Some(why), _) => ExitReason::Crash(why),
            (None, Some(ExitRequest::Poweroff)) => ExitReason::Poweroff,
            (None, Some(ExitRequest::Reboot)) => ExitReason::Reboot,
            (None, None) => ExitReason::Stopped,
        })
    }

    /// Wait for the end of the VM, feeding console input to the UART meanwhile.
    fn supervise(&mut self) -> Result<(), Error> {
        let epoll = Epoll::new().map_err(Error::host("epoll"))?;
        let exit_fd = self.shared.exit.event().as_raw_fd();
        epoll
            .ctl(
                ControlOperation::Add,
                exit_fd,
                EpollEvent::new(EventSet::IN, TOKEN_EXIT),
            )
            .map_err(Error::host("epoll add exit event"))?;
        let resample = EpollEvent::new(EventSet::IN, TOKEN_SCI_RESAMPLE);
        epoll
            .ctl(
                ControlOperation::Add,
                self.platform.sci_resample_fd(),
                resample,
            )
            .map_err(Error::host("epoll add SCI resample"))?;
        for (i, q) in self.queues.iter().enumerate() {
            let ev = EpollEvent::new(EventSet::IN, TOKEN_QUEUE_BASE + i as u64);
            epoll
                .ctl(ControlOperation::Add, q.event.as_raw_fd(), ev)
                .map_err(Error::host("epoll add virtio queue"))?;
        }
        for (i, line) in self.intx.iter().enumerate() {
            let ev = EpollEvent::new(EventSet::IN, TOKEN_INTX_BASE + i as u64);
            epoll
                .ctl(ControlOperation::Add, line.resample.as_raw_fd(), ev)
                .map_err(Error::host("epoll add INTx resample"))?;
        }
        for (i, nic) in self.nics.iter().enumerate() {
            // Edge-triggered: while the guest has no receive buffers the tap stays readable,
            // and the device resumes from the guest's RX notify instead.
            let ev = EpollEvent::new(
                EventSet::IN | EventSet::EDGE_TRIGGERED,
                TOKEN_NIC_BASE + i as u64,
            );
            let fd = lock(nic).backend_fd();
            epoll
                .ctl(ControlOperation::Add, fd, ev)
                .map_err(Error::host("epoll add tap"))?;
        }
        epoll
            .ctl(
                ControlOperation::Add,
                self.vmmci.event_fd().as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_VMMCI),
            )
            .map_err(Error::host("epoll add vmmci"))?;
        let mut console = self.console_in.as_ref().map(|f| f.as_raw_fd());
        if let Some(fd) = console {
            let ev = EpollEvent::new(EventSet::IN, TOKEN_CONSOLE);
            if epoll.ctl(ControlOperation::Add, fd, ev).is_err() {
                // Regular files cannot be polled; they are always readable.
                console = None;
            }
        }
        let mut events = [EpollEvent::default(); 16];
        let mut timeout = TICK_MS;
        // Queue notifications and tap frames that came while the VM was paused: no device
        // works on guest memory or a disk image while paused, so that a sent VM's images and
        // memory stay as its stream has them; they are served once it resumes. Every queue
        // starts held: a VM restored from a stream may have requests its sender held back
        // (notified after the pause, so in no device's memory), and serving a queue with
        // nothing in it, or a device not yet activated, does nothing.
        let mut held_queues = vec![true; self.queues.len()];
        let mut held_nics = vec![true; self.nics.len()];
        loop {
            self.platform.tick();
            let overdue = lock(&self.shared.graceful_deadline).is_some_and(|d| Instant::now() >= d);
            if overdue {
                self.shared.stopping.store(true, Ordering::Release);
                return Ok(());
            }
            if self.shared.exit.pending().is_some() || self.shared.stopping.load(Ordering::Acquire)
            {
                return Ok(());
            }
            if !self.shared.pause.is_paused() {
                for (q, held) in self.queues.iter().zip(&mut held_queues) {
                    *held = *held && self.serve_queue(q);
                }
                for (nic, held) in self.nics.iter().zip(&mut held_nics) {
                    *held = *held && self.serve_nic(nic);
                }
            }
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::host("epoll wait")(e)),
            };
            timeout = TICK_MS;
            for ev in &events[..n] {
                match token(ev.data()) {
                    Token::Fixed(TOKEN_SCI_RESAMPLE) => self.platform.sci_resampled(),
                    Token::Fixed(TOKEN_VMMCI) => self.vmmci_events(),
                    Token::Fixed(TOKEN_EXIT) => {
                        // Requests are state (`pending`, `stopping`, the deadline); the count
                        // only wakes us, and left unread it would keep epoll spinning.
                        let _ = self.shared.exit.event().read();
                    }
                    Token::Fixed(_) => {}
                    Token::Intx(i) => {
                        if let Some(line) = self.intx.get(i) {
                            let _ = line.resample.read();
                            lock(&line.transport).intx_resample();
                        }
                    }
                    Token::Queue(i) => {
                        if let Some(q) = self.queues.get(i) {
                            let _ = q.event.read();
                            held_queues[i] |= self.serve_queue(q);
                        }
                    }
                    Token::Nic(i) => {
                        if let Some(nic) = self.nics.get(i) {
                            held_nics[i] |= self.serve_nic(nic);
                        }
                    }
                }
                if ev.data() != TOKEN_CONSOLE {
                    continue;
                }
                let Some(fd) = console else { continue };
                match self.platform.feed_console(fd, CONSOLE_CHUNK) {
                    ConsoleFeed::Fed => {}
                    ConsoleFeed::Full => {
                        let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                        timeout = INPUT_BACKOFF_MS;
                    }
                    ConsoleFeed::Closed => {
                        let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
                        console = None;
                    }
                }
            }
            if timeout == INPUT_BACKOFF_MS {
                if let Some(fd) = console {
                    if self.platform.console_has_room() {
                        let ev = EpollEvent::new(EventSet::IN, TOKEN_CONSOLE);
                        let _ = epoll.ctl(ControlOperation::Add, fd, ev);
                        timeout = TICK_MS;
                    }
                }
            }
        }
    }
}

impl Vm {
    /// Run queue `q`'s requests, unless the VM is paused: true if they were held. Checked
    /// under the device's lock, which a snapshot holds from the pause until its stream is
    /// complete, so nothing is served between a complete stream and the VM's stop.
    fn serve_queue(&self, q: &crate::pci::QueueEvent) -> bool {
        let mut device = lock(&q.device);
        if self.shared.pause.is_paused() {
            return true;
        }
        device.process_queue(q.index);
        false
    }

    /// Feed a NIC the frames its tap has, unless the VM is paused (as [`Vm::serve_queue`]).
    fn serve_nic(&self, nic: &crate::pci::SharedNet) -> bool {
        let mut nic = lock(nic);
        if self.shared.pause.is_paused() {
            return true;
        }
        nic.process_rx();
        false
    }

    /// The guest acknowledged a vmmci request (it gets the long timeout to go down) or asked
    /// to be powered off itself (it gets the short one, as vmd does).
    fn vmmci_events(&self) {
        let _ = self.vmmci.event_fd().read();
        while let Some(event) = self.vmmci.take_event() {
            let extend = match event {
                VmmciEvent::Acknowledged(_) => GRACEFUL_STOP_TIMEOUT,
                VmmciEvent::GuestShutdown => VMMCI_ACK_TIMEOUT,
            };
            *lock(&self.shared.graceful_deadline) = Some(Instant::now() + extend);
        }
    }
}

/// What feeding console input achieved.
pub(crate) enum ConsoleFeed {
    /// Bytes went to the UART (or there were none right now).
    Fed,
    /// The UART has no room: stop polling the input for a while.
    Full,
    /// End of input.
    Closed,
}

extern "C" fn noop_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn stop_vcpus(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    shared.stopping.store(true, Ordering::Release);
    shared.pause.release();
    lock(&shared.threads).clear();
    let deadline = Instant::now() + STOP_TIMEOUT;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(kick_signal());
            std::thread::sleep(KICK_INTERVAL);
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

/// Map guest RAM (or take `premade`, which must have the layout's regions) and hand each
/// region to KVM as a memory slot.
fn create_memory(
    vm: &VmFd,
    layout: &MemoryLayout,
    bios_copy: bool,
    premade: Option<GuestMemoryMmap>,
) -> Result<GuestMemoryMmap, Error> {
    let regions = layout.regions(bios_copy);
    let mem = match premade {
        Some(mem) => {
            let have: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
            if have != regions {
                return Err(Error::GuestMemory {
                    size: layout.size,
                    reason: format!("mapped regions {have:x?}, the layout needs {regions:x?}"),
                });
            }
            mem
        }
        None => {
            let ranges: Vec<(GuestAddress, usize)> = regions
                .iter()
                .map(|&(a, l)| (GuestAddress(a), l as usize))
                .collect();
            GuestMemoryMmap::from_ranges(&ranges).map_err(|e| Error::GuestMemory {
                size: layout.size,
                reason: e.to_string(),
            })?
        }
    };
    register_memory(vm, &mem, false)?;
    Ok(mem)
}

/// Hand every region of `mem` to KVM as memory slot `i` (its index), with KVM's dirty page
/// log on or off (live migration turns it on; registering a slot again changes its flags).
pub(crate) fn register_memory(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    log_dirty: bool,
) -> Result<(), Error> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region.as_ptr() as u64;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host,
            flags: if log_dirty {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the VM keeps (in
        // `Shared`) for as long as the VM fd exists, so KVM never sees a dangling range.
        unsafe { vm.set_user_memory_region(desc) }.map_err(Error::kvm("set memory region"))?;
    }
    Ok(())
}
