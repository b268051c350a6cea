//! `vmctl status` rows (spec §3.4, §4.12; F-LIFE-21): running VMs first, then the rest, each
//! group in registration order; owner names through an injected lookup.

use ipc::proto::{VmRef, VmStatus};
use nix::unistd::{Gid, Group, Uid, User};

use super::state::RunState;
use super::Registry;

/// User and group names for the OWNER column.
pub trait NameLookup {
    fn user_name(&self, uid: u32) -> Option<String>;
    fn group_name(&self, gid: u32) -> Option<String>;
}

/// The system's passwd and group databases (through NSS).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemNames;

impl NameLookup for SystemNames {
    fn user_name(&self, uid: u32) -> Option<String> {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    }
}

impl Registry {
    /// The rows of `status [-r] [id]`. `resident` gives a VM process's resident memory in
    /// bytes (the parent reads it from /proc or the VM's cgroup).
    pub fn status(
        &self,
        vm: Option<&VmRef>,
        running_only: bool,
        names: &dyn NameLookup,
        resident: &dyn Fn(u32) -> Option<u64>,
    ) -> Vec<VmStatus> {
        let selected = |i: usize| vm.is_none_or(|r| self.find(r) == Some(i));
        let (running, rest): (Vec<_>, Vec<_>) = self
            .vms
            .iter()
            .enumerate()
            .filter(|&(i, _)| selected(i))
            .map(|(_, e)| e)
            .partition(|e| e.is_running());
        let rest = if running_only { Vec::new() } else { rest };
        running
            .into_iter()
            .chain(rest)
            .map(|e| {
                let (uid, pid, tty) = match &e.run {
                    RunState::Running(r) => (r.started_by.uid, r.pid, r.tty.clone()),
                    RunState::Stopped | RunState::Waiting => (e.def.owner.uid, None, None),
                };
                VmStatus {
                    id: e.id,
                    pid,
                    vcpus: e.def.cpus,
                    max_mem: e.def.memory,
                    cur_mem: pid.and_then(resident),
                    tty,
                    uid,
                    user: names.user_name(uid),
                    // A group without a name still owns the VM: show its number.
                    group: e
                        .def
                        .owner
                        .gid
                        .map(|g| names.group_name(g).unwrap_or_else(|| g.to_string())),
                    state: e.run.status(),
                    name: e.def.name.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ipc::proto::{StartRequest, VmState};
    use vmconf::Owner;

    use super::super::testutil::{config, registry, user, vm};
    use super::super::Caller;
    use super::*;

    struct Names;

    impl NameLookup for Names {
        fn user_name(&self, uid: u32) -> Option<String> {
            match uid {
                0 => Some("root".into()),
                1000 => Some("alice".into()),
                _ => None,
            }
        }
        fn group_name(&self, gid: u32) -> Option<String> {
            (gid == 50).then(|| "staff".into())
        }
    }

    fn rss(pid: u32) -> Option<u64> {
        Some(u64::from(pid) * 4096)
    }

    /// a (disabled, alice:staff), b (enabled), c (disabled, gid 77); b and c started, b up.
    fn setup() -> Registry {
        let mut a = vm("a");
        a.enabled = false;
        a.owner = Some(Owner {
            uid: 1000,
            gid: Some(50),
        });
        let b = vm("b");
        let mut c = vm("c");
        c.enabled = false;
        c.owner = Some(Owner {
            uid: 1001,
            gid: Some(77),
        });
        c.memory = Some(1 << 30);
        let mut r = registry();
        r.load_config(&config(vec![a, b, c]));
        let now = Instant::now();
        let start = |r: &mut Registry, name: &str, who: &Caller| {
            let req = StartRequest {
                vm: Some(VmRef::Name(name.into())),
                ..StartRequest::default()
            };
            r.start_request(&req, who, now).unwrap()
        };
        let c_plan = start(&mut r, "c", &user(1001, &[1001]));
        r.mark_running(c_plan.id, c_plan.generation, 300, "/dev/pts/1".into())
            .unwrap();
        r
    }

    #[test]
    fn running_first_then_registration_order() {
        let r = setup();
        let rows = r.status(None, false, &Names, &rss);
        let names: Vec<&str> = rows.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        assert_eq!(rows[2].state, VmState::Waiting);
        assert_eq!(rows[1].state, VmState::Stopped);
    }

    #[test]
    fn running_row_fields() {
        let r = setup();
        let row = &r.status(None, false, &Names, &rss)[0];
        assert_eq!(row.id, 3);
        assert_eq!(row.pid, Some(300));
        assert_eq!(row.cur_mem, Some(300 * 4096));
        assert_eq!(row.max_mem, 1 << 30);
        assert_eq!(row.vcpus, 1);
        assert_eq!(row.tty.as_deref(), Some("/dev/pts/1"));
        assert_eq!(row.uid, 1001);
        assert_eq!(row.user, None, "uid without a name");
        assert_eq!(row.group.as_deref(), Some("77"), "gid without a name");
        assert_eq!(row.state, VmState::Running);
    }

    #[test]
    fn stopped_row_fields() {
        let r = setup();
        let row = r
            .status(Some(&VmRef::Name("a".into())), false, &Names, &rss)
            .remove(0);
        assert_eq!(row.pid, None);
        assert_eq!(row.cur_mem, None);
        assert_eq!(row.tty, None);
        assert_eq!(row.user.as_deref(), Some("alice"));
        assert_eq!(row.group.as_deref(), Some("staff"));
    }

    #[test]
    fn filters() {
        let r = setup();
        let running = r.status(None, true, &Names, &rss);
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].name, "c");
        assert_eq!(
            r.status(Some(&VmRef::Id(2)), false, &Names, &rss)[0].name,
            "b"
        );
        assert!(r.status(Some(&VmRef::Id(2)), true, &Names, &rss).is_empty());
        assert!(r
            .status(Some(&VmRef::Id(9)), false, &Names, &rss)
            .is_empty());
    }

    #[test]
    fn running_vm_shows_its_starter() {
        let mut r = setup();
        let req = StartRequest {
            vm: Some(VmRef::Name("a".into())),
            ..StartRequest::default()
        };
        // A staff member starts alice's VM.
        r.start_request(&req, &user(1005, &[50]), Instant::now())
            .unwrap();
        let row = r
            .status(Some(&VmRef::Name("a".into())), false, &Names, &rss)
            .remove(0);
        assert_eq!(row.uid, 1005);
        assert_eq!(row.group.as_deref(), Some("staff"));
    }

    #[test]
    fn system_names_resolve_root() {
        assert_eq!(SystemNames.user_name(0).as_deref(), Some("root"));
        assert!(SystemNames.group_name(0).is_some());
    }
}
