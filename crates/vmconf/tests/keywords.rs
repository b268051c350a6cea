//! One accepted and one rejected case per keyword (F-CONF-05..22), plus the separator
//! quirks of §2.2.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::Fixture;
use vmconf::*;

fn vm(p: &Parsed) -> &Vm {
    assert_eq!(p.config.vms.len(), 1, "{:?}", p.config.vms);
    &p.config.vms[0]
}

#[test]
fn local_prefix() {
    let fx = Fixture::new();
    let p = fx.ok("local prefix 10.200.0.0/16\n");
    assert_eq!(
        p.config.global.local_prefix,
        Ipv4Prefix {
            addr: Ipv4Addr::new(10, 200, 0, 0),
            len: 16
        }
    );
    assert_eq!(Global::default().local_prefix.len, 10);
    assert!(fx.err("local prefix\n")[0].ends_with("syntax error"));
}

#[test]
fn local_inet6() {
    let fx = Fixture::new();
    assert_eq!(
        fx.ok("local inet6\n").config.global.local_inet6,
        Some(LocalInet6::Auto)
    );
    let p = fx.ok("local inet6 prefix fd12:3456:789a::/48\n");
    assert_eq!(
        p.config.global.local_inet6,
        Some(LocalInet6::Prefix(Ipv6Prefix {
            addr: "fd12:3456:789a::".parse::<Ipv6Addr>().unwrap(),
            len: 48
        }))
    );
    assert!(fx.err("local inet6 prefix\n")[0].ends_with("syntax error"));
    assert!(fx.err("local inet6 prefix 10.0.0.0/8\n")[0].contains("invalid local inet6 prefix"));
}

#[test]
fn socket_owner() {
    let fx = Fixture::new();
    let p = fx.ok("socket owner alice:vmusers\n");
    assert_eq!(
        p.config.global.socket_owner,
        SocketOwner {
            uid: 1000,
            gid: 100
        }
    );
    let p = fx.ok("socket owner :vmusers\n");
    assert_eq!(
        p.config.global.socket_owner,
        SocketOwner { uid: 0, gid: 100 }
    );
    let p = fx.ok("socket owner 1001\n");
    assert_eq!(
        p.config.global.socket_owner,
        SocketOwner { uid: 1001, gid: 0 }
    );
    assert!(fx.err("socket alice\n")[0].ends_with("syntax error"));
}

#[test]
fn staggered_start() {
    let fx = Fixture::new();
    let p = fx.ok("staggered start parallel 2 delay 15\n");
    assert_eq!(
        p.config.global.staggered_start,
        Some(StaggeredStart {
            parallel: 2,
            delay_secs: 15
        })
    );
    assert!(fx.err("staggered start delay 15 parallel 2\n")[0].ends_with("syntax error"));
}

#[test]
fn agentx() {
    let fx = Fixture::new();
    let p = fx.ok("agentx\n");
    assert_eq!(
        p.config.global.agentx,
        Some(AgentX {
            context: None,
            path: DEFAULT_AGENTX_PATH.into()
        })
    );
    let p = fx.ok("agentx context \"vmd\" path \"/run/agentx\"\n");
    assert_eq!(
        p.config.global.agentx,
        Some(AgentX {
            context: Some("vmd".into()),
            path: "/run/agentx".into()
        })
    );
    assert!(fx.err("agentx context\n")[0].ends_with("syntax error"));
}

#[test]
fn switch_block() {
    let fx = Fixture::new();
    let p = fx.ok(
        "switch \"a\" {\n\tinterface veb0\n\tgroup \"up\"\n\tlocked lladdr\n\trdomain 7\n\tdown\n}\n\
         switch \"off\" {\n\tinterface bridge1\n\tdisable\n}\n\
         switch \"b\" {\n\tinterface br0\n\tdisable\n\tenable\n\tup\n}\n",
    );
    let sw = &p.config.switches;
    assert_eq!(sw.len(), 2, "disabled switch must be dropped");
    assert_eq!(
        (sw[0].id, sw[0].name.as_str(), sw[0].interface.as_str()),
        (1, "a", "veb0")
    );
    assert_eq!(sw[0].group.as_deref(), Some("up"));
    assert!(sw[0].locked);
    assert_eq!(sw[0].rdomain, Some(7));
    assert!(!sw[0].up);
    assert_eq!((sw[1].id, sw[1].name.as_str()), (2, "b"));
    assert!(sw[1].up && !sw[1].locked && sw[1].rdomain.is_none());
    assert!(
        fx.err("switch \"a\" {\n}\n")[0].ends_with("syntax error"),
        "empty block"
    );
    assert!(fx.err("switch \"a\" {\n\tinterface veb0\n\tlocked\n}\n")[0].ends_with("syntax error"));
    assert!(
        fx.err("switch \"a\" {\n\tinterface veb0\n\tmemory 1G\n}\n")[0].ends_with("syntax error")
    );
}

#[test]
fn vm_enable_disable() {
    let fx = Fixture::new();
    assert!(vm(&fx.ok(&fx.vm_with("enable"))).enabled);
    assert!(!vm(&fx.ok(&fx.vm_with("disable"))).enabled);
    assert!(vm(&fx.ok(&fx.vm_with("disable\n\tenable"))).enabled);
    assert!(fx.err(&fx.vm_with("enabled"))[0].ends_with("syntax error"));
}

#[test]
fn boot_path() {
    let fx = Fixture::new();
    let p = fx.ok("vm \"v\" {\n\tboot $d \"/bsd\"\n}\n");
    assert_eq!(
        vm(&p).boot.as_deref(),
        Some(fx.file("bsd").canonicalize().unwrap().as_path())
    );
    assert!(fx.err("vm \"v\" {\n\tboot\n}\n")[0].ends_with("syntax error"));
}

#[test]
fn boot_device() {
    let fx = Fixture::new();
    for (word, dev) in [
        ("cdrom", BootDevice::Cdrom),
        ("disk", BootDevice::Disk),
        ("net", BootDevice::Net),
    ] {
        let p = fx.ok(&fx.vm_with(&format!("boot device {word}")));
        assert_eq!(vm(&p).boot_device, Some(dev));
    }
    assert!(fx.err(&fx.vm_with("boot device floppy"))[0].ends_with("syntax error"));
}

#[test]
fn cdrom() {
    let fx = Fixture::new();
    // Not resolved at parse time, so a missing ISO is fine and a cdrom alone is a boot source.
    let p = fx.ok("vm \"v\" {\n\tcdrom \"/srv/iso/none.iso\"\n}\n");
    assert_eq!(
        vm(&p).cdrom.as_deref(),
        Some(std::path::Path::new("/srv/iso/none.iso"))
    );
    assert!(fx.err(&fx.vm_with("cdrom"))[0].ends_with("syntax error"));
}

#[test]
fn disk_and_format() {
    let fx = Fixture::new();
    let p = fx.ok(
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tdisk $d \"/disk.qcow2\"\n\tdisk $d \"/disk.qcow2\" format RAW\n\tdisk $d \"/disk.img\" format \"qcow2\"\n}\n",
    );
    let formats: Vec<DiskFormat> = vm(&p).disks.iter().map(|d| d.format).collect();
    assert_eq!(
        formats,
        [
            DiskFormat::Raw,
            DiskFormat::Qcow2,
            DiskFormat::Raw,
            DiskFormat::Qcow2
        ]
    );
    assert_eq!(
        vm(&p).disks[1].path,
        fx.file("disk.qcow2").canonicalize().unwrap()
    );
    assert!(fx.err(&fx.vm_with("disk $d \"/disk.img\" format"))[0].ends_with("syntax error"));
}

#[test]
fn interface_block_form() {
    let fx = Fixture::new();
    let p = fx.ok(&fx.vm_with(
        "interface tap7 {\n\t\tswitch \"uplink\"\n\t\tgroup \"dmz\" locked lladdr fe:e1:bb:d1:00:07\n\t\trdomain 3\n\t\tdown\n\t}",
    ));
    let nic = &vm(&p).interfaces[0];
    assert_eq!(nic.name.as_deref(), Some("tap7"));
    assert_eq!(nic.switch.as_deref(), Some("uplink"));
    assert_eq!(nic.group.as_deref(), Some("dmz"));
    assert!(nic.locked);
    assert_eq!(nic.lladdr, Some(MacAddr([0xfe, 0xe1, 0xbb, 0xd1, 0, 7])));
    assert_eq!(nic.lladdr.unwrap().to_string(), "fe:e1:bb:d1:00:07");
    assert_eq!(nic.rdomain, Some(3));
    assert!(!nic.up && !nic.local);
    // `;` is not a separator; commas are not accepted in the block form.
    assert!(
        fx.err(&fx.vm_with("interface tap { switch \"uplink\"; }"))[0].ends_with("syntax error")
    );
    assert!(fx.err(&fx.vm_with("interface { up, down }"))[0].ends_with("syntax error"));
    assert!(fx.err(&fx.vm_with("interface { }"))[0].ends_with("syntax error"));
}

#[test]
fn interface_inline_form() {
    let fx = Fixture::new();
    let p = fx.ok(&fx.vm_with("local interface switch \"uplink\" locked lladdr"));
    let nic = &vm(&p).interfaces[0];
    assert!(nic.local && nic.locked && nic.up);
    assert_eq!(nic.lladdr, None);
    assert_eq!(nic.name, None);
    let p = fx.ok(&fx.vm_with("interface tap switch \"a\" lladdr, rdomain 1,"));
    let nic = &vm(&p).interfaces[0];
    assert_eq!((nic.switch.as_deref(), nic.rdomain), (Some("a"), Some(1)));
    assert!(
        fx.err(&fx.vm_with("local interface switch \"uplink\", lladdr"))[0]
            .ends_with("syntax error")
    );
    assert!(fx.err(&fx.vm_with("local switch \"uplink\""))[0].ends_with("syntax error"));
}

#[test]
fn interfaces_count_pads_nics() {
    let fx = Fixture::new();
    let p = fx.ok("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tlocal interface\n\tinterfaces 3\n}\n");
    let nics = &vm(&p).interfaces;
    assert_eq!(nics.len(), 3);
    assert!(nics[0].local);
    assert_eq!(nics[1], Interface::default());
    let p =
        fx.ok("vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tinterface\n\tinterface\n\tinterfaces 1\n}\n");
    assert_eq!(vm(&p).interfaces.len(), 2, "interfaces N is a minimum");
    assert!(fx.err(&fx.vm_with("interfaces"))[0].ends_with("syntax error"));
}

#[test]
fn memory() {
    let fx = Fixture::new();
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("memory 1024M"))).memory,
        Some(1 << 30)
    );
    assert_eq!(vm(&fx.ok(&fx.vm_with("memory 1.5G"))).memory, Some(3 << 29));
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("memory \"1M\""))).memory,
        Some(1 << 20)
    );
    let p = fx.ok(&fx.vm_with("memory 1048577"));
    assert_eq!(vm(&p).memory, Some(1 << 20));
    assert_eq!(
        p.warnings[0].to_string(),
        "test.conf:3: memory size rounded to 1048576 bytes"
    );
    assert_eq!(vm(&fx.ok(&fx.vm_with("enable"))).memory, None);
    assert!(fx.err(&fx.vm_with("memory"))[0].ends_with("syntax error"));
}

#[test]
fn owner() {
    let fx = Fixture::new();
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("owner alice"))).owner,
        Some(Owner {
            uid: 1000,
            gid: None
        })
    );
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("owner alice:vmusers"))).owner,
        Some(Owner {
            uid: 1000,
            gid: Some(100)
        })
    );
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("owner :vmusers"))).owner,
        Some(Owner {
            uid: 0,
            gid: Some(100)
        })
    );
    assert_eq!(
        vm(&fx.ok(&fx.vm_with("owner 1234"))).owner,
        Some(Owner {
            uid: 1234,
            gid: None
        })
    );
    assert!(fx.err(&fx.vm_with("owner"))[0].ends_with("syntax error"));
}

#[test]
fn allow_instance() {
    let fx = Fixture::new();
    let p = fx.ok(&fx.vm_with(
        "allow instance {\n\t\tboot, memory\n\t\tinterface, disk\n\n\t\tcdrom, instance\n\t\towner :vmusers\n\t}",
    ));
    assert_eq!(
        vm(&p).allow_instance,
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
    let p = fx.ok(&fx.vm_with("allow instance memory\n\tallow instance { disk }"));
    let perms = vm(&p).allow_instance.unwrap();
    assert!(perms.memory && perms.disk && !perms.boot);
    assert!(fx.err(&fx.vm_with("allow instance { boot memory }"))[0].ends_with("syntax error"));
    assert!(fx.err(&fx.vm_with("allow instance { boot, }"))[0].ends_with("syntax error"));
    assert!(fx.err(&fx.vm_with("allow instance sev"))[0].ends_with("syntax error"));
}

#[test]
fn vm_instance() {
    let fx = Fixture::new();
    let p = fx.ok(
        "vm \"tmpl\" {\n\tdisk $d \"/disk.img\"\n\tallow instance memory\n}\nvm \"tmpl\" instance \"a\" {\n\tmemory 768M\n}\n",
    );
    let a = &p.config.vms[1];
    assert_eq!((a.name.as_str(), a.parent.as_deref()), ("a", Some("tmpl")));
    assert_eq!(a.memory, Some(768 << 20));
    assert!(fx.err("vm \"t\" instance {\n\tmemory 1G\n}\n")[0].ends_with("syntax error"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let p = fx.ok("vm \"nope\" instance \"b\" {\n\tmemory 1G\n}\n");
    assert_eq!(
        p.warnings[0].to_string(),
        "test.conf:1: vm \"b\": parent vm \"nope\" is not defined before it"
    );
}

#[test]
fn sev_and_seves() {
    let fx = Fixture::new();
    assert_eq!(vm(&fx.ok(&fx.vm_with("sev"))).sev, Sev::Sev);
    assert_eq!(vm(&fx.ok(&fx.vm_with("seves"))).sev, Sev::SevEs);
    assert_eq!(vm(&fx.ok(&fx.vm_with("seves\n\tsev"))).sev, Sev::SevEs);
    assert_eq!(vm(&fx.ok(&fx.vm_with("enable"))).sev, Sev::Off);
    assert!(fx.err(&fx.vm_with("sev 1"))[0].ends_with("syntax error"));
}

#[test]
fn extension_cpus() {
    let fx = Fixture::new();
    assert_eq!(vm(&fx.ok(&fx.vm_with("cpus 4"))).cpus, Some(4));
    assert_eq!(vm(&fx.ok(&fx.vm_with("enable"))).cpus, None);
    assert!(fx.err(&fx.vm_with("cpus four"))[0].ends_with("syntax error"));
    // Only a bare word in option position is the extension.
    assert!(fx.err(&fx.vm_with("\"cpus\" 4"))[0].ends_with("syntax error"));
}

#[test]
fn extension_initrd_and_cmdline() {
    let fx = Fixture::new();
    let p = fx.ok(
        "vm \"lin\" {\n\tboot $d \"/bsd\"\n\tinitrd $d \"/initrd.img\"\n\tcmdline \"console=ttyS0 \" 'root=/dev/vda'\n}\n",
    );
    let v = vm(&p);
    assert_eq!(
        v.initrd.as_deref(),
        Some(fx.file("initrd.img").canonicalize().unwrap().as_path())
    );
    assert_eq!(v.cmdline.as_deref(), Some("console=ttyS0 root=/dev/vda"));
    assert!(
        fx.err("vm \"lin\" {\n\tboot $d \"/bsd\"\n\tcmdline\n}\n")[0].ends_with("syntax error")
    );
}

#[test]
fn extension_words_stay_ordinary_strings_elsewhere() {
    let fx = Fixture::new();
    std::fs::write(fx.file("cpus"), b"").unwrap();
    let p = fx.ok(
        "cpus = \"2\"\ninitrd = \"/cpus\"\nvm \"cmdline\" {\n\tdisk $d $initrd\n\tinterface group cmdline\n\tcpus $cpus\n}\n",
    );
    let v = vm(&p);
    assert_eq!(v.name, "cmdline");
    assert_eq!(
        v.cpus,
        Some(2),
        "an expansion is re-lexed, so \"2\" becomes a NUMBER"
    );
    assert_eq!(v.interfaces[0].group.as_deref(), Some("cmdline"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn separator_quirks() {
    let fx = Fixture::new();
    // A single option on the brace line works.
    fx.ok("vm \"a\" { disk $d \"/disk.img\" }\n");
    // Two options on the first line, then a newline, happen to be accepted.
    fx.ok("switch \"s\" { interface veb0 group \"g\"\n}\n");
    // A closing brace right after a later option is a syntax error.
    let errs = fx.err("vm \"x\" { memory 1G\n disk $d \"/disk.img\" }\n");
    assert_eq!(errs[0], "test.conf:2: syntax error");
    // Blank lines between options are fine.
    fx.ok("vm \"a\" {\n\n\tdisk $d \"/disk.img\"\n\n\n\tmemory 1G\n\n}\n");
    // The closing brace must end its line.
    assert_eq!(
        fx.err("vm \"a\" {\n\tdisk $d \"/disk.img\"\n} vm\n")[0],
        "test.conf:3: syntax error"
    );
}

#[test]
fn duplicate_vm_names_keep_the_first() {
    let fx = Fixture::new();
    let p = fx.ok(
        "vm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 1G\n}\nvm \"v\" {\n\tdisk $d \"/disk.img\"\n\tmemory 2G\n}\n",
    );
    assert_eq!(vm(&p).memory, Some(1 << 30));
    assert_eq!(
        p.warnings[0].to_string(),
        "test.conf:5: vm \"v\" skipped (already exists)"
    );
}
