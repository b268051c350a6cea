//! Starting vmd's child processes: fork+exec of our own binary (`/proc/self/exe`) with a role
//! and the child's end of a socketpair — never a bare fork of a threaded process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};

use ipc::Channel;

/// The hidden first argument that selects a child role (`vmd --role vmm --fd 3 ...`).
pub const ROLE_ARG: &str = "--role";
/// The argument naming the inherited channel fd.
pub const FD_ARG: &str = "--fd";

/// Settings every child inherits from the daemon's command line.
#[derive(Debug, Clone, Default)]
pub struct Inherit {
    /// `-d`: log to stderr.
    pub foreground: bool,
    /// `-v` count.
    pub verbosity: u8,
}

impl Inherit {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.foreground {
            a.push("-d".into());
        }
        a.extend((0..self.verbosity).map(|_| "-v".to_string()));
        a
    }

    /// Parse what [`Inherit::args`] produced.
    pub fn parse(args: &[String]) -> Inherit {
        Inherit {
            foreground: args.iter().any(|a| a == "-d"),
            verbosity: args
                .iter()
                .filter(|a| *a == "-v")
                .count()
                .min(u8::MAX as usize) as u8,
        }
    }
}

fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        if libc::fcntl(fd, libc::F_SETFD, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Start `role` with `child_end` as its channel and `extra` arguments. The caller's processes
/// are single-threaded at this point or hold no other inheritable fds: the channel fd is the
/// only one made inheritable, and only for this spawn.
pub fn spawn(
    role: &str,
    child_end: Channel,
    inherit: &Inherit,
    extra: &[String],
) -> io::Result<Child> {
    let fd = child_end.as_raw_fd();
    set_cloexec(fd, false)?;
    let child = Command::new("/proc/self/exe")
        .arg(ROLE_ARG)
        .arg(role)
        .arg(FD_ARG)
        .arg(fd.to_string())
        .args(inherit.args())
        .args(extra)
        .spawn();
    // Our copy closes here: the child has its own.
    drop(child_end);
    child
}

/// In a child: take ownership of the inherited channel fd named on the command line.
pub fn inherited_channel(fd: RawFd) -> io::Result<Channel> {
    // Only descriptors above stdio can be a channel; anything else is a misuse.
    if fd <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad channel fd {fd}"),
        ));
    }
    // SAFETY: the fd was created by our parent for us alone and passed by number; nothing
    // else in this freshly exec'd process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_cloexec(owned.as_raw_fd(), true)?;
    Ok(Channel::from(owned))
}
