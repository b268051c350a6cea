//! Feeds arbitrary bytes to the vm.conf parser, optionally with a second chunk of the same
//! input written to a file that the first chunk includes.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmconf::{Options, Resolver};

struct Fake;

impl Resolver for Fake {
    fn uid(&self, user: &str) -> Option<u32> {
        (user == "root").then_some(0)
    }
    fn gid(&self, group: &str) -> Option<u32> {
        (group == "wheel").then_some(0)
    }
}

static FAKE: Fake = Fake;

fn include_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("vmconf-fuzz-{}.conf", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    // "\0\0" splits the input into the main file and the included file.
    let (main, included) = match data.windows(2).position(|w| w == b"\0\0") {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let mut text = Vec::new();
    if let Some(inc) = included {
        let path = include_path();
        if std::fs::write(path, inc).is_ok() {
            text.extend_from_slice(format!("include \"{}\"\n", path.display()).as_bytes());
        }
    }
    text.extend_from_slice(main);
    let opts = Options {
        macros: vec![("d".into(), "/tmp".into())],
        resolver: &FAKE,
    };
    if let Err(errors) = vmconf::parse_bytes("fuzz.conf", text, None, &opts) {
        assert!(!errors.is_empty());
        for e in &errors {
            // Every error must render; an empty message would help nobody.
            assert!(!e.to_string().is_empty());
        }
    }
});
