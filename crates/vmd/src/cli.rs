//! `vmd [-dnv] [-D macro=value] [-f file]`, with OpenBSD's flag semantics.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "vmd",
    about = "virtual machine daemon",
    override_usage = "vmd [-dnv] [-D macro=value] [-f file] [-s socket]",
    disable_version_flag = true
)]
pub struct Args {
    /// Do not daemonize; log to stderr.
    #[arg(short = 'd')]
    pub foreground: bool,

    /// Only check the configuration file and exit.
    #[arg(short = 'n')]
    pub noaction: bool,

    /// Verbose logging; repeat for more.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Define a macro that the configuration file cannot override.
    #[arg(short = 'D', value_name = "macro=value")]
    pub defines: Vec<String>,

    /// Configuration file [default: /etc/vm.conf].
    #[arg(short = 'f', value_name = "file")]
    pub file: Option<PathBuf>,

    /// Control socket [default: /var/run/vmd.sock].
    #[arg(short = 's', value_name = "socket", default_value = ipc::proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

impl Args {
    /// Parses argv; on error prints clap's message and yields exit status 1 like
    /// OpenBSD's usage(), while `-h` exits 0.
    pub fn parse_args() -> Result<Args, ExitCode> {
        Args::try_parse().map_err(|e| {
            let code = if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            // Nothing useful is left to do if the terminal is gone.
            let _ = e.print();
            code
        })
    }
}
