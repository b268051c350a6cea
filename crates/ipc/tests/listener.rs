//! The control socket: binding, stale files, modes, the handshake, and a peer that is really
//! another user.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use ipc::proto::{Hello, Request, Response, PROTOCOL_VERSION};
use ipc::{client_hello, server_hello, Channel, IpcError, Listener};

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn listener_accepts_and_handshakes() {
    let dir = TempDir::new("accept");
    let path = dir.path().join("vmd.sock");
    let listener = Listener::bind(&path, 0o600).unwrap();
    assert_eq!(listener.path(), path);
    let server = std::thread::spawn(move || {
        let ch = listener.accept().unwrap();
        server_hello(&ch).unwrap();
        let (req, _): (Request, _) = ch.recv().unwrap();
        assert_eq!(req, Request::Reload);
        ch.send(&Response::Ok, &[]).unwrap();
    });
    let ch = Channel::connect(&path).unwrap();
    client_hello(&ch).unwrap();
    ch.send(&Request::Reload, &[]).unwrap();
    assert_eq!(ch.recv::<Response>().unwrap().0, Response::Ok);
    server.join().unwrap();
}

#[test]
fn listener_sets_exact_mode_despite_umask() {
    let dir = TempDir::new("mode");
    for mode in [0o600, 0o660, 0o666, 0o777] {
        let path = dir.path().join(format!("s{mode:o}"));
        let _listener = Listener::bind(&path, mode).unwrap();
        assert_eq!(mode_of(&path), mode, "{mode:o}");
    }
}

#[test]
fn listener_refuses_to_steal_a_live_socket() {
    let dir = TempDir::new("live");
    let path = dir.path().join("vmd.sock");
    let first = Listener::bind(&path, 0o600).unwrap();
    let err = Listener::bind(&path, 0o600).unwrap_err();
    assert!(
        matches!(&err, IpcError::InUse { path: p } if *p == path),
        "{err}"
    );
    assert!(
        err.to_string().contains("another server is running"),
        "{err}"
    );
    // The first one still serves.
    let _client = Channel::connect(&path).unwrap();
    first.accept().unwrap();
}

#[test]
fn listener_refuses_a_live_stream_socket() {
    let dir = TempDir::new("stream");
    let path = dir.path().join("other.sock");
    let _other = UnixListener::bind(&path).unwrap();
    let err = Listener::bind(&path, 0o600).unwrap_err();
    assert!(matches!(err, IpcError::InUse { .. }), "{err}");
}

#[test]
fn listener_replaces_a_stale_socket_file() {
    let dir = TempDir::new("stale");
    let path = dir.path().join("vmd.sock");
    // std's listener leaves its file behind when dropped: a crashed server's leftover.
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    let listener = Listener::bind(&path, 0o600).unwrap();
    let client = Channel::connect(&path).unwrap();
    let server = listener.accept().unwrap();
    client.send(&Request::Reload, &[]).unwrap();
    assert_eq!(server.recv::<Request>().unwrap().0, Request::Reload);
}

#[test]
fn listener_refuses_to_replace_a_non_socket() {
    let dir = TempDir::new("file");
    let path = dir.path().join("vmd.sock");
    std::fs::write(&path, "precious").unwrap();
    let err = Listener::bind(&path, 0o600).unwrap_err();
    assert!(matches!(err, IpcError::Bind { .. }), "{err}");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn listener_drop_removes_only_its_own_file() {
    let dir = TempDir::new("drop");
    let path = dir.path().join("vmd.sock");
    drop(Listener::bind(&path, 0o600).unwrap());
    assert!(!path.exists());
    // Replaced behind its back: the newer file stays.
    let old = Listener::bind(&path, 0o600).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "newer").unwrap();
    drop(old);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "newer");
}

#[test]
fn nonblocking_accept_would_block() {
    let dir = TempDir::new("nonblock");
    let path = dir.path().join("vmd.sock");
    let listener = Listener::bind(&path, 0o600).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().unwrap_err().is_would_block());
    let _client = Channel::connect(&path).unwrap();
    listener.accept().unwrap();
}

#[test]
fn connect_to_a_missing_socket_names_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("nobody.sock");
    let err = Channel::connect(&path).unwrap_err();
    assert!(matches!(err, IpcError::Connect { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&*path.to_string_lossy()), "{text}");
    assert!(text.contains("No such file"), "{text}");
}

#[test]
fn handshake_version_mismatch() {
    // An older client against our server: the server answers with its version, then both
    // sides report the mismatch.
    let (client, server) = Channel::pair().unwrap();
    client
        .send(
            &Hello {
                version: PROTOCOL_VERSION + 1,
            },
            &[],
        )
        .unwrap();
    let err = server_hello(&server).unwrap_err();
    assert!(
        matches!(err, IpcError::Version { ours, theirs } if ours == PROTOCOL_VERSION && theirs == PROTOCOL_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("version mismatch"), "{err}");
    drop(server);
    assert_eq!(client.recv::<Hello>().unwrap().0.version, PROTOCOL_VERSION);
    assert!(matches!(client.recv::<Hello>(), Err(IpcError::Closed)));

    // Our client against a server of another version.
    let (client, server) = Channel::pair().unwrap();
    let fake = std::thread::spawn(move || {
        let (hello, _): (Hello, _) = server.recv().unwrap();
        assert_eq!(hello.version, PROTOCOL_VERSION);
        server.send(&Hello { version: 99 }, &[]).unwrap();
    });
    let err = client_hello(&client).unwrap_err();
    fake.join().unwrap();
    let text = err.to_string();
    assert!(
        text.contains(&format!("this side speaks version {PROTOCOL_VERSION}"))
            && text.contains("the peer speaks 99"),
        "{text}"
    );
}

#[test]
fn handshake_with_garbage_is_an_error() {
    let (client, server) = Channel::pair().unwrap();
    nix::sys::socket::send(
        std::os::fd::AsRawFd::as_raw_fd(&client),
        &[0xff; 6],
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let err = server_hello(&server).unwrap_err();
    assert!(matches!(err, IpcError::Decode { .. }), "{err}");
}

const HELPER_ENV: &str = "IPC_TEST_OTHER_USER_SOCKET";
const TEST_USER: &str = "vmdtest-ipc";

/// The client half of `peer_credentials_of_another_user`, run in a child process as the test
/// user; does nothing in a normal test run.
#[test]
fn other_user_client_helper() {
    let Some(path) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let ch = Channel::connect(&path).unwrap();
    client_hello(&ch).unwrap();
    ch.send(&Request::Reload, &[]).unwrap();
    let (resp, _): (Response, _) = ch.recv().unwrap();
    assert_eq!(resp, Response::Ok);
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(out.status.success(), "id {flag} {user} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn peer_credentials_of_another_user() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: peer_credentials_of_another_user needs root to create {TEST_USER}");
        return;
    }
    if Command::new("id")
        .arg(TEST_USER)
        .output()
        .unwrap()
        .status
        .success()
    {
        // Created by an earlier run.
    } else {
        let status = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", TEST_USER])
            .status()
            .expect("running useradd");
        assert!(status.success(), "useradd {TEST_USER} failed");
    }
    let uid = id_of(TEST_USER, "-u");
    let gid = id_of(TEST_USER, "-g");
    assert_ne!(uid, 0);

    // The test binary lives under a tree the test user may not be able to read: run a copy.
    let dir = TempDir::new("user");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("helper");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Only the test user's group may connect: this exercises chown and the mode as well.
    let path = dir.path().join("vmd.sock");
    let listener = Listener::bind(&path, 0o660).unwrap();
    listener.chown(Some(0), Some(gid)).unwrap();
    listener.set_nonblocking(true).unwrap();

    let mut child = Command::new(&exe)
        .args(["--exact", "other_user_client_helper", "--test-threads=1"])
        .env(HELPER_ENV, &path)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ch = loop {
        match listener.accept() {
            Ok(ch) => break ch,
            Err(e) if e.is_would_block() => {}
            Err(e) => panic!("{e}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "helper exited with {status} before connecting: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "helper never connected");
        std::thread::sleep(Duration::from_millis(10));
    };

    let cred = ch.peer_credentials().unwrap();
    assert_eq!(cred.uid, uid);
    assert_eq!(cred.gid, gid);
    assert_eq!(cred.pid, child.id() as i32);
    server_hello(&ch).unwrap();
    assert_eq!(ch.recv::<Request>().unwrap().0, Request::Reload);
    ch.send(&Response::Ok, &[]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
