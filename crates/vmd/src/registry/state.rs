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
