//! The vmm process: starts one VM process per VM (fork+exec of vmd in the `vm` role),
//! relays commands to them, reaps them, and reports their ends to the parent. Runs as the
//! unprivileged vmd user; every descriptor a VM needs arrives from the parent.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipc::Channel;

use super::internal::{Launch, ParentToVmm, VmCommand, VmEnd, VmReport, VmmToParent};
use super::spawn::{self, Inherit};
use super::{log, privdrop};
use crate::{log_debug, log_info, log_warn};

/// How long a VM process gets to end after a terminate command before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

struct Slot {
    chan: Arc<Channel>,
    pid: u32,
}

type Slots = Arc<Mutex<HashMap<u32, Slot>>>;

fn lock(s: &Slots) -> MutexGuard<'_, HashMap<u32, Slot>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Entry point of the `vmm` role.
pub fn main(parent: Channel, inherit: &Inherit) -> ExitCode {
    log::init("vmm", inherit.foreground, inherit.verbosity);
    match privdrop::lookup_user(privdrop::VMD_USER).and_then(privdrop::drop_to) {
        Ok(()) => {}
        Err(e) => {
            log_warn!("cannot drop privileges to {}: {e}", privdrop::VMD_USER);
            return ExitCode::FAILURE;
        }
    }
    let parent = Arc::new(parent);
    let slots: Slots = Arc::default();
    let mut inherit = inherit.clone();
    loop {
        let (msg, fds): (ParentToVmm, Vec<OwnedFd>) = match parent.recv() {
            Ok(m) => m,
            Err(e) => {
                log_debug!("parent channel closed ({e}): terminating every VM");
                kill_all(&slots);
                return ExitCode::SUCCESS;
            }
        };
        match msg {
            ParentToVmm::Start(launch) => start_vm(&parent, &slots, &inherit, launch, fds),
            ParentToVmm::Shutdown { id } => command(&slots, id, VmCommand::Shutdown),
            ParentToVmm::Terminate { id } => terminate(&slots, id),
            ParentToVmm::Pause { id } => command(&slots, id, VmCommand::Pause),
            ParentToVmm::Unpause { id } => command(&slots, id, VmCommand::Unpause),
            ParentToVmm::Break { id } => command(&slots, id, VmCommand::Break),
            ParentToVmm::Send {
                id,
                definition,
                live,
            } => send(
                &parent,
                &slots,
                id,
                VmCommand::Send { definition, live },
                fds,
            ),
            ParentToVmm::CancelReceive { id } => cancel_receive(&slots, id),
            ParentToVmm::Verbose { level } => {
                log::set_verbosity(level);
                inherit.verbosity = level;
                for slot in lock(&slots).values() {
                    let _ = slot.chan.send(&VmCommand::Verbose(level), &[]);
                }
            }
        }
    }
}

fn command(slots: &Slots, id: u32, cmd: VmCommand) {
    if let Some(slot) = lock(slots).get(&id) {
        if let Err(e) = slot.chan.send(&cmd, &[]) {
            log_warn!("vm {id}: {cmd:?}: {e}");
        }
    }
}

/// Hand a send to the VM process with its stream fd; a VM without a process (it ended just
/// now) fails the send at once so the client is answered.
fn send(parent: &Channel, slots: &Slots, id: u32, cmd: VmCommand, fds: Vec<OwnedFd>) {
    let chan = lock(slots).get(&id).map(|s| s.chan.clone());
    let sent = match &chan {
        Some(chan) => {
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            chan.send(&cmd, &borrowed).map_err(|e| format!("{e}"))
        }
        None => Err("the VM process is gone".to_string()),
    };
    if let Err(message) = sent {
        log_warn!("vm {id}: send: {message}");
        let failed = VmmToParent::SendFailed {
            id,
            errno: libc::ESRCH,
            message,
        };
        let _ = parent.send(&failed, &[]);
    }
}

/// Signal a VM process that may still be reading a received stream: it gives up the read
/// and ends ([`super::vmproc::CANCEL_SIGNAL`]); one that runs its guest already ignores it.
fn cancel_receive(slots: &Slots, id: u32) {
    if let Some(pid) = lock(slots).get(&id).map(|s| s.pid) {
        log_info!("vm {id}: its receive's client went away: cancelling the receive");
        // SAFETY: signalling a child process of ours by pid; it is reaped only by our watcher.
        unsafe { libc::kill(pid as libc::pid_t, super::vmproc::CANCEL_SIGNAL) };
    }
}

fn terminate(slots: &Slots, id: u32) {
    command(slots, id, VmCommand::Terminate);
    let Some(pid) = lock(slots).get(&id).map(|s| s.pid) else {
        return;
    };
    let slots = slots.clone();
    std::thread::spawn(move || {
        std::thread::sleep(TERMINATE_GRACE);
        if lock(&slots).get(&id).is_some_and(|s| s.pid == pid) {
            log_warn!("vm {id}: did not stop in {TERMINATE_GRACE:?}: killing pid {pid}");
            kill(pid);
        }
    });
}

fn kill(pid: u32) {
    // SAFETY: signalling a child process of ours by pid; it is reaped only by our watcher.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

fn kill_all(slots: &Slots) {
    for slot in lock(slots).values() {
        kill(slot.pid);
    }
}

fn start_vm(
    parent: &Arc<Channel>,
    slots: &Slots,
    inherit: &Inherit,
    launch: Launch,
    fds: Vec<OwnedFd>,
) {
    let id = launch.id;
    let fail = |message: String| {
        log_warn!("vm {id}: {message}");
        let _ = parent.send(
            &VmmToParent::StartFailed {
                id,
                errno: libc::EIO,
                message,
            },
            &[],
        );
    };
    let (ours, theirs) = match Channel::pair() {
        Ok(p) => p,
        Err(e) => return fail(format!("socketpair: {e}")),
    };
    let child = match spawn::spawn("vm", theirs, inherit, &[]) {
        Ok(c) => c,
        Err(e) => return fail(format!("starting the VM process: {e}")),
    };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    if let Err(e) = ours.send(&launch, &borrowed) {
        kill(child.id());
        return fail(format!("sending the launch data: {e}"));
    }
    drop(fds);
    let chan = Arc::new(ours);
    lock(slots).insert(
        id,
        Slot {
            chan: chan.clone(),
            pid: child.id(),
        },
    );
    let (parent, slots) = (parent.clone(), slots.clone());
    std::thread::spawn(move || watch(id, &chan, child, &parent, &slots));
}

/// Relay one VM process's reports until it ends, then reap it and report the end.
fn watch(id: u32, chan: &Channel, mut child: Child, parent: &Channel, slots: &Slots) {
    let pid = child.id();
    let mut running = false;
    let mut failed = false;
    let mut end = None;
    while let Ok((report, _)) = chan.recv::<VmReport>() {
        let msg = match report {
            VmReport::Running => {
                running = true;
                VmmToParent::Started { id, pid }
            }
            VmReport::Failed { errno, message } => {
                failed = true;
                VmmToParent::StartFailed { id, errno, message }
            }
            VmReport::Paused(paused) => VmmToParent::Paused { id, paused },
            VmReport::Sent => VmmToParent::Sent { id },
            VmReport::SendFailed { errno, message } => {
                VmmToParent::SendFailed { id, errno, message }
            }
            VmReport::Ended(e) => {
                end = Some(e);
                continue;
            }
        };
        let _ = parent.send(&msg, &[]);
    }
    let status = child.wait();
    lock(slots).remove(&id);
    log_info!("vm {id}: process {pid} ended ({status:?})");
    let msg = if running {
        VmmToParent::Exited {
            id,
            end: end.unwrap_or(VmEnd::Crash),
        }
    } else if failed {
        return;
    } else {
        VmmToParent::StartFailed {
            id,
            errno: libc::EIO,
            message: format!("VM process ended before it ran ({status:?})"),
        }
    };
    let _ = parent.send(&msg, &[]);
}
