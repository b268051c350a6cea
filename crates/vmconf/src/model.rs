//! The typed configuration the daemon consumes.
//!
//! Values are already validated and resolved (paths made absolute, users and groups turned
//! into ids, disk formats sniffed). Options the file left unset stay `None` where the daemon
//! must tell "unset" from a value, because VM instances inherit unset options from their
//! parent (spec §4.4); the `DEFAULT_*` constants give what vmd uses otherwise.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Location;

/// Memory of a VM whose block has no `memory` line.
pub const DEFAULT_MEMORY: u64 = 512 * 1024 * 1024;
/// vCPUs of a VM whose block has no `cpus` line.
pub const DEFAULT_CPUS: u32 = 1;
/// Boot image used when a VM has no `boot PATH`.
pub const DEFAULT_BIOS: &str = "/etc/firmware/vmm-bios";
/// `staggered start delay` when the file does not set one, in seconds.
pub const DEFAULT_STAGGER_DELAY: u32 = 30;
/// AgentX master socket when `agentx` has no `path`.
pub const DEFAULT_AGENTX_PATH: &str = "/var/agentx/master";

/// A whole parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Config {
    pub global: Global,
    /// Enabled switches in declaration order; disabled ones are dropped as vmd does.
    pub switches: Vec<Switch>,
    /// VMs in declaration order, without later duplicates of a name.
    pub vms: Vec<Vm>,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Global {
    /// Pool for the /31 subnets of `local interface`s.
    pub local_prefix: Ipv4Prefix,
    /// IPv6 on local interfaces; `None` when `local inet6` is absent.
    pub local_inet6: Option<LocalInet6>,
    /// Owner of the control socket; defaults to root:root.
    pub socket_owner: SocketOwner,
    /// `staggered start`; `None` means parallel = online CPUs, delay = 30 s.
    pub staggered_start: Option<StaggeredStart>,
    /// `agentx`; `None` when the sub-agent is off.
    pub agentx: Option<AgentX>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            local_prefix: Ipv4Prefix {
                addr: Ipv4Addr::new(100, 64, 0, 0),
                len: 10,
            },
            local_inet6: None,
            socket_owner: SocketOwner { uid: 0, gid: 0 },
            staggered_start: None,
            agentx: None,
        }
    }
}

/// An IPv4 network with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// An IPv6 network with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

/// How local interfaces get IPv6 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalInet6 {
    /// `local inet6`: the daemon generates a random ULA prefix once per lifetime.
    Auto,
    /// `local inet6 prefix X::/len`.
    Prefix(Ipv6Prefix),
}

/// `socket owner`: a missing group means gid 0, as in vmd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOwner {
    pub uid: u32,
    pub gid: u32,
}

/// `staggered start parallel N delay S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaggeredStart {
    pub parallel: u32,
    pub delay_secs: u32,
}

/// `agentx [context C] [path P]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentX {
    pub context: Option<String>,
    pub path: String,
}

/// A `switch` block: a name mapped onto an existing host bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    /// 1-based among enabled switches, used in the bridge description `switch<id>-<name>`.
    pub id: u32,
    pub name: String,
    /// Host bridge interface.
    pub interface: String,
    pub group: Option<String>,
    pub locked: bool,
    pub rdomain: Option<u8>,
    pub up: bool,
    pub location: Location,
}

/// A user and optional group given by `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// 0 when only a group was named, as in vmd.
    pub uid: u32,
    pub gid: Option<u32>,
}

/// A forced boot device (`boot device ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootDevice {
    Cdrom,
    Disk,
    Net,
}

/// On-disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

/// One `disk` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Canonical path (vmd resolves it with realpath at parse time).
    pub path: PathBuf,
    /// Explicit `format`, else sniffed from the first bytes, else raw.
    pub format: DiskFormat,
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A VM network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// A specific `tapN`; `None` for `tap` or no name (first free tap).
    pub name: Option<String>,
    /// `local interface`: routed /31 with the built-in DHCP server.
    pub local: bool,
    /// Name of a `switch` block (not checked: an unknown switch only warns at start).
    pub switch: Option<String>,
    pub group: Option<String>,
    pub locked: bool,
    /// `None` means generate one when the VM is registered.
    pub lladdr: Option<MacAddr>,
    pub rdomain: Option<u8>,
    pub up: bool,
}

impl Default for Interface {
    fn default() -> Self {
        Interface {
            name: None,
            local: false,
            switch: None,
            group: None,
            locked: false,
            lladdr: None,
            rdomain: None,
            up: true,
        }
    }
}

/// `allow instance { ... }`: what a non-root user may change in an instance of this VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstancePermissions {
    pub boot: bool,
    pub memory: bool,
    pub interface: bool,
    pub disk: bool,
    pub cdrom: bool,
    pub instance: bool,
    pub owner: Option<Owner>,
}

/// AMD memory encryption requested by `sev` / `seves`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Sev {
    #[default]
    Off,
    Sev,
    SevEs,
}

/// A `vm` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    /// The template of `vm PARENT instance NAME`.
    pub parent: Option<String>,
    pub enabled: bool,
    /// Canonical kernel or BIOS image path.
    pub boot: Option<PathBuf>,
    pub boot_device: Option<BootDevice>,
    /// ISO path as written (vmd does not resolve it at parse time).
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<Disk>,
    /// NICs, already padded with default ones up to `interfaces N`.
    pub interfaces: Vec<Interface>,
    /// Bytes, a whole number of MiB.
    pub memory: Option<u64>,
    pub owner: Option<Owner>,
    pub allow_instance: Option<InstancePermissions>,
    pub sev: Sev,
    /// Extension: vCPU count.
    pub cpus: Option<u32>,
    /// Extension: canonical path of a Linux initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Extension: Linux kernel command line.
    pub cmdline: Option<String>,
    pub location: Location,
}
