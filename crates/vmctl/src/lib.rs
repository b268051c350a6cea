//! vmctl(8): the command-line client of vmd(8), as OpenBSD's vmctl (spec §3) on Linux.
//!
//! This crate owns the command line and everything the user sees of it: parsing with
//! OpenBSD's rules and messages ([`cli`]), the request each command sends over vmd's
//! control socket ([`actions`], [`client`]), the answers rendered word for word
//! ([`messages`], [`status`]), the serial console client ([`console`]), the client-side
//! rules and kernel/initrd opening of `start` ([`start`]) and local image creation
//! ([`create`]).
//!
//! It never decides what vmd decides: ownership, permissions, VM state and every check that
//! needs the registry stay in the daemon; vmctl only repeats the local checks OpenBSD's
//! vmctl makes so mistakes are reported before anything is sent. It never opens a disk or
//! a tty on vmd's behalf and holds no privilege of its own.

pub mod actions;
pub mod cli;
pub mod client;
pub mod console;
pub mod create;
pub mod messages;
pub mod size;
pub mod start;
pub mod status;

use std::io::Write;
use std::os::fd::AsFd;

use actions::{Io, Next, EXIT_FAIL};
use client::SocketConnector;

/// Runs vmctl with the arguments after the program name; the exit status.
pub fn run(args: &[String]) -> u8 {
    let stderr = std::io::stderr();
    let stdout = std::io::stdout();
    let stdin = std::io::stdin();
    let invocation = match cli::parse(args, &|p| std::fs::canonicalize(p)) {
        Ok(inv) => inv,
        Err(lines) => {
            let mut err = stderr.lock();
            for line in lines {
                let _ = writeln!(err, "{line}");
            }
            return EXIT_FAIL;
        }
    };
    let daemon = SocketConnector::new(invocation.socket.clone(), invocation.verbose);
    let next = {
        let (mut out, mut err) = (stdout.lock(), stderr.lock());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            stream_out: stdout.as_fd(),
            stream_in: stdin.as_fd(),
        };
        io.lines(&invocation.warnings);
        actions::execute(&invocation.command, &daemon, &mut io)
    };
    match next {
        Next::Exit(status) => status,
        Next::Console { vm, tty } => console::attach(&tty, &vm, &daemon),
    }
}
