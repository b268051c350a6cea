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
            if args.verbose > 0 {
                print_summary(&parsed.config);
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

/// `-nv`: one line per switch and VM, to see what the file was understood to say.
fn print_summary(config: &vmconf::Config) {
    for sw in &config.switches {
        println!("switch \"{}\": interface {}", sw.name, sw.interface);
    }
    for vm in &config.vms {
        let memory = vm.memory.unwrap_or(vmconf::DEFAULT_MEMORY) >> 20;
        let cpus = vm.cpus.unwrap_or(vmconf::DEFAULT_CPUS);
        println!(
            "vm \"{}\": {}, memory {memory}M, cpus {cpus}, disks {}, interfaces {}",
            vm.name,
            if vm.enabled { "enabled" } else { "disabled" },
            vm.disks.len(),
            vm.interfaces.len(),
        );
    }
}
