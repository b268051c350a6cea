//! vmd(8): the virtual machine daemon. For now only the command line and the
//! configuration test (`-n`) exist; the daemon roles are added beside `cli` later.

mod cli;
mod configtest;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::Args::parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    if args.noaction {
        return configtest::run(&args);
    }
    eprintln!("vmd: the daemon is not implemented yet; only -n (configuration test) works");
    ExitCode::FAILURE
}
