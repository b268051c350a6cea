//! vmd(8): the virtual machine daemon. The binary is thin: the command line (`cli`), the
//! configuration test (`-n`), and the daemon's processes in the library (`vmd::daemon`).

mod cli;
mod configtest;

use std::process::ExitCode;

use vmd::daemon::{self, parent, spawn};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(spawn::ROLE_ARG) {
        return daemon::child_main(&argv[1..]);
    }
    let args = match cli::Args::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    if args.noaction {
        return configtest::run(&args);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("vmd: need root privileges");
        return ExitCode::FAILURE;
    }
    let mut macros = Vec::new();
    for d in &args.defines {
        match vmconf::parse_macro_definition(d) {
            Ok(m) => macros.push(m),
            Err(e) => {
                eprintln!("vmd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    parent::run(parent::Options {
        config: args.file.clone(),
        macros,
        socket: args.socket.clone(),
        inherit: spawn::Inherit {
            foreground: args.foreground,
            verbosity: args.verbose,
        },
    })
}
