//! The channel over real socketpairs: every protocol message, fds, credentials and every way a
//! message can be refused.

use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use ipc::proto::{
    BootDevice, DiskFormat, DiskSpec, Hello, NicSpec, Request, ResetKind, Response, StartRequest,
    VmRef, VmState, VmStatus, VmdError, PROTOCOL_VERSION,
};
use ipc::{decode, encode, Channel, IpcError, MAX_FDS, MAX_MESSAGE};
use nix::sys::socket::{send, sendmsg, ControlMessage, MsgFlags, UnixAddr};

/// Fails to compile when a variant is added, so the list below stays complete.
fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Start(_) => "start",
        Request::Stop { .. } => "stop",
        Request::Wait(_) => "wait",
        Request::Pause(_) => "pause",
        Request::Unpause(_) => "unpause",
        Request::Status { .. } => "status",
        Request::Console(_) => "console",
        Request::Break(_) => "break",
        Request::Load(_) => "load",
        Request::Reload => "reload",
        Request::Reset(_) => "reset",
        Request::Log { .. } => "log",
        Request::Send { .. } => "send",
        Request::Receive(_) => "receive",
    }
}

fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Ok => "ok",
        Response::Failed { .. } => "failed",
        Response::Started { .. } => "started",
        Response::StopAccepted { .. } => "stop-accepted",
        Response::Terminated { .. } => "terminated",
        Response::Paused { .. } => "paused",
        Response::Unpaused { .. } => "unpaused",
        Response::Status(_) => "status",
        Response::Console { .. } => "console",
        Response::Sent { .. } => "sent",
    }
}

fn every_request() -> Vec<Request> {
    vec![
        Request::Start(StartRequest::default()),
        Request::Start(StartRequest {
            vm: Some(VmRef::Name("web".into())),
            boot: Some(PathBuf::from("/bsd.rd")),
            boot_device: Some(BootDevice::Net),
            disks: vec![
                DiskSpec {
                    path: PathBuf::from("/var/vm/a.qcow2"),
                    format: Some(DiskFormat::Qcow2),
                },
                DiskSpec {
                    path: PathBuf::from("/var/vm/b.img"),
                    format: Some(DiskFormat::Raw),
                },
                DiskSpec {
                    path: PathBuf::from("/var/vm/c"),
                    format: None,
                },
            ],
            cdrom: Some(PathBuf::from("/iso/install.iso")),
            nics: vec![
                NicSpec::Local,
                NicSpec::Switch("uplink".into()),
                NicSpec::Plain,
            ],
            memory: Some(1 << 30),
            cpus: Some(4),
            template: Some("base".into()),
            initrd: Some(PathBuf::from("/initrd")),
            cmdline: Some("console=ttyS0 ünïcode".into()),
        }),
        Request::Start(StartRequest {
            vm: Some(VmRef::Id(3)),
            boot_device: Some(BootDevice::Cdrom),
            ..StartRequest::default()
        }),
        Request::Start(StartRequest {
            boot_device: Some(BootDevice::Disk),
            ..StartRequest::default()
        }),
        Request::Stop {
            vm: VmRef::Id(u32::MAX),
            force: true,
            wait: false,
        },
        Request::Wait(VmRef::Name(String::new())),
        Request::Pause(VmRef::Id(0)),
        Request::Unpause(VmRef::Name("x".into())),
        Request::Status {
            vm: None,
            running_only: true,
        },
        Request::Status {
            vm: Some(VmRef::Id(1)),
            running_only: false,
        },
        Request::Console(VmRef::Id(2)),
        Request::Break(VmRef::Name("b".into())),
        Request::Load(PathBuf::from("/etc/vm.conf")),
        Request::Reload,
        Request::Reset(ResetKind::All),
        Request::Reset(ResetKind::Switches),
        Request::Reset(ResetKind::Vms),
        Request::Log { verbose: true },
        Request::Send {
            vm: VmRef::Id(7),
            live: false,
        },
        Request::Send {
            vm: VmRef::Name("web".into()),
            live: true,
        },
        Request::Receive("copy".into()),
    ]
}

fn every_response() -> Vec<Response> {
    let row = |state, id| VmStatus {
        id,
        pid: Some(4242),
        vcpus: 2,
        max_mem: 512 << 20,
        cur_mem: Some(100 << 20),
        tty: Some("/dev/pts/3".into()),
        uid: 1000,
        user: Some("alice".into()),
        group: Some("vm".into()),
        state,
        name: format!("vm{id}"),
    };
    let states = [
        VmState::Running,
        VmState::Stopping,
        VmState::Paused,
        VmState::Waiting,
        VmState::Stopped,
        VmState::Unknown,
    ];
    let codes = [
        VmdError::BiosMissing,
        VmdError::DiskMissing,
        VmdError::StopInvalid,
        VmdError::CdromMissing,
        VmdError::CdromInvalid,
        VmdError::ParentInvalid,
    ];
    let mut all = vec![
        Response::Ok,
        Response::Failed {
            errno: libc::EPERM,
            code: None,
            message: "permission denied".into(),
        },
        Response::Started {
            id: 1,
            tty: "/dev/pts/0".into(),
        },
        Response::StopAccepted { id: 2 },
        Response::Terminated {
            id: 3,
            forced: true,
        },
        Response::Paused { id: 4 },
        Response::Unpaused { id: 5 },
        Response::Sent { id: 6 },
        Response::Status(vec![]),
        Response::Status(
            states
                .iter()
                .zip(1..)
                .map(|(&state, id)| row(state, id))
                .chain([VmStatus {
                    pid: None,
                    cur_mem: None,
                    tty: None,
                    user: None,
                    group: None,
                    ..row(VmState::Stopped, 99)
                }])
                .collect(),
        ),
        Response::Console {
            id: 6,
            tty: "/dev/pts/1".into(),
        },
    ];
    all.extend(codes.iter().map(|&code| Response::Failed {
        errno: 0,
        code: Some(code),
        message: String::new(),
    }));
    all
}

#[test]
fn every_request_variant_round_trips() {
    let (a, b) = Channel::pair().unwrap();
    let all = every_request();
    let mut seen: Vec<_> = all.iter().map(request_name).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 14, "a Request variant is missing from the list");
    for req in all {
        a.send(&req, &[]).unwrap();
        let (got, fds): (Request, _) = b.recv().unwrap();
        assert_eq!(got, req);
        assert!(fds.is_empty());
    }
}

#[test]
fn every_response_variant_round_trips() {
    let (a, b) = Channel::pair().unwrap();
    let all = every_response();
    let mut seen: Vec<_> = all.iter().map(response_name).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        10,
        "a Response variant is missing from the list"
    );
    for resp in all {
        // Both directions: the same channel carries either.
        b.send(&resp, &[]).unwrap();
        let (got, _): (Response, _) = a.recv().unwrap();
        assert_eq!(got, resp);
    }
}

#[test]
fn fd_passing_pipe_write_end() {
    let (a, b) = Channel::pair().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let req = Request::Start(StartRequest {
        boot: Some(PathBuf::from("/bsd")),
        ..StartRequest::default()
    });
    a.send(&req, &[writer.as_fd()]).unwrap();
    drop(writer);
    let (got, mut fds): (Request, _) = b.recv().unwrap();
    assert_eq!(got, req);
    assert_eq!(fds.len(), 1);
    let received = fds.pop().unwrap();
    assert_cloexec(received.as_fd());
    let mut received = File::from(received);
    received.write_all(b"through the socket").unwrap();
    drop(received);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "through the socket");
}

#[test]
fn fds_keep_their_order() {
    let (a, b) = Channel::pair().unwrap();
    let pipes: Vec<_> = (0..MAX_FDS).map(|_| std::io::pipe().unwrap()).collect();
    let writers: Vec<BorrowedFd> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
    a.send(&Response::Ok, &writers).unwrap();
    let (_, fds): (Response, _) = b.recv().unwrap();
    assert_eq!(fds.len(), MAX_FDS);
    for (i, fd) in fds.into_iter().enumerate() {
        File::from(fd).write_all(&[i as u8]).unwrap();
    }
    for (i, (reader, _)) in pipes.iter().enumerate() {
        let mut byte = [0u8];
        (&*reader).read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i as u8);
    }
}

fn assert_cloexec(fd: BorrowedFd) {
    // SAFETY: F_GETFD on a valid borrowed fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(
        flags >= 0 && flags & libc::FD_CLOEXEC != 0,
        "fd not close-on-exec"
    );
}

#[test]
fn channels_are_cloexec() {
    let (a, _b) = Channel::pair().unwrap();
    assert_cloexec(a.as_fd());
}

#[test]
fn peer_credentials_are_ours() {
    let (a, b) = Channel::pair().unwrap();
    for ch in [a, b] {
        let cred = ch.peer_credentials().unwrap();
        assert_eq!(cred.pid, std::process::id() as i32);
        // SAFETY: getuid/getgid cannot fail.
        assert_eq!(cred.uid, unsafe { libc::getuid() });
        assert_eq!(cred.gid, unsafe { libc::getgid() });
    }
}

#[test]
fn oversized_message_refused_on_send() {
    let (a, b) = Channel::pair().unwrap();
    let big = Request::Load(PathBuf::from("x".repeat(MAX_MESSAGE)));
    let err = a.send(&big, &[]).unwrap_err();
    assert!(
        matches!(err, IpcError::TooLarge { size, max } if size > MAX_MESSAGE && max == MAX_MESSAGE),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    // Nothing went out: the channel still works.
    a.set_nonblocking(false).unwrap();
    b.set_nonblocking(true).unwrap();
    assert!(b.recv::<Request>().unwrap_err().is_would_block());
    // Exactly at the limit is fine.
    // A 3-byte varint length, then the text.
    let fits = "x".repeat(MAX_MESSAGE - 3);
    let bytes = encode(&fits).unwrap();
    assert_eq!(bytes.len(), MAX_MESSAGE);
    a.send(&fits, &[]).unwrap();
    b.set_nonblocking(false).unwrap();
    assert_eq!(b.recv::<String>().unwrap().0, fits);
}

#[test]
fn oversized_datagram_refused_on_receive() {
    let (a, b) = Channel::pair().unwrap();
    let raw = vec![0u8; MAX_MESSAGE + 1];
    assert_eq!(
        send(a.as_raw_fd(), &raw, MsgFlags::empty()).unwrap(),
        raw.len()
    );
    let err = b.recv::<Request>().unwrap_err();
    assert!(
        matches!(err, IpcError::TooLarge { size, max } if size == MAX_MESSAGE + 1 && max == MAX_MESSAGE),
        "{err}"
    );
    // The oversized datagram is gone; the next one reads fine.
    a.send(&Request::Reload, &[]).unwrap();
    assert_eq!(b.recv::<Request>().unwrap().0, Request::Reload);
}

#[test]
fn garbage_datagrams_are_decode_errors() {
    let (a, b) = Channel::pair().unwrap();
    let cases: &[&[u8]] = &[
        &[0xff],                               // no such variant
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // overlong varint
        &[8, 0xff, 0xff, 0xff, 0xff, 0x0f],    // Load with a huge length
        &[8, 2, 0xc3, 0x28],                   // Load with invalid UTF-8
        &[9, 0],                               // Reload with a byte left over
    ];
    for case in cases {
        send(a.as_raw_fd(), case, MsgFlags::empty()).unwrap();
        let err = b.recv::<Request>().unwrap_err();
        assert!(matches!(err, IpcError::Decode { .. }), "{case:?}: {err}");
        assert!(err.to_string().contains("Request"), "{err}");
    }
    assert!(decode::<Request>(&[9, 0])
        .unwrap_err()
        .to_string()
        .contains("1 bytes left over"));
    // A cheap pseudo-random sweep straight through decode: errors, never a panic.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..20_000usize {
        let bytes: Vec<u8> = (0..len % 64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = decode::<Request>(&bytes);
        let _ = decode::<Response>(&bytes);
    }
}

#[test]
fn truncated_message_is_decode_error() {
    let (a, b) = Channel::pair().unwrap();
    for msg in every_response() {
        let bytes = encode(&msg).unwrap();
        for cut in 1..bytes.len() {
            send(a.as_raw_fd(), &bytes[..cut], MsgFlags::empty()).unwrap();
            let err = b.recv::<Response>().unwrap_err();
            assert!(
                matches!(err, IpcError::Decode { .. }),
                "{msg:?} cut at {cut}: {err}"
            );
        }
    }
}

/// True when every copy of the pipe's write end is closed, i.e. the reader sees EOF at once.
fn write_ends_all_closed(reader: &std::io::PipeReader) -> bool {
    let mut buf = [0u8; 1];
    let mut pfd = libc::pollfd {
        fd: reader.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid fd, waiting at most a second.
    let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
    ready == 1 && (&*reader).read(&mut buf).unwrap() == 0
}

#[test]
fn too_many_fds_refused_on_send() {
    let (a, _b) = Channel::pair().unwrap();
    let (_r, w) = std::io::pipe().unwrap();
    let fds = vec![w.as_fd(); MAX_FDS + 1];
    let err = a.send(&Response::Ok, &fds).unwrap_err();
    assert!(
        matches!(err, IpcError::TooManyFds { count, max } if count == MAX_FDS + 1 && max == MAX_FDS),
        "{err}"
    );
}

#[test]
fn too_many_fds_received_is_truncated_and_all_closed() {
    let (a, b) = Channel::pair().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let raw = vec![writer.as_raw_fd(); MAX_FDS + 4];
    let bytes = encode(&Response::Ok).unwrap();
    sendmsg::<UnixAddr>(
        a.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(writer);
    let err = b.recv::<Response>().unwrap_err();
    assert!(
        matches!(err, IpcError::Truncated { max } if max == MAX_FDS),
        "{err}"
    );
    assert!(write_ends_all_closed(&reader), "a received fd leaked");
}

#[test]
fn fds_of_a_refused_message_are_closed() {
    let (a, b) = Channel::pair().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let raw = [writer.as_raw_fd()];
    sendmsg::<UnixAddr>(
        a.as_raw_fd(),
        &[IoSlice::new(&[0xff])],
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(writer);
    assert!(matches!(b.recv::<Request>(), Err(IpcError::Decode { .. })));
    assert!(write_ends_all_closed(&reader), "a received fd leaked");
}

#[test]
fn eof_is_closed() {
    let (a, b) = Channel::pair().unwrap();
    a.send(&Request::Reload, &[]).unwrap();
    drop(a);
    // What was sent before the close still arrives.
    assert_eq!(b.recv::<Request>().unwrap().0, Request::Reload);
    assert!(matches!(b.recv::<Request>(), Err(IpcError::Closed)));
    assert!(matches!(b.send(&Response::Ok, &[]), Err(IpcError::Closed)));
}

#[test]
fn empty_encoding_refused() {
    let (a, _b) = Channel::pair().unwrap();
    let err = a.send(&(), &[]).unwrap_err();
    assert!(matches!(err, IpcError::Encode { .. }), "{err}");
    assert!(err.to_string().contains("zero bytes"), "{err}");
}

#[test]
fn nonblocking_recv_would_block() {
    let (a, b) = Channel::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let err = b.recv::<Hello>().unwrap_err();
    assert!(err.is_would_block(), "{err}");
    a.send(
        &Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )
    .unwrap();
    assert_eq!(b.recv::<Hello>().unwrap().0.version, PROTOCOL_VERSION);
}

#[test]
fn channel_fd_survives_into_inner_and_back() {
    let (a, b) = Channel::pair().unwrap();
    let fd: OwnedFd = b.into_inner();
    let b = Channel::from(fd);
    a.send(&Request::Reload, &[]).unwrap();
    assert_eq!(b.recv::<Request>().unwrap().0, Request::Reload);
}
