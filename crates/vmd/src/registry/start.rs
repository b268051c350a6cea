//! `vmctl start`, registration and the start plan (spec §3.3, §4.1, §4.6).
//!
//! [`Registry::start_request`] decides what a start request means (start an existing VM,
//! create a VM, create an instance) and returns a [`StartPlan`]: everything the parent needs
//! to open the images, taps and console and hand them to a VM process. The VM counts as
//! running from then on, so a second start is refused while the first is in flight.

use std::path::PathBuf;
use std::time::Instant;

use ipc::proto::{StartRequest, VmRef};
use vmconf::{BootDevice, Owner, Sev, Switch, DEFAULT_BIOS};

use super::control::may_control;
use super::definition::{resolve, Disk, Draft, Nic};
use super::error::Failure;
use super::files::{FileKind, FileUse, Need};
use super::instance;
use super::permission::Caller;
use super::state::{Run, RunState};
use super::{Origin, Registry, VmEntry, VmId};

/// A NIC to create, with the switch it attaches to (`None` if it names none, or a switch
/// that does not exist: vmd then only warns and leaves the tap unattached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    pub nic: Nic,
    pub switch: Option<Switch>,
}

/// One run of a VM for the parent to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    pub id: VmId,
    /// Pass back with [`Registry::mark_running`], [`Registry::start_failed`] and
    /// [`Registry::vm_exited`].
    pub generation: u64,
    pub name: String,
    /// Bytes.
    pub memory: u64,
    pub cpus: u32,
    /// Kernel or BIOS image; `None` means the default BIOS (see `files`).
    pub boot: Option<PathBuf>,
    pub boot_device: Option<BootDevice>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub cdrom: Option<PathBuf>,
    pub disks: Vec<Disk>,
    pub nics: Vec<NicPlan>,
    pub sev: Sev,
    /// Configured owner: its group owns the console (spec §4.10).
    pub owner: Owner,
    /// The user who started this run: the console's owner.
    pub started_by: u32,
    /// On a restart after a guest reboot: the console to keep using.
    pub tty: Option<String>,
    /// Every file to check (with [`super::check_file_access`]) before opening it.
    pub files: Vec<FileUse>,
}

/// `-b` (with the extension's initrd and cmdline) for one start of an existing VM. A guest
/// reboot during that run boots the configured image again, as the next boot should.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BootOverride {
    boot: PathBuf,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
}

/// Whether a request for an existing VM asks for anything but a one-time boot image;
/// vmd answers EALREADY to that (spec §3.3).
fn only_boot_override(req: &StartRequest) -> bool {
    req.boot_device.is_none()
        && req.disks.is_empty()
        && req.cdrom.is_none()
        && req.nics.is_empty()
        && req.memory.is_none()
        && req.cpus.is_none()
        && (req.boot.is_some() || (req.initrd.is_none() && req.cmdline.is_none()))
}

impl Registry {
    /// `vmctl start` from `caller` at `now`.
    pub fn start_request(
        &mut self,
        req: &StartRequest,
        caller: &Caller,
        now: Instant,
    ) -> Result<StartPlan, Failure> {
        let Some(vm) = &req.vm else {
            return Err(Failure::errno(libc::EINVAL, "no vm name given"));
        };
        if req.template.is_some() {
            let VmRef::Name(name) = vm else {
                return Err(Failure::errno(
                    libc::EINVAL,
                    "an instance needs a name, not an id",
                ));
            };
            return self.create_and_start(Draft::from_request(name, req, caller), caller, now);
        }
        if let Some(idx) = self.find(vm) {
            let e = &self.vms[idx];
            let name = &e.def.name;
            if !may_control(e, caller) {
                return Err(Failure::errno(
                    libc::EPERM,
                    format!("vm \"{name}\": permission denied for uid {}", caller.uid),
                ));
            }
            if !only_boot_override(req) {
                return Err(Failure::errno(
                    libc::EALREADY,
                    format!("vm \"{name}\" already exists: only -b may be given"),
                ));
            }
            if e.is_running() {
                return Err(Failure::errno(
                    libc::EALREADY,
                    format!("vm \"{name}\" is already running"),
                ));
            }
            let over = req.boot.clone().map(|boot| BootOverride {
                boot,
                initrd: req.initrd.clone(),
                cmdline: req.cmdline.clone(),
            });
            return self.begin_start(idx, caller.clone(), over, None, now);
        }
        match vm {
            VmRef::Id(id) => Err(Failure::errno(libc::ENOENT, format!("vm {id} not found"))),
            VmRef::Name(name) => {
                self.create_and_start(Draft::from_request(name, req, caller), caller, now)
            }
        }
    }

    /// `vmctl receive name` (root only): register the VM a stream defines as a new ad-hoc VM
    /// owned by root, with the usual checks (name free and valid, limits, MACs kept), and
    /// plan its run. The VM process restores the stream instead of booting.
    pub fn receive_request(
        &mut self,
        name: &str,
        def: &crate::transfer::Definition,
        now: Instant,
    ) -> Result<StartPlan, Failure> {
        self.create_and_start(Draft::from_definition(name, def), &Caller::root(), now)
    }

    fn create_and_start(
        &mut self,
        draft: Draft,
        caller: &Caller,
        now: Instant,
    ) -> Result<StartPlan, Failure> {
        let idx = self.register(draft, caller, Origin::Request)?;
        self.begin_start(idx, caller.clone(), None, None, now)
            .inspect_err(|_| {
                self.vms.remove(idx);
            })
    }

    /// `vm_register` (spec §4.1): instance rules, existence and permission checks, then
    /// defaults, validation, MACs and the sticky id. Returns the new entry's index.
    pub(crate) fn register(
        &mut self,
        mut draft: Draft,
        caller: &Caller,
        origin: Origin,
    ) -> Result<usize, Failure> {
        if let Some(template) = draft.template.clone() {
            let Some(p) = self.find_name(&template) else {
                return Err(Failure::code(
                    ipc::proto::VmdError::ParentInvalid,
                    format!("vm \"{}\": no template \"{template}\"", draft.name),
                ));
            };
            let parent = &self.vms[p].def;
            instance::check_permission(parent, caller, &draft.name)?;
            // vmd answers EPROCLIM, which Linux lacks; EEXIST says the same plainly.
            if self.find_name(&draft.name).is_some() {
                return Err(Failure::errno(
                    libc::EEXIST,
                    format!("vm \"{}\" already exists", draft.name),
                ));
            }
            instance::inherit(&mut draft, parent, caller)?;
        } else {
            if self.find_name(&draft.name).is_some() {
                return Err(Failure::errno(
                    libc::EALREADY,
                    format!("vm \"{}\" already exists", draft.name),
                ));
            }
            if !caller.is_root() {
                return Err(Failure::errno(
                    libc::EPERM,
                    format!(
                        "vm \"{}\": uid {} may only create instances of templates",
                        draft.name, caller.uid
                    ),
                ));
            }
            if draft.is_empty() {
                return Err(Failure::code(
                    ipc::proto::VmdError::DiskMissing,
                    format!("vm \"{}\": invalid configuration, no devices", draft.name),
                ));
            }
        }
        let def = resolve(draft, &self.switches, self.rng.as_mut())?;
        let id = self.ids.claim(&def.name, def.owner.uid)?;
        self.vms.push(VmEntry {
            id,
            def,
            origin,
            run: RunState::Stopped,
            limiter: Default::default(),
        });
        Ok(self.vms.len() - 1)
    }

    /// Starts a waiting VM for the staggered start, as its configured owner.
    pub(crate) fn start_waiting(&mut self, idx: usize, now: Instant) -> Result<StartPlan, Failure> {
        let owner = self.vms[idx].def.owner;
        let as_owner = Caller {
            uid: owner.uid,
            gids: owner.gid.into_iter().collect(),
        };
        self.begin_start(idx, as_owner, None, None, now)
            .inspect_err(|_| self.vms[idx].run = RunState::Stopped)
    }

    /// Every start goes through here: the rate limit, a new generation, the plan.
    pub(crate) fn begin_start(
        &mut self,
        idx: usize,
        started_by: Caller,
        over: Option<BootOverride>,
        tty: Option<String>,
        now: Instant,
    ) -> Result<StartPlan, Failure> {
        self.check_user_limits(idx, &started_by)?;
        let e = &mut self.vms[idx];
        if !e.limiter.admit(now) {
            return Err(Failure::errno(
                libc::EPERM,
                format!("vm {} restarted too quickly", e.id),
            ));
        }
        self.generation += 1;
        let plan = plan(
            e,
            &self.switches,
            self.generation,
            &started_by,
            over,
            tty.clone(),
        );
        e.run = RunState::Running(Run {
            generation: self.generation,
            pid: None,
            tty,
            started_by,
            paused: false,
            stopping: false,
            forced: false,
        });
        Ok(plan)
    }
}

fn plan(
    e: &VmEntry,
    switches: &[Switch],
    generation: u64,
    started_by: &Caller,
    over: Option<BootOverride>,
    tty: Option<String>,
) -> StartPlan {
    let def = &e.def;
    // Files from the configuration or a template are trusted; a user's are checked as them.
    let as_requester = |supplied: bool| def.requester.clone().filter(|_| supplied);
    let as_starter = (!started_by.is_root()).then(|| started_by.clone());
    let mut files = Vec::new();
    let mut add = |kind, path: &PathBuf, need, check_as| {
        files.push(FileUse {
            kind,
            path: path.clone(),
            need,
            check_as,
        })
    };
    let (boot, initrd, cmdline) = match over {
        Some(o) => {
            add(FileKind::Kernel, &o.boot, Need::Read, as_starter.clone());
            if let Some(i) = &o.initrd {
                add(FileKind::Initrd, i, Need::Read, as_starter.clone());
            }
            (Some(o.boot), o.initrd, o.cmdline)
        }
        None => {
            match &def.boot {
                Some(b) => add(
                    FileKind::Kernel,
                    b,
                    Need::Read,
                    as_requester(def.user_files.boot),
                ),
                None => add(
                    FileKind::DefaultBios,
                    &PathBuf::from(DEFAULT_BIOS),
                    Need::Read,
                    None,
                ),
            }
            if let Some(i) = &def.initrd {
                add(
                    FileKind::Initrd,
                    i,
                    Need::Read,
                    as_requester(def.user_files.initrd),
                );
            }
            (def.boot.clone(), def.initrd.clone(), def.cmdline.clone())
        }
    };
    if let Some(c) = &def.cdrom {
        add(
            FileKind::Cdrom,
            c,
            Need::Read,
            as_requester(def.user_files.cdrom),
        );
    }
    for d in &def.disks {
        add(
            FileKind::Disk,
            &d.path,
            Need::ReadWrite,
            as_requester(def.user_files.disks),
        );
    }
    StartPlan {
        id: e.id,
        generation,
        name: def.name.clone(),
        memory: def.memory,
        cpus: def.cpus,
        boot,
        boot_device: def.boot_device,
        initrd,
        cmdline,
        cdrom: def.cdrom.clone(),
        disks: def.disks.clone(),
        nics: def
            .nics
            .iter()
            .map(|nic| NicPlan {
                nic: nic.clone(),
                switch: nic
                    .switch
                    .as_deref()
                    .and_then(|s| switches.iter().find(|sw| sw.name == s))
                    .cloned(),
            })
            .collect(),
        sev: def.sev,
        owner: def.owner,
        started_by: started_by.uid,
        tty,
        files,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use ipc::proto::{DiskSpec, NicSpec, VmState, VmdError};
    use vmconf::validate::MAX_NAME_LEN;

    use super::super::testutil::{config, registry, user, vm};
    use super::*;

    const ALICE: u32 = 1000;
    const BOB: u32 = 1001;
    const STAFF: u32 = 50;

    fn by_name(name: &str) -> Option<VmRef> {
        Some(VmRef::Name(name.to_owned()))
    }

    fn adhoc(name: &str) -> StartRequest {
        StartRequest {
            vm: by_name(name),
            disks: vec![DiskSpec {
                path: PathBuf::from(format!("/home/u/{name}.img")),
                format: None,
            }],
            ..StartRequest::default()
        }
    }

    fn just(name: &str) -> StartRequest {
        StartRequest {
            vm: by_name(name),
            ..StartRequest::default()
        }
    }

    fn owned_config_vm(name: &str, uid: u32, gid: Option<u32>) -> vmconf::Vm {
        vmconf::Vm {
            owner: Some(Owner { uid, gid }),
            enabled: false,
            ..vm(name)
        }
    }

    #[test]
    fn config_vm_starts_with_its_definition() {
        let mut r = registry();
        r.load_config(&config(vec![vm("web")]));
        let plan = r
            .start_request(&just("web"), &Caller::root(), Instant::now())
            .unwrap();
        assert_eq!(plan.id, 1);
        assert_eq!(plan.name, "web");
        assert_eq!(plan.memory, vmconf::DEFAULT_MEMORY);
        assert_eq!(plan.cpus, 1);
        assert_eq!(plan.disks[0].path, Path::new("/var/vm/web.img"));
        assert_eq!(plan.boot, None);
        // Configuration files need only the regular-file check.
        assert!(plan.files.iter().all(|f| f.check_as.is_none()));
        assert_eq!(plan.files[0].kind, FileKind::DefaultBios);
        assert_eq!(r.get(&VmRef::Id(1)).unwrap().state(), VmState::Running);
    }

    #[test]
    fn adhoc_vm_by_root_is_created_and_started() {
        let mut r = registry();
        let plan = r
            .start_request(&adhoc("tmp"), &Caller::root(), Instant::now())
            .unwrap();
        assert_eq!(plan.owner, Owner { uid: 0, gid: None });
        assert_eq!(plan.disks[0].format, None);
        assert_eq!(
            r.get(&VmRef::Id(plan.id)).unwrap().origin(),
            Origin::Request
        );
    }

    #[test]
    fn non_root_adhoc_vm_is_refused() {
        let mut r = registry();
        let f = r
            .start_request(&adhoc("mine"), &user(ALICE, &[ALICE]), Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
        assert!(r.get(&VmRef::Name("mine".into())).is_none());
    }

    #[test]
    fn request_without_any_device_is_disk_missing() {
        let mut r = registry();
        let f = r
            .start_request(&just("empty"), &Caller::root(), Instant::now())
            .unwrap_err();
        assert_eq!(f.code, Some(VmdError::DiskMissing));
    }

    #[test]
    fn request_with_memory_but_no_disk_or_kernel_is_einval() {
        let mut r = registry();
        let req = StartRequest {
            memory: Some(1 << 30),
            ..just("nodisk")
        };
        let f = r
            .start_request(&req, &Caller::root(), Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::EINVAL);
    }

    #[test]
    fn starting_a_running_vm_is_ealready() {
        let mut r = registry();
        r.load_config(&config(vec![vm("web")]));
        let now = Instant::now();
        r.start_request(&just("web"), &Caller::root(), now).unwrap();
        let f = r
            .start_request(&just("web"), &Caller::root(), now)
            .unwrap_err();
        assert_eq!(f.errno, libc::EALREADY);
    }

    #[test]
    fn options_for_an_existing_vm_are_ealready() {
        let mut r = registry();
        r.load_config(&config(vec![vm("web")]));
        for req in [
            StartRequest {
                memory: Some(1 << 30),
                ..just("web")
            },
            adhoc("web"),
            StartRequest {
                nics: vec![NicSpec::Local],
                ..just("web")
            },
            StartRequest {
                cmdline: Some("console=ttyS0".into()),
                ..just("web")
            },
        ] {
            let f = r
                .start_request(&req, &Caller::root(), Instant::now())
                .unwrap_err();
            assert_eq!(f.errno, libc::EALREADY, "{req:?}");
        }
    }

    #[test]
    fn boot_override_is_for_one_start_and_checked_as_the_user() {
        let mut r = registry();
        r.load_config(&config(vec![owned_config_vm("web", ALICE, None)]));
        let alice = user(ALICE, &[ALICE]);
        let req = StartRequest {
            boot: Some(PathBuf::from("/home/alice/bsd.rd")),
            ..just("web")
        };
        let plan = r.start_request(&req, &alice, Instant::now()).unwrap();
        assert_eq!(plan.boot.as_deref(), Some(Path::new("/home/alice/bsd.rd")));
        let kernel = plan
            .files
            .iter()
            .find(|f| f.kind == FileKind::Kernel)
            .unwrap();
        assert_eq!(kernel.check_as, Some(alice));
        // The definition itself is unchanged.
        assert_eq!(r.get(&VmRef::Id(plan.id)).unwrap().def().boot, None);
    }

    #[test]
    fn existing_vm_by_id() {
        let mut r = registry();
        r.load_config(&config(vec![vm("a"), vm("b")]));
        let plan = r
            .start_request(
                &StartRequest {
                    vm: Some(VmRef::Id(2)),
                    ..StartRequest::default()
                },
                &Caller::root(),
                Instant::now(),
            )
            .unwrap();
        assert_eq!(plan.name, "b");
    }

    #[test]
    fn unknown_id_is_enoent() {
        let mut r = registry();
        let req = StartRequest {
            vm: Some(VmRef::Id(7)),
            ..StartRequest::default()
        };
        let f = r
            .start_request(&req, &Caller::root(), Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::ENOENT);
    }

    #[test]
    fn owner_user_may_start_their_config_vm() {
        let mut r = registry();
        r.load_config(&config(vec![owned_config_vm("web", ALICE, None)]));
        let plan = r
            .start_request(&just("web"), &user(ALICE, &[ALICE]), Instant::now())
            .unwrap();
        assert_eq!(plan.started_by, ALICE);
    }

    #[test]
    fn group_member_may_start_a_group_owned_vm() {
        let mut r = registry();
        r.load_config(&config(vec![owned_config_vm("web", ALICE, Some(STAFF))]));
        let plan = r
            .start_request(&just("web"), &user(BOB, &[BOB, STAFF]), Instant::now())
            .unwrap();
        assert_eq!(plan.started_by, BOB);
        assert_eq!(plan.owner.gid, Some(STAFF));
    }

    #[test]
    fn other_user_may_not_start_someone_elses_vm() {
        let mut r = registry();
        r.load_config(&config(vec![owned_config_vm("web", ALICE, Some(STAFF))]));
        let f = r
            .start_request(&just("web"), &user(BOB, &[BOB]), Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
        // The permission check comes before the "already exists" answer.
        let f = r
            .start_request(&adhoc("web"), &user(BOB, &[BOB]), Instant::now())
            .unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
    }

    #[test]
    fn root_may_start_anyones_vm() {
        let mut r = registry();
        r.load_config(&config(vec![owned_config_vm("web", ALICE, None)]));
        assert!(r
            .start_request(&just("web"), &Caller::root(), Instant::now())
            .is_ok());
    }

    #[test]
    fn name_rules_apply_to_new_vms() {
        let mut r = registry();
        let now = Instant::now();
        let long = "a".repeat(MAX_NAME_LEN);
        assert!(r.start_request(&adhoc(&long), &Caller::root(), now).is_ok());
        let too_long = "b".repeat(MAX_NAME_LEN + 1);
        for bad in [too_long.as_str(), "-x", ".x", "_x", "a b", ""] {
            let f = r
                .start_request(&adhoc(bad), &Caller::root(), now)
                .unwrap_err();
            assert_eq!(f.errno, libc::EINVAL, "{bad:?}");
        }
        // Digits only: accepted, and reachable by name.
        assert!(r.start_request(&adhoc("42"), &Caller::root(), now).is_ok());
        assert!(r.get(&VmRef::Name("42".into())).is_some());
    }

    #[test]
    fn device_limits() {
        let mut r = registry();
        let now = Instant::now();
        let disk = |i| DiskSpec {
            path: PathBuf::from(format!("/d{i}")),
            format: None,
        };
        let four = StartRequest {
            disks: (0..4).map(disk).collect(),
            nics: vec![NicSpec::Plain; 4],
            ..just("four")
        };
        assert!(r.start_request(&four, &Caller::root(), now).is_ok());
        let five_disks = StartRequest {
            disks: (0..5).map(disk).collect(),
            ..just("fivedisks")
        };
        assert_eq!(
            r.start_request(&five_disks, &Caller::root(), now)
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
        let five_nics = StartRequest {
            nics: vec![NicSpec::Plain; 5],
            ..adhoc("fivenics")
        };
        assert_eq!(
            r.start_request(&five_nics, &Caller::root(), now)
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
    }

    #[test]
    fn vcpu_count_extension_is_1_to_64() {
        let mut r = registry();
        let now = Instant::now();
        let with = |name: &str, cpus| StartRequest {
            cpus: Some(cpus),
            ..adhoc(name)
        };
        assert_eq!(
            r.start_request(&with("c0", 0), &Caller::root(), now)
                .unwrap()
                .cpus,
            1
        );
        assert_eq!(
            r.start_request(&with("c64", 64), &Caller::root(), now)
                .unwrap()
                .cpus,
            64
        );
        assert_eq!(
            r.start_request(&with("c65", 65), &Caller::root(), now)
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
    }

    #[test]
    fn memory_default_minimum_and_rounding() {
        let mut r = registry();
        let now = Instant::now();
        const MIB: u64 = 1 << 20;
        let with = |name: &str, memory| StartRequest {
            memory: Some(memory),
            ..adhoc(name)
        };
        assert_eq!(
            r.start_request(&adhoc("d"), &Caller::root(), now)
                .unwrap()
                .memory,
            512 * MIB
        );
        assert_eq!(
            r.start_request(&with("r", 3 * MIB + 4095), &Caller::root(), now)
                .unwrap()
                .memory,
            3 * MIB
        );
        assert_eq!(
            r.start_request(&with("m", MIB), &Caller::root(), now)
                .unwrap()
                .memory,
            MIB
        );
        assert_eq!(
            r.start_request(&with("s", MIB - 1), &Caller::root(), now)
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
        assert_eq!(
            r.start_request(&with("h", u64::MAX), &Caller::root(), now)
                .unwrap_err()
                .errno,
            libc::EINVAL
        );
    }

    #[test]
    fn generated_macs_follow_the_nic_index_and_stay_across_restarts() {
        let mut r = registry();
        let mut web = vm("web");
        web.interfaces = vec![
            vmconf::Interface::default(),
            vmconf::Interface {
                lladdr: Some(vmconf::MacAddr([2, 0, 0, 0, 0, 1])),
                ..Default::default()
            },
            vmconf::Interface::default(),
        ];
        r.load_config(&config(vec![web]));
        let t0 = Instant::now();
        let plan = r.start_request(&just("web"), &Caller::root(), t0).unwrap();
        let macs: Vec<String> = plan.nics.iter().map(|n| n.nic.mac.to_string()).collect();
        assert!(macs[0].starts_with("fe:e1:bb:d1:"), "{macs:?}");
        assert_eq!(macs[1], "02:00:00:00:00:01");
        assert!(macs[2].starts_with("fe:e1:bb:d3:"), "{macs:?}");
        assert_ne!(macs[0][12..], macs[2][12..]);
        r.vm_exited(plan.id, plan.generation, super::super::Exit::Poweroff, t0)
            .unwrap();
        let again = r
            .start_request(&just("web"), &Caller::root(), t0 + Duration::from_secs(60))
            .unwrap();
        assert_eq!(again.nics, plan.nics);
    }

    #[test]
    fn all_zero_lladdr_means_generate() {
        let mut r = registry();
        let mut web = vm("web");
        web.interfaces = vec![vmconf::Interface {
            lladdr: Some(vmconf::MacAddr([0; 6])),
            ..Default::default()
        }];
        r.load_config(&config(vec![web]));
        let plan = r
            .start_request(&just("web"), &Caller::root(), Instant::now())
            .unwrap();
        assert_eq!(plan.nics[0].nic.mac.0[..4], [0xfe, 0xe1, 0xbb, 0xd1]);
    }

    #[test]
    fn nics_inherit_switch_flags_and_resolve_the_switch() {
        let mut r = registry();
        let mut cfg = config(vec![]);
        cfg.switches.push(vmconf::Switch {
            id: 1,
            name: "uplink".into(),
            interface: "br0".into(),
            group: None,
            locked: true,
            rdomain: Some(3),
            up: true,
            location: vmconf::Location {
                file: "vm.conf".into(),
                line: 1,
            },
        });
        r.load_config(&cfg);
        let req = StartRequest {
            nics: vec![
                NicSpec::Switch("uplink".into()),
                NicSpec::Switch("nowhere".into()),
            ],
            ..adhoc("n")
        };
        let plan = r
            .start_request(&req, &Caller::root(), Instant::now())
            .unwrap();
        assert!(plan.nics[0].nic.locked);
        assert_eq!(plan.nics[0].nic.rdomain, Some(3));
        assert_eq!(plan.nics[0].switch.as_ref().unwrap().interface, "br0");
        assert!(!plan.nics[1].nic.locked);
        assert_eq!(plan.nics[1].switch, None);
    }

    #[test]
    fn user_supplied_files_are_checked_as_the_user() {
        let mut r = registry();
        let mut tmpl = vm("tmpl");
        tmpl.disks.clear();
        tmpl.boot = Some(PathBuf::from("/bsd"));
        tmpl.allow_instance = Some(vmconf::InstancePermissions {
            disk: true,
            owner: Some(Owner {
                uid: ALICE,
                gid: None,
            }),
            ..Default::default()
        });
        r.load_config(&config(vec![tmpl]));
        let alice = user(ALICE, &[ALICE]);
        let req = StartRequest {
            template: Some("tmpl".into()),
            ..adhoc("mine")
        };
        let plan = r.start_request(&req, &alice, Instant::now()).unwrap();
        let kernel = plan
            .files
            .iter()
            .find(|f| f.kind == FileKind::Kernel)
            .unwrap();
        assert_eq!(kernel.check_as, None, "inherited from the template");
        let disk = plan
            .files
            .iter()
            .find(|f| f.kind == FileKind::Disk)
            .unwrap();
        assert_eq!(disk.check_as, Some(alice));
        assert_eq!(disk.need, Need::ReadWrite);
    }

    #[test]
    fn sticky_ids_survive_stop_and_start_of_adhoc_vms() {
        let mut r = registry();
        let t0 = Instant::now();
        let a = r.start_request(&adhoc("a"), &Caller::root(), t0).unwrap();
        let b = r.start_request(&adhoc("b"), &Caller::root(), t0).unwrap();
        r.vm_exited(a.id, a.generation, super::super::Exit::Poweroff, t0)
            .unwrap();
        assert!(r.get(&VmRef::Name("a".into())).is_none());
        let a2 = r.start_request(&adhoc("a"), &Caller::root(), t0).unwrap();
        assert_eq!(a2.id, a.id);
        assert_ne!(a2.id, b.id);
        assert_ne!(a2.generation, a.generation);
    }

    #[test]
    fn restart_rate_limit_applies_to_user_starts() {
        let mut r = registry();
        r.load_config(&config(vec![vm("web")]));
        let t0 = Instant::now();
        for i in 0..3 {
            let p = r
                .start_request(&just("web"), &Caller::root(), t0 + Duration::from_secs(i))
                .unwrap();
            r.vm_exited(p.id, p.generation, super::super::Exit::Forced, t0)
                .unwrap();
        }
        let f = r
            .start_request(&just("web"), &Caller::root(), t0 + Duration::from_secs(3))
            .unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
        assert!(f.message.contains("restarted too quickly"));
        assert_eq!(r.get(&VmRef::Id(1)).unwrap().state(), VmState::Stopped);
    }

    fn received() -> crate::transfer::Definition {
        crate::transfer::Definition {
            name: "web".into(),
            memory: 64 << 20,
            cpus: 2,
            boot: Some(PathBuf::from("/bsd")),
            boot_device: None,
            initrd: None,
            cmdline: None,
            cdrom: None,
            disks: vec![crate::transfer::DiskDef {
                path: PathBuf::from("/var/vm/web.img"),
                format: Some(vmconf::DiskFormat::Raw),
            }],
            nics: vec![crate::transfer::NicDef {
                name: None,
                local: true,
                switch: None,
                group: None,
                locked: true,
                mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 7],
                rdomain: None,
                up: true,
            }],
        }
    }

    #[test]
    fn a_received_vm_is_a_new_adhoc_vm_of_root_with_the_streams_definition() {
        let mut r = registry();
        r.load_config(&config(vec![vm("web")]));
        let plan = r
            .receive_request("copy", &received(), Instant::now())
            .unwrap();
        assert_eq!(plan.name, "copy");
        assert_ne!(plan.id, r.get(&by_name("web").unwrap()).unwrap().id());
        assert_eq!((plan.memory, plan.cpus), (64 << 20, 2));
        assert_eq!(plan.boot.as_deref(), Some(Path::new("/bsd")));
        assert_eq!(plan.owner, Owner { uid: 0, gid: None });
        assert_eq!(plan.started_by, 0);
        assert_eq!(plan.nics[0].nic.mac.0, [0xfe, 0xe1, 0xba, 0xd0, 0, 7]);
        assert!(plan.nics[0].nic.locked && plan.nics[0].nic.local);
        let e = r.get(&by_name("copy").unwrap()).unwrap();
        assert_eq!(e.origin(), crate::registry::Origin::Request);
        assert!(e.is_running());
        // The definition a send records is the run's own.
        let def = crate::transfer::Definition::of_plan(&plan);
        assert_eq!(def.disks, received().disks);
        assert_eq!(def.nics, received().nics);
        // A taken name or a bad definition registers nothing.
        let taken = r.receive_request("web", &received(), Instant::now());
        assert_eq!(taken.unwrap_err().errno, libc::EALREADY);
        let mut big = received();
        big.memory = 1 << 62;
        let f = r.receive_request("big", &big, Instant::now()).unwrap_err();
        assert_eq!(f.errno, libc::EINVAL);
        assert!(r.get(&by_name("big").unwrap()).is_none());
    }
}
