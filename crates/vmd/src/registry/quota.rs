//! Optional per-user limits on what one non-root user's running VMs use together
//! (spec §4.1 [≤6.9], F-LIFE-10). vmd 7.x dropped them; we keep them off by default and
//! let the daemon switch them on, with vmd 6.9's numbers available as a preset.

use super::error::Failure;
use super::permission::Caller;
use super::state::RunState;
use super::{Registry, VmEntry};

/// Aggregate limits over all running VMs a user started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimits {
    pub cpus: u32,
    /// Bytes.
    pub memory: u64,
    pub nics: usize,
}

impl UserLimits {
    /// vmd ≤ 6.9's fixed limits (`VM_DEFAULT_USER_MAXCPU`, `_MAXMEM`, `_MAXIFS`).
    pub const OPENBSD_6_9: UserLimits = UserLimits {
        cpus: 4,
        memory: 2048 << 20,
        nics: 8,
    };
}

/// What one VM counts against its user's limits.
fn usage(e: &VmEntry) -> (u32, u64, usize) {
    (e.def.cpus, e.def.memory, e.def.nics.len())
}

impl Registry {
    /// Turns per-user limits on (`Some`) or off (`None`, the default as in vmd 7.x).
    pub fn set_user_limits(&mut self, limits: Option<UserLimits>) {
        self.user_limits = limits;
    }

    /// EPERM if starting entry `idx` for `caller` would take them over a limit. Root is
    /// never limited; the VM's own current run (a restart) does not count twice.
    pub(crate) fn check_user_limits(&self, idx: usize, caller: &Caller) -> Result<(), Failure> {
        let Some(limits) = self.user_limits else {
            return Ok(());
        };
        if caller.is_root() {
            return Ok(());
        }
        let (mut cpus, mut memory, mut nics) = usage(&self.vms[idx]);
        for (i, e) in self.vms.iter().enumerate() {
            let theirs = matches!(&e.run, RunState::Running(r) if r.started_by.uid == caller.uid);
            if i != idx && theirs {
                let (c, m, n) = usage(e);
                cpus += c;
                memory += m;
                nics += n;
            }
        }
        let over = if cpus > limits.cpus {
            "cpu"
        } else if memory > limits.memory {
            "memory"
        } else if nics > limits.nics {
            "interface"
        } else {
            return Ok(());
        };
        Err(Failure::errno(
            libc::EPERM,
            format!("user {} {over} limit reached", caller.uid),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ipc::proto::{StartRequest, VmRef};
    use vmconf::{Interface, Owner};

    use super::super::testutil::{config, registry, user, vm};
    use super::super::{Exit, StartPlan};
    use super::*;

    const ALICE: u32 = 1000;

    /// Three disabled VMs owned by alice: 1 GiB and one NIC each.
    fn setup() -> Registry {
        let vms = ["a", "b", "c"]
            .into_iter()
            .map(|n| vmconf::Vm {
                enabled: false,
                memory: Some(1 << 30),
                interfaces: vec![Interface::default()],
                owner: Some(Owner {
                    uid: ALICE,
                    gid: None,
                }),
                ..vm(n)
            })
            .collect();
        let mut r = registry();
        r.load_config(&config(vms));
        r
    }

    fn start(r: &mut Registry, name: &str, who: &Caller) -> Result<StartPlan, Failure> {
        let req = StartRequest {
            vm: Some(VmRef::Name(name.into())),
            ..StartRequest::default()
        };
        r.start_request(&req, who, Instant::now())
    }

    #[test]
    fn no_limits_by_default() {
        let mut r = setup();
        let alice = user(ALICE, &[ALICE]);
        for n in ["a", "b", "c"] {
            assert!(start(&mut r, n, &alice).is_ok());
        }
    }

    #[test]
    fn memory_limit_counts_the_users_running_vms() {
        let mut r = setup();
        r.set_user_limits(Some(UserLimits::OPENBSD_6_9));
        let alice = user(ALICE, &[ALICE]);
        let a = start(&mut r, "a", &alice).unwrap();
        start(&mut r, "b", &alice).unwrap();
        let f = start(&mut r, "c", &alice).unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
        assert!(f.message.contains("memory limit"), "{}", f.message);
        // Root is not limited, and a stopped VM frees its share.
        let c = start(&mut r, "c", &Caller::root()).unwrap();
        r.vm_exited(c.id, c.generation, Exit::Poweroff, Instant::now())
            .unwrap();
        r.vm_exited(a.id, a.generation, Exit::Poweroff, Instant::now())
            .unwrap();
        assert!(start(&mut r, "c", &alice).is_ok());
    }

    #[test]
    fn cpu_and_interface_limits() {
        let mut r = setup();
        let alice = user(ALICE, &[ALICE]);
        r.set_user_limits(Some(UserLimits {
            cpus: 1,
            memory: u64::MAX,
            nics: 8,
        }));
        start(&mut r, "a", &alice).unwrap();
        assert!(start(&mut r, "b", &alice)
            .unwrap_err()
            .message
            .contains("cpu limit"));
        r.set_user_limits(Some(UserLimits {
            cpus: 8,
            memory: u64::MAX,
            nics: 1,
        }));
        assert!(start(&mut r, "b", &alice)
            .unwrap_err()
            .message
            .contains("interface limit"));
    }

    #[test]
    fn a_reboot_does_not_count_the_vm_twice() {
        let mut r = setup();
        let alice = user(ALICE, &[ALICE]);
        r.set_user_limits(Some(UserLimits {
            cpus: 1,
            memory: 1 << 30,
            nics: 1,
        }));
        let a = start(&mut r, "a", &alice).unwrap();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let ended = r
            .vm_exited(a.id, a.generation, Exit::Reboot, later)
            .unwrap();
        assert!(matches!(ended.after, super::super::AfterExit::Restart(_)));
    }
}
