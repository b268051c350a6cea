//! Builds the test guests from `guest/` with the system C toolchain (gcc,
//! binutils' objcopy). No rustup target is needed: the guests are
//! freestanding C plus GNU assembler stubs. Outputs land in OUT_DIR, where
//! `testkit::guest()` finds them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags that keep the guests free of SIMD (the PVM emulator lacks SSE) and of
/// anything needing a runtime.
const CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-nostdlib",
    "-static",
    "-fno-pic",
    "-fno-pie",
    "-no-pie",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wl,--build-id=none",
    "-Wl,-z,max-page-size=0x1000",
    "-Wl,--no-warn-rwx-segments",
    "-Wl,-z,noexecstack",
];

/// The C core and its drivers, linked into every 64-bit guest after its entry stub.
const CORE: &[&str] = &["boot64.S", "core.c", "pci.c", "virtio.c", "net.c"];

/// An entry stub followed by [`CORE`].
fn with_core(entry: &'static str) -> Vec<&'static str> {
    [&[entry], CORE].concat()
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("testkit: cannot run {shown}: {e}\n(install the toolchain: apt-get install -y gcc binutils)")
    });
    if !out.status.success() {
        panic!(
            "testkit: {shown} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check_tool(tool: &str) {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "testkit: `{tool}` not found or not working; the test guests are built with gcc and \
             binutils. Install them with: apt-get install -y gcc binutils"
        ),
    }
}

/// Links one guest from the given sources with `script`; `extra` adds linker flags.
fn gcc_link(src: &Path, out: &Path, script: &str, sources: &[&str], extra: &[&str]) {
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS)
        .arg(format!("-I{}", src.display()))
        .arg(format!("-Wl,-T,{}", src.join(script).display()))
        .args(extra)
        .arg("-o")
        .arg(out);
    for s in sources {
        cmd.arg(src.join(s));
    }
    run(&mut cmd);
}

fn objcopy_binary(elf: &Path, bin: &Path) {
    run(Command::new("objcopy")
        .arg("-O")
        .arg("binary")
        .arg(elf)
        .arg(bin));
}

/// Memory size (p_memsz) of the single PT_LOAD segment of an ELF64 file.
fn load_memsz(elf: &[u8]) -> u64 {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| u64_at(ph + 0x28))
        .expect("testkit: linux payload has no PT_LOAD segment")
}

fn build_bzimage(src: &Path, out: &Path) {
    let payload_elf = out.join("linux.elf");
    gcc_link(
        src,
        &payload_elf,
        "elf.ld",
        &with_core("linux.S"),
        &["-Wl,--defsym=LOAD_ADDR=0x100000", "-Wl,-e,linux_start32"],
    );
    let payload_bin = out.join("linux.bin");
    objcopy_binary(&payload_elf, &payload_bin);

    let setup_elf = out.join("linux_setup.elf");
    gcc_link(
        src,
        &setup_elf,
        "setup.ld",
        &["linux_setup.S"],
        &["-Wl,-e,0"],
    );
    let setup_bin = out.join("linux_setup.bin");
    objcopy_binary(&setup_elf, &setup_bin);

    let mut setup = fs::read(&setup_bin).unwrap();
    let payload = fs::read(&payload_bin).unwrap();
    let sects = setup[0x1f1] as usize;
    assert_eq!(
        setup.len(),
        (sects + 1) * 512,
        "testkit: setup size disagrees with setup_sects"
    );
    let syssize = payload.len().div_ceil(16) as u32;
    // init_size covers the payload's bss too (page tables and stacks live there).
    let memsz = load_memsz(&fs::read(&payload_elf).unwrap()).max(payload.len() as u64);
    let init_size = memsz.div_ceil(4096) as u32 * 4096;
    setup[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    setup[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
    let mut image = setup;
    image.extend_from_slice(&payload);
    fs::write(out.join("bzimage"), image).unwrap();
}

fn build_bios(src: &Path, out: &Path) {
    let elf = out.join("bios.elf");
    gcc_link(src, &elf, "bios.ld", &["bios.S"], &["-Wl,-e,0"]);
    let bin = out.join("bios.bin");
    objcopy_binary(&elf, &bin);
    let len = fs::metadata(&bin).unwrap().len();
    assert_eq!(len, 0x10000, "testkit: bios image must be exactly 64 KiB");
}

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("guest");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=guest");
    println!("cargo:rerun-if-changed=build.rs");
    check_tool("gcc");
    check_tool("objcopy");

    gcc_link(
        &src,
        &out.join("pvh"),
        "pvh.ld",
        &with_core("pvh.S"),
        &["-Wl,--defsym=LOAD_ADDR=0x100000", "-Wl,-e,pvh_start32"],
    );

    // Physical 0x1001000 like an OpenBSD/amd64 kernel; the entry is the high
    // kernel address that vmd masks with 0x0fffffff.
    let openbsd = out.join("openbsd");
    gcc_link(
        &src,
        &openbsd,
        "elf.ld",
        &with_core("openbsd.S"),
        &[
            "-Wl,--defsym=LOAD_ADDR=0x1001000",
            "-Wl,--defsym=kernel_entry=openbsd_start+0xffffffff80000000",
            "-Wl,-e,kernel_entry",
        ],
    );
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(out.join("openbsd.gz")).unwrap(),
        flate2::Compression::best(),
    );
    gz.write_all(&fs::read(&openbsd).unwrap()).unwrap();
    gz.finish().unwrap();

    // QEMU-only stand-in for the boot paths QEMU lacks (see guest/loadershim.c), at 32 MiB.
    gcc_link(
        &src,
        &out.join("loadershim"),
        "pvh.ld",
        &["pvh.S", "boot64.S", "loadershim.c"],
        &["-Wl,--defsym=LOAD_ADDR=0x2000000", "-Wl,-e,pvh_start32"],
    );

    build_bzimage(&src, &out);
    build_bios(&src, &out);
}
