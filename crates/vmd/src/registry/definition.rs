//! A VM's definition: the unresolved [`Draft`] built from a config block or a `start`
//! request, and the [`VmDef`] the registry keeps once defaults, limits, switch flags and
//! MACs are applied (spec §4.1 steps 4–7; F-LIFE-01, F-LIFE-04, F-LIFE-06).

use std::path::PathBuf;

use ipc::proto::{self, NicSpec, StartRequest};
use vmconf::validate::{memory_size, MAX_DISKS, MAX_NICS, MAX_VCPUS};
use vmconf::{
    BootDevice, DiskFormat, InstancePermissions, Interface, MacAddr, Owner, Sev, Switch,
    DEFAULT_CPUS, DEFAULT_MEMORY,
};

use super::error::Failure;
use super::mac::{generate_mac, RandomSource};
use super::name::check_name;
use super::permission::Caller;

/// A disk as the VM will use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    /// `None`: sniff when opening (vmctl sent no `raw:`/`qcow2:` prefix).
    pub format: Option<DiskFormat>,
}

/// A NIC with its MAC chosen and its switch's flags folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// A specific `tapN`; `None` for the first free tap.
    pub name: Option<String>,
    pub local: bool,
    pub switch: Option<String>,
    pub group: Option<String>,
    pub locked: bool,
    pub mac: MacAddr,
    pub rdomain: Option<u8>,
    pub up: bool,
}

/// Which files came from a non-root user's request and so are checked against that user
/// (spec §4.5); anything from the configuration or a template is not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UserFiles {
    pub boot: bool,
    pub initrd: bool,
    pub cdrom: bool,
    pub disks: bool,
}

/// A registered VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDef {
    pub name: String,
    /// The template this VM is an instance of.
    pub template: Option<String>,
    /// Started by the staggered start after load/reload.
    pub enabled: bool,
    /// Kernel or BIOS image; `None` means the default BIOS.
    pub boot: Option<PathBuf>,
    /// Forced boot device; a VM with one is not restarted on guest reboot.
    pub boot_device: Option<BootDevice>,
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// Bytes, a whole number of MiB.
    pub memory: u64,
    pub cpus: u32,
    pub owner: Owner,
    pub allow_instance: Option<InstancePermissions>,
    pub sev: Sev,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub(crate) user_files: UserFiles,
    /// The non-root user who created this VM by request (their file access is checked).
    pub(crate) requester: Option<Caller>,
}

/// A definition before registration: unset options stay `None` so that an instance can
/// inherit them from its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    pub name: String,
    pub template: Option<String>,
    pub enabled: bool,
    pub boot: Option<PathBuf>,
    pub boot_device: Option<BootDevice>,
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Interface>,
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    pub owner: Option<Owner>,
    pub allow_instance: Option<InstancePermissions>,
    pub sev: Sev,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub user_files: UserFiles,
    pub requester: Option<Caller>,
}

impl Draft {
    /// A `vm` block of vm.conf (registered as root).
    pub(crate) fn from_config(vm: &vmconf::Vm) -> Draft {
        Draft {
            name: vm.name.clone(),
            template: vm.parent.clone(),
            enabled: vm.enabled,
            boot: vm.boot.clone(),
            boot_device: vm.boot_device,
            cdrom: vm.cdrom.clone(),
            disks: vm
                .disks
                .iter()
                .map(|d| Disk {
                    path: d.path.clone(),
                    format: Some(d.format),
                })
                .collect(),
            nics: vm.interfaces.clone(),
            memory: vm.memory,
            cpus: vm.cpus,
            owner: vm.owner,
            allow_instance: vm.allow_instance,
            sev: vm.sev,
            initrd: vm.initrd.clone(),
            cmdline: vm.cmdline.clone(),
            user_files: UserFiles::default(),
            requester: None,
        }
    }

    /// A `vmctl start` of a VM that does not exist yet.
    pub(crate) fn from_request(name: &str, req: &StartRequest, caller: &Caller) -> Draft {
        // vmd's control process sets the owner to the peer; for root asking for an instance
        // that uid 0 means "unset", so the instance takes its template's owner.
        let owner = if caller.is_root() && req.template.is_some() {
            None
        } else {
            Some(Owner {
                uid: caller.uid,
                gid: None,
            })
        };
        Draft {
            name: name.to_owned(),
            template: req.template.clone(),
            enabled: true,
            boot: req.boot.clone(),
            boot_device: req.boot_device.map(boot_device),
            cdrom: req.cdrom.clone(),
            disks: req
                .disks
                .iter()
                .map(|d| Disk {
                    path: d.path.clone(),
                    format: d.format.map(disk_format),
                })
                .collect(),
            nics: req.nics.iter().map(interface).collect(),
            memory: req.memory,
            cpus: req.cpus,
            owner,
            allow_instance: None,
            sev: Sev::Off,
            initrd: req.initrd.clone(),
            cmdline: req.cmdline.clone(),
            user_files: UserFiles {
                boot: req.boot.is_some(),
                initrd: req.initrd.is_some(),
                cdrom: req.cdrom.is_some(),
                disks: !req.disks.is_empty(),
            },
            requester: (!caller.is_root()).then(|| caller.clone()),
        }
    }

    /// `vmctl receive name`: the definition a stream carries, under its new name, owned by
    /// root (only root receives). The NICs keep their MACs: the guest's drivers know them,
    /// and `locked lladdr` would drop every frame of a guest whose MAC changed.
    pub(crate) fn from_definition(name: &str, def: &crate::transfer::Definition) -> Draft {
        Draft {
            name: name.to_owned(),
            template: None,
            enabled: true,
            boot: def.boot.clone(),
            boot_device: def.boot_device,
            cdrom: def.cdrom.clone(),
            disks: def
                .disks
                .iter()
                .map(|d| Disk {
                    path: d.path.clone(),
                    format: d.format,
                })
                .collect(),
            nics: def
                .nics
                .iter()
                .map(|n| Interface {
                    name: n.name.clone(),
                    local: n.local,
                    switch: n.switch.clone(),
                    group: n.group.clone(),
                    locked: n.locked,
                    lladdr: Some(MacAddr(n.mac)),
                    rdomain: n.rdomain,
                    up: n.up,
                })
                .collect(),
            memory: Some(def.memory),
            cpus: Some(def.cpus),
            owner: None,
            allow_instance: None,
            sev: Sev::Off,
            initrd: def.initrd.clone(),
            cmdline: def.cmdline.clone(),
            user_files: UserFiles::default(),
            requester: None,
        }
    }

    /// vmd's `vmc_flags == 0`: a request that names no device or size at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.boot.is_none()
            && self.cdrom.is_none()
            && self.disks.is_empty()
            && self.nics.is_empty()
            && self.memory.is_none()
            && self.cpus.is_none()
    }
}

pub(crate) fn boot_device(d: proto::BootDevice) -> BootDevice {
    match d {
        proto::BootDevice::Cdrom => BootDevice::Cdrom,
        proto::BootDevice::Disk => BootDevice::Disk,
        proto::BootDevice::Net => BootDevice::Net,
    }
}

fn disk_format(f: proto::DiskFormat) -> DiskFormat {
    match f {
        proto::DiskFormat::Raw => DiskFormat::Raw,
        proto::DiskFormat::Qcow2 => DiskFormat::Qcow2,
    }
}

fn interface(nic: &NicSpec) -> Interface {
    match nic {
        NicSpec::Local => Interface {
            local: true,
            ..Interface::default()
        },
        NicSpec::Switch(s) => Interface {
            switch: Some(s.clone()),
            ..Interface::default()
        },
        NicSpec::Plain => Interface::default(),
    }
}

fn invalid(name: &str, why: impl std::fmt::Display) -> Failure {
    Failure::errno(libc::EINVAL, format!("vm \"{name}\": {why}"))
}

/// Defaults, limits and NIC resolution (vm_register steps 5–7). `switches` are the known
/// switches, whose `locked lladdr` and `rdomain` the NICs attached to them inherit.
pub(crate) fn resolve(
    d: Draft,
    switches: &[Switch],
    rng: &mut dyn RandomSource,
) -> Result<VmDef, Failure> {
    check_name(&d.name)?;
    let name = d.name.as_str();
    let cpus = match d.cpus {
        None | Some(0) => DEFAULT_CPUS,
        Some(n) if i64::from(n) > MAX_VCPUS => {
            return Err(invalid(name, format!("more than {MAX_VCPUS} vcpus")))
        }
        Some(n) => n,
    };
    let memory = match d.memory {
        None | Some(0) => DEFAULT_MEMORY,
        Some(bytes) => {
            memory_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                .map_err(|why| invalid(name, why))?
                .0
        }
    };
    if d.disks.len() > MAX_DISKS {
        return Err(invalid(name, format!("more than {MAX_DISKS} disks")));
    }
    if d.nics.len() > MAX_NICS {
        return Err(invalid(name, format!("more than {MAX_NICS} interfaces")));
    }
    if d.boot.is_none() && d.disks.is_empty() && d.cdrom.is_none() {
        return Err(invalid(name, "no kernel or disk/cdrom specified"));
    }
    if d.boot.is_none() && (d.initrd.is_some() || d.cmdline.is_some()) {
        return Err(invalid(name, "initrd and cmdline need a kernel"));
    }
    let mut nics = Vec::with_capacity(d.nics.len());
    for (i, iface) in d.nics.into_iter().enumerate() {
        let sw = iface
            .switch
            .as_deref()
            .and_then(|s| switches.iter().find(|sw| sw.name == s));
        // An all-zero lladdr means "none" in vmd.
        let mac = match iface.lladdr.filter(|m| m.0 != [0; 6]) {
            Some(m) => m,
            None => generate_mac(i, rng)?,
        };
        nics.push(Nic {
            name: iface.name,
            local: iface.local,
            group: iface.group,
            locked: iface.locked || sw.is_some_and(|s| s.locked),
            rdomain: iface.rdomain.or(sw.and_then(|s| s.rdomain)),
            switch: iface.switch,
            mac,
            up: iface.up,
        });
    }
    Ok(VmDef {
        owner: d.owner.unwrap_or(Owner {
            uid: super::permission::ROOT_UID,
            gid: None,
        }),
        name: d.name,
        template: d.template,
        enabled: d.enabled,
        boot: d.boot,
        boot_device: d.boot_device,
        cdrom: d.cdrom,
        disks: d.disks,
        nics,
        memory,
        cpus,
        allow_instance: d.allow_instance,
        sev: d.sev,
        initrd: d.initrd,
        cmdline: d.cmdline,
        user_files: d.user_files,
        requester: d.requester,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{user, vm, SeqRandom};
    use super::*;

    fn resolved(d: Draft) -> Result<VmDef, Failure> {
        resolve(d, &[], &mut SeqRandom::default())
    }

    #[test]
    fn defaults_are_one_vcpu_and_512m_owned_by_root() {
        let def = resolved(Draft::from_config(&vm("a"))).unwrap();
        assert_eq!(def.cpus, 1);
        assert_eq!(def.memory, 512 << 20);
        assert_eq!(def.owner, Owner { uid: 0, gid: None });
    }

    #[test]
    fn initrd_and_cmdline_need_a_kernel() {
        let mut d = Draft::from_config(&vm("a"));
        d.cmdline = Some("quiet".into());
        assert_eq!(resolved(d.clone()).unwrap_err().errno, libc::EINVAL);
        d.boot = Some(PathBuf::from("/vmlinuz"));
        assert!(resolved(d).is_ok());
    }

    #[test]
    fn request_drafts_remember_what_the_user_supplied() {
        let req = StartRequest {
            boot: Some(PathBuf::from("/k")),
            disks: vec![proto::DiskSpec {
                path: PathBuf::from("/d"),
                format: Some(proto::DiskFormat::Qcow2),
            }],
            ..StartRequest::default()
        };
        let d = Draft::from_request("x", &req, &user(1000, &[1000]));
        assert_eq!(
            d.user_files,
            UserFiles {
                boot: true,
                initrd: false,
                cdrom: false,
                disks: true
            }
        );
        assert_eq!(d.disks[0].format, Some(DiskFormat::Qcow2));
        assert_eq!(d.requester, Some(user(1000, &[1000])));
        let d = Draft::from_request("x", &req, &Caller::root());
        assert_eq!(d.requester, None);
    }

    #[test]
    fn nic_specs_become_interfaces_in_order() {
        let req = StartRequest {
            nics: vec![NicSpec::Switch("sw".into()), NicSpec::Local, NicSpec::Plain],
            ..StartRequest::default()
        };
        let d = Draft::from_request("x", &req, &Caller::root());
        assert_eq!(d.nics[0].switch.as_deref(), Some("sw"));
        assert!(d.nics[1].local);
        assert_eq!(d.nics[2], Interface::default());
    }
}
