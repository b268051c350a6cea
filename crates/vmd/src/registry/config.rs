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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Instant;

    use ipc::proto::{DiskSpec, StartRequest, VmRef, VmState};
    use vmconf::{Interface, StaggeredStart};

    use super::super::testutil::{config, registry, vm};
    use super::super::{Origin, StartPlan};
    use super::*;

    fn start(r: &mut Registry, name: &str) -> StartPlan {
        let req = StartRequest {
            vm: Some(VmRef::Name(name.into())),
            ..StartRequest::default()
        };
        r.start_request(&req, &Caller::root(), Instant::now())
            .unwrap()
    }

    fn id_of(r: &Registry, name: &str) -> Option<u32> {
        r.get(&VmRef::Name(name.into())).map(|e| e.id())
    }

    #[test]
    fn load_registers_in_order_with_ids_from_one() {
        let mut r = registry();
        assert!(r.load_config(&config(vec![vm("a"), vm("b")])).is_empty());
        assert_eq!(id_of(&r, "a"), Some(1));
        assert_eq!(id_of(&r, "b"), Some(2));
        assert_eq!(r.get(&VmRef::Id(1)).unwrap().origin(), Origin::Config);
    }

    #[test]
    fn load_skips_known_names() {
        let mut r = registry();
        r.load_config(&config(vec![vm("a")]));
        start(&mut r, "a");
        let mut other = vm("a");
        other.memory = Some(2 << 30);
        let problems = r.load_config(&config(vec![other, vm("b")]));
        assert_eq!(
            problems,
            [LoadProblem::Skipped {
                name: "a".into(),
                running: true
            }]
        );
        assert_eq!(problems[0].to_string(), "vm \"a\" skipped (running)");
        assert_eq!(
            r.get(&VmRef::Id(1)).unwrap().def().memory,
            vmconf::DEFAULT_MEMORY
        );
        assert_eq!(id_of(&r, "b"), Some(2));
    }

    #[test]
    fn load_keeps_global_settings_and_adds_switches() {
        let mut r = registry();
        let mut cfg = config(vec![]);
        cfg.global.staggered_start = Some(StaggeredStart {
            parallel: 9,
            delay_secs: 1,
        });
        cfg.switches.push(vmconf::Switch {
            id: 1,
            name: "sw".into(),
            interface: "br0".into(),
            group: None,
            locked: false,
            rdomain: None,
            up: true,
            location: vmconf::Location {
                file: "x".into(),
                line: 1,
            },
        });
        r.load_config(&cfg);
        r.load_config(&cfg);
        assert_eq!(r.global().staggered_start, None);
        assert_eq!(r.switches().len(), 1);
    }

    #[test]
    fn a_refused_block_does_not_stop_the_rest() {
        let mut bad = vm("bad");
        bad.interfaces = vec![Interface::default(); 5];
        let mut r = registry();
        let problems = r.load_config(&config(vec![bad, vm("good")]));
        assert!(
            matches!(&problems[..], [LoadProblem::Refused { name, failure }]
            if name == "bad" && failure.errno == libc::EINVAL)
        );
        assert!(id_of(&r, "good").is_some());
    }

    #[test]
    fn reload_drops_stopped_vms_and_keeps_running_ones() {
        let mut r = registry();
        r.load_config(&config(vec![vm("run"), vm("gone"), vm("stay")]));
        let p = start(&mut r, "run");
        let mut changed = vm("run");
        changed.memory = Some(2 << 30);
        let problems = r.reload(&config(vec![changed, vm("stay"), vm("new")]));
        assert_eq!(
            problems,
            [LoadProblem::Skipped {
                name: "run".into(),
                running: true
            }]
        );
        assert_eq!(id_of(&r, "gone"), None);
        // The running VM keeps its old definition and id.
        let run = r.get(&VmRef::Name("run".into())).unwrap();
        assert_eq!(run.id(), p.id);
        assert_eq!(run.def().memory, vmconf::DEFAULT_MEMORY);
        assert_eq!(run.state(), VmState::Running);
        assert_eq!(
            r.get(&VmRef::Name("new".into())).unwrap().state(),
            VmState::Waiting
        );
    }

    #[test]
    fn sticky_ids_survive_reload() {
        let mut r = registry();
        r.load_config(&config(vec![vm("a"), vm("b")]));
        r.reload(&config(vec![vm("c"), vm("b"), vm("a")]));
        assert_eq!(id_of(&r, "a"), Some(1));
        assert_eq!(id_of(&r, "b"), Some(2));
        assert_eq!(id_of(&r, "c"), Some(3));
    }

    #[test]
    fn reload_regenerates_macs() {
        let mut v = vm("a");
        v.interfaces = vec![Interface::default()];
        let mut r = registry();
        r.load_config(&config(vec![v.clone()]));
        let before = r.get(&VmRef::Id(1)).unwrap().def().nics[0].mac;
        r.reload(&config(vec![v]));
        let after = r.get(&VmRef::Id(1)).unwrap().def().nics[0].mac;
        assert_ne!(before, after);
        assert_eq!(before.0[..4], after.0[..4]);
    }

    #[test]
    fn reload_takes_the_new_global_settings_and_switches() {
        let mut r = registry();
        let mut cfg = config(vec![]);
        cfg.global.staggered_start = Some(StaggeredStart {
            parallel: 1,
            delay_secs: 1,
        });
        r.reload(&cfg);
        assert_eq!(r.global().staggered_start, cfg.global.staggered_start);
    }

    #[test]
    fn reload_keeps_running_adhoc_vms() {
        let mut r = registry();
        let req = StartRequest {
            vm: Some(VmRef::Name("tmp".into())),
            disks: vec![DiskSpec {
                path: PathBuf::from("/t.img"),
                format: None,
            }],
            ..StartRequest::default()
        };
        r.start_request(&req, &Caller::root(), Instant::now())
            .unwrap();
        r.reload(&config(vec![]));
        assert_eq!(
            r.get(&VmRef::Name("tmp".into())).unwrap().origin(),
            Origin::Request
        );
    }

    #[test]
    fn reset_vms_forgets_vms_and_ids() {
        let mut r = registry();
        r.load_config(&config(vec![vm("a"), vm("b")]));
        start(&mut r, "a");
        r.reset(ResetKind::Vms);
        assert!(r.get(&VmRef::Id(1)).is_none());
        assert!(r.running_ids().is_empty());
        r.load_config(&config(vec![vm("b")]));
        assert_eq!(id_of(&r, "b"), Some(1));
    }

    #[test]
    fn reset_switches_keeps_vms() {
        let mut r = registry();
        let mut cfg = config(vec![vm("a")]);
        cfg.switches.push(vmconf::Switch {
            id: 1,
            name: "sw".into(),
            interface: "br0".into(),
            group: None,
            locked: false,
            rdomain: None,
            up: true,
            location: vmconf::Location {
                file: "x".into(),
                line: 1,
            },
        });
        r.reload(&cfg);
        r.reset(ResetKind::Switches);
        assert!(r.switches().is_empty());
        assert_eq!(id_of(&r, "a"), Some(1));
    }

    #[test]
    fn reset_all_restores_default_global_settings() {
        let mut r = registry();
        let mut cfg = config(vec![vm("a")]);
        cfg.global.staggered_start = Some(StaggeredStart {
            parallel: 1,
            delay_secs: 1,
        });
        r.reload(&cfg);
        r.reset(ResetKind::All);
        assert_eq!(r.global(), &Global::default());
        assert!(r.get(&VmRef::Id(1)).is_none());
    }

    #[test]
    fn late_exit_after_reset_is_ignored() {
        let mut r = registry();
        r.load_config(&config(vec![vm("a")]));
        let p = start(&mut r, "a");
        r.reset(ResetKind::Vms);
        r.load_config(&config(vec![vm("a")]));
        // Same id 1 again, but a different generation: the old exit must not touch it.
        let f = r
            .vm_exited(
                p.id,
                p.generation,
                super::super::Exit::Poweroff,
                Instant::now(),
            )
            .unwrap_err();
        assert_eq!(f.errno, libc::ESTALE);
        assert_eq!(r.get(&VmRef::Id(1)).unwrap().state(), VmState::Waiting);
    }
}
