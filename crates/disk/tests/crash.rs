//! A process writing through the qcow2 backend is SIGKILLed, mid-loop or right after a write
//! returned; the image must still pass `qemu-img check` (leaked clusters allowed: QEMU calls them
//! harmless; corruption not).

mod common;

use common::{run, s, Rng};
use disk::open_path;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Environment variable that turns [`crash_child`] into the writer.
const CHILD_ENV: &str = "DISK_CRASH_CHILD_IMAGE";
/// Environment variable that turns [`ack_child`] into the writer.
const ACK_CHILD_ENV: &str = "DISK_CRASH_ACK_CHILD_IMAGE";
/// Distance between the writes of [`ack_child`]: each lands in clusters not yet allocated, and
/// with 4 KiB clusters (2 MiB per L2 table) most also need a new L2 table.
const ACK_STRIDE: u64 = 3 << 20;
/// Virtual size of the images under test.
const SIZE: u64 = 64 << 20;
/// `qemu-img check` exit code for "leaked clusters only".
const CHECK_LEAKS_ONLY: i32 = 3;

/// Not a test of its own: when run by [`killed_writer_leaves_a_consistent_image`] with
/// `CHILD_ENV` set it writes random clusters until killed.
#[test]
fn crash_child() {
    let Ok(image) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut d = open_path(Path::new(&image), None, true).unwrap();
    let mut rng = Rng(std::process::id() as u64 | 1);
    let mut buf = vec![0u8; 200_000];
    println!("writing");
    loop {
        let len = 1 + rng.below(buf.len() as u64);
        let off = rng.below(SIZE - len);
        match rng.below(20) {
            0 => d.flush().unwrap(),
            1 => d.discard(off, len).unwrap(),
            2 => d.write_zeroes(off, len).unwrap(),
            _ => {
                rng.fill(&mut buf[..len as usize]);
                d.write_at(&buf[..len as usize], off).unwrap();
            }
        }
    }
}

/// Not a test of its own: when run by [`killed_after_acknowledged_write`] with `ACK_CHILD_ENV`
/// set it writes fresh clusters one at a time, says "acked" after each write returned, and waits
/// for a line on stdin before the next one, so the parent can kill it at a known point.
#[test]
fn ack_child() {
    let Ok(image) = std::env::var(ACK_CHILD_ENV) else {
        return;
    };
    let mut d = open_path(Path::new(&image), None, true).unwrap();
    let mut line = String::new();
    for i in 0..SIZE / ACK_STRIDE {
        // Unaligned and not cluster-sized: copy-on-write of head and tail too.
        let data = format!("write {i} through the top image");
        d.write_at(data.as_bytes(), i * ACK_STRIDE + 1000).unwrap();
        println!("acked write {i}");
        line.clear();
        if std::io::stdin().read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    // Like a killed process: no destructor, no flush.
    std::process::exit(0);
}

/// Runs [`ack_child`] on `image` and SIGKILLs it once it has acknowledged `writes` writes.
fn kill_after_acks(image: &Path, writes: u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ack_child", "--nocapture", "--test-threads=1"])
        .env(ACK_CHILD_ENV, image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut acks = 0;
    let mut line = String::new();
    while acks < writes {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "writer exited early");
        // Not at the line start: the harness's "test ack_child ... " has no newline.
        if line.contains("acked write") {
            acks += 1;
            if acks < writes {
                stdin.write_all(b"next\n").unwrap();
            }
        }
    }
    // The child now waits on stdin, right after its last write returned.
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
}

/// `qemu-img check` accepts `image` (leaks allowed), and all of it can be read back.
fn assert_consistent(image: &Path, what: &str) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", s(image)])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == CHECK_LEAKS_ONLY,
        "{what}: qemu-img check exit {code}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what} {}: qemu-img check exit {code}", image.display());
    let mut d = open_path(image, None, false).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..SIZE).step_by(buf.len()) {
        d.read_at(&mut buf, off).unwrap();
    }
}

fn kill_writer_and_check(image: &Path, round: u64) {
    let mtime = || std::fs::metadata(image).unwrap().modified().unwrap();
    let before = mtime();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, image)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the image is open and the loop runs.
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    while !line.contains("writing") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "writer exited early");
    }
    // Kill at a different point of the loop each round.
    std::thread::sleep(Duration::from_millis(300 + 170 * round));
    assert!(child.try_wait().unwrap().is_none(), "writer died by itself");
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert_ne!(mtime(), before, "round {round}: the writer wrote nothing");
    assert_consistent(image, &format!("round {round}"));
}

/// A qcow2 image made by qemu-img whose first 32 MiB hold the byte 5: the overlays' base.
fn make_base(path: &Path) {
    run(
        "qemu-img",
        &["create", "-f", "qcow2", s(path), &SIZE.to_string()],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 5 0 32M", s(path)],
    );
}

/// A qcow2 version 2 image (compat 0.10) with 4 KiB clusters, made by qemu-img.
fn make_v2(path: &Path) {
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10,cluster_size=4k",
            s(path),
            &SIZE.to_string(),
        ],
    );
}

#[test]
fn killed_writer_leaves_a_consistent_image() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top.qcow2");
    disk::create_qcow2(&top, SIZE).unwrap();
    let base = dir.path().join("base.qcow2");
    let v2 = dir.path().join("v2.qcow2");
    make_base(&base);
    let overlay = dir.path().join("overlay.qcow2");
    disk::create_overlay(&overlay, "base.qcow2", None).unwrap();
    make_v2(&v2);
    let base_before = std::fs::read(&base).unwrap();
    for round in 0..3 {
        for image in [&top, &overlay, &v2] {
            kill_writer_and_check(image, round);
        }
    }
    assert!(
        std::fs::read(&base).unwrap() == base_before,
        "base modified"
    );
}

/// A write that allocates (a data cluster, and for the first write into an L2 table's range the
/// L2 table) is acknowledged and the process then dies: the refcounts of what that write
/// allocated must already be in the file with the L2/L1 entries that point there. (imago keeps
/// refcount blocks in a cache; an L1 entry on disk whose L2 table's refcount was still cached
/// was `ERROR cluster 4 refcount=0 reference=1`.)
#[test]
fn killed_after_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    make_base(&base);
    for writes in [1, 2, 5] {
        let top = dir.path().join(format!("top{writes}.qcow2"));
        disk::create_qcow2(&top, SIZE).unwrap();
        let overlay = dir.path().join(format!("overlay{writes}.qcow2"));
        disk::create_overlay(&overlay, "base.qcow2", None).unwrap();
        let v2 = dir.path().join(format!("v2-{writes}.qcow2"));
        make_v2(&v2);
        for image in [&top, &overlay, &v2] {
            kill_after_acks(image, writes);
            assert_consistent(image, &format!("killed after {writes} writes"));
        }
    }
}
