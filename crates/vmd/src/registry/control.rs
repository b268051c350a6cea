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

    /// `vmctl send` (root only): the VM whose state to stream. It must run (its process up)
    /// and not be shutting down already.
    pub fn send_request(&self, vm: &VmRef, caller: &Caller) -> Result<VmId, Failure> {
        let e = &self.vms[self.controlled(vm, caller)?];
        match &e.run {
            RunState::Running(r) if r.stopping => Err(Failure::errno(
                libc::EALREADY,
                format!("vm \"{}\" is already shutting down", e.def.name),
            )),
            RunState::Running(r) if r.pid.is_none() => Err(Failure::errno(
                libc::EBUSY,
                format!("vm \"{}\" is still starting", e.def.name),
            )),
            RunState::Running(_) => Ok(e.id),
            _ => Err(not_running(e)),
        }
    }

    /// The stream of a `send` is complete: the VM is stopping (it ends next, and a guest
    /// reboot can no longer restart it).
    pub fn mark_sent(&mut self, id: VmId) -> Result<(), Failure> {
        let idx = self
            .find_id(id)
            .ok_or_else(|| Failure::errno(libc::ENOENT, format!("vm {id} not found")))?;
        match &mut self.vms[idx].run {
            RunState::Running(r) => {
                r.stopping = true;
                Ok(())
            }
            _ => Err(not_running(&self.vms[idx])),
        }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ipc::proto::{StartRequest, VmState};
    use vmconf::Owner;

    use super::super::testutil::{config, registry, user, vm};
    use super::super::StartPlan;
    use super::*;

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;
    const STAFF: u32 = 50;

    fn web() -> VmRef {
        VmRef::Name("web".into())
    }

    /// "web" owned by alice:staff, not started.
    fn setup() -> Registry {
        let mut v = vm("web");
        v.enabled = false;
        v.owner = Some(Owner {
            uid: ALICE,
            gid: Some(STAFF),
        });
        let mut r = registry();
        r.load_config(&config(vec![v]));
        r
    }

    fn start_as(r: &mut Registry, caller: &Caller) -> StartPlan {
        let req = StartRequest {
            vm: Some(web()),
            ..StartRequest::default()
        };
        r.start_request(&req, caller, Instant::now()).unwrap()
    }

    fn alice() -> Caller {
        user(ALICE, &[ALICE])
    }

    fn bob() -> Caller {
        user(BOB, &[BOB])
    }

    #[test]
    fn stop_of_an_unknown_vm_is_enoent() {
        let mut r = setup();
        let f = r
            .stop_request(&VmRef::Name("nope".into()), &Caller::root(), false)
            .unwrap_err();
        assert_eq!(f.errno, libc::ENOENT);
        assert_eq!(
            r.stop_request(&VmRef::Id(99), &Caller::root(), true)
                .unwrap_err()
                .errno,
            libc::ENOENT
        );
    }

    #[test]
    fn stop_of_a_stopped_vm_is_stop_invalid() {
        let mut r = setup();
        let f = r.stop_request(&web(), &alice(), false).unwrap_err();
        assert_eq!(f.code, Some(VmdError::StopInvalid));
        assert_eq!(f.errno, libc::EINVAL);
    }

    #[test]
    fn stop_marks_stopping_and_a_second_stop_is_ealready() {
        let mut r = setup();
        let p = start_as(&mut r, &alice());
        assert_eq!(
            r.stop_request(&web(), &alice(), false),
            Ok(StopAction {
                id: p.id,
                force: false
            })
        );
        assert_eq!(r.get(&web()).unwrap().state(), VmState::Stopping);
        let f = r.stop_request(&web(), &alice(), false).unwrap_err();
        assert_eq!(f.errno, libc::EALREADY);
        // -f always goes through.
        assert_eq!(
            r.stop_request(&web(), &alice(), true),
            Ok(StopAction {
                id: p.id,
                force: true
            })
        );
    }

    #[test]
    fn stop_by_another_user_is_eperm() {
        let mut r = setup();
        start_as(&mut r, &alice());
        let f = r.stop_request(&web(), &bob(), false).unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
        assert_eq!(r.get(&web()).unwrap().state(), VmState::Running);
    }

    #[test]
    fn group_member_and_root_may_stop() {
        let mut r = setup();
        start_as(&mut r, &alice());
        assert!(r
            .stop_request(&web(), &user(BOB, &[BOB, STAFF]), false)
            .is_ok());
        assert!(r.stop_request(&web(), &Caller::root(), true).is_ok());
    }

    #[test]
    fn a_running_vm_belongs_to_its_starter() {
        // Root started alice's VM: while it runs, alice (no group membership) may not
        // stop it, as in vmd; staff members still may.
        let mut r = setup();
        start_as(&mut r, &Caller::root());
        assert_eq!(
            r.stop_request(&web(), &alice(), false).unwrap_err().errno,
            libc::EPERM
        );
        assert!(r.pause_request(&web(), &user(ALICE, &[STAFF])).is_ok());
    }

    #[test]
    fn wait_needs_a_running_vm_and_permission() {
        let mut r = setup();
        assert_eq!(
            r.wait_request(&web(), &alice()).unwrap_err().code,
            Some(VmdError::StopInvalid)
        );
        let p = start_as(&mut r, &alice());
        assert_eq!(r.wait_request(&web(), &alice()), Ok(p.id));
        assert_eq!(
            r.wait_request(&web(), &bob()).unwrap_err().errno,
            libc::EPERM
        );
        assert_eq!(
            r.wait_request(&VmRef::Id(42), &alice()).unwrap_err().errno,
            libc::ENOENT
        );
    }

    #[test]
    fn pause_and_unpause_rules() {
        let mut r = setup();
        assert_eq!(
            r.pause_request(&web(), &alice()).unwrap_err().errno,
            libc::EINVAL
        );
        let p = start_as(&mut r, &alice());
        assert_eq!(
            r.pause_request(&web(), &bob()).unwrap_err().errno,
            libc::EPERM
        );
        assert_eq!(
            r.unpause_request(&web(), &alice()).unwrap_err().errno,
            libc::EINVAL
        );
        assert_eq!(r.pause_request(&web(), &alice()), Ok(p.id));
        r.mark_paused(p.id).unwrap();
        assert_eq!(
            r.pause_request(&web(), &alice()).unwrap_err().errno,
            libc::EALREADY
        );
        assert_eq!(r.unpause_request(&web(), &alice()), Ok(p.id));
        assert_eq!(
            r.unpause_request(&VmRef::Name("x".into()), &alice())
                .unwrap_err()
                .errno,
            libc::ENOENT
        );
    }

    #[test]
    fn console_for_the_owner_once_the_tty_exists() {
        let mut r = setup();
        assert_eq!(
            r.console_request(&web(), &alice()).unwrap_err().errno,
            libc::ENOENT
        );
        let p = start_as(&mut r, &alice());
        assert_eq!(
            r.console_request(&web(), &alice()).unwrap_err().errno,
            libc::EAGAIN
        );
        r.mark_running(p.id, p.generation, 7, "/dev/pts/5".into())
            .unwrap();
        assert_eq!(
            r.console_request(&web(), &alice()),
            Ok((p.id, "/dev/pts/5".to_owned()))
        );
        assert_eq!(
            r.console_request(&web(), &bob()).unwrap_err().errno,
            libc::EPERM
        );
    }

    #[test]
    fn break_needs_a_vm_process() {
        let mut r = setup();
        let p = start_as(&mut r, &alice());
        assert_eq!(
            r.break_request(&web(), &alice()).unwrap_err().errno,
            libc::EINVAL
        );
        r.mark_running(p.id, p.generation, 7, "/dev/pts/5".into())
            .unwrap();
        assert_eq!(r.break_request(&web(), &alice()), Ok(p.id));
        assert_eq!(
            r.break_request(&web(), &bob()).unwrap_err().errno,
            libc::EPERM
        );
    }

    #[test]
    fn send_needs_a_running_vm_process_and_marks_it_stopping_when_done() {
        let mut r = setup();
        let root = Caller::root();
        assert_eq!(
            r.send_request(&VmRef::Id(9), &root).unwrap_err().errno,
            libc::ENOENT
        );
        assert_eq!(
            r.send_request(&web(), &root).unwrap_err().errno,
            libc::EINVAL
        );
        let p = start_as(&mut r, &alice());
        assert_eq!(
            r.send_request(&web(), &root).unwrap_err().errno,
            libc::EBUSY
        );
        r.mark_running(p.id, p.generation, 7, "/dev/pts/5".into())
            .unwrap();
        assert_eq!(r.send_request(&web(), &root), Ok(p.id));
        r.mark_sent(p.id).unwrap();
        assert_eq!(r.get(&web()).unwrap().state(), VmState::Stopping);
        assert_eq!(
            r.send_request(&web(), &root).unwrap_err().errno,
            libc::EALREADY
        );
    }
}
