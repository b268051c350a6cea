//! vmrun boots each of testkit's tiny guests through its boot path and checks what the guest
//! saw and how the VM ended (issue 2: boot paths, hand-off state, SMP, timer, RTC, serial
//! input, exit reasons). Runs on the real /dev/kvm.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::{fnv1a32, guest, parse_e820, vmrun_exit, Boot, E820Entry, Guest, Vmm};

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");
/// Generous: the host emulates guest ring-0 code and CI machines are busy.
const LINE: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn start(boot: &Boot) -> Vmm {
    Vmm::spawn(boot.vmrun_command(Path::new(VMRUN))).expect("spawn vmrun")
}

fn finish(vm: &mut Vmm) -> i32 {
    vm.expect_line("DONE", LINE).unwrap();
    let status = vm.wait_exit(EXIT).unwrap();
    status.code().unwrap_or(-1)
}

/// The e820 map docs/platform.md promises for a guest of `mib` MiB below the hole.
fn expected_map(mib: u64) -> Vec<E820Entry> {
    let e = |addr, size, kind| E820Entry { addr, size, kind };
    vec![
        e(0, 0xA_0000, 1),
        e(0xA_0000, 0x6_0000, 2),
        e(0x10_0000, mib * MIB - 0x10_0000, 1),
        e(0xFFE0_0000, 0x20_0000, 2),
    ]
}

fn value(line: &str) -> &str {
    line.split_once(' ').map(|(_, v)| v).unwrap_or("")
}

fn initrd_file(len: usize) -> (tempfile_path::TempFile, u32) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let f = tempfile_path::TempFile::with(&data);
    (f, fnv1a32(&data))
}

/// A file that deletes itself, without a dependency for it.
mod tempfile_path {
    use std::path::PathBuf;

    pub struct TempFile(pub PathBuf);

    impl TempFile {
        pub fn with(data: &[u8]) -> TempFile {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "vmrun-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&p, data).unwrap();
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Boot `kind` with a command line and an initrd and check the whole hand-off.
fn check_linux_style_handoff(kind: Guest, boot_line: &str) {
    let (initrd, sum) = initrd_file(12 * 1024);
    let boot = Boot::kernel(guest(kind))
        .mem_mib(256)
        .cmdline("hello vmd  world")
        .initrd(&initrd.0);
    let mut vm = start(&boot);
    assert_eq!(
        vm.expect_line("BOOT ", LINE).unwrap(),
        format!("BOOT {boot_line}")
    );
    assert_eq!(
        value(&vm.expect_line("CMDLINE", LINE).unwrap()),
        "hello vmd  world"
    );
    let initrd_line = vm.expect_line("INITRD", LINE).unwrap();
    let fields: Vec<&str> = initrd_line.split(' ').collect();
    assert_eq!(fields.len(), 4, "{initrd_line}");
    let addr = u64::from_str_radix(fields[1], 16).unwrap();
    assert_eq!(u64::from_str_radix(fields[2], 16).unwrap(), 12 * 1024);
    assert_eq!(fields[3], format!("{sum:08x}"), "initrd intact");
    assert!(
        addr >= MIB && addr + 12 * 1024 <= 256 * MIB && addr.is_multiple_of(4096),
        "{initrd_line}"
    );
    assert_eq!(
        vm.expect_line("RSDP", LINE).unwrap(),
        "RSDP 00000000000e0000"
    );
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    assert_eq!(parse_e820(vm.transcript()), expected_map(256));
}

#[test]
fn pvh_handoff_memory_map_cmdline_initrd() {
    check_linux_style_handoff(Guest::Pvh, "pvh");
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).mem_mib(64));
    let si = vm.expect_line("STARTINFO", LINE).unwrap();
    assert!(si.ends_with(" 336ec578 1"), "{si}");
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
}

#[test]
fn bzimage_handoff_memory_map_cmdline_initrd() {
    check_linux_style_handoff(Guest::BzImage, "linux64");
}

#[test]
fn four_vcpus_all_start_with_distinct_apic_ids() {
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).cpus(4).cmdline("smp"));
    assert_eq!(vm.expect_line("CPUS", LINE).unwrap(), "CPUS 4");
    assert_eq!(vm.expect_line("SMP", LINE).unwrap(), "SMP ok 4");
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    let mut aps: Vec<&str> = vm
        .transcript()
        .iter()
        .filter_map(|l| l.strip_prefix("AP "))
        .collect();
    aps.sort_unstable();
    assert_eq!(aps, ["1", "2", "3"]);
    assert!(vm.transcript().iter().any(|l| l == "BSP 0"));
}

#[test]
fn timer_interrupt_arrives_and_rtc_reads_host_time() {
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).cmdline("timer rtc"));
    assert_eq!(vm.expect_line("TIMER", LINE).unwrap(), "TIMER ok");
    let rtc = vm.expect_line("RTC", LINE).unwrap();
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    let guest_secs = parse_rtc(value(&rtc)).unwrap_or_else(|| panic!("bad RTC line {rtc}"));
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host - guest_secs).abs() < 300,
        "RTC {rtc} is far from host UTC {host}"
    );
}

/// `YYYY-MM-DD HH:MM:SS` as seconds since the epoch.
fn parse_rtc(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

#[test]
fn serial_input_reaches_the_guest() {
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).cmdline("input"));
    vm.expect_line("INPUT?", LINE).unwrap();
    vm.send(b"typed on the host\n").unwrap();
    assert_eq!(
        vm.expect_line("INPUT ", LINE).unwrap(),
        "INPUT typed on the host"
    );
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
}

#[test]
fn reboot_paths_and_poweroff_give_their_exit_status() {
    for (exit, code) in [
        ("exit=poweroff", vmrun_exit::POWEROFF),
        ("exit=reboot", vmrun_exit::REBOOT),
        ("exit=kbd", vmrun_exit::REBOOT),
        ("exit=triple", vmrun_exit::REBOOT),
    ] {
        let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).mem_mib(32).cmdline(exit));
        assert_eq!(finish(&mut vm), code, "{exit}: {}", vm.stderr());
    }
}

#[test]
fn openbsd_kernel_gets_vmds_boot_loader_handoff() {
    for kind in [Guest::OpenBsd, Guest::OpenBsdGz] {
        let mut vm = start(&Boot::kernel(guest(kind)).mem_mib(64));
        assert_eq!(vm.expect_line("BOOT", LINE).unwrap(), "BOOT openbsd");
        assert_eq!(
            vm.expect_line("OBSD rsp", LINE).unwrap(),
            "OBSD rsp 000000000000ffdc"
        );
        assert_eq!(
            vm.expect_line("OBSD bootdev", LINE).unwrap(),
            "OBSD bootdev a0000004"
        );
        assert_eq!(
            vm.expect_line("OBSD apiver", LINE).unwrap(),
            "OBSD apiver 0000000e"
        );
        assert_eq!(
            vm.expect_line("OBSD argaddr", LINE).unwrap(),
            "OBSD argaddr 00002000"
        );
        assert_eq!(
            vm.expect_line("CONSDEV", LINE).unwrap(),
            "CONSDEV 00000800 115200 000003f8"
        );
        assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
        let map = parse_e820(vm.transcript());
        let mut want = expected_map(64);
        want.insert(
            3,
            E820Entry {
                addr: 0xF000_0000,
                size: 0xFE0_0000,
                kind: 2,
            },
        );
        assert_eq!(map, want, "vmd's memory ranges, MMIO hole included");
    }
}

#[test]
fn bios_runs_from_the_reset_vector_and_sees_memory_in_cmos() {
    for (mib, above16m, above4g) in [(1, "0000", "000000"), (6144, "ef00", "009000")] {
        let mut vm = start(&Boot::bios(guest(Guest::Bios)).mem_mib(mib));
        vm.expect_line("BIOS-OK", LINE).unwrap();
        assert_eq!(value(&vm.expect_line("MEM16M", LINE).unwrap()), above16m);
        assert_eq!(value(&vm.expect_line("MEM4G", LINE).unwrap()), above4g);
        assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    }
}

#[test]
fn big_guest_maps_ram_above_4g_lazily() {
    let mut vm = start(
        &Boot::kernel(guest(Guest::Pvh))
            .mem_mib(64 * 1024)
            .cmdline("exit=halt"),
    );
    vm.expect_line("DONE", LINE).unwrap();
    let rss_kib = rss_kib(vm.pid());
    drop(vm);
    assert!(
        rss_kib < 64 * 1024,
        "a halted 64 GiB guest uses {rss_kib} KiB of host RAM"
    );
}

#[test]
fn big_guest_memory_map_reaches_above_4g() {
    let mut vm = start(&Boot::kernel(guest(Guest::Pvh)).mem_mib(8 * 1024));
    assert_eq!(finish(&mut vm), vmrun_exit::POWEROFF);
    let map = parse_e820(vm.transcript());
    assert_eq!(
        map[2],
        E820Entry {
            addr: MIB,
            size: 0xF000_0000 - MIB,
            kind: 1
        }
    );
    assert_eq!(
        map[4],
        E820Entry {
            addr: 1 << 32,
            size: (8 << 30) - 0xF000_0000,
            kind: 1
        }
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn sigterm_stops_a_guest_that_ignores_the_power_button() {
    let mut vm = start(
        &Boot::kernel(guest(Guest::Pvh))
            .mem_mib(32)
            .cmdline("exit=halt"),
    );
    vm.expect_line("DONE", LINE).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(vm.pid() as i32, libc::SIGTERM) }, 0);
    let status = vm.wait_exit(EXIT).unwrap();
    assert_eq!(status.code(), Some(5), "stopped: {}", vm.stderr());
    assert!(
        vm.stderr()
            .contains("does not listen to the ACPI power button"),
        "{}",
        vm.stderr()
    );
}
