//! Bad input to vmrun — missing, empty, truncated or malformed images, sizes and counts that
//! do not fit — gives one clear line naming the file or value and exit status 1, never a
//! panic; a guest running an instruction the host cannot emulate is reported as a crash with
//! the instruction bytes (issue 2, "Bad input"; DESIGN.md §5).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{guest, vmrun_exit, Guest};

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, data: &[u8]) -> Scratch {
        let p = std::env::temp_dir().join(format!("vmrun-err-{}-{name}", std::process::id()));
        std::fs::write(&p, data).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn vmrun(args: &[&str]) -> Output {
    Command::new(VMRUN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vmrun")
}

/// Exit status 1 and exactly one stderr line that contains every `needle`.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(vmrun_exit::ERROR), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_kernel_names_the_file() {
    let out = vmrun(&["-b", "/nonexistent/bsd.rd"]);
    assert_error(&out, &["/nonexistent/bsd.rd", "No such file"]);
}

#[test]
fn empty_and_truncated_images_name_the_file() {
    let empty = Scratch::new("empty", b"");
    assert_error(&vmrun(&["-b", path(&empty.0)]), &[path(&empty.0), "empty"]);

    let pvh = std::fs::read(guest(Guest::Pvh)).unwrap();
    let cut = Scratch::new("cut-elf", &pvh[..pvh.len() / 2]);
    assert_error(&vmrun(&["-b", path(&cut.0)]), &[path(&cut.0), "truncated"]);

    let bz = std::fs::read(guest(Guest::BzImage)).unwrap();
    let cut = Scratch::new("cut-bz", &bz[..0x300]);
    assert_error(&vmrun(&["-b", path(&cut.0)]), &[path(&cut.0)]);

    let gz = Scratch::new("bad-gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]);
    assert_error(&vmrun(&["-b", path(&gz.0)]), &[path(&gz.0), "gzip"]);
}

#[test]
fn oversized_bios_is_refused() {
    let big = Scratch::new("big-bios", &vec![0x90; (1 << 20) + 1]);
    assert_error(
        &vmrun(&["-b", path(&big.0)]),
        &[path(&big.0), "larger than 1 MiB"],
    );
}

#[test]
fn memory_sizes_that_do_not_fit_are_refused() {
    let pvh = guest(Guest::Pvh);
    assert_error(&vmrun(&["-b", path(&pvh), "-m", "0"]), &["memory size"]);
    assert_error(
        &vmrun(&["-b", path(&pvh), "-m", "12Q"]),
        &["memory size", "12Q"],
    );
    assert_error(&vmrun(&["-b", path(&pvh), "-m", "2T"]), &["memory size"]);
    // The OpenBSD test kernel loads at 16 MiB: a 4 MiB VM cannot hold it.
    let obsd = guest(Guest::OpenBsd);
    assert_error(
        &vmrun(&["-b", path(&obsd), "-m", "4M"]),
        &[path(&obsd), "outside the VM"],
    );
}

#[test]
fn vcpu_counts_out_of_range_are_refused() {
    let pvh = guest(Guest::Pvh);
    assert_error(&vmrun(&["-b", path(&pvh), "-p", "0"]), &["0 vCPUs"]);
    assert_error(&vmrun(&["-b", path(&pvh), "-p", "5000"]), &["5000 vCPUs"]);
}

#[test]
fn initrd_problems_name_the_initrd() {
    let pvh = guest(Guest::Pvh);
    assert_error(
        &vmrun(&["-b", path(&pvh), "--initrd", "/nonexistent/initrd"]),
        &["/nonexistent/initrd"],
    );
    let huge = Scratch::new("huge-initrd", &vec![0; 3 << 20]);
    assert_error(
        &vmrun(&["-b", path(&pvh), "-m", "4M", "--initrd", path(&huge.0)]),
        &["initrd", "do not fit"],
    );
    let bios = guest(Guest::Bios);
    assert_error(
        &vmrun(&["-b", path(&bios), "--cmdline", "x"]),
        &["needs a Linux bzImage or PVH kernel"],
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = vmrun(&["-m", "64M"]);
    assert_eq!(out.status.code(), Some(vmrun_exit::USAGE));
}

/// A BIOS image whose first instruction is XRSTOR: PVM's instruction emulator lacks it, so on
/// such a host the VM must end as a crash that shows RIP and the instruction bytes.
#[test]
fn unemulatable_instruction_is_a_crash_with_its_bytes() {
    if !Path::new("/sys/module/kvm_pvm").exists() {
        eprintln!("SKIPPED: this host's /dev/kvm is not PVM, so XRSTOR in real mode does not crash the guest");
        return;
    }
    let mut image = vec![0xf4u8; 0x1_0000];
    let xrstor = [0x0f, 0xae, 0x2e, 0x00, 0x00]; // xrstor [0x0000]
    image[0xFFF0..0xFFF5].copy_from_slice(&xrstor);
    let bios = Scratch::new("xrstor-bios", &image);
    let out = vmrun(&["-b", path(&bios.0), "-m", "16M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(vmrun_exit::CRASH), "{err}");
    assert!(err.contains("KVM_EXIT_INTERNAL_ERROR"), "{err}");
    assert!(err.contains("instruction bytes: 0f ae 2e 00 00"), "{err}");
}

/// An ISO that is not one (F-HW-14, issue 5 "Bad input"): refused at start, naming the file.
#[test]
fn a_cdrom_image_that_is_not_an_iso_is_refused() {
    let not_iso = Scratch::new("not.iso", &[0x5a; 64 * 1024]);
    let out = vmrun(&["-b", path(&guest(Guest::Pvh)), "-r", path(&not_iso.0)]);
    assert_error(&out, &[path(&not_iso.0), "not an ISO 9660 image"]);
    let empty = Scratch::new("empty.iso", b"");
    let out = vmrun(&["-b", path(&guest(Guest::Pvh)), "-r", path(&empty.0)]);
    assert_error(&out, &[path(&empty.0), "empty"]);
}
