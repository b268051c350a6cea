//! OFD locks (F_OFD_SETLK) on images: exclusive on a writable image, shared on read-only ones
//! (so a base in use by a VM cannot be opened for writing elsewhere). OFD rather than POSIX
//! locks because they belong to the open file description: they survive passing the fd to
//! the VM process, are not dropped when some other fd of the file closes, and conflict even
//! between two opens in one process.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::DiskError;

/// Takes a whole-file lock, exclusive if `exclusive`, without waiting.
pub(crate) fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), DiskError> {
    // SAFETY: flock is plain data; all-zero is a valid value we then fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // l_start = l_len = 0: the whole file, however it grows. l_pid must be 0 for OFD locks.
    // SAFETY: fcntl with F_OFD_SETLK reads the flock we pass by pointer; the fd is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Err(DiskError::InUse { path: path.into() }),
        _ => Err(DiskError::io(path, "lock", err)),
    }
}
