//! Who may do what (spec §3.7, §4.5; F-LIFE-08): root-only requests, and the ownership
//! check vmd applies to start/stop/wait/pause/unpause/console and to instance creation.

use ipc::proto::Request;
use vmconf::Owner;

use super::error::Failure;

/// The uid of root, who passes every check.
pub(crate) const ROOT_UID: u32 = 0;

/// The user behind a request: the peer's uid (SO_PEERCRED) and every group they belong to
/// (primary and supplementary), which the parent looks up once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gids: Vec<u32>,
}

impl Caller {
    /// The daemon itself or root.
    pub fn root() -> Caller {
        Caller {
            uid: ROOT_UID,
            gids: vec![0],
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == ROOT_UID
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gids.contains(&gid)
    }
}

/// `vm_checkperm`: root always; else the user `uid` names; else a member of the owner's
/// group. `uid` is the one that counts for the VM's current state (the starter while it
/// runs, the configured owner otherwise), while the group is always the configured one.
pub(crate) fn owner_admits(uid: u32, owner: Owner, caller: &Caller) -> bool {
    caller.is_root() || caller.uid == uid || owner.gid.is_some_and(|g| caller.in_group(g))
}

/// Whether `req` is reserved to root (spec §3.7): everything that changes the daemon rather
/// than one VM, and send/receive (a stream holds all of a guest's memory, and a received VM
/// opens the disks its stream names).
pub fn needs_root(req: &Request) -> bool {
    match req {
        Request::Load(_)
        | Request::Reload
        | Request::Reset(_)
        | Request::Log { .. }
        | Request::Send { .. }
        | Request::Receive(_) => true,
        Request::Start(_)
        | Request::Stop { .. }
        | Request::Wait(_)
        | Request::Pause(_)
        | Request::Unpause(_)
        | Request::Status { .. }
        | Request::Console(_)
        | Request::Break(_) => false,
    }
}

/// EPERM for a root-only request from anyone else, as vmd's `denied request` path.
pub fn authorize(req: &Request, caller: &Caller) -> Result<(), Failure> {
    if needs_root(req) && !caller.is_root() {
        return Err(Failure::errno(
            libc::EPERM,
            format!("denied request from uid {}", caller.uid),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ipc::proto::{ResetKind, StartRequest, VmRef};

    use super::*;

    fn user(uid: u32, gids: &[u32]) -> Caller {
        Caller {
            uid,
            gids: gids.to_vec(),
        }
    }

    const ALICE_STAFF: Owner = Owner {
        uid: 1000,
        gid: Some(50),
    };

    #[test]
    fn owner_user_passes() {
        assert!(owner_admits(1000, ALICE_STAFF, &user(1000, &[1000])));
    }

    #[test]
    fn group_member_passes() {
        assert!(owner_admits(1000, ALICE_STAFF, &user(1001, &[1001, 50])));
    }

    #[test]
    fn other_user_is_refused() {
        assert!(!owner_admits(1000, ALICE_STAFF, &user(1002, &[1002])));
        let no_group = Owner {
            uid: 1000,
            gid: None,
        };
        assert!(!owner_admits(1000, no_group, &user(1002, &[1002, 50])));
    }

    #[test]
    fn root_always_passes() {
        let nobody = Owner { uid: 1, gid: None };
        assert!(owner_admits(1, nobody, &Caller::root()));
    }

    #[test]
    fn root_only_requests() {
        for req in [
            Request::Load(PathBuf::from("/etc/x.conf")),
            Request::Reload,
            Request::Reset(ResetKind::All),
            Request::Log { verbose: true },
            Request::Send {
                vm: VmRef::Id(1),
                live: true,
            },
            Request::Receive("copy".into()),
        ] {
            assert!(needs_root(&req), "{req:?}");
            assert_eq!(
                authorize(&req, &user(1000, &[1000])).unwrap_err().errno,
                libc::EPERM
            );
            assert!(authorize(&req, &Caller::root()).is_ok());
        }
        let vm = VmRef::Id(1);
        for req in [
            Request::Start(StartRequest::default()),
            Request::Stop {
                vm: vm.clone(),
                force: true,
                wait: false,
            },
            Request::Wait(vm.clone()),
            Request::Pause(vm.clone()),
            Request::Unpause(vm.clone()),
            Request::Status {
                vm: None,
                running_only: false,
            },
            Request::Console(vm.clone()),
            Request::Break(vm),
        ] {
            assert!(authorize(&req, &user(1000, &[1000])).is_ok(), "{req:?}");
        }
    }
}
