//! vmctl(8). Everything is in the library; this only hands it the arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(bad) => {
                eprintln!(
                    "vmctl: argument is not valid UTF-8: {}",
                    bad.to_string_lossy()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::from(vmctl::run(&args))
}
