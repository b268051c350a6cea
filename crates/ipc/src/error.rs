//! The one error type of the crate. Every message names what failed and why, so a daemon
//! can log it as is before closing the connection.

use std::io;
use std::path::PathBuf;

/// Why an IPC operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A socket system call failed (`op` names it). A non-blocking channel reports "nothing to
    /// do yet" this way too: see [`IpcError::is_would_block`].
    #[error("ipc: {op} failed: {source}")]
    Io {
        /// The operation, e.g. `recvmsg`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connecting to a listening socket failed.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating a listening socket failed.
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A live server already answers on the socket path; it is left alone.
    #[error("cannot listen on {}: another server is running on it", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The peer closed the connection.
    #[error("ipc: connection closed by the peer")]
    Closed,
    /// A message is over [`crate::MAX_MESSAGE`] bytes (sent or received).
    #[error("ipc: message of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The kernel cut a received message short: more file descriptors were attached than
    /// [`crate::MAX_FDS`] (the extra ones were closed).
    #[error("ipc: received message truncated: more than {max} file descriptors attached")]
    Truncated {
        /// The fd limit the receive buffer was sized for.
        max: usize,
    },
    /// More than [`crate::MAX_FDS`] file descriptors given to send.
    #[error("ipc: {count} file descriptors attached, at most {max} allowed per message")]
    TooManyFds {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A message could not be encoded.
    #[error("ipc: cannot encode {ty}: {error}")]
    Encode {
        /// The Rust type being sent.
        ty: &'static str,
        /// What went wrong.
        error: String,
    },
    /// A received message is not a valid encoding of the expected type.
    #[error("ipc: cannot decode {ty}: {error}")]
    Decode {
        /// The Rust type expected.
        ty: &'static str,
        /// What went wrong (postcard's error, or trailing bytes).
        error: String,
    },
    /// The two sides speak different protocol versions.
    #[error(
        "protocol version mismatch: this side speaks version {ours}, the peer speaks {theirs} \
         (vmd and vmctl must come from the same release)"
    )]
    Version {
        /// [`crate::proto::PROTOCOL_VERSION`] here.
        ours: u32,
        /// The peer's.
        theirs: u32,
    },
}

impl IpcError {
    /// True when a non-blocking channel or listener has nothing ready: wait for readiness
    /// (epoll) and try again. Everything else should end the connection.
    pub fn is_would_block(&self) -> bool {
        matches!(self, IpcError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock)
    }

    pub(crate) fn io(op: &'static str, source: impl Into<io::Error>) -> IpcError {
        IpcError::Io {
            op,
            source: source.into(),
        }
    }
}
