//! Loading configurations into the registry: startup, `load`, `reload`/SIGHUP and `reset`
//! (spec §4.9, F-LIFE-18).

use std::fmt;

use ipc::proto::ResetKind;
use vmconf::{Config, Global};

use super::definition::Draft;
use super::error::Failure;
use super::permission::Caller;
use super::stagger::Stagger;
use super::state::RunState;
use super::{Origin, Registry};

/// A VM block that was not registered, for the log; the rest of the file still loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadProblem {
    /// A VM of that name is already known (vmd's "skipped (running|already exists)").
    Skipped { name: String, running: bool },
    /// Registration refused it.
    Refused { name: String, failure: Failure },
}

impl fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadProblem::Skipped { name, running } => write!(
                f,
                "vm \"{name}\" skipped ({})",
                if *running {
                    "running"
                } else {
                    "already exists"
                }
            ),
            LoadProblem::Refused { name, failure } => {
                write!(f, "vm \"{name}\" not registered: {failure}")
            }
        }
    }
}

impl Registry {
    /// Adds a configuration's switches and VMs (startup and `vmctl load`): known names are
    /// skipped, enabled VMs queue for the staggered start. Global settings are untouched.
    pub fn load_config(&mut self, cfg: &Config) -> Vec<LoadProblem> {
        for sw in &cfg.switches {
            if !self.switches.iter().any(|s| s.name == sw.name) {
                self.switches.push(sw.clone());
            }
        }
        let mut problems = Vec::new();
        let mut queued = false;
        for vm in &cfg.vms {
            if let Some(i) = self.find_name(&vm.name) {
                problems.push(LoadProblem::Skipped {
                    name: vm.name.clone(),
                    running: self.vms[i].is_running(),
                });
                continue;
            }
            match self.register(Draft::from_config(vm), &Caller::root(), Origin::Config) {
                Ok(idx) if vm.enabled => {
                    self.vms[idx].run = RunState::Waiting;
                    queued = true;
                }
                Ok(_) => {}
                Err(failure) => problems.push(LoadProblem::Refused {
                    name: vm.name.clone(),
                    failure,
                }),
            }
        }
        if queued {
            // A load starts a new staggered start right away, as vmd does.
            self.stagger = Stagger::default();
        }
        problems
    }

    /// `vmctl reload` / SIGHUP with the re-read configuration: every VM without a process
    /// is forgotten (ids stay claimed), running ones keep their definition and id, and the
    /// new file's VMs, switches and global settings take over.
    pub fn reload(&mut self, cfg: &Config) -> Vec<LoadProblem> {
        self.vms.retain(|e| e.is_running());
        self.switches.clear();
        self.global = cfg.global.clone();
        self.load_config(cfg)
    }

    /// `vmctl reset`. For `Vms` and `All` the caller has terminated every running VM first;
    /// their late exit events then find nothing and are ignored.
    pub fn reset(&mut self, kind: ResetKind) {
        if matches!(kind, ResetKind::Vms | ResetKind::All) {
            self.vms.clear();
            self.ids.clear();
            self.stagger = Stagger::default();
        }
        if matches!(kind, ResetKind::Switches | ResetKind::All) {
            self.switches.clear();
        }
        if kind == ResetKind::All {
            self.global = Global::default();
        }
    }
}
