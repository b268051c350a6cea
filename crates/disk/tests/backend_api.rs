//! The BlockBackend contract on both backends: bounds, read-only refusal, and qcow2 cases
//! beyond plain chains (raw bases, internal snapshots made by QEMU).

mod common;

use common::{qemu_check, qemu_compare, read_all, run, s};
use disk::{create_qcow2, create_raw, open_path, Format};
use std::io::ErrorKind;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn check_contract(path: &Path) {
    let len_before = std::fs::metadata(path).unwrap().len();
    {
        let mut d = open_path(path, None, true).unwrap();
        assert_eq!(d.size(), 2 * MIB);
        assert!(!d.read_only());
        let mut buf = [0u8; 512];
        let past = [
            d.read_at(&mut buf, 2 * MIB - 256),
            d.write_at(&buf, 2 * MIB),
            d.write_at(&buf, u64::MAX - 100),
            d.discard(MIB, 2 * MIB),
            d.write_zeroes(u64::MAX, 2),
        ];
        for r in past {
            assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        // The last sector is fine.
        d.write_at(&[9; 512], 2 * MIB - 512).unwrap();
        d.read_at(&mut buf, 2 * MIB - 512).unwrap();
        assert_eq!(buf, [9; 512]);
        d.discard(2 * MIB - 512, 512).unwrap();
        d.read_at(&mut buf, 2 * MIB - 512).unwrap();
        assert_eq!(buf, [0; 512], "discarded range must read as zeroes");
        d.flush().unwrap();
    }
    let mut ro = open_path(path, None, false).unwrap();
    assert!(ro.read_only());
    let e = ro.write_at(&[1; 512], 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(ro.write_zeroes(0, 512).is_err());
    assert!(ro.discard(0, 512).is_err());
    ro.flush().unwrap();
    drop(ro);
    if path.extension().is_some_and(|e| e == "raw") {
        assert_eq!(std::fs::metadata(path).unwrap().len(), len_before);
    }
}

#[test]
fn raw_and_qcow2_keep_the_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("c.raw");
    let q = dir.path().join("c.qcow2");
    create_raw(&raw, 2 * MIB).unwrap();
    create_qcow2(&q, 2 * MIB).unwrap();
    check_contract(&raw);
    check_contract(&q);
    qemu_check(&q);
}

#[test]
fn qcow2_overlay_on_a_raw_base_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0x42u8; 2 * MIB as usize]).unwrap();
    let ov = dir.path().join("ov.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            "base.raw",
            s(&ov),
        ],
    );
    let base_before = std::fs::read(&base).unwrap();
    {
        let mut d = open_path(&ov, None, true).unwrap();
        assert!(read_all(d.as_mut()).iter().all(|&b| b == 0x42));
        d.write_at(&[7; 1000], 70_000).unwrap();
        let all = read_all(d.as_mut());
        assert!(all[70_000..71_000].iter().all(|&b| b == 7));
        // Copy-on-write kept the rest of the cluster from the base.
        assert!(all[65_536..70_000].iter().all(|&b| b == 0x42));
    }
    assert!(std::fs::read(&base).unwrap() == base_before);
    qemu_check(&ov);
}

#[test]
fn writes_to_an_image_with_internal_snapshots_keep_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.qcow2");
    run("qemu-img", &["create", "-f", "qcow2", s(&img), "4M"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 1 0 1M", s(&img)],
    );
    run("qemu-img", &["snapshot", "-c", "snap1", s(&img)]);
    // The snapshot's clusters have refcount 2; a write must copy, not overwrite in place.
    {
        let mut d = open_path(&img, Some(Format::Qcow2), true).unwrap();
        d.write_at(&[2; 4096], 8192).unwrap();
        d.write_zeroes(MIB / 2, 65536).unwrap();
        d.discard(0, 4096).unwrap();
    }
    qemu_check(&img);
    let snap = dir.path().join("snap.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-l",
            "snapshot.name=snap1",
            "-O",
            "raw",
            s(&img),
            s(&snap),
        ],
    );
    let data = std::fs::read(&snap).unwrap();
    assert!(
        data[..MIB as usize].iter().all(|&b| b == 1),
        "snapshot changed"
    );
    let now = dir.path().join("now.raw");
    let mut expect = data.clone();
    expect[8192..8192 + 4096].fill(2);
    expect[MIB as usize / 2..MIB as usize / 2 + 65536].fill(0);
    expect[..4096].fill(0);
    std::fs::write(&now, &expect).unwrap();
    qemu_compare(&img, "qcow2", &now, "raw");
}

#[test]
fn detection_prefers_the_explicit_format_then_magic() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("image.raw"); // the name does not matter to the library
    create_qcow2(&q, MIB).unwrap();
    assert_eq!(disk::detect_path(&q, None).unwrap(), Format::Qcow2);
    assert_eq!(
        disk::detect_path(&q, Some(Format::Raw)).unwrap(),
        Format::Raw
    );
    // Opened as raw on request: the guest sees the qcow2 file's bytes.
    let d = open_path(&q, Some(Format::Raw), false).unwrap();
    assert_eq!(d.size(), std::fs::metadata(&q).unwrap().len());
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(disk::detect_path(&empty, None).unwrap(), Format::Raw);
}
