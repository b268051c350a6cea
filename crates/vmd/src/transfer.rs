//! The stream of `vmctl send` and `vmctl receive` (spec §4.11, F-CTL-12, F-LIFE-22;
//! docs/snapshot.md, "vmd send/receive").
//!
//! It is the hypervisor's snapshot stream with vmd's VM definition spliced in right after its
//! header, where vmd's dump has its create parameters: the header (signature, version, the
//! guest's CPUID leaves) comes first so a receiver refuses a foreign or incompatible stream
//! before anything else, then the definition the parent needs to register the VM and open
//! its disks, then the hypervisor's sections, which only the new VM process reads. The
//! definition is a block of its own (tag, version, length, postcard, CRC-32) so that the
//! hypervisor's stream stays byte for byte what `VmHandle::snapshot` wrote, checksum
//! included.
//!
//! Streams are untrusted: the definition's length is checked against
//! [`MAX_DEFINITION_LEN`] before it is read, it must decode exactly and pass
//! [`Definition::check`], and every read gives up after [`STALL_TIMEOUT`] without data.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flate2::Crc;
use hypervisor::snapshot::header::{Header, HEADER_LEN};
use hypervisor::SnapshotError;
use serde::{Deserialize, Serialize};
use vmconf::validate::{MAX_DISKS, MAX_NICS, MAX_VCPUS};
use vmconf::{BootDevice, DiskFormat};

use crate::registry::{Failure, StartPlan};

/// First bytes of the definition block.
pub const DEFINITION_TAG: [u8; 4] = *b"VDEF";
/// The definition layout this build writes and the only one it reads.
pub const DEFINITION_VERSION: u16 = 1;
/// Most bytes of a definition's payload (ours take a few hundred).
pub const MAX_DEFINITION_LEN: u32 = 64 << 10;
/// Tag, version, two reserved bytes, payload length.
pub const DEFINITION_PREFIX_LEN: usize = 12;
/// The CRC-32 after the payload.
const CRC_LEN: usize = 4;
/// Longest path a definition may name (Linux's PATH_MAX).
const MAX_PATH_LEN: usize = 4096;
/// Longest kernel command line (x86 Linux's COMMAND_LINE_SIZE less its NUL).
const MAX_CMDLINE_LEN: usize = 2047;
/// Longest VM, interface, switch or group name.
const MAX_WORD_LEN: usize = 64;
/// How long a read of a stream waits for data before giving up: a sender that stalls must
/// not hold a start (or the parent's reader) forever.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a receiver needs to register the VM and rebuild its devices: the create parameters of
/// vmd's dump. Paths are the sender's; the receiver opens them again (same host, or the same
/// paths on another one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The sender's name for the VM (the receiver names it anew; for the log).
    pub name: String,
    /// Guest RAM, bytes.
    pub memory: u64,
    pub cpus: u32,
    /// Kernel or BIOS image of the run that was sent; `None`: the default BIOS.
    pub boot: Option<PathBuf>,
    pub boot_device: Option<BootDevice>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<DiskDef>,
    pub nics: Vec<NicDef>,
}

/// One disk: the top image (its base images are found again from its header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDef {
    pub path: PathBuf,
    pub format: Option<DiskFormat>,
}

/// One NIC, with the MAC the guest's driver knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDef {
    /// A specific `tapN`.
    pub name: Option<String>,
    pub local: bool,
    pub switch: Option<String>,
    pub group: Option<String>,
    pub locked: bool,
    pub mac: [u8; 6],
    pub rdomain: Option<u8>,
    pub up: bool,
}

fn invalid(why: impl Into<String>) -> Failure {
    Failure::errno(libc::EINVAL, why)
}

fn check_path(what: &str, p: &Path) -> Result<(), Failure> {
    let len = p.as_os_str().len();
    if !p.is_absolute() || len > MAX_PATH_LEN || p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(invalid(format!(
            "VM definition: {what} {p:?} is not an absolute path of at most {MAX_PATH_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_word(what: &str, w: &str) -> Result<(), Failure> {
    if w.len() > MAX_WORD_LEN || w.contains('\0') {
        return Err(invalid(format!(
            "VM definition: {what} {w:?} is longer than {MAX_WORD_LEN} bytes"
        )));
    }
    Ok(())
}

impl Definition {
    /// The definition of the run `plan` started: what was booted and attached then.
    pub fn of_plan(plan: &StartPlan) -> Definition {
        Definition {
            name: plan.name.clone(),
            memory: plan.memory,
            cpus: plan.cpus,
            boot: plan.boot.clone(),
            boot_device: plan.boot_device,
            initrd: plan.initrd.clone(),
            cmdline: plan.cmdline.clone(),
            cdrom: plan.cdrom.clone(),
            disks: plan
                .disks
                .iter()
                .map(|d| DiskDef {
                    path: d.path.clone(),
                    format: d.format,
                })
                .collect(),
            nics: plan
                .nics
                .iter()
                .map(|p| NicDef {
                    name: p.nic.name.clone(),
                    local: p.nic.local,
                    switch: p.nic.switch.clone(),
                    group: p.nic.group.clone(),
                    locked: p.nic.locked,
                    mac: p.nic.mac.0,
                    rdomain: p.nic.rdomain,
                    up: p.nic.up,
                })
                .collect(),
        }
    }

    /// The limits of a received definition: device counts, vCPUs, absolute bounded paths,
    /// bounded words. Memory and names get the registry's own checks when it registers the
    /// VM, as any `vmctl start` does.
    pub fn check(&self) -> Result<(), Failure> {
        check_word("name", &self.name)?;
        if self.cpus == 0 || i64::from(self.cpus) > MAX_VCPUS {
            return Err(invalid(format!(
                "VM definition: {} vCPUs (1 to {MAX_VCPUS})",
                self.cpus
            )));
        }
        if self.disks.len() > MAX_DISKS || self.nics.len() > MAX_NICS {
            return Err(invalid(format!(
                "VM definition: {} disks and {} interfaces (at most {MAX_DISKS} and {MAX_NICS})",
                self.disks.len(),
                self.nics.len()
            )));
        }
        let paths = self.boot.iter().map(|p| ("boot image", p));
        let paths = paths.chain(self.initrd.iter().map(|p| ("initrd", p)));
        let paths = paths.chain(self.cdrom.iter().map(|p| ("cdrom", p)));
        let paths = paths.chain(self.disks.iter().map(|d| ("disk", &d.path)));
        for (what, p) in paths {
            check_path(what, p)?;
        }
        if let Some(c) = &self.cmdline {
            if c.len() > MAX_CMDLINE_LEN || c.contains('\0') {
                return Err(invalid(format!(
                    "VM definition: a command line of {} bytes (at most {MAX_CMDLINE_LEN})",
                    c.len()
                )));
            }
        }
        for n in &self.nics {
            for (what, w) in [
                ("interface", &n.name),
                ("switch", &n.switch),
                ("group", &n.group),
            ] {
                if let Some(w) = w {
                    check_word(what, w)?;
                }
            }
        }
        Ok(())
    }

    /// The definition block: tag, version, reserved, length, postcard payload, CRC-32 of all
    /// of those (little-endian).
    pub fn encode(&self) -> Result<Vec<u8>, Failure> {
        let payload = postcard::to_stdvec(self)
            .map_err(|e| invalid(format!("encoding the VM definition: {e}")))?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_DEFINITION_LEN)
            .ok_or_else(|| {
                invalid(format!(
                    "the VM definition takes {} bytes, over the limit of {MAX_DEFINITION_LEN}",
                    payload.len()
                ))
            })?;
        let mut block = Vec::with_capacity(DEFINITION_PREFIX_LEN + payload.len() + CRC_LEN);
        block.extend_from_slice(&DEFINITION_TAG);
        block.extend_from_slice(&DEFINITION_VERSION.to_le_bytes());
        block.extend_from_slice(&[0, 0]);
        block.extend_from_slice(&len.to_le_bytes());
        block.extend_from_slice(&payload);
        let mut crc = Crc::new();
        crc.update(&block);
        block.extend_from_slice(&crc.sum().to_le_bytes());
        Ok(block)
    }
}

/// The errno of a failed read of `what`: a stream that ends early is EINVAL ("truncated").
fn read_failure(what: &str, e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("stream truncated in {what}")),
        io::ErrorKind::TimedOut => Failure::errno(libc::ETIMEDOUT, format!("reading {what}: {e}")),
        _ => Failure::errno(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("reading {what}: {e}"),
        ),
    }
}

/// Read and check the snapshot header: signature, version, reserved bytes, the CPUID records
/// in order. ENOENT for a stream that is not ours or of another version, as vmd answers.
pub fn read_header(input: &mut dyn Read) -> Result<[u8; HEADER_LEN], Failure> {
    let mut header = [0u8; HEADER_LEN];
    input
        .read_exact(&mut header)
        .map_err(|e| read_failure("the snapshot header", &e))?;
    Header::decode(&header).map_err(|e| Failure::errno(errno_of(&e), e.to_string()))?;
    Ok(header)
}

/// Read the definition block that follows the header: nothing is allocated before its
/// length is checked, and it must pass its CRC, decode exactly and pass [`Definition::check`].
pub fn read_definition(input: &mut dyn Read) -> Result<Definition, Failure> {
    let what = "the VM definition";
    let mut prefix = [0u8; DEFINITION_PREFIX_LEN];
    input
        .read_exact(&mut prefix)
        .map_err(|e| read_failure(what, &e))?;
    if prefix[..4] != DEFINITION_TAG {
        return Err(invalid(format!(
            "no VM definition after the snapshot header (it starts with \"{}\")",
            prefix[..4].escape_ascii()
        )));
    }
    let version = u16::from_le_bytes([prefix[4], prefix[5]]);
    if version != DEFINITION_VERSION {
        return Err(Failure::errno(
            libc::ENOENT,
            format!(
                "VM definition version {version}: this vmd reads version {DEFINITION_VERSION} only"
            ),
        ));
    }
    if prefix[6..8] != [0, 0] {
        return Err(invalid("VM definition: reserved bytes are not zero"));
    }
    let len = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if len > MAX_DEFINITION_LEN {
        return Err(invalid(format!(
            "VM definition of {len} bytes is over the limit of {MAX_DEFINITION_LEN}"
        )));
    }
    let mut body = vec![0u8; len as usize + CRC_LEN];
    input
        .read_exact(&mut body)
        .map_err(|e| read_failure(what, &e))?;
    let (payload, sum) = body.split_at(len as usize);
    let mut crc = Crc::new();
    crc.update(&prefix);
    crc.update(payload);
    let recorded = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    if crc.sum() != recorded {
        return Err(invalid(format!(
            "VM definition corrupted: checksum {recorded:#010x}, the bytes give {:#010x}",
            crc.sum()
        )));
    }
    let (def, rest): (Definition, _) = postcard::take_from_bytes(payload)
        .map_err(|e| invalid(format!("VM definition does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "VM definition: {} bytes left over",
            rest.len()
        )));
    }
    def.check()?;
    Ok(def)
}

/// The errno a refused stream is answered with: ENOENT for one that is not ours, of another
/// version or for another CPU (vmd's answer to a failed header check), EINVAL for a damaged
/// or inconsistent one, the I/O error's own for a failed read or write, EIO otherwise.
pub fn errno_of(e: &SnapshotError) -> i32 {
    match e {
        SnapshotError::BadSignature { .. }
        | SnapshotError::UnknownVersion { .. }
        | SnapshotError::BadHeader(_)
        | SnapshotError::CpuidMismatch { .. } => libc::ENOENT,
        SnapshotError::Truncated { .. }
        | SnapshotError::TooLarge { .. }
        | SnapshotError::Malformed { .. }
        | SnapshotError::Checksum { .. }
        | SnapshotError::Mismatch(_)
        | SnapshotError::Device(_) => libc::EINVAL,
        SnapshotError::Read(io) | SnapshotError::Write(io) => match io.kind() {
            io::ErrorKind::TimedOut => libc::ETIMEDOUT,
            _ => io.raw_os_error().unwrap_or(libc::EIO),
        },
        _ => libc::EIO,
    }
}

/// A reader that gives up when no data comes for a while: vmctl's stdin may be a pipe whose
/// writer stalls. Regular files are always readable. It can also be cancelled by a signal
/// ([`Timed::cancelled_by`]).
pub struct Timed<F> {
    inner: F,
    timeout: Duration,
    cancel: Option<Cancel>,
}

/// A signal that cancels a [`Timed`] read: blocked in the reading thread except while it
/// waits for data, and a flag its handler sets.
#[derive(Clone, Copy)]
pub struct Cancel {
    pub signal: libc::c_int,
    pub flag: &'static AtomicBool,
}

impl<F> Timed<F> {
    /// Reads of `inner` that wait at most `timeout` for each bit of data.
    pub fn new(inner: F, timeout: Duration) -> Self {
        Timed {
            inner,
            timeout,
            cancel: None,
        }
    }

    /// Reads that fail (`Interrupted`) once `cancel.flag` is set: the signal, blocked
    /// otherwise, is let in while a read waits, so one that comes before or during the wait
    /// ends it.
    pub fn cancelled_by(self, cancel: Cancel) -> Self {
        Timed {
            cancel: Some(cancel),
            ..self
        }
    }

    /// This thread's signal mask without the cancelling signal, for the wait.
    fn wait_mask(&self) -> io::Result<Option<libc::sigset_t>> {
        let Some(c) = self.cancel else {
            return Ok(None);
        };
        // SAFETY: a zeroed sigset_t is a valid place for pthread_sigmask to fill in; with a
        // null new set it only reads the current mask.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            libc::sigdelset(&mut mask, c.signal);
            Ok(Some(mask))
        }
    }

    fn cancelled(&self) -> io::Result<()> {
        match self.cancel {
            Some(c) if c.flag.load(Ordering::SeqCst) => Err(io::Error::new(
                // Not `Interrupted`, which read_exact would retry.
                io::ErrorKind::ConnectionAborted,
                "the receive was cancelled (its client went away)",
            )),
            _ => Ok(()),
        }
    }
}

impl<F: Read + AsFd> Read for Timed<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.inner.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(self.timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(self.timeout.subsec_nanos()),
        };
        let mask = self.wait_mask()?;
        loop {
            self.cancelled()?;
            let mask_ptr = mask.as_ref().map_or(std::ptr::null(), |m| m as *const _);
            // SAFETY: one pollfd that lives across the call, for an fd `inner` holds open; a
            // timeout and a signal mask (or null) that live across it too.
            let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, mask_ptr) };
            match n {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data for {} s", self.timeout.as_secs()),
                    ))
                }
                n if n > 0 => return self.inner.read(buf),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// A writer that puts `insert` after the first [`HEADER_LEN`] bytes written through it: how
/// the sending VM process splices the definition block into the hypervisor's stream.
pub struct Splice<W> {
    inner: W,
    before: usize,
    insert: Option<Vec<u8>>,
}

impl<W: Write> Splice<W> {
    pub fn new(inner: W, insert: Vec<u8>) -> Self {
        Splice {
            inner,
            before: HEADER_LEN,
            insert: Some(insert),
        }
    }
}

impl<W: Write> Write for Splice<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.before > 0 {
            let n = self.inner.write(&buf[..buf.len().min(self.before)])?;
            self.before -= n;
            return Ok(n);
        }
        if let Some(block) = self.insert.take() {
            self.inner.write_all(&block)?;
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Definition {
        Definition {
            name: "web".into(),
            memory: 64 << 20,
            cpus: 2,
            boot: Some("/vmlinuz".into()),
            boot_device: None,
            initrd: Some("/initrd".into()),
            cmdline: Some("console=ttyS0".into()),
            cdrom: None,
            disks: vec![DiskDef {
                path: "/var/vm/web.qcow2".into(),
                format: Some(DiskFormat::Qcow2),
            }],
            nics: vec![NicDef {
                name: None,
                local: true,
                switch: None,
                group: None,
                locked: true,
                mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 1],
                rdomain: None,
                up: true,
            }],
        }
    }

    fn read(bytes: &[u8]) -> Result<Definition, Failure> {
        read_definition(&mut &bytes[..])
    }

    #[test]
    fn a_definition_round_trips_and_nothing_after_it_is_read() {
        let mut block = sample().encode().unwrap();
        assert_eq!(&block[..4], b"VDEF");
        block.extend_from_slice(b"rest");
        let mut input = &block[..];
        assert_eq!(read_definition(&mut input).unwrap(), sample());
        assert_eq!(input, b"rest");
    }

    #[test]
    fn damaged_definitions_are_refused_by_name() {
        let good = sample().encode().unwrap();
        let refused = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            read(&b).unwrap_err()
        };
        let e = refused(&|b| b[0] = b'X');
        assert!(e.message.contains("no VM definition"), "{e}");
        let e = refused(&|b| b[4] = 2);
        assert_eq!(e.errno, libc::ENOENT);
        assert!(e.message.contains("version 2"), "{e}");
        let e = refused(&|b| b[7] = 1);
        assert!(e.message.contains("reserved"), "{e}");
        // A huge length is refused before anything is allocated or read.
        let e = refused(&|b| b[8..12].copy_from_slice(&u32::MAX.to_le_bytes()));
        assert!(e.message.contains("over the limit"), "{e}");
        let e = refused(&|b| {
            let last = b.len() - 5;
            b[last] ^= 1;
        });
        assert!(e.message.contains("checksum"), "{e}");
        let e = refused(&|b| b.truncate(20));
        assert!(e.message.contains("truncated"), "{e}");
        assert_eq!(e.errno, libc::EINVAL);
        assert!(read(&[]).unwrap_err().message.contains("truncated"));
    }

    #[test]
    fn a_payload_with_a_valid_checksum_must_still_decode_and_pass_the_limits() {
        let block = |payload: &[u8]| {
            let mut b = DEFINITION_TAG.to_vec();
            b.extend_from_slice(&DEFINITION_VERSION.to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            b.extend_from_slice(payload);
            let mut crc = Crc::new();
            crc.update(&b);
            b.extend_from_slice(&crc.sum().to_le_bytes());
            b
        };
        let e = read(&block(&[0xff; 40])).unwrap_err();
        assert!(e.message.contains("does not decode"), "{e}");
        let mut payload = postcard::to_stdvec(&sample()).unwrap();
        payload.push(0);
        let e = read(&block(&payload)).unwrap_err();
        assert!(e.message.contains("left over"), "{e}");
        let mut d = sample();
        d.disks[0].path = "relative.img".into();
        let e = read(&block(&postcard::to_stdvec(&d).unwrap())).unwrap_err();
        assert!(e.message.contains("absolute"), "{e}");
        let mut d = sample();
        d.disks = vec![d.disks[0].clone(); MAX_DISKS + 1];
        assert!(d.check().unwrap_err().message.contains("disks"));
        let mut d = sample();
        d.cpus = 0;
        assert!(d.check().unwrap_err().message.contains("vCPUs"));
        let mut d = sample();
        d.nics[0].switch = Some("s".repeat(MAX_WORD_LEN + 1));
        assert!(d.check().unwrap_err().message.contains("switch"));
        let mut d = sample();
        d.cmdline = Some("x".repeat(MAX_CMDLINE_LEN + 1));
        assert!(d.check().unwrap_err().message.contains("command line"));
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused_without_a_panic() {
        let good = sample().encode().unwrap();
        for len in 0..good.len() {
            assert!(read(&good[..len]).is_err(), "cut at {len}");
        }
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                // A flip the CRC misses would still have to decode and pass the limits.
                if let Ok(def) = read(&b) {
                    def.check().unwrap();
                }
            }
        }
    }

    #[test]
    fn header_refusals_are_enoent_and_name_the_problem() {
        let e = read_header(&mut &[b'x'; HEADER_LEN][..]).unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        assert!(e.message.contains("not a VM snapshot"), "{e}");
        let e = read_header(&mut &b"vmd-LinuxKVM"[..]).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(
            e.message.contains("truncated in the snapshot header"),
            "{e}"
        );
    }

    /// A writer that takes at most 5 bytes per call, as a pipe may.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn splice_puts_the_block_right_after_the_header() {
        let stream: Vec<u8> = (0..HEADER_LEN + 50).map(|i| i as u8).collect();
        let mut out = Splice::new(Dribble(Vec::new()), b"BLOCK".to_vec());
        out.write_all(&stream[..7]).unwrap();
        out.write_all(&stream[7..]).unwrap();
        out.flush().unwrap();
        let got = out.inner.0;
        assert_eq!(&got[..HEADER_LEN], &stream[..HEADER_LEN]);
        assert_eq!(&got[HEADER_LEN..HEADER_LEN + 5], b"BLOCK");
        assert_eq!(&got[HEADER_LEN + 5..], &stream[HEADER_LEN..]);
    }

    #[test]
    fn a_stalled_pipe_times_out() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds that we own from here on.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds from pipe2, owned once each.
        let (r, _w) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let mut t = Timed::new(&r, Duration::from_millis(50));
        let e = t.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(read_failure("x", &e).errno, libc::ETIMEDOUT);

        // A cancelled read fails at once, and read_exact does not retry it.
        static CANCELLED: AtomicBool = AtomicBool::new(true);
        let cancel = Cancel {
            signal: libc::SIGUSR2,
            flag: &CANCELLED,
        };
        let mut t = Timed::new(&r, Duration::from_secs(30)).cancelled_by(cancel);
        let e = t.read_exact(&mut [0u8; 4]).unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
    }
}
