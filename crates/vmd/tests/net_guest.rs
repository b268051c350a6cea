//! The daemon's network path with a real guest driver (issue 7 item 5): vmd runs inside a
//! network namespace each test creates, makes the taps and bridges there, and the testkit
//! guest's polled virtio-net driver leases an address from the built-in DHCP responder, pings
//! the host or another VM, and tries a spoofed source MAC. Nothing touches the host's own
//! interfaces. Needs root (skips otherwise) and iproute2.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    skip_unless_root, skip_without_iproute2, succeeds, text, vm_block, wait_for, Daemon, Netns,
};

/// Bound on what a guest prints: boot, DHCP and pings run in emulated ring 0, and a peer
/// may still be booting.
const CONSOLE_WAIT: Duration = Duration::from_secs(90);

/// One test at a time: each runs one or two emulated guests, and the host has few cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Root, iproute2, /dev/net/tun and the _vmd user, or a `SKIPPED:` line and true.
fn skip() -> bool {
    if skip_unless_root() || skip_without_iproute2() {
        return true;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED: no /dev/net/tun");
        return true;
    }
    false
}

fn is_up(line: &str) -> bool {
    line.contains(",UP") || line.contains("<UP")
}

/// F-NET-08, F-NET-11: a `local interface` gets the /31 of VM 1, NIC 0 (host 100.64.1.2
/// on the tap, guest 100.64.1.3 by DHCP); the guest reaches the host through the tap. With
/// the lladdr unlocked, frames from another source MAC get through too (the control for
/// `locked_lladdr_drops_a_spoofing_guest`).
#[test]
fn local_interface_guest_leases_by_dhcp_and_pings_the_host() {
    if skip() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let ns = Netns::new("vmdnet-local");
    // `local inet6`: the tap also gets the host side of the NIC's /96 (F-NET-09).
    let conf = format!(
        "local inet6 prefix fd12:3456:789a::/64\n{}",
        vm_block(
            "n1",
            "dhcp spoof vmmci exit=poweroff",
            "\tlocal interface\n",
        )
    );
    let d = Daemon::start_in(&ns, &conf);
    let con = d.console("n1");

    let lease = con.line("NET mac", CONSOLE_WAIT);
    let mac = lease.split_whitespace().nth(2).unwrap_or("").to_string();
    assert!(mac.starts_with("fe:e1:bb:d1:"), "vmd's MAC prefix: {lease}");
    assert!(
        lease.ends_with(" lease 100.64.1.3 router 100.64.1.2 mask 255.255.255.254"),
        "{lease}\n{}",
        d.log()
    );
    let ping = con.line("NET ping", CONSOLE_WAIT);
    assert_eq!(ping, "NET ping 100.64.1.2 ok", "{}", d.log());
    let spoof = con.line("NET spoof ping", CONSOLE_WAIT);
    assert_eq!(
        spoof, "NET spoof ping ok",
        "unlocked: any source MAC passes"
    );
    con.line("VMMCI ready", CONSOLE_WAIT);

    let tap = ns
        .link_with_alias("vm1-if0-n1")
        .unwrap_or_else(|| panic!("no tap described vm1-if0-n1: {:?}", ns.links()));
    let name = Netns::name_of(&tap);
    assert!(name.starts_with("tap"), "{tap}");
    assert!(is_up(&tap), "the tap is up: {tap}");
    let addrs = ns.ip(&["-o", "-4", "addr", "show", "dev", &name]);
    assert!(addrs.contains("inet 100.64.1.2/31"), "{addrs}");
    // The guest's IPv4 address in bytes 8-11 of the prefix, host suffix 1.
    let addrs6 = ns.ip(&["-o", "-6", "addr", "show", "dev", &name]);
    assert!(
        addrs6.contains("inet6 fd12:3456:789a:0:6440:103:0:1/96"),
        "{addrs6}"
    );
    // The host learned the guest's real MAC from its ARP request.
    let neigh = ns.ip(&["neigh", "show", "dev", &name]);
    assert!(
        neigh.contains(&format!("100.64.1.3 lladdr {mac}")),
        "{neigh}"
    );

    // A graceful stop reaches the guest through vmmci; it powers off (its last console
    // lines may go with the pty's hangup) and the tap goes with the VM process.
    let stop = d.vmctl(&["stop", "-w", "n1"]);
    assert!(stop.status.success(), "{}", text(&stop));
    d.wait_state("n1", "stopped");
    assert!(d.log().contains("vm 1 ended: Poweroff"), "{}", d.log());
    assert!(
        wait_for(|| ns.link_with_alias("vm1-if0-n1").is_none()),
        "the tap outlived the VM: {:?}",
        ns.links()
    );
    println!("took {:?}", started.elapsed());
}

/// F-NET-04, F-NET-05: a switch vmd creates as a bridge, two VMs on it with static
/// addresses; each pings the other and answers the other's ARP and echo requests. The
/// second drives its NIC through the legacy interface (10-byte header, as OpenBSD's vio(4)
/// on vmd's transitional device), the first through the modern one.
#[test]
fn two_vms_on_one_switch_reach_each_other() {
    if skip() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let ns = Netns::new("vmdnet-switch");
    let nic = "\tinterface { switch \"sw\" }\n";
    let conf = format!(
        "switch \"sw\" {{\n\tinterface br0\n}}\n{}{}",
        vm_block("a", "ip=10.9.0.1 peer=10.9.0.2 exit=halt", nic),
        vm_block("b", "ip=10.9.0.2 peer=10.9.0.1 netlegacy exit=halt", nic),
    );
    let d = Daemon::start_in(&ns, &conf);
    let a = d.console("a");
    let b = d.console("b");

    let bridge = ns.ip(&["-o", "-d", "link", "show", "br0"]);
    assert!(bridge.contains("bridge"), "vmd created br0: {bridge}");
    assert!(is_up(&bridge), "the bridge is up: {bridge}");
    for alias in ["vm1-if0-a", "vm2-if0-b"] {
        let tap = ns
            .link_with_alias(alias)
            .unwrap_or_else(|| panic!("no tap described {alias}: {:?}", ns.links()));
        assert!(tap.contains("master br0"), "{tap}");
        assert!(is_up(&tap), "{tap}");
    }

    for (con, iface, me, peer) in [
        (&a, "NET mac", "10.9.0.1", "10.9.0.2"),
        (&b, "NET legacy mac", "10.9.0.2", "10.9.0.1"),
    ] {
        let line = con.line("NET ", CONSOLE_WAIT);
        assert!(line.starts_with(iface), "{line}");
        assert!(line.ends_with(&format!(" ip {me}")), "{line}");
        let ping = con.line("NET ping", CONSOLE_WAIT);
        assert_eq!(ping, format!("NET ping {peer} ok"), "{}", d.log());
    }
    for con in [&a, &b] {
        let served = con.line("NET served", CONSOLE_WAIT);
        assert_ne!(served, "NET served 0", "answered the peer's echo request");
        con.line("DONE", CONSOLE_WAIT);
    }
    println!("took {:?}", started.elapsed());
}

/// F-NET-10: with `locked lladdr`, the device drops frames the guest sends from any MAC
/// but its own: the ping from the real MAC works, the spoofed one gets no answer.
#[test]
fn locked_lladdr_drops_a_spoofing_guest() {
    if skip() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let ns = Netns::new("vmdnet-locked");
    let conf = vm_block(
        "n1",
        "dhcp spoof exit=halt",
        "\tlocal interface { locked lladdr }\n",
    );
    let d = Daemon::start_in(&ns, &conf);
    let con = d.console("n1");
    let lease = con.line("NET mac", CONSOLE_WAIT);
    assert!(
        lease.ends_with(" lease 100.64.1.3 router 100.64.1.2 mask 255.255.255.254"),
        "{lease}"
    );
    assert_eq!(con.line("NET ping", CONSOLE_WAIT), "NET ping 100.64.1.2 ok");
    assert_eq!(
        con.line("NET spoof ping", CONSOLE_WAIT),
        "NET spoof ping timeout"
    );
    con.line("DONE", CONSOLE_WAIT);
    // The device's rate-limited warning reaches vmd's log through the VM process.
    assert!(
        d.log()
            .contains("locked lladdr: guest sent from another MAC"),
        "{}",
        d.log()
    );
    println!("took {:?}", started.elapsed());
}

/// Taps belong to the VM (they vanish with its process) and vmd removes the bridges it
/// created when it exits: the namespace ends up as it started.
#[test]
fn taps_are_gone_after_the_vm_and_vmd_stop() {
    if skip() {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let ns = Netns::new("vmdnet-taps");
    let conf = format!(
        "switch \"sw\" {{\n\tinterface br0\n}}\n{}",
        vm_block(
            "t",
            "exit=halt",
            "\tlocal interface\n\tinterface { switch \"sw\" }\n"
        ),
    );
    let mut d = Daemon::start_in(&ns, &conf);
    d.wait_state("t", "running");
    let taps = |ns: &Netns| -> Vec<String> {
        ns.non_loopback()
            .into_iter()
            .filter(|n| n.starts_with("tap"))
            .collect()
    };
    assert!(
        wait_for(|| taps(&ns).len() == 2),
        "two taps: {:?}",
        ns.links()
    );
    let local = ns
        .link_with_alias("vm1-if0-t")
        .expect("the local NIC's tap");
    let switched = ns
        .link_with_alias("vm1-if1-t")
        .expect("the switch NIC's tap");
    assert!(!local.contains("master"), "{local}");
    assert!(switched.contains("master br0"), "{switched}");

    let stop = d.vmctl(&["stop", "-f", "-w", "t"]);
    assert!(stop.status.success(), "{}", text(&stop));
    d.wait_state("t", "stopped");
    assert!(
        wait_for(|| taps(&ns).is_empty()),
        "taps outlived the VM: {:?}",
        ns.links()
    );
    assert_eq!(
        ns.non_loopback(),
        ["br0"],
        "the bridge stays while vmd runs"
    );

    // Running again when vmd exits: it takes its taps and its bridge along.
    let start = d.vmctl(&["start", "t"]);
    assert!(start.status.success(), "{}", text(&start));
    d.wait_state("t", "running");
    assert!(wait_for(|| taps(&ns).len() == 2), "{:?}", ns.links());
    d.terminate();
    assert!(
        wait_for(|| ns.non_loopback().is_empty()),
        "vmd left interfaces behind: {:?}",
        ns.links()
    );
    println!("took {:?}", started.elapsed());
}

/// A tap that cannot be created (the name is taken by an interface that is not a tap) and a
/// switch group on its taps (issue 7 "Bad input", F-NET-05): the VM's start fails with a
/// message naming the interface, the other interface is left alone, vmd keeps running; a VM
/// on the switch gets the switch's group.
#[test]
fn a_tap_that_cannot_be_created_fails_the_start_cleanly() {
    if skip() {
        return;
    }
    let _serial = serial();
    let ns = Netns::new("vmdnet-badtap");
    assert!(succeeds(
        Command::new("ip").args(["-n", &ns.0, "link", "add", "tap5", "type", "bridge"])
    ));
    let conf = format!(
        "switch \"sw\" {{\n\tinterface br0\n\tgroup swgroup\n}}\n{}{}",
        vm_block("bad", "exit=halt", "\tinterface tap5\n"),
        vm_block("good", "exit=halt", "\tinterface { switch \"sw\" }\n"),
    );
    let d = Daemon::start_in(&ns, &conf);
    d.wait_state("good", "running");
    d.wait_until(
        || {
            d.log()
                .lines()
                .any(|l| l.contains("vm \"bad\"") && l.contains("tap5"))
        },
        "the log to name the tap that could not be created",
    );
    assert!(
        d.state("bad").is_some_and(|s| s != "running"),
        "{}",
        d.log()
    );
    let other = ns.ip(&["-d", "link", "show", "tap5"]);
    assert!(
        other.contains("bridge"),
        "tap5 is still the bridge: {other}"
    );
    let start = d.vmctl(&["start", "bad"]);
    assert!(!start.status.success(), "{}", text(&start));
    assert!(
        text(&start).contains("start vm command failed"),
        "{}",
        text(&start)
    );
    let good = ns
        .link_with_alias("vm2-if0-good")
        .unwrap_or_else(|| panic!("no tap for good: {:?}", ns.links()));
    let name = Netns::name_of(&good);
    let link = ns.ip(&["-d", "link", "show", &name]);
    assert!(
        !link.contains("group default"),
        "the switch's group is on its tap: {link}"
    );
}
