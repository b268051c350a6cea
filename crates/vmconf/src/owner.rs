//! User and group lookup for `owner` and `socket owner`, which vmd resolves at parse time.
//!
//! A trait so tests (and a daemon that wants to cache) can answer without the system's
//! passwd database.

/// Answers user and group names with ids.
pub trait Resolver {
    fn uid(&self, user: &str) -> Option<u32>;
    fn gid(&self, group: &str) -> Option<u32>;
}

/// Looks names up with `getpwnam_r`/`getgrnam_r` (through NSS, as OpenBSD's getpwnam does).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn uid(&self, user: &str) -> Option<u32> {
        if user.contains('\0') {
            return None;
        }
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }

    fn gid(&self, group: &str) -> Option<u32> {
        if group.contains('\0') {
            return None;
        }
        nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}
