//! End to end: the vmctl binary against a fake vmd (a thread serving canned answers on a
//! temporary control socket through the real ipc transport). Checks the requests vmctl
//! sends, the fds it attaches, and its output and exit status.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use ipc::proto::{NicSpec, Request, Response, StartRequest, VmRef, VmState, VmStatus};
use ipc::{server_hello, Listener};

/// What the fake vmd saw on one connection.
struct Seen {
    request: Request,
    fds: Vec<OwnedFd>,
}

/// A fake vmd serving one connection per entry of `script`: it reads one request and sends
/// the listed answers, then closes the connection.
struct FakeVmd {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    thread: JoinHandle<Vec<Seen>>,
    /// Each request as it arrives, for tests that must wait for one.
    requests: mpsc::Receiver<Request>,
}

impl FakeVmd {
    fn start(script: Vec<Vec<Response>>) -> FakeVmd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vmd.sock");
        let listener = Listener::bind(&socket, 0o600).unwrap();
        let (notify, requests) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            for answers in script {
                let chan = listener.accept().unwrap();
                server_hello(&chan).unwrap();
                let (request, fds) = chan.recv::<Request>().unwrap();
                // Nobody listening is fine: most tests only look at the end result.
                let _ = notify.send(request.clone());
                seen.push(Seen { request, fds });
                for answer in answers {
                    chan.send(&answer, &[]).unwrap();
                }
            }
            seen
        });
        FakeVmd {
            _dir: dir,
            socket,
            thread,
            requests,
        }
    }

    /// Runs vmctl against this daemon and returns its output and what the daemon saw.
    fn run(self, args: &[&str]) -> (Output, Vec<Seen>) {
        let out = vmctl(&self.socket, args);
        let seen = self.thread.join().unwrap();
        (out, seen)
    }
}

fn vmctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn row(id: u32, name: &str, running: bool) -> VmStatus {
    VmStatus {
        id,
        pid: running.then_some(4000 + id),
        vcpus: 1,
        max_mem: 1 << 30,
        cur_mem: running.then_some(179 << 20),
        tty: running.then(|| format!("/dev/pts/{id}")),
        uid: 0,
        user: Some("root".into()),
        group: None,
        state: if running {
            VmState::Running
        } else {
            VmState::Stopped
        },
        name: name.into(),
    }
}

#[test]
fn start_existing_vm() {
    let vmd = FakeVmd::start(vec![vec![Response::Started {
        id: 1,
        tty: "/dev/pts/3".into(),
    }]]);
    let (out, seen) = vmd.run(&["start", "web"]);
    assert_eq!(
        stderr(&out),
        "vmctl: started vm 1 successfully, tty /dev/pts/3\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        seen[0].request,
        Request::Start(StartRequest {
            vm: Some(VmRef::Name("web".into())),
            ..StartRequest::default()
        })
    );
    assert!(seen[0].fds.is_empty());
}

#[test]
fn start_new_vm_sends_kernel_fd_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"KERNEL").unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, b"INITRD").unwrap();
    let vmd = FakeVmd::start(vec![vec![Response::Started {
        id: 2,
        tty: "/dev/pts/4".into(),
    }]]);
    let (out, mut seen) = vmd.run(&[
        "start",
        "-b",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0",
        "-n",
        "lan",
        "-i",
        "2",
        "-p",
        "2",
        "new",
    ]);
    assert_eq!(
        stderr(&out),
        "vmctl: started vm 2 successfully, tty /dev/pts/4\n"
    );
    assert_eq!(out.status.code(), Some(0));
    let seen = seen.remove(0);
    let Request::Start(req) = seen.request else {
        panic!("{:?}", seen.request)
    };
    assert_eq!(req.boot, Some(kernel.canonicalize().unwrap()));
    assert_eq!(req.nics, [NicSpec::Switch("lan".into()), NicSpec::Plain]);
    assert_eq!(req.memory, Some(512 << 20));
    assert_eq!(req.cpus, Some(2));
    assert_eq!(req.cmdline.as_deref(), Some("console=ttyS0"));
    let contents: Vec<String> = seen
        .fds
        .into_iter()
        .map(|fd| {
            let mut s = String::new();
            File::from(fd).read_to_string(&mut s).unwrap();
            s
        })
        .collect();
    assert_eq!(contents, ["KERNEL", "INITRD"], "kernel then initrd");
}

#[test]
fn start_refused() {
    let vmd = FakeVmd::start(vec![vec![Response::Failed {
        errno: libc::EPERM,
        code: None,
        message: "not owner".into(),
    }]]);
    let (out, _) = vmd.run(&["start", "web"]);
    assert_eq!(
        stderr(&out),
        "vmctl: start vm command failed: Operation not permitted\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn stop_and_wait() {
    let vmd = FakeVmd::start(vec![vec![
        Response::StopAccepted { id: 3 },
        Response::Terminated {
            id: 3,
            forced: false,
        },
    ]]);
    let (out, seen) = vmd.run(&["stop", "-w", "web"]);
    assert_eq!(stderr(&out), "stopping vm web: terminated vm 3\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        seen[0].request,
        Request::Stop {
            vm: VmRef::Name("web".into()),
            force: false,
            wait: true
        }
    );

    let vmd = FakeVmd::start(vec![vec![Response::StopAccepted { id: 3 }]]);
    let (out, _) = vmd.run(&["sto", "3"]);
    assert_eq!(stderr(&out), "stopping vm: requested to shutdown vm 3\n");
    assert_eq!(out.status.code(), Some(0));

    let vmd = FakeVmd::start(vec![vec![Response::Failed {
        errno: libc::ENOENT,
        code: None,
        message: String::new(),
    }]]);
    let (out, _) = vmd.run(&["stop", "nosuch"]);
    assert_eq!(stderr(&out), "stopping vm nosuch: vm not found\n");
    assert_eq!(out.status.code(), Some(1));

    let vmd = FakeVmd::start(vec![vec![Response::Terminated {
        id: 5,
        forced: false,
    }]]);
    let (out, seen) = vmd.run(&["wait", "db"]);
    assert_eq!(stderr(&out), "waiting for vm db: terminated vm 5\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seen[0].request, Request::Wait(VmRef::Name("db".into())));
}

#[test]
fn stop_all() {
    let vmd = FakeVmd::start(vec![
        vec![Response::Status(vec![
            row(1, "a", true),
            row(2, "b", false),
            row(3, "c", true),
        ])],
        vec![Response::StopAccepted { id: 1 }],
        vec![Response::StopAccepted { id: 3 }],
    ]);
    let (out, seen) = vmd.run(&["stop", "-a"]);
    assert_eq!(
        stderr(&out),
        "stopping vm a: requested to shutdown vm 1\nstopping vm c: requested to shutdown vm 3\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(seen.len(), 3);
}

#[test]
fn status_table_json_and_exit_status() {
    let rows = vec![row(1, "OpenBSD", true), row(2, "tmpl", false)];
    let vmd = FakeVmd::start(vec![vec![Response::Status(rows.clone())]]);
    let (out, seen) = vmd.run(&["status"]);
    assert_eq!(
        stdout(&out),
        "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
         \x20   1  4001     1    1.0G    179M   pts/1         root  running OpenBSD\n\
         \x20   2     -     1    1.0G       -       -         root  stopped tmpl\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        seen[0].request,
        Request::Status {
            vm: None,
            running_only: false
        }
    );

    let vmd = FakeVmd::start(vec![vec![Response::Status(rows.clone())]]);
    let (out, _) = vmd.run(&["status", "--json", "tmpl"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["id"], 2);
    assert_eq!(json[0]["state"], "stopped");
    assert_eq!(out.status.code(), Some(0));

    let vmd = FakeVmd::start(vec![vec![Response::Status(vec![])]]);
    let (out, _) = vmd.run(&["show", "-r"]);
    assert_eq!(stdout(&out).lines().count(), 1, "header only");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn local_errors_need_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = vmctl(&socket, &["status"]);
    assert_eq!(
        stderr(&out),
        format!(
            "vmctl: connect: {}: No such file or directory\n",
            socket.display()
        )
    );
    assert_eq!(out.status.code(), Some(1));

    let out = vmctl(&socket, &["st"]);
    assert_eq!(
        stderr(&out),
        "ambiguous argument: st\nusage:\tvmctl [-v] command [arg ...]\n"
    );
    assert_eq!(out.status.code(), Some(1));

    let out = vmctl(&socket, &["start", "-m", "1G", "x"]);
    assert_eq!(
        stderr(&out),
        "vmctl: starting without disks\nvmctl: no kernel or disk/cdrom specified\n"
    );
    assert_eq!(out.status.code(), Some(1));

    let img = dir.path().join("disk.img");
    let out = vmctl(&socket, &["create", "-s", "10M", img.to_str().unwrap()]);
    assert_eq!(stderr(&out), "vmctl: raw imagefile created\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 10 << 20);
}

/// A pty pair: (master, slave, slave path). The slave is put in raw mode as vmd leaves it,
/// so bytes pass unchanged both ways. The caller keeps the slave open until vmctl has it
/// too: closing the last slave fd early would make the master read EIO.
fn pty() -> (File, OwnedFd, String) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two fds into the given ints; the other arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh from openpty and owned by nobody else.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        slave.as_raw_fd()
    }))
    .unwrap();
    {
        use std::os::fd::AsRawFd;
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills t on success (asserted), cfmakeraw edits it, tcsetattr
        // reads it.
        unsafe {
            assert_eq!(libc::tcgetattr(slave.as_raw_fd(), t.as_mut_ptr()), 0);
            let mut t = t.assume_init();
            libc::cfmakeraw(&mut t);
            assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
        }
    }
    (master, slave, path.to_str().unwrap().to_string())
}

#[test]
fn console_copies_both_ways_sends_break_and_leaves() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::Duration;

    let (mut master, _slave, tty) = pty();
    let vmd = FakeVmd::start(vec![
        vec![Response::Console {
            id: 1,
            tty: tty.clone(),
        }],
        vec![Response::Ok],
    ]);
    master.write_all(b"login: ").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .arg("-s")
        .arg(&vmd.socket)
        .args(["console", "web"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Typed text reaches the guest; the escape is not sent.
    stdin.write_all(b"root\r~#").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 5 {
        let n = master.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"root\r");
    let timeout = Duration::from_secs(10);
    assert_eq!(
        vmd.requests.recv_timeout(timeout).unwrap(),
        Request::Console(VmRef::Name("web".into()))
    );
    assert_eq!(
        vmd.requests.recv_timeout(timeout).unwrap(),
        Request::Break(VmRef::Name("web".into()))
    );
    stdin.write_all(b"~.").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "login: ");
    assert_eq!(
        stderr(&out),
        format!("Connected to {tty} (speed 115200)\r\n\r\n[EOT]\r\n")
    );
    vmd.thread.join().unwrap();
}

/// The settings of a terminal that raw mode changes.
fn modes(fd: &OwnedFd) -> (libc::tcflag_t, libc::tcflag_t, libc::tcflag_t) {
    use std::os::fd::AsRawFd;
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills t on success, which is asserted before t is read.
    let t = unsafe {
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), t.as_mut_ptr()), 0);
        t.assume_init()
    };
    (t.c_iflag, t.c_oflag, t.c_lflag)
}

/// Runs `vmctl console` with a terminal (a second pty) as its stdin, waits until it is
/// connected, lets `finish` end the session, and checks the terminal got its settings back.
fn console_on_a_terminal(finish: impl FnOnce(&mut File, u32)) -> Output {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (_guest_master, _guest_slave, tty) = pty();
    let (mut term_master, term_slave, _) = pty();
    // Back to a cooked terminal, as a user's shell leaves it.
    {
        use std::os::fd::AsRawFd;
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills t on success (asserted); tcsetattr reads it.
        unsafe {
            assert_eq!(libc::tcgetattr(term_slave.as_raw_fd(), t.as_mut_ptr()), 0);
            let mut t = t.assume_init();
            t.c_lflag |= libc::ICANON | libc::ECHO | libc::ISIG;
            t.c_iflag |= libc::ICRNL;
            t.c_oflag |= libc::OPOST;
            assert_eq!(
                libc::tcsetattr(term_slave.as_raw_fd(), libc::TCSANOW, &t),
                0
            );
        }
    }
    let cooked = modes(&term_slave);
    let vmd = FakeVmd::start(vec![vec![Response::Console { id: 1, tty }]]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .arg("-s")
        .arg(&vmd.socket)
        .args(["console", "1"])
        .stdin(Stdio::from(term_slave.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    assert!(first.starts_with("Connected to /dev/pts/"), "{first:?}");
    assert_ne!(modes(&term_slave), cooked, "raw while connected");
    finish(&mut term_master, child.id());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert_eq!(modes(&term_slave), cooked, "terminal settings restored");
    vmd.thread.join().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr: rest.into_bytes(),
    }
}

#[test]
fn console_restores_the_terminal_on_escape() {
    use std::io::Write;
    let out = console_on_a_terminal(|term, _| term.write_all(b"~.").unwrap());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "\r\n[EOT]\r\n");
}

#[test]
fn console_restores_the_terminal_on_a_signal() {
    let out = console_on_a_terminal(|_, pid| {
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    });
    // The session ends cleanly, then the signal takes its default effect, so the caller
    // sees that vmctl died of it.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    assert_eq!(stderr(&out), "\r\n[EOT]\r\n");
}
