//! vmd's processes (spec §1, DESIGN.md §2): the parent (root: configuration, registry,
//! resources), priv (root: host network interfaces), control (the socket), vmm (VM process
//! supervision) and one process per VM.
//! Every child is vmd re-executed with a hidden role argument and a socketpair fd.

pub mod control;
pub mod internal;
pub mod log;
pub mod nics;
pub mod parent;
pub mod privdrop;
pub mod privproc;
pub mod pty;
pub mod sandbox;
pub mod signals;
pub mod spawn;
pub mod vmm;
pub mod vmproc;

use std::process::ExitCode;

/// Run the child role named in `args` (`--role ROLE --fd N [inherited flags] [role args]`).
pub fn child_main(args: &[String]) -> ExitCode {
    let role = args.get(1).map(String::as_str).unwrap_or("");
    let fd = match (
        args.get(2).map(String::as_str),
        args.get(3).and_then(|s| s.parse().ok()),
    ) {
        (Some(spawn::FD_ARG), Some(fd)) => fd,
        _ => {
            eprintln!("vmd: internal role {role:?} started without its channel");
            return ExitCode::FAILURE;
        }
    };
    let rest = &args[4.min(args.len())..];
    let inherit = spawn::Inherit::parse(rest);
    let chan = match spawn::inherited_channel(fd) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmd: {role}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match role {
        "control" => control::main(chan, &inherit, rest),
        "vmm" => vmm::main(chan, &inherit),
        "vm" => vmproc::main(chan, &inherit),
        "priv" => privproc::main(chan, &inherit),
        other => {
            eprintln!("vmd: unknown internal role {other:?}");
            ExitCode::FAILURE
        }
    }
}
