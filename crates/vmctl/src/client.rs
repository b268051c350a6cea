//! The link to vmd: one control-socket connection per request, as OpenBSD's vmctl opens
//! one per `vmmaction`. Commands talk to the [`Connector`]/[`Connection`] traits so their
//! messages and exit codes are tested against canned answers.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use ipc::proto::{Request, Response};
use ipc::{client_hello, Channel, IpcError};

use crate::messages::{io_error_text, warnx};

/// One open connection to vmd.
pub trait Connection {
    /// Sends a request with descriptors attached. The error is a line to print.
    fn send(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), String>;
    /// The next answer; `Ok(None)` when vmd closed the connection.
    fn recv(&mut self) -> Result<Option<Response>, String>;
}

/// Opens connections to vmd.
pub trait Connector {
    /// A new connection, past the version handshake. The error is a line to print.
    fn connect(&self) -> Result<Box<dyn Connection>, String>;
}

/// The real thing: vmd's control socket.
pub struct SocketConnector {
    path: PathBuf,
    verbose: bool,
}

impl SocketConnector {
    /// Connects to `path`; `verbose` (`-v`) traces every message on stderr.
    pub fn new(path: PathBuf, verbose: bool) -> SocketConnector {
        SocketConnector { path, verbose }
    }
}

impl Connector for SocketConnector {
    fn connect(&self) -> Result<Box<dyn Connection>, String> {
        let channel = Channel::connect(&self.path).map_err(|e| match e {
            // OpenBSD's wording: `vmctl: connect: /var/run/vmd.sock: <strerror>`.
            IpcError::Connect { path, source } => warnx(format_args!(
                "connect: {}: {}",
                path.display(),
                io_error_text(&source)
            )),
            other => warnx(format_args!("connect: {}: {other}", self.path.display())),
        })?;
        client_hello(&channel).map_err(|e| warnx(format_args!("{}: {e}", self.path.display())))?;
        Ok(Box::new(SocketConnection {
            channel,
            verbose: self.verbose,
        }))
    }
}

struct SocketConnection {
    channel: Channel,
    verbose: bool,
}

impl SocketConnection {
    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.verbose {
            let _ = writeln!(std::io::stderr(), "{}", warnx(what));
        }
    }
}

impl Connection for SocketConnection {
    fn send(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        self.trace(format_args!("sending {req:?} with {} fds", fds.len()));
        self.channel
            .send(req, fds)
            .map_err(|e| warnx(format_args!("cannot send the request to vmd: {e}")))
    }

    fn recv(&mut self) -> Result<Option<Response>, String> {
        match self.channel.recv::<Response>() {
            // vmd sends vmctl no descriptors; any attached are closed by the drop.
            Ok((resp, _fds)) => {
                self.trace(format_args!("received {resp:?}"));
                Ok(Some(resp))
            }
            Err(IpcError::Closed) => Ok(None),
            Err(e) => Err(warnx(format_args!("read error: {e}"))),
        }
    }
}
