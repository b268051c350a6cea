//! Helpers shared by the disk tests: running qemu-img/qemu-io, test data, a tiny PRNG.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::Command;

/// Runs a command, panics with its stderr unless it exits 0, returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img check`: passes if qemu-img finds no corruption and no leak.
pub fn qemu_check(path: &Path) {
    run(
        "qemu-img",
        &["check", "-f", "qcow2", path.to_str().unwrap()],
    );
}

/// `qemu-img compare` of two images (formats probed by qemu-img); panics unless identical.
pub fn qemu_compare(a: &Path, a_fmt: &str, b: &Path, b_fmt: &str) {
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            a_fmt,
            "-F",
            b_fmt,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
}

/// xorshift64*: deterministic test data without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A raw file of `size` bytes with random data in some 64 KiB-aligned stretches, zeroes
/// elsewhere (so converters have holes to skip) and a few compressible runs.
pub fn make_raw_pattern(path: &Path, size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut data = vec![0u8; size];
    let block = 64 * 1024;
    for (i, chunk) in data.chunks_mut(block).enumerate() {
        match rng.below(4) {
            0 => {}
            1 => chunk.fill(i as u8 | 1),
            _ => rng.fill(chunk),
        }
    }
    std::fs::write(path, &data).unwrap();
    data
}

/// Reads a whole disk through a backend in odd-sized pieces (so reads straddle clusters).
pub fn read_all(backend: &mut dyn disk::BlockBackend) -> Vec<u8> {
    let size = backend.size() as usize;
    let mut out = vec![0u8; size];
    let piece = 12_345;
    let mut off = 0;
    while off < size {
        let n = piece.min(size - off);
        backend.read_at(&mut out[off..off + n], off as u64).unwrap();
        off += n;
    }
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
