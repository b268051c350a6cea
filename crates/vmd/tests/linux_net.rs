//! The real Linux guest of `../shared/guest-linux` on a `local interface` (issue 7 item 5,
//! F-NET-08, F-NET-10, F-NET-11): vmd runs inside a network namespace the test creates, priv
//! puts the host side of the /31 on the tap, Linux's virtio-net driver and busybox `udhcpc`
//! lease the guest side from the responder inside the VM process, the guest pings the host,
//! then changes its MAC: on a `locked lladdr` interface its frames no longer get out.
//!
//! scripts/test.sh builds the guest and sets VMD_LINUX_GUEST_DIR; without it the test skips.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const VMD: &str = env!("CARGO_BIN_EXE_vmd");
const CMDLINE: &str = include_str!("../../vmrun/tests/linux-cmdline.txt");
/// Boot plus DHCP plus two pings on the emulated ring 0 of this machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const WAIT: Duration = Duration::from_secs(20);

/// The guest's `/init`: lease, ping the router, spoof the MAC, ping again. Results go
/// through files rather than pipes (busybox sometimes faults in pipelines on PVM hosts).
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo GUEST-BOOT-OK
ip link set lo up
ip link set eth0 up
busybox udhcpc -f -q -n -t 5 -T 2 -i eth0 -s /dhcp.sh
ip addr add $(cat /tmp/lease)/31 dev eth0
echo "GUEST-LEASE $(cat /tmp/lease) router $(cat /tmp/router) mask $(cat /tmp/mask)"
if busybox ping -c 1 -W 5 $(cat /tmp/router) >/dev/null 2>&1; then echo GUEST-PING ok; else echo GUEST-PING failed; fi
ip link set eth0 down
ip link set eth0 address fe:e1:ba:00:00:99
ip link set eth0 up
if busybox ping -c 1 -W 3 $(cat /tmp/router) >/dev/null 2>&1; then echo GUEST-SPOOF ok; else echo GUEST-SPOOF dropped; fi
poweroff -f
"#;

/// udhcpc's hook: remember the lease for `/init`.
const DHCP_SCRIPT: &str = "#!/bin/sh\n[ \"$1\" = bound ] && { echo $ip > /tmp/lease; echo $router > /tmp/router; echo $subnet > /tmp/mask; }\nexit 0\n";

fn guest_dir() -> Option<PathBuf> {
    match std::env::var_os("VMD_LINUX_GUEST_DIR").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            eprintln!("SKIPPED: VMD_LINUX_GUEST_DIR is not set (scripts/test.sh builds the tiny Linux guest and sets it)");
            None
        }
    }
}

/// The kit's initramfs with our `/init` and udhcpc script appended as a second archive.
fn initramfs(kit: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (name, body) in [("init", INIT), ("dhcp.sh", DHCP_SCRIPT)] {
        let p = root.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf 'init\\ndhcp.sh\\n' | cpio -o -H newc --quiet")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "cpio");
    let mut cpio = std::fs::read(kit.join("initramfs.cpio")).unwrap();
    cpio.extend_from_slice(&out.stdout);
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio).unwrap();
    path
}

/// A network namespace for one test, removed on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name.to_string())
    }

    fn ip(&self, args: &[&str]) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// vmd inside `ns`, killed on drop.
struct Vmd(Child);

impl Drop for Vmd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (ip netns exec execs vmd in place).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The console tty of the one VM, from `vmctl status --json`.
fn console_tty(socket: &Path) -> Option<String> {
    // vmctl is built beside vmd (scripts/test.sh builds the whole workspace first).
    let o = Command::new(Path::new(VMD).with_file_name("vmctl"))
        .arg("-s")
        .arg(socket)
        .args(["status", "--json"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    let at = s.find("\"tty\":\"")? + 7;
    let end = s[at..].find('"')?;
    Some(s[at..at + end].to_string()).filter(|t| !t.is_empty())
}

/// What the guest prints up to its last line (or until the tty reports EIO or time runs out).
fn console(tty: &str) -> String {
    let mut f = std::fs::File::open(tty).unwrap_or_else(|e| panic!("{tty}: {e}"));
    let mut seen = String::new();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut buf = [0u8; 512];
    let done = |s: &str| {
        s.split("GUEST-SPOOF")
            .nth(1)
            .is_some_and(|r| r.contains('\n'))
    };
    while !done(&seen) && Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    seen
}

fn line<'a>(console: &'a str, key: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} line in:\n{console}"))
        .trim_end()
}

#[test]
fn linux_guest_leases_by_dhcp_pings_the_host_and_cannot_spoof_a_locked_lladdr() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: needs root (network namespaces, taps)");
        return;
    }
    let Some(kit) = guest_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let initrd = initramfs(&kit, dir.path());
    let conf = format!(
        "vm \"lx\" {{\n\tmemory 128M\n\tboot \"{}\"\n\tinitrd \"{}\"\n\tcmdline \"{}\"\n\tlocal interface {{ locked lladdr }}\n}}\n",
        kit.join("acpi").join("vmlinux").display(),
        initrd.display(),
        CMDLINE.trim()
    );
    std::fs::write(dir.path().join("vm.conf"), conf).unwrap();
    let socket = dir.path().join("vmd.sock");
    let ns = Netns::new("vmdtest-lxnet");
    let log = std::fs::File::create(dir.path().join("vmd.log")).unwrap();
    let vmd = Vmd(Command::new("ip")
        .args(["netns", "exec", &ns.0, VMD, "-d", "-vv", "-f"])
        .arg(dir.path().join("vm.conf"))
        .arg("-s")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    let vmd_log = || std::fs::read_to_string(dir.path().join("vmd.log")).unwrap_or_default();
    let mut tty = None;
    assert!(
        wait_for(|| {
            tty = console_tty(&socket);
            tty.is_some()
        }),
        "the VM did not start:\n{}",
        vmd_log()
    );
    // priv configured the host side before the VM ran: VM 1, NIC 0 -> 100.64.1.2/31.
    let addr = ns.ip(&["addr", "show", "tap0"]);
    assert!(addr.contains("inet 100.64.1.2/31"), "{addr}");
    let link = ns.ip(&["-d", "link", "show", "tap0"]);
    assert!(link.contains("alias vm1-if0-lx"), "{link}");

    let out = console(&tty.unwrap());
    assert_eq!(
        line(&out, "GUEST-LEASE"),
        "GUEST-LEASE 100.64.1.3 router 100.64.1.2 mask 255.255.255.254",
        "{}",
        vmd_log()
    );
    assert_eq!(line(&out, "GUEST-PING"), "GUEST-PING ok");
    assert_eq!(
        line(&out, "GUEST-SPOOF"),
        "GUEST-SPOOF dropped",
        "a guest with another MAC got through a locked interface"
    );
    // The host never learnt the spoofed MAC: no frame from it reached the tap.
    let neigh = ns.ip(&["neigh", "show", "dev", "tap0"]);
    assert!(!neigh.contains("fe:e1:ba:00:00:99"), "{neigh}");
    // The guest powered off: its tap goes with the VM process.
    assert!(
        wait_for(|| !ns.ip(&["link", "show"]).contains("tap0")),
        "tap0 outlived the VM"
    );
    drop(vmd);
}
