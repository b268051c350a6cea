//! What vmctl prints for each answer of vmd, word for word as OpenBSD's vmctl (spec §3.5),
//! and the helpers that shape a diagnostic line. Everything here is a pure function of the
//! answer so each message is tested without a daemon.

use std::ffi::CStr;
use std::fmt::Display;
use std::io;

use ipc::proto::{Response, VmdError};

/// The program name that prefixes diagnostics, as `warnx(3)` does with `__progname`.
pub const PROGNAME: &str = "vmctl";

/// Room for the longest strerror text glibc has (they are all far below).
const STRERROR_BUF: usize = 256;

/// `warnx(3)`: the message after the program name.
pub fn warnx(msg: impl Display) -> String {
    format!("{PROGNAME}: {msg}")
}

/// `warn(3)`: the message, then the errno's text.
pub fn warn(msg: impl Display, errno: i32) -> String {
    format!("{PROGNAME}: {msg}: {}", strerror(errno))
}

/// `strerror(3)` text for an errno value ("No such file or directory"), not Rust's
/// "(os error 2)" form: the spec's messages carry the C library's wording.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; STRERROR_BUF];
    // SAFETY: the buffer is writable for its whole length, which is what we pass; the XSI
    // strerror_r always NUL-terminates what it writes into a buffer of non-zero length.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: strerror_r succeeded, so buf holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The strerror text of an I/O error, falling back to its own text when it carries no errno.
pub fn io_error_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

/// vmd's own failure codes (spec §3.5).
pub fn vmd_error(code: VmdError) -> &'static str {
    match code {
        VmdError::BiosMissing => "vmm bios firmware file not found.",
        VmdError::DiskMissing => "could not open disk image(s)",
        VmdError::StopInvalid => "cannot stop vm that is not running",
        VmdError::CdromMissing => "could not find specified iso image",
        VmdError::CdromInvalid => "specified iso image is not a regular file",
        VmdError::ParentInvalid => "invalid template",
    }
}

/// Any answer a command did not expect.
pub const UNEXPECTED: &str = "unexpected response received from vmd";

/// `start`: the started VM's id and tty, or the line to print.
pub fn start_reply(resp: &Response) -> Result<(u32, String), String> {
    match resp {
        Response::Started { id, tty } => Ok((*id, tty.clone())),
        Response::Failed {
            code: Some(code), ..
        } => Err(warnx(vmd_error(*code))),
        Response::Failed { errno, .. } => Err(errno_failure("start vm command failed", *errno)),
        _ => Err(warnx(UNEXPECTED)),
    }
}

/// The success line of `start` without `-c`.
pub fn started(id: u32, tty: &str) -> String {
    warnx(format_args!("started vm {id} successfully, tty {tty}"))
}

/// `send`: the lines to print and whether it is a success. A failure names the errno as
/// vmctl does, then vmd's reason (which part of the stream, which write failed): a stream
/// problem is not told by an errno alone.
pub fn send_reply(resp: &Response) -> (Vec<String>, bool) {
    match resp {
        Response::Sent { id } => (vec![warnx(format_args!("sent vm {id} successfully"))], true),
        Response::Failed { .. } => (stream_failure("send vm command failed", resp), false),
        _ => (vec![warnx(UNEXPECTED)], false),
    }
}

/// `receive`: the received VM's id and tty (it is reported as `start` reports a VM), or the
/// lines to print.
pub fn receive_reply(resp: &Response) -> Result<(u32, String), Vec<String>> {
    match resp {
        Response::Started { id, tty } => Ok((*id, tty.clone())),
        Response::Failed { .. } => Err(stream_failure("receive vm command failed", resp)),
        _ => Err(vec![warnx(UNEXPECTED)]),
    }
}

/// A failed send or receive: vmd's code or errno, then its message on a line of its own.
fn stream_failure(what: &str, resp: &Response) -> Vec<String> {
    let Response::Failed {
        errno,
        code,
        message,
    } = resp
    else {
        return vec![warnx(UNEXPECTED)];
    };
    let mut lines = vec![match code {
        Some(code) => warnx(format_args!("{what}: {}", vmd_error(*code))),
        None => errno_failure(what, *errno),
    }];
    if !message.is_empty() {
        lines.push(warnx(message));
    }
    lines
}

/// One step of `stop`/`wait`: wait for another answer, or print this and finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The stop was accepted and the caller waits for the termination.
    More,
    /// The text that completes the `stopping vm NAME: ` line, and whether it is a success.
    Done { line: String, ok: bool },
}

/// `stop`/`wait` (OpenBSD's `terminate_vm_complete`): these lines complete the
/// `stopping vm NAME: ` prefix, so they carry no program name.
pub fn terminate_reply(resp: &Response, waiting: bool) -> Step {
    let done = |line: String, ok| Step::Done { line, ok };
    match resp {
        Response::StopAccepted { .. } if waiting => Step::More,
        Response::StopAccepted { id } => done(format!("requested to shutdown vm {id}"), true),
        Response::Terminated { id, forced: true } => {
            done(format!("forced to terminate vm {id}"), true)
        }
        Response::Terminated { id, forced: false } => done(format!("terminated vm {id}"), true),
        Response::Failed {
            code: Some(code), ..
        } => done(vmd_error(*code).to_string(), false),
        Response::Failed { errno, .. } if *errno == libc::ENOENT => {
            done("vm not found".to_string(), false)
        }
        Response::Failed { errno, .. } if *errno == libc::EINTR => {
            done("interrupted call".to_string(), false)
        }
        Response::Failed { errno, .. } => done(format!("failed: {}", strerror(*errno)), false),
        _ => done(warnx(UNEXPECTED), false),
    }
}

/// `pause`/`unpause`: the line to print and whether it is a success.
pub fn pause_reply(resp: &Response, pause: bool) -> (String, bool) {
    let verb = if pause { "pause" } else { "unpause" };
    match (resp, pause) {
        (Response::Paused { id }, true) | (Response::Unpaused { id }, false) => {
            (warnx(format_args!("{verb}d vm {id} successfully")), true)
        }
        (
            Response::Failed {
                code: Some(code), ..
            },
            _,
        ) => (warnx(vmd_error(*code)), false),
        (Response::Failed { errno, .. }, _) => (
            errno_failure(&format!("{verb} vm command failed"), *errno),
            false,
        ),
        _ => (warnx(UNEXPECTED), false),
    }
}

/// `load`, `reload`, `reset`, `log`, `Break`: nothing on success, else `command failed`.
pub fn generic_reply(resp: &Response) -> Result<(), String> {
    match resp {
        Response::Ok => Ok(()),
        Response::Failed { .. } => Err(command_failed(resp)),
        _ => Err(warnx(UNEXPECTED)),
    }
}

/// OpenBSD's answer to `IMSG_CTL_FAIL`: `command failed`, with the errno's text if any.
pub fn command_failed(resp: &Response) -> String {
    match resp {
        Response::Failed {
            code: Some(code), ..
        } => warnx(format_args!("command failed: {}", vmd_error(*code))),
        Response::Failed { errno, .. } if *errno != 0 => warn("command failed", *errno),
        _ => warnx("command failed"),
    }
}

/// `console`: the VM's id and tty, or the line to print. A VM that is unknown, not running
/// or without a tty yet (EAGAIN, while it starts) has no console, as OpenBSD's vmctl finds
/// no tty in the VM list; any other refusal (EPERM) is reported as vmd gave it.
pub fn console_reply(resp: &Response) -> Result<(u32, String), String> {
    match resp {
        Response::Console { id, tty } => Ok((*id, tty.clone())),
        Response::Failed {
            code: Some(VmdError::StopInvalid),
            ..
        } => Err(warnx("console not found")),
        Response::Failed {
            errno, code: None, ..
        } if matches!(*errno, 0 | libc::ENOENT | libc::EINVAL | libc::EAGAIN) => {
            Err(warnx("console not found"))
        }
        Response::Failed { .. } => Err(command_failed(resp)),
        _ => Err(warnx(UNEXPECTED)),
    }
}

/// `warn(3)` for a daemon errno; errno 0 (vmd gave no reason) drops the `: reason` part
/// rather than printing "Success".
fn errno_failure(msg: &str, errno: i32) -> String {
    if errno == 0 {
        warnx(msg)
    } else {
        warn(msg, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(errno: i32, code: Option<VmdError>) -> Response {
        Response::Failed {
            errno,
            code,
            message: String::new(),
        }
    }

    #[test]
    fn strerror_is_libc_text() {
        assert_eq!(strerror(libc::ENOENT), "No such file or directory");
        assert_eq!(strerror(libc::EALREADY), "Operation already in progress");
        assert_eq!(
            io_error_text(&io::Error::from_raw_os_error(libc::EACCES)),
            "Permission denied"
        );
    }

    #[test]
    fn send_and_receive_messages() {
        assert_eq!(
            send_reply(&Response::Sent { id: 3 }),
            (vec!["vmctl: sent vm 3 successfully".to_string()], true)
        );
        let refused = Response::Failed {
            errno: libc::ENOSPC,
            code: None,
            message: "vm 3: send failed: writing the snapshot stream: No space left on device"
                .into(),
        };
        assert_eq!(
            send_reply(&refused),
            (
                vec![
                    "vmctl: send vm command failed: No space left on device".to_string(),
                    "vmctl: vm 3: send failed: writing the snapshot stream: No space left on device"
                        .to_string()
                ],
                false
            )
        );
        assert_eq!(
            send_reply(&failed(libc::EPERM, None)).0,
            ["vmctl: send vm command failed: Operation not permitted"]
        );
        assert_eq!(
            receive_reply(&Response::Started {
                id: 2,
                tty: "/dev/pts/4".into()
            }),
            Ok((2, "/dev/pts/4".into()))
        );
        assert_eq!(
            receive_reply(&failed(0, Some(VmdError::DiskMissing))),
            Err(vec![
                "vmctl: receive vm command failed: could not open disk image(s)".to_string()
            ])
        );
        assert_eq!(
            receive_reply(&Response::Ok),
            Err(vec![
                "vmctl: unexpected response received from vmd".to_string()
            ])
        );
    }

    #[test]
    fn start_messages() {
        let ok = Response::Started {
            id: 1,
            tty: "/dev/pts/3".into(),
        };
        assert_eq!(start_reply(&ok), Ok((1, "/dev/pts/3".into())));
        assert_eq!(
            started(1, "/dev/pts/3"),
            "vmctl: started vm 1 successfully, tty /dev/pts/3"
        );
        let cases = [
            (
                failed(0, Some(VmdError::BiosMissing)),
                "vmctl: vmm bios firmware file not found.",
            ),
            (
                failed(0, Some(VmdError::DiskMissing)),
                "vmctl: could not open disk image(s)",
            ),
            (
                failed(0, Some(VmdError::CdromMissing)),
                "vmctl: could not find specified iso image",
            ),
            (
                failed(0, Some(VmdError::CdromInvalid)),
                "vmctl: specified iso image is not a regular file",
            ),
            (
                failed(0, Some(VmdError::ParentInvalid)),
                "vmctl: invalid template",
            ),
            (
                failed(libc::EALREADY, None),
                "vmctl: start vm command failed: Operation already in progress",
            ),
            (
                failed(libc::EPERM, None),
                "vmctl: start vm command failed: Operation not permitted",
            ),
            (failed(0, None), "vmctl: start vm command failed"),
            (Response::Ok, "vmctl: unexpected response received from vmd"),
        ];
        for (resp, line) in cases {
            assert_eq!(start_reply(&resp), Err(line.to_string()), "{resp:?}");
        }
    }

    #[test]
    fn terminate_messages() {
        let done = |line: &str, ok| Step::Done {
            line: line.into(),
            ok,
        };
        let accepted = Response::StopAccepted { id: 4 };
        assert_eq!(
            terminate_reply(&accepted, false),
            done("requested to shutdown vm 4", true)
        );
        assert_eq!(terminate_reply(&accepted, true), Step::More);
        assert_eq!(
            terminate_reply(
                &Response::Terminated {
                    id: 4,
                    forced: false
                },
                true
            ),
            done("terminated vm 4", true)
        );
        assert_eq!(
            terminate_reply(
                &Response::Terminated {
                    id: 4,
                    forced: true
                },
                true
            ),
            done("forced to terminate vm 4", true)
        );
        assert_eq!(
            terminate_reply(&failed(0, Some(VmdError::StopInvalid)), false),
            done("cannot stop vm that is not running", false)
        );
        assert_eq!(
            terminate_reply(&failed(libc::ENOENT, None), false),
            done("vm not found", false)
        );
        assert_eq!(
            terminate_reply(&failed(libc::EINTR, None), false),
            done("interrupted call", false)
        );
        assert_eq!(
            terminate_reply(&failed(libc::EALREADY, None), false),
            done("failed: Operation already in progress", false)
        );
        assert_eq!(
            terminate_reply(&Response::Ok, false),
            done("vmctl: unexpected response received from vmd", false)
        );
    }

    #[test]
    fn pause_messages() {
        assert_eq!(
            pause_reply(&Response::Paused { id: 2 }, true),
            ("vmctl: paused vm 2 successfully".into(), true)
        );
        assert_eq!(
            pause_reply(&Response::Unpaused { id: 2 }, false),
            ("vmctl: unpaused vm 2 successfully".into(), true)
        );
        assert_eq!(
            pause_reply(&failed(libc::ENOENT, None), true),
            (
                "vmctl: pause vm command failed: No such file or directory".into(),
                false
            )
        );
        assert_eq!(
            pause_reply(&failed(libc::EPERM, None), false),
            (
                "vmctl: unpause vm command failed: Operation not permitted".into(),
                false
            )
        );
        assert!(
            !pause_reply(&Response::Paused { id: 2 }, false).1,
            "a pause answer to unpause is unexpected"
        );
    }

    #[test]
    fn generic_and_console_messages() {
        assert_eq!(generic_reply(&Response::Ok), Ok(()));
        assert_eq!(
            generic_reply(&failed(libc::EPERM, None)),
            Err("vmctl: command failed: Operation not permitted".into())
        );
        assert_eq!(
            generic_reply(&failed(0, None)),
            Err("vmctl: command failed".into())
        );
        assert_eq!(
            console_reply(&Response::Console {
                id: 1,
                tty: "/dev/pts/9".into()
            }),
            Ok((1, "/dev/pts/9".into()))
        );
        assert_eq!(
            console_reply(&failed(libc::ENOENT, None)),
            Err("vmctl: console not found".into())
        );
        assert_eq!(
            console_reply(&failed(libc::EAGAIN, None)),
            Err("vmctl: console not found".into())
        );
        assert_eq!(
            console_reply(&failed(0, Some(VmdError::StopInvalid))),
            Err("vmctl: console not found".into())
        );
        assert_eq!(
            console_reply(&failed(libc::EPERM, None)),
            Err("vmctl: command failed: Operation not permitted".into())
        );
    }
}
