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
