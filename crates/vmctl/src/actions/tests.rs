use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;

use ipc::proto::{ResetKind, StartRequest, VmState, VmStatus, VmdError};

use super::*;
use crate::cli::{CreateArgs, StartArgs};

/// A daemon that answers each new connection with the next canned list of responses and
/// records what was sent (with the number of fds).
#[derive(Default)]
struct Fake {
    answers: RefCell<VecDeque<Vec<Response>>>,
    sent: Rc<RefCell<Vec<(Request, usize)>>>,
}

struct FakeConn {
    answers: VecDeque<Response>,
    sent: Rc<RefCell<Vec<(Request, usize)>>>,
}

impl Connection for FakeConn {
    fn send(&mut self, req: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), String> {
        self.sent.borrow_mut().push((req.clone(), fds.len()));
        Ok(())
    }

    fn recv(&mut self) -> Result<Option<Response>, String> {
        Ok(self.answers.pop_front())
    }
}

impl Connector for Fake {
    fn connect(&self) -> Result<Box<dyn Connection>, String> {
        let answers = self
            .answers
            .borrow_mut()
            .pop_front()
            .ok_or("vmctl: connect: /fake: Connection refused")?;
        Ok(Box::new(FakeConn {
            answers: answers.into(),
            sent: Rc::clone(&self.sent),
        }))
    }
}

fn fake(answers: Vec<Vec<Response>>) -> Fake {
    Fake {
        answers: RefCell::new(answers.into()),
        sent: Rc::default(),
    }
}

/// Runs a command: (next, stdout, stderr). The stream descriptors are a scratch file.
fn exec(cmd: &Command, daemon: &Fake) -> (Next, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let stream = tempfile::tempfile().unwrap();
    let next = execute(
        cmd,
        daemon,
        &mut Io {
            out: &mut out,
            err: &mut err,
            stream_out: stream.as_fd(),
            stream_in: stream.as_fd(),
        },
    );
    (
        next,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn failed(errno: i32, code: Option<VmdError>) -> Response {
    Response::Failed {
        errno,
        code,
        message: "log text".into(),
    }
}

fn row(id: u32, name: &str, running: bool) -> VmStatus {
    VmStatus {
        id,
        pid: running.then_some(100 + id),
        vcpus: 1,
        max_mem: 512 << 20,
        cur_mem: running.then_some(64 << 20),
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

fn start_cmd(request: StartRequest, console: bool) -> Command {
    Command::Start(StartArgs { request, console })
}

#[test]
fn start_success_and_failures() {
    let req = StartRequest {
        vm: Some(VmRef::Name("web".into())),
        ..StartRequest::default()
    };
    let d = fake(vec![vec![Response::Started {
        id: 1,
        tty: "/dev/pts/3".into(),
    }]]);
    let (next, out, err) = exec(&start_cmd(req.clone(), false), &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(out, "");
    assert_eq!(err, "vmctl: started vm 1 successfully, tty /dev/pts/3\n");
    assert_eq!(d.sent.borrow()[0], (Request::Start(req.clone()), 0));

    let d = fake(vec![vec![failed(libc::EALREADY, None)]]);
    let (next, _, err) = exec(&start_cmd(req.clone(), false), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "vmctl: start vm command failed: Operation already in progress\n"
    );

    let d = fake(vec![vec![failed(0, Some(VmdError::DiskMissing))]]);
    let (_, _, err) = exec(&start_cmd(req.clone(), false), &d);
    assert_eq!(err, "vmctl: could not open disk image(s)\n");

    // -c: the console follows, on the id vmd gave.
    let d = fake(vec![vec![Response::Started {
        id: 7,
        tty: "/dev/pts/5".into(),
    }]]);
    let (next, _, err) = exec(&start_cmd(req.clone(), true), &d);
    assert_eq!(
        next,
        Next::Console {
            vm: VmRef::Id(7),
            tty: "/dev/pts/5".into()
        }
    );
    assert_eq!(err, "");

    // vmd hangs up without an answer.
    let d = fake(vec![vec![]]);
    let (next, _, err) = exec(&start_cmd(req.clone(), false), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(err, "vmctl: pipe closed\n");

    // vmd is not running.
    let d = fake(vec![]);
    let (next, _, err) = exec(&start_cmd(req, false), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(err, "vmctl: connect: /fake: Connection refused\n");
}

#[test]
fn start_new_vm_local_checks() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bsd");
    std::fs::write(&kernel, b"k").unwrap();
    let req = StartRequest {
        vm: Some(VmRef::Name("new".into())),
        boot: Some(kernel),
        cpus: Some(2),
        ..StartRequest::default()
    };
    let d = fake(vec![vec![Response::Started {
        id: 2,
        tty: "/dev/pts/1".into(),
    }]]);
    let (next, _, _) = exec(&start_cmd(req.clone(), false), &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    let (sent, fds) = d.sent.borrow()[0].clone();
    assert_eq!(fds, 1, "the kernel's fd goes with the request");
    let Request::Start(sent) = sent else {
        panic!("{sent:?}")
    };
    assert_eq!(sent.memory, Some(start::DEFAULT_MEMORY));

    // Nothing to boot: refused before connecting.
    let bad = StartRequest {
        vm: Some(VmRef::Name("new".into())),
        memory: Some(1 << 30),
        ..StartRequest::default()
    };
    let d = fake(vec![]);
    let (next, _, err) = exec(&start_cmd(bad, false), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "vmctl: starting without disks\nvmctl: no kernel or disk/cdrom specified\n"
    );

    let mut missing = req;
    missing.boot = Some(dir.path().to_path_buf());
    let (_, _, err) = exec(&start_cmd(missing, false), &fake(vec![]));
    assert_eq!(err, "vmctl: kernel must be a regular file\n");
}

fn stop(vm: VmRef, force: bool, wait: bool) -> Command {
    Command::Stop {
        target: StopTarget::Vm(vm),
        force,
        wait,
    }
}

#[test]
fn stop_messages() {
    let web = || VmRef::Name("web".into());
    let cases = [
        (
            stop(web(), false, false),
            vec![Response::StopAccepted { id: 3 }],
            "stopping vm web: requested to shutdown vm 3\n",
            EXIT_OK,
        ),
        (
            stop(VmRef::Id(3), false, false),
            vec![Response::StopAccepted { id: 3 }],
            "stopping vm: requested to shutdown vm 3\n",
            EXIT_OK,
        ),
        (
            stop(web(), false, true),
            vec![
                Response::StopAccepted { id: 3 },
                Response::Terminated {
                    id: 3,
                    forced: false,
                },
            ],
            "stopping vm web: terminated vm 3\n",
            EXIT_OK,
        ),
        (
            stop(web(), true, true),
            vec![Response::Terminated {
                id: 3,
                forced: true,
            }],
            "stopping vm web: forced to terminate vm 3\n",
            EXIT_OK,
        ),
        (
            stop(web(), false, false),
            vec![failed(libc::ENOENT, None)],
            "stopping vm web: vm not found\n",
            EXIT_FAIL,
        ),
        (
            stop(web(), false, false),
            vec![failed(0, Some(VmdError::StopInvalid))],
            "stopping vm web: cannot stop vm that is not running\n",
            EXIT_FAIL,
        ),
        (
            stop(web(), false, true),
            vec![Response::StopAccepted { id: 3 }],
            "stopping vm web: vmctl: pipe closed\n",
            EXIT_FAIL,
        ),
        (
            Command::Wait(web()),
            vec![Response::Terminated {
                id: 3,
                forced: false,
            }],
            "waiting for vm web: terminated vm 3\n",
            EXIT_OK,
        ),
        (
            Command::Wait(VmRef::Id(9)),
            vec![failed(libc::ENOENT, None)],
            "waiting for vm: vm not found\n",
            EXIT_FAIL,
        ),
    ];
    for (cmd, answers, expected, status) in cases {
        let d = fake(vec![answers]);
        let (next, out, err) = exec(&cmd, &d);
        assert_eq!(
            (next, out, err.as_str()),
            (Next::Exit(status), String::new(), expected),
            "{cmd:?}"
        );
    }
}

#[test]
fn stop_all_stops_running_vms_by_name() {
    let d = fake(vec![
        vec![Response::Status(vec![
            row(1, "a", true),
            row(2, "b", false),
            row(3, "c", true),
        ])],
        vec![Response::StopAccepted { id: 1 }],
        vec![failed(libc::EPERM, None)],
    ]);
    let cmd = Command::Stop {
        target: StopTarget::All,
        force: true,
        wait: false,
    };
    let (next, _, err) = exec(&cmd, &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "stopping vm a: requested to shutdown vm 1\n\
         stopping vm c: failed: Operation not permitted\n"
    );
    let sent: Vec<Request> = d.sent.borrow().iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(
        sent,
        [
            Request::Status {
                vm: None,
                running_only: true
            },
            Request::Stop {
                vm: VmRef::Name("a".into()),
                force: true,
                wait: false
            },
            Request::Stop {
                vm: VmRef::Name("c".into()),
                force: true,
                wait: false
            },
        ]
    );
    // No running VM: nothing to do, success.
    let d = fake(vec![vec![Response::Status(vec![row(2, "b", false)])]]);
    assert_eq!(exec(&cmd, &d).0, Next::Exit(EXIT_OK));
}

#[test]
fn status_table_json_and_exit() {
    let rows = vec![row(1, "a", true), row(2, "b", false)];
    let status = |vm, running_only, json| Command::Status {
        vm,
        running_only,
        json,
    };
    let d = fake(vec![vec![Response::Status(rows.clone())]]);
    let (next, out, err) = exec(&status(None, false, false), &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(err, "");
    assert_eq!(
        out,
        "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
         \x20   1   101     1    512M   64.0M   pts/1         root  running a\n\
         \x20   2     -     1    512M       -       -         root  stopped b\n"
    );
    // Unknown id: header only, exit 1.
    let d = fake(vec![vec![Response::Status(rows.clone())]]);
    let (next, out, _) = exec(&status(Some(VmRef::Id(9)), false, false), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(out.lines().count(), 1);
    // -r with only stopped VMs.
    let d = fake(vec![vec![Response::Status(vec![row(2, "b", false)])]]);
    assert_eq!(
        exec(&status(None, true, false), &d).0,
        Next::Exit(EXIT_FAIL)
    );
    // JSON.
    let d = fake(vec![vec![Response::Status(rows)]]);
    let (next, out, _) = exec(&status(Some(VmRef::Name("b".into())), false, true), &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "b");
    assert_eq!(v.as_array().unwrap().len(), 1);
    // Refused.
    let d = fake(vec![vec![failed(libc::EPERM, None)]]);
    let (next, out, err) = exec(&status(None, false, false), &d);
    assert_eq!((next, out.as_str()), (Next::Exit(EXIT_FAIL), ""));
    assert_eq!(err, "vmctl: command failed: Operation not permitted\n");
}

#[test]
fn pause_unpause_console() {
    let d = fake(vec![vec![Response::Paused { id: 4 }]]);
    let (next, _, err) = exec(&Command::Pause(VmRef::Id(4)), &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(err, "vmctl: paused vm 4 successfully\n");
    let d = fake(vec![vec![failed(libc::ENOENT, None)]]);
    let (next, _, err) = exec(&Command::Unpause(VmRef::Id(4)), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "vmctl: unpause vm command failed: No such file or directory\n"
    );
    let d = fake(vec![vec![Response::Console {
        id: 4,
        tty: "/dev/pts/8".into(),
    }]]);
    assert_eq!(
        exec(&Command::Console(VmRef::Name("x".into())), &d).0,
        Next::Console {
            vm: VmRef::Name("x".into()),
            tty: "/dev/pts/8".into()
        }
    );
    let d = fake(vec![vec![failed(libc::ENOENT, None)]]);
    let (next, _, err) = exec(&Command::Console(VmRef::Id(4)), &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(err, "vmctl: console not found\n");
}

#[test]
fn root_only_commands() {
    let cmds = [
        (
            Command::Load("/etc/x.conf".into()),
            Request::Load("/etc/x.conf".into()),
        ),
        (Command::Reload, Request::Reload),
        (
            Command::Reset(ResetKind::Vms),
            Request::Reset(ResetKind::Vms),
        ),
        (
            Command::Log { verbose: true },
            Request::Log { verbose: true },
        ),
    ];
    for (cmd, req) in cmds {
        let d = fake(vec![
            vec![Response::Ok],
            vec![failed(libc::EPERM, None)],
            vec![failed(0, None)],
        ]);
        assert_eq!(
            exec(&cmd, &d),
            (Next::Exit(EXIT_OK), String::new(), String::new())
        );
        assert_eq!(d.sent.borrow()[0].0, req);
        let (next, _, err) = exec(&cmd, &d);
        assert_eq!(next, Next::Exit(EXIT_FAIL));
        assert_eq!(err, "vmctl: command failed: Operation not permitted\n");
        assert_eq!(exec(&cmd, &d).2, "vmctl: command failed\n");
    }
}

#[test]
fn send_and_receive_pass_the_stream_descriptor() {
    let d = fake(vec![
        vec![Response::Sent { id: 2 }],
        vec![Response::Started {
            id: 3,
            tty: "/dev/pts/7".into(),
        }],
        vec![Response::Failed {
            errno: libc::ENOENT,
            code: None,
            message: "receive of vm \"c\": not a VM snapshot stream".into(),
        }],
    ]);
    let send = Command::Send {
        vm: VmRef::Id(2),
        live: true,
    };
    let (next, out, err) = exec(&send, &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("", "vmctl: sent vm 2 successfully\n")
    );
    assert_eq!(
        d.sent.borrow()[0],
        (
            Request::Send {
                vm: VmRef::Id(2),
                live: true
            },
            1
        )
    );
    let receive = Command::Receive("c".into());
    let (next, _, err) = exec(&receive, &d);
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(err, "vmctl: started vm 3 successfully, tty /dev/pts/7\n");
    assert_eq!(d.sent.borrow()[1], (Request::Receive("c".into()), 1));
    let (next, _, err) = exec(&receive, &d);
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "vmctl: receive vm command failed: No such file or directory\n\
         vmctl: receive of vm \"c\": not a VM snapshot stream\n"
    );
}

#[test]
fn create_needs_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.img");
    let cmd = Command::Create(CreateArgs {
        disk: path.to_str().unwrap().into(),
        base: None,
        input: None,
        size: Some(1 << 20),
    });
    let (next, _, err) = exec(&cmd, &fake(vec![]));
    assert_eq!(next, Next::Exit(EXIT_OK));
    assert_eq!(err, "vmctl: raw imagefile created\n");
    let (next, _, err) = exec(&cmd, &fake(vec![]));
    assert_eq!(next, Next::Exit(EXIT_FAIL));
    assert_eq!(
        err,
        "vmctl: create imagefile operation failed: File exists\n"
    );
}
