//! Shared fixtures: a fake passwd database and a directory of images to point disks at.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::{Path, PathBuf};

use vmconf::{Error, Options, Parsed, Resolver};

/// Answers a fixed set of users and groups, so tests do not depend on the host's.
pub struct FakeResolver;

impl Resolver for FakeResolver {
    fn uid(&self, user: &str) -> Option<u32> {
        match user {
            "root" => Some(0),
            "alice" => Some(1000),
            "bob" => Some(1001),
            _ => None,
        }
    }

    fn gid(&self, group: &str) -> Option<u32> {
        match group {
            "wheel" => Some(0),
            "vmusers" => Some(100),
            _ => None,
        }
    }
}

pub static FAKE: FakeResolver = FakeResolver;

/// A temporary directory with a raw disk, a qcow2 disk, a kernel and an initrd.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("disk.img"), b"\0\0\0\0rawdata").unwrap();
        std::fs::write(dir.path().join("disk2.img"), b"").unwrap();
        std::fs::write(dir.path().join("disk.qcow2"), b"QFI\xfb\0\0\0\x03").unwrap();
        std::fs::write(dir.path().join("bsd"), b"\x7fELF").unwrap();
        std::fs::write(dir.path().join("initrd.img"), b"070701").unwrap();
        Fixture { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` as `name` in the fixture directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Options with `-D d=<fixture dir>` and the fake resolver.
    pub fn opts(&self) -> Options<'static> {
        Options {
            macros: vec![("d".into(), self.path().display().to_string())],
            resolver: &FAKE,
        }
    }

    /// Parses `text` as `test.conf`, with `$d` naming the fixture directory.
    pub fn parse(&self, text: &str) -> Result<Parsed, Vec<Error>> {
        vmconf::parse_bytes(
            "test.conf",
            text.as_bytes().to_vec(),
            Some(self.file("test.conf")),
            &self.opts(),
        )
    }

    /// Parses and expects success.
    pub fn ok(&self, text: &str) -> Parsed {
        match self.parse(text) {
            Ok(p) => p,
            Err(e) => panic!("expected success for {text:?}, got {:?}", messages(&e)),
        }
    }

    /// Parses and expects failure; returns the printed messages.
    pub fn err(&self, text: &str) -> Vec<String> {
        match self.parse(text) {
            Ok(p) => panic!("expected an error for {text:?}, got {:?}", p.config),
            Err(e) => messages(&e),
        }
    }

    /// A VM block with one disk whose third line is `option`.
    pub fn vm_with(&self, option: &str) -> String {
        format!("vm \"v\" {{\n\tdisk $d \"/disk.img\"\n\t{option}\n}}\n")
    }
}

pub fn messages(errors: &[Error]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}
