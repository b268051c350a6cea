//! The VM process's sandbox, applied after it has built its VM and before any guest code
//! runs (DESIGN.md §2): no new privileges, Landlock with no filesystem access at all, and a
//! seccomp allow-list of the system calls a running VM makes.
//!
//! Live migration (`vmctl send -l`) needs userfaultfd(2), in user mode only
//! ([`USERFAULTFD_FLAGS`]), for its write watch; the watch's ioctls (UFFDIO_API,
//! UFFDIO_REGISTER, PAGEMAP_SCAN on the `/proc/self/pagemap` fd opened before the sandbox)
//! pass as every ioctl does. Snapshot files need nothing more: a receive maps the file before
//! the sandbox, and a send writes, seeks and truncates its fd.
//!
//! System calls outside the list fail with EPERM instead of killing the process: a VM that
//! hits a path we did not foresee keeps running and logs the failure, while the calls that
//! would let a compromised device model reach the host (open, exec, socket, ptrace, mount,
//! …) are refused. ioctl arguments are not filtered (the VM needs the KVM ioctls on several
//! fds); Landlock and the unprivileged uid bound what an ioctl can reach.

use std::collections::BTreeMap;
use std::io;

use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The flag userfaultfd(2) must carry: `UFFD_USER_MODE_ONLY` (faults of user-space accesses
/// only, which needs no privilege), all the write watch asks for.
const USERFAULTFD_FLAGS: u64 = 1;

/// What a running VM process needs: KVM and console I/O, epoll, threads, memory, time,
/// signals (vCPU kicks), the vmm channel, and exiting.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    // Disk and CD-ROM images: positioned I/O (the fds may be shared), flush, discard, size.
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_ioctl,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_eventfd2,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_prctl,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Apply the whole sandbox to this process (all its future threads inherit it). Call it
/// while the process has a single thread.
pub fn enter() -> io::Result<()> {
    no_new_privs()?;
    landlock_no_fs()?;
    seccomp()
}

fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A ruleset that handles every filesystem right and grants none.
fn landlock_no_fs() -> io::Result<()> {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| io::Error::other(format!("landlock: {e}")))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        // Kernels without Landlock: the uid, no-new-privs and seccomp still hold.
        crate::log_info!("landlock is not available on this kernel; continuing without it");
    }
    Ok(())
}

fn seccomp() -> io::Result<()> {
    let filter_error =
        |e: seccompiler::BackendError| io::Error::other(format!("seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&s| (s, Vec::new())).collect();
    let user_mode_only = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(USERFAULTFD_FLAGS),
        USERFAULTFD_FLAGS,
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(filter_error)?;
    rules.insert(libc::SYS_userfaultfd, vec![user_mode_only]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| io::Error::other(format!("seccomp filter: {e}")))?;
    let prog: BpfProgram = filter.try_into().map_err(filter_error)?;
    seccompiler::apply_filter(&prog).map_err(|e| io::Error::other(format!("seccomp: {e}")))
}
