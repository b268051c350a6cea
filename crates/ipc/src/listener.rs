//! A listening `SOCK_SEQPACKET` unix socket at a path: vmd's control socket.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{fchmod, Mode};

use crate::{channel, Channel, IpcError};

/// A listening socket bound to a path; dropping it removes the path if it is still this
/// socket's.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    path: PathBuf,
    /// (device, inode) of the socket file, so drop removes only our own.
    id: (u64, u64),
}

impl Listener {
    /// Listens on `path` with permission bits `mode` (e.g. `0o660`), close-on-exec.
    ///
    /// A socket file left behind by a server that is gone (nothing answers a connect) is
    /// replaced; a live server's socket, or a path that is not a socket, is refused.
    ///
    /// The mode: the socket is fchmod'ed before bind, and Linux creates the file with that
    /// mode minus the umask, so it is never more open than `mode`, not even for an instant;
    /// a chmod after bind then adds back what the umask removed. Setting the umask instead
    /// would race with other threads.
    ///
    /// Between probing a stale file and binding, a second server starting at the same moment
    /// could lose its fresh socket file; starting two daemons on one path at once is not
    /// supported.
    pub fn bind(path: impl AsRef<Path>, mode: u32) -> Result<Listener, IpcError> {
        let path = path.as_ref();
        let fail = |source: io::Error| IpcError::Bind {
            path: path.to_owned(),
            source,
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| fail(e.into()))?;
        let mode = mode & 0o7777;
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| fail(e.into()))?;
        remove_stale(path)?;
        let addr = UnixAddr::new(path).map_err(|e| fail(e.into()))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| match e {
            Errno::EADDRINUSE => IpcError::InUse {
                path: path.to_owned(),
            },
            e => fail(e.into()),
        })?;
        // From here on the file is ours: a failure removes it again through Drop.
        let meta = fs::symlink_metadata(path).map_err(fail)?;
        let listener = Listener {
            fd,
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(fail)?;
        listen(&listener.fd, Backlog::MAXCONN).map_err(|e| fail(e.into()))?;
        Ok(listener)
    }

    /// Accepts one connection (close-on-exec, blocking whatever the listener's mode).
    ///
    /// On a non-blocking listener, no pending connection is an error for which
    /// [`IpcError::is_would_block`] is true.
    pub fn accept(&self) -> Result<Channel, IpcError> {
        loop {
            match accept4(&self.fd, SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => return Ok(Channel::from(fd)),
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => return Err(IpcError::io("accept", e)),
            }
        }
    }

    /// Switches `O_NONBLOCK`, for epoll loops.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), IpcError> {
        channel::set_nonblocking(self.fd.as_fd(), nonblocking)
    }

    /// Gives the socket file to `uid`/`gid` (`None` leaves one unchanged): vm.conf's
    /// `socket owner`. Does not follow symlinks.
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), IpcError> {
        std::os::unix::fs::lchown(&self.path, uid, gid).map_err(|source| IpcError::Bind {
            path: self.path.clone(),
            source,
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only if the path is still our socket: a newer server may have replaced it.
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Removes `path` if it is a socket nobody listens on.
fn remove_stale(path: &Path) -> Result<(), IpcError> {
    let fail = |source: io::Error| IpcError::Bind {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(fail(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; not replacing it",
        )));
    }
    let probe = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| fail(e.into()))?;
    let addr = UnixAddr::new(path).map_err(|e| fail(e.into()))?;
    match connect(probe.as_raw_fd(), &addr) {
        // Nobody listens: a leftover from a server that died.
        Err(Errno::ECONNREFUSED) => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(fail(e)),
            _ => Ok(()),
        },
        // Gone meanwhile.
        Err(Errno::ENOENT) => Ok(()),
        // Someone answers, with a full backlog, or on another socket type: alive.
        Ok(()) | Err(Errno::EAGAIN | Errno::EPROTOTYPE) => Err(IpcError::InUse {
            path: path.to_owned(),
        }),
        Err(e) => Err(fail(e.into())),
    }
}
