//! testkit's polled PCI and virtio drivers run in a guest under vmrun (issue 5 item 6): the
//! device model is driven end to end through the registers a real driver uses, and the host
//! checks the result (the disk files, the exit status). Runs on the real /dev/kvm.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::{blk_pattern, guest, vmrun_exit, Boot, Guest, Vmm, SECTOR_SIZE};

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");
/// Generous: the host emulates guest ring-0 code and CI machines are busy.
const LINE: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(30);
/// Raw test disks: 1 MiB, 2048 sectors.
const DISK_SECTORS: u64 = 2048;

fn start(boot: &Boot) -> Vmm {
    Vmm::spawn(boot.vmrun_command(Path::new(VMRUN))).expect("spawn vmrun")
}

fn finish(vm: &mut Vmm) -> i32 {
    vm.expect_line("DONE", LINE).unwrap();
    vm.wait_exit(EXIT).unwrap().code().unwrap_or(-1)
}

/// A directory of scratch files, removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("vmrun-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A zero-filled raw disk of [`DISK_SECTORS`] sectors.
    fn disk(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, vec![0u8; DISK_SECTORS as usize * SECTOR_SIZE]).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `PCI` line: slot.function, vendor, device, class, subsystem id, interrupt line, BARs.
#[derive(Debug)]
struct PciFunction {
    slot: String,
    vendor: u16,
    device: u16,
    class: u32,
    subsystem: u16,
    bars: Vec<u32>,
}

fn parse_pci(line: &str) -> PciFunction {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 13, "{line}");
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap_or_else(|_| panic!("{line}"));
    PciFunction {
        slot: f[1].to_owned(),
        vendor: hex(f[2]) as u16,
        device: hex(f[3]) as u16,
        class: hex(f[4]),
        subsystem: hex(f[5]) as u16,
        bars: f[7..].iter().map(|b| hex(b)).collect(),
    }
}

/// Bus 0 as vmd lays it out (spec §5.4, §5.5): host bridge, virtio-rng, one virtio-blk per
/// disk, vmmci; 4 KiB I/O BARs from 0x1000 in slot order; transitional virtio devices with a
/// modern memory BAR and MSI-X; the ECAM window the MCFG gives (the bottom of the MMIO hole)
/// agrees with mechanism 1. F-HW-08, F-HW-11, F-HW-13, F-HW-15, F-HW-16.
#[test]
fn guest_enumerates_pci_bus0() {
    let scratch = Scratch::new("pci");
    let boot = Boot::kernel(guest(Guest::Pvh))
        .mem_mib(64)
        .disk(scratch.disk("a.img"))
        .disk(scratch.disk("b.img"))
        .cmdline("pci");
    let mut vm = start(&boot);
    assert_eq!(vm.expect_line("PCIN", LINE).unwrap(), "PCIN 5");
    assert_eq!(
        vm.expect_line("ECAM", LINE).unwrap(),
        "ECAM 00000000f0000000 ok 5"
    );
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    let funcs: Vec<PciFunction> = vm
        .transcript()
        .iter()
        .filter(|l| l.starts_with("PCI "))
        .map(|l| parse_pci(l))
        .collect();
    let ids: Vec<(&str, u16, u16, u16)> = funcs
        .iter()
        .map(|f| (f.slot.as_str(), f.vendor, f.device, f.subsystem))
        .collect();
    assert_eq!(
        ids,
        [
            ("00.0", 0x0b5d, 0x0666, 0),
            ("01.0", 0x1af4, 0x1005, 4),
            ("02.0", 0x1af4, 0x1001, 2),
            ("03.0", 0x1af4, 0x1001, 2),
            ("04.0", 0x0b5d, 0x0777, 0xffff),
        ],
        "{:?}",
        vm.transcript()
    );
    assert_eq!(funcs[0].class, 0x06_0000, "host bridge");
    assert_eq!(funcs[2].class >> 16, 0x01, "mass storage");
    assert!(funcs[0].bars.iter().all(|&b| b == 0));
    for (i, f) in funcs[1..].iter().enumerate() {
        assert_eq!(
            f.bars[0],
            (0x1000 * (i as u32 + 1)) | 1,
            "I/O BAR0 of {f:?}"
        );
    }
    for f in &funcs[1..4] {
        for bar in &f.bars[1..3] {
            assert!(
                (0xf010_0000..0xfec0_0000).contains(bar) && bar & 0xf == 0,
                "modern and MSI-X BARs: 32-bit memory in the hole, above ECAM: {f:?}"
            );
        }
    }
    assert!(
        funcs[4].bars[1..].iter().all(|&b| b == 0),
        "vmmci: legacy only"
    );
}

/// The first disk is written, flushed and read back through the modern virtio-pci interface,
/// the second through the legacy one; the host then finds the guest's sector in each file
/// and nothing else changed. F-HW-13, F-HW-16, F-DISK-01.
#[test]
fn guest_writes_disk_modern_and_legacy_host_reads_pattern() {
    const SECTOR: u64 = 9;
    let scratch = Scratch::new("blk");
    let (a, b) = (scratch.disk("a.img"), scratch.disk("b.img"));
    let boot = Boot::kernel(guest(Guest::Pvh))
        .mem_mib(64)
        .disk(&a)
        .disk(&b)
        .cmdline(format!("blk={SECTOR}"));
    let mut vm = start(&boot);
    for iface in ["modern", "legacy"] {
        assert_eq!(
            vm.expect_line("BLK", LINE).unwrap(),
            format!("BLK {iface} capacity {DISK_SECTORS} write ok read ok flush ok")
        );
    }
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    for (path, iface) in [(&a, "modern"), (&b, "legacy")] {
        let data = std::fs::read(path).unwrap();
        let at = SECTOR as usize * SECTOR_SIZE;
        assert_eq!(
            data[at..at + SECTOR_SIZE],
            blk_pattern(iface),
            "{iface} sector"
        );
        assert!(
            data[..at]
                .iter()
                .chain(&data[at + SECTOR_SIZE..])
                .all(|&x| x == 0),
            "{iface}: bytes outside sector {SECTOR} changed"
        );
    }
}

/// 64 bytes from virtio-rng through the legacy interface, not a constant. F-HW-11.
#[test]
fn guest_reads_entropy() {
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).mem_mib(32).cmdline("rng"));
    let line = vm.expect_line("RNG", LINE).unwrap();
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    let distinct: u32 = line
        .strip_prefix("RNG 64 bytes, ")
        .and_then(|r| r.strip_suffix(" distinct"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // 64 random bytes hold about 57 distinct values; fewer than 40 is a broken source.
    assert!(distinct >= 40, "{line}");
}

/// `vmrun -r` puts the ISO in a CD-ROM on virtio-scsi: the guest's modern-interface driver
/// gets the peripheral type from INQUIRY and reads the primary volume descriptor (block 16)
/// with READ(10) on the request queue. F-HW-14, F-HW-16.
#[test]
fn guest_reads_iso_through_virtio_scsi_cdrom() {
    let scratch = Scratch::new("cdrom");
    let iso = scratch.0.join("test.iso");
    std::fs::write(&iso, testkit::iso::el_torito(&[], b"")).unwrap();
    let boot = Boot::kernel(guest(Guest::Pvh))
        .mem_mib(32)
        .cdrom(&iso)
        .cmdline("cdrom");
    let mut vm = start(&boot);
    assert_eq!(
        vm.expect_line("CDROM", LINE).unwrap(),
        "CDROM type 05 pvd CD001",
        "{}",
        vm.stderr()
    );
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
}

/// SIGTERM to vmrun asks a guest that bound vmmci to shut down (spec §5.7): the guest sees
/// the command after a configuration-change interrupt, acknowledges it and powers off
/// through ACPI, long before the 120 s the acknowledgement allows. The time registers carry
/// the host's clock. F-HW-15, F-LIFE-14.
#[test]
fn vmmci_shutdown_request_stops_guest_gracefully() {
    let mut vm = start(
        &Boot::kernel(guest(Guest::Pvh))
            .mem_mib(32)
            .cmdline("vmmci exit=halt"),
    );
    let ready = vm.expect_line("VMMCI ready", LINE).unwrap();
    let time = ready
        .strip_prefix("VMMCI ready features 00000007 time ")
        .and_then(|t| t.split_once('.'))
        .and_then(|(s, _)| s.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((host - time).abs() < 60, "{ready}: host time is {host}");
    let asked = Instant::now();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(vm.pid() as i32, libc::SIGTERM) }, 0);
    assert_eq!(
        vm.expect_line("VMMCI", LINE).unwrap(),
        "VMMCI shutdown",
        "{}",
        vm.stderr()
    );
    let status = vm.wait_exit(EXIT).unwrap();
    assert_eq!(
        status.code(),
        Some(vmrun_exit::POWEROFF),
        "graceful: {}",
        vm.stderr()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "took {:?}",
        asked.elapsed()
    );
    assert!(
        vm.stderr().contains("asking the guest to power off"),
        "{}",
        vm.stderr()
    );
}
