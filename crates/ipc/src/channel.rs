//! One connected `SOCK_SEQPACKET` unix socket carrying typed messages and file descriptors.
//!
//! Framing is the socket's own: one message per datagram, so a message is never split or
//! merged and needs no length prefix. The payload is the message's postcard encoding.

use std::any::type_name;
use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    connect, getsockopt, sendmsg, socket, socketpair, sockopt, AddressFamily, ControlMessage,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::IpcError;

/// Largest encoded message, in bytes. The biggest real message (a `status` answer for a few
/// hundred VMs) is far below; the limit bounds what a hostile peer can make us allocate.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Most file descriptors attached to one message. A VM start needs the kernel, initrd, ISO,
/// a few disk images with their bases, taps and a pty: 16 covers it; the parent can split a
/// bigger set over several messages.
pub const MAX_FDS: usize = 16;

/// The peer process of a connection, as the kernel recorded it at connect time
/// (`SO_PEERCRED`): it cannot be forged by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// A connected `SOCK_SEQPACKET` unix socket, close-on-exec.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, for a parent and the child it is about to start.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Connects to a [`crate::Listener`] at `path`; errors name the path.
    pub fn connect(path: impl AsRef<Path>) -> Result<Channel, IpcError> {
        let path = path.as_ref();
        let fail = |e: Errno| IpcError::Connect {
            path: path.to_owned(),
            source: e.into(),
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(fail)?;
        let addr = UnixAddr::new(path).map_err(fail)?;
        // No retry on EINTR: the connection may go on in the background and a second
        // connect() would fail with EALREADY; the caller's retry is a fresh socket.
        connect(fd.as_raw_fd(), &addr).map_err(fail)?;
        Ok(Channel { fd })
    }

    /// Sends `msg` with `fds` attached (SCM_RIGHTS; the peer gets its own copies).
    ///
    /// On a non-blocking channel a full socket buffer is an error for which
    /// [`IpcError::is_would_block`] is true; nothing was sent then.
    pub fn send<T: Serialize>(&self, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), IpcError> {
        let bytes = encode(msg)?;
        if fds.len() > MAX_FDS {
            return Err(IpcError::TooManyFds {
                count: fds.len(),
                max: MAX_FDS,
            });
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let iov = [IoSlice::new(&bytes)];
        loop {
            // MSG_NOSIGNAL: a peer that went away is an error value, not a SIGPIPE that kills
            // the daemon.
            match sendmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                // SOCK_SEQPACKET sends a datagram whole or not at all.
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(IpcError::Closed),
                Err(e) => return Err(IpcError::io("sendmsg", e)),
            }
        }
    }

    /// Receives one message and the file descriptors attached to it (close-on-exec, owned:
    /// dropping them closes them). When the message is refused, its fds are closed too.
    ///
    /// Errors: [`IpcError::Closed`] at end of file; [`IpcError::TooLarge`],
    /// [`IpcError::Truncated`] or [`IpcError::Decode`] for a refused message (it is consumed,
    /// so the caller may go on, but vmd closes such a connection); on a non-blocking channel
    /// with nothing queued, an error for which [`IpcError::is_would_block`] is true.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), IpcError> {
        let (bytes, fds) = self.recv_datagram()?;
        Ok((decode(&bytes)?, fds))
    }

    // Hand-written with libc rather than nix: when the kernel truncates the control data
    // (MSG_CTRUNC), it still installs the fds that fit, and nix 0.32 refuses to parse a
    // truncated control buffer, which would leak them.
    fn recv_datagram(&self) -> Result<(Vec<u8>, Vec<OwnedFd>), IpcError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        // SAFETY: CMSG_SPACE only computes a size.
        let cmsg_space = unsafe { libc::CMSG_SPACE((MAX_FDS * mem::size_of::<RawFd>()) as u32) };
        // u64 elements keep the control buffer aligned for cmsghdr.
        let mut cmsg_buf = vec![0u64; (cmsg_space as usize).div_ceil(8)];
        loop {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: msghdr is a plain C struct for which all zeroes is a valid value.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = cmsg_buf.as_mut_ptr().cast();
            hdr.msg_controllen = cmsg_buf.len() * 8;
            // SAFETY: hdr points at iov and cmsg_buf, both live and of the lengths given, for
            // the duration of the call. MSG_TRUNC makes the return value the datagram's full
            // length even when it did not fit, so an oversized one is reported as such.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut hdr,
                    libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(IpcError::io("recvmsg", err));
            }
            // Take ownership of the fds before any check, so every early return closes them.
            // SAFETY: hdr describes the control data recvmsg just wrote into cmsg_buf.
            let fds = unsafe { take_fds(&hdr) };
            if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
                return Err(IpcError::Truncated { max: MAX_FDS });
            }
            let n = n as usize;
            if n > MAX_MESSAGE || hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(IpcError::TooLarge {
                    size: n,
                    max: MAX_MESSAGE,
                });
            }
            // End of file reads as an empty datagram; send() never sends one (see encode).
            if n == 0 && fds.is_empty() {
                return Err(IpcError::Closed);
            }
            buf.truncate(n);
            return Ok((buf, fds));
        }
    }

    /// Who is on the other end (`SO_PEERCRED`).
    pub fn peer_credentials(&self) -> Result<Credentials, IpcError> {
        let cred = getsockopt(&self.fd, sockopt::PeerCredentials)
            .map_err(|e| IpcError::io("getsockopt(SO_PEERCRED)", e))?;
        Ok(Credentials {
            pid: cred.pid(),
            uid: cred.uid(),
            gid: cred.gid(),
        })
    }

    /// Switches `O_NONBLOCK`, for epoll loops.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), IpcError> {
        set_nonblocking(self.fd.as_fd(), nonblocking)
    }

    /// The socket, e.g. to hand to a child process (clear its close-on-exec flag, or dup2 it,
    /// in the child) which re-wraps it with [`Channel::from`].
    pub fn into_inner(self) -> OwnedFd {
        self.fd
    }
}

impl From<OwnedFd> for Channel {
    /// Wraps a connected `SOCK_SEQPACKET` unix socket, e.g. one inherited from the parent.
    /// Any other kind of fd makes every operation fail with an I/O error.
    fn from(fd: OwnedFd) -> Channel {
        Channel { fd }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The wire form of `msg`: its postcard encoding, checked against [`MAX_MESSAGE`].
///
/// An empty encoding (a unit struct) is refused: on `SOCK_SEQPACKET` an empty datagram cannot
/// be told from end of file.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, IpcError> {
    let fail = |error: String| IpcError::Encode {
        ty: type_name::<T>(),
        error,
    };
    let bytes = postcard::to_stdvec(msg).map_err(|e| fail(e.to_string()))?;
    if bytes.is_empty() {
        return Err(fail(
            "it encodes to zero bytes, which reads as end of file on the socket".into(),
        ));
    }
    if bytes.len() > MAX_MESSAGE {
        return Err(IpcError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE,
        });
    }
    Ok(bytes)
}

/// Decodes a whole message; bytes left over after it are an error too, since they mean the
/// peer sent something other than what we expect.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, IpcError> {
    let fail = |error: String| IpcError::Decode {
        ty: type_name::<T>(),
        error,
    };
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(|e| fail(e.to_string()))?;
    if !rest.is_empty() {
        return Err(fail(format!(
            "{} bytes left over after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

/// The fds of every SCM_RIGHTS control message in `hdr`, owned.
///
/// # Safety
/// `hdr` must describe control data just filled in by a successful recvmsg(2).
unsafe fn take_fds(hdr: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer within msg_controllen, which the kernel
    // set to the length it wrote.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR returned a header inside the buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN only computes a size; CMSG_DATA points inside this header's
            // cmsg_len bytes.
            let (header, data) = unsafe { (libc::CMSG_LEN(0) as usize, libc::CMSG_DATA(c)) };
            let count = (c.cmsg_len as usize).saturating_sub(header) / mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: the fds are packed after the header (maybe unaligned); the kernel
                // just installed each one in our fd table for us alone, so we own it.
                fds.push(unsafe {
                    OwnedFd::from_raw_fd(data.cast::<RawFd>().add(i).read_unaligned())
                });
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    fds
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> Result<(), IpcError> {
    let fail = |e: Errno| IpcError::io("fcntl(O_NONBLOCK)", e);
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(fail)?);
    let flags = if nonblocking {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(fail)?;
    Ok(())
}
