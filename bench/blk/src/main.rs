//! virtio-blk benchmark: requests through our device path against the same file read and
//! written directly on the host (the limit), as ratios of medians.
//!
//! Our side is an in-process synthetic driver, no guest: the benchmark lays out a split
//! virtqueue in vm-memory guest memory the way a driver does, activates
//! `devices::virtio::blk::Block` over the image opened with `disk::open_path` (the backend vmd
//! uses), posts a batch of `qd` requests (header, one data buffer, status byte), calls
//! `process_queue(0)` as the VM's event loop does on a queue notification, and reaps the used
//! ring. The device raises its interrupt through an eventfd write, as through the hypervisor's
//! irqfd; the guest's notification (an ioeventfd and the event loop's epoll wake-up) is not
//! part of the measurement. The host side is `pread`/`pwrite` of the same sizes at the same
//! offsets on the same file. Both sides use buffered I/O (no O_DIRECT) on a file whose pages
//! are all in the page cache, so this measures the device path's overhead (ring handling, the
//! backend, the bounce-buffer copy qcow2 takes), not the disk. A last row per case runs the
//! device over a backend that does no I/O: the device path's own cost per request.
//!
//! The target is a rate: requests per second at queue depth 32, as a guest with requests in
//! flight (Linux's blk-mq) drives the disk. At depth 1 every request also costs one interrupt
//! (an eventfd write, as through an irqfd), a system call the host's `pread` loop does not
//! make; the benchmark measures that call and prints the ratio it leaves possible at depth 1.
//!
//! Usage: bench-blk [--quick] [RUNS]

mod vring;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_common::{median, Rng};
use devices::virtio::blk::{Block, BlockBackend, BLK_QUEUE_SIZE, SECTOR_SIZE};
use devices::virtio::{InterruptKind, VirtioDevice, VirtioInterrupt};
use disk::Format;
use hypervisor::DiskBackend;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileMemory};
use vring::{Buf, Irq, Vring, RING_AREA};

/// Size of the test file: small enough to stay in the page cache.
const FILE_SIZE: u64 = 256 << 20;
/// Guest memory: the ring, request headers and status bytes, then one data buffer per slot.
const MEM_SIZE: usize = 64 << 20;
/// The ring sits at guest address 0; per-slot headers and status bytes follow it.
const HEADERS: u64 = RING_AREA;
const STATUS: u64 = HEADERS + 0x1000;
/// Data buffer of slot `s`: `DATA + s * request size`.
const DATA: u64 = 1 << 20;
/// Alignment of the host side's buffer.
const PAGE: usize = 4096;
/// Bytes of a virtio-blk request header.
const HEADER_LEN: usize = 16;
/// Descriptors per request: header, data, status.
const CHAIN: usize = 3;
/// Runs per case unless given on the command line.
const DEFAULT_RUNS: usize = 7;
const QUICK_RUNS: usize = 3;
/// The 4 KiB random-read target: our requests per second over the host's `pread`s, at
/// queue depth [`TARGET_QD`].
const TARGET: f64 = 0.80;
const TARGET_QD: usize = 32;
/// eventfd writes timed to measure one interrupt's cost.
const IRQ_SAMPLES: usize = 200_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// One workload: direction, pattern, request size, queue depth, requests per run.
struct Case {
    dir: Dir,
    random: bool,
    size: usize,
    qd: usize,
    ops: usize,
}

impl Case {
    fn name(&self) -> String {
        let pattern = if self.random { "rand" } else { "seq" };
        let dir = match self.dir {
            Dir::Read => "read",
            Dir::Write => "write",
        };
        let size = if self.size >= 1 << 20 {
            format!("{}m", self.size >> 20)
        } else {
            format!("{}k", self.size >> 10)
        };
        format!("{pattern}{dir} {size} qd{}", self.qd)
    }

    /// Byte offsets of the requests of one run, the same for every side.
    fn offsets(&self) -> Vec<u64> {
        let size = self.size as u64;
        let blocks = FILE_SIZE / size;
        let mut rng = Rng(0x5eed ^ size ^ self.qd as u64);
        (0..self.ops as u64)
            .map(|i| {
                let block = if self.random {
                    rng.next_u64() % blocks
                } else {
                    i % blocks
                };
                block * size
            })
            .collect()
    }
}

/// Who serves the requests.
#[derive(Clone, Copy)]
enum Side {
    Host,
    Ours(Format),
    /// Our device over a backend that does no I/O: the device path's own cost.
    NoIo,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Host => "host pread/pwrite",
            Side::Ours(Format::Raw) => "ours raw",
            Side::Ours(Format::Qcow2) => "ours qcow2",
            Side::NoIo => "ours, no-I/O backend",
        }
    }
}

/// Accepts every request and moves no data: what remains is the ring handling, the bounce
/// buffer's copy to or from guest memory, the interrupt and the synthetic driver.
struct NoIo(u64);

impl BlockBackend for NoIo {
    fn read_at(&mut self, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn size(&self) -> u64 {
        self.0
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// Microseconds one interrupt (an eventfd write) takes, median of `runs` timings.
fn irq_cost_us(runs: usize) -> f64 {
    let irq = Irq::new();
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..IRQ_SAMPLES {
                irq.trigger(InterruptKind::Queue(0));
            }
            let t = start.elapsed().as_secs_f64() * 1e6 / IRQ_SAMPLES as f64;
            irq.take();
            t
        })
        .collect();
    median(&times)
}

/// The host's own `pread`/`pwrite` loop.
fn run_host(case: &Case, file: &File, offsets: &[u64], buf: &mut [u8]) -> Duration {
    let start = Instant::now();
    for &off in offsets {
        match case.dir {
            Dir::Read => file.read_exact_at(buf, off),
            Dir::Write => file.write_all_at(buf, off),
        }
        .expect("host I/O");
    }
    start.elapsed()
}

/// The same requests through a virtio-blk device freshly activated over `backend`
/// (activation is not timed), in batches of `qd`.
fn run_ours(
    case: &Case,
    backend: Box<dyn BlockBackend>,
    mem: &GuestMemoryMmap,
    offsets: &[u64],
) -> Duration {
    let mut blk = Block::new(backend, "bench");
    let mut ring = Vring::<CHAIN>::new(mem, 0, BLK_QUEUE_SIZE);
    let irq = Arc::new(Irq::new());
    let features = blk.features();
    blk.activate(mem.clone(), irq.clone(), vec![ring.queue(mem)], features);
    let (kind, used_len) = match case.dir {
        Dir::Read => (VIRTIO_BLK_T_IN, case.size as u32 + 1),
        Dir::Write => (VIRTIO_BLK_T_OUT, 1),
    };
    // Request headers and status bytes, reached through one mapping like the ring.
    let meta = mem
        .get_slice(GuestAddress(HEADERS), (DATA - HEADERS) as usize)
        .expect("request area");
    let header = |slot: u16| HEADER_LEN * usize::from(slot);
    let status = |slot: u16| (STATUS - HEADERS) as usize + usize::from(slot);
    let start = Instant::now();
    for batch in offsets.chunks(case.qd) {
        for &off in batch {
            ring.push(|slot| {
                // type (reserved 0), then the sector.
                let h = header(slot);
                meta.get_ref(h)
                    .expect("header")
                    .store(u64::from(kind).to_le());
                meta.get_ref(h + 8)
                    .expect("header")
                    .store((off / SECTOR_SIZE).to_le());
                meta.get_ref(status(slot)).expect("status").store(0xffu8);
                [
                    Buf {
                        addr: HEADERS + h as u64,
                        len: HEADER_LEN as u32,
                        device_writes: false,
                    },
                    Buf {
                        addr: DATA + case.size as u64 * u64::from(slot),
                        len: case.size as u32,
                        device_writes: case.dir == Dir::Read,
                    },
                    Buf {
                        addr: HEADERS + status(slot) as u64,
                        len: 1,
                        device_writes: true,
                    },
                ]
            });
        }
        ring.publish();
        blk.process_queue(0);
        ring.reap(|slot, len| {
            let st: u8 = meta.get_ref(status(slot)).expect("status").load();
            assert_eq!(
                (st, len),
                (VIRTIO_BLK_S_OK as u8, used_len),
                "request failed"
            );
        });
        assert_eq!(ring.in_flight(), 0, "requests left unanswered");
    }
    let elapsed = start.elapsed();
    let batches = offsets.len().div_ceil(case.qd) as u64;
    assert_eq!(irq.take(), batches, "one interrupt per batch (EVENT_IDX)");
    elapsed
}

/// Writes back dirty pages (not timed): a write to a page under writeback waits for it, so
/// data left dirty by the previous run would slow the next one down.
fn settle(path: &Path) {
    File::open(path)
        .and_then(|f| f.sync_all())
        .expect("sync file");
}

/// Drops `path` from the page cache and reads it back with readahead off, so every file is
/// cached the same way, in 4 KiB pages, whatever wrote it. Readahead fills the cache with
/// large folios, into which a 4 KiB buffered write costs 30-80 us on this kernel's ext4
/// (15-40 times more than into a 4 KiB page): the write cases would measure that instead.
fn recache(path: &Path) {
    let mut f = File::open(path).expect("open file");
    f.sync_all().expect("sync file");
    for advice in [libc::POSIX_FADV_DONTNEED, libc::POSIX_FADV_RANDOM] {
        // SAFETY: posix_fadvise only takes integers; the fd is open.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, advice) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
    std::io::copy(&mut f, &mut std::io::sink()).expect("read file");
}

fn cases(quick: bool) -> Vec<Case> {
    let scale: usize = if quick { 8 } else { 1 };
    let mut cases = Vec::new();
    for (dir, random, size, ops) in [
        (Dir::Read, true, 4 << 10, 65_536),
        (Dir::Write, true, 4 << 10, 32_768),
        (Dir::Read, false, 1 << 20, 1024),
        (Dir::Write, false, 1 << 20, 128),
    ] {
        for qd in [1, 32] {
            cases.push(Case {
                dir,
                random,
                size,
                qd,
                // Whole batches only.
                ops: (ops / scale).next_multiple_of(qd),
            });
        }
    }
    cases
}

fn main() {
    let (quick, runs) = bench_common::args("bench-blk", DEFAULT_RUNS, QUICK_RUNS);

    let dir = std::env::temp_dir().join(format!("bench-blk.{}", std::process::id()));
    std::fs::create_dir(&dir).expect("temp dir");
    let raw = dir.join("data.raw");
    let qcow2 = dir.join("data.qcow2");
    // Random, incompressible data everywhere: reads hit data, every qcow2 cluster allocated.
    let mut rng = Rng(42);
    let mut out =
        std::io::BufWriter::with_capacity(64 << 10, File::create(&raw).expect("create file"));
    for _ in 0..FILE_SIZE / 8 {
        out.write_all(&rng.next_u64().to_le_bytes())
            .expect("write file");
    }
    out.flush().expect("write file");
    drop(out);
    disk::convert(&raw, Some(Format::Raw), &qcow2, Format::Qcow2, None, None).expect("qcow2 image");
    recache(&raw);
    recache(&qcow2);
    let host_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw)
        .expect("open file");

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    // Touch every data page now, so no run pays for first-touch page faults.
    mem.write_slice(&vec![0x5a; MEM_SIZE - DATA as usize], GuestAddress(DATA))
        .expect("guest memory");

    println!("bench-blk: virtio-blk requests through our device vs pread/pwrite on the same file");
    println!(
        "  ours: in-process synthetic driver (split ring of {BLK_QUEUE_SIZE} in vm-memory guest memory, \
         3 descriptors per request, batches of qd, process_queue(0), reap; interrupt = eventfd write)"
    );
    println!(
        "  file: {} MiB of random data in {} ({} for qcow2, 64 KiB clusters, fully allocated); \
         buffered I/O both sides, page cache warm (4 KiB pages)",
        FILE_SIZE >> 20,
        raw.display(),
        qcow2.display()
    );
    println!(
        "  ours raw/qcow2: the image opened with disk::open_path behind the hypervisor's \
         DiskBackend, as vmd does (raw: pread/preadv straight into guest memory; qcow2: \
         through a bounce buffer); no-I/O backend: the device path alone (ring, bounce copy, \
         interrupt, driver)"
    );
    println!(
        "  {runs} runs per case, sides in rotating order; medians; MB = 10^6 bytes; \
         vs host = ours ops/s / host ops/s; us/req = 1/rate (the latency at qd1)"
    );
    println!();
    println!(
        "{:<18} {:<21} {:>10} {:>9} {:>8} {:>8}",
        "case", "side", "ops/s", "MB/s", "us/req", "vs host"
    );

    let sides = [
        Side::Host,
        Side::Ours(Format::Raw),
        Side::Ours(Format::Qcow2),
        Side::NoIo,
    ];
    let mut target = Vec::new();
    for case in cases(quick) {
        let offsets = case.offsets();
        // Page-aligned, like the guest's buffers: copies into a misaligned buffer are slower.
        let mut host_mem = vec![0x5au8; case.size + PAGE];
        let skip = host_mem.as_ptr().align_offset(PAGE);
        let host_buf = &mut host_mem[skip..skip + case.size];
        let mut rates = vec![Vec::with_capacity(runs); sides.len()];
        for run in 0..runs {
            for k in 0..sides.len() {
                let i = (run + k) % sides.len();
                let t = match sides[i] {
                    Side::Host => {
                        settle(&raw);
                        run_host(&case, &host_file, &offsets, host_buf)
                    }
                    Side::Ours(format) => {
                        let path = if format == Format::Raw { &raw } else { &qcow2 };
                        settle(path);
                        let image = disk::open_path(path, Some(format), case.dir == Dir::Write)
                            .expect("open image");
                        run_ours(&case, Box::new(DiskBackend::new(image)), &mem, &offsets)
                    }
                    Side::NoIo => run_ours(&case, Box::new(NoIo(FILE_SIZE)), &mem, &offsets),
                };
                rates[i].push(offsets.len() as f64 / t.as_secs_f64());
            }
        }
        let host = median(&rates[0]);
        for (i, side) in sides.iter().enumerate() {
            let ops = median(&rates[i]);
            let ratio = match side {
                Side::Ours(_) => format!("{:.3}", ops / host),
                Side::Host | Side::NoIo => String::new(),
            };
            println!(
                "{:<18} {:<21} {:>10.0} {:>9.1} {:>8.2} {:>8}",
                if i == 0 { case.name() } else { String::new() },
                side.label(),
                ops,
                ops * case.size as f64 / 1e6,
                1e6 / ops,
                ratio
            );
        }
        if case.dir == Dir::Read && case.random {
            target.push((case.qd, median(&rates[1]) / host, 1e6 / host));
        }
    }

    let irq = irq_cost_us(runs);
    println!();
    println!("one interrupt (eventfd write, as through an irqfd): {irq:.2} us");
    for &(qd, ratio, _) in target.iter().filter(|t| t.0 == TARGET_QD) {
        println!(
            "target (4 KiB random reads per second at qd{qd} through virtio-blk over raw \
             >= {TARGET:.2} of host pread): {} ({ratio:.3})",
            if ratio >= TARGET { "MET" } else { "NOT MET" }
        );
    }
    for &(qd, ratio, host_us) in target.iter().filter(|t| t.0 != TARGET_QD) {
        // Each batch of `qd` requests costs one interrupt the host loop does not make.
        let bound = host_us / (host_us + irq / qd as f64);
        println!(
            "  at qd{qd}: {ratio:.3}; its interrupts alone allow at most {bound:.3} \
             ({host_us:.2} us per host pread, {irq:.2} us per interrupt)"
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}
