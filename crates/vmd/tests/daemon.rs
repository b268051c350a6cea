//! The whole daemon on the real /dev/kvm, driven by the real vmctl (issue 4): processes and
//! their users and sandboxes, start/stop/wait/pause/status/console, config and ad-hoc VM
//! lifecycles, guest-reboot restarts with the rate limit, reload by SIGHUP, shutdown by
//! SIGTERM, bad images, and permissions checked with real non-root users.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    skip_unless_root, skip_without_iproute2, succeeds, test_user, text, uid_of, vm_block,
    vmctl_path, wait_for, Console, Daemon, Netns, GROUP, OTHER, OWNER, WAIT,
};
use testkit::{guest, Guest};

fn proc_status(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn config_vm_runs_sandboxed_as_vmd_and_persists_stopped() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start(&vm_block("tiny", "smp exit=halt", "\tcpus 2\n"));
    let row = d.wait_console("tiny");
    assert_eq!(&row[0], "1");
    assert_eq!(
        (&row[2][..], &row[3][..], &row[6][..]),
        ("2", "64.0M", "root")
    );
    let tty = format!("/dev/{}", row[5]);
    let out = Console::attach(&tty).wait_text("DONE", WAIT);
    assert!(out.contains("SMP ok 2"), "{out}");

    // The VM process: the unprivileged user, no new privileges, seccomp on.
    let st = proc_status(&row[1]);
    assert_eq!(field(&st, "Uid:"), uid_of("_vmd").to_string(), "{st}");
    assert_eq!(field(&st, "NoNewPrivs:"), "1");
    assert_eq!(field(&st, "Seccomp:"), "2");

    let stop = d.vmctl(&["stop", "-w", "tiny"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert_eq!(
        String::from_utf8_lossy(&stop.stderr),
        "stopping vm tiny: terminated vm 1\n"
    );
    let row = d.wait_state("tiny", "stopped");
    assert_eq!((&row[1][..], &row[5][..]), ("-", "-"));
    assert!(!Path::new(&format!("/proc/{}", "tiny")).exists());
    // A stopped config VM starts again with the same id.
    let start = d.vmctl(&["start", "tiny"]);
    assert!(
        text(&start).contains("started vm 1 successfully, tty /dev/pts/"),
        "{}",
        text(&start)
    );
    d.wait_state("tiny", "running");
}

#[test]
fn adhoc_vm_vanishes_on_stop_and_pause_freezes_it() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start("");
    let pvh = guest(Guest::Pvh);
    let start = d.vmctl(&[
        "start",
        "-b",
        pvh.to_str().unwrap(),
        "-m",
        "32M",
        "-p",
        "2",
        "--cmdline",
        "exit=halt",
        "adhoc",
    ]);
    assert!(start.status.success(), "{}", text(&start));
    assert!(
        text(&start).contains("started vm 1 successfully"),
        "{}",
        text(&start)
    );
    d.wait_state("adhoc", "running");

    assert!(d.vmctl(&["pause", "adhoc"]).status.success());
    d.wait_state("adhoc", "paused");
    let unpause = d.vmctl(&["unpause", "1"]);
    assert!(
        text(&unpause).contains("unpaused vm 1 successfully"),
        "{}",
        text(&unpause)
    );
    d.wait_state("adhoc", "running");

    let stop = d.vmctl(&["stop", "-f", "-w", "adhoc"]);
    assert!(
        text(&stop).contains("forced to terminate vm 1"),
        "{}",
        text(&stop)
    );
    d.wait_until(|| d.row("adhoc").is_none(), "the ad-hoc VM to vanish");
    let gone = d.vmctl(&["stop", "adhoc"]);
    assert!(!gone.status.success());
    assert!(text(&gone).contains("vm not found"), "{}", text(&gone));
}

#[test]
fn guest_reboots_restart_the_vm_until_the_rate_limit() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start(&vm_block("looper", "exit=reboot", ""));
    d.wait_until(
        || d.log().matches("running as pid").count() >= 3,
        "three starts",
    );
    let row = d.wait_state("looper", "stopped");
    assert_eq!(&row[0], "1", "same id across restarts");
    let log = d.log();
    assert!(log.contains("ended: Reboot"), "{log}");
    assert!(
        log.matches("running as pid").count() <= 4,
        "the rate limit stops the loop: {log}"
    );
}

#[test]
fn sighup_reloads_and_bad_images_fail_cleanly() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start("");
    let truncated = d.dir.path().join("truncated.elf");
    let pvh = std::fs::read(guest(Guest::Pvh)).unwrap();
    std::fs::write(&truncated, &pvh[..pvh.len() / 2]).unwrap();
    let conf = format!(
        "vm \"broken\" {{\n\tdisable\n\tmemory 32M\n\tboot \"{}\"\n}}\n{}",
        truncated.display(),
        vm_block("later", "exit=halt", "\tdisable\n")
    );
    std::fs::write(&d.conf, conf).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    d.wait_until(|| d.row("later").is_some(), "the reloaded config");
    assert_eq!(d.state("broken").as_deref(), Some("stopped"));

    let bad = d.vmctl(&["start", "broken"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("start vm command failed: Invalid argument"),
        "{}",
        text(&bad)
    );
    assert!(
        d.log().contains("truncated"),
        "the log names the problem: {}",
        d.log()
    );
    // The daemon carries on.
    let ok = d.vmctl(&["start", "later"]);
    assert!(ok.status.success(), "{}", text(&ok));
    d.wait_state("later", "running");
}

#[test]
fn sigterm_stops_every_vm() {
    if skip_unless_root() {
        return;
    }
    let mut d = Daemon::start(&(vm_block("a", "exit=halt", "") + &vm_block("b", "exit=halt", "")));
    let pa = d.wait_state("a", "running")[1].clone();
    let pb = d.wait_state("b", "running")[1].clone();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let status = d.child.wait().unwrap();
    assert!(
        status.success(),
        "vmd exits cleanly: {status:?}\n{}",
        d.log()
    );
    for pid in [pa, pb] {
        let deadline = Instant::now() + WAIT;
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "VM process {pid} outlived vmd"
        );
    }
}

#[test]
fn other_users_act_only_on_what_they_own() {
    if skip_unless_root() {
        return;
    }
    let owner = test_user(OWNER);
    let other = test_user(OTHER);
    let conf = format!(
        "socket owner root:{GROUP}\n{}",
        vm_block(
            "owned",
            "exit=halt",
            &format!("\tdisable\n\towner {OWNER}\n")
        )
    );
    let d = Daemon::start(&conf);

    let denied = d.vmctl_as(Some(other), &["start", "owned"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("start vm command failed: Operation not permitted"),
        "{}",
        text(&denied)
    );
    let reload = d.vmctl_as(Some(owner), &["reload"]);
    assert!(!reload.status.success());
    assert!(
        text(&reload).contains("command failed: Operation not permitted"),
        "{}",
        text(&reload)
    );
    let pvh = guest(Guest::Pvh);
    let adhoc = d.vmctl_as(
        Some(other),
        &["start", "-b", pvh.to_str().unwrap(), "-m", "32M", "mine"],
    );
    assert!(
        !adhoc.status.success(),
        "non-root ad-hoc VMs are refused: {}",
        text(&adhoc)
    );

    let start = d.vmctl_as(Some(owner), &["start", "owned"]);
    assert!(start.status.success(), "{}", text(&start));
    let row = d.wait_console("owned");
    assert_eq!(row[6], OWNER);
    let tty = std::fs::metadata(format!("/dev/{}", row[5])).unwrap();
    assert_eq!(
        tty.uid(),
        owner.0,
        "the console belongs to the user who started the VM"
    );
    assert_eq!(tty.mode() & 0o777, 0o620);

    let stop = d.vmctl_as(Some(other), &["stop", "owned"]);
    assert!(
        text(&stop).contains("failed: Operation not permitted"),
        "{}",
        text(&stop)
    );
    let console = d.vmctl_as(Some(other), &["console", "owned"]);
    assert!(!console.status.success(), "{}", text(&console));
    let stop = d.vmctl_as(Some(owner), &["stop", "-w", "owned"]);
    assert!(stop.status.success(), "{}", text(&stop));
    d.wait_state("owned", "stopped");
    let released = std::fs::metadata(format!("/dev/{}", row[5]));
    assert!(
        released.is_err() || released.unwrap().uid() == 0,
        "the tty goes back to root"
    );
}

#[test]
fn several_waiters_load_reset_log_and_json_status() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start(&vm_block("w", "exit=halt", ""));
    d.wait_state("w", "running");
    let waiters: Vec<Child> = (0..2)
        .map(|_| {
            Command::new(vmctl_path())
                .arg("-s")
                .arg(&d.socket)
                .args(["wait", "w"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both waits must be registered before the stop: wait for the parent to log them.
    d.wait_until(
        || d.log().matches("request Wait").count() >= 2,
        "two waiters",
    );
    assert!(d.vmctl(&["stop", "w"]).status.success());
    for w in waiters {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("terminated vm 1"), "{}", text(&out));
    }

    let extra = d.dir.path().join("extra.conf");
    std::fs::write(&extra, vm_block("loaded", "exit=halt", "\tdisable\n")).unwrap();
    let load = d.vmctl(&["load", extra.to_str().unwrap()]);
    assert!(load.status.success(), "{}", text(&load));
    assert_eq!(d.state("loaded").as_deref(), Some("stopped"));

    let json = d.vmctl(&["status", "--json"]);
    let s = String::from_utf8_lossy(&json.stdout);
    assert!(
        s.starts_with('[')
            && s.contains("\"name\":\"loaded\"")
            && s.contains("\"state\":\"stopped\""),
        "{s}"
    );

    assert!(d.vmctl(&["log", "brief"]).status.success());
    let before = d.log().len();
    d.vmctl(&["status"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !d.log()[before..].contains("request Status"),
        "brief logging hides requests"
    );
    assert!(d.vmctl(&["log", "verbose"]).status.success());
    d.vmctl(&["status"]);
    d.wait_until(
        || d.log()[before..].contains("request Status"),
        "verbose logging again",
    );

    assert!(d.vmctl(&["reset", "vms"]).status.success());
    d.wait_until(
        || d.row("loaded").is_none() && d.row("w").is_none(),
        "reset to forget every VM",
    );
}

#[test]
fn switches_become_bridges_in_the_daemons_namespace_and_go_on_reset() {
    if skip_unless_root() {
        return;
    }
    if skip_without_iproute2() {
        return;
    }
    let ns = Netns::new("vmdtest-switch");
    let conf = "switch \"uplink\" {\n\tinterface br-vmdtest\n\tgroup vmdnet\n\tup\n}\n";

    let mut d = Daemon::start_in(&ns, conf);
    assert!(
        wait_for(|| ns
            .link("br-vmdtest")
            .is_some_and(|l| l.contains("switch1-uplink"))),
        "{}",
        d.log()
    );
    let link = ns.link("br-vmdtest").unwrap();
    assert!(link.contains("bridge"), "a bridge: {link}");
    assert!(link.contains("alias switch1-uplink"), "{link}");
    assert!(link.contains("state UP") || link.contains(",UP"), "{link}");
    assert!(
        !link.contains("group default"),
        "the switch's group is applied: {link}"
    );
    let reset = d.vmctl(&["reset", "switches"]);
    assert!(reset.status.success(), "{}", text(&reset));
    assert!(
        wait_for(|| ns.link("br-vmdtest").is_none()),
        "reset switches removes the bridge vmd created"
    );
    d.terminate();

    // Everything vmd created is gone after it stops.
    let mut d = Daemon::start_in(&ns, conf);
    assert!(wait_for(|| ns.link("br-vmdtest").is_some()), "{}", d.log());
    d.terminate();
    assert!(
        wait_for(|| ns.link("br-vmdtest").is_none()),
        "vmd's exit removes its bridges"
    );
}

#[test]
fn disks_are_opened_by_the_parent_and_a_disk_in_use_is_refused() {
    if skip_unless_root() {
        return;
    }
    let d = Daemon::start("");
    let base = d.dir.path().join("base.qcow2");
    let top = d.dir.path().join("top.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: qemu-img is not installed");
        return;
    }
    assert!(Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "base.qcow2"
        ])
        .arg(&top)
        .status()
        .unwrap()
        .success());
    let pvh = guest(Guest::Pvh);
    let start = |name: &str| {
        d.vmctl(&[
            "start",
            "-b",
            pvh.to_str().unwrap(),
            "-m",
            "32M",
            "--cmdline",
            "exit=halt",
            "-d",
            top.to_str().unwrap(),
            name,
        ])
    };
    let first = start("one");
    assert!(first.status.success(), "{}", text(&first));
    let pid = d.wait_state("one", "running")[1].clone();
    // The sandboxed VM process holds both images of the chain, opened by the parent.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(fds.iter().any(|p| p.ends_with("top.qcow2")), "{fds:?}");
    assert!(fds.iter().any(|p| p.ends_with("base.qcow2")), "{fds:?}");

    let second = start("two");
    assert!(!second.status.success());
    assert!(
        text(&second).contains("start vm command failed: Device or resource busy"),
        "{}",
        text(&second)
    );
    assert!(d.log().contains("in use"), "{}", d.log());
    assert!(d.vmctl(&["stop", "-w", "one"]).status.success());
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&top)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

/// `vmctl start -d disk -r iso` in the sandboxed VM process: the guest writes its disk
/// through virtio-blk and the host file holds the data (F-HW-13), and its virtio-scsi driver
/// reads the ISO's primary volume descriptor (F-HW-14, F-CONF-14); a file that is not an ISO
/// fails the start with a message naming it, and vmd keeps running.
#[test]
fn sandboxed_vm_writes_its_disk_and_reads_its_cdrom_and_a_non_iso_is_refused() {
    if skip_unless_root() {
        return;
    }
    const SECTOR: usize = 9;
    let d = Daemon::start("");
    let iso = d.dir.path().join("test.iso");
    std::fs::write(&iso, testkit::iso::el_torito(&[0xF4], b"payload")).unwrap();
    let disk = d.dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 2048 * testkit::SECTOR_SIZE]).unwrap();
    let pvh = guest(Guest::Pvh);
    let start = d.vmctl(&[
        "start",
        "-b",
        pvh.to_str().unwrap(),
        "-m",
        "32M",
        "-d",
        disk.to_str().unwrap(),
        "-r",
        iso.to_str().unwrap(),
        "--cmdline",
        &format!("blk={SECTOR} cdrom exit=halt"),
        "cd",
    ]);
    assert!(start.status.success(), "{}", text(&start));
    let row = d.wait_console("cd");
    let out = Console::attach(&format!("/dev/{}", row[5])).wait_text("\nDONE", WAIT);
    assert!(
        out.contains("BLK modern capacity 2048 write ok read ok flush ok"),
        "{out}"
    );
    assert!(out.contains("CDROM type 05 pvd CD001"), "{out}");
    assert!(d.vmctl(&["stop", "-f", "-w", "cd"]).status.success());
    let data = std::fs::read(&disk).unwrap();
    let at = SECTOR * testkit::SECTOR_SIZE;
    assert_eq!(
        data[at..at + testkit::SECTOR_SIZE],
        testkit::blk_pattern("modern"),
        "the guest's write is in the host file"
    );

    let bad = d.dir.path().join("bad.iso");
    std::fs::write(&bad, vec![0x5a; 64 * 1024]).unwrap();
    let start = d.vmctl(&[
        "start",
        "-b",
        pvh.to_str().unwrap(),
        "-m",
        "32M",
        "-r",
        bad.to_str().unwrap(),
        "badcd",
    ]);
    assert!(!start.status.success(), "{}", text(&start));
    assert!(
        text(&start).contains("start vm command failed"),
        "{}",
        text(&start)
    );
    // vmctl reports the errno, as vmd's does; the log names the file and the problem.
    d.wait_until(
        || d.log().contains("bad.iso: not an ISO 9660 image"),
        "the log to name the bad ISO",
    );
    let status = d.vmctl(&["status"]);
    assert!(
        text(&status).contains("STATE NAME"),
        "vmd is still up: {}",
        text(&status)
    );
}

/// A user's instance disk whose backing file that user cannot read is refused before any
/// image is opened for the VM (issue 6 "Bad input", spec §4.5): the error names the base, the
/// VM does not start; once the user may read the base, the same start succeeds.
#[test]
fn a_backing_file_the_user_cannot_read_is_refused() {
    if skip_unless_root() {
        return;
    }
    if !succeeds(Command::new("qemu-img").arg("--version")) {
        eprintln!("SKIPPED: qemu-img is not installed");
        return;
    }
    let owner = test_user(OWNER);
    let conf = format!(
        "socket owner root:{GROUP}\nvm \"tmpl\" {{\n\tdisable\n\tmemory 32M\n\tboot \"{}\"\n\tcmdline \"exit=halt\"\n\tallow instance {{ disk, owner {OWNER} }}\n}}\n",
        guest(Guest::Pvh).display()
    );
    let d = Daemon::start(&conf);
    let dir = d.dir.path();
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    assert!(succeeds(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("16M")
    ));
    assert!(succeeds(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&top)
    ));
    let chown = |p: &Path, mode: u32| {
        std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    chown(&top, 0o600);
    // The base belongs to root and is private: the owner cannot read it.
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let start = |name: &str| {
        d.vmctl_as(
            Some(owner),
            &["start", "-t", "tmpl", "-d", top.to_str().unwrap(), name],
        )
    };
    let refused = start("inst1");
    assert!(!refused.status.success(), "{}", text(&refused));
    d.wait_until(
        || d.log().contains("base.qcow2: uid"),
        "the log to name the unreadable base",
    );
    assert!(
        text(&refused).contains("Operation not permitted"),
        "{}",
        text(&refused)
    );
    assert!(d.row("inst1").is_none_or(|r| r[7] != "running"));

    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let started = start("inst2");
    assert!(started.status.success(), "{}", text(&started));
    d.wait_state("inst2", "running");
    assert!(d.vmctl(&["stop", "-f", "-w", "inst2"]).status.success());
}
