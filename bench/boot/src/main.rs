//! `bench/boot`: start → first guest serial byte, start → process exit, and peak RSS of the VM
//! process, for the PVH test guest with 1 vCPU and 256 MiB, over N runs; ours (`vmrun`) and
//! QEMU's `-M microvm` side by side in one run, printed as min/median/max and as ratios of
//! medians. Both boot the same guest, which ends with a triple fault (QEMU's microvm has no
//! ACPI PM block to power off through; `-no-reboot` turns the reset into an exit).
//!
//! Usage: bench-boot [RUNS]   (run it through bench/boot/run.sh, which builds vmrun first)

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use testkit::{guest, Boot, Guest};

const DEFAULT_RUNS: usize = 20;
const MEM_MIB: u64 = 256;
const CMDLINE: &str = "exit=triple";

struct Sample {
    first_byte: Duration,
    exit: Duration,
    max_rss_kib: u64,
}

/// Run `cmd` to its end, timing its first stdout byte and its exit; the peak RSS comes from
/// the kernel's accounting of exactly this child (wait4).
fn measure(mut cmd: Command) -> Result<Sample, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8; 1];
    let first = match out.read(&mut byte) {
        Ok(1) => start.elapsed(),
        _ => return Err("no console output".into()),
    };
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let (status, rss) = wait4(child.id() as libc::pid_t)?;
    let exit = start.elapsed();
    if status.code().is_none() {
        return Err(format!("killed by signal {:?}", status.signal()));
    }
    Ok(Sample {
        first_byte: first,
        exit,
        max_rss_kib: rss,
    })
}

fn wait4(pid: libc::pid_t) -> Result<(ExitStatus, u64), String> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; `status` and `ru` outlive the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; the pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    if r != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    Ok((ExitStatus::from_raw(status), ru.ru_maxrss as u64))
}

struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        min: v[0],
        median,
        max: v[n - 1],
    }
}

struct Result3 {
    first: Stats,
    exit: Stats,
    rss: Stats,
}

fn series(name: &str, runs: usize, make: &dyn Fn() -> Command) -> Option<Result3> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        match measure(make()) {
            Ok(s) => samples.push(s),
            Err(e) => {
                eprintln!("{name}: run {i} failed: {e}");
                return None;
            }
        }
    }
    let ms = |f: fn(&Sample) -> Duration| {
        stats(samples.iter().map(|s| f(s).as_secs_f64() * 1e3).collect())
    };
    Some(Result3 {
        first: ms(|s| s.first_byte),
        exit: ms(|s| s.exit),
        rss: stats(
            samples
                .iter()
                .map(|s| s.max_rss_kib as f64 / 1024.0)
                .collect(),
        ),
    })
}

fn row(name: &str, what: &str, s: &Stats, unit: &str) {
    println!(
        "{name:<8} {what:<18} min {:>8.2} {unit}  median {:>8.2} {unit}  max {:>8.2} {unit}",
        s.min, s.median, s.max
    );
}

fn main() {
    let runs = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let vmrun = std::env::current_exe()
        .expect("own path")
        .with_file_name("vmrun");
    if !vmrun.exists() {
        eprintln!(
            "bench-boot: {} not found: build it with `cargo build --release -p vmrun`",
            vmrun.display()
        );
        std::process::exit(1);
    }
    let boot = Boot::kernel(guest(Guest::Pvh))
        .mem_mib(MEM_MIB)
        .cpus(1)
        .cmdline(CMDLINE);
    println!("boot benchmark: PVH test guest, 1 vCPU, {MEM_MIB} MiB, {runs} runs each");
    let ours = series("vmrun", runs, &|| boot.vmrun_command(&vmrun));
    let qemu = if testkit::qemu_unavailable_reason().is_none() {
        series("qemu", runs, &|| {
            let mut c = Command::new(testkit::QEMU);
            c.args([
                "-enable-kvm",
                "-M",
                "microvm",
                "-cpu",
                "host,-arch-capabilities,-kvm-pv-ipi",
            ])
            .args([
                "-nographic",
                "-nodefaults",
                "-no-reboot",
                "-serial",
                "stdio",
                "-no-user-config",
            ])
            .args(["-m", &MEM_MIB.to_string(), "-smp", "1", "-kernel"])
            .arg(guest(Guest::Pvh))
            .args(["-append", CMDLINE]);
            c
        })
    } else {
        println!("qemu: not installed, no side-by-side figures");
        None
    };
    for (name, r) in [("vmrun", &ours), ("qemu", &qemu)] {
        if let Some(r) = r {
            row(name, "start→first byte", &r.first, "ms");
            row(name, "start→exit", &r.exit, "ms");
            row(name, "peak RSS", &r.rss, "MiB");
        }
    }
    if let (Some(o), Some(q)) = (&ours, &qemu) {
        println!(
            "ratio of medians (vmrun / qemu): first byte {:.3}, exit {:.3}, peak RSS {:.3}",
            o.first.median / q.first.median,
            o.exit.median / q.exit.median,
            o.rss.median / q.rss.median
        );
    }
    if ours.is_none() {
        std::process::exit(1);
    }
}
