//! `vmctl console`: our own serial console client in place of OpenBSD's `cu(1)` (spec
//! §4.10). vmd only tells us the tty; we open it with our own permissions (its mode is the
//! access check), put the local terminal in raw mode and copy bytes both ways. cu's escapes
//! at the start of a line: `~.` or `~^D` leaves, `~#` or `~B` sends a BREAK (through vmd,
//! which owns the UART), `~~` sends one `~`, `~?` lists them.
//!
//! Status lines (`Connected to …`, `[EOT]`) go to stderr so stdout carries only the
//! guest's output.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use ipc::proto::{Request, VmRef};

use crate::actions::{EXIT_FAIL, EXIT_OK};
use crate::client::Connector;
use crate::messages::{self, io_error_text, warnx};

/// The escape character, at the start of a line.
const ESCAPE: u8 = b'~';
/// Control-D, cu's other way out after the escape.
const EOT: u8 = 0x04;
/// The line speed cu announces and sets (a pty ignores it; a guest reading the divisor of
/// its UART sees vmd's emulation, not this).
pub const SPEED: u32 = 115_200;
/// Bytes moved per read.
const BUF_SIZE: usize = 4096;
/// The signals that end a session (and must not leave the terminal raw).
const EXIT_SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

const HELP: &str = "\r\n~.\tleave the console\r\n~^D\tleave the console\r\n\
~#\tsend a BREAK\r\n~B\tsend a BREAK\r\n~~\tsend a ~\r\n~?\tthis help\r\n";

/// What typed input asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the guest.
    Send(Vec<u8>),
    /// A BREAK on the guest's serial line.
    Break,
    /// Leave the console.
    Quit,
    /// Show the escapes.
    Help,
}

/// The escape recogniser: a pure function of the typed bytes, so every sequence is tested.
#[derive(Debug, Clone)]
pub struct Escape {
    /// The last byte sent ended a line (or nothing was sent yet).
    line_start: bool,
    /// A `~` at the start of a line is held back until the next byte says what it means.
    pending: bool,
}

impl Default for Escape {
    fn default() -> Self {
        Escape {
            line_start: true,
            pending: false,
        }
    }
}

impl Escape {
    /// Turns typed bytes into actions, in order; nothing after a [`Action::Quit`].
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut out = Vec::new();
        let flush = |out: &mut Vec<u8>, actions: &mut Vec<Action>| {
            if !out.is_empty() {
                actions.push(Action::Send(std::mem::take(out)));
            }
        };
        for &b in input {
            if self.pending {
                self.pending = false;
                match b {
                    b'.' | EOT => {
                        flush(&mut out, &mut actions);
                        actions.push(Action::Quit);
                        return actions;
                    }
                    b'#' | b'B' => {
                        flush(&mut out, &mut actions);
                        actions.push(Action::Break);
                        continue;
                    }
                    b'?' => {
                        flush(&mut out, &mut actions);
                        actions.push(Action::Help);
                        continue;
                    }
                    ESCAPE => {
                        out.push(ESCAPE);
                        self.line_start = false;
                        continue;
                    }
                    // Not an escape: the `~` goes out with the byte.
                    _ => out.push(ESCAPE),
                }
            } else if self.line_start && b == ESCAPE {
                self.pending = true;
                continue;
            }
            out.push(b);
            self.line_start = b == b'\r' || b == b'\n';
        }
        flush(&mut out, &mut actions);
        actions
    }
}

/// Attaches to `tty` until the user leaves, the tty closes or a signal arrives.
pub fn attach(tty: &str, vm: &VmRef, daemon: &dyn Connector) -> u8 {
    let mut stderr = io::stderr();
    let line = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(tty)
    {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(
                stderr,
                "{}",
                warnx(format_args!("{tty}: {}", io_error_text(&e)))
            );
            return EXIT_FAIL;
        }
    };
    // A tty that is not one (ENOTTY) still carries bytes; leave its settings alone.
    if let Ok(mut t) = get_termios(line.as_fd()) {
        make_raw(&mut t);
        // SAFETY: t is a valid termios from tcgetattr.
        unsafe {
            libc::cfsetispeed(&mut t, libc::B115200);
            libc::cfsetospeed(&mut t, libc::B115200);
        }
        t.c_cflag |= libc::CLOCAL | libc::CREAD;
        let _ = set_termios(line.as_fd(), &t);
    }
    let signals = match SignalGuard::block() {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                stderr,
                "{}",
                warnx(format_args!("signalfd: {}", io_error_text(&e)))
            );
            return EXIT_FAIL;
        }
    };
    let stdin = io::stdin();
    let raw = RawTerminal::enter(stdin.as_fd());
    let _ = write!(stderr, "Connected to {tty} (speed {SPEED})\r\n");
    let status = pump(&line, &signals, vm, daemon);
    let _ = write!(stderr, "\r\n[EOT]\r\n");
    // The terminal first: unblocking the signals may end the process right there.
    drop(raw);
    drop(signals);
    status
}

/// Copies bytes both ways until the session ends; the exit status.
fn pump(line: &File, signals: &SignalGuard, vm: &VmRef, daemon: &dyn Connector) -> u8 {
    let (Ok(stdin), Ok(stdout)) = (
        io::stdin().as_fd().try_clone_to_owned(),
        io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        return EXIT_FAIL;
    };
    let (mut stdin, mut stdout) = (File::from(stdin), File::from(stdout));
    let mut tty_in = line;
    let mut tty_out = line;
    let mut escape = Escape::default();
    let mut buf = [0u8; BUF_SIZE];
    loop {
        let mut fds = [
            pollfd(stdin.as_raw_fd()),
            pollfd(line.as_raw_fd()),
            pollfd(signals.fd.as_raw_fd()),
        ];
        // SAFETY: fds is a valid array of pollfd of the length passed.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return EXIT_FAIL;
        }
        if fds[2].revents != 0 {
            return EXIT_FAIL;
        }
        if fds[1].revents != 0 {
            match tty_in.read(&mut buf) {
                Ok(0) => return EXIT_OK,
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).is_err() {
                        return EXIT_FAIL;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // EIO: the pty's master side is gone, the VM has stopped.
                Err(_) => return EXIT_OK,
            }
        }
        if fds[0].revents != 0 {
            let n = match stdin.read(&mut buf) {
                Ok(0) => return EXIT_OK,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return EXIT_FAIL,
            };
            for action in escape.feed(&buf[..n]) {
                match action {
                    Action::Send(bytes) => {
                        if tty_out.write_all(&bytes).is_err() {
                            return EXIT_OK;
                        }
                    }
                    Action::Break => send_break(vm, daemon),
                    Action::Help => {
                        let _ = io::stderr().write_all(HELP.as_bytes());
                    }
                    Action::Quit => return EXIT_OK,
                }
            }
        }
    }
}

fn pollfd(fd: libc::c_int) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Asks vmd for a BREAK over a second connection; a failure is shown, the session goes on.
fn send_break(vm: &VmRef, daemon: &dyn Connector) {
    let result = daemon.connect().and_then(|mut conn| {
        conn.send(&Request::Break(vm.clone()), &[])?;
        match conn.recv()? {
            Some(resp) => messages::generic_reply(&resp),
            None => Err(warnx("pipe closed")),
        }
    });
    if let Err(line) = result {
        let _ = write!(io::stderr(), "\r\n{line}\r\n");
    }
}

fn get_termios(fd: BorrowedFd<'_>) -> io::Result<libc::termios> {
    let mut t = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the termios it is given when it returns 0.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), t.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful tcgetattr.
    Ok(unsafe { t.assume_init() })
}

fn set_termios(fd: BorrowedFd<'_>, t: &libc::termios) -> io::Result<()> {
    // SAFETY: t points to a valid termios for the duration of the call.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn make_raw(t: &mut libc::termios) {
    // SAFETY: t is a valid termios; cfmakeraw only edits its fields.
    unsafe { libc::cfmakeraw(t) };
}

/// The local terminal in raw mode (no echo, no line editing, no signal keys) while alive;
/// its settings come back on drop, which every exit path reaches, a panic's unwinding
/// included (signals are turned into a normal return by [`SignalGuard`]).
struct RawTerminal<'a> {
    fd: BorrowedFd<'a>,
    saved: Option<libc::termios>,
}

impl<'a> RawTerminal<'a> {
    fn enter(fd: BorrowedFd<'a>) -> RawTerminal<'a> {
        // Not a terminal (input from a pipe): nothing to change or restore.
        let saved = get_termios(fd).ok().filter(|saved| {
            let mut raw = *saved;
            make_raw(&mut raw);
            set_termios(fd, &raw).is_ok()
        });
        RawTerminal { fd, saved }
    }
}

impl Drop for RawTerminal<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = set_termios(self.fd, saved);
        }
    }
}

/// [`EXIT_SIGNALS`] blocked and delivered through a signalfd the copy loop polls, so a
/// signal ends the session through the normal path that restores the terminal. The old
/// mask comes back on drop; the signal, left pending (the signalfd is only polled, never
/// read), then takes its default effect, so whoever sent it sees vmctl die of it. A signal
/// the caller ignores (`nohup`) is discarded instead and vmctl exits 1.
struct SignalGuard {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl SignalGuard {
    fn block() -> io::Result<SignalGuard> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set; sigaddset is given valid signal numbers.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in EXIT_SIGNALS {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            set.assume_init()
        };
        // SAFETY: both pointers are valid sigsets; old is written before it is read.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: pthread_sigmask succeeded and filled old.
        let old = unsafe { old.assume_init() };
        // SAFETY: a new signalfd (-1) for a valid set; the result is checked below.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            let err = io::Error::last_os_error();
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            return Err(err);
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalGuard { fd, old })
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restores a mask pthread_sigmask returned. A pending exit signal is
        // delivered here, after the terminal was restored (see the type's doc).
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(b: &[u8]) -> Action {
        Action::Send(b.to_vec())
    }

    #[test]
    fn plain_bytes_pass() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b"ls -l\r"), [send(b"ls -l\r")]);
        assert_eq!(e.feed(b"a~b"), [send(b"a~b")], "~ inside a line is plain");
    }

    #[test]
    fn tilde_dot_at_line_start_quits() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b"~."), [Action::Quit]);
        let mut e = Escape::default();
        assert_eq!(e.feed(b"echo\r~.rest"), [send(b"echo\r"), Action::Quit]);
        let mut e = Escape::default();
        assert_eq!(e.feed(b"x\n~\x04"), [send(b"x\n"), Action::Quit]);
    }

    #[test]
    fn escape_split_across_reads() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b"\r~"), [send(b"\r")]);
        assert_eq!(e.feed(b"."), [Action::Quit]);
    }

    #[test]
    fn breaks_and_help() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b"~#"), [Action::Break]);
        assert_eq!(e.feed(b"~B~?"), [Action::Break, Action::Help]);
        assert_eq!(e.feed(b"~."), [Action::Quit], "still at line start");
    }

    #[test]
    fn double_tilde_and_other_bytes() {
        let mut e = Escape::default();
        assert_eq!(e.feed(b"~~x"), [send(b"~x")]);
        assert_eq!(e.feed(b"~."), [send(b"~.")], "not at line start any more");
        let mut e = Escape::default();
        assert_eq!(e.feed(b"~x\r~~\r"), [send(b"~x\r~\r")]);
        let mut e = Escape::default();
        assert_eq!(e.feed(b"~\r~."), [send(b"~\r"), Action::Quit]);
    }
}
