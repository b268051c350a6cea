//! The run state of each VM (spec §4.13) and the events that move it: the VM process came
//! up, paused, resumed, failed to start or exited (F-LIFE-13, F-LIFE-20).

use std::time::Instant;

use ipc::proto::VmState;

use super::error::Failure;
use super::permission::Caller;
use super::start::StartPlan;
use super::{Origin, Registry, VmId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Not running (including disabled).
    Stopped,
    /// Queued by the staggered start.
    Waiting,
    /// A run was planned; the process may not be up yet (`pid` is `None` until then).
    Running(Run),
}

/// One run of a VM, from the start plan to the exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    /// Tags this run's events (F-LIFE-23).
    pub generation: u64,
    pub pid: Option<u32>,
    pub tty: Option<String>,
    /// Who started it: the status owner and the one permission checks use while it runs.
    pub started_by: Caller,
    pub paused: bool,
    /// A stop was requested: a guest reboot now ends the VM instead of restarting it.
    pub stopping: bool,
    /// `stop -f` was requested.
    pub forced: bool,
}

impl RunState {
    /// `status`'s word, with vmd's precedence paused > waiting > stopping > running.
    pub(crate) fn status(&self) -> VmState {
        match self {
            RunState::Stopped => VmState::Stopped,
            RunState::Waiting => VmState::Waiting,
            RunState::Running(r) if r.paused => VmState::Paused,
            RunState::Running(r) if r.stopping => VmState::Stopping,
            RunState::Running(_) => VmState::Running,
        }
    }
}

/// How a VM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off, or a requested shutdown completed.
    Poweroff,
    /// The guest reset (triple fault, reboot): vmd restarts it.
    Reboot,
    /// The VM process failed.
    Crash,
    /// Killed by `stop -f` or daemon shutdown.
    Forced,
}

/// What the parent does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again, keeping its console (the plan carries the tty).
    Restart(Box<StartPlan>),
    /// A configured VM: keep the definition, close its console.
    KeepStopped,
    /// A VM created by `vmctl start`: it is gone from the registry.
    Remove,
}

/// The outcome of [`Registry::vm_exited`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub id: VmId,
    /// Report "forced to terminate" to waiters.
    pub forced: bool,
    pub after: AfterExit,
    /// Why a guest reboot did not restart the VM, for the log.
    pub note: Option<String>,
}

fn not_found(id: VmId) -> Failure {
    Failure::errno(libc::ENOENT, format!("vm {id} not found"))
}

impl Registry {
    /// The current run of `id` if it is `generation`; ESTALE for an event of an earlier run.
    fn current_run(&mut self, id: VmId, generation: u64) -> Result<(usize, &mut Run), Failure> {
        let idx = self.find_id(id).ok_or_else(|| not_found(id))?;
        match &mut self.vms[idx].run {
            RunState::Running(run) if run.generation == generation => Ok((idx, run)),
            _ => Err(Failure::errno(
                libc::ESTALE,
                format!("vm {id}: event for an earlier run ignored"),
            )),
        }
    }

    /// The VM process of the run `generation` is up.
    pub fn mark_running(
        &mut self,
        id: VmId,
        generation: u64,
        pid: u32,
        tty: String,
    ) -> Result<(), Failure> {
        let (_, run) = self.current_run(id, generation)?;
        run.pid = Some(pid);
        run.tty = Some(tty);
        Ok(())
    }

    /// The VM process confirmed a pause.
    pub fn mark_paused(&mut self, id: VmId) -> Result<(), Failure> {
        self.set_paused(id, true)
    }

    /// The VM process confirmed an unpause.
    pub fn mark_unpaused(&mut self, id: VmId) -> Result<(), Failure> {
        self.set_paused(id, false)
    }

    fn set_paused(&mut self, id: VmId, paused: bool) -> Result<(), Failure> {
        let idx = self.find_id(id).ok_or_else(|| not_found(id))?;
        match &mut self.vms[idx].run {
            RunState::Running(run) => {
                run.paused = paused;
                Ok(())
            }
            _ => Err(Failure::errno(
                libc::EINVAL,
                format!("vm {id} is not running"),
            )),
        }
    }

    /// The parent could not start the run `generation` (an image failed to open, the VM
    /// process failed to come up). A configured VM stays, stopped; a requested one goes
    /// (spec §4.6).
    pub fn start_failed(&mut self, id: VmId, generation: u64) -> Result<AfterExit, Failure> {
        let (idx, _) = self.current_run(id, generation)?;
        Ok(self.stop_entry(idx))
    }

    /// The VM process of run `generation` exited. A guest reboot restarts the VM with the
    /// same console unless a stop was requested, the VM has a forced boot device, or the
    /// restart rate limit trips; otherwise configured VMs stay stopped and requested ones
    /// are removed.
    pub fn vm_exited(
        &mut self,
        id: VmId,
        generation: u64,
        exit: Exit,
        now: Instant,
    ) -> Result<Ended, Failure> {
        let (idx, run) = self.current_run(id, generation)?;
        let run = run.clone();
        let forced = run.forced || exit == Exit::Forced;
        let mut note = None;
        if exit == Exit::Reboot && !run.stopping {
            if self.vms[idx].def.boot_device.is_some() {
                note = Some(format!("vm {id} has a forced boot device: not restarted"));
            } else {
                match self.begin_start(idx, run.started_by, None, run.tty, now) {
                    Ok(plan) => {
                        return Ok(Ended {
                            id,
                            forced: false,
                            after: AfterExit::Restart(Box::new(plan)),
                            note: None,
                        })
                    }
                    Err(f) => note = Some(f.message),
                }
            }
        }
        Ok(Ended {
            id,
            forced,
            after: self.stop_entry(idx),
            note,
        })
    }

    /// Ends the VM's run: configured VMs persist as stopped, requested ones vanish.
    fn stop_entry(&mut self, idx: usize) -> AfterExit {
        match self.vms[idx].origin {
            Origin::Config => {
                self.vms[idx].run = RunState::Stopped;
                AfterExit::KeepStopped
            }
            Origin::Request => {
                self.vms.remove(idx);
                AfterExit::Remove
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use ipc::proto::{DiskSpec, StartRequest, VmRef, VmState};

    use super::super::testutil::{config, registry, vm};
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn started(r: &mut Registry, name: &str, now: Instant) -> StartPlan {
        let req = StartRequest {
            vm: Some(VmRef::Name(name.into())),
            ..StartRequest::default()
        };
        r.start_request(&req, &Caller::root(), now).unwrap()
    }

    fn with_vm(v: vmconf::Vm) -> Registry {
        let mut r = registry();
        assert!(r.load_config(&config(vec![v])).is_empty());
        r
    }

    fn state(r: &Registry, id: VmId) -> Option<VmState> {
        r.get(&VmRef::Id(id)).map(|e| e.state())
    }

    #[test]
    fn mark_running_records_pid_and_tty() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        assert_eq!(r.get(&VmRef::Id(p.id)).unwrap().pid(), None);
        r.mark_running(p.id, p.generation, 4242, "/dev/pts/3".into())
            .unwrap();
        assert_eq!(r.get(&VmRef::Id(p.id)).unwrap().pid(), Some(4242));
        assert_eq!(state(&r, p.id), Some(VmState::Running));
        assert_eq!(r.running_ids(), vec![p.id]);
    }

    #[test]
    fn config_vm_is_kept_stopped_after_exit() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        let ended = r.vm_exited(p.id, p.generation, Exit::Poweroff, t0).unwrap();
        assert_eq!(ended.after, AfterExit::KeepStopped);
        assert!(!ended.forced);
        assert_eq!(state(&r, p.id), Some(VmState::Stopped));
        assert!(r.running_ids().is_empty());
    }

    #[test]
    fn adhoc_vm_is_removed_after_exit() {
        let mut r = registry();
        let t0 = Instant::now();
        let req = StartRequest {
            vm: Some(VmRef::Name("tmp".into())),
            disks: vec![DiskSpec {
                path: PathBuf::from("/tmp.img"),
                format: None,
            }],
            ..StartRequest::default()
        };
        let p = r.start_request(&req, &Caller::root(), t0).unwrap();
        let ended = r.vm_exited(p.id, p.generation, Exit::Crash, t0).unwrap();
        assert_eq!(ended.after, AfterExit::Remove);
        assert_eq!(state(&r, p.id), None);
    }

    #[test]
    fn guest_reboot_restarts_with_the_same_console() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        r.mark_running(p.id, p.generation, 10, "/dev/pts/3".into())
            .unwrap();
        let ended = r
            .vm_exited(p.id, p.generation, Exit::Reboot, t0 + 60 * SEC)
            .unwrap();
        let AfterExit::Restart(plan) = ended.after else {
            panic!("not restarted: {ended:?}");
        };
        assert_eq!(plan.id, p.id);
        assert_eq!(plan.tty.as_deref(), Some("/dev/pts/3"));
        assert_ne!(plan.generation, p.generation);
        // Until the new process reports, the VM runs without a pid.
        assert_eq!(r.get(&VmRef::Id(p.id)).unwrap().pid(), None);
        assert_eq!(state(&r, p.id), Some(VmState::Running));
    }

    #[test]
    fn reboot_after_a_stop_request_stops() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        r.stop_request(&VmRef::Id(p.id), &Caller::root(), false)
            .unwrap();
        let ended = r
            .vm_exited(p.id, p.generation, Exit::Reboot, t0 + 60 * SEC)
            .unwrap();
        assert_eq!(ended.after, AfterExit::KeepStopped);
        assert_eq!(ended.note, None);
    }

    #[test]
    fn reboot_with_a_forced_boot_device_stops() {
        let mut v = vm("inst");
        v.boot_device = Some(vmconf::BootDevice::Cdrom);
        let mut r = with_vm(v);
        let t0 = Instant::now();
        let p = started(&mut r, "inst", t0);
        let ended = r
            .vm_exited(p.id, p.generation, Exit::Reboot, t0 + 60 * SEC)
            .unwrap();
        assert_eq!(ended.after, AfterExit::KeepStopped);
        assert!(ended.note.unwrap().contains("forced boot device"));
    }

    #[test]
    fn crash_and_poweroff_do_not_restart() {
        for exit in [Exit::Crash, Exit::Poweroff, Exit::Forced] {
            let mut r = with_vm(vm("web"));
            let t0 = Instant::now();
            let p = started(&mut r, "web", t0);
            let ended = r
                .vm_exited(p.id, p.generation, exit, t0 + 60 * SEC)
                .unwrap();
            assert_eq!(ended.after, AfterExit::KeepStopped, "{exit:?}");
            assert_eq!(ended.forced, exit == Exit::Forced);
        }
    }

    #[test]
    fn reboot_loop_trips_the_rate_limit() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let mut p = started(&mut r, "web", t0);
        for i in 1..=2 {
            let ended = r
                .vm_exited(p.id, p.generation, Exit::Reboot, t0 + i * SEC)
                .unwrap();
            let AfterExit::Restart(next) = ended.after else {
                panic!("restart {i} refused");
            };
            p = *next;
        }
        let ended = r
            .vm_exited(p.id, p.generation, Exit::Reboot, t0 + 3 * SEC)
            .unwrap();
        assert_eq!(ended.after, AfterExit::KeepStopped);
        assert!(ended.note.unwrap().contains("restarted too quickly"));
        assert_eq!(state(&r, p.id), Some(VmState::Stopped));
    }

    #[test]
    fn events_of_an_earlier_run_are_ignored() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let first = started(&mut r, "web", t0);
        r.vm_exited(first.id, first.generation, Exit::Poweroff, t0)
            .unwrap();
        let second = started(&mut r, "web", t0 + 60 * SEC);
        let late = r.vm_exited(first.id, first.generation, Exit::Poweroff, t0 + 61 * SEC);
        assert_eq!(late.unwrap_err().errno, libc::ESTALE);
        assert_eq!(
            r.mark_running(first.id, first.generation, 1, "x".into())
                .unwrap_err()
                .errno,
            libc::ESTALE
        );
        assert_eq!(state(&r, second.id), Some(VmState::Running));
    }

    #[test]
    fn events_for_unknown_vms_are_enoent() {
        let mut r = registry();
        let f = r
            .vm_exited(9, 1, Exit::Poweroff, Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::ENOENT);
        assert_eq!(r.mark_paused(9).unwrap_err().errno, libc::ENOENT);
    }

    #[test]
    fn failed_start_keeps_config_vms_and_drops_adhoc_ones() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        assert_eq!(
            r.start_failed(p.id, p.generation),
            Ok(AfterExit::KeepStopped)
        );
        assert_eq!(state(&r, p.id), Some(VmState::Stopped));

        let req = StartRequest {
            vm: Some(VmRef::Name("tmp".into())),
            boot: Some(PathBuf::from("/bsd")),
            ..StartRequest::default()
        };
        let p = r.start_request(&req, &Caller::root(), t0).unwrap();
        assert_eq!(r.start_failed(p.id, p.generation), Ok(AfterExit::Remove));
        assert_eq!(state(&r, p.id), None);
    }

    #[test]
    fn forced_stop_is_reported_as_forced() {
        let mut r = with_vm(vm("web"));
        let t0 = Instant::now();
        let p = started(&mut r, "web", t0);
        r.stop_request(&VmRef::Id(p.id), &Caller::root(), true)
            .unwrap();
        // The VM process may report a plain exit; the request still made it forced.
        let ended = r.vm_exited(p.id, p.generation, Exit::Poweroff, t0).unwrap();
        assert!(ended.forced);
    }

    #[test]
    fn pause_marks_and_status_precedence() {
        let mut r = with_vm(vm("web"));
        let p = started(&mut r, "web", Instant::now());
        r.mark_paused(p.id).unwrap();
        assert_eq!(state(&r, p.id), Some(VmState::Paused));
        r.stop_request(&VmRef::Id(p.id), &Caller::root(), false)
            .unwrap();
        // paused > stopping
        assert_eq!(state(&r, p.id), Some(VmState::Paused));
        r.mark_unpaused(p.id).unwrap();
        assert_eq!(state(&r, p.id), Some(VmState::Stopping));
    }

    #[test]
    fn pausing_a_stopped_vm_is_einval() {
        let mut r = with_vm(vm("web"));
        assert_eq!(r.mark_paused(1).unwrap_err().errno, libc::EINVAL);
    }
}
