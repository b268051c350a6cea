//! vmrun boots Debian's SeaBIOS from a virtio-blk disk (issue 5 item 5, F-BOOT-04, F-BOOT-05):
//! SeaBIOS finds fw_cfg, the e820 map and the `bootorder` naming the first disk, loads the
//! disk's MBR and jumps to it; the MBR prints a marker on COM1 and powers the VM off through
//! ACPI. Runs on the real /dev/kvm; SeaBIOS's ring-0 code is slow on emulating hosts.
//! The same boot code as an El Torito "no emulation" image on an ISO boots from the
//! virtio-scsi CD-ROM (F-HW-14, `boot device cdrom`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::{Boot, Vmm};

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");
/// Debian's SeaBIOS (packages `seabios` / `qemu-system-x86`).
const SEABIOS: &str = "/usr/share/seabios/bios.bin";
/// Generous: SeaBIOS runs in emulated ring 0 here (DESIGN.md §5).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const SECTOR: usize = 512;
/// Sectors of the disk behind the MBR, so it looks like a real (small) disk.
const DISK_SECTORS: usize = 2048;

/// A boot sector, hand-assembled 16-bit code loaded at 0000:7C00:
/// print `MSG` on COM1 (polling LSR bit 5, transmitter empty), then write
/// `SLP_EN | SLP_TYP 5` to PM1a_CNT at 0x604 (docs/platform.md) to power off.
const MBR_CODE: [u8; 42] = [
    0xfa, // cli
    0xfc, // cld
    0x31, 0xc0, // xor ax, ax
    0x8e, 0xd8, // mov ds, ax
    0xbe, 0x2a, 0x7c, // mov si, 0x7c2a (MSG, right after the code)
    0xac, // next: lodsb
    0x84, 0xc0, // test al, al
    0x74, 0x12, // jz done
    0x88, 0xc3, // mov bl, al
    0xba, 0xfd, 0x03, // wait: mov dx, 0x3fd (LSR)
    0xec, // in al, dx
    0xa8, 0x20, // test al, 0x20 (THRE)
    0x74, 0xf8, // jz wait
    0xba, 0xf8, 0x03, // mov dx, 0x3f8 (THR)
    0x88, 0xd8, // mov al, bl
    0xee, // out dx, al
    0xeb, 0xe9, // jmp next
    0xba, 0x04, 0x06, // done: mov dx, 0x604 (PM1a_CNT)
    0xb8, 0x00, 0x34, // mov ax, 0x3400 (SLP_EN | 5 << 10)
    0xef, // out dx, ax
    0xf4, // halt: hlt
    0xeb, 0xfd, // jmp halt
];
/// On a line of its own: SeaBIOS's "Booting from Hard Disk..." has no newline.
const MSG: &[u8] = b"\r\nMBR-OK\r\n\0";
const MARKER: &str = "MBR-OK";
/// Boot sector signature at offset 510.
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xaa];

/// The boot sector: code, its message, the signature.
fn boot_sector(msg: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; SECTOR];
    s[..MBR_CODE.len()].copy_from_slice(&MBR_CODE);
    s[MBR_CODE.len()..MBR_CODE.len() + msg.len()].copy_from_slice(msg);
    s[SECTOR - 2..].copy_from_slice(&BOOT_SIGNATURE);
    s
}

/// The disk image: the boot sector, then zeros.
fn disk_image() -> Vec<u8> {
    let mut disk = boot_sector(MSG);
    disk.resize(SECTOR * DISK_SECTORS, 0);
    disk
}

/// A file that deletes itself.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Boots `vmrun` with `args` under SeaBIOS until `marker`, then expects a poweroff.
fn boot_to_marker(args: &[&std::ffi::OsStr], marker: &str) {
    let mut cmd = Boot::bios(SEABIOS)
        .mem_mib(64)
        .vmrun_command(Path::new(VMRUN));
    cmd.args(args);
    let mut vm = Vmm::spawn(cmd).expect("spawn vmrun");
    let started = std::time::Instant::now();
    if let Err(e) = vm.expect_line(marker, BOOT_TIMEOUT) {
        panic!(
            "no {marker}: {e:?}\nconsole: {:?}\nlog: {}",
            vm.transcript(),
            vm.stderr()
        );
    }
    println!("SeaBIOS reached {marker} in {:?}", started.elapsed());
    let status = vm.wait_exit(EXIT_TIMEOUT).expect("vmrun exits");
    assert_eq!(status.code(), Some(0), "poweroff; log: {}", vm.stderr());
}

/// SeaBIOS boots an ISO's El Torito image from the virtio-scsi CD-ROM when told to
/// (`-B cdrom`), past a bootable disk.
#[test]
fn seabios_boots_an_iso_from_the_cdrom() {
    if !Path::new(SEABIOS).exists() {
        println!("SKIPPED: {SEABIOS} is missing (install Debian's seabios package)");
        return;
    }
    let pid = std::process::id();
    let iso = TempFile(std::env::temp_dir().join(format!("vmrun-seabios-{pid}.iso")));
    let cd_msg = b"\r\nCD-OK\r\n\0";
    std::fs::write(&iso.0, testkit::iso::el_torito(&boot_sector(cd_msg), &[])).unwrap();
    let disk = TempFile(std::env::temp_dir().join(format!("vmrun-seabios-{pid}-cd.raw")));
    std::fs::write(&disk.0, disk_image()).unwrap();
    boot_to_marker(
        &[
            "-d".as_ref(),
            disk.0.as_os_str(),
            "-r".as_ref(),
            iso.0.as_os_str(),
            "-B".as_ref(),
            "cdrom".as_ref(),
        ],
        "CD-OK",
    );
}

#[test]
fn seabios_boots_the_first_disk() {
    if !Path::new(SEABIOS).exists() {
        println!("SKIPPED: {SEABIOS} is missing (install Debian's seabios package)");
        return;
    }
    let disk =
        TempFile(std::env::temp_dir().join(format!("vmrun-seabios-{}.raw", std::process::id())));
    std::fs::write(&disk.0, disk_image()).expect("write the disk image");
    boot_to_marker(&["-d".as_ref(), disk.0.as_os_str()], MARKER);
}
