//! Disk benchmark: 4 KiB random read/write and sequential read through our raw and our qcow2
//! backend on the same data, and our qcow2 against `qemu-img bench` on the same image.
//!
//! Everything runs on a fully allocated image in the page cache, so it measures the backends'
//! own overhead (mapping lookups, copies, syscalls), not the disk. Raw and qcow2 runs of a
//! test alternate, so a change in the machine's load hits both sides alike. A last random-read
//! test reads through a qcow2 overlay whose every cluster is still in its base (the path of a
//! fresh instance disk). `qemu-img bench` only does sequential I/O, so that comparison is
//! 4 KiB sequential reads and writes at queue depth 1, which is what our synchronous backend
//! does too.
//!
//! Usage: bench-disk [RUNS]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench_common::Rng;
use disk::{open_path, BlockBackend, Format};

/// Virtual size of the test image: small enough to stay in the page cache.
const IMAGE_SIZE: u64 = 256 << 20;
/// Request size of the random and the qemu-img comparison tests.
const BLOCK: usize = 4096;
/// Request size of the sequential-read test.
const SEQ_BLOCK: usize = 64 << 10;
/// Requests per run of the 4 KiB tests.
const OPS: u64 = 50_000;
/// Requests per run of the random-write test: 4 KiB writes into cached pages are slow on
/// ext4 (large folios), so fewer keep the whole benchmark under a minute.
const WRITE_OPS: u64 = 20_000;
/// Runs per test unless given on the command line.
const DEFAULT_RUNS: usize = 5;

/// One test's run times.
struct Sample {
    name: String,
    times: Vec<Duration>,
}

impl Sample {
    fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort();
        t[t.len() / 2]
    }

    fn print(&self, ops: u64) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let min = self.times.iter().min().expect("runs > 0");
        let max = self.times.iter().max().expect("runs > 0");
        let iops = ops as f64 / self.median().as_secs_f64();
        println!(
            "{:<34} min {:8.2} ms  median {:8.2} ms  max {:8.2} ms  ({:.0} ops/s)",
            self.name,
            ms(*min),
            ms(self.median()),
            ms(*max),
            iops
        );
    }
}

fn ratio(label: &str, a: &Sample, b: &Sample) {
    let min = |s: &Sample| s.times.iter().min().expect("runs > 0").as_secs_f64();
    println!(
        "  ratio of medians {label}: {:.3} (of minimums: {:.3})",
        a.median().as_secs_f64() / b.median().as_secs_f64(),
        min(a) / min(b)
    );
}

fn run_cmd(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes back dirty pages of `path` (not timed): a write to a page under writeback waits
/// for it, so data left dirty by the previous test would slow the next one down.
fn settle(path: &Path) {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .expect("sync image");
}

/// Drops `path` from the page cache and reads it back sequentially, so both images' pages
/// are cached the same way. How a file was written shapes its page-cache folios (one huge
/// write() gives large folios that make later 4 KiB writes several times slower on ext4),
/// which would otherwise measure the writer of the file instead of the backend.
fn recache(path: &Path) {
    let mut f = std::fs::File::open(path).expect("open image");
    f.sync_all().expect("sync image");
    // SAFETY: posix_fadvise only takes integers; the fd is open.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
    std::io::copy(&mut f, &mut std::io::sink()).expect("read image");
}

/// One run of `body` on a freshly opened backend (opening is not timed).
fn time_once(
    path: &Path,
    format: Format,
    writable: bool,
    body: &impl Fn(&mut dyn BlockBackend),
) -> Duration {
    settle(path);
    let mut d = open_path(path, Some(format), writable).expect("open image");
    let start = Instant::now();
    body(d.as_mut());
    start.elapsed()
}

/// One side of a comparison: the row's name, the image, its format.
struct Side<'a> {
    name: String,
    path: &'a Path,
    format: Format,
}

/// Our raw backend over `raw` against our qcow2 backend over `qcow2`, in rows named `test`.
fn raw_vs<'a>(test: &str, raw: &'a Path, qcow2: (&str, &'a Path)) -> [Side<'a>; 2] {
    [
        Side {
            name: format!("{test:<13} ours raw"),
            path: raw,
            format: Format::Raw,
        },
        Side {
            name: format!("{test:<13} ours {}", qcow2.0),
            path: qcow2.1,
            format: Format::Qcow2,
        },
    ]
}

/// Times `runs` runs of `body` on each of two backends, alternating.
fn time_pair(
    sides: [Side; 2],
    runs: usize,
    writable: bool,
    body: impl Fn(&mut dyn BlockBackend),
) -> (Sample, Sample) {
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (side, times) in sides.iter().zip(&mut times) {
            times.push(time_once(side.path, side.format, writable, &body));
        }
    }
    let [a, b] = sides.map(|side| side.name);
    let [ta, tb] = times;
    (Sample { name: a, times: ta }, Sample { name: b, times: tb })
}

/// Times `runs` runs of `body` on our qcow2 backend over `path`.
fn time_qcow2(
    name: &str,
    path: &Path,
    runs: usize,
    writable: bool,
    body: impl Fn(&mut dyn BlockBackend),
) -> Sample {
    Sample {
        name: name.into(),
        times: (0..runs)
            .map(|_| time_once(path, Format::Qcow2, writable, &body))
            .collect(),
    }
}

fn random_read(d: &mut dyn BlockBackend) {
    let mut rng = Rng(1);
    let mut buf = vec![0u8; BLOCK];
    let blocks = d.size() / BLOCK as u64;
    for _ in 0..OPS {
        let off = (rng.next_u64() % blocks) * BLOCK as u64;
        d.read_at(&mut buf, off).expect("read");
    }
}

fn random_write(d: &mut dyn BlockBackend) {
    let mut rng = Rng(2);
    let buf = vec![0x5au8; BLOCK];
    let blocks = d.size() / BLOCK as u64;
    for _ in 0..WRITE_OPS {
        let off = (rng.next_u64() % blocks) * BLOCK as u64;
        d.write_at(&buf, off).expect("write");
    }
}

fn sequential_read(d: &mut dyn BlockBackend) {
    let mut buf = vec![0u8; SEQ_BLOCK];
    for off in (0..d.size()).step_by(SEQ_BLOCK) {
        d.read_at(&mut buf, off).expect("read");
    }
}

/// Like `qemu-img bench -s 4096`: OPS requests at increasing offsets, wrapping at the end.
fn sequential_4k(d: &mut dyn BlockBackend, write: bool) {
    let mut buf = vec![0x5au8; BLOCK];
    let size = d.size();
    for i in 0..OPS {
        let off = (i * BLOCK as u64) % size;
        if write {
            d.write_at(&buf, off).expect("write");
        } else {
            d.read_at(&mut buf, off).expect("read");
        }
    }
}

/// Runs `qemu-img bench` `runs` times; takes the time it reports for the I/O itself.
fn time_qemu(name: &str, image: &Path, runs: usize, write: bool) -> Sample {
    let count = OPS.to_string();
    let size = BLOCK.to_string();
    let mut args = vec![
        "bench",
        "-f",
        "qcow2",
        "-c",
        &count,
        "-d",
        "1",
        "-s",
        &size,
        "-t",
        "writeback",
    ];
    if write {
        args.push("-w");
    }
    let image = image.to_str().expect("UTF-8 temp path");
    args.push(image);
    let times = (0..runs)
        .map(|_| {
            settle(Path::new(image));
            let out = run_cmd("qemu-img", &args);
            let secs: f64 = out
                .split("Run completed in ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected qemu-img bench output: {out}"));
            Duration::from_secs_f64(secs)
        })
        .collect();
    Sample {
        name: name.into(),
        times,
    }
}

fn main() {
    // No short mode: `--quick` takes the same number of runs.
    let (_, runs) = bench_common::args("bench-disk", DEFAULT_RUNS, DEFAULT_RUNS);
    let dir: PathBuf = std::env::temp_dir().join(format!("bench-disk.{}", std::process::id()));
    std::fs::create_dir(&dir).expect("temp dir");
    let raw = dir.join("data.raw");
    let qcow2 = dir.join("data.qcow2");

    // Random, incompressible data everywhere: every cluster allocated in both images.
    let mut rng = Rng(42);
    let mut out = std::io::BufWriter::with_capacity(
        SEQ_BLOCK,
        std::fs::File::create(&raw).expect("create raw image"),
    );
    for _ in 0..IMAGE_SIZE / 8 {
        out.write_all(&rng.next_u64().to_le_bytes())
            .expect("write raw image");
    }
    out.flush().expect("write raw image");
    drop(out);
    let (raw_s, qcow2_s) = (raw.to_str().unwrap(), qcow2.to_str().unwrap());
    run_cmd("qemu-img", &["convert", "-O", "qcow2", raw_s, qcow2_s]);
    recache(&raw);
    recache(&qcow2);
    println!(
        "image: {} MiB, fully allocated; qcow2 from qemu-img convert (64 KiB clusters); {runs} runs; {OPS} ops per 4 KiB run ({WRITE_OPS} for randwrite)",
        IMAGE_SIZE >> 20
    );

    let ours = |test| raw_vs(test, &raw, ("qcow2", &qcow2));
    let (rr_raw, rr_q) = time_pair(ours("randread 4k"), runs, false, random_read);
    rr_raw.print(OPS);
    rr_q.print(OPS);
    ratio("qcow2/raw", &rr_q, &rr_raw);

    let (rw_raw, rw_q) = time_pair(ours("randwrite 4k"), runs, true, random_write);
    rw_raw.print(WRITE_OPS);
    rw_q.print(WRITE_OPS);
    ratio("qcow2/raw", &rw_q, &rw_raw);

    let seq_ops = IMAGE_SIZE / SEQ_BLOCK as u64;
    let (sr_raw, sr_q) = time_pair(ours("seqread 64k"), runs, false, sequential_read);
    sr_raw.print(seq_ops);
    sr_q.print(seq_ops);
    ratio("qcow2/raw", &sr_q, &sr_raw);

    let sq_ours = time_qcow2("seqread 4k    ours qcow2", &qcow2, runs, false, |d| {
        sequential_4k(d, false)
    });
    let sq_qemu = time_qemu("seqread 4k    qemu-img bench", &qcow2, runs, false);
    sq_ours.print(OPS);
    sq_qemu.print(OPS);
    ratio("ours/qemu-img", &sq_ours, &sq_qemu);

    let sw_ours = time_qcow2("seqwrite 4k   ours qcow2", &qcow2, runs, true, |d| {
        sequential_4k(d, true)
    });
    let sw_qemu = time_qemu("seqwrite 4k   qemu-img bench", &qcow2, runs, true);
    sw_ours.print(OPS);
    sw_qemu.print(OPS);
    ratio("ours/qemu-img", &sw_ours, &sw_qemu);

    // Every read goes to the base: the overlay's mapping lookup, then the base's.
    let overlay = dir.join("overlay.qcow2");
    run_cmd(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "data.qcow2",
            overlay.to_str().unwrap(),
        ],
    );
    let (ro_raw, ro_q) = time_pair(
        raw_vs("randread 4k", &raw, ("qcow2 overlay", &overlay)),
        runs,
        false,
        random_read,
    );
    ro_raw.print(OPS);
    ro_q.print(OPS);
    ratio("overlay/raw", &ro_q, &ro_raw);

    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}
