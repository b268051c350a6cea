//! Every link between vmd's processes and between vmctl and vmd: typed messages
//! ([`proto`]), framed one per datagram over `SOCK_SEQPACKET`, with file descriptors attached
//! (SCM_RIGHTS), the peer's credentials (SO_PEERCRED) and a protocol version in the hello.
//!
//! This crate owns the wire format and nothing else. A malformed, oversized or unexpected
//! message is an error value for the caller to log and close the connection over; it never
//! panics a process.
//!
//! - [`Channel`]: one connection (a socketpair end, or a client of the control socket):
//!   `send`/`recv` of any serde type with fds, peer credentials, non-blocking mode.
//! - [`Listener`]: the control socket at a path, with its mode and owner.
//! - [`client_hello`]/[`server_hello`]: the version handshake opening a connection.
//! - Limits: [`MAX_MESSAGE`] bytes and [`MAX_FDS`] descriptors per message.
//!
//! ```
//! use std::os::fd::AsFd;
//! use ipc::proto::{Request, Response};
//!
//! let (parent, child) = ipc::Channel::pair()?;
//! let (_reader, writer) = std::io::pipe()?;
//! parent.send(&Request::Reload, &[writer.as_fd()])?;
//! let (req, fds): (Request, _) = child.recv()?;
//! assert_eq!((req, fds.len()), (Request::Reload, 1));
//! child.send(&Response::Ok, &[])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod channel;
mod error;
mod hello;
mod listener;
pub mod proto;

pub use channel::{decode, encode, Channel, Credentials, MAX_FDS, MAX_MESSAGE};
pub use error::IpcError;
pub use hello::{client_hello, server_hello};
pub use listener::Listener;
