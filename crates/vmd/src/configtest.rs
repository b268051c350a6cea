//! `vmd -n`: parse the configuration, report, exit.

use std::process::ExitCode;

use crate::cli::Args;

pub fn run(args: &Args) -> ExitCode {
    let mut opts = vmconf::Options::default();
    for d in &args.defines {
        match vmconf::parse_macro_definition(d) {
            Ok(kv) => opts.macros.push(kv),
            Err(e) => {
                eprintln!("vmd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match vmconf::load(args.file.as_deref(), &opts) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                eprintln!("{w}");
            }
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
