//! What the vmd integration tests share: vmd in the foreground on a private socket and
//! config (on the host or inside a network namespace), vmctl against it, VM consoles,
//! network namespaces, the test users, and the tiny Linux guest kit.

// Each test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::{guest, Guest};

pub const VMD: &str = env!("CARGO_BIN_EXE_vmd");
/// Bound on the daemon's own steps (its socket, a state change, a link appearing).
pub const WAIT: Duration = Duration::from_secs(20);
/// The kernel command line of the tiny Linux guest's tests.
pub const LINUX_CMDLINE: &str = include_str!("../../../vmrun/tests/linux-cmdline.txt");
/// Users and group the permission tests create (system accounts, no home).
pub const OWNER: &str = "vmdtest-owner";
pub const OTHER: &str = "vmdtest-other";
pub const GROUP: &str = "vmdtest";

pub fn vmctl_path() -> PathBuf {
    let p = Path::new(VMD).with_file_name("vmctl");
    assert!(
        p.exists(),
        "{} is missing: build it too (cargo build -p vmctl)",
        p.display()
    );
    p
}

pub fn succeeds(c: &mut Command) -> bool {
    c.output().map(|o| o.status.success()).unwrap_or(false)
}

/// A command's stdout and stderr, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether `cond` comes true within [`WAIT`].
pub fn wait_for(cond: impl FnMut() -> bool) -> bool {
    wait_for_within(WAIT, cond)
}

/// Whether `cond` comes true within `timeout`.
pub fn wait_for_within(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Not root: a `SKIPPED:` line and true. As root, the _vmd user vmd drops to is made if
/// missing.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: vmd needs root (it opens /dev/kvm and ptys, makes taps and bridges and drops to _vmd)");
        return true;
    }
    ensure_system_user("_vmd", "/var/empty", &[]);
    false
}

/// The system user `name` (no home made, no login shell), created with `useradd` and
/// `options` if missing.
fn ensure_system_user(name: &str, home: &str, options: &[&str]) {
    if !succeeds(Command::new("id").arg(name)) {
        assert!(
            succeeds(
                Command::new("useradd")
                    .args(["-r", "-M", "-d", home, "-s", "/usr/sbin/nologin"])
                    .args(options)
                    .arg(name)
            ),
            "creating the {name} user"
        );
    }
}

/// No iproute2: a `SKIPPED:` line and true.
pub fn skip_without_iproute2() -> bool {
    if !succeeds(Command::new("ip").arg("-V")) {
        eprintln!("SKIPPED: iproute2 (ip) is not installed");
        return true;
    }
    false
}

pub fn uid_of(user: &str) -> u32 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

pub fn gid_of(group: &str) -> u32 {
    let o = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// The system user `name` in [`GROUP`], both made if missing: its uid and the group's gid
/// (GROUP is the primary group of the vmctl it runs, see [`Daemon::vmctl_as`]).
pub fn test_user(name: &str) -> (u32, u32) {
    if !succeeds(Command::new("getent").args(["group", GROUP])) {
        assert!(
            succeeds(Command::new("groupadd").args(["-r", GROUP])),
            "creating group {GROUP}"
        );
    }
    ensure_system_user(name, "/nonexistent", &["-G", GROUP]);
    (uid_of(name), gid_of(GROUP))
}

/// A temporary directory others may enter (0755): vmd's unprivileged processes read the
/// files in it and unprivileged vmctl users reach the socket inside.
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A config block for a VM booting testkit's PVH guest with `cmdline`; `extra` is more
/// lines of the block, each tab-indented and ending in a newline.
pub fn vm_block(name: &str, cmdline: &str, extra: &str) -> String {
    format!(
        "vm \"{name}\" {{\n\tmemory 64M\n\tboot \"{}\"\n\tcmdline \"{cmdline}\"\n{extra}}}\n",
        guest(Guest::Pvh).display()
    )
}

/// The tiny Linux guest kit scripts/test.sh builds (VMD_LINUX_GUEST_DIR), or a `SKIPPED:`
/// line and None.
pub fn linux_guest_dir() -> Option<PathBuf> {
    match std::env::var_os("VMD_LINUX_GUEST_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("SKIPPED: VMD_LINUX_GUEST_DIR is not set (scripts/test.sh builds the tiny Linux guest and sets it)");
            None
        }
    }
}

/// A config block for a 128 MiB VM booting the kit's vmlinux with `initrd` and the test
/// command line; `extra` as in [`vm_block`].
pub fn linux_vm_block(name: &str, kit: &Path, initrd: &Path, extra: &str) -> String {
    format!(
        "vm \"{name}\" {{\n\tmemory 128M\n\tboot \"{}\"\n\tinitrd \"{}\"\n\tcmdline \"{}\"\n{extra}}}\n",
        kit.join("acpi").join("vmlinux").display(),
        initrd.display(),
        LINUX_CMDLINE.trim()
    )
}

/// A network namespace for one test, removed on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        // Left over from an interrupted run, usually absent.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        assert!(
            succeeds(Command::new("ip").args(["netns", "add", name])),
            "ip netns add {name}"
        );
        Netns(name.to_string())
    }

    /// `ip -n <ns> args...`: its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ip -d link show dev`, if there is such an interface.
    pub fn link(&self, dev: &str) -> Option<String> {
        let o = Command::new("ip")
            .args(["-n", &self.0, "-d", "link", "show", dev])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `ip -o link` lines, one per interface.
    pub fn links(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// The line of the interface whose description (alias) is `alias`.
    pub fn link_with_alias(&self, alias: &str) -> Option<String> {
        let tail = format!("alias {alias}");
        self.links().into_iter().find(|l| l.ends_with(&tail))
    }

    /// The name of an `ip -o link` line ("3: tap0: <...").
    pub fn name_of(line: &str) -> String {
        let name = line.split(": ").nth(1).unwrap_or("");
        name.split('@').next().unwrap_or("").to_string()
    }

    /// Interfaces other than loopback.
    pub fn non_loopback(&self) -> Vec<String> {
        self.links()
            .iter()
            .map(|l| Netns::name_of(l))
            .filter(|n| n != "lo")
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A vmd running in the foreground on a private socket and config in its own directory,
/// stopped by SIGTERM on drop.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub conf: PathBuf,
    /// Bound on each of its steps.
    wait: Duration,
}

impl Daemon {
    /// vmd on the host.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_with(None, config, WAIT)
    }

    /// vmd inside `ns`: nothing it creates touches the host's interfaces.
    pub fn start_in(ns: &Netns, config: &str) -> Daemon {
        Daemon::start_with(Some(ns), config, WAIT)
    }

    /// vmd on the host or inside `netns`, each step bounded by `wait`; returns once its
    /// control socket is there.
    pub fn start_with(netns: Option<&Netns>, config: &str, wait: Duration) -> Daemon {
        let dir = open_tempdir();
        let socket = dir.path().join("vmd.sock");
        let conf = dir.path().join("vm.conf");
        std::fs::write(&conf, config).unwrap();
        let log = File::create(dir.path().join("vmd.log")).unwrap();
        let mut c = match netns {
            // ip netns exec execs vmd in place: the child is vmd.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0, VMD]);
                c
            }
            None => Command::new(VMD),
        };
        let child = c
            .args(["-d", "-vv", "-f"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vmd");
        let d = Daemon {
            child,
            dir,
            socket,
            conf,
            wait,
        };
        d.wait_until(|| d.socket.exists(), "the control socket");
        d
    }

    /// `name` in the daemon's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("vmd.log")).unwrap_or_default()
    }

    pub fn wait_until(&self, cond: impl FnMut() -> bool, what: &str) {
        assert!(
            wait_for_within(self.wait, cond),
            "timed out waiting for {what}; vmd log:\n{}",
            self.log()
        );
    }

    pub fn vmctl(&self, args: &[&str]) -> Output {
        self.vmctl_as(None, args)
    }

    /// vmctl as `uid` (user and group), or as root.
    pub fn vmctl_as(&self, uid: Option<(u32, u32)>, args: &[&str]) -> Output {
        self.vmctl_io(uid, args, Stdio::null(), Stdio::piped())
    }

    /// vmctl as `uid` (or root) with the given stdin and stdout (a send's and a receive's
    /// stream); stderr is captured.
    pub fn vmctl_io(
        &self,
        uid: Option<(u32, u32)>,
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Output {
        let mut c = Command::new(vmctl_path());
        c.arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(stdin)
            .stdout(stdout);
        if let Some((u, g)) = uid {
            // The socket is root:GROUP 0660: GROUP is the primary group here.
            c.uid(u).gid(g);
        }
        c.output().expect("run vmctl")
    }

    /// The `status` row of `name`, split into columns (id pid vcpus maxmem curmem tty owner
    /// state name).
    pub fn row(&self, name: &str) -> Option<Vec<String>> {
        let out = self.vmctl(&["status"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|cols| cols.last().map(String::as_str) == Some(name))
    }

    pub fn state(&self, name: &str) -> Option<String> {
        self.row(name).map(|r| r[7].clone())
    }

    pub fn wait_state(&self, name: &str, state: &str) -> Vec<String> {
        self.wait_until(
            || self.state(name).as_deref() == Some(state),
            &format!("{name} {state}"),
        );
        self.row(name).unwrap()
    }

    /// The running VM's row once it has its console: "running" shows while the VM process
    /// is still starting, before the tty column is filled in.
    pub fn wait_console(&self, name: &str) -> Vec<String> {
        let mut row = Vec::new();
        self.wait_until(
            || {
                row = self.row(name).unwrap_or_default();
                row.len() > 7 && row[7] == "running" && row[5] != "-"
            },
            &format!("{name}'s console"),
        );
        row
    }

    /// The console of running VM `name`, attached as soon as its tty is known so nothing
    /// it prints is missed; its failures show this daemon's log.
    pub fn console(&self, name: &str) -> Console {
        let row = self.wait_console(name);
        let mut console = Console::attach(&format!("/dev/{}", row[5]));
        console.log = Some(self.path("vmd.log"));
        console
    }

    /// SIGTERM and wait for the exit; panics if vmd does not exit.
    pub fn terminate(&mut self) {
        if !self.stop() {
            panic!("vmd did not exit on SIGTERM; log:\n{}", self.log());
        }
    }

    /// SIGTERM unless it has exited, then wait for it (and kill it when it does not exit):
    /// whether it exited on its own.
    fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + self.wait;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything a VM prints on its console tty, collected by a thread from the moment of
/// attaching until the console ends (the VM stopped and vmd closed the master: EIO).
pub struct Console {
    tty: String,
    /// The daemon's log, shown when what is waited for never comes.
    log: Option<PathBuf>,
    seen: Arc<Mutex<Vec<u8>>>,
    ended: Arc<AtomicBool>,
    quit: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    pub fn attach(tty: &str) -> Console {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open(tty)
            .unwrap_or_else(|e| panic!("{tty}: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let quit = Arc::new(AtomicBool::new(false));
        let (s, e, q) = (seen.clone(), ended.clone(), quit.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !q.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd for the fd `f` holds open.
                if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
                    continue;
                }
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            e.store(true, Ordering::Relaxed);
        });
        Console {
            tty: tty.to_string(),
            log: None,
            seen,
            ended,
            quit,
            reader: Some(reader),
        }
    }

    /// Everything shown so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Everything shown once `cond` holds for it, the console has ended or `timeout` has
    /// passed, whichever comes first.
    pub fn until(&self, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            // Ended first: the reader has added all it will by then.
            let ended = self.ended.load(Ordering::Relaxed);
            let text = self.text();
            if ended || cond(&text) || Instant::now() >= deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything shown once `cond` holds for it; panics with the transcript if it does not
    /// within `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&str) -> bool) -> String {
        let text = self.until(timeout, &cond);
        assert!(cond(&text), "{}", self.never_showed(what, &text));
        text
    }

    /// Everything shown once it contains `marker`, as [`Console::wait`].
    pub fn wait_text(&self, marker: &str, timeout: Duration) -> String {
        self.wait(marker, timeout, |t| t.contains(marker))
    }

    /// The first whole line that starts with `prefix` (without a trailing `\r`), once there
    /// is one, as [`Console::wait`].
    pub fn line(&self, prefix: &str, timeout: Duration) -> String {
        let find = |text: &str| {
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            whole
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .find(|l| l.starts_with(prefix))
                .map(String::from)
        };
        let text = self.wait(&format!("{prefix:?}"), timeout, |t| find(t).is_some());
        find(&text).unwrap()
    }

    /// Wait up to `timeout` for the console to end; everything it showed.
    pub fn finish(&self, timeout: Duration) -> String {
        assert!(
            wait_for_within(timeout, || self.ended.load(Ordering::Relaxed)),
            "console {} did not end:\n{}",
            self.tty,
            self.text()
        );
        self.text()
    }

    fn never_showed(&self, what: &str, text: &str) -> String {
        let mut message = format!("console {} never showed {what}:\n{text}", self.tty);
        if let Some(log) = &self.log {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            message.push_str(&format!("\nvmd log:\n{log}"));
        }
        message
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
