//! Running a parsed command: the request each command sends, how the answers are reported
//! and the exit status (OpenBSD's `vmmaction`, spec §3.5–§3.6). The console itself needs a
//! terminal, so the commands that end in one hand back [`Next::Console`].

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use ipc::proto::{Request, Response, VmRef};

use crate::cli::{Command, StartArgs, StopTarget};
use crate::client::{Connection, Connector};
use crate::messages::{self, warnx, Step};
use crate::{create, start, status};

/// Exit status on success.
pub const EXIT_OK: u8 = 0;
/// Exit status of every failure, as OpenBSD's `err(1, …)` paths.
pub const EXIT_FAIL: u8 = 1;

/// Where output goes: stdout for the status table, stderr for every message (as vmctl
/// prints them with warnx/fprintf(stderr)); and the descriptors `send` and `receive` hand
/// to vmd as the stream (stdout and stdin).
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Where `send` has vmd write the stream.
    pub stream_out: BorrowedFd<'a>,
    /// Where `receive` has vmd read the stream from.
    pub stream_in: BorrowedFd<'a>,
}

impl Io<'_> {
    /// Prints whole lines to stderr. A closed stderr leaves nothing better to do.
    pub fn lines<S: AsRef<str>>(&mut self, lines: &[S]) {
        for line in lines {
            let _ = writeln!(self.err, "{}", line.as_ref());
        }
    }

    fn line(&mut self, line: &str) {
        self.lines(&[line]);
    }

    /// The start of a line that the answer completes (`stopping vm NAME: `).
    fn partial(&mut self, text: &str) {
        let _ = write!(self.err, "{text}");
        let _ = self.err.flush();
    }
}

/// What is left to do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Exit with this status.
    Exit(u8),
    /// Attach to this VM's console tty (`console`, `start -c`).
    Console {
        /// The VM, for BREAK requests.
        vm: VmRef,
        /// Its tty path.
        tty: String,
    },
}

fn status_of(ok: bool) -> Next {
    Next::Exit(if ok { EXIT_OK } else { EXIT_FAIL })
}

/// Runs `cmd`, talking to vmd through `daemon` when the command needs it.
pub fn execute(cmd: &Command, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    match cmd {
        Command::Create(args) => {
            let outcome = create::run(args);
            io.lines(&outcome.lines);
            status_of(outcome.ok)
        }
        Command::Start(args) => start_vm(args, daemon, io),
        Command::Stop {
            target: StopTarget::Vm(vm),
            force,
            wait,
        } => status_of(stop_vm(vm, *force, *wait, daemon, io)),
        Command::Stop {
            target: StopTarget::All,
            force,
            wait,
        } => stop_all(*force, *wait, daemon, io),
        Command::Wait(vm) => status_of(wait_vm(vm, daemon, io)),
        Command::Pause(vm) => pause(Request::Pause(vm.clone()), true, daemon, io),
        Command::Unpause(vm) => pause(Request::Unpause(vm.clone()), false, daemon, io),
        Command::Status {
            vm,
            running_only,
            json,
        } => show_status(vm.as_ref(), *running_only, *json, daemon, io),
        Command::Console(vm) => match ask(daemon, io, &Request::Console(vm.clone())) {
            None => Next::Exit(EXIT_FAIL),
            Some(resp) => match messages::console_reply(&resp) {
                Ok((_, tty)) => Next::Console {
                    vm: vm.clone(),
                    tty,
                },
                Err(line) => {
                    io.line(&line);
                    Next::Exit(EXIT_FAIL)
                }
            },
        },
        Command::Load(path) => simple(Request::Load(path.clone()), daemon, io),
        Command::Reload => simple(Request::Reload, daemon, io),
        Command::Reset(kind) => simple(Request::Reset(*kind), daemon, io),
        Command::Log { verbose } => simple(Request::Log { verbose: *verbose }, daemon, io),
        Command::Send { vm, live } => send_vm(vm, *live, daemon, io),
        Command::Receive(name) => receive_vm(name, daemon, io),
    }
}

fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty only inspects the descriptor, which `fd` keeps open.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// `send id`: vmd writes the stream straight to our stdout (the descriptor travels with the
/// request, vmctl copies nothing) and answers once the VM has stopped. `live`: while the
/// guest runs (`-l`).
fn send_vm(vm: &VmRef, live: bool, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    if is_terminal(io.stream_out) {
        io.line(&warnx(
            "send: stdout is a terminal: redirect it to a file or a pipe",
        ));
        return Next::Exit(EXIT_FAIL);
    }
    let fd = io.stream_out;
    let req = Request::Send {
        vm: vm.clone(),
        live,
    };
    let Some(mut conn) = open(daemon, io, &req, &[fd]) else {
        return Next::Exit(EXIT_FAIL);
    };
    let Some(resp) = next_answer(conn.as_mut(), io) else {
        return Next::Exit(EXIT_FAIL);
    };
    let (lines, ok) = messages::send_reply(&resp);
    io.lines(&lines);
    status_of(ok)
}

/// `receive name`: vmd reads the stream straight from our stdin and starts the VM.
fn receive_vm(name: &str, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    if is_terminal(io.stream_in) {
        io.line(&warnx(
            "receive: stdin is a terminal: redirect it from a file or a pipe",
        ));
        return Next::Exit(EXIT_FAIL);
    }
    let fd = io.stream_in;
    let req = Request::Receive(name.to_string());
    let Some(mut conn) = open(daemon, io, &req, &[fd]) else {
        return Next::Exit(EXIT_FAIL);
    };
    let Some(resp) = next_answer(conn.as_mut(), io) else {
        return Next::Exit(EXIT_FAIL);
    };
    match messages::receive_reply(&resp) {
        Ok((id, tty)) => {
            io.line(&messages::started(id, &tty));
            Next::Exit(EXIT_OK)
        }
        Err(lines) => {
            io.lines(&lines);
            Next::Exit(EXIT_FAIL)
        }
    }
}

/// Connects, sends, and reads one answer; failures are printed and give `None`.
fn ask(daemon: &dyn Connector, io: &mut Io<'_>, req: &Request) -> Option<Response> {
    let mut conn = open(daemon, io, req, &[])?;
    next_answer(conn.as_mut(), io)
}

/// Connects and sends, printing any failure.
fn open(
    daemon: &dyn Connector,
    io: &mut Io<'_>,
    req: &Request,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Option<Box<dyn Connection>> {
    let sent = daemon.connect().and_then(|mut conn| {
        conn.send(req, fds)?;
        Ok(conn)
    });
    sent.map_err(|line| io.line(&line)).ok()
}

/// The next answer, or the printed reason there is none (`pipe closed` as OpenBSD says
/// when vmd hangs up).
fn next_answer(conn: &mut dyn Connection, io: &mut Io<'_>) -> Option<Response> {
    match conn.recv() {
        Ok(Some(resp)) => Some(resp),
        Ok(None) => {
            io.line(&warnx("pipe closed"));
            None
        }
        Err(line) => {
            io.line(&line);
            None
        }
    }
}

/// `load`, `reload`, `reset`, `log`: silent on success.
fn simple(req: Request, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    let Some(resp) = ask(daemon, io, &req) else {
        return Next::Exit(EXIT_FAIL);
    };
    match messages::generic_reply(&resp) {
        Ok(()) => Next::Exit(EXIT_OK),
        Err(line) => {
            io.line(&line);
            Next::Exit(EXIT_FAIL)
        }
    }
}

fn start_vm(args: &StartArgs, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    let mut req = args.request.clone();
    match start::check_new_vm(&mut req) {
        Ok(warnings) => io.lines(&warnings),
        Err(lines) => {
            io.lines(&lines);
            return Next::Exit(EXIT_FAIL);
        }
    }
    let files = match start::open_boot_files(&req) {
        Ok(files) => files,
        Err(line) => {
            io.line(&line);
            return Next::Exit(EXIT_FAIL);
        }
    };
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let Some(mut conn) = open(daemon, io, &Request::Start(req), &fds) else {
        return Next::Exit(EXIT_FAIL);
    };
    let Some(resp) = next_answer(conn.as_mut(), io) else {
        return Next::Exit(EXIT_FAIL);
    };
    match messages::start_reply(&resp) {
        Ok((id, tty)) if args.console => Next::Console {
            vm: VmRef::Id(id),
            tty,
        },
        Ok((id, tty)) => {
            io.line(&messages::started(id, &tty));
            Next::Exit(EXIT_OK)
        }
        Err(line) => {
            io.line(&line);
            Next::Exit(EXIT_FAIL)
        }
    }
}

/// `stopping vm NAME: ` / `waiting for vm NAME: ` (no name when given an id, as OpenBSD).
fn prefix(verb: &str, vm: &VmRef) -> String {
    match vm {
        VmRef::Name(name) => format!("{verb} vm {name}: "),
        VmRef::Id(_) => format!("{verb} vm: "),
    }
}

/// Sends a stop or wait and reports the answers until one completes the line.
fn terminate(req: &Request, waiting: bool, daemon: &dyn Connector, io: &mut Io<'_>) -> bool {
    let Some(mut conn) = open(daemon, io, req, &[]) else {
        return false;
    };
    loop {
        let Some(resp) = next_answer(conn.as_mut(), io) else {
            return false;
        };
        if let Step::Done { line, ok } = messages::terminate_reply(&resp, waiting) {
            io.line(&line);
            return ok;
        }
    }
}

fn stop_vm(vm: &VmRef, force: bool, wait: bool, daemon: &dyn Connector, io: &mut Io<'_>) -> bool {
    io.partial(&prefix("stopping", vm));
    let req = Request::Stop {
        vm: vm.clone(),
        force,
        wait,
    };
    terminate(&req, wait, daemon, io)
}

fn wait_vm(vm: &VmRef, daemon: &dyn Connector, io: &mut Io<'_>) -> bool {
    io.partial(&prefix("waiting for", vm));
    terminate(&Request::Wait(vm.clone()), true, daemon, io)
}

/// `stop -a`: the running VMs from `status`, then each stopped by name, one after the
/// other. Fails if any stop failed.
fn stop_all(force: bool, wait: bool, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    let req = Request::Status {
        vm: None,
        running_only: true,
    };
    let rows = match ask(daemon, io, &req) {
        None => return Next::Exit(EXIT_FAIL),
        Some(Response::Status(rows)) => rows,
        Some(resp @ Response::Failed { .. }) => {
            io.line(&messages::command_failed(&resp));
            return Next::Exit(EXIT_FAIL);
        }
        Some(_) => {
            io.line(&warnx(messages::UNEXPECTED));
            return Next::Exit(EXIT_FAIL);
        }
    };
    let mut ok = true;
    for vm in status::select(&rows, None, true) {
        ok &= stop_vm(&VmRef::Name(vm.name.clone()), force, wait, daemon, io);
    }
    status_of(ok)
}

fn pause(req: Request, pausing: bool, daemon: &dyn Connector, io: &mut Io<'_>) -> Next {
    let Some(resp) = ask(daemon, io, &req) else {
        return Next::Exit(EXIT_FAIL);
    };
    let (line, ok) = messages::pause_reply(&resp, pausing);
    io.line(&line);
    status_of(ok)
}

/// `status`: the table (or JSON) on stdout; fails when no VM was shown.
fn show_status(
    vm: Option<&VmRef>,
    running_only: bool,
    json: bool,
    daemon: &dyn Connector,
    io: &mut Io<'_>,
) -> Next {
    let req = Request::Status {
        vm: vm.cloned(),
        running_only,
    };
    let rows = match ask(daemon, io, &req) {
        None => return Next::Exit(EXIT_FAIL),
        Some(Response::Status(rows)) => rows,
        Some(resp @ Response::Failed { .. }) => {
            io.line(&messages::command_failed(&resp));
            return Next::Exit(EXIT_FAIL);
        }
        Some(_) => {
            io.line(&warnx(messages::UNEXPECTED));
            return Next::Exit(EXIT_FAIL);
        }
    };
    // vmd filters too; doing it here keeps the output right whatever it sent.
    let shown = status::select(&rows, vm, running_only);
    let text = if json {
        status::render_json(&shown)
    } else {
        status::render_table(&shown)
    };
    let _ = io.out.write_all(text.as_bytes());
    let _ = io.out.flush();
    status_of(!shown.is_empty())
}

#[cfg(test)]
mod tests;
