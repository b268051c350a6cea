//! `vmctl send` and `vmctl receive` through the whole daemon on the real /dev/kvm (issue 8
//! items 2 and 5; spec §4.11, F-CTL-12, F-LIFE-22): a counting guest is sent to a file and
//! received under a new name and counts on from where it stopped; the tiny Linux guest is
//! sent in the middle of its boot and finishes booting after the receive; streams with a
//! tampered header, a damaged definition, cut short or made of garbage are refused with a
//! message naming the problem and leave no VM behind; a send to a stream that cannot be
//! written fails and the VM runs on; other users may do neither.

mod common;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    linux_guest_dir, linux_vm_block, skip_unless_root, test_user, text, Console, Daemon, GROUP,
    OTHER,
};
use testkit::{guest, Guest};

/// Bound on the daemon's steps and on the counting guest's output (longer than
/// `common::WAIT`, as these tests always had).
const WAIT: Duration = Duration::from_secs(30);
/// The Linux guest's whole boot on the emulated ring 0 of this machine, with room to spare.
const LINUX_TIMEOUT: Duration = Duration::from_secs(300);
/// When the Linux guest is sent: well into its boot, well before `GUEST-BOOT-OK` (30 s and
/// more on these hosts).
const LINUX_SEND_AFTER: Duration = Duration::from_secs(10);
/// Counts a received guest must print beyond where the sent one stopped.
const MORE_COUNTS: u64 = 5;

/// vmd on the host, each of its steps bounded by [`WAIT`].
fn start(config: &str) -> Daemon {
    Daemon::start_with(None, config, WAIT)
}

/// What only these tests do with the daemon.
impl Daemon {
    /// `vmctl send vm > file`.
    fn send_to_file(&self, vm: &str, file: &Path) -> Output {
        let out = File::create(file).unwrap();
        self.vmctl_io(None, &["send", vm], Stdio::null(), Stdio::from(out))
    }

    /// `vmctl receive name < file`.
    fn receive_from_file(&self, name: &str, file: &Path) -> Output {
        let input = File::open(file).unwrap();
        self.vmctl_io(None, &["receive", name], Stdio::from(input), Stdio::piped())
    }

    /// Start an ad-hoc counting guest and attach to its console.
    fn start_counter(&self, name: &str) -> Console {
        let pvh = guest(Guest::Pvh);
        let start = self.vmctl(&[
            "start",
            "-b",
            pvh.to_str().unwrap(),
            "-m",
            "32M",
            "--cmdline",
            "count",
            name,
        ]);
        assert!(start.status.success(), "{}", text(&start));
        self.console(name)
    }
}

/// The numbers of the complete `COUNT n` lines.
fn counts(text: &str) -> Vec<u64> {
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| l.strip_prefix("COUNT "))
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad COUNT {n:?}"))
        })
        .collect()
}

fn last_count(text: &str) -> Option<u64> {
    counts(text).last().copied()
}

/// A pipe whose read end is already closed: writes fail with EPIPE.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we own from here on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds from pipe2, each owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn sent_counting_guest_continues_after_receive() {
    if skip_unless_root() {
        return;
    }
    let t0 = Instant::now();
    let d = start("");
    let sender = d.start_counter("counter");
    sender.wait("COUNT 5", WAIT, |t| last_count(t) >= Some(5));

    let stream = d.path("counter.stream");
    let send = d.send_to_file("counter", &stream);
    assert!(send.status.success(), "{}\n{}", text(&send), d.log());
    assert_eq!(
        String::from_utf8_lossy(&send.stderr),
        "vmctl: sent vm 1 successfully\n"
    );
    // The ad-hoc VM stopped once its stream was complete, and is gone.
    assert!(d.row("counter").is_none(), "{}", d.log());
    let before = sender.finish(WAIT);
    assert_eq!(before.matches("BOOT ").count(), 1, "{before}");
    let last = last_count(&before).unwrap();
    // A snapshot file: the whole RAM, its zero pages holes that take no space.
    let meta = std::fs::metadata(&stream).unwrap();
    let (size, stored) = (meta.len(), meta.blocks() * 512);
    assert!(
        size > 32 << 20 && stored < 8 << 20,
        "a 32 MiB guest of mostly zero pages: {size} bytes, {stored} stored"
    );

    let receive = d.receive_from_file("copy", &stream);
    assert!(receive.status.success(), "{}\n{}", text(&receive), d.log());
    assert!(
        text(&receive).contains("vmctl: started vm 2 successfully, tty /dev/pts/"),
        "{}",
        text(&receive)
    );
    let receiver = d.console("copy");
    assert_eq!(d.row("copy").unwrap()[6], "root", "a received VM is root's");
    let after = receiver.wait("more counts", WAIT, |t| {
        last_count(&format!("{before}{t}")) >= Some(last + MORE_COUNTS)
    });
    assert!(
        !after.contains("BOOT"),
        "the received guest booted again:\n{after}"
    );
    let all = counts(&format!("{before}{after}"));
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(
        all, expected,
        "counting goes on from where it stopped, without a gap or a repeat"
    );
    assert!(d.log().contains("receiving vm \"counter\" as \"copy\""));

    let stop = d.vmctl(&["stop", "-f", "-w", "copy"]);
    assert!(stop.status.success(), "{}", text(&stop));
    eprintln!(
        "sent_counting_guest_continues_after_receive: {:?}",
        t0.elapsed()
    );
}

#[test]
fn linux_guest_sent_mid_boot_finishes_booting() {
    if skip_unless_root() {
        return;
    }
    let Some(kit) = linux_guest_dir() else {
        return;
    };
    let t0 = Instant::now();
    let conf = linux_vm_block("lx", &kit, &kit.join("initramfs.cpio"), "");
    let d = start(&conf);
    let sender = d.console("lx");
    std::thread::sleep(LINUX_SEND_AFTER);
    assert!(
        !sender.text().contains("GUEST-BOOT-OK"),
        "the guest booted before it could be sent mid-boot:\n{}",
        sender.text()
    );

    let stream = d.path("lx.stream");
    let send = d.send_to_file("lx", &stream);
    assert!(send.status.success(), "{}\n{}", text(&send), d.log());
    let before = sender.finish(WAIT);
    assert!(!before.contains("GUEST-BOOT-OK"), "{before}");
    // A configured VM stays, stopped.
    assert_eq!(d.state("lx").as_deref(), Some("stopped"));
    eprintln!(
        "sent after {:?}: {} bytes",
        t0.elapsed(),
        std::fs::metadata(&stream).unwrap().len()
    );

    let receive = d.receive_from_file("lx2", &stream);
    assert!(receive.status.success(), "{}\n{}", text(&receive), d.log());
    let receiver = d.console("lx2");
    let after = receiver.wait("GUEST-DONE", LINUX_TIMEOUT, |t| {
        t.split("GUEST-DONE")
            .nth(1)
            .is_some_and(|r| r.contains('\n'))
    });
    assert!(after.contains("GUEST-BOOT-OK"), "{after}");
    // The guest powers off at the end of /init: the received ad-hoc VM is gone.
    d.wait_until(|| d.row("lx2").is_none(), "the received guest to power off");
    assert!(d.log().contains("ended: Poweroff"), "{}", d.log());
    eprintln!(
        "linux_guest_sent_mid_boot_finishes_booting: {:?}",
        t0.elapsed()
    );
}

/// One refused stream: its bytes, and what vmctl's message and vmd's log must name.
struct Bad {
    name: &'static str,
    bytes: Vec<u8>,
    says: &'static str,
    errno_text: &'static str,
}

/// Offsets in a stream (docs/snapshot.md): the version byte, leaf 7's EBX (the third CPUID
/// record), and the length of the VM definition after the 136-byte header.
const VERSION_AT: usize = 15;
const LEAF7_EBX_AT: usize = 16 + 2 * 24 + 12;
const DEFINITION_LEN_AT: usize = 136 + 8;

fn bad_streams(good: &[u8]) -> Vec<Bad> {
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.to_vec();
        f(&mut b);
        b
    };
    // xorshift: garbage that is the same on every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..64 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    vec![
        Bad {
            name: "signature",
            bytes: with(&|b| b[0] ^= 0x20),
            says: "not a VM snapshot stream",
            errno_text: "No such file or directory",
        },
        Bad {
            name: "version",
            bytes: with(&|b| b[VERSION_AT] += 1),
            says: "this vmd reads version",
            errno_text: "No such file or directory",
        },
        Bad {
            name: "cpuid",
            bytes: with(&|b| b[LEAF7_EBX_AT..LEAF7_EBX_AT + 4].fill(0xff)),
            says: "incompatible CPU: CPUID leaf 0x7 EBX",
            errno_text: "No such file or directory",
        },
        Bad {
            name: "definition",
            bytes: with(&|b| b[DEFINITION_LEN_AT..DEFINITION_LEN_AT + 4].fill(0xff)),
            says: "over the limit",
            errno_text: "Invalid argument",
        },
        Bad {
            name: "cut-in-header",
            bytes: good[..100].to_vec(),
            says: "truncated in the snapshot header",
            errno_text: "Invalid argument",
        },
        Bad {
            name: "cut-in-half",
            bytes: good[..good.len() / 2].to_vec(),
            says: "truncated",
            errno_text: "Invalid argument",
        },
        Bad {
            name: "empty",
            bytes: Vec::new(),
            says: "truncated in the snapshot header",
            errno_text: "Invalid argument",
        },
        Bad {
            name: "garbage",
            bytes: garbage,
            says: "not a VM snapshot stream",
            errno_text: "No such file or directory",
        },
    ]
}

#[test]
fn bad_streams_are_refused_and_the_sender_keeps_running() {
    if skip_unless_root() {
        return;
    }
    let t0 = Instant::now();
    let d = start("");
    let keep = d.start_counter("keep");
    keep.wait("COUNT 2", WAIT, |t| last_count(t) >= Some(2));

    // Sends to streams that cannot be written fail, and the VM counts on.
    let readonly = d.path("readonly");
    std::fs::write(&readonly, b"").unwrap();
    let sinks: [(&str, Stdio, &str); 3] = [
        (
            "/dev/full",
            Stdio::from(File::options().write(true).open("/dev/full").unwrap()),
            "No space left on device",
        ),
        (
            "a read-only fd",
            Stdio::from(File::open(&readonly).unwrap()),
            "Bad file descriptor",
        ),
        ("a closed pipe", Stdio::from(closed_pipe()), "Broken pipe"),
    ];
    for (what, sink, errno_text) in sinks {
        let out = d.vmctl_io(None, &["send", "keep"], Stdio::null(), sink);
        assert!(!out.status.success(), "send to {what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("send to {what}: {}", err.trim_end());
        assert!(
            err.contains(&format!("vmctl: send vm command failed: {errno_text}"))
                && err.contains("writing the snapshot stream"),
            "send to {what}: {err}"
        );
        assert_eq!(d.state("keep").as_deref(), Some("running"), "after {what}");
        let n = last_count(&keep.text()).unwrap();
        keep.wait("counting on", WAIT, |t| last_count(t) >= Some(n + 2));
    }
    assert!(
        d.log().contains("send failed, the VM runs on"),
        "{}",
        d.log()
    );
    assert_eq!(std::fs::metadata(&readonly).unwrap().len(), 0);

    // A good stream, from a second VM.
    let src = d.start_counter("src");
    src.wait("COUNT 2", WAIT, |t| last_count(t) >= Some(2));
    let good_path = d.path("good.stream");
    let send = d.send_to_file("src", &good_path);
    assert!(send.status.success(), "{}\n{}", text(&send), d.log());
    let before = src.finish(WAIT);
    let good = std::fs::read(&good_path).unwrap();

    for bad in bad_streams(&good) {
        let path = d.path(&format!("{}.stream", bad.name));
        std::fs::write(&path, &bad.bytes).unwrap();
        let vm = format!("bad-{}", bad.name);
        let out = d.receive_from_file(&vm, &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {err}", bad.name);
        eprintln!("{}: {}", bad.name, err.trim_end());
        assert!(
            err.contains(&format!(
                "vmctl: receive vm command failed: {}",
                bad.errno_text
            )) && err.contains(bad.says),
            "{}: {err}\n{}",
            bad.name,
            d.log()
        );
        assert!(d.log().contains(bad.says), "{}: the log names it", bad.name);
        assert!(d.row(&vm).is_none(), "{}: a VM was left behind", bad.name);
    }
    // A name that is taken is refused before the stream is read.
    let taken = d.receive_from_file("keep", &good_path);
    assert!(
        text(&taken).contains("receive vm command failed: Operation already in progress"),
        "{}",
        text(&taken)
    );

    // vmd and the other VM carry on, and the good stream still restores.
    assert_eq!(d.state("keep").as_deref(), Some("running"));
    let n = last_count(&keep.text()).unwrap();
    keep.wait("counting on", WAIT, |t| last_count(t) >= Some(n + 2));
    let receive = d.receive_from_file("good", &good_path);
    assert!(receive.status.success(), "{}\n{}", text(&receive), d.log());
    let received = d.console("good");
    let last = last_count(&before).unwrap();
    received.wait("more counts", WAIT, |t| {
        last_count(&format!("{before}{t}")) >= Some(last + 2)
    });
    eprintln!(
        "bad_streams_are_refused_and_the_sender_keeps_running: {:?}",
        t0.elapsed()
    );
}

#[test]
fn non_root_users_cannot_send_or_receive() {
    if skip_unless_root() {
        return;
    }
    let user = Some(test_user(OTHER));
    let d = start(&format!("socket owner root:{GROUP}\n"));
    let vm = d.start_counter("mine");
    vm.wait("COUNT 1", WAIT, |t| last_count(t) >= Some(1));

    let stream = d.path("stolen.stream");
    let out = d.vmctl_io(
        user,
        &["send", "mine"],
        Stdio::null(),
        Stdio::from(File::create(&stream).unwrap()),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("vmctl: send vm command failed: Operation not permitted"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::metadata(&stream).unwrap().len(), 0);
    assert_eq!(d.state("mine").as_deref(), Some("running"));

    let out = d.vmctl_io(
        user,
        &["receive", "theirs"],
        Stdio::from(File::open(&stream).unwrap()),
        Stdio::piped(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("vmctl: receive vm command failed: Operation not permitted"),
        "{}",
        text(&out)
    );
    assert!(d.row("theirs").is_none());
    assert_eq!(d.log().matches("denied request").count(), 2, "{}", d.log());
}
