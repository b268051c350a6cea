//! One vCPU thread: run the vCPU, dispatch its exits to the buses, and turn the exits that
//! end a VM into a [`Stop`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::{Bus, ExitRequest, ExitSignal};

use crate::lock;
use crate::pause::PauseGate;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Instruction bytes shown when a guest crashes.
const CRASH_BYTES: usize = 16;
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;
/// Most `KVM_RUN`s a pausing vCPU makes to finish its pending exit (string I/O continues
/// page by page; anything left then is redone after a restore, as if interrupted).
const MAX_SETTLE_RUNS: usize = 64;

/// Why the VM ended, as reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    Poweroff,
    /// The guest reset the machine (or triple-faulted).
    Reboot,
    /// The guest did something the VMM cannot continue from; the text says what.
    Crash(String),
    /// The VMM was asked to stop the VM (e.g. a forced stop).
    Stopped,
}

/// What every vCPU thread shares with the supervisor.
pub struct Shared {
    /// The port-I/O bus.
    pub pio: Bus,
    /// The MMIO bus.
    pub mmio: Bus,
    /// Devices' requests to end the VM.
    pub exit: ExitSignal,
    /// The first crash report of any vCPU.
    pub crash: Mutex<Option<String>>,
    /// Set once the VM is ending: vCPU threads return at their next exit.
    pub stopping: AtomicBool,
    /// Guest memory, for crash reports.
    pub mem: GuestMemoryMmap,
    /// Where vCPUs park while the VM is paused.
    pub pause: PauseGate,
    /// Threads to kick out of `KVM_RUN`; emptied (under the lock) before they are joined, so
    /// a kick never targets a joined thread.
    pub threads: Mutex<Vec<libc::pthread_t>>,
    /// When a requested graceful stop gives up and stops the VM.
    pub graceful_deadline: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    /// Interrupt every vCPU's `KVM_RUN` so it looks at the stop and pause flags.
    pub fn kick_all(&self, signal: libc::c_int) {
        let threads = lock(&self.threads);
        for &t in threads.iter() {
            // SAFETY: `t` belongs to a vCPU thread that is not joined while it is listed
            // (the list is emptied under this lock first), so the pthread_t is still valid.
            unsafe { libc::pthread_kill(t, signal) };
        }
    }

    fn report_crash(&self, what: String) {
        lock(&self.crash).get_or_insert(what);
        // Every vCPU stops at its next exit; the supervisor wakes and reports the crash.
        self.stopping.store(true, Ordering::Release);
        let _ = self.exit.event().write(1);
    }
}

/// Run `vcpu` until the VM ends. Called on the vCPU's own thread.
pub fn run(mut vcpu: VcpuFd, index: u32, shared: Arc<Shared>) {
    while !shared.stopping.load(Ordering::Acquire) && shared.exit.pending().is_none() {
        if shared.pause.is_paused() {
            settle(&mut vcpu, index, &shared);
            vcpu = shared.pause.park(index as usize, vcpu);
            continue;
        }
        step(&mut vcpu, index, &shared);
    }
}

/// Finish the exit KVM is still in the middle of before the vCPU parks: the result of a
/// port or MMIO read (and the step past an I/O instruction) only reaches the registers at
/// the next `KVM_RUN`, so a paused vCPU would otherwise show, and a snapshot record, an
/// instruction half done. Runs with `immediate_exit`, which completes it without entering
/// the guest; a string instruction may need a few rounds.
fn settle(vcpu: &mut VcpuFd, index: u32, shared: &Shared) {
    vcpu.set_kvm_immediate_exit(1);
    for _ in 0..MAX_SETTLE_RUNS {
        if !step(vcpu, index, shared) {
            break;
        }
    }
    vcpu.set_kvm_immediate_exit(0);
}

/// Run the vCPU once and handle its exit. False when `KVM_RUN` returned without an exit
/// (interrupted by a kick, or failed).
fn step(vcpu: &mut VcpuFd, index: u32, shared: &Shared) -> bool {
    match vcpu.run() {
        Ok(VcpuExit::IoIn(port, data)) => {
            shared.pio.read(u64::from(port), data);
        }
        Ok(VcpuExit::IoOut(port, data)) => {
            shared.pio.write(u64::from(port), data);
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            shared.mmio.read(addr, data);
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => {
            shared.mmio.write(addr, data);
        }
        Ok(VcpuExit::Shutdown) => shared.exit.request(ExitRequest::Reboot),
        Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => shared.exit.request(ExitRequest::Poweroff),
            KVM_SYSTEM_EVENT_RESET => shared.exit.request(ExitRequest::Reboot),
            KVM_SYSTEM_EVENT_CRASH => {
                shared.report_crash(format!("vCPU {index}: guest reported a crash"))
            }
            other => shared.report_crash(format!("vCPU {index}: unknown system event {other}")),
        },
        Ok(VcpuExit::Hlt) => {
            // With the in-kernel LAPIC, KVM parks halted vCPUs itself; a HLT exit
            // means interrupts can never wake this vCPU again.
            shared.report_crash(format!("vCPU {index}: halted with interrupts disabled"));
        }
        Ok(VcpuExit::InternalError) => {
            let why = describe(
                vcpu,
                &shared.mem,
                "KVM_EXIT_INTERNAL_ERROR (the host could not emulate an instruction)",
            );
            shared.report_crash(format!("vCPU {index}: {why}"));
        }
        Ok(VcpuExit::FailEntry(reason, cpu)) => {
            let why = describe(
                vcpu,
                &shared.mem,
                &format!("KVM_EXIT_FAIL_ENTRY (hardware reason {reason:#x}, cpu {cpu})"),
            );
            shared.report_crash(format!("vCPU {index}: {why}"));
        }
        Ok(VcpuExit::Intr | VcpuExit::IrqWindowOpen | VcpuExit::IoapicEoi(_)) => {}
        Ok(other) => {
            let exit = format!("unhandled exit {other:?}");
            let why = describe(vcpu, &shared.mem, &exit);
            shared.report_crash(format!("vCPU {index}: {why}"));
        }
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return false,
        Err(e) => {
            shared.report_crash(format!("vCPU {index}: KVM_RUN failed: {e}"));
            return false;
        }
    }
    true
}

/// `what`, the guest's RIP and the instruction bytes there — what a user on an emulating
/// host needs to see which instruction it lacks.
fn describe(vcpu: &VcpuFd, mem: &GuestMemoryMmap, what: &str) -> String {
    let Ok(regs) = vcpu.get_regs() else {
        return what.to_string();
    };
    let linear = vcpu
        .get_sregs()
        .map(|s| s.cs.base.wrapping_add(regs.rip))
        .unwrap_or(regs.rip);
    let phys = match vcpu.translate_gva(linear) {
        Ok(t) if t.valid != 0 => t.physical_address,
        _ => linear,
    };
    let mut bytes = [0u8; CRASH_BYTES];
    let shown = match mem.read_slice(&mut bytes, GuestAddress(phys)) {
        Ok(()) => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "unreadable".to_string(),
    };
    format!(
        "{what} at RIP {:#x} (guest physical {phys:#x}), instruction bytes: {shown}",
        regs.rip
    )
}
