//! Builders shared by the registry's unit tests.

use std::path::PathBuf;

use vmconf::{Config, Disk, DiskFormat, Global, Location, Vm};

use super::mac::RandomSource;
use super::permission::Caller;
use super::Registry;

/// Counts up from 1, so generated MACs are predictable.
#[derive(Debug, Default)]
pub(crate) struct SeqRandom(u8);

impl RandomSource for SeqRandom {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

/// Host CPUs the test registry pretends to have.
pub(crate) const TEST_CPUS: usize = 2;

pub(crate) fn registry() -> Registry {
    Registry::new(Global::default(), TEST_CPUS, Box::new(SeqRandom::default()))
}

pub(crate) fn user(uid: u32, gids: &[u32]) -> Caller {
    Caller {
        uid,
        gids: gids.to_vec(),
    }
}

/// A minimal configured VM with one raw disk.
pub(crate) fn vm(name: &str) -> Vm {
    Vm {
        name: name.to_owned(),
        parent: None,
        enabled: true,
        boot: None,
        boot_device: None,
        cdrom: None,
        disks: vec![Disk {
            path: PathBuf::from(format!("/var/vm/{name}.img")),
            format: DiskFormat::Raw,
        }],
        interfaces: Vec::new(),
        memory: None,
        owner: None,
        allow_instance: None,
        sev: vmconf::Sev::Off,
        cpus: None,
        initrd: None,
        cmdline: None,
        location: Location {
            file: "vm.conf".into(),
            line: 1,
        },
    }
}

pub(crate) fn config(vms: Vec<Vm>) -> Config {
    Config {
        global: Global::default(),
        switches: Vec::new(),
        vms,
    }
}
