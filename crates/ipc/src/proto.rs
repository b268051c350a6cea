//! The client protocol: what vmctl asks vmd's control socket and what it answers
//! (spec §1.3, §3). Daemon-internal messages live with the daemon.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below; exchanged in [`Hello`].
pub const PROTOCOL_VERSION: u32 = 2;
/// Where vmd listens unless told otherwise (`-s`).
pub const DEFAULT_SOCKET: &str = "/var/run/vmd.sock";

/// First message on every connection, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
}

/// How vmctl names a VM: a number is an id, anything else a name (spec §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmRef {
    /// vmd's VM id.
    Id(u32),
    /// The VM's name.
    Name(String),
}

/// Disk image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    /// Raw image.
    Raw,
    /// qcow2 image.
    Qcow2,
}

/// A disk given on the command line: `[raw:|qcow2:]path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Absolute path (vmctl resolves it).
    pub path: PathBuf,
    /// Explicit format, if the user gave one.
    pub format: Option<DiskFormat>,
}

/// `-B`: the device to boot from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    /// The CD-ROM.
    Cdrom,
    /// The first disk.
    Disk,
    /// The network (simulated netboot).
    Net,
}

/// One network interface requested by `start`, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicSpec {
    /// `-L`: a local interface with vmd's addressing and DHCP.
    Local,
    /// `-n switch`: attached to the named switch.
    Switch(String),
    /// Padding up to `-i count`: a plain tap.
    Plain,
}

/// `vmctl start`. For an existing VM only `vm` and optionally `boot` may be set; anything
/// else makes vmd answer EALREADY (spec §3.3). The boot image (and initrd), when given, are
/// opened by vmctl with the user's own permissions and their fds attached to the message, in
/// that order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The VM to start or create: an id (existing VMs only) or a name.
    pub vm: Option<VmRef>,
    /// `-b`: path of the kernel/BIOS image (its fd is attached).
    pub boot: Option<PathBuf>,
    /// `-B`.
    pub boot_device: Option<BootDevice>,
    /// `-d`, in order.
    pub disks: Vec<DiskSpec>,
    /// `-r`.
    pub cdrom: Option<PathBuf>,
    /// `-L`, `-n`, `-i`, already expanded into the NIC list (spec §3.3 ordering).
    pub nics: Vec<NicSpec>,
    /// `-m`, bytes.
    pub memory: Option<u64>,
    /// `-p` (extension): vCPU count.
    pub cpus: Option<u32>,
    /// `-t`: create as an instance of this template.
    pub template: Option<String>,
    /// `--initrd` (extension): path of the initial ramdisk (its fd is attached after the boot
    /// image's).
    pub initrd: Option<PathBuf>,
    /// `--cmdline` (extension): kernel command line.
    pub cmdline: Option<String>,
}

/// `vmctl reset` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetKind {
    /// VMs and switches and global settings.
    All,
    /// Switch definitions.
    Switches,
    /// Every VM and the name→id table.
    Vms,
}

/// What vmctl asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `start`.
    Start(StartRequest),
    /// `stop [-f] [-w]`: force, and whether to report the termination.
    Stop { vm: VmRef, force: bool, wait: bool },
    /// `wait`: answered with [`Response::Terminated`] when the VM stops.
    Wait(VmRef),
    /// `pause`.
    Pause(VmRef),
    /// `unpause`.
    Unpause(VmRef),
    /// `status [-r] [id]`.
    Status {
        vm: Option<VmRef>,
        running_only: bool,
    },
    /// `console`: answered with [`Response::Console`].
    Console(VmRef),
    /// Send a BREAK to the VM's serial port (console `~B`).
    Break(VmRef),
    /// `load file` (root only).
    Load(PathBuf),
    /// `reload` (root only).
    Reload,
    /// `reset` (root only).
    Reset(ResetKind),
    /// `log brief|verbose` (root only).
    Log { verbose: bool },
    /// `send [-l] id` (root only): the VM's state goes to the descriptor attached (vmctl's
    /// stdout), then the VM stops. Answered with [`Response::Sent`] once it has. `live`
    /// (`-l`, an extension): a live migration, the guest runs while its memory is sent and
    /// is paused only for the last pages and the device state.
    Send { vm: VmRef, live: bool },
    /// `receive name` (root only): a VM is restored from the stream on the descriptor
    /// attached (vmctl's stdin) and runs under `name`; answered like `start`.
    Receive(String),
}

/// vmd's own start failure codes (spec §3.5), beside plain errno values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmdError {
    /// 1001: the BIOS image is missing.
    BiosMissing,
    /// 1002: a disk image could not be opened (or the VM has no devices).
    DiskMissing,
    /// 1004: stop of a VM that is not running.
    StopInvalid,
    /// 1005: the ISO image is missing.
    CdromMissing,
    /// 1006: the ISO image is not a regular file.
    CdromInvalid,
    /// 1007: no such template.
    ParentInvalid,
}

/// A VM's state as `status` shows it (spec §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Running.
    Running,
    /// A stop was requested and the VM has not ended yet.
    Stopping,
    /// Paused.
    Paused,
    /// Queued by the staggered start.
    Waiting,
    /// Not running (including disabled).
    Stopped,
    /// Anything else.
    Unknown,
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// vmd's VM id.
    pub id: u32,
    /// VM process id while running.
    pub pid: Option<u32>,
    /// vCPU count.
    pub vcpus: u32,
    /// Configured memory, bytes.
    pub max_mem: u64,
    /// Resident memory of the VM process, bytes, while running.
    pub cur_mem: Option<u64>,
    /// Console tty path (e.g. `/dev/pts/3`) while running.
    pub tty: Option<String>,
    /// Owner uid (for a running VM: who started it).
    pub uid: u32,
    /// Owner user name, if the uid has one.
    pub user: Option<String>,
    /// Owner group name, if a group owns the VM.
    pub group: Option<String>,
    /// State.
    pub state: VmState,
    /// Name.
    pub name: String,
}

/// What vmd answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done (load, reload, reset, log, break).
    Ok,
    /// Refused or failed: an errno (0 when `code` says it all), vmd's own code if any, and a
    /// message for the log.
    Failed {
        errno: i32,
        code: Option<VmdError>,
        message: String,
    },
    /// `start` succeeded.
    Started { id: u32, tty: String },
    /// `stop` was accepted (the VM is being shut down).
    StopAccepted { id: u32 },
    /// The VM ended (after `stop -w` or `wait`); `forced` after `stop -f`.
    Terminated { id: u32, forced: bool },
    /// `pause` succeeded.
    Paused { id: u32 },
    /// `unpause` succeeded.
    Unpaused { id: u32 },
    /// `status` rows, running VMs first (spec §3.4 order).
    Status(Vec<VmStatus>),
    /// `console`: the VM's tty, which vmctl opens itself (the tty's mode is the permission).
    Console { id: u32, tty: String },
    /// `send`: the stream is complete and the VM has stopped.
    Sent { id: u32 },
}
