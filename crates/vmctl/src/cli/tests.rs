use std::path::{Path, PathBuf};

use super::*;
use crate::size::MIB;

/// A realpath that knows `/abs/...` paths and refuses everything under `/missing`.
fn fake_realpath(p: &str) -> io::Result<PathBuf> {
    if p.starts_with("/missing") || p.is_empty() {
        Err(io::Error::from_raw_os_error(libc::ENOENT))
    } else if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Ok(Path::new("/cwd").join(p))
    }
}

fn parse_words(words: &[&str]) -> Result<Invocation, Vec<String>> {
    let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    parse(&args, &fake_realpath)
}

fn cmd(words: &[&str]) -> Command {
    match parse_words(words) {
        Ok(inv) => inv.command,
        Err(lines) => panic!("{words:?}: {lines:?}"),
    }
}

fn err(words: &[&str]) -> Vec<String> {
    match parse_words(words) {
        Ok(inv) => panic!("{words:?} parsed: {inv:?}"),
        Err(lines) => lines,
    }
}

fn name(n: &str) -> VmRef {
    VmRef::Name(n.into())
}

fn start(words: &[&str]) -> StartRequest {
    let mut all = vec!["start"];
    all.extend_from_slice(words);
    match cmd(&all) {
        Command::Start(args) => args.request,
        other => panic!("{other:?}"),
    }
}

#[test]
fn global_options() {
    let inv = parse_words(&["status"]).unwrap();
    assert!(!inv.verbose);
    assert_eq!(inv.socket, PathBuf::from("/var/run/vmd.sock"));
    let inv = parse_words(&["-v", "-s", "/tmp/s.sock", "status"]).unwrap();
    assert!(inv.verbose);
    assert_eq!(inv.socket, PathBuf::from("/tmp/s.sock"));
    let inv = parse_words(&["-vs/tmp/x", "reload"]).unwrap();
    assert_eq!(inv.socket, PathBuf::from("/tmp/x"));
    assert_eq!(inv.command, Command::Reload);
    assert_eq!(err(&[]), [USAGE]);
    assert_eq!(err(&["-v"]), [USAGE]);
    assert_eq!(
        err(&["-x", "status"]),
        ["vmctl: unknown option -- x", USAGE]
    );
    assert_eq!(
        err(&["-s"]),
        ["vmctl: option requires an argument -- s", USAGE]
    );
    assert_eq!(USAGE, "usage:\tvmctl [-v] command [arg ...]");
}

#[test]
fn prefixes_ambiguous_and_unknown() {
    assert_eq!(cmd(&["stat"]), cmd(&["status"]));
    assert_eq!(cmd(&["sh"]), cmd(&["status"]));
    assert_eq!(cmd(&["rel"]), Command::Reload);
    assert_eq!(cmd(&["con", "1"]), Command::Console(VmRef::Id(1)));
    assert_eq!(
        cmd(&["cr", "-s", "1M", "a"]),
        cmd(&["create", "-s", "1M", "a"])
    );
    assert_eq!(cmd(&["u", "1"]), Command::Unpause(VmRef::Id(1)));
    assert_eq!(cmd(&["w", "vm"]), Command::Wait(name("vm")));
    assert_eq!(cmd(&["sto", "1"]), cmd(&["stop", "1"]));
    for word in ["st", "s", "re", "lo", "", "c"] {
        assert_eq!(
            err(&[word]),
            [format!("ambiguous argument: {word}"), USAGE.to_string()]
        );
    }
    assert_eq!(
        err(&["frobnicate"]),
        ["unknown argument: frobnicate", USAGE]
    );
    assert_eq!(err(&["statusx"]), ["unknown argument: statusx", USAGE]);
    assert_eq!(
        cmd(&["se", "1"]),
        Command::Send {
            vm: VmRef::Id(1),
            live: false
        }
    );
    assert_eq!(cmd(&["rec", "copy"]), Command::Receive("copy".into()));
}

#[test]
fn send_takes_an_id_and_receive_a_name() {
    let send = |vm, live| Command::Send { vm, live };
    assert_eq!(cmd(&["send", "web"]), send(name("web"), false));
    assert_eq!(cmd(&["send", "2"]), send(VmRef::Id(2), false));
    assert_eq!(cmd(&["send", "-l", "web"]), send(name("web"), true));
    assert_eq!(
        err(&["send", "-x", "web"]),
        ["vmctl: unknown option -- x", command_usage("send").as_str()]
    );
    assert_eq!(cmd(&["receive", "copy"]), Command::Receive("copy".into()));
    assert_eq!(
        err(&["receive", "12"]),
        ["vmctl: invalid vm name", "vmctl: invalid id: 12"]
    );
    assert_eq!(
        err(&["receive", "a b"]),
        ["vmctl: invalid vm name", "vmctl: invalid id: a b"]
    );
    for c in ["send", "receive"] {
        assert_eq!(err(&[c]), [command_usage(c)]);
        assert_eq!(err(&[c, "a", "b"]), [command_usage(c)]);
    }
    assert_eq!(command_usage("send"), "usage:\tvmctl [-v] send [-l] id");
    assert_eq!(command_usage("receive"), "usage:\tvmctl [-v] receive name");
}

#[test]
fn id_or_name() {
    assert_eq!(vm_ref("1"), Ok(VmRef::Id(1)));
    assert_eq!(vm_ref("0"), Ok(VmRef::Id(0)));
    assert_eq!(vm_ref("007"), Ok(VmRef::Id(7)));
    assert_eq!(vm_ref("+5"), Ok(VmRef::Id(5)));
    assert_eq!(vm_ref(" 5"), Ok(VmRef::Id(5)));
    assert_eq!(vm_ref("4294967295"), Ok(VmRef::Id(u32::MAX)));
    // Out of range for an id: an all-digit name, as strtonum leaves it in OpenBSD.
    assert_eq!(vm_ref("4294967296"), Ok(name("4294967296")));
    assert_eq!(vm_ref("web1"), Ok(name("web1")));
    assert_eq!(vm_ref("a.b-c_d"), Ok(name("a.b-c_d")));
    assert_eq!(vm_ref("-a"), Err(VmRefError::Dash));
    assert_eq!(vm_ref("-1"), Err(VmRefError::Dash));
    assert_eq!(vm_ref(".hidden"), Err(VmRefError::BadName));
    assert_eq!(vm_ref("_x"), Err(VmRefError::BadName));
    assert_eq!(vm_ref("a b"), Err(VmRefError::BadName));
    assert_eq!(vm_ref("a/b"), Err(VmRefError::BadName));
    assert_eq!(vm_ref(""), Err(VmRefError::BadName));
    assert_eq!(vm_ref(&"a".repeat(63)), Ok(name(&"a".repeat(63))));
    assert_eq!(vm_ref(&"a".repeat(64)), Err(VmRefError::TooLong));
}

#[test]
fn id_messages() {
    assert_eq!(err(&["pause", "-x"]), ["vmctl: invalid id: -x"]);
    let long = "n".repeat(64);
    assert_eq!(
        err(&["console", &long]),
        [
            "vmctl: name too long".to_string(),
            format!("vmctl: invalid id: {long}")
        ]
    );
    assert_eq!(
        err(&["wait", "bad name"]),
        ["vmctl: invalid vm name", "vmctl: invalid id: bad name"]
    );
}

#[test]
fn single_id_commands() {
    assert_eq!(cmd(&["console", "3"]), Command::Console(VmRef::Id(3)));
    assert_eq!(cmd(&["pause", "web"]), Command::Pause(name("web")));
    assert_eq!(cmd(&["unpause", "web"]), Command::Unpause(name("web")));
    assert_eq!(cmd(&["wait", "2"]), Command::Wait(VmRef::Id(2)));
    for c in ["console", "pause", "unpause", "wait"] {
        assert_eq!(err(&[c]), [command_usage(c)]);
        assert_eq!(err(&[c, "1", "2"]), [command_usage(c)]);
    }
    assert_eq!(command_usage("console"), "usage:\tvmctl [-v] console id");
}

#[test]
fn load_log_reload_reset() {
    assert_eq!(
        cmd(&["load", "/etc/extra.conf"]),
        Command::Load("/etc/extra.conf".into())
    );
    match cmd(&["load", "rel.conf"]) {
        Command::Load(p) => assert!(p.is_absolute() && p.ends_with("rel.conf")),
        other => panic!("{other:?}"),
    }
    assert_eq!(err(&["load"]), ["usage:\tvmctl [-v] load filename"]);
    assert_eq!(cmd(&["log", "verbose"]), Command::Log { verbose: true });
    assert_eq!(cmd(&["log", "VERB"]), Command::Log { verbose: true });
    assert_eq!(cmd(&["log", "b"]), Command::Log { verbose: false });
    assert_eq!(cmd(&["log", ""]), Command::Log { verbose: false });
    assert_eq!(
        err(&["log", "loud"]),
        ["usage:\tvmctl [-v] log [brief | verbose]"]
    );
    assert_eq!(err(&["log"]), ["usage:\tvmctl [-v] log [brief | verbose]"]);
    assert_eq!(cmd(&["reload"]), Command::Reload);
    assert_eq!(err(&["reload", "x"]), ["usage:\tvmctl [-v] reload "]);
    assert_eq!(cmd(&["reset"]), Command::Reset(ResetKind::All));
    assert_eq!(cmd(&["reset", "ALL"]), Command::Reset(ResetKind::All));
    assert_eq!(cmd(&["reset", "vms"]), Command::Reset(ResetKind::Vms));
    assert_eq!(
        cmd(&["reset", "switches"]),
        Command::Reset(ResetKind::Switches)
    );
    assert_eq!(
        err(&["reset", "sw"]),
        ["usage:\tvmctl [-v] reset [all | switches | vms]"]
    );
    assert_eq!(err(&["reset", "vms", "x"]).len(), 1);
}

#[test]
fn status_options() {
    let status = |vm, running_only, json| Command::Status {
        vm,
        running_only,
        json,
    };
    assert_eq!(cmd(&["status"]), status(None, false, false));
    assert_eq!(cmd(&["show", "-r"]), status(None, true, false));
    assert_eq!(
        cmd(&["status", "-r", "--json", "web"]),
        status(Some(name("web")), true, true)
    );
    assert_eq!(
        cmd(&["status", "--js", "4"]),
        status(Some(VmRef::Id(4)), false, true)
    );
    assert_eq!(
        cmd(&["status", "--", "4"]),
        status(Some(VmRef::Id(4)), false, false)
    );
    let usage = "usage:\tvmctl [-v] status [-r] [--json] [id]";
    assert_eq!(
        err(&["status", "-x"]),
        ["vmctl: unknown option -- x", usage]
    );
    assert_eq!(
        err(&["status", "--yaml"]),
        ["vmctl: unknown option -- yaml", usage]
    );
    assert_eq!(
        err(&["status", "--json=1"]),
        ["vmctl: option doesn't take an argument -- json", usage]
    );
    assert_eq!(err(&["status", "1", "2"]), [usage]);
    // Options after the operand are operands (no reordering).
    assert_eq!(err(&["status", "1", "-r"]), [usage]);
}

#[test]
fn stop_options() {
    let stop = |target, force, wait| Command::Stop {
        target,
        force,
        wait,
    };
    assert_eq!(
        cmd(&["stop", "web"]),
        stop(StopTarget::Vm(name("web")), false, false)
    );
    assert_eq!(
        cmd(&["stop", "-fw", "1"]),
        stop(StopTarget::Vm(VmRef::Id(1)), true, true)
    );
    assert_eq!(
        cmd(&["stop", "-w", "-f", "1"]),
        stop(StopTarget::Vm(VmRef::Id(1)), true, true)
    );
    assert_eq!(cmd(&["stop", "-a"]), stop(StopTarget::All, false, false));
    assert_eq!(cmd(&["stop", "-afw"]), stop(StopTarget::All, true, true));
    let usage = "usage:\tvmctl [-v] stop [-fw] [id | -a]";
    assert_eq!(err(&["stop"]), [usage]);
    assert_eq!(err(&["stop", "-a", "web"]), [usage]);
    assert_eq!(
        err(&["stop", "-q", "web"]),
        ["vmctl: unknown option -- q", usage]
    );
    assert_eq!(err(&["stop", "web", "-f"]), [usage]);
}

#[test]
fn create_options() {
    let create = |disk: &str, base: Option<&str>, input: Option<&str>, size| {
        Command::Create(CreateArgs {
            disk: disk.into(),
            base: base.map(Into::into),
            input: input.map(Into::into),
            size,
        })
    };
    assert_eq!(
        cmd(&["create", "-s", "4.5G", "disk.img"]),
        create("disk.img", None, None, Some(4608 * MIB))
    );
    assert_eq!(
        cmd(&["create", "-b", "base.qcow2", "qcow2:new"]),
        create("qcow2:new", Some("base.qcow2"), None, None)
    );
    assert_eq!(
        cmd(&["create", "-i", "in.img", "-s1G", "out.img"]),
        create("out.img", None, Some("in.img"), Some(1024 * MIB))
    );
    let inv = parse_words(&["create", "-s", "1500K", "d.img"]).unwrap();
    assert_eq!(inv.warnings, ["vmctl: disk size rounded to 1.0M"]);
    let usage = "usage:\tvmctl [-v] create [-b base | -i disk] [-s size] disk";
    assert_eq!(err(&["create"]), [usage]);
    assert_eq!(err(&["create", "-s", "1G"]), [usage]);
    assert_eq!(
        err(&["create", "-s"]),
        ["vmctl: option requires an argument -- s", usage]
    );
    assert_eq!(
        err(&["create", "-s", "1k", "x"]),
        [
            "vmctl: disk size must be at least 1MB",
            "vmctl: invalid size: 1k"
        ]
    );
    assert_eq!(
        err(&["create", "-s", "big", "x"]),
        [
            "vmctl: invalid disk size: big: Invalid argument",
            "vmctl: invalid size: big"
        ]
    );
    // 6.9 order (path first) is not accepted any more.
    assert_eq!(err(&["create", "x.img", "-s", "1G"]), [usage]);
}

#[test]
fn start_minimal_and_flags() {
    let r = start(&["web"]);
    assert_eq!(
        r,
        StartRequest {
            vm: Some(name("web")),
            ..StartRequest::default()
        }
    );
    match cmd(&["start", "-c", "1"]) {
        Command::Start(StartArgs { request, console }) => {
            assert!(console);
            assert_eq!(request.vm, Some(VmRef::Id(1)));
        }
        other => panic!("{other:?}"),
    }
    let r = start(&[
        "-b",
        "/boot/bsd",
        "-B",
        "net",
        "-d",
        "qcow2:/d/a.qcow2",
        "-d",
        "rel.img",
        "-r",
        "/x.iso",
        "-m",
        "1G",
        "-p",
        "4",
        "-t",
        "tmpl",
        "--initrd",
        "/boot/initrd",
        "--cmdline=console=ttyS0 quiet",
        "new",
    ]);
    assert_eq!(r.boot, Some("/boot/bsd".into()));
    assert_eq!(r.boot_device, Some(BootDevice::Net));
    assert_eq!(
        r.disks,
        [
            DiskSpec {
                path: "/d/a.qcow2".into(),
                format: Some(DiskFormat::Qcow2)
            },
            DiskSpec {
                path: "/cwd/rel.img".into(),
                format: None
            },
        ]
    );
    assert_eq!(r.cdrom, Some("/x.iso".into()));
    assert_eq!(r.memory, Some(1024 * MIB));
    assert_eq!(r.cpus, Some(4));
    assert_eq!(r.template, Some("tmpl".into()));
    assert_eq!(r.initrd, Some("/boot/initrd".into()));
    assert_eq!(r.cmdline, Some("console=ttyS0 quiet".into()));
    assert_eq!(r.vm, Some(name("new")));
    let r = start(&["-Bdisk", "-Lc", "x"]);
    assert_eq!(r.boot_device, Some(BootDevice::Disk));
    assert_eq!(r.nics, [NicSpec::Local]);
    assert_eq!(
        start(&["-B", "cdrom", "x"]).boot_device,
        Some(BootDevice::Cdrom)
    );
    assert_eq!(
        start(&["--cmdline", "a b", "-b", "/k", "x"]).cmdline,
        Some("a b".into())
    );
}

#[test]
fn start_nic_ordering() {
    let sw = |s: &str| NicSpec::Switch(s.into());
    assert_eq!(
        start(&["-n", "uplink", "-L", "-n", "lan", "x"]).nics,
        [sw("uplink"), NicSpec::Local, sw("lan")]
    );
    assert_eq!(
        start(&["-L", "-i", "3", "-n", "lan", "x"]).nics,
        [NicSpec::Local, sw("lan"), NicSpec::Plain]
    );
    assert_eq!(
        start(&["-i", "1", "-L", "-L", "x"]).nics,
        [NicSpec::Local, NicSpec::Local]
    );
    assert_eq!(
        start(&["-i", "2", "x"]).nics,
        [NicSpec::Plain, NicSpec::Plain]
    );
    assert_eq!(start(&["-n", "", "x"]).nics, [NicSpec::Plain]);
    assert_eq!(
        err(&["start", "-i", "5", "x"]),
        ["vmctl: too many network interfaces"]
    );
    assert_eq!(
        err(&["start", "-L", "-L", "-L", "-L", "-n", "a", "x"]),
        ["vmctl: too many network interfaces"]
    );
}

#[test]
fn start_validation_messages() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["-b", "/a", "-b", "/b", "x"],
            &["vmctl: boot image specified multiple times"],
        ),
        (
            &["-b", "/missing/bsd", "x"],
            &["vmctl: invalid boot image path: No such file or directory"],
        ),
        (
            &["-B", "disk", "-B", "net", "x"],
            &["vmctl: boot device specified multiple times"],
        ),
        (
            &["-B", "floppy", "x"],
            &["vmctl: unknown boot device floppy"],
        ),
        (
            &["-d", "/missing/d.img", "x"],
            &["vmctl: invalid disk path: No such file or directory"],
        ),
        (
            &["-i", "1", "-i", "2", "x"],
            &["vmctl: interfaces specified multiple times"],
        ),
        (
            &["-i", "0", "x"],
            &[
                "vmctl: count is too small: 0",
                "vmctl: invalid interface count: 0",
            ],
        ),
        (
            &["-i", "two", "x"],
            &[
                "vmctl: count is invalid: two",
                "vmctl: invalid interface count: two",
            ],
        ),
        (
            &["-i", "9999999999", "x"],
            &[
                "vmctl: count is too large: 9999999999",
                "vmctl: invalid interface count: 9999999999",
            ],
        ),
        (
            &["-m", "1G", "-m", "2G", "x"],
            &["vmctl: memory specified multiple times"],
        ),
        (
            &["-m", "12", "x"],
            &[
                "vmctl: memory size must be at least 1MB",
                "vmctl: invalid memory size: 12",
            ],
        ),
        (
            &["-m", "1P", "x"],
            &[
                "vmctl: memory size too large (limit is 128G)",
                "vmctl: invalid memory size: 1P",
            ],
        ),
        (
            &["-m", "lots", "x"],
            &[
                "vmctl: invalid memory size: lots: Invalid argument",
                "vmctl: invalid memory size: lots",
            ],
        ),
        (
            &["-r", "/a.iso", "-r", "/b.iso", "x"],
            &["vmctl: iso image specified multiple times"],
        ),
        (
            &["-r", "/missing.iso", "x"],
            &["vmctl: invalid iso image path: No such file or directory"],
        ),
        (
            &["-p", "1", "-p", "2", "x"],
            &["vmctl: cpu count specified multiple times"],
        ),
        (
            &["-p", "65", "x"],
            &[
                "vmctl: cpu count is too large: 65",
                "vmctl: invalid cpu count: 65",
            ],
        ),
        (
            &["-t", "a", "-t", "b", "x"],
            &["vmctl: instance specified multiple times"],
        ),
        (
            &["--initrd", "/i", "--initrd", "/j", "-b", "/k", "x"],
            &["vmctl: initrd specified multiple times"],
        ),
        (
            &["--initrd", "/missing/i", "x"],
            &["vmctl: invalid initrd path: No such file or directory"],
        ),
        (
            &["--initrd", "/i", "x"],
            &["vmctl: --initrd and --cmdline need a kernel (-b)"],
        ),
        (
            &["--cmdline", "quiet", "x"],
            &["vmctl: --initrd and --cmdline need a kernel (-b)"],
        ),
        (
            &["--cmdline", "a", "--cmdline", "b", "x"],
            &["vmctl: kernel command line specified multiple times"],
        ),
        (&["-1", "x"], &["vmctl: unknown option -- 1"]),
        (
            &["--initrd"],
            &["vmctl: option requires an argument -- initrd"],
        ),
        (&["--bogus", "x"], &["vmctl: unknown option -- bogus"]),
        (&["x", "y"], &[]),
        (&[], &[]),
        (&["-d"], &["vmctl: option requires an argument -- d"]),
        (
            &["bad/name"],
            &["vmctl: invalid vm name", "vmctl: invalid id: bad/name"],
        ),
    ];
    let usage = command_usage("start");
    for (words, expected) in cases {
        let mut all = vec!["start"];
        all.extend_from_slice(words);
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        // getopt failures and operand count errors end with the usage.
        if expected.is_empty() || expected[0].contains("option") {
            expected.push(usage.clone());
        }
        assert_eq!(err(&all), expected, "{words:?}");
    }
    let long_t = "t".repeat(64);
    assert_eq!(
        err(&["start", "-t", &long_t, "x"]),
        [
            "vmctl: instance vm name too long".to_string(),
            format!("vmctl: invalid name: {long_t}")
        ]
    );
    let long_cmdline = "c".repeat(MAX_CMDLINE_LEN + 1);
    assert_eq!(
        err(&["start", "--cmdline", &long_cmdline, "x"]),
        ["vmctl: kernel command line too long (limit is 2047 bytes)"]
    );
    let inv = parse_words(&["start", "-m", "1000001K", "-d", "/d", "x"]).unwrap();
    assert_eq!(inv.warnings, ["vmctl: memory size rounded to 976M"]);
    assert_eq!(
        usage,
        "usage:\tvmctl [-v] start [-cL] [-B device] [-b path] [-d disk] [-i count]\n\
         \t\t[-m size] [-n switch] [-p cpus] [-r path] [-t name]\n\
         \t\t[--initrd path] [--cmdline string] id | name"
    );
}

#[test]
fn warnings_before_a_failure_are_kept() {
    assert_eq!(
        err(&["start", "-m", "1500K", "-B", "tape", "x"]),
        [
            "vmctl: memory size rounded to 1.0M",
            "vmctl: unknown boot device tape"
        ]
    );
}

#[test]
fn disk_prefixes() {
    assert_eq!(disk_prefix("raw:/a"), (Some(DiskFormat::Raw), "/a"));
    assert_eq!(disk_prefix("qcow2:/a"), (Some(DiskFormat::Qcow2), "/a"));
    assert_eq!(disk_prefix("/a.qcow2"), (None, "/a.qcow2"));
}
