//! Interoperability with real qemu-img/qemu-io: images QEMU makes read back identical through
//! our backend; images we make and write pass `qemu-img check` and compare equal to a raw
//! reference written in parallel.

mod common;

use common::{make_raw_pattern, qemu_check, qemu_compare, read_all, run, s, Rng};
use disk::{open_path, BlockBackend, Format};
use std::path::Path;

const MIB: usize = 1 << 20;

/// qemu-img's own raw rendering of an image.
fn qemu_raw(image: &Path, out: &Path) -> Vec<u8> {
    run("qemu-img", &["convert", "-O", "raw", s(image), s(out)]);
    std::fs::read(out).unwrap()
}

#[test]
fn qemu_made_images_read_identical_v2_v3_all_cluster_sizes_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    make_raw_pattern(&src, 5 * MIB + 4096, 7);
    for compat in ["0.10", "1.1"] {
        for cluster in ["4k", "64k", "2M"] {
            for compressed in [false, true] {
                let img = dir
                    .path()
                    .join(format!("q-{compat}-{cluster}-{compressed}.qcow2"));
                let opts = format!("compat={compat},cluster_size={cluster}");
                let mut args = vec!["convert", "-O", "qcow2", "-o", &opts];
                if compressed {
                    args.push("-c");
                }
                args.extend([s(&src), s(&img)]);
                run("qemu-img", &args);
                let expect = qemu_raw(&img, &dir.path().join("expect.raw"));
                let mut ours = open_path(&img, None, false).unwrap();
                assert!(ours.read_only());
                assert_eq!(ours.size(), expect.len() as u64, "{}", img.display());
                assert!(
                    read_all(ours.as_mut()) == expect,
                    "{} differs",
                    img.display()
                );
            }
        }
    }
}

/// Writes `pattern` at `offset` (bytes) into an image with qemu-io.
fn qemu_io_write(img: &Path, pattern: u8, offset: u64, len: u64) {
    let cmd = format!("write -P {pattern} {offset} {len}");
    run("qemu-io", &["-f", "qcow2", "-c", &cmd, s(img)]);
}

#[test]
fn qemu_made_chain_of_eight_with_relative_paths_reads_identical() {
    let dir = tempfile::tempdir().unwrap();
    // Bases live in a subdirectory and are named relative to it: resolution must use the
    // referencing image's directory, not ours.
    let sub = dir.path().join("bases");
    std::fs::create_dir(&sub).unwrap();
    let base = sub.join("img0.qcow2");
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-o", "compat=0.10", s(&base), "8M"],
    );
    qemu_io_write(&base, 0x11, 0, 8 * MIB as u64);
    let mut prev = "img0.qcow2".to_string();
    for i in 1..8u64 {
        let img = sub.join(format!("img{i}.qcow2"));
        let cluster = if i % 2 == 0 { "4k" } else { "64k" };
        run(
            "qemu-img",
            &[
                "create",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                &prev,
                "-o",
                &format!("cluster_size={cluster}"),
                s(&img),
            ],
        );
        // Each level overwrites a different, unaligned stretch.
        qemu_io_write(&img, 0x20 + i as u8, i * 900_000 + 512, 70_000);
        prev = format!("img{i}.qcow2");
    }
    let top = sub.join("img7.qcow2");
    let expect = qemu_raw(&top, &dir.path().join("expect.raw"));
    let std_cwd = std::env::current_dir().unwrap();
    assert_ne!(std_cwd, sub, "test must not run in the bases' directory");
    let mut ours = open_path(&top, None, false).unwrap();
    assert!(read_all(ours.as_mut()) == expect);
}

/// Applies the same random writes, discards and write-zeroes to `ours` and to `reference`.
fn mirror_random_io(ours: &mut dyn BlockBackend, reference: &mut dyn BlockBackend, seed: u64) {
    let mut rng = Rng(seed);
    let size = ours.size();
    assert_eq!(size, reference.size());
    let mut buf = vec![0u8; 300_000];
    for _ in 0..400 {
        let len = 1 + rng.below(buf.len() as u64);
        let off = rng.below(size - len);
        match rng.below(10) {
            0 => {
                ours.discard(off, len).unwrap();
                reference.discard(off, len).unwrap();
            }
            1 => {
                ours.write_zeroes(off, len).unwrap();
                reference.write_zeroes(off, len).unwrap();
            }
            2 => {
                ours.flush().unwrap();
            }
            _ => {
                let data = &mut buf[..len as usize];
                rng.fill(data);
                ours.write_at(data, off).unwrap();
                reference.write_at(data, off).unwrap();
            }
        }
    }
    ours.flush().unwrap();
    reference.flush().unwrap();
}

#[test]
fn our_qcow2_written_randomly_passes_check_and_compares_equal_to_raw() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ours.qcow2");
    let reference = dir.path().join("ref.raw");
    disk::create_qcow2(&img, 16 * MIB as u64).unwrap();
    disk::create_raw(&reference, 16 * MIB as u64).unwrap();
    {
        let mut ours = open_path(&img, Some(Format::Qcow2), true).unwrap();
        let mut raw = open_path(&reference, None, true).unwrap();
        mirror_random_io(ours.as_mut(), raw.as_mut(), 1);
        // Our own read-back agrees with the reference too.
        assert!(read_all(ours.as_mut()) == read_all(raw.as_mut()));
    }
    qemu_check(&img);
    qemu_compare(&img, "qcow2", &reference, "raw");
    let info = run("qemu-img", &["info", "--output=json", s(&img)]);
    assert!(info.contains("\"compat\": \"1.1\""), "{info}");
    assert!(info.contains("\"cluster-size\": 65536"), "{info}");
    assert!(info.contains("\"refcount-bits\": 16"), "{info}");
}

#[test]
fn our_writes_to_qemu_made_v2_v3_and_1_and_64_bit_refcount_images_pass_check() {
    for opts in [
        "compat=0.10",
        "compat=1.1",
        "refcount_bits=1",
        "refcount_bits=64",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("q.qcow2");
        let src = dir.path().join("src.raw");
        let reference = dir.path().join("ref.raw");
        make_raw_pattern(&src, 4 * MIB, 3);
        std::fs::copy(&src, &reference).unwrap();
        let opts = format!("{opts},cluster_size=4k");
        run(
            "qemu-img",
            &["convert", "-O", "qcow2", "-o", &opts, s(&src), s(&img)],
        );
        {
            let mut ours = open_path(&img, None, true).unwrap();
            let mut raw = open_path(&reference, None, true).unwrap();
            mirror_random_io(ours.as_mut(), raw.as_mut(), 2);
        }
        qemu_check(&img);
        qemu_compare(&img, "qcow2", &reference, "raw");
    }
}

#[test]
fn overlay_writes_leave_base_untouched_and_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    let reference = dir.path().join("ref.raw");
    make_raw_pattern(&src, 8 * MIB, 5);
    std::fs::copy(&src, &reference).unwrap();
    run("qemu-img", &["convert", "-O", "qcow2", s(&src), s(&base)]);
    let base_before = std::fs::read(&base).unwrap();
    let size = disk::create_overlay(&overlay, "base.qcow2", Some(8 * MIB as u64)).unwrap();
    assert_eq!(size, 8 * MIB as u64);
    {
        let mut ours = open_path(&overlay, None, true).unwrap();
        let mut raw = open_path(&reference, None, true).unwrap();
        mirror_random_io(ours.as_mut(), raw.as_mut(), 9);
    }
    assert!(
        std::fs::read(&base).unwrap() == base_before,
        "base image modified"
    );
    qemu_check(&overlay);
    qemu_compare(&overlay, "qcow2", &reference, "raw");
    let info = run("qemu-img", &["info", "--output=json", s(&overlay)]);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
}
