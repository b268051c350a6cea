//! Validates the guests and the harness under QEMU/KVM, independent of our
//! own VMM: if these pass, a failure under `vmrun` is `vmrun`'s. Skipped,
//! with a printed reason, where QEMU or /dev/kvm is missing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::{
    blk_pattern, fnv1a32, guest, parse_e820, qemu_loader_shim, qemu_unavailable_reason, Boot,
    Guest, Vmm, SECTOR_SIZE,
};

/// QEMU with SeaBIOS takes a few seconds to reach the guest here.
const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(20);

fn skip() -> bool {
    match qemu_unavailable_reason() {
        Some(why) => {
            eprintln!("SKIPPED: QEMU/KVM guest tests: {why}");
            true
        }
        None => false,
    }
}

/// An initrd file with content that catches misplaced or truncated copies.
struct Initrd {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Initrd {
    fn new(name: &str, len: usize) -> Initrd {
        let bytes: Vec<u8> = (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let path = std::env::temp_dir().join(format!("testkit-{name}-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        Initrd { path, bytes }
    }
}

impl Drop for Initrd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn run(boot: &Boot) -> Vmm {
    Vmm::spawn(boot.qemu_command()).unwrap()
}

/// Runs a direct-boot guest to poweroff and checks the hand-off it printed.
fn check_boot_data(kind: Guest, boot_line: &str) {
    let initrd = Initrd::new(boot_line, 12345);
    let boot = Boot::kernel(guest(kind))
        .initrd(&initrd.path)
        .cmdline("hello  world rtc")
        .mem_mib(256);
    let mut vm = run(&boot);
    assert_eq!(
        vm.expect_line("BOOT ", BOOT).unwrap(),
        format!("BOOT {boot_line}")
    );
    // Both paths enter in 32-bit protected mode with paging off.
    let regs = vm.expect_line("REGS", STEP).unwrap();
    let cr0 = u32::from_str_radix(&regs[5..13], 16).unwrap();
    assert_eq!(cr0 & 0x8000_0001, 1, "{regs}");
    assert_eq!(
        vm.expect_line("CMDLINE", STEP).unwrap(),
        "CMDLINE hello  world rtc"
    );
    let e820 = parse_e820(vm.transcript());
    assert!(!e820.is_empty(), "{:?}", vm.transcript());
    assert!(
        e820.iter().any(|e| e.addr == 0 && e.kind == 1),
        "low RAM: {e820:?}"
    );
    let ram: u64 = e820.iter().filter(|e| e.kind == 1).map(|e| e.size).sum();
    assert!(
        (200 << 20..=256 << 20).contains(&ram),
        "RAM {ram:#x} for 256 MiB"
    );
    let initrd_line = vm.expect_line("INITRD", STEP).unwrap();
    let f: Vec<&str> = initrd_line.split(' ').collect();
    assert_eq!(f.len(), 4, "{initrd_line}");
    let addr = u64::from_str_radix(f[1], 16).unwrap();
    assert_eq!(u64::from_str_radix(f[2], 16).unwrap(), 12345);
    assert_eq!(f[3], format!("{:08x}", fnv1a32(&initrd.bytes)));
    assert!(
        e820.iter()
            .any(|e| e.kind == 1 && e.addr <= addr && addr + 12345 <= e.end()),
        "initrd at {addr:#x} not in RAM"
    );
    vm.expect_line("RSDP 0", STEP).unwrap();
    check_rtc(&vm.expect_line("RTC", STEP).unwrap());
    vm.expect_line("DONE", STEP).unwrap();
    let status = vm.wait_exit(STEP).unwrap();
    assert!(status.success(), "{status}");
    assert!(!vm.transcript().iter().any(|l| l.contains("failed")));
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `RTC YYYY-MM-DD HH:MM:SS` must be within a few minutes of host UTC.
fn check_rtc(line: &str) {
    let n: Vec<i64> = line
        .trim_start_matches("RTC ")
        .split(['-', ' ', ':'])
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 6, "{line}");
    let guest = days_from_civil(n[0], n[1], n[2]) * 86400 + n[3] * 3600 + n[4] * 60 + n[5];
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest - host).abs() < 300,
        "{line}: {}s off host UTC",
        guest - host
    );
}

#[test]
fn pvh_boot_data() {
    if !skip() {
        check_boot_data(Guest::Pvh, "pvh");
    }
}

/// QEMU enters a bzImage through the real-mode setup code (its linuxboot ROM).
#[test]
fn bzimage_boot_data() {
    if !skip() {
        check_boot_data(Guest::BzImage, "linux16");
    }
}

#[test]
fn pvh_smp_and_timer() {
    if skip() {
        return;
    }
    let mut vm = run(&Boot::kernel(guest(Guest::Pvh)).cmdline("smp timer").cpus(4));
    assert_eq!(vm.expect_line("CPUS", BOOT).unwrap(), "CPUS 4");
    let bsp = vm.expect_line("BSP", STEP).unwrap();
    vm.expect_line("SMP", STEP).unwrap();
    let mut ids: Vec<String> = vm
        .transcript()
        .iter()
        .filter_map(|l| l.strip_prefix("AP ").map(str::to_owned))
        .collect();
    ids.push(bsp.trim_start_matches("BSP ").to_owned());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{:?}", vm.transcript());
    assert!(vm.transcript().contains(&"SMP ok 4".to_owned()));
    assert_eq!(vm.expect_line("TIMER", STEP).unwrap(), "TIMER ok");
    assert!(vm.wait_exit(STEP).unwrap().success());
}

#[test]
fn pvh_serial_input() {
    if skip() {
        return;
    }
    let mut vm = run(&Boot::kernel(guest(Guest::Pvh)).cmdline("input"));
    vm.expect_line("INPUT?", BOOT).unwrap();
    vm.send(b"ping 42\n").unwrap();
    assert_eq!(vm.expect_line("INPUT ", STEP).unwrap(), "INPUT ping 42");
    assert!(vm.wait_exit(STEP).unwrap().success());
}

/// QEMU's `-no-reboot` turns every reset into a clean exit, so this only
/// shows that each reset method leaves the VM (no `... failed` line).
#[test]
fn pvh_reset_methods_end_the_vm() {
    if skip() {
        return;
    }
    for how in ["reboot", "kbd", "triple"] {
        let mut vm = run(&Boot::kernel(guest(Guest::Pvh)).cmdline(format!("exit={how}")));
        vm.expect_line("DONE", BOOT).unwrap();
        vm.wait_exit(STEP)
            .unwrap_or_else(|e| panic!("exit={how}: {e}"));
        assert!(
            !vm.transcript().iter().any(|l| l.contains("failed")),
            "exit={how}: {:?}",
            vm.transcript()
        );
    }
}

#[test]
fn pvh_halt_keeps_running_until_killed() {
    if skip() {
        return;
    }
    let mut vm = run(&Boot::kernel(guest(Guest::Pvh)).cmdline("exit=halt"));
    vm.expect_line("DONE", BOOT).unwrap();
    assert!(vm.wait_exit(Duration::from_secs(2)).is_err());
}

/// The BIOS guest powers off through port 0x604. QEMU has no PM device
/// there without firmware setting one up, so an isa-debug-exit device
/// stands in: it exits with (value << 1 | 1) & 0xff = 1 for SLP_EN|S5.
#[test]
fn bios_guest() {
    if skip() {
        return;
    }
    let mut cmd = Boot::bios(guest(Guest::Bios)).mem_mib(256).qemu_command();
    cmd.args(["-device", "isa-debug-exit,iobase=0x604,iosize=2"]);
    let mut vm = Vmm::spawn(cmd).unwrap();
    vm.expect_line("BIOS-OK", BOOT).unwrap();
    // (256 - 16) MiB in 64 KiB units.
    assert_eq!(vm.expect_line("MEM16M", STEP).unwrap(), "MEM16M 0f00");
    assert_eq!(vm.expect_line("MEM4G", STEP).unwrap(), "MEM4G 000000");
    vm.expect_line("DONE", STEP).unwrap();
    assert_eq!(vm.wait_exit(STEP).unwrap().code(), Some(1));
}

/// The OpenBSD guest, handed off the way vmd does it by a PVH shim
/// (QEMU cannot do vmd's hand-off itself).
#[test]
fn openbsd_guest_via_vmd_style_shim() {
    if skip() {
        return;
    }
    let boot = Boot::kernel(qemu_loader_shim()).initrd(guest(Guest::OpenBsd));
    let mut vm = run(&boot);
    assert_eq!(vm.expect_line("BOOT", BOOT).unwrap(), "BOOT openbsd");
    for (line, want) in [
        ("OBSD rsp", "OBSD rsp 000000000000ffdc"),
        ("OBSD bootdev", "OBSD bootdev a0000004"),
        ("OBSD apiver", "OBSD apiver 0000000e"),
        ("OBSD argaddr", "OBSD argaddr 00002000"),
        ("CONSDEV", "CONSDEV 00000800 115200 000003f8"),
    ] {
        assert_eq!(vm.expect_line(line, STEP).unwrap(), want);
    }
    let e820 = parse_e820(vm.transcript());
    assert!(
        e820.iter().any(|e| e.addr == 0x100000 && e.kind == 1),
        "{e820:?}"
    );
    vm.expect_line("DONE", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
}

/// The bzImage's 64-bit entry (the one our VMM uses), reached through the
/// loader shim since QEMU only uses the real-mode entry.
#[test]
fn bzimage_64bit_entry_via_shim() {
    if skip() {
        return;
    }
    let boot = Boot::kernel(qemu_loader_shim())
        .initrd(guest(Guest::BzImage))
        .cmdline("via shim");
    let mut vm = run(&boot);
    assert_eq!(vm.expect_line("BOOT", BOOT).unwrap(), "BOOT linux64");
    // Long mode with paging: CR0.PG|PE, CR4.PAE, EFER.LME|LMA.
    assert_eq!(
        vm.expect_line("REGS", STEP).unwrap(),
        "REGS 80000011 00000020 00000500"
    );
    assert_eq!(
        vm.expect_line("ZEROPAGE", STEP).unwrap(),
        "ZEROPAGE 0000000000007000"
    );
    assert_eq!(vm.expect_line("CMDLINE", STEP).unwrap(), "CMDLINE via shim");
    let e820 = parse_e820(vm.transcript());
    assert!(
        e820.iter().any(|e| e.addr == 0x100000 && e.kind == 1),
        "{e820:?}"
    );
    assert_eq!(vm.expect_line("INITRD", STEP).unwrap(), "INITRD none");
    vm.expect_line("DONE", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
}

/// A scratch file with the given contents, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Scratch {
        let path = std::env::temp_dir().join(format!("testkit-{name}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The polled PCI and virtio drivers against QEMU's devices: enumeration (a multi-function
/// slot, ECAM from the MCFG), entropy, both virtio-blk interfaces, and the virtio-scsi CD-ROM
/// reading an ISO's primary volume descriptor.
#[test]
fn pvh_virtio_drivers() {
    if skip() {
        return;
    }
    const SECTOR: usize = 5;
    let iso = Scratch::new("iso", &testkit::iso::el_torito(&[], b""));
    let disks = [0, 1].map(|i| Scratch::new(&format!("disk{i}"), &[0u8; 1 << 20]));
    let mut cmd = Boot::kernel(guest(Guest::Pvh))
        .disk(&disks[0].0)
        .disk(&disks[1].0)
        .cdrom(&iso.0)
        .cmdline(format!("pci rng blk={SECTOR} cdrom"))
        .qemu_command();
    cmd.args(["-device", "virtio-rng-pci"]);
    let mut vm = Vmm::spawn(cmd).unwrap();
    let pcin = vm.expect_line("PCIN", BOOT).unwrap();
    let functions = pcin.strip_prefix("PCIN ").unwrap();
    assert_eq!(
        vm.expect_line("ECAM", STEP).unwrap(),
        format!("ECAM 00000000b0000000 ok {functions}")
    );
    // q35's LPC, SATA and SMBus controllers share slot 0x1f.
    assert!(vm
        .transcript()
        .iter()
        .any(|l| l.starts_with("PCI 1f.3 8086 2930")));
    let rng = vm.expect_line("RNG", STEP).unwrap();
    assert!(rng.starts_with("RNG 64 bytes, "), "{rng}");
    for iface in ["modern", "legacy"] {
        assert_eq!(
            vm.expect_line("BLK", STEP).unwrap(),
            format!("BLK {iface} capacity 2048 write ok read ok flush ok")
        );
    }
    assert_eq!(
        vm.expect_line("CDROM", STEP).unwrap(),
        "CDROM type 05 pvd CD001"
    );
    vm.expect_line("DONE", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
    for (disk, iface) in disks.iter().zip(["modern", "legacy"]) {
        let data = std::fs::read(&disk.0).unwrap();
        let at = SECTOR * SECTOR_SIZE;
        assert_eq!(data[at..at + SECTOR_SIZE], blk_pattern(iface), "{iface}");
    }
}

/// The polled virtio-net driver against QEMU's: a DHCP lease from slirp, a ping of its
/// gateway and a spoofed ping (slirp filters nothing), then two guests joined by a socket
/// netdev pinging each other with static addresses, one through the legacy interface.
#[test]
fn pvh_virtio_net() {
    if skip() {
        return;
    }
    let nic = |netdev: &str, mac: &str| {
        [
            "-netdev".to_string(),
            format!("{netdev},id=n0"),
            "-device".to_string(),
            format!("virtio-net-pci,netdev=n0,romfile=,mac={mac}"),
        ]
    };
    let mut cmd = Boot::kernel(guest(Guest::Pvh))
        .cmdline("dhcp spoof")
        .qemu_command();
    cmd.args(nic("user", "52:54:00:12:34:56"));
    let mut vm = Vmm::spawn(cmd).unwrap();
    assert_eq!(
        vm.expect_line("NET", BOOT).unwrap(),
        "NET mac 52:54:00:12:34:56 lease 10.0.2.15 router 10.0.2.2 mask 255.255.255.0"
    );
    assert_eq!(
        vm.expect_line("NET ping", STEP).unwrap(),
        "NET ping 10.0.2.2 ok"
    );
    assert_eq!(
        vm.expect_line("NET spoof", STEP).unwrap(),
        "NET spoof 52:54:00:12:34:d6"
    );
    assert_eq!(
        vm.expect_line("NET spoof ping", STEP).unwrap(),
        "NET spoof ping ok"
    );
    vm.expect_line("DONE", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());

    // A free port for the first guest's QEMU to listen on, the second connects.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The second through the legacy interface.
    let peer = |me: u8, other: u8, netdev: String| {
        let legacy = if me == 2 { " netlegacy" } else { "" };
        let mut cmd = Boot::kernel(guest(Guest::Pvh))
            .cmdline(format!("ip=10.9.0.{me} peer=10.9.0.{other}{legacy}"))
            .qemu_command();
        cmd.args(nic(&netdev, &format!("52:54:00:00:00:0{me}")));
        Vmm::spawn(cmd).unwrap()
    };
    let mut a = peer(1, 2, format!("socket,listen=127.0.0.1:{port}"));
    // QEMU listens before the guest runs.
    a.expect_line("BOOT", BOOT).unwrap();
    let mut b = peer(2, 1, format!("socket,connect=127.0.0.1:{port}"));
    for (vm, iface, me, other) in [(&mut a, "", 1, 2), (&mut b, "legacy ", 2, 1)] {
        assert_eq!(
            vm.expect_line("NET", BOOT).unwrap(),
            format!("NET {iface}mac 52:54:00:00:00:0{me} ip 10.9.0.{me}")
        );
        assert_eq!(
            vm.expect_line("NET ping", BOOT).unwrap(),
            format!("NET ping 10.9.0.{other} ok")
        );
    }
    for vm in [&mut a, &mut b] {
        let served = vm.expect_line("NET served", STEP).unwrap();
        assert_ne!(served, "NET served 0");
        vm.expect_line("DONE", STEP).unwrap();
        assert!(vm.wait_exit(STEP).unwrap().success());
    }
}
