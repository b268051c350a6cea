//! Bad images give a clear error naming the file and the problem, never a panic, and never
//! a write outside the image.

mod common;

use common::{run, s, Rng};
use disk::{open_path, DiskError, Format, MAX_CHAIN_IMAGES};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn qcow2(dir: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-f", "qcow2"];
    args.extend_from_slice(opts);
    args.extend([s(&p), "4M"]);
    run("qemu-img", &args);
    p
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn open_err(path: &Path) -> DiskError {
    match open_path(path, None, true) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

/// The message names the file and contains `what`.
fn assert_message(e: &DiskError, path: &Path, what: &str) {
    let msg = e.to_string();
    assert!(
        msg.contains(s(path)),
        "{msg:?} does not name {}",
        path.display()
    );
    assert!(msg.contains(what), "{msg:?} does not say {what:?}");
}

#[test]
fn truncated_header_is_reported_with_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let p = qcow2(dir.path(), "t.qcow2", &[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(50)
        .unwrap();
    let e = open_err(&p);
    assert!(
        matches!(e, DiskError::TruncatedHeader { len: 50, .. }),
        "{e:?}"
    );
    assert_message(&e, &p, "truncated qcow2 header");
}

#[test]
fn garbage_declared_qcow2_is_not_qcow2_and_detected_as_raw_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage");
    let mut data = vec![0u8; 100_000];
    Rng(4).fill(&mut data);
    std::fs::write(&p, &data).unwrap();
    let e = open_path(&p, Some(Format::Qcow2), false).unwrap_err();
    assert!(matches!(e, DiskError::NotQcow2 { .. }), "{e:?}");
    assert_message(&e, &p, "not a qcow2 image");
    assert_eq!(disk::detect_path(&p, None).unwrap(), Format::Raw);
    assert_eq!(open_path(&p, None, false).unwrap().size(), 100_000);
}

#[test]
fn l1_table_past_eof_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let p = qcow2(dir.path(), "l1.qcow2", &[]);
    patch(&p, 40, &(1u64 << 40).to_be_bytes());
    let e = open_err(&p);
    assert!(
        matches!(
            e,
            DiskError::OutsideFile {
                table: "L1 table",
                ..
            }
        ),
        "{e:?}"
    );
    assert_message(&e, &p, "points outside the file");
}

/// Reads a big-endian u64 at `offset`.
fn be64_at(path: &Path, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, offset)
        .unwrap();
    u64::from_be_bytes(b)
}

/// The host-offset bits of L1/L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// The COPIED flag of L1/L2 entries: QEMU writes such clusters in place.
const COPIED: u64 = 1 << 63;

#[test]
fn l2_tables_and_data_clusters_past_eof_are_refused_and_the_file_never_grows() {
    let dir = tempfile::tempdir().unwrap();
    for (table, what) in [("L1", "L2 table"), ("L2", "data cluster")] {
        let p = qcow2(dir.path(), &format!("{table}.qcow2"), &[]);
        run("qemu-io", &["-f", "qcow2", "-c", "write -P 7 0 64k", s(&p)]);
        let l1 = be64_at(&p, 40);
        // In place (COPIED) far beyond the end: writing through it would grow the file.
        let bad = (COPIED | (1u64 << 40)).to_be_bytes();
        match table {
            "L1" => patch(&p, l1, &bad),
            _ => patch(&p, be64_at(&p, l1) & OFFSET_MASK, &bad),
        }
        let len_before = std::fs::metadata(&p).unwrap().len();
        let e = open_err(&p);
        assert!(matches!(e, DiskError::OutsideFile { .. }), "{e:?}");
        assert_message(&e, &p, what);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), len_before);
    }
}

#[test]
fn encrypted_images_are_refused_naming_the_method() {
    let dir = tempfile::tempdir().unwrap();
    for (fmt, name) in [("aes", "encryption (AES)"), ("luks", "encryption (LUKS)")] {
        let opts = format!("encrypt.format={fmt},encrypt.key-secret=s0");
        let p = qcow2(
            dir.path(),
            &format!("{fmt}.qcow2"),
            &["--object", "secret,id=s0,data=pw", "-o", &opts],
        );
        let e = open_err(&p);
        assert!(matches!(e, DiskError::Unsupported { .. }), "{e:?}");
        assert_message(&e, &p, name);
    }
}

#[test]
fn unsupported_incompatible_features_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.raw");
    let data_opt = format!("data_file={}", s(&data));
    let cases: [(&str, &[&str], &str); 3] = [
        ("ext.qcow2", &["-o", &data_opt], "external data file"),
        ("l2.qcow2", &["-o", "extended_l2=on"], "extended L2 entries"),
        (
            "zstd.qcow2",
            &["-o", "compression_type=zstd"],
            "compression type",
        ),
    ];
    for (name, opts, what) in cases {
        let p = qcow2(dir.path(), name, opts);
        let e = open_err(&p);
        assert_message(&e, &p, what);
    }
    // Bits no one has defined yet, and the dirty bit QEMU leaves with lazy refcounts.
    for (bit, what) in [(40u32, "unknown incompatible feature bit 40"), (0, "dirty")] {
        let p = qcow2(dir.path(), &format!("bit{bit}.qcow2"), &[]);
        patch(&p, 72, &(1u64 << bit).to_be_bytes());
        let e = open_err(&p);
        assert_message(&e, &p, what);
    }
    // Version 4 does not exist.
    let p = qcow2(dir.path(), "v4.qcow2", &[]);
    patch(&p, 4, &4u32.to_be_bytes());
    assert_message(&open_err(&p), &p, "version 4");
}

#[test]
fn backing_loops_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = qcow2(
        dir.path(),
        "a.qcow2",
        &["-u", "-F", "qcow2", "-b", "b.qcow2"],
    );
    qcow2(
        dir.path(),
        "b.qcow2",
        &["-u", "-F", "qcow2", "-b", "a.qcow2"],
    );
    let e = open_err(&a);
    assert!(matches!(e, DiskError::BackingLoop { .. }), "{e:?}");
    assert_message(&e, &a, "loops");
    let own = qcow2(
        dir.path(),
        "self.qcow2",
        &["-u", "-F", "qcow2", "-b", "self.qcow2"],
    );
    assert!(matches!(open_err(&own), DiskError::BackingLoop { .. }));
}

/// A chain img0 <- img1 <- ... <- img{n-1}; returns the top.
fn chain(dir: &Path, n: usize) -> PathBuf {
    let mut top = qcow2(dir, "img0.qcow2", &[]);
    for i in 1..n {
        let prev = format!("img{}.qcow2", i - 1);
        top = qcow2(
            dir,
            &format!("img{i}.qcow2"),
            &["-u", "-F", "qcow2", "-b", &prev],
        );
    }
    top
}

#[test]
fn chain_of_the_maximum_opens_and_one_more_is_too_deep() {
    let ok = tempfile::tempdir().unwrap();
    let top = chain(ok.path(), MAX_CHAIN_IMAGES);
    let mut d = open_path(&top, None, true).unwrap();
    d.write_at(&[1; 512], 0).unwrap();
    let deep = tempfile::tempdir().unwrap();
    let top = chain(deep.path(), MAX_CHAIN_IMAGES + 1);
    let e = open_err(&top);
    assert!(matches!(e, DiskError::ChainTooDeep { .. }), "{e:?}");
    assert_message(&e, &top, "longer than 16 images");
}

#[test]
fn missing_or_unreadable_backing_files_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let top = qcow2(
        dir.path(),
        "top.qcow2",
        &["-u", "-F", "qcow2", "-b", "gone.qcow2"],
    );
    let e = open_err(&top);
    assert!(matches!(e, DiskError::Backing { .. }), "{e:?}");
    assert_message(&e, &top, "gone.qcow2");
    // A directory opens but cannot be read: the error still names both.
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let top = qcow2(
        dir.path(),
        "top2.qcow2",
        &["-u", "-F", "qcow2", "-b", "adir"],
    );
    let e = open_err(&top);
    assert!(matches!(e, DiskError::Backing { .. }), "{e:?}");
    assert_message(&e, &top, "adir");
    // A bad base is reported as the base's problem, under the overlay's name.
    let base = qcow2(dir.path(), "badbase.qcow2", &[]);
    patch(&base, 32, &1u32.to_be_bytes());
    let top = qcow2(
        dir.path(),
        "top3.qcow2",
        &["-u", "-F", "qcow2", "-b", "badbase.qcow2"],
    );
    let e = open_err(&top);
    assert_message(&e, &top, "encryption (AES)");
}

#[test]
fn random_header_and_table_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = qcow2(dir.path(), "good.qcow2", &["-o", "cluster_size=4k"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 9 0 100k", s(&good)],
    );
    let pristine = std::fs::read(&good).unwrap();
    let p = dir.path().join("mut.qcow2");
    let mut rng = Rng(77);
    let mut opened = 0;
    for _ in 0..300 {
        let mut data = pristine.clone();
        for _ in 0..1 + rng.below(4) {
            // Mostly the header, L1 and refcount structures in the first clusters.
            let at = rng.below(data.len().min(5 * 4096) as u64) as usize;
            data[at] = rng.next() as u8;
        }
        std::fs::write(&p, &data).unwrap();
        if let Ok(mut d) = open_path(&p, Some(Format::Qcow2), true) {
            opened += 1;
            let mut buf = vec![0u8; 8192];
            let _ = d.read_at(&mut buf, 0);
            let _ = d.write_at(&buf, 4096 * rng.below(100));
            let _ = d.flush();
        }
    }
    assert!(
        opened > 0,
        "no mutated image opened: the loop tested only the header checks"
    );
}

/// Found by the qcow2_open fuzz target: a refcount-table entry with only high bits set, and no
/// refcount block for the header's clusters. imago recursed without bound allocating a
/// refcount block for the refcount block it was allocating.
#[test]
fn fuzz_regression_refblock_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crash.qcow2");
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-refblock-recursion.qcow2");
    std::fs::copy(src, &p).unwrap();
    if let Ok(mut d) = open_path(&p, Some(Format::Qcow2), true) {
        let buf = vec![0xa5u8; 4096];
        let _ = d.write_at(&buf, d.size() / 3);
        let _ = d.flush();
    }
}

/// The same without the stray entry: the header's refcount block is missing from the
/// refcount table (imago would recurse until the stack overflows on the first allocation).
#[test]
fn clusters_in_use_without_refcount_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = qcow2(dir.path(), "norb.qcow2", &["-o", "cluster_size=4k"]);
    let rt = be64_at(&p, 48);
    patch(&p, rt, &0u64.to_be_bytes());
    assert_message(&open_err(&p), &p, "cluster 0 is in use but has refcount 0");
    // A data cluster whose refcount was cleared.
    let p = qcow2(dir.path(), "rc0.qcow2", &["-o", "cluster_size=4k"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 7 0 4k", s(&p)]);
    let rb = be64_at(&p, be64_at(&p, 48)) & OFFSET_MASK;
    let l2 = be64_at(&p, be64_at(&p, 40)) & OFFSET_MASK;
    let data_cluster = (be64_at(&p, l2) & OFFSET_MASK) / 4096;
    patch(&p, rb + 2 * data_cluster, &0u16.to_be_bytes());
    assert_message(
        &open_err(&p),
        &p,
        &format!("cluster {data_cluster} is in use"),
    );
}

/// A header claiming a virtual size its L1 table cannot map (imago would grow the table on
/// the first write beyond it: with a size of exabytes, without bound).
#[test]
fn l1_table_smaller_than_the_virtual_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = qcow2(dir.path(), "big.qcow2", &[]);
    patch(&p, 24, &(1u64 << 60).to_be_bytes());
    let e = open_err(&p);
    assert!(matches!(e, DiskError::InvalidHeader { .. }), "{e:?}");
    assert_message(&e, &p, "too small for a virtual size");
}
