//! The spec's §2.7 example, which uses every keyword, parsed with its values asserted.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use common::Fixture;
use vmconf::*;

const EXAMPLE: &str = include_str!("spec-2.7-example.conf");

fn parse_example() -> (Fixture, Parsed) {
    let fx = Fixture::new();
    let images = fx.path().join("vmm");
    std::fs::create_dir(&images).unwrap();
    for f in [
        "web1-data.img",
        "installer.img",
        "tmpl-a.qcow2",
        "secret.img",
        "bsd.rd",
    ] {
        std::fs::write(images.join(f), b"").unwrap();
    }
    for f in ["web1.qcow2", "tmpl-base.qcow2"] {
        std::fs::write(images.join(f), b"QFI\xfb\0\0\0\x03").unwrap();
    }
    let extra = fx.write("extra.conf", "# nothing but a macro\nextra = \"1\"\n");
    let text = EXAMPLE.replace("/etc/vm.d/extra.conf", &extra.display().to_string());
    let mut opts = fx.opts();
    opts.macros = vec![
        ("images".into(), images.display().to_string()),
        ("bsdrd".into(), images.join("bsd.rd").display().to_string()),
    ];
    let parsed = match parse_bytes("vm.conf", text.into_bytes(), None, &opts) {
        Ok(p) => p,
        Err(e) => panic!("{:?}", common::messages(&e)),
    };
    (fx, parsed)
}

#[test]
fn globals() {
    let (_fx, p) = parse_example();
    let g = &p.config.global;
    assert_eq!(
        g.local_prefix,
        Ipv4Prefix {
            addr: Ipv4Addr::new(10, 200, 0, 0),
            len: 16
        }
    );
    assert_eq!(
        g.local_inet6,
        Some(LocalInet6::Prefix(Ipv6Prefix {
            addr: "fd12:3456:789a::".parse::<Ipv6Addr>().unwrap(),
            len: 48
        }))
    );
    assert_eq!(g.socket_owner, SocketOwner { uid: 0, gid: 100 });
    assert_eq!(
        g.staggered_start,
        Some(StaggeredStart {
            parallel: 2,
            delay_secs: 15
        })
    );
    assert_eq!(
        g.agentx,
        Some(AgentX {
            context: Some("vmd".into()),
            path: "/var/agentx/master".into()
        })
    );
    // The -D macros override the file's own `images`/`bsdrd`; the included one is unused.
    let w: Vec<String> = p.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w, ["warning: macro 'extra' not used"]);
}

#[test]
fn switches() {
    let (_fx, p) = parse_example();
    assert_eq!(p.config.switches.len(), 1, "\"lab\" is disabled");
    let s = &p.config.switches[0];
    assert_eq!(
        (s.id, s.name.as_str(), s.interface.as_str()),
        (1, "uplink", "veb0")
    );
    assert_eq!(s.group.as_deref(), Some("vmuplink"));
    assert!(s.locked && s.up);
    assert_eq!(s.rdomain, Some(0));
    assert_eq!(s.location.line, 15);
}

#[test]
fn web1() {
    let (fx, p) = parse_example();
    let vm = &p.config.vms[0];
    let img = |n: &str| fx.path().join("vmm").join(n).canonicalize().unwrap();
    assert_eq!(vm.name, "web1");
    assert!(vm.enabled);
    assert_eq!(vm.memory, Some(2 << 30));
    assert_eq!(vm.boot_device, Some(BootDevice::Disk));
    assert_eq!(vm.boot, None);
    assert_eq!(
        vm.disks,
        [
            Disk {
                path: img("web1.qcow2"),
                format: DiskFormat::Qcow2
            },
            Disk {
                path: img("web1-data.img"),
                format: DiskFormat::Raw
            },
        ]
    );
    assert_eq!(
        vm.cdrom.as_deref(),
        Some(Path::new("/srv/iso/install78.iso"))
    );
    assert_eq!(vm.interfaces.len(), 4);
    assert_eq!(vm.interfaces[0].switch.as_deref(), Some("uplink"));
    assert_eq!(vm.interfaces[0].name, None);
    assert!(vm.interfaces[1].local);
    let t7 = &vm.interfaces[2];
    assert_eq!(t7.name.as_deref(), Some("tap7"));
    assert_eq!(t7.group.as_deref(), Some("dmz"));
    assert!(t7.locked && t7.up);
    assert_eq!(
        t7.lladdr.map(|m| m.to_string()).as_deref(),
        Some("fe:e1:bb:d1:00:07")
    );
    assert_eq!(t7.rdomain, Some(3));
    assert_eq!(
        vm.interfaces[3],
        Interface::default(),
        "padded by `interfaces 4`"
    );
    assert_eq!(
        vm.owner,
        Some(Owner {
            uid: 1000,
            gid: Some(100)
        })
    );
    assert_eq!(
        vm.allow_instance,
        Some(InstancePermissions {
            boot: true,
            memory: true,
            interface: true,
            disk: true,
            cdrom: true,
            instance: true,
            owner: Some(Owner {
                uid: 0,
                gid: Some(100)
            }),
        })
    );
    assert_eq!(vm.sev, Sev::Off);
}

#[test]
fn installer_template_instance_and_sev() {
    let (fx, p) = parse_example();
    let names: Vec<&str> = p.config.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["web1", "installer", "tmpl", "tmpl-a", "secret"]);
    let vms = &p.config.vms;

    let inst = &vms[1];
    assert!(!inst.enabled);
    assert_eq!(inst.memory, Some(1024 << 20));
    assert_eq!(
        inst.boot,
        Some(fx.path().join("vmm/bsd.rd").canonicalize().unwrap())
    );
    assert_eq!(inst.boot_device, Some(BootDevice::Net));
    let nic = &inst.interfaces[0];
    assert!(nic.local && nic.locked && nic.lladdr.is_none());
    assert_eq!(nic.switch.as_deref(), Some("uplink"));
    assert_eq!(inst.disks[0].format, DiskFormat::Raw);

    let tmpl = &vms[2];
    assert_eq!(tmpl.memory, Some(512 << 20));
    assert_eq!(tmpl.disks[0].format, DiskFormat::Qcow2, "sniffed");
    let perms = tmpl.allow_instance.unwrap();
    assert!(perms.memory && !perms.disk && perms.owner.is_none());
    assert_eq!(
        tmpl.owner,
        Some(Owner {
            uid: 0,
            gid: Some(100)
        })
    );
    assert!(!tmpl.enabled);

    let a = &vms[3];
    assert_eq!(a.parent.as_deref(), Some("tmpl"));
    assert_eq!(a.memory, Some(768 << 20));
    assert!(a.enabled);
    assert_eq!(a.owner, None, "inherited from the template by the daemon");

    let secret = &vms[4];
    assert_eq!(secret.sev, Sev::SevEs);
    assert_eq!(secret.memory, Some(4 << 30));
    assert_eq!(secret.location.line, 81);
}

#[test]
fn config_survives_the_ipc_encoding() {
    // The parent sends the parsed config to its children with postcard (DESIGN.md §2).
    let (_fx, p) = parse_example();
    let bytes = postcard::to_stdvec(&p.config).unwrap();
    let back: Config = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, p.config);
}

#[test]
fn system_resolver_knows_root() {
    assert_eq!(SystemResolver.uid("root"), Some(0));
    assert_eq!(SystemResolver.gid("root"), Some(0));
    assert_eq!(SystemResolver.uid("no-such-user-vmconf"), None);
    assert_eq!(SystemResolver.gid("no-such-group-vmconf"), None);
    assert_eq!(SystemResolver.uid("ro\0ot"), None);
}
