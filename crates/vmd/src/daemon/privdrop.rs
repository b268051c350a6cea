//! Dropping root: the unprivileged user every child but the parent and priv runs as.

use std::ffi::CString;
use std::io;

/// The user vmd's unprivileged processes run as (OpenBSD's `_vmd`).
pub const VMD_USER: &str = "_vmd";

/// uid and gid of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Look up `name` in the password database.
pub fn lookup_user(name: &str) -> io::Result<Ids> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut pw: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives `pw`'s string fields, which
    // we do not use after returning.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown user {name} (create it: useradd -r -d /var/empty -s /usr/sbin/nologin {name})"),
        ));
    }
    Ok(Ids {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    })
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is a plain C struct of integers and pointers; all-zero is a valid value
    // that getpwnam_r overwrites.
    unsafe { std::mem::zeroed() }
}

/// Become `ids` for good: no supplementary groups, real/effective/saved ids all changed.
pub fn drop_to(ids: Ids) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments; the order (groups, gid, uid) is the
    // only one that works once uid 0 is gone.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(ids.gid, ids.gid, ids.gid) != 0
            || libc::setresuid(ids.uid, ids.uid, ids.uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // Make sure root cannot be regained.
    // SAFETY: setuid(0) only changes credentials if it is allowed, which is what we test.
    if ids.uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(io::Error::other("root regained after dropping privileges"));
    }
    Ok(())
}

/// Primary and supplementary groups of `uid` (whose primary group is `gid`), for ownership
/// checks: SO_PEERCRED only carries the primary one.
pub fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut pw: libc::passwd = unsafe_zeroed_passwd();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: valid pointers for the call; `pw`'s strings point into `buf`, alive below.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return vec![gid];
    }
    let mut n: libc::c_int = MAX_GROUPS;
    let mut groups = vec![0 as libc::gid_t; MAX_GROUPS as usize];
    // SAFETY: `pw.pw_name` is a valid C string inside `buf`; `groups` has room for `n`.
    let rc = unsafe { libc::getgrouplist(pw.pw_name, gid, groups.as_mut_ptr(), &mut n) };
    if rc < 0 {
        return vec![gid];
    }
    groups.truncate(n.max(0) as usize);
    groups
}

/// Most groups looked up for one user.
const MAX_GROUPS: libc::c_int = 256;
