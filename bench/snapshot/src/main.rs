//! `bench/snapshot`: the snapshot stream's speed (issue 8 item 6), in-process on /dev/kvm
//! with the PVH test guest, 1 vCPU:
//!
//! - send (`VmHandle::snapshot`) of a 256 MiB and a 2 GiB guest to /dev/null, to a file as a
//!   stream, and as a snapshot file (`VmHandle::snapshot_file`: RAM page-aligned, zero pages
//!   as holes); receive (`Vm::restore`) from memory and from the stream file, and
//!   `Vm::restore_file` of the snapshot file (mapped, not read). Each for an idle guest (the
//!   counting guest: RAM almost all zero pages, which the stream leaves out) and a full one
//!   (the same guest restored from a stream whose RAM from 16 MiB up is filled with
//!   non-zero data, so that every page is sent);
//! - resume from a snapshot file: `Vm::restore_file` until the guest's first console byte.
//!   The guest was captured polling COM1 for a line (`input`); the line is waiting in the
//!   console pipe, so the first byte comes as soon as the guest runs;
//! - live migration (`VmHandle::migrate` through a socket pair to `Vm::restore` on another
//!   thread) of an idle 1 GiB counting guest: downtime at the source (pause to the end of the
//!   stream) and until the receiver has the VM ready.
//!
//! Medians of RUNS runs (default 5; `--quick`: 3 runs, 256 MiB only), compared with the
//! targets. No peer VMM: QEMU cannot run on this host's PVM (docs/pvm.md).
//!
//! Usage: bench-snapshot [--quick] [RUNS]   (run it through bench/snapshot/run.sh)

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypervisor::layout::MemoryLayout;
use hypervisor::snapshot::stream::{
    Writer, MAX_MEMORY_CHUNK, TAG_DEVICES, TAG_MACHINE, TAG_MEMORY_END, TAG_VCPU, TAG_VM,
};
use hypervisor::snapshot::{read_stream, Header, Machine, MigrateOptions, StreamSink};
use hypervisor::{boot, BootImage, ExitReason, SnapshotError, Vm, VmConfig, VmHandle};
use testkit::{guest, Guest};

const MIB: u64 = 1 << 20;
const DEFAULT_RUNS: usize = 5;
const QUICK_RUNS: usize = 3;
/// Guest sizes of the send/receive cases.
const SIZES: [u64; 2] = [256 * MIB, 2048 * MIB];
/// Guest size of the live-migration case.
const MIGRATE_MEMORY: u64 = 1024 * MIB;
/// A full guest's RAM is filled from here up (the test guest lives below).
const FILL_FROM: u64 = 16 * MIB;
/// Targets (issue 8 item 6).
const RESUME_TARGET: Duration = Duration::from_millis(10);
const STREAM_TARGET_MBS: f64 = 1000.0;
const DOWNTIME_TARGET: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(60);

/// COM1 output and when its first byte came.
#[derive(Clone, Default)]
struct Console {
    bytes: Arc<Mutex<Vec<u8>>>,
    first: Arc<OnceLock<Instant>>,
}

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.first.get_or_init(Instant::now);
        self.bytes.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str) {
        let start = Instant::now();
        while !self.text().contains(what) {
            assert!(start.elapsed() < DEADLINE, "no {what:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_first(&self) -> Instant {
        let start = Instant::now();
        loop {
            if let Some(&t) = self.first.get() {
                return t;
            }
            assert!(start.elapsed() < DEADLINE, "no console output");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

fn config(memory: u64, cmdline: &str, out: Console, input: Option<OwnedFd>) -> VmConfig {
    let name = guest(Guest::Pvh).display().to_string();
    let bytes = boot::read_image(File::open(guest(Guest::Pvh)).unwrap(), &name).unwrap();
    let (bytes, kind) = boot::classify(bytes, &name).unwrap();
    VmConfig {
        memory,
        vcpus: 1,
        boot: BootImage {
            bytes,
            kind,
            name,
            initrd: None,
            cmdline: cmdline.into(),
        },
        console_out: Box::new(out),
        console_in: input,
        kvm: None,
        disks: Vec::new(),
        cdrom: None,
        nics: Vec::new(),
        boot_device: None,
    }
}

struct Running {
    handle: VmHandle,
    runner: JoinHandle<ExitReason>,
    out: Console,
}

impl Running {
    fn start(vm: Vm, out: Console) -> Self {
        let handle = vm.handle();
        Running {
            handle,
            runner: std::thread::spawn(move || vm.run().unwrap()),
            out,
        }
    }

    fn stop(self) {
        self.handle.force_stop();
        self.runner.join().unwrap();
    }
}

fn boot_guest(memory: u64, cmdline: &str, wait: &str) -> Running {
    let out = Console::default();
    let r = Running::start(
        Vm::new(config(memory, cmdline, out.clone(), None)).unwrap(),
        out,
    );
    r.out.wait_for(wait);
    r
}

fn median(v: Vec<Duration>) -> Duration {
    bench_common::median(&v)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("bench-snapshot.{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn create(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

/// One printed row: what, median time, and throughput of guest RAM and of stream bytes.
struct Row {
    what: String,
    time: Duration,
    ram: u64,
    stream: u64,
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "  {:<44} {:>10} {:>12} {:>12}",
        "", "median", "RAM MB/s", "stream MB/s"
    );
    for r in rows {
        println!(
            "  {:<44} {:>7.2} ms {:>12.0} {:>12.0}",
            r.what,
            ms(r.time),
            mbs(r.ram, r.time),
            mbs(r.stream, r.time)
        );
    }
}

/// Send and receive cases for the running VM `vm` of `memory` bytes; `vm` is stopped after
/// the sends (its memory would only crowd the receives); returns the rows and the stream
/// the receives read.
fn send_receive(memory: u64, vm: Running, runs: usize, dir: &Scratch) -> (Vec<Row>, Vec<u8>) {
    let h = &vm.handle;
    let mut stream = Vec::new();
    h.snapshot(&mut stream).unwrap();
    h.unpause();
    let len = stream.len() as u64;
    let mut rows = Vec::new();
    let mut row = |what: &str, times: Vec<Duration>, stream: u64| {
        rows.push(Row {
            what: what.into(),
            time: median(times),
            ram: memory,
            stream,
        })
    };

    let mut devnull = File::create("/dev/null").unwrap();
    let times = (0..runs)
        .map(|_| {
            let t = Instant::now();
            h.snapshot(&mut devnull).unwrap();
            let d = t.elapsed();
            h.unpause();
            d
        })
        .collect();
    row("send -> /dev/null", times, len);

    let stream_path = dir.file("stream");
    let times = (0..runs)
        .map(|_| {
            let f = create(&stream_path);
            let t = Instant::now();
            let mut w = BufWriter::with_capacity(MAX_MEMORY_CHUNK as usize, &f);
            h.snapshot(&mut w).unwrap();
            drop(w);
            let d = t.elapsed();
            h.unpause();
            d
        })
        .collect();
    row("send -> file, stream", times, len);

    let image_path = dir.file("image");
    let times = (0..runs)
        .map(|_| {
            let f = create(&image_path);
            let t = Instant::now();
            h.snapshot_file(&f, &[]).unwrap();
            let d = t.elapsed();
            h.unpause();
            d
        })
        .collect();
    let image_len = std::fs::metadata(&image_path).unwrap().len();
    row("send -> snapshot file (RAM image, holes)", times, image_len);

    vm.stop();
    let receive = |input: &mut dyn FnMut() -> Result<Vm, SnapshotError>| {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let vm = input().unwrap();
                let d = t.elapsed();
                drop(vm);
                d
            })
            .collect::<Vec<_>>()
    };
    let cfg = || config(memory, "count", Console::default(), None);
    let times = receive(&mut || Vm::restore(cfg(), &mut &stream[..]));
    row("receive <- memory, stream", times, len);
    let times = receive(&mut || {
        let f = File::open(&stream_path).unwrap();
        Vm::restore(
            cfg(),
            &mut BufReader::with_capacity(MAX_MEMORY_CHUNK as usize, f),
        )
    });
    row("receive <- file, stream (read)", times, len);
    let times = receive(&mut || Vm::restore_file(cfg(), &[], &File::open(&image_path).unwrap()));
    row("receive <- snapshot file (mapped)", times, image_len);
    (rows, stream)
}

/// Collects what a stream holds, memory included.
#[derive(Default)]
struct Collect {
    pages: Vec<(u64, Vec<u8>)>,
}

impl StreamSink for Collect {
    fn machine(&mut self, _: &Header, _: &Machine) -> Result<(), SnapshotError> {
        Ok(())
    }
    fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.pages.push((addr, bytes.to_vec()));
        Ok(())
    }
}

/// `stream` with every RAM page from [`FILL_FROM`] up filled with non-zero bytes.
fn filled(stream: &[u8]) -> Vec<u8> {
    let mut sink = Collect::default();
    let c = read_stream(&mut &stream[..], &mut sink).unwrap();
    let layout = MemoryLayout::new(c.machine.memory).unwrap();
    let mut out = Vec::with_capacity(c.machine.memory as usize + stream.len());
    let mut w = Writer::new(&mut out);
    w.header(&c.header).unwrap();
    w.record(TAG_MACHINE, "machine", &c.machine).unwrap();
    for (addr, bytes) in &sink.pages {
        if addr + bytes.len() as u64 > FILL_FROM {
            panic!("the test guest has memory above {FILL_FROM:#x}");
        }
        w.memory(*addr, bytes).unwrap();
    }
    let mut chunk = vec![0u8; MAX_MEMORY_CHUNK as usize];
    for (start, len) in layout.regions(c.machine.bios_copy) {
        let mut at = start.max(FILL_FROM);
        while at < start + len {
            let n = (start + len - at).min(MAX_MEMORY_CHUNK);
            for (i, word) in chunk[..n as usize].chunks_mut(8).enumerate() {
                let v = (at / 8 + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                word.copy_from_slice(&v.to_le_bytes());
            }
            w.memory(at, &chunk[..n as usize]).unwrap();
            at += n;
        }
    }
    w.marker(TAG_MEMORY_END).unwrap();
    for v in &c.vcpus {
        w.record(TAG_VCPU, "vcpu", v).unwrap();
    }
    w.record(TAG_VM, "vm", &c.vm).unwrap();
    w.record(TAG_DEVICES, "devices", &c.devices).unwrap();
    w.finish().unwrap();
    out
}

/// Restore the `input` guest of `memory` bytes from snapshot file `path` with a line waiting
/// on its console; the time until its first console byte.
fn resume_once(memory: u64, path: &Path) -> Duration {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both were just created and are owned by nothing else.
    let (rd, wr) = unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    File::from(wr).write_all(b"go\n").unwrap();
    let out = Console::default();
    let f = File::open(path).unwrap();
    let t = Instant::now();
    let vm = Vm::restore_file(config(memory, "input", out.clone(), Some(rd)), &[], &f).unwrap();
    let running = Running::start(vm, out);
    let first = running.out.wait_first();
    running.out.wait_for("INPUT go");
    running.stop();
    first - t
}

fn resume(memory: u64, runs: usize, dir: &Scratch) -> Duration {
    let vm = boot_guest(memory, "input", "INPUT?");
    let path = dir.file("resume");
    vm.handle.snapshot_file(&create(&path), &[]).unwrap();
    vm.stop();
    median((0..runs).map(|_| resume_once(memory, &path)).collect())
}

struct Live {
    downtime: Duration,
    pause: Duration,
    ready: Duration,
    precopy: Duration,
    passes: Vec<u64>,
}

fn live_migration(runs: usize) -> Result<Vec<Live>, String> {
    let vm = boot_guest(MIGRATE_MEMORY, "count", "COUNT 1\n");
    let mut out = Vec::new();
    for _ in 0..runs {
        let (mut tx, mut rx) = UnixStream::pair().unwrap();
        let receiver = std::thread::spawn(move || {
            let vm = Vm::restore(
                config(MIGRATE_MEMORY, "count", Console::default(), None),
                &mut rx,
            );
            (vm.map(drop), Instant::now())
        });
        let opts = MigrateOptions {
            pagemap: Some(File::open("/proc/self/pagemap").unwrap()),
            ..Default::default()
        };
        let stats = vm.handle.migrate(&mut tx, opts).unwrap();
        let sent = Instant::now();
        let (restored, ready_at) = receiver.join().unwrap();
        restored.unwrap();
        vm.handle.unpause();
        if let Some(why) = stats.not_live {
            return Err(why);
        }
        out.push(Live {
            downtime: stats.downtime,
            pause: stats.pause,
            ready: stats.downtime + ready_at.saturating_duration_since(sent),
            precopy: stats.precopy,
            passes: stats.pass_pages,
        });
    }
    vm.stop();
    Ok(out)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    let (quick, runs) = bench_common::args("bench-snapshot", DEFAULT_RUNS, QUICK_RUNS);
    let sizes: &[u64] = if quick { &SIZES[..1] } else { &SIZES };
    let dir = Scratch::new();
    println!("bench-snapshot: {runs} runs per case, medians; PVH test guest, 1 vCPU");

    let mut summary = Vec::new();
    for &memory in sizes {
        let idle = boot_guest(memory, "count", "COUNT 1\n");
        let (rows, stream) = send_receive(memory, idle, runs, &dir);
        print_rows(
            &format!(
                "{} MiB guest, idle (RAM almost all zero pages)",
                memory / MIB
            ),
            &rows,
        );
        let full_stream = filled(&stream);
        drop(stream);
        let out = Console::default();
        let vm = Vm::restore(
            config(memory, "count", out.clone(), None),
            &mut &full_stream[..],
        )
        .unwrap();
        drop(full_stream);
        let full = Running::start(vm, out);
        full.out.wait_for("COUNT");
        let (rows_full, _) = send_receive(memory, full, runs, &dir);
        print_rows(
            &format!(
                "{} MiB guest, full (RAM from {} MiB up non-zero)",
                memory / MIB,
                FILL_FROM / MIB
            ),
            &rows_full,
        );
        let resume = resume(memory, runs, &dir);
        println!(
            "  resume from a snapshot file to the first console byte: {:.2} ms",
            ms(resume)
        );
        summary.push((memory, rows_full, resume));
    }

    println!(
        "\nlive migration, idle {} MiB counting guest",
        MIGRATE_MEMORY / MIB
    );
    let live = live_migration(runs);
    match &live {
        Ok(l) => {
            for (i, r) in l.iter().enumerate() {
                println!(
                    "  run {i}: pre-copy {:.1} ms, pages per pass {:?}, downtime {:.2} ms at \
                     the source (vCPUs stopped in {:.2} ms), {:.2} ms until the receiver is \
                     ready",
                    ms(r.precopy),
                    r.passes,
                    ms(r.downtime),
                    ms(r.pause),
                    ms(r.ready)
                );
            }
        }
        Err(why) => println!("  SKIPPED: not live: {why}"),
    }

    println!("\ntargets");
    for (memory, rows, resume) in &summary {
        let by = |what: &str| rows.iter().find(|r| r.what.starts_with(what)).unwrap();
        let send = by("send -> /dev/null");
        let recv = by("receive <- memory");
        println!(
            "  {} MiB full: send {:.0} MB/s, receive {:.0} MB/s (target >= {STREAM_TARGET_MBS:.0}): \
             {}, {}",
            memory / MIB,
            mbs(send.stream, send.time),
            mbs(recv.stream, recv.time),
            verdict(mbs(send.stream, send.time) >= STREAM_TARGET_MBS),
            verdict(mbs(recv.stream, recv.time) >= STREAM_TARGET_MBS),
        );
        if *memory == SIZES[0] {
            println!(
                "  {} MiB resume from a snapshot file: {:.2} ms (target <= {} ms): {}",
                memory / MIB,
                ms(*resume),
                RESUME_TARGET.as_millis(),
                verdict(*resume <= RESUME_TARGET)
            );
        }
    }
    if let Ok(l) = &live {
        let down = median(l.iter().map(|r| r.downtime).collect());
        let ready = median(l.iter().map(|r| r.ready).collect());
        println!(
            "  {} MiB idle live migration: downtime {:.2} ms at the source, {:.2} ms until the \
             receiver is ready (target <= {} ms): {}",
            MIGRATE_MEMORY / MIB,
            ms(down),
            ms(ready),
            DOWNTIME_TARGET.as_millis(),
            verdict(ready <= DOWNTIME_TARGET)
        );
    }
}
