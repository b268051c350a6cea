//! The VM process (one per running VM): receives its launch data and descriptors from vmm,
//! builds the VM (or restores it from a received stream), enters its sandbox, runs the guest,
//! and reports how it ended. It never opens a path: the KVM device, the boot image, the
//! console and a send's or receive's stream arrive as descriptors.

use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use disk::ChainImage;
use hypervisor::{
    boot, BootDevice, BootImage, CdromImage, ExitReason, NicConfig, ShutdownPath, Vm, VmConfig,
    VmHandle,
};
use ipc::Channel;
use kvm_ioctls::Kvm;

use super::internal::{DhcpLaunch, Launch, VmCommand, VmEnd, VmReport};
use super::{log, sandbox};
use crate::transfer::{self, Splice, Timed, STALL_TIMEOUT};
use crate::{log_info, log_warn};

/// Errno-style code for failures to build a VM (vmctl prints its strerror).
const EBUILD: i32 = libc::EINVAL;
/// Buffer between a snapshot and its stream fd (a pipe or a file): few large writes.
const SEND_BUFFER: usize = 1 << 20;

/// Entry point of the `vm` role.
pub fn main(chan: Channel, inherit: &super::spawn::Inherit) -> ExitCode {
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
    std::thread::spawn(move || serve_commands(&commands, &handle));
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
    let mut disks = Vec::with_capacity(launch.disks.len());
    for chain in &launch.disks {
        let mut images = Vec::with_capacity(chain.len());
        for image in chain {
            images.push(ChainImage {
                file: File::from(next()?),
                path: PathBuf::from(&image.path),
                format: image.format.as_deref().and_then(disk::Format::from_name),
            });
        }
        let backend = disk::open_chain(images, true).map_err(|e| match e {
            disk::DiskError::InUse { .. } => (libc::EBUSY, e.to_string()),
            other => einval(other.to_string()),
        })?;
        disks.push(backend);
    }
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
            // The parent read the header and the definition; the stream goes on from there.
            let mut input = r.header.as_slice().chain(Timed::new(stream, STALL_TIMEOUT));
            let vm = Vm::restore(cfg, &mut input)
                .map_err(|e| (transfer::errno_of(&e), e.to_string()))?;
            log_info!("restored from the received stream");
            Ok(vm)
        }
        _ => Vm::new(cfg).map_err(|e| einval(e.to_string())),
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

/// `vmctl send`: write the snapshot, with the definition block after its header, to the
/// stream fd. Once it is complete the VM stops (spec §4.11); if writing fails the VM is left
/// as it was, running or paused, and nothing of the guest was lost.
fn send(chan: &Channel, vm: &VmHandle, definition: Vec<u8>, fds: Vec<OwnedFd>) {
    let Some(fd) = fds.into_iter().next() else {
        let report = VmReport::SendFailed {
            errno: libc::EINVAL,
            message: "send without a stream descriptor".into(),
        };
        let _ = chan.send(&report, &[]);
        return;
    };
    let was_paused = vm.is_paused();
    let mut out = BufWriter::with_capacity(SEND_BUFFER, Splice::new(File::from(fd), definition));
    match vm.snapshot(&mut out) {
        Ok(()) => {
            log_info!("sent: stopping");
            let _ = chan.send(&VmReport::Sent, &[]);
            vm.force_stop();
        }
        Err(e) => {
            // Drop what is buffered without writing it again to a broken stream.
            let _ = out.into_parts();
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

/// Carry out vmm's commands until the channel closes (vmm gone: stop the VM).
fn serve_commands(chan: &Channel, vm: &VmHandle) {
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
            VmCommand::Send { definition } => send(chan, vm, definition, fds),
        }
    }
}
