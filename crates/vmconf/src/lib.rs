//! vm.conf(5): reading, checking and modelling vmd's configuration file.
//!
//! This crate owns the whole path from bytes to a validated [`Config`]: the lexer (comments,
//! continuation, quoting, `$macro` expansion, `include`), the parser for OpenBSD's 6.9 and
//! 7.x grammar plus our documented extensions (`cpus`, `initrd`, `cmdline`), the checks vmd
//! makes at parse and registration time, and `file:line: message` errors.
//!
//! It must never act on what it reads: no starting VMs, no opening disks for writing, no
//! network configuration, no privileged calls. It reads configuration files, resolves paths
//! and user/group names, and peeks at the first bytes of disk images to tell qcow2 from raw.
//! It must never panic or hang on any input; every input dimension is bounded by the
//! constants in [`limits`].
//!
//! ```no_run
//! let opts = vmconf::Options::default();
//! match vmconf::load(None, &opts) {
//!     Ok(parsed) => println!("{} vms", parsed.config.vms.len()),
//!     Err(errors) => errors.iter().for_each(|e| eprintln!("{e}")),
//! }
//! ```

mod error;
mod lexer;
pub mod limits;
mod model;
mod owner;
mod parse;
pub mod validate;

use std::path::{Path, PathBuf};

pub use error::{Error, ErrorKind, Location, Warning};
pub use model::*;
pub use owner::{Resolver, SystemResolver};

use lexer::Lexer;
use parse::Parser;

/// Where vmd looks when no `-f` is given.
pub const DEFAULT_CONFIG: &str = "/etc/vm.conf";

/// How to parse.
pub struct Options<'a> {
    /// `-D name=value` macros: defined before the file is read and never overridden by it.
    pub macros: Vec<(String, String)>,
    /// User and group lookup for `owner` lines.
    pub resolver: &'a dyn Resolver,
}

impl Default for Options<'static> {
    fn default() -> Self {
        Options {
            macros: Vec::new(),
            resolver: &SystemResolver,
        }
    }
}

/// A successful parse and what the user should still hear about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Splits a `-D name=value` argument at the first `=`.
pub fn parse_macro_definition(arg: &str) -> Result<(String, String), Error> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(Error::MacroDefinition(arg.to_owned())),
    }
}

/// Parses `text` as if it were the file `name`. Relative includes are taken from `path`'s
/// directory when given, else from the current directory.
pub fn parse_bytes(
    name: &str,
    text: Vec<u8>,
    path: Option<PathBuf>,
    opts: &Options<'_>,
) -> Result<Parsed, Vec<Error>> {
    let mut lexer = Lexer::new(name, text, path);
    for (name, value) in &opts.macros {
        lexer.macros.define(name, value, true);
    }
    let mut parser = Parser::new(lexer, opts.resolver);
    parser.run();
    if !parser.errors.is_empty() {
        return Err(parser.errors);
    }
    let config = std::mem::take(&mut parser.config);
    let mut warnings = std::mem::take(&mut parser.warnings);
    let lexer = parser.into_lexer();
    warnings.extend(
        lexer
            .macros
            .unused()
            .map(|n| Warning::UnusedMacro(n.to_owned())),
    );
    Ok(Parsed { config, warnings })
}

/// Parses the file at `path`.
pub fn parse_file(path: &Path, opts: &Options<'_>) -> Result<Parsed, Vec<Error>> {
    let text = Lexer::read_limited(path).map_err(|reason| {
        vec![Error::Open {
            path: path.to_owned(),
            reason,
        }]
    })?;
    let canon = std::fs::canonicalize(path).ok();
    parse_bytes(&path.display().to_string(), text, canon, opts)
}

/// What the daemon calls at startup and reload: parses `path`, or [`DEFAULT_CONFIG`] when
/// `None`, in which case a missing file is an empty configuration rather than an error.
pub fn load(path: Option<&Path>, opts: &Options<'_>) -> Result<Parsed, Vec<Error>> {
    match path {
        Some(p) => parse_file(p, opts),
        None => {
            let default = Path::new(DEFAULT_CONFIG);
            if let Err(e) = std::fs::symlink_metadata(default) {
                if e.kind() == std::io::ErrorKind::NotFound {
                    return Ok(Parsed::default());
                }
            }
            parse_file(default, opts)
        }
    }
}
