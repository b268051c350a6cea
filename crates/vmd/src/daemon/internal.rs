//! Messages between vmd's own processes (parent, control, vmm, one process per VM). The
//! client protocol (vmctl <-> control) is `ipc::proto`; these never leave the daemon.

use serde::{Deserialize, Serialize};

use ipc::proto::{Request, Response};

/// A control-socket client, as numbered by the control process.
pub type ClientId = u64;

/// Who sent a request: from SO_PEERCRED, with supplementary groups looked up by control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Primary and supplementary gids.
    pub gids: Vec<u32>,
}

/// control -> parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlToParent {
    /// A client request (fds attached for `start -b`).
    Request {
        client: ClientId,
        caller: Caller,
        request: Box<Request>,
    },
    /// The client went away: forget its waits.
    Gone { client: ClientId },
}

/// parent -> control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ParentToControl {
    /// Deliver `response` to `client`. Clients close their connections themselves.
    Reply {
        client: ClientId,
        response: Response,
    },
    /// `vmctl log`: the new verbosity.
    Verbose { level: u8 },
}

/// One image of a disk's chain (top first), as the parent opened it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskImage {
    /// Path the parent opened (for messages; the VM process never opens it).
    pub path: String,
    /// Explicit format name (`raw`, `qcow2`), else detected.
    pub format: Option<String>,
}

/// What the VM process's virtio-net device enforces and answers for one NIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NicLaunch {
    /// The guest's MAC.
    pub mac: [u8; 6],
    /// `locked lladdr`.
    pub locked: bool,
    /// `local interface`: the built-in DHCP responder's answers.
    pub dhcp: Option<DhcpLaunch>,
}

/// The DHCP responder of a local NIC (F-NET-11).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DhcpLaunch {
    /// The tap's MAC.
    pub host_mac: [u8; 6],
    /// The host side of the /31: router and DNS server.
    pub host: std::net::Ipv4Addr,
    /// The guest's address.
    pub guest: std::net::Ipv4Addr,
    /// `boot device net`: the VM name for the host name and boot file options.
    pub netboot: Option<String>,
}

/// What a VM process needs to build its VM. Fds come attached, in this order: the KVM fd,
/// the boot image, the initrd (if `has_initrd`), the console pty master, every image of
/// every disk (each disk's chain top first), the CD-ROM image (if `cdrom`), one tap per NIC,
/// then the stream to restore (if `restore`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// vmd's VM id.
    pub id: u32,
    /// VM name (process title, log prefix).
    pub name: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Name of the boot image for messages.
    pub boot_name: String,
    /// Whether an initrd fd is attached.
    pub has_initrd: bool,
    /// Kernel command line.
    pub cmdline: String,
    /// Disks, each a chain of images.
    pub disks: Vec<Vec<DiskImage>>,
    /// Path of the CD-ROM image, whose fd is attached, for messages.
    pub cdrom: Option<String>,
    /// NICs, one tap fd each.
    pub nics: Vec<NicLaunch>,
    /// `boot device` / `vmctl start -B`: `disk`, `cdrom` or `net`.
    pub boot_device: Option<String>,
    /// `vmctl receive`: restore the stream instead of booting.
    pub restore: Option<RestoreLaunch>,
}

/// A VM to restore from a received stream (spec §4.11). The parent has read the snapshot
/// header and the VM definition from the stream already; the rest is read from the stream
/// fd, which is positioned right after the definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreLaunch {
    /// The snapshot header as read (checked by the parent, checked again by the restore: it
    /// counts in the stream's checksum).
    pub header: Vec<u8>,
}

/// parent -> vmm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ParentToVmm {
    /// Start a VM process (fds attached as [`Launch`] says).
    Start(Launch),
    /// Ask the guest to power off (ACPI power button).
    Shutdown { id: u32 },
    /// Stop now.
    Terminate { id: u32 },
    /// Pause the vCPUs.
    Pause { id: u32 },
    /// Resume the vCPUs.
    Unpause { id: u32 },
    /// BREAK on the serial port.
    Break { id: u32 },
    /// Log verbosity for vmm and every VM process.
    Verbose { level: u8 },
    /// `vmctl send`: write the VM's state to the fd attached, with `definition` (an encoded
    /// [`crate::transfer::Definition`] block) after the snapshot header, then stop the VM;
    /// `live` (`send -l`): while the guest runs.
    Send {
        id: u32,
        definition: Vec<u8>,
        live: bool,
    },
    /// The client of a `vmctl receive` went away: end the VM process if it is still reading
    /// the stream (nothing of the guest has run, and the sender runs on).
    CancelReceive { id: u32 },
}

/// How a VM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmEnd {
    /// The guest powered off.
    Poweroff,
    /// The guest rebooted: the parent decides whether to restart it.
    Reboot,
    /// The guest crashed or the VM process failed.
    Crash,
    /// Stopped on request (forced).
    Stopped,
}

/// vmm -> parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VmmToParent {
    /// The VM process runs.
    Started { id: u32, pid: u32 },
    /// The VM could not be built (bad image, KVM failure): errno-ish code and message.
    StartFailed {
        id: u32,
        errno: i32,
        message: String,
    },
    /// Pause/unpause done.
    Paused { id: u32, paused: bool },
    /// The stream of a send is complete; the VM stops next.
    Sent { id: u32 },
    /// A send failed; the VM runs on (or stays paused if it was).
    SendFailed {
        id: u32,
        errno: i32,
        message: String,
    },
    /// The VM process ended.
    Exited { id: u32, end: VmEnd },
}

/// vmm -> one VM process, after [`Launch`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VmCommand {
    /// ACPI power button.
    Shutdown,
    /// Stop at once.
    Terminate,
    /// Pause the vCPUs.
    Pause,
    /// Resume.
    Unpause,
    /// Serial BREAK.
    Break,
    /// Log verbosity.
    Verbose(u8),
    /// Write the snapshot to the fd attached, then stop ([`ParentToVmm::Send`]).
    Send { definition: Vec<u8>, live: bool },
}

/// One VM process -> vmm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum VmReport {
    /// The VM is built and its vCPUs run.
    Running,
    /// Building failed before any guest code ran.
    Failed { errno: i32, message: String },
    /// Pause state changed.
    Paused(bool),
    /// The snapshot stream is complete; the VM stops next.
    Sent,
    /// The snapshot could not be written; the VM was left as it was.
    SendFailed { errno: i32, message: String },
    /// The VM ended.
    Ended(VmEnd),
}

/// A switch's bridge as the priv process sets it up (spec §6.2, F-NET-12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchSetup {
    /// 1-based switch number, for the description `switch<id>-<name>`.
    pub id: u32,
    /// Switch name.
    pub name: String,
    /// The Linux bridge.
    pub bridge: String,
    /// Interface group.
    pub group: Option<String>,
    /// Routing domain (VRF).
    pub rdomain: Option<u8>,
    /// Administratively up.
    pub up: bool,
}

/// One tap for one NIC of a VM (spec §6.1-6.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapSetup {
    /// `interface tapN`; `None` takes the first free `tapN`.
    pub name: Option<String>,
    /// Description: `vm<id>-if<n>-<name>`.
    pub description: String,
    /// The bridge of the switch it joins.
    pub bridge: Option<String>,
    /// Interface group.
    pub group: Option<String>,
    /// Routing domain (VRF).
    pub rdomain: Option<u8>,
    /// Administratively up.
    pub up: bool,
    /// `local interface`: addresses for the host side, with their prefix lengths.
    pub local: Vec<(std::net::IpAddr, u8)>,
}

/// One tap priv created; its fd travels with the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapReady {
    /// The interface name.
    pub name: String,
    /// The tap's own (host side) MAC: guests may unicast DHCP to it.
    pub mac: [u8; 6],
}

/// parent -> priv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ParentToPriv {
    /// Make the switch's bridge exist and configure it.
    SetupSwitch(SwitchSetup),
    /// Delete a bridge this daemon created.
    RemoveBridge { bridge: String },
    /// Create and configure the taps of one start of a VM.
    CreateTaps {
        vm: u32,
        generation: u64,
        taps: Vec<TapSetup>,
    },
}

/// priv -> parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PrivToParent {
    /// The switch is set up; `created` when its bridge did not exist before.
    SwitchReady { bridge: String, created: bool },
    /// A request failed.
    Failed { message: String },
    /// The taps of [`ParentToPriv::CreateTaps`], fds attached in the same order.
    TapsReady {
        vm: u32,
        generation: u64,
        taps: Vec<TapReady>,
    },
    /// No tap was left behind.
    TapsFailed {
        vm: u32,
        generation: u64,
        message: String,
    },
}
