//! The VM process (one per running VM): receives its launch data and descriptors from vmm,
//! builds the VM (or restores it from a received stream), enters its sandbox, runs the guest,
//! and reports how it ended. It never opens a path, but for its own `/proc/self/pagemap`
//! (live migration's write watch) before the sandbox: the KVM device, the boot image, the
//! console and a send's or receive's stream arrive as descriptors.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use disk::{BlockBackend, ChainImage};
use hypervisor::snapshot::{MigrateOptions, PendingDisk};
use hypervisor::{
    boot, BootDevice, BootImage, CdromImage, ExitReason, NicConfig, ShutdownPath, SnapshotError,
    Vm, VmConfig, VmHandle,
};
use ipc::Channel;
use kvm_ioctls::Kvm;

use super::internal::{DhcpLaunch, Launch, VmCommand, VmEnd, VmReport};
use super::{log, sandbox};
use crate::transfer::{self, Cancel, Splice, Timed, STALL_TIMEOUT};
use crate::{log_info, log_warn};

/// Errno-style code for failures to build a VM (vmctl prints its strerror).
const EBUILD: i32 = libc::EINVAL;
/// Buffer between a snapshot and its stream fd (a pipe or a file): few large writes.
const SEND_BUFFER: usize = 1 << 20;
/// How long a received VM waits for its disk images to be free: the sender's VM process
/// holds their locks until it has ended, a moment after the end of its stream.
const DISK_LOCK_WAIT: Duration = Duration::from_secs(10);
/// Between two tries to lock a received VM's disk images.
const DISK_LOCK_RETRY: Duration = Duration::from_millis(20);
/// vmm's signal to a VM process whose receive lost its client: it gives up reading the
/// stream. Blocked in every thread but while a read of the stream waits.
pub const CANCEL_SIGNAL: libc::c_int = libc::SIGUSR1;
/// Set by [`CANCEL_SIGNAL`]'s handler.
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_cancel(_: libc::c_int) {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Block [`CANCEL_SIGNAL`] in this thread (and the threads it starts) and set its handler,
/// without SA_RESTART so that it ends a wait for the stream.
fn catch_cancel() -> io::Result<()> {
    // SAFETY: a zeroed sigset_t / sigaction are valid to fill in; the handler only stores
    // to an atomic (async-signal-safe); the calls read what we pass by pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, CANCEL_SIGNAL);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_cancel as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(CANCEL_SIGNAL, &act, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Entry point of the `vm` role.
pub fn main(chan: Channel, inherit: &super::spawn::Inherit) -> ExitCode {
    if let Err(e) = catch_cancel() {
        log_warn!("vm: the cancel signal: {e}");
        return ExitCode::FAILURE;
    }
    let (launch, fds): (Launch, Vec<OwnedFd>) = match chan.recv() {
        Ok(m) => m,
        Err(e) => {
            log_warn!("vm: no launch message: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::init(
        &format!("vm/{}", launch.name),
        inherit.foreground,
        inherit.verbosity,
    );
    log::forward_tracing();
    let vm = match build(&launch, fds) {
        Ok(vm) => vm,
        Err((errno, message)) => {
            log_warn!("{message}");
            let _ = chan.send(&VmReport::Failed { errno, message }, &[]);
            return ExitCode::FAILURE;
        }
    };
    // Live migration's write watch reads it; the sandbox closes the file system.
    let pagemap = File::open("/proc/self/pagemap")
        .map_err(|e| log_info!("/proc/self/pagemap: {e}: a live send will copy memory paused"))
        .ok();
    if let Err(e) = sandbox::enter() {
        let message = format!("sandbox: {e}");
        log_warn!("{message}");
        let _ = chan.send(
            &VmReport::Failed {
                errno: libc::EPERM,
                message,
            },
            &[],
        );
        return ExitCode::FAILURE;
    }
    if chan.send(&VmReport::Running, &[]).is_err() {
        return ExitCode::FAILURE;
    }
    let handle = vm.handle();
    let chan = std::sync::Arc::new(chan);
    let commands = chan.clone();
    std::thread::spawn(move || serve_commands(&commands, &handle, pagemap.as_ref()));
    let end = match vm.run() {
        Ok(ExitReason::Poweroff) => VmEnd::Poweroff,
        Ok(ExitReason::Reboot) => VmEnd::Reboot,
        Ok(ExitReason::Stopped) => VmEnd::Stopped,
        Ok(ExitReason::Crash(why)) => {
            log_warn!("guest crashed: {why}");
            VmEnd::Crash
        }
        Err(e) => {
            log_warn!("{e}");
            VmEnd::Crash
        }
    };
    log_info!("ended: {end:?}");
    let _ = chan.send(&VmReport::Ended(end), &[]);
    ExitCode::SUCCESS
}

/// Build the VM from the launch message and its fds (KVM, boot image, initrd?, console, disk
/// images, CD-ROM?, taps, stream?), or restore it from the stream. Errors carry an errno for
/// vmctl: EBUSY for a disk another VM writes to, ENOENT or EINVAL for a refused stream.
fn build(launch: &Launch, fds: Vec<OwnedFd>) -> Result<Vm, (i32, String)> {
    let images: usize = launch.disks.iter().map(Vec::len).sum();
    let expected = 3
        + usize::from(launch.has_initrd)
        + images
        + usize::from(launch.cdrom.is_some())
        + launch.nics.len()
        + usize::from(launch.restore.is_some());
    if fds.len() != expected {
        return Err((
            EBUILD,
            format!(
                "launch carried {} descriptors, expected {expected}",
                fds.len()
            ),
        ));
    }
    let einval = |m: String| (EBUILD, m);
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(|| (EBUILD, "missing descriptor".to_string()))
    };
    let kvm_fd = next()?;
    // SAFETY: the parent opened /dev/kvm and passed this fd to us alone; Kvm takes ownership.
    let kvm = unsafe { Kvm::from_raw_fd(kvm_fd.into_raw_fd()) };
    let bytes = boot::read_image(File::from(next()?), &launch.boot_name)
        .map_err(|e| einval(e.to_string()))?;
    let (bytes, kind) =
        boot::classify(bytes, &launch.boot_name).map_err(|e| einval(e.to_string()))?;
    let initrd = if launch.has_initrd {
        Some(boot::read_image(File::from(next()?), "initrd").map_err(|e| einval(e.to_string()))?)
    } else {
        None
    };
    let console = next()?;
    set_nonblocking(&console).map_err(|e| einval(format!("console: {e}")))?;
    let console_out = console
        .try_clone()
        .map_err(|e| einval(format!("console: {e}")))?;
    let mut chains = Vec::with_capacity(launch.disks.len());
    for chain in &launch.disks {
        let mut images = Vec::with_capacity(chain.len());
        for image in chain {
            images.push(ChainImage {
                file: File::from(next()?),
                path: PathBuf::from(&image.path),
                format: image.format.as_deref().and_then(disk::Format::from_name),
            });
        }
        chains.push(images);
    }
    // A received VM opens its images only once the whole stream is in: until its end the
    // sender may still write them (a live send) and holds their locks.
    let disks = if launch.restore.is_some() {
        chains
            .iter()
            .map(|c| pending_disk(c))
            .collect::<Result<_, _>>()?
    } else {
        let mut disks = Vec::with_capacity(chains.len());
        for images in chains.drain(..) {
            disks.push(disk::open_chain(images, true).map_err(disk_error)?);
        }
        disks
    };
    let cdrom = match &launch.cdrom {
        Some(name) => Some(CdromImage {
            file: File::from(next()?),
            name: name.clone(),
        }),
        None => None,
    };
    let mut nics = Vec::with_capacity(launch.nics.len());
    for nic in &launch.nics {
        nics.push(NicConfig {
            tap: next()?,
            mac: nic.mac,
            locked: nic.locked,
            responder: nic.dhcp.clone().map(|d| dhcp_responder(nic.mac, d)),
        });
    }
    let stream = match &launch.restore {
        Some(_) => Some(File::from(next()?)),
        None => None,
    };
    let cfg = VmConfig {
        memory: launch.memory,
        vcpus: launch.cpus,
        boot: BootImage {
            bytes,
            kind,
            name: launch.boot_name.clone(),
            initrd,
            cmdline: launch.cmdline.clone(),
        },
        console_out: Box::new(File::from(console_out)),
        console_in: Some(console),
        kvm: Some(kvm),
        disks,
        cdrom,
        nics,
        boot_device: launch
            .boot_device
            .as_deref()
            .and_then(BootDevice::from_name),
    };
    match (&launch.restore, stream) {
        (Some(r), Some(stream)) => {
            let refused = |e: SnapshotError| (transfer::errno_of(&e), e.to_string());
            // The parent read the header and the definition; the stream goes on from there.
            let regular = stream.metadata().is_ok_and(|m| m.is_file());
            let vm = if regular {
                // A snapshot file: its memory image is mapped, not read.
                let vm = Vm::restore_file(cfg, &r.header, &stream).map_err(refused)?;
                log_info!("restored from the received snapshot file");
                vm
            } else {
                let cancel = Cancel {
                    signal: CANCEL_SIGNAL,
                    flag: &CANCELLED,
                };
                let timed = Timed::new(stream, STALL_TIMEOUT).cancelled_by(cancel);
                let mut input = r.header.as_slice().chain(timed);
                let vm = Vm::restore(cfg, &mut input).map_err(refused)?;
                log_info!("restored from the received stream");
                vm
            };
            let mut images = Vec::with_capacity(chains.len());
            for chain in &chains {
                images.push(open_when_free(chain)?);
            }
            vm.attach_disks(images).map_err(refused)?;
            Ok(vm)
        }
        _ => Vm::new(cfg).map_err(|e| einval(e.to_string())),
    }
}

/// EBUSY for an image another VM writes to, EINVAL for anything else.
fn disk_error(e: disk::DiskError) -> (i32, String) {
    match e {
        disk::DiskError::InUse { .. } => (libc::EBUSY, e.to_string()),
        other => (EBUILD, other.to_string()),
    }
}

/// What stands in for a received VM's disk until its images are opened: the size its top
/// image's header gives (a header is all that is read), writable as every vmd disk.
fn pending_disk(chain: &[ChainImage]) -> Result<Box<dyn BlockBackend>, (i32, String)> {
    let top = chain
        .first()
        .ok_or_else(|| (EBUILD, "a disk without an image".to_string()))?;
    let info = disk::inspect(&top.file, &top.path, top.format).map_err(disk_error)?;
    Ok(Box::new(PendingDisk {
        size: info.size,
        read_only: false,
    }))
}

/// Open a received VM's disk once its images are free: the sender's VM process lets go of
/// their locks when it ends, a moment after the end of its stream. Tries for
/// [`DISK_LOCK_WAIT`], then fails (EBUSY).
fn open_when_free(chain: &[ChainImage]) -> Result<Box<dyn BlockBackend>, (i32, String)> {
    let deadline = Instant::now() + DISK_LOCK_WAIT;
    loop {
        let mut images = Vec::with_capacity(chain.len());
        for i in chain {
            let file = i
                .file
                .try_clone()
                .map_err(|e| (EBUILD, format!("{}: {e}", i.path.display())))?;
            images.push(ChainImage {
                file,
                path: i.path.clone(),
                format: i.format,
            });
        }
        match disk::open_chain(images, true) {
            Err(disk::DiskError::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(DISK_LOCK_RETRY);
            }
            Err(e @ disk::DiskError::InUse { .. }) => {
                return Err((
                    libc::EBUSY,
                    format!(
                        "{e}: still locked {} s after the stream ended (is the sending VM \
                         still running?)",
                        DISK_LOCK_WAIT.as_secs()
                    ),
                ))
            }
            other => return other.map_err(disk_error),
        }
    }
}

/// What a virtio-net device calls with each DHCP request the guest sends.
type LocalResponder = Box<dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send>;

/// The built-in DHCP/BOOTP server of a local NIC (F-NET-11), answering inside this process.
fn dhcp_responder(guest_mac: [u8; 6], d: DhcpLaunch) -> LocalResponder {
    Box::new(move |frame| {
        let ctx = net::dhcp::DhcpContext {
            guest_mac,
            host_mac: d.host_mac,
            addrs: net::local::LocalInet {
                host: d.host,
                guest: d.guest,
            },
            netboot: d.netboot.as_deref(),
        };
        net::dhcp::respond(frame, &ctx)
    })
}

/// A full console (nobody reading) drops guest output instead of stalling a vCPU.
fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on our own fd.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `vmctl send [-l]`: write the VM's state, with the definition block after its header, to
/// the stream fd: live (`-l`, the guest runs while its memory goes), as a snapshot file to a
/// regular file (guest RAM page-aligned, for the receiver to map), or as a stream. Once it is
/// complete the VM stops (spec §4.11); if writing fails the VM is left as it was, running or
/// paused, and nothing of the guest was lost.
fn send(
    chan: &Channel,
    vm: &VmHandle,
    definition: Vec<u8>,
    live: bool,
    fds: Vec<OwnedFd>,
    pagemap: Option<&File>,
) {
    let Some(fd) = fds.into_iter().next() else {
        let report = VmReport::SendFailed {
            errno: libc::EINVAL,
            message: "send without a stream descriptor".into(),
        };
        let _ = chan.send(&report, &[]);
        return;
    };
    let was_paused = vm.is_paused();
    let file = File::from(fd);
    let sent = if live {
        let opts = MigrateOptions {
            pagemap: pagemap.and_then(|p| p.try_clone().ok()),
            ..MigrateOptions::default()
        };
        buffered(file, definition, |out| vm.migrate(out, opts)).map(|stats| {
            if let Some(why) = &stats.not_live {
                log_warn!("live send: memory was copied while paused: {why}");
            }
            log_info!(
                "live send: {} bytes, {} rounds, pages per pass {:?}, pre-copy {:?}, \
                 downtime {:?}",
                stats.bytes,
                stats.rounds,
                stats.pass_pages,
                stats.precopy,
                stats.downtime
            );
        })
    } else if is_snapshot_file(&file) {
        vm.snapshot_file(&file, &definition)
    } else {
        buffered(file, definition, |out| vm.snapshot(out))
    };
    match sent {
        Ok(()) => {
            log_info!("sent: stopping");
            let _ = chan.send(&VmReport::Sent, &[]);
            vm.force_stop();
        }
        Err(e) => {
            if !was_paused {
                vm.unpause();
            }
            log_warn!("send failed, the VM runs on: {e}");
            let report = VmReport::SendFailed {
                errno: transfer::errno_of(&e),
                message: e.to_string(),
            };
            let _ = chan.send(&report, &[]);
        }
    }
}

/// Whether a send's fd takes a snapshot file: a regular file open for writing (else the
/// stream's first write fails with EBADF, as any send's) at its position (not appended to:
/// the RAM's alignment counts from where the stream starts).
fn is_snapshot_file(file: &File) -> bool {
    // SAFETY: F_GETFL on an fd `file` holds open.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    flags >= 0
        && flags & libc::O_ACCMODE != libc::O_RDONLY
        && flags & libc::O_APPEND == 0
        && file.metadata().is_ok_and(|m| m.is_file())
}

/// Run `write` on the stream fd behind a large buffer and the splice that puts the definition
/// block after the header.
fn buffered<T>(
    file: File,
    definition: Vec<u8>,
    write: impl FnOnce(&mut dyn Write) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    let mut out = BufWriter::with_capacity(SEND_BUFFER, Splice::new(file, definition));
    let result = write(&mut out);
    if result.is_err() {
        // Drop what is buffered without writing it again to a broken stream.
        let _ = out.into_parts();
    }
    result
}

/// Carry out vmm's commands until the channel closes (vmm gone: stop the VM).
fn serve_commands(chan: &Channel, vm: &VmHandle, pagemap: Option<&File>) {
    loop {
        let (cmd, fds): (VmCommand, Vec<OwnedFd>) = match chan.recv() {
            Ok(m) => m,
            Err(_) => {
                vm.force_stop();
                return;
            }
        };
        match cmd {
            VmCommand::Shutdown => match vm.request_shutdown() {
                ShutdownPath::Ignored => {
                    log_info!("nothing in the guest listens for a shutdown request: stopping it");
                    vm.force_stop();
                }
                path => log_info!("asked the guest to shut down ({path:?})"),
            },
            VmCommand::Terminate => vm.force_stop(),
            VmCommand::Pause => match vm.pause() {
                Ok(()) => {
                    let _ = chan.send(&VmReport::Paused(true), &[]);
                }
                Err(e) => log_warn!("pause: {e}"),
            },
            VmCommand::Unpause => {
                vm.unpause();
                let _ = chan.send(&VmReport::Paused(false), &[]);
            }
            VmCommand::Break => vm.send_break(),
            VmCommand::Verbose(level) => log::set_verbosity(level),
            VmCommand::Send { definition, live } => send(chan, vm, definition, live, fds, pagemap),
        }
    }
}
