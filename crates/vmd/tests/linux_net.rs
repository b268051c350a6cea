//! The real Linux guest of `../shared/guest-linux` on a `local interface` (issue 7 item 5,
//! F-NET-08, F-NET-10, F-NET-11): vmd runs inside a network namespace the test creates, priv
//! puts the host side of the /31 on the tap, Linux's virtio-net driver and busybox `udhcpc`
//! lease the guest side from the responder inside the VM process, the guest pings the host,
//! then changes its MAC: on a `locked lladdr` interface its frames no longer get out.
//!
//! scripts/test.sh builds the guest and sets VMD_LINUX_GUEST_DIR; without it the test skips.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    linux_guest_dir, linux_vm_block, open_tempdir, skip_unless_root, wait_for, Daemon, Netns,
};

/// Boot plus DHCP plus two pings on the emulated ring 0 of this machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

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

/// The kit's initramfs with our `/init` and udhcpc script appended as a second archive.
fn initramfs(kit: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    for (name, body) in [("init", INIT), ("dhcp.sh", DHCP_SCRIPT)] {
        let p = root.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
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

fn line<'a>(console: &'a str, key: &str) -> &'a str {
    console
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} line in:\n{console}"))
        .trim_end()
}

#[test]
fn linux_guest_leases_by_dhcp_pings_the_host_and_cannot_spoof_a_locked_lladdr() {
    if skip_unless_root() {
        return;
    }
    let Some(kit) = linux_guest_dir() else { return };
    let files = open_tempdir();
    let initrd = initramfs(&kit, files.path());
    let conf = linux_vm_block("lx", &kit, &initrd, "\tlocal interface { locked lladdr }\n");
    let ns = Netns::new("vmdtest-lxnet");
    let d = Daemon::start_in(&ns, &conf);
    let console = d.console("lx");
    // priv configured the host side before the VM ran: VM 1, NIC 0 -> 100.64.1.2/31.
    let addr = ns.ip(&["addr", "show", "tap0"]);
    assert!(addr.contains("inet 100.64.1.2/31"), "{addr}");
    let link = ns.ip(&["-d", "link", "show", "tap0"]);
    assert!(link.contains("alias vm1-if0-lx"), "{link}");

    // What the guest prints up to its last line (or until the console ends or time runs out).
    let out = console.until(GUEST_TIMEOUT, |s| {
        s.split("GUEST-SPOOF")
            .nth(1)
            .is_some_and(|r| r.contains('\n'))
    });
    assert_eq!(
        line(&out, "GUEST-LEASE"),
        "GUEST-LEASE 100.64.1.3 router 100.64.1.2 mask 255.255.255.254",
        "{}",
        d.log()
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
}
