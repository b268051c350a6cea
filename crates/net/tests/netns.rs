//! Tests against the real kernel, each inside a network namespace it creates (`ip netns add
//! vmdtest-...`) and deletes again, even when it fails. Only the test thread enters the
//! namespace (setns is per thread), so nothing here can touch the host's own interfaces.
//! They need root and skip with a `SKIPPED:` line otherwise. `ip` is used to set the stage
//! and to cross-check what the library did, never by the library itself.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::dhcp::{respond, DhcpContext};
use net::local::{local_inet, LOCAL_INET6_PREFIX_LEN, LOCAL_INET_PREFIX_LEN};
use net::netlink::{self, Netlink, NetlinkError};
use net::tap::{Tap, TapError, TapOptions};

/// How long a test waits for a frame or for the DHCP client.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_MS: i32 = 100;

/// A named network namespace the current thread has entered; leaving and deleting it on drop.
struct Netns {
    name: String,
    home: File,
}

impl Netns {
    /// `None` (with a SKIPPED line) when the test cannot run here.
    fn enter(test: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: {test}: needs root");
            return None;
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            println!("SKIPPED: {test}: no /dev/net/tun");
            return None;
        }
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vmdtest-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        match Command::new("ip").args(["netns", "add", &name]).status() {
            Ok(s) if s.success() => {}
            other => {
                println!("SKIPPED: {test}: ip netns add failed: {other:?}");
                return None;
            }
        }
        let home = File::open("/proc/thread-self/ns/net").expect("own netns");
        let ns = Netns { name, home };
        let target = File::open(format!("/run/netns/{}", ns.name)).expect("netns file");
        // SAFETY: setns on an open namespace fd; it only changes this thread's namespace.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        // The namespace starts with lo down.
        ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // SAFETY: back to the namespace this thread started in, from an fd we hold.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs `ip ARGS` in the current thread's namespace and returns its output.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for a frame on `fd` that satisfies `want`, skipping others (IPv6 chatter).
fn read_frame(file: &File, want: impl Fn(&[u8]) -> bool, timeout: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < timeout {
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if n <= 0 {
            continue;
        }
        let n = (&*file).read(&mut buf).expect("read tap");
        if want(&buf[..n]) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

#[test]
fn tap_bridge_alias_group_addresses_vrf() {
    let Some(_ns) = Netns::enter("tap_bridge_alias_group_addresses_vrf") else {
        return;
    };
    let mut nl = Netlink::connect().unwrap();
    let tap = Tap::create(None, TapOptions::default()).unwrap();
    assert_eq!(tap.name(), "tap0");
    let name = tap.name().to_string();

    let mac = [0xfe, 0xe1, 0xba, 0xd0, 0x00, 0x01];
    tap.set_mac(&mac).unwrap();
    assert_eq!(tap.mac().unwrap(), mac);

    // Switch: bridge created once, then found.
    assert!(matches!(
        nl.check_bridge("vmdbr0"),
        Err(NetlinkError::NoSuchInterface(_))
    ));
    assert!(nl.ensure_bridge("vmdbr0").unwrap());
    assert!(!nl.ensure_bridge("vmdbr0").unwrap());
    nl.check_bridge("vmdbr0").unwrap();
    assert!(matches!(
        nl.check_bridge(&name),
        Err(NetlinkError::NotABridge(_))
    ));
    assert!(matches!(
        nl.ensure_bridge(&name),
        Err(NetlinkError::NotABridge(_))
    ));
    nl.set_alias("vmdbr0", &netlink::switch_description(1, "uplink"))
        .unwrap();
    nl.set_up("vmdbr0", true).unwrap();

    // The VM's tap: description, bridge, group, up, local addresses.
    let descr = netlink::vm_description(1, 0, "test");
    nl.set_alias(&name, &descr).unwrap();
    nl.set_master(&name, Some("vmdbr0")).unwrap();
    let group = netlink::group_number("mygroup");
    nl.set_group(&name, group).unwrap();
    nl.set_up(&name, true).unwrap();
    let addrs = local_inet(Ipv4Addr::new(100, 64, 0, 0), 10, 1, 0).unwrap();
    nl.add_address(&name, IpAddr::V4(addrs.host), LOCAL_INET_PREFIX_LEN)
        .unwrap();
    // Adding it again replaces it (idempotent).
    nl.add_address(&name, IpAddr::V4(addrs.host), LOCAL_INET_PREFIX_LEN)
        .unwrap();
    let v6 = net::local::local_inet6("fd00:1:2:3::".parse().unwrap(), addrs.guest);
    nl.add_address(&name, IpAddr::V6(v6.host), LOCAL_INET6_PREFIX_LEN)
        .unwrap();

    let bridge = nl.link("vmdbr0").unwrap().unwrap();
    let link = nl.link(&name).unwrap().unwrap();
    assert_eq!(link.name, name);
    assert_eq!(link.kind.as_deref(), Some("tun"));
    assert_eq!(link.master, Some(bridge.index));
    assert_eq!(link.alias.as_deref(), Some("vm1-if0-test"));
    assert_eq!(link.group, group);
    assert!(link.up);
    assert_eq!(bridge.alias.as_deref(), Some("switch1-uplink"));
    let got = nl.addresses(&name).unwrap();
    assert!(got.contains(&(IpAddr::V4(addrs.host), 31)), "{got:?}");
    assert!(got.contains(&(IpAddr::V6(v6.host), 96)), "{got:?}");
    assert_eq!(got.iter().filter(|a| a.0.is_ipv4()).count(), 1, "{got:?}");

    // The same, seen by iproute2.
    let shown = ip(&["-d", "link", "show", &name]);
    assert!(shown.contains("master vmdbr0"), "{shown}");
    assert!(shown.contains("alias vm1-if0-test"), "{shown}");
    assert!(shown.contains(&format!("group {group}")), "{shown}");
    assert!(shown.contains("tun type tap"), "{shown}");
    assert!(shown.contains("link/ether fe:e1:ba:d0:00:01"), "{shown}");
    assert!(
        shown.contains("state UP") || shown.contains(",UP"),
        "{shown}"
    );
    let shown = ip(&["-d", "link", "show", "vmdbr0"]);
    assert!(shown.contains("bridge "), "{shown}");
    assert!(shown.contains("alias switch1-uplink"), "{shown}");
    let shown = ip(&["addr", "show", "dev", &name]);
    assert!(shown.contains("inet 100.64.1.2/31"), "{shown}");
    assert!(
        shown.contains("inet6 fd00:1:2:3:6440:103:0:1/96"),
        "{shown}"
    );

    assert_eq!(
        nl.link_by_index(bridge.index).unwrap(),
        Some(bridge.clone())
    );
    // rdomain 0 leaves a bridge port where it is: only a VRF master is the rdomain.
    nl.set_rdomain(&name, 0).unwrap();
    assert_eq!(nl.link(&name).unwrap().unwrap().master, Some(bridge.index));

    // Down again.
    nl.set_up(&name, false).unwrap();
    assert!(!nl.link(&name).unwrap().unwrap().up);

    // rdomain → VRF, when the kernel has VRF support.
    match nl.set_rdomain("vmdbr0", 5) {
        Ok(()) => {
            let vrf = nl.link("vrf5").unwrap().unwrap();
            assert_eq!(vrf.kind.as_deref(), Some("vrf"));
            assert_eq!(nl.link("vmdbr0").unwrap().unwrap().master, Some(vrf.index));
            let shown = ip(&["-d", "link", "show", "vrf5"]);
            assert!(shown.contains("vrf table 1005"), "{shown}");
            nl.set_rdomain("vmdbr0", 0).unwrap();
            assert_eq!(nl.link("vmdbr0").unwrap().unwrap().master, None);
            nl.delete_link("vrf5").unwrap();
        }
        // Kernels built without CONFIG_NET_VRF (this CI's among them) refuse the kind.
        Err(NetlinkError::Kernel { source, .. })
            if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            println!("SKIPPED: VRF part: kernel without VRF support")
        }
        Err(e) => panic!("set_rdomain: {e}"),
    }

    // Free the tap from the bridge, delete the bridge; closing the fd removes the tap.
    nl.set_master(&name, None).unwrap();
    assert_eq!(nl.link(&name).unwrap().unwrap().master, None);
    nl.delete_link("vmdbr0").unwrap();
    nl.delete_link("vmdbr0").unwrap();
    assert!(nl.link("vmdbr0").unwrap().is_none());
    drop(tap);
    assert!(nl.link(&name).unwrap().is_none(), "tap gone with its fd");
}

#[test]
fn tap_names_first_free_and_busy() {
    let Some(_ns) = Netns::enter("tap_names_first_free_and_busy") else {
        return;
    };
    let t5 = Tap::create(Some("tap5"), TapOptions::default()).unwrap();
    assert_eq!(t5.name(), "tap5");
    // Busy: the named tap is held by another fd.
    match Tap::create(Some("tap5"), TapOptions::default()) {
        Err(TapError::Create { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
        }
        other => panic!("expected EBUSY, got {other:?}"),
    }
    // Any interface called tap0 counts as busy for the search, even a non-tap.
    ip(&["link", "add", "tap0", "type", "bridge"]);
    let t1 = Tap::create(None, TapOptions::default()).unwrap();
    assert_eq!(t1.name(), "tap1");
    let t2 = Tap::create(None, TapOptions { vnet_hdr: true }).unwrap();
    assert_eq!(t2.name(), "tap2");
    t2.set_vnet_hdr_size(12).unwrap();
    t2.set_offload(0).unwrap();
    drop(t1);
    let again = Tap::create(None, TapOptions::default()).unwrap();
    assert_eq!(again.name(), "tap1", "freed names are reused");
    // A persistent tap the admin prepared is taken over by name, and stays after us.
    ip(&["tuntap", "add", "dev", "tap9", "mode", "tap"]);
    let t9 = Tap::create(Some("tap9"), TapOptions::default()).unwrap();
    assert_eq!(t9.name(), "tap9");
    drop(t9);
    assert!(ip(&["link", "show", "tap9"]).contains("tap9"));
    // A named tap that is a different kind of device cannot be made.
    assert!(Tap::create(Some("tap0"), TapOptions::default()).is_err());
}

#[test]
fn two_taps_on_a_bridge_exchange_a_frame() {
    let Some(_ns) = Netns::enter("two_taps_on_a_bridge_exchange_a_frame") else {
        return;
    };
    let mut nl = Netlink::connect().unwrap();
    let a = Tap::create(None, TapOptions::default()).unwrap();
    let b = Tap::create(None, TapOptions::default()).unwrap();
    nl.ensure_bridge("vmdbr1").unwrap();
    for t in [&a, &b] {
        nl.set_master(t.name(), Some("vmdbr1")).unwrap();
        nl.set_up(t.name(), true).unwrap();
    }
    nl.set_up("vmdbr1", true).unwrap();

    // A broadcast frame from "VM a" with a payload we can recognise among IPv6 chatter.
    let magic = b"vmd-net-bridge-test";
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0xfe, 0xe1, 0xbb, 0xd1, 0, 1]);
    frame.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    frame.extend_from_slice(magic);
    frame.resize(60, 0);
    let deadline = Instant::now() + FRAME_TIMEOUT;
    let mut got = None;
    // Ports can take a moment to forward; resend until the frame shows up.
    while got.is_none() && Instant::now() < deadline {
        a.file().write_all(&frame).unwrap();
        got = read_frame(
            b.file(),
            |f| f.windows(magic.len()).any(|w| w == magic),
            Duration::from_millis(500),
        );
    }
    assert_eq!(got.as_deref(), Some(&frame[..]));
    nl.delete_link("vmdbr1").unwrap();
}

#[test]
fn busybox_udhcpc_gets_its_lease_from_the_responder() {
    let Some(_ns) = Netns::enter("busybox_udhcpc_gets_its_lease_from_the_responder") else {
        return;
    };
    if Command::new("busybox")
        .args(["udhcpc", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("SKIPPED: no busybox udhcpc");
        return;
    }
    // Roles reversed: the kernel side of the tap plays the guest (udhcpc runs on it), the fd
    // side plays the device that feeds guest frames to the responder and injects replies.
    let mut nl = Netlink::connect().unwrap();
    let tap = Tap::create(None, TapOptions::default()).unwrap();
    let guest_mac = [0xfe, 0xe1, 0xbb, 0xd1, 0x42, 0x10];
    tap.set_mac(&guest_mac).unwrap();
    nl.set_up(tap.name(), true).unwrap();
    let addrs = local_inet(Ipv4Addr::new(100, 64, 0, 0), 10, 3, 1).unwrap();

    let dir = std::env::temp_dir().join(format!("vmd-net-udhcpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"BOUND ip=$ip subnet=$subnet router=$router dns=$dns lease=$lease serverid=$serverid hostname=$hostname boot_file=$boot_file\"\nexit 0\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU32::new(0));
    let file = tap.file().try_clone().unwrap();
    let responder = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let ctx = DhcpContext {
                guest_mac,
                host_mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 9],
                addrs,
                netboot: Some("inst-vm"),
            };
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = read_frame(&file, |_| true, Duration::from_millis(200)) {
                    if let Some(reply) = respond(&f, &ctx) {
                        (&file).write_all(&reply).unwrap();
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let mut child = Command::new("busybox")
        .args([
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-i",
            tap.name(),
            "-s",
        ])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > DHCP_TIMEOUT {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    responder.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some_and(|s| s.success()),
        "udhcpc: {status:?}\n{stdout}\n{stderr}"
    );
    let bound = stdout
        .lines()
        .find(|l| l.starts_with("BOUND "))
        .unwrap_or_else(|| panic!("no lease:\n{stdout}\n{stderr}"));
    assert_eq!(
        bound,
        "BOUND ip=100.64.3.5 subnet=255.255.255.254 router=100.64.3.4 dns=100.64.3.4 \
         lease=4294967295 serverid=100.64.3.4 hostname=inst-vm boot_file=auto_install"
    );
    // DISCOVER → OFFER, REQUEST → ACK.
    assert!(answered.load(Ordering::Relaxed) >= 2);
}
