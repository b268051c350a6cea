//! Opens arbitrary bytes as a qcow2 image, the way vmd opens a disk a VM owner supplies, then
//! reads, writes, zeroes and flushes a little through it: errors are fine, panics are not.
//! The image is a single file (open_chain with no bases): a header that names a backing file
//! must be refused, not followed to some file on the fuzzing host.

#![no_main]

use std::io::Write;
use std::path::PathBuf;

use disk::{open_chain, BlockBackend, ChainImage, Format};
use libfuzzer_sys::fuzz_target;

/// Bytes read and written per access: a few clusters of the smallest size.
const IO_LEN: usize = 4096;

/// A tmpfs, where the flush's fdatasync costs nothing; the default temp dir otherwise.
const FAST_TMP: &str = "/dev/shm";

fn image_path() -> PathBuf {
    let dir = Some(PathBuf::from(FAST_TMP))
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("qcow2_open_fuzz.{}", std::process::id()))
}

fn exercise(d: &mut dyn BlockBackend) {
    let size = d.size();
    let mut buf = vec![0u8; IO_LEN];
    let len = (IO_LEN as u64).min(size) as usize;
    for off in [0, size / 2, size.saturating_sub(len as u64)] {
        let _ = d.read_at(&mut buf[..len], off);
    }
    buf.fill(0xa5);
    let _ = d.write_at(&buf[..len], size / 3);
    let _ = d.write_zeroes(0, len as u64);
    let _ = d.discard(size / 2, len as u64);
    let _ = d.flush();
    let _ = d.read_at(&mut buf[..len], size / 3);
}

fuzz_target!(|data: &[u8]| {
    let path = image_path();
    let mut file = std::fs::File::create(&path).expect("temp file");
    file.write_all(data).expect("write temp file");
    drop(file);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("reopen temp file");
    let image = ChainImage {
        file,
        path: path.clone(),
        format: Some(Format::Qcow2),
    };
    if let Ok(mut d) = open_chain(vec![image], true) {
        exercise(d.as_mut());
    }
});
