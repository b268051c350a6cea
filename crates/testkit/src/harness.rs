//! Runs a VMM as a child process and talks to the guest's serial console on
//! its stdin/stdout.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Why an expectation on the console failed. Every variant carries the
/// transcript so far, because that is what a failing test needs to show.
#[derive(Debug)]
pub enum HarnessError {
    /// No matching line before the deadline.
    Timeout {
        waiting_for: String,
        transcript: String,
    },
    /// The VMM closed its stdout (exited) before a matching line.
    Closed {
        waiting_for: String,
        transcript: String,
    },
    /// Spawning, writing to or waiting for the VMM failed.
    Io(io::Error),
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Timeout {
                waiting_for,
                transcript,
            } => {
                write!(
                    f,
                    "timed out waiting for {waiting_for}; console so far:\n{transcript}"
                )
            }
            HarnessError::Closed {
                waiting_for,
                transcript,
            } => {
                write!(
                    f,
                    "VMM output ended while waiting for {waiting_for}; console:\n{transcript}"
                )
            }
            HarnessError::Io(e) => write!(f, "VMM process: {e}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<io::Error> for HarnessError {
    fn from(e: io::Error) -> Self {
        HarnessError::Io(e)
    }
}

/// A running VMM whose stdout is the guest console. Dropping it kills and
/// reaps the process.
pub struct Vmm {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    transcript: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Signalled when the stderr reader has seen end of file.
    stderr_done: Receiver<()>,
    exited: Option<ExitStatus>,
}

impl Vmm {
    /// Starts `cmd` with piped stdio. Console lines are split on `\n`, with a
    /// trailing `\r` dropped; a partial last line is delivered at EOF.
    pub fn spawn(mut cmd: Command) -> Result<Vmm, HarnessError> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr was piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let (done_tx, stderr_done) = mpsc::channel();
        // Drained on its own thread so a chatty log can never block the VMM.
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = done_tx.send(());
        });
        Ok(Vmm {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            transcript: Vec::new(),
            stderr,
            stderr_done,
            exited: None,
        })
    }

    /// Waits up to `timeout` for the next console line starting with
    /// `prefix`; lines before it are kept in the transcript. Returns the line.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(HarnessError::Timeout {
                        waiting_for: format!("{prefix:?} ({timeout:?})"),
                        transcript: self.transcript_text(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(HarnessError::Closed {
                        waiting_for: format!("{prefix:?}"),
                        transcript: self.transcript_text(),
                    })
                }
            }
        }
    }

    /// Writes `bytes` to the guest's console input.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), HarnessError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin closed"))?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits up to `timeout` for the VMM to exit; on timeout it is killed and
    /// `Timeout` returned. Console lines still in flight are collected.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                self.collect_rest();
                return Err(HarnessError::Timeout {
                    waiting_for: format!("the VMM to exit ({timeout:?})"),
                    transcript: self.transcript_text(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.exited = Some(status);
        self.collect_rest();
        Ok(status)
    }

    /// Every console line read so far (by `expect_line` or `wait_exit`).
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }

    /// The VMM's stderr so far (its log).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Process id, for tests that signal the VMM themselves.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn transcript_text(&self) -> String {
        self.transcript.join("\n")
    }

    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
    }

    /// After exit: close stdin and take whatever lines the reader still has, and let the
    /// stderr reader reach end of file so `stderr()` holds the whole log. Bounded, not a
    /// join: a grandchild holding a pipe must not hang us.
    fn collect_rest(&mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.transcript.push(line);
        }
        let _ = self
            .stderr_done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn reads_lines_and_exit_status() {
        let mut vmm = Vmm::spawn(sh(
            "printf 'junk\\r\\nBOOT x\\r\\nDONE'; echo log >&2; exit 3",
        ))
        .unwrap();
        assert_eq!(
            vmm.expect_line("BOOT", Duration::from_secs(5)).unwrap(),
            "BOOT x"
        );
        let status = vmm.wait_exit(Duration::from_secs(5)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(vmm.transcript(), ["junk", "BOOT x", "DONE"]);
        assert_eq!(vmm.stderr(), "log\n");
    }

    #[test]
    fn echoes_input() {
        let mut vmm = Vmm::spawn(sh("read l; echo \"INPUT $l\"")).unwrap();
        vmm.send(b"hello\n").unwrap();
        assert_eq!(
            vmm.expect_line("INPUT", Duration::from_secs(5)).unwrap(),
            "INPUT hello"
        );
    }

    #[test]
    fn times_out_and_kills() {
        let mut vmm = Vmm::spawn(sh("echo first; exec sleep 30")).unwrap();
        let err = vmm
            .expect_line("NEVER", Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("first"));
        let start = Instant::now();
        assert!(vmm.wait_exit(Duration::from_millis(200)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reports_closed_output() {
        let mut vmm = Vmm::spawn(sh("echo only")).unwrap();
        let err = vmm
            .expect_line("NEVER", Duration::from_secs(5))
            .unwrap_err();
        assert!(matches!(err, HarnessError::Closed { .. }), "{err}");
    }
}
