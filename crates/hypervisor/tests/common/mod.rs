//! What the snapshot and migration tests share: a console the test can read while the VM
//! writes it, waiting for the guest's numbered lines, and a VM configuration for the PVH
//! test guest.

// Each test binary compiles its own copy and uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hypervisor::{boot, BootImage, ExitReason, Vm, VmConfig};
use testkit::{guest, Guest};

/// Counts a restored guest must print beyond where it stopped.
pub const MORE_COUNTS: u64 = 5;
/// Longest wait for a guest line.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// COM1 output, shared with the test.
#[derive(Clone, Default)]
pub struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Wait until the last complete `prefix` number of `before` + this console is at least
    /// `n`.
    pub fn wait_for(&self, before: &str, prefix: &str, n: u64) {
        let start = Instant::now();
        loop {
            let text = format!("{before}{}", self.text());
            if numbers(&text, prefix).last().is_some_and(|&c| c >= n) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {prefix}{n} within {DEADLINE:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The numbers of the complete lines `<prefix><n>` (lines with the prefix and something else,
/// such as `BLKLOOP capacity 32768`, are not counts).
pub fn numbers(text: &str, prefix: &str) -> Vec<u64> {
    complete_lines(text)
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The numbers of the complete `COUNT n` lines; any other `COUNT` line fails the test.
pub fn counts(text: &str) -> Vec<u64> {
    complete_lines(text)
        .filter_map(|l| l.strip_prefix("COUNT "))
        .map(|n| n.parse().unwrap_or_else(|_| panic!("bad COUNT line {n:?}")))
        .collect()
}

/// The lines of `text` up to its last newline: the guest may be in the middle of the next.
fn complete_lines(text: &str) -> std::str::Lines<'_> {
    text[..text.rfind('\n').map_or(0, |i| i + 1)].lines()
}

/// The PVH test guest with `cmdline`, its console to `out`.
pub fn config(
    cmdline: &str,
    vcpus: u32,
    memory: u64,
    out: Console,
    disks: Vec<Box<dyn disk::BlockBackend>>,
) -> VmConfig {
    let name = guest(Guest::Pvh).display().to_string();
    let bytes = boot::read_image(std::fs::File::open(guest(Guest::Pvh)).unwrap(), &name).unwrap();
    let (bytes, kind) = boot::classify(bytes, &name).unwrap();
    VmConfig {
        memory,
        vcpus,
        boot: BootImage {
            bytes,
            kind,
            name,
            initrd: None,
            cmdline: cmdline.into(),
        },
        console_out: Box::new(out),
        console_in: None,
        kvm: None,
        disks,
        cdrom: None,
        nics: Vec::new(),
        boot_device: None,
    }
}

/// Run `vm` on a thread; returns its handle and the thread.
pub fn start(vm: Vm) -> (hypervisor::VmHandle, std::thread::JoinHandle<ExitReason>) {
    let handle = vm.handle();
    (handle, std::thread::spawn(move || vm.run().unwrap()))
}
