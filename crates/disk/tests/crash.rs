//! A process writing through the qcow2 backend is SIGKILLed mid-loop; the image must still
//! pass `qemu-img check` (leaked clusters allowed: QEMU calls them harmless; corruption not).

mod common;

use common::{run, s, Rng};
use disk::open_path;
use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Environment variable that turns [`crash_child`] into the writer.
const CHILD_ENV: &str = "DISK_CRASH_CHILD_IMAGE";
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
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2", s(image)])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == CHECK_LEAKS_ONLY,
        "round {round}: qemu-img check exit {code}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "round {round} {}: qemu-img check exit {code}",
        image.display()
    );
    // And we can still open and read all of it.
    let mut d = open_path(image, None, false).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..SIZE).step_by(buf.len()) {
        d.read_at(&mut buf, off).unwrap();
    }
}

#[test]
fn killed_writer_leaves_a_consistent_image() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top.qcow2");
    disk::create_qcow2(&top, SIZE).unwrap();
    let base = dir.path().join("base.qcow2");
    let v2 = dir.path().join("v2.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", s(&base), &SIZE.to_string()],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 5 0 32M", s(&base)],
    );
    let overlay = dir.path().join("overlay.qcow2");
    disk::create_overlay(&overlay, "base.qcow2", None).unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10,cluster_size=4k",
            s(&v2),
            &SIZE.to_string(),
        ],
    );
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
