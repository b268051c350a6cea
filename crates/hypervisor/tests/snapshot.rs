//! Snapshots on the real /dev/kvm (issue 8 item 1, F-LIFE-22): a counting guest is captured
//! while it runs, and a new VM restored from the stream counts on without rebooting; streams
//! with a tampered header, cut short, corrupted or made of garbage are refused with an error
//! naming what is wrong, and never panic.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hypervisor::snapshot::header::HEADER_LEN;
use hypervisor::{ExitReason, SnapshotError, Vm};

mod common;
use common::{config, counts, start, Console, DEADLINE, MORE_COUNTS};

const MEMORY: u64 = 32 << 20;
/// Boot the counting guest with `vcpus`, let it count to `until`, snapshot it while it
/// runs and stop it: the stream and everything the guest printed.
fn snapshot_of_counting_guest(cmdline: &str, vcpus: u32, until: u64) -> (Vec<u8>, String) {
    let out = Console::default();
    let (handle, runner) =
        start(Vm::new(config(cmdline, vcpus, MEMORY, out.clone(), Vec::new())).unwrap());
    out.wait_for("", "COUNT ", until);
    let mut stream = Vec::new();
    handle.snapshot(&mut stream).unwrap();
    assert!(handle.is_paused(), "a snapshot leaves the VM paused");
    let printed = out.text();
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
    assert_eq!(out.text(), printed, "nothing ran after the snapshot");
    (stream, printed)
}

/// One small stream the tests of bad input share.
fn stream() -> &'static [u8] {
    static STREAM: OnceLock<Vec<u8>> = OnceLock::new();
    STREAM.get_or_init(|| snapshot_of_counting_guest("count", 1, 2).0)
}

fn restore_err(bytes: &[u8]) -> SnapshotError {
    match Vm::restore(
        config("count", 1, MEMORY, Console::default(), Vec::new()),
        &mut &bytes[..],
    ) {
        Ok(_) => panic!("a bad stream was restored"),
        Err(e) => e,
    }
}

/// Restore `stream` and check that the guest counts on from where `before` stopped, with
/// no new boot; returns the running VM's handle, thread and console.
fn restore_and_check(
    stream: &[u8],
    cmdline: &str,
    vcpus: u32,
    before: &str,
) -> (
    hypervisor::VmHandle,
    std::thread::JoinHandle<ExitReason>,
    Console,
) {
    let out = Console::default();
    let vm = Vm::restore(
        config(cmdline, vcpus, MEMORY, out.clone(), Vec::new()),
        &mut &stream[..],
    )
    .unwrap();
    let (handle, runner) = start(vm);
    let last = *counts(before).last().unwrap();
    out.wait_for(before, "COUNT ", last + MORE_COUNTS);
    let after = out.text();
    assert!(
        !after.contains("BOOT"),
        "the restored guest booted again:\n{after}"
    );
    let all = counts(&format!("{before}{after}"));
    let expected: Vec<u64> = (0..all.len() as u64).collect();
    assert_eq!(all, expected, "counting goes on without a gap or a repeat");
    (handle, runner, out)
}

#[test]
fn counting_guest_continues_after_restore() {
    let (stream, before) = snapshot_of_counting_guest("smp count", 2, 5);
    assert!(before.contains("SMP ok 2"), "{before}");
    assert!(
        (stream.len() as u64) < MEMORY / 4,
        "zero pages are left out: {} bytes",
        stream.len()
    );
    let (handle, runner, _) = restore_and_check(&stream, "smp count", 2, &before);
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
}

#[test]
fn checkpoint_keeps_the_vm_running_and_restores_again() {
    let (stream, before) = snapshot_of_counting_guest("count", 1, 3);
    let (handle, runner, out) = restore_and_check(&stream, "count", 1, &before);
    // A snapshot of the restored VM, which then carries on (a checkpoint).
    let mut second = Vec::new();
    handle.snapshot(&mut second).unwrap();
    let at_checkpoint = format!("{before}{}", out.text());
    handle.unpause();
    let last = *counts(&at_checkpoint).last().unwrap();
    out.wait_for(&before, "COUNT ", last + MORE_COUNTS);
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
    // The checkpoint restores too, from its own point.
    let (handle, runner, _) = restore_and_check(&second, "count", 1, &at_checkpoint);
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);
}

#[test]
fn tampered_signature_is_refused() {
    let mut bytes = stream().to_vec();
    bytes[0] = b'V';
    let e = restore_err(&bytes);
    assert!(matches!(e, SnapshotError::BadSignature { .. }), "{e}");
    assert!(e.to_string().contains("not a VM snapshot"), "{e}");
}

#[test]
fn unknown_version_is_refused() {
    let mut bytes = stream().to_vec();
    bytes[15] = 99;
    let e = restore_err(&bytes);
    assert!(
        matches!(e, SnapshotError::UnknownVersion { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("version 99"), "{e}");
}

/// Offset of register `reg` (0 EAX … 3 EDX) of CPUID record `i` in the header.
fn cpuid_reg(i: usize, reg: usize) -> usize {
    16 + 24 * i + 8 + 4 * reg
}

#[test]
fn cpu_feature_the_host_lacks_is_refused() {
    let mut bytes = stream().to_vec();
    // Leaf 7 is the third record; the stream's EBX is what this host offers, so a clear bit
    // is one this host lacks.
    let at = cpuid_reg(2, 1);
    let ebx = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let missing = (0..32)
        .map(|b| 1u32 << b)
        .find(|bit| ebx & bit == 0)
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&(ebx | missing).to_le_bytes());
    let e = restore_err(&bytes);
    assert!(
        matches!(
            e,
            SnapshotError::CpuidMismatch {
                leaf: 7,
                register: "EBX",
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("leaf 0x7 EBX"), "{text}");
    assert!(
        text.contains(&format!("{missing:#010x}")),
        "names the bit: {text}"
    );

    // Another vendor.
    let mut bytes = stream().to_vec();
    bytes[cpuid_reg(0, 1)] ^= 0x20;
    let e = restore_err(&bytes);
    assert!(e.to_string().contains("leaf 0x0 EBX"), "{e}");
}

#[test]
fn truncated_stream_is_refused() {
    let bytes = stream();
    for cut in [
        0,
        7,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 5,
        HEADER_LEN + 40,
        bytes.len() / 2,
        bytes.len() - 5,
        bytes.len() - 1,
    ] {
        let e = restore_err(&bytes[..cut]);
        assert!(
            matches!(e, SnapshotError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}

#[test]
fn corrupted_stream_fails_its_checksum() {
    let mut bytes = stream().to_vec();
    let n = bytes.len();
    // A byte of guest memory (the memory sections end well before the last 64 KiB).
    bytes[n / 2] ^= 0x01;
    let e = restore_err(&bytes);
    assert!(matches!(e, SnapshotError::Checksum { .. }), "{e}");
}

/// xorshift64: deterministic garbage.
struct Garbage(u64);
impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_is_refused_cleanly() {
    let mut g = Garbage(0x5eed_0f5a_a7e5);
    for _ in 0..50 {
        let n = (g.next() % 8192) as usize;
        let e = restore_err(&g.bytes(n));
        assert!(
            matches!(
                e,
                SnapshotError::BadSignature { .. } | SnapshotError::Truncated { .. }
            ),
            "{e}"
        );
    }
    // A good header, then garbage: whatever the garbage says, an error, no panic and no
    // huge allocation.
    let header = &stream()[..HEADER_LEN];
    for _ in 0..50 {
        let n = (g.next() % 4096) as usize;
        let mut bytes = header.to_vec();
        bytes.extend(g.bytes(n));
        restore_err(&bytes);
    }
    // A section claiming exabytes.
    let mut bytes = header.to_vec();
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes());
    let e = restore_err(&bytes);
    assert!(matches!(e, SnapshotError::TooLarge { .. }), "{e}");
}

#[test]
fn stream_of_another_vm_is_refused() {
    let e = match Vm::restore(
        config("count", 1, 2 * MEMORY, Console::default(), Vec::new()),
        &mut &stream()[..],
    ) {
        Ok(_) => panic!("restored into a VM of another size"),
        Err(e) => e,
    };
    assert!(matches!(e, SnapshotError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("32 MiB"), "{e}");
}

/// A virtio device the driver had started works after a restore: the guest bound vmmci and
/// polls its ISR; the restored VM's vmmci handle finds it bound, and the guest acknowledges
/// a shutdown request and powers off.
#[test]
fn bound_vmmci_device_works_after_restore() {
    let out = Console::default();
    let (handle, runner) =
        start(Vm::new(config("vmmci", 1, MEMORY, out.clone(), Vec::new())).unwrap());
    let start_wait = Instant::now();
    while !out.text().contains("VMMCI ready") {
        assert!(start_wait.elapsed() < DEADLINE, "{}", out.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stream = Vec::new();
    handle.snapshot(&mut stream).unwrap();
    handle.force_stop();
    assert_eq!(runner.join().unwrap(), ExitReason::Stopped);

    let out = Console::default();
    let vm = Vm::restore(
        config("vmmci", 1, MEMORY, out.clone(), Vec::new()),
        &mut &stream[..],
    )
    .unwrap();
    let (handle, runner) = start(vm);
    assert_eq!(handle.request_shutdown(), hypervisor::ShutdownPath::Vmmci);
    assert_eq!(runner.join().unwrap(), ExitReason::Poweroff);
    let text = out.text();
    assert!(text.contains("VMMCI shutdown"), "{text}");
    assert!(!text.contains("BOOT"), "{text}");
}
