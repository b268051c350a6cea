//! `vmctl create` semantics (spec §7.4) and the OFD locks that keep two writers off one image.

mod common;

use common::{make_raw_pattern, qemu_check, qemu_compare, read_all, run, s};
use disk::{convert, create_overlay, create_qcow2, create_raw, open_path, DiskError, Format};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const MIB: u64 = 1 << 20;

#[test]
fn create_raw_and_qcow2_are_0600_and_never_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("a.raw");
    let q = dir.path().join("a.qcow2");
    create_raw(&raw, 3 * MIB).unwrap();
    create_qcow2(&q, 3 * MIB).unwrap();
    for p in [&raw, &q] {
        let meta = std::fs::metadata(p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 3 * MIB);
    assert_eq!(
        std::fs::metadata(&raw).unwrap().blocks(),
        0,
        "raw image not sparse"
    );
    qemu_check(&q);
    assert_eq!(open_path(&q, None, false).unwrap().size(), 3 * MIB);
    std::fs::write(&raw, b"keep").unwrap();
    for r in [create_raw(&raw, MIB), create_qcow2(&raw, MIB)] {
        let e = r.unwrap_err();
        assert!(matches!(e, DiskError::Exists { .. }), "{e:?}");
        assert!(e.to_string().contains("file exists"));
    }
    assert_eq!(std::fs::read(&raw).unwrap(), b"keep");
}

#[test]
fn overlay_requires_qcow2_base_of_the_same_size() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_qcow2(&base, 4 * MIB).unwrap();
    let ov = dir.path().join("ov.qcow2");
    let e = create_overlay(&ov, "base.qcow2", Some(5 * MIB)).unwrap_err();
    assert!(
        e.to_string().contains("differs from the base image's size"),
        "{e}"
    );
    assert!(!ov.exists(), "failed create left a file");
    let raw = dir.path().join("base.raw");
    create_raw(&raw, 4 * MIB).unwrap();
    let e = create_overlay(&ov, "base.raw", None).unwrap_err();
    assert!(e.to_string().contains("is not qcow2"), "{e}");
    let e = create_overlay(&ov, "missing.qcow2", None).unwrap_err();
    assert!(matches!(e, DiskError::Backing { .. }), "{e:?}");
    assert_eq!(create_overlay(&ov, "base.qcow2", None).unwrap(), 4 * MIB);
    qemu_check(&ov);
    // Stored as typed (relative), resolved against the overlay's directory.
    let info = run("qemu-img", &["info", "--output=json", s(&ov)]);
    assert!(
        info.contains("\"backing-filename\": \"base.qcow2\""),
        "{info}"
    );
    assert!(
        info.contains("\"backing-filename-format\": \"qcow2\""),
        "{info}"
    );
}

#[test]
fn convert_chain_to_raw_and_qcow2_skips_zeroes_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let data = make_raw_pattern(&src, 6 * MIB as usize + 1000, 11);
    let base = dir.path().join("base.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&src), s(&base)]);
    let top = dir.path().join("top.qcow2");
    create_overlay(&top, "base.qcow2", None).unwrap();
    {
        let mut d = open_path(&top, None, true).unwrap();
        d.write_at(&[0x5a; 70_000], 100_000).unwrap();
    }
    let expect = read_all(open_path(&top, None, false).unwrap().as_mut());
    assert!(expect[..100_000] == data[..100_000]);
    for format in [Format::Raw, Format::Qcow2] {
        let out = dir.path().join(format!("out.{}", format.name()));
        let mut seen = Vec::new();
        let mut report = |p: disk::Progress| seen.push(p);
        let size = convert(&top, None, &out, format, None, Some(&mut report)).unwrap();
        // Rounded up to whole MiB, like vmctl sizes.
        assert_eq!(size, 7 * MIB);
        assert!(seen.windows(2).all(|w| w[0].done < w[1].done));
        assert_eq!(seen.last().unwrap().done, seen.last().unwrap().total);
        let got = read_all(open_path(&out, Some(format), false).unwrap().as_mut());
        assert!(got[..expect.len()] == expect[..]);
        assert!(got[expect.len()..].iter().all(|&b| b == 0));
        let nonzero = expect
            .chunks(65536)
            .filter(|c| c.iter().any(|&b| b != 0))
            .count() as u64;
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated <= nonzero * 65536 + 4 * 65536,
            "{format:?} output not sparse: {allocated} bytes for {nonzero} data chunks"
        );
        if format == Format::Qcow2 {
            qemu_check(&out);
        }
        qemu_compare(&out, format.name(), &top, "qcow2");
    }
    // Smaller than the input: refused, nothing created; existing output: refused.
    let small = dir.path().join("small.raw");
    let e = convert(&top, None, &small, Format::Raw, Some(MIB), None).unwrap_err();
    assert!(e.to_string().contains("smaller than the input"), "{e}");
    assert!(!small.exists());
    let e = convert(&top, None, &src, Format::Raw, None, None).unwrap_err();
    assert!(matches!(e, DiskError::Exists { .. }), "{e:?}");
}

#[test]
fn second_writer_gets_in_use_and_readers_share() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["l.raw", "l.qcow2"] {
        let p = dir.path().join(name);
        if name.ends_with("raw") {
            create_raw(&p, MIB).unwrap();
        } else {
            create_qcow2(&p, MIB).unwrap();
        }
        let writer = open_path(&p, None, true).unwrap();
        for writable in [true, false] {
            let e = open_path(&p, None, writable).unwrap_err();
            assert!(matches!(e, DiskError::InUse { .. }), "{e:?}");
            assert!(e.to_string().contains("in use"), "{e}");
        }
        drop(writer);
        let r1 = open_path(&p, None, false).unwrap();
        let r2 = open_path(&p, None, false).unwrap();
        assert!(matches!(
            open_path(&p, None, true).unwrap_err(),
            DiskError::InUse { .. }
        ));
        drop((r1, r2));
        open_path(&p, None, true).unwrap();
    }
}

#[test]
fn base_in_use_by_an_overlay_cannot_be_opened_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_qcow2(&base, MIB).unwrap();
    let ov1 = dir.path().join("ov1.qcow2");
    let ov2 = dir.path().join("ov2.qcow2");
    create_overlay(&ov1, "base.qcow2", None).unwrap();
    create_overlay(&ov2, "base.qcow2", None).unwrap();
    let _a = open_path(&ov1, None, true).unwrap();
    // Two VMs on one base: fine.
    let _b = open_path(&ov2, None, true).unwrap();
    let e = open_path(&base, None, true).unwrap_err();
    assert!(matches!(e, DiskError::InUse { .. }), "{e:?}");
}

#[test]
fn open_chain_takes_files_opened_by_the_caller_and_checks_they_match() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    create_qcow2(&base, MIB).unwrap();
    let top = dir.path().join("top.qcow2");
    create_overlay(&top, "base.qcow2", None).unwrap();
    let open = |p: &std::path::Path, w: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(w)
            .open(p)
            .unwrap()
    };
    let top_file = open(&top, true);
    let info = disk::inspect(&top_file, &top, None).unwrap();
    assert_eq!(info.backing_name.as_deref(), Some("base.qcow2"));
    assert_eq!(info.backing_path.as_deref(), Some(base.as_path()));
    assert_eq!(info.backing_format, Some(Format::Qcow2));
    // The base is missing from the list: refused, naming it.
    let img = |file, path: &std::path::Path| disk::ChainImage {
        file,
        path: path.into(),
        format: None,
    };
    let e = disk::open_chain(vec![img(top_file, &top)], true).unwrap_err();
    assert!(e.to_string().contains("was not passed"), "{e}");
    // The same file twice: a loop.
    let e = disk::open_chain(
        vec![img(open(&top, true), &top), img(open(&top, false), &top)],
        true,
    )
    .unwrap_err();
    assert!(matches!(e, DiskError::BackingLoop { .. }), "{e:?}");
    let mut d = disk::open_chain(
        vec![img(open(&top, true), &top), img(open(&base, false), &base)],
        true,
    )
    .unwrap();
    d.write_at(&[3; 4096], 0).unwrap();
    d.flush().unwrap();
}
