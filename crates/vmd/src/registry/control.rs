//! The checks behind stop, wait, pause, unpause, console and break (spec §4.5, §4.7, §4.8;
//! F-LIFE-08, F-LIFE-15). Each answers with the VM's id for the parent to act on, or the
//! errno vmctl expects.

use ipc::proto::{VmRef, VmdError};

use super::error::Failure;
use super::permission::{owner_admits, Caller};
use super::state::RunState;
use super::{Registry, VmEntry, VmId};

/// What the parent does for an accepted stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopAction {
    pub id: VmId,
    /// Kill the VM now (`-f`) instead of asking the guest to shut down.
    pub force: bool,
}

/// vm_checkperm for an existing VM: while it runs, its starter (and the owner's group); when
/// stopped, its configured owner (and group). Root always.
pub(crate) fn may_control(e: &VmEntry, caller: &Caller) -> bool {
    let uid = match &e.run {
        RunState::Running(r) => r.started_by.uid,
        RunState::Stopped | RunState::Waiting => e.def.owner.uid,
    };
    owner_admits(uid, e.def.owner, caller)
}

fn denied(e: &VmEntry, caller: &Caller) -> Failure {
    Failure::errno(
        libc::EPERM,
        format!(
            "vm \"{}\": permission denied for uid {}",
            e.def.name, caller.uid
        ),
    )
}

fn not_found(vm: &VmRef) -> Failure {
    let message = match vm {
        VmRef::Id(id) => format!("vm {id} not found"),
        VmRef::Name(name) => format!("vm \"{name}\" not found"),
    };
    Failure::errno(libc::ENOENT, message)
}

fn not_running(e: &VmEntry) -> Failure {
    Failure::errno(
        libc::EINVAL,
        format!("vm \"{}\" is not running", e.def.name),
    )
}

/// vmctl prints "cannot stop vm that is not running" for this code.
fn stop_invalid(e: &VmEntry) -> Failure {
    Failure {
        code: Some(VmdError::StopInvalid),
        ..not_running(e)
    }
}

impl Registry {
    /// The entry `vm` names, if `caller` may act on it.
    fn controlled(&self, vm: &VmRef, caller: &Caller) -> Result<usize, Failure> {
        let idx = self.find(vm).ok_or_else(|| not_found(vm))?;
        let e = &self.vms[idx];
        if may_control(e, caller) {
            Ok(idx)
        } else {
            Err(denied(e, caller))
        }
    }

    /// `vmctl stop [-f]`, checked in vmd's order: unknown, already stopping (without -f),
    /// not running, not permitted. On success the VM is marked stopping (so a guest reboot
    /// ends it) and, with `force`, forced.
    pub fn stop_request(
        &mut self,
        vm: &VmRef,
        caller: &Caller,
        force: bool,
    ) -> Result<StopAction, Failure> {
        let idx = self.find(vm).ok_or_else(|| not_found(vm))?;
        let e = &self.vms[idx];
        match &e.run {
            RunState::Running(r) if r.stopping && !force => {
                return Err(Failure::errno(
                    libc::EALREADY,
                    format!("vm \"{}\" is already shutting down", e.def.name),
                ))
            }
            RunState::Running(_) => {}
            RunState::Stopped | RunState::Waiting => return Err(stop_invalid(e)),
        }
        if !may_control(e, caller) {
            return Err(denied(e, caller));
        }
        let id = e.id;
        if let RunState::Running(r) = &mut self.vms[idx].run {
            r.stopping = true;
            r.forced |= force;
        }
        Ok(StopAction { id, force })
    }

    /// `vmctl wait`: the id to report the termination of.
    pub fn wait_request(&self, vm: &VmRef, caller: &Caller) -> Result<VmId, Failure> {
        let idx = self.controlled(vm, caller)?;
        let e = &self.vms[idx];
        if !e.is_running() {
            return Err(stop_invalid(e));
        }
        Ok(e.id)
    }

    /// `vmctl pause`; the parent calls [`Registry::mark_paused`] once the VM confirms.
    pub fn pause_request(&self, vm: &VmRef, caller: &Caller) -> Result<VmId, Failure> {
        let e = &self.vms[self.controlled(vm, caller)?];
        match &e.run {
            RunState::Running(r) if r.paused => Err(Failure::errno(
                libc::EALREADY,
                format!("vm \"{}\" is already paused", e.def.name),
            )),
            RunState::Running(_) => Ok(e.id),
            _ => Err(not_running(e)),
        }
    }

    /// `vmctl unpause`; the parent calls [`Registry::mark_unpaused`] once the VM confirms.
    pub fn unpause_request(&self, vm: &VmRef, caller: &Caller) -> Result<VmId, Failure> {
        let e = &self.vms[self.controlled(vm, caller)?];
        match &e.run {
            RunState::Running(r) if r.paused => Ok(e.id),
            RunState::Running(_) => Err(Failure::errno(
                libc::EINVAL,
                format!("vm \"{}\" is not paused", e.def.name),
            )),
            _ => Err(not_running(e)),
        }
    }

    /// `vmctl console`: the VM's id and tty. vmd leaves this to the tty's mode; we also
    /// refuse non-owners here so they learn nothing but "not permitted".
    pub fn console_request(&self, vm: &VmRef, caller: &Caller) -> Result<(VmId, String), Failure> {
        let e = &self.vms[self.controlled(vm, caller)?];
        match &e.run {
            RunState::Running(r) => match &r.tty {
                Some(tty) => Ok((e.id, tty.clone())),
                None => Err(Failure::errno(
                    libc::EAGAIN,
                    format!("vm \"{}\" has no console yet", e.def.name),
                )),
            },
            _ => Err(Failure::errno(
                libc::ENOENT,
                format!("vm \"{}\": console not found", e.def.name),
            )),
        }
    }

    /// A BREAK on the VM's serial port (console `~B`).
    pub fn break_request(&self, vm: &VmRef, caller: &Caller) -> Result<VmId, Failure> {
        let e = &self.vms[self.controlled(vm, caller)?];
        if e.pid().is_some() {
            Ok(e.id)
        } else {
            Err(not_running(e))
        }
    }
}
