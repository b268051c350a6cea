//! Live migration and snapshot files on the real /dev/kvm (issue 8 items 3–5): a counting
//! guest moves to a VM restored from the live stream through a socket and counts on; a guest
//! writing its disk throughout loses no write; a writer that fails mid-migration leaves the
//! source running; a snapshot file is mapped, not read, and a truncated, misaligned or
//! tampered one is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hypervisor::snapshot::{MigrateOptions, PendingDisk};
use hypervisor::{ExitReason, SnapshotError, Vm, VmConfig, VmHandle};

mod common;
use common::{numbers, start, Console, MORE_COUNTS};

const MEMORY: u64 = 64 << 20;
/// The disk the `blkloop` guest writes.
const DISK_SIZE: u64 = 16 << 20;
const SECTOR: u64 = 512;

/// The test guest with one vCPU and [`MEMORY`].
fn config(cmdline: &str, out: Console, disks: Vec<Box<dyn disk::BlockBackend>>) -> VmConfig {
    common::config(cmdline, 1, MEMORY, out, disks)
}

fn stop(handle: VmHandle, runner: std::thread::JoinHandle<ExitReason>) {
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
}

fn live_options() -> MigrateOptions {
    MigrateOptions {
        pagemap: Some(File::open("/proc/self/pagemap").unwrap()),
        ..Default::default()
    }
}

/// A scratch file removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("hv-migrate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Scratch(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Counting goes on from `before` through `after` without a gap or a repeat, and nothing
/// booted again.
fn assert_counts_continue(before: &str, after: &str) {
    assert!(!after.contains("BOOT"), "the guest booted again:\n{after}");
    let all = numbers(&format!("{before}{after}"), "COUNT ");
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "counting goes on without a gap or a repeat");
}

#[test]
fn counting_guest_migrates_live_and_counts_on() {
    let out = Console::default();
    let (handle, runner) = start(Vm::new(config("count", out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", 3);
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let target_out = Console::default();
    let t_out = target_out.clone();
    let receiver = std::thread::spawn(move || {
        let vm = Vm::restore(config("count", t_out, Vec::new()), &mut rx);
        (vm, Instant::now())
    });
    let stats = handle.migrate(&mut tx, live_options()).unwrap();
    let sent_at = Instant::now();
    assert!(
        handle.is_paused(),
        "a complete migration leaves the source paused"
    );
    let before = out.text();
    stop(handle, runner);
    assert_eq!(
        out.text(),
        before,
        "the source ran nowhere after the switch-over"
    );
    let (vm, restored_at) = receiver.join().unwrap();
    let vm = vm.unwrap();
    let (handle, runner) = start(vm);
    let last = *numbers(&before, "COUNT ").last().unwrap();
    target_out.wait_for(&before, "COUNT ", last + MORE_COUNTS);
    assert_counts_continue(&before, &target_out.text());
    stop(handle, runner);

    assert_eq!(stats.not_live, None, "{stats:?}");
    assert!(stats.pass_pages.len() >= 2, "{stats:?}");
    assert!(
        stats.bytes < MEMORY / 4,
        "zero pages are left out: {stats:?}"
    );
    let end_to_end = stats.downtime + restored_at.saturating_duration_since(sent_at);
    eprintln!(
        "live migration of a {} MiB counting guest: {} passes {:?} pages, {} bytes, pre-copy \
         {:?}, downtime {:?} at the source (vCPUs stopped in {:?}), {:?} until the target \
         could run",
        MEMORY >> 20,
        stats.pass_pages.len(),
        stats.pass_pages,
        stats.bytes,
        stats.precopy,
        stats.downtime,
        stats.pause,
        end_to_end,
    );
}

/// A receiver that goes away: writes fail after `left` bytes, or once the source is paused.
struct FailingReceiver {
    left: usize,
    paused: Option<VmHandle>,
}

impl Write for FailingReceiver {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 || self.paused.as_ref().is_some_and(|h| h.is_paused()) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = b.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn failing_receiver_leaves_the_source_running() {
    let out = Console::default();
    let (handle, runner) = start(Vm::new(config("count", out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", 2);
    // A complete migration, then the source resumes (as when the receiver refuses it).
    handle.migrate(&mut Vec::new(), live_options()).unwrap();
    handle.unpause();
    // The receiver goes away during the first pass, and after the pause.
    let receivers = [
        FailingReceiver {
            left: 64 << 10,
            paused: None,
        },
        FailingReceiver {
            left: usize::MAX,
            paused: Some(handle.clone()),
        },
    ];
    for mut receiver in receivers {
        let last = *numbers(&out.text(), "COUNT ").last().unwrap();
        let e = handle.migrate(&mut receiver, live_options()).unwrap_err();
        assert!(matches!(e, SnapshotError::Write(_)), "{e}");
        assert!(!handle.is_paused(), "the source runs on after: {e}");
        out.wait_for("", "COUNT ", last + 3);
    }
    let text = out.text();
    let all = numbers(&text, "COUNT ");
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>(), "{text}");
    stop(handle, runner);
}

/// Read sector `n` of the disk file.
fn sector(file: &mut File, n: u64) -> Vec<u8> {
    let mut b = vec![0u8; SECTOR as usize];
    file.seek(SeekFrom::Start(n * SECTOR)).unwrap();
    file.read_exact(&mut b).unwrap();
    b
}

/// What `blkloop` writes for write `n` (testkit README).
fn blkloop_sector(n: u64) -> Vec<u8> {
    let mut b = vec![0u8; SECTOR as usize];
    let tag = format!("BLKLOOP {n}\n");
    b[..tag.len()].copy_from_slice(tag.as_bytes());
    for (i, x) in b.iter_mut().enumerate().skip(32) {
        *x = (i as u64 + n) as u8;
    }
    b
}

fn open_disk(path: &Path) -> Box<dyn disk::BlockBackend> {
    disk::open_path(path, Some(disk::Format::Raw), true).unwrap()
}

/// A `blkloop` guest writing a fresh zeroed raw disk named `name`, running, once its console
/// shows write number `writes`.
fn start_blkloop(
    name: &str,
    writes: u64,
) -> (
    Scratch,
    Console,
    VmHandle,
    std::thread::JoinHandle<ExitReason>,
) {
    let disk = Scratch::new(name);
    File::create(disk.path())
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let out = Console::default();
    let vm = Vm::new(config("blkloop", out.clone(), vec![open_disk(disk.path())])).unwrap();
    let (handle, runner) = start(vm);
    out.wait_for("", "BLKLOOP ", writes);
    (disk, out, handle, runner)
}

#[test]
fn disk_written_during_live_migration_loses_no_write() {
    let (disk, out, handle, runner) = start_blkloop("blkloop.raw", 20);

    // The target's disk is a stand-in until the stream is complete: the source flushes the
    // image before it ends the stream and writes no more, then the target opens it.
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let target_out = Console::default();
    let t_out = target_out.clone();
    let pending = PendingDisk {
        size: DISK_SIZE,
        read_only: false,
    };
    let receiver = std::thread::spawn(move || {
        Vm::restore(config("blkloop", t_out, vec![Box::new(pending)]), &mut rx)
    });
    let stats = handle.migrate(&mut tx, live_options()).unwrap();
    let before = out.text();
    stop(handle, runner);
    let vm = receiver.join().unwrap().unwrap();
    vm.attach_disks(vec![open_disk(disk.path())]).unwrap();
    let (handle, runner) = start(vm);
    let last = *numbers(&before, "BLKLOOP ").last().unwrap();
    target_out.wait_for(&before, "BLKLOOP ", last + 50);
    stop(handle, runner);

    let after = target_out.text();
    assert!(!after.contains("BOOT"), "{after}");
    let all = numbers(&format!("{before}{after}"), "BLKLOOP ");
    assert_eq!(
        all,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "every write reported once"
    );
    assert!(
        !format!("{before}{after}").contains(" write "),
        "no write failed:\n{before}{after}"
    );
    let wraps = DISK_SIZE / SECTOR - 1;
    assert!((all.len() as u64) < wraps, "the test's writes do not wrap");
    let mut f = File::open(disk.path()).unwrap();
    for &n in &all {
        assert_eq!(
            sector(&mut f, 1 + n),
            blkloop_sector(n),
            "write {n} (of {}) is on the disk",
            all.len()
        );
    }
    eprintln!(
        "{} writes on the disk, {} before the switch-over; migration: {:?} pages per pass, \
         downtime {:?}",
        all.len(),
        last + 1,
        stats.pass_pages,
        stats.downtime
    );
}

/// Boot the counting guest, let it count to 3 and snapshot it into a file; the file and what
/// the guest printed.
fn counting_guest_in_a_file(name: &str) -> (Scratch, String) {
    let file = Scratch::new(name);
    let out = Console::default();
    let (handle, runner) = start(Vm::new(config("count", out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", 3);
    handle.snapshot_file(&create(file.path()), &[]).unwrap();
    let before = out.text();
    stop(handle, runner);
    (file, before)
}

#[test]
fn snapshot_file_is_mapped_and_counts_on() {
    let (file, before) = counting_guest_in_a_file("count.snap");
    let meta = std::fs::metadata(file.path()).unwrap();
    assert!(meta.len() > MEMORY, "guest RAM is in the file whole");
    assert!(
        meta.blocks() * 512 < MEMORY / 4,
        "zero pages are holes: {} bytes allocated",
        meta.blocks() * 512
    );
    let written = std::fs::read(file.path()).unwrap();
    let f = File::open(file.path()).unwrap();
    let out = Console::default();
    let t = Instant::now();
    let vm = Vm::restore_file(config("count", out.clone(), Vec::new()), &[], &f).unwrap();
    let restored = t.elapsed();
    let (handle, runner) = start(vm);
    let last = *numbers(&before, "COUNT ").last().unwrap();
    out.wait_for(&before, "COUNT ", last + MORE_COUNTS);
    assert_counts_continue(&before, &out.text());
    // Memory mapped from the file migrates live too: the write watch covers a private file
    // mapping (pages never touched included).
    let mut stream = Vec::new();
    let stats = handle.migrate(&mut stream, live_options()).unwrap();
    assert_eq!(stats.not_live, None, "{stats:?}");
    let before_migration = format!("{before}{}", out.text());
    stop(handle, runner);
    let out = Console::default();
    let vm = Vm::restore(config("count", out.clone(), Vec::new()), &mut &stream[..]).unwrap();
    let (handle, runner) = start(vm);
    let last = *numbers(&before_migration, "COUNT ").last().unwrap();
    out.wait_for(&before_migration, "COUNT ", last + 2);
    assert_counts_continue(&before_migration, &out.text());
    stop(handle, runner);
    // The guest's writes went to its private copy: the file is as written.
    assert!(
        std::fs::read(file.path()).unwrap() == written,
        "the file changed"
    );

    // The same file read as a stream (from a pipe, say) restores too.
    let out = Console::default();
    let vm = Vm::restore(config("count", out.clone(), Vec::new()), &mut &written[..]).unwrap();
    let (handle, runner) = start(vm);
    out.wait_for(&before, "COUNT ", last + MORE_COUNTS);
    assert_counts_continue(&before, &out.text());
    stop(handle, runner);
    eprintln!(
        "restore from a {} MiB snapshot file: {restored:?}",
        MEMORY >> 20
    );
}

/// vmd's framing: its own block after the header of a snapshot file. The receiver reads the
/// header and the block, then maps the rest; the RAM is page-aligned in the file regardless.
#[test]
fn snapshot_file_with_framing_after_the_header_is_mapped() {
    let file = Scratch::new("framed.snap");
    let out = Console::default();
    let (handle, runner) = start(Vm::new(config("count", out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", 2);
    let framing = vec![0x5a; 1000];
    handle
        .snapshot_file(&create(file.path()), &framing)
        .unwrap();
    let before = out.text();
    stop(handle, runner);

    let mut f = File::open(file.path()).unwrap();
    let mut header = vec![0u8; hypervisor::snapshot::header::HEADER_LEN];
    f.read_exact(&mut header).unwrap();
    let mut block = vec![0u8; framing.len()];
    f.read_exact(&mut block).unwrap();
    assert_eq!(block, framing);
    let out = Console::default();
    let vm = Vm::restore_file(config("count", out.clone(), Vec::new()), &header, &f).unwrap();
    let (handle, runner) = start(vm);
    let last = *numbers(&before, "COUNT ").last().unwrap();
    out.wait_for(&before, "COUNT ", last + MORE_COUNTS);
    assert_counts_continue(&before, &out.text());
    stop(handle, runner);
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

fn restore_file_err(f: &File) -> SnapshotError {
    match Vm::restore_file(config("count", Console::default(), Vec::new()), &[], f) {
        Ok(_) => panic!("a bad snapshot file was restored"),
        Err(e) => e,
    }
}

#[test]
fn truncated_misaligned_or_tampered_snapshot_files_are_refused() {
    let (file, _) = counting_guest_in_a_file("bad.snap");
    let bytes = std::fs::read(file.path()).unwrap();
    let copy = Scratch::new("bad-copy.snap");
    let write = |b: &[u8]| {
        std::fs::write(copy.path(), b).unwrap();
        File::open(copy.path()).unwrap()
    };

    // Cut inside guest RAM: the image does not fit in the file.
    let e = restore_file_err(&write(&bytes[..bytes.len() / 2]));
    assert!(
        matches!(
            e,
            SnapshotError::Truncated {
                what: "the memory image"
            }
        ),
        "{e}"
    );
    // Cut after RAM, in the records.
    let e = restore_file_err(&write(&bytes[..bytes.len() - 10]));
    assert!(matches!(e, SnapshotError::Truncated { .. }), "{e}");

    // The stream starts 512 bytes into the file: its RAM is not page-aligned there.
    let mut shifted = vec![0u8; 512];
    shifted.extend_from_slice(&bytes);
    let mut f = write(&shifted);
    f.seek(SeekFrom::Start(512)).unwrap();
    let e = restore_file_err(&f);
    assert!(
        matches!(
            e,
            SnapshotError::Malformed {
                what: "the memory image",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("page boundary"), "{e}");

    // The image table's first offset moved by a page: the RAM would not start within a page
    // of the table.
    let table = find_image_table(&bytes);
    let mut tampered = bytes.clone();
    let at = table + 8 + 16;
    let off = u64::from_le_bytes(tampered[at..at + 8].try_into().unwrap());
    tampered[at..at + 8].copy_from_slice(&(off + 4096).to_le_bytes());
    let e = restore_file_err(&write(&tampered));
    assert!(
        matches!(
            e,
            SnapshotError::Malformed {
                what: "the memory image",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("region 0"), "{e}");
    // A region of another size than the machine's.
    let mut tampered = bytes.clone();
    let at = table + 8 + 8;
    let len = u64::from_le_bytes(tampered[at..at + 8].try_into().unwrap());
    tampered[at..at + 8].copy_from_slice(&(len - 4096).to_le_bytes());
    let e = restore_file_err(&write(&tampered));
    assert!(e.to_string().contains("the machine has"), "{e}");

    // A region count far beyond any layout.
    let mut tampered = bytes.clone();
    tampered[table..table + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = restore_file_err(&write(&tampered));
    assert!(matches!(e, SnapshotError::TooLarge { .. }), "{e}");

    // Not a regular file.
    let dir = File::open(std::env::temp_dir()).unwrap();
    let e = restore_file_err(&dir);
    assert!(e.to_string().contains("regular file"), "{e}");
}

/// Offset of the memory image's table (the payload of the section with tag 7) in `bytes`:
/// it follows the header and the machine record.
fn find_image_table(bytes: &[u8]) -> usize {
    let mut at = hypervisor::snapshot::header::HEADER_LEN;
    loop {
        let tag = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
        if tag == hypervisor::snapshot::stream::TAG_IMAGE {
            return at + 12;
        }
        at += 12 + len;
    }
}

/// A paused VM's devices serve nothing until it resumes: the disk of a guest that writes it
/// all the time stays as it is while the VM is paused (a sent VM's images are the receiver's
/// from the end of the stream), and the writes held meanwhile go through after.
#[test]
fn paused_vm_leaves_its_disk_alone_until_it_resumes() {
    let (disk, out, handle, runner) = start_blkloop("paused.raw", 2);
    for _ in 0..10 {
        handle.pause().unwrap();
        let before = std::fs::read(disk.path()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            std::fs::read(disk.path()).unwrap() == before,
            "the disk was written while the VM was paused"
        );
        let last = *numbers(&out.text(), "BLKLOOP ").last().unwrap();
        handle.unpause();
        out.wait_for("", "BLKLOOP ", last + 2);
    }
    stop(handle, runner);
}

/// Collects a stream's memory chunks in order.
#[derive(Default)]
struct Chunks(Vec<(u64, Vec<u8>)>);

impl hypervisor::snapshot::StreamSink for Chunks {
    fn machine(
        &mut self,
        _: &hypervisor::snapshot::Header,
        _: &hypervisor::snapshot::Machine,
    ) -> Result<(), SnapshotError> {
        Ok(())
    }
    fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.0.push((addr, bytes.to_vec()));
        Ok(())
    }
}

/// How [`rebuilt`] tampers with a live stream.
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    None,
    /// Empty passes until there are one too many.
    TooManyPasses,
    /// The chunks of every pass in one, so that addresses go down within it.
    OnePass,
    /// A pass marker with a payload.
    PassPayload,
    /// No end-of-memory section.
    NoMemoryEnd,
}

/// The live stream `stream` written again, with `tamper`.
fn rebuilt(stream: &[u8], tamper: Tamper) -> Vec<u8> {
    use hypervisor::snapshot::stream::*;
    let mut chunks = Chunks::default();
    let c = hypervisor::snapshot::read_stream(&mut &stream[..], &mut chunks).unwrap();
    let mut out = Vec::new();
    {
        let mut w = Writer::new(&mut out);
        w.header(&c.header).unwrap();
        w.record(TAG_MACHINE, "machine", &c.machine).unwrap();
        let mut next = 0;
        let mut passes = 1;
        for (addr, bytes) in &chunks.0 {
            if *addr < next && tamper != Tamper::OnePass {
                if tamper == Tamper::PassPayload {
                    w.record(TAG_PASS, "pass", &0u8).unwrap();
                } else {
                    w.marker(TAG_PASS).unwrap();
                }
                passes += 1;
            }
            w.memory(*addr, bytes).unwrap();
            next = addr + bytes.len() as u64;
        }
        if tamper == Tamper::PassPayload && passes == 1 {
            // No pass boundary showed in the addresses (the later passes lay above the first
            // one's pages): a pass marker, with its payload, after the memory.
            w.record(TAG_PASS, "pass", &0u8).unwrap();
        }
        if tamper == Tamper::OnePass {
            // The later passes may all lie above the first one's pages (which pages the guest
            // dirtied varies from run to run): the first chunk once more makes the single
            // pass go down for sure.
            let (addr, bytes) = &chunks.0[0];
            w.memory(*addr, bytes).unwrap();
        }
        if tamper == Tamper::TooManyPasses {
            for _ in passes..=MAX_MEMORY_PASSES {
                w.marker(TAG_PASS).unwrap();
            }
        }
        if tamper != Tamper::NoMemoryEnd {
            w.marker(TAG_MEMORY_END).unwrap();
        }
        for v in &c.vcpus {
            w.record(TAG_VCPU, "vcpu", v).unwrap();
        }
        w.record(TAG_VM, "vm", &c.vm).unwrap();
        w.record(TAG_DEVICES, "devices", &c.devices).unwrap();
        w.finish().unwrap();
    }
    out
}

/// A live stream's memory passes are checked like the rest: at most `MAX_MEMORY_PASSES`,
/// pages going up within a pass, markers without payload, an end of memory.
#[test]
fn live_stream_with_bad_passes_is_refused() {
    let out = Console::default();
    let (handle, runner) = start(Vm::new(config("count", out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", 1);
    let mut stream = Vec::new();
    // Every pass re-sends pages: a pre-copy of at least one round after the first pass.
    let opts = MigrateOptions {
        stop_pages: 0,
        max_rounds: 2,
        ..live_options()
    };
    let stats = handle.migrate(&mut stream, opts).unwrap();
    stop(handle, runner);
    assert_eq!(stats.pass_pages.len(), 4, "{stats:?}");

    let restore = |bytes: &[u8]| {
        Vm::restore(
            config("count", Console::default(), Vec::new()),
            &mut &bytes[..],
        )
    };
    assert!(restore(&rebuilt(&stream, Tamper::None)).is_ok());
    let e = restore(&rebuilt(&stream, Tamper::TooManyPasses))
        .err()
        .unwrap();
    assert!(
        matches!(e, SnapshotError::TooLarge { what, .. } if what.contains("passes")),
        "{e}"
    );
    let e = restore(&rebuilt(&stream, Tamper::OnePass)).err().unwrap();
    assert!(
        e.to_string().contains("not whole pages of RAM above"),
        "{e}"
    );
    let e = restore(&rebuilt(&stream, Tamper::PassPayload))
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            SnapshotError::Malformed {
                what: "a memory pass",
                ..
            }
        ),
        "{e}"
    );
    let e = restore(&rebuilt(&stream, Tamper::NoMemoryEnd))
        .err()
        .unwrap();
    assert!(e.to_string().contains("before the end of memory"), "{e}");
}
