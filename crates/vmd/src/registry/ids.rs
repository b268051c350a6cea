//! vmd's sticky VM ids (spec §4.2, F-LIFE-03): one id per (name, owner uid) for the life of
//! the daemon, so a VM keeps its number across stop/start and `reload`, while two users'
//! same-named VMs get different numbers. Only `reset vms|all` forgets them.

use std::collections::HashMap;

use super::error::Failure;

/// vmd's VM id as users see it; never 0.
pub type VmId = u32;

/// The "known names" table and the counter behind it.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdTable {
    known: HashMap<(String, u32), VmId>,
    /// The last id handed out; 0 before the first.
    last: VmId,
}

impl IdTable {
    /// The id of (`name`, `owner_uid`), allocating the next one on first sight.
    pub(crate) fn claim(&mut self, name: &str, owner_uid: u32) -> Result<VmId, Failure> {
        let key = (name.to_owned(), owner_uid);
        if let Some(&id) = self.known.get(&key) {
            return Ok(id);
        }
        // 0 means "no id" in the protocol, so the counter must not wrap onto it.
        let Some(id) = self.last.checked_add(1) else {
            return Err(Failure::errno(libc::ENOSPC, "too many vms"));
        };
        self.last = id;
        self.known.insert(key, id);
        Ok(id)
    }

    /// `reset vms`: ids start again at 1.
    pub(crate) fn clear(&mut self) {
        *self = IdTable::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_and_owner_reuses_the_id() {
        let mut t = IdTable::default();
        assert_eq!(t.claim("a", 0), Ok(1));
        assert_eq!(t.claim("b", 0), Ok(2));
        assert_eq!(t.claim("a", 0), Ok(1));
    }

    #[test]
    fn different_owners_get_different_ids() {
        let mut t = IdTable::default();
        let root = t.claim("web", 0).unwrap();
        let alice = t.claim("web", 1000).unwrap();
        assert_ne!(root, alice);
        assert_eq!(t.claim("web", 1000), Ok(alice));
    }

    #[test]
    fn clear_restarts_at_one() {
        let mut t = IdTable::default();
        t.claim("a", 0).unwrap();
        t.claim("b", 0).unwrap();
        t.clear();
        assert_eq!(t.claim("b", 0), Ok(1));
    }

    #[test]
    fn counter_exhaustion_is_refused_not_wrapped() {
        let mut t = IdTable {
            last: VmId::MAX - 1,
            ..IdTable::default()
        };
        assert_eq!(t.claim("last", 0), Ok(VmId::MAX));
        assert_eq!(t.claim("over", 0).unwrap_err().errno, libc::ENOSPC);
        // Known pairs still resolve.
        assert_eq!(t.claim("last", 0), Ok(VmId::MAX));
    }
}
