//! Errors and warnings of a configuration load.
//!
//! Every error that stems from the text of a file carries the file name and line so it prints
//! as `file:line: message`, the shape OpenBSD's `yyerror` gives and users grep for.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a statement or token came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The file name as it was given (command line or `include` argument).
    pub file: String,
    /// 1-based line number.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A failed configuration load. The whole load fails if any of these occurs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A problem at a place in a file.
    #[error("{location}: {kind}")]
    At { location: Location, kind: ErrorKind },
    /// The top-level file could not be read.
    #[error("{}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// A `-D name=value` argument without `=`.
    #[error("could not parse macro definition {0}")]
    MacroDefinition(String),
}

impl Error {
    /// The message without its location, for callers that match on what went wrong.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::At { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Where the error is, when it comes from a file's text.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::At { location, .. } => Some(location),
            _ => None,
        }
    }
}

/// What went wrong at a location. The wording follows OpenBSD's parse.y where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("syntax error")]
    Syntax,
    #[error("reached end of file while parsing quoted string")]
    UnterminatedQuote,
    #[error("string too long")]
    StringTooLong,
    #[error("\"{text}\" invalid number: {reason}")]
    InvalidNumber { text: String, reason: &'static str },
    #[error("macro name cannot contain whitespace")]
    MacroNameWhitespace,
    #[error("macro '{0}' not defined")]
    MacroNotDefined(String),
    #[error("macro expansion limit reached ({0} bytes)")]
    ExpansionLimit(usize),
    #[error("failed to include file {path}: {reason}")]
    Include { path: String, reason: String },
    #[error("too many errors, giving up")]
    TooManyErrors,
    #[error("invalid local prefix: {0}")]
    LocalPrefix(String),
    #[error("invalid local inet6 prefix: {0}")]
    LocalInet6Prefix(String),
    #[error("invalid staggered start {what}: {value}")]
    Staggered { what: &'static str, value: i64 },
    #[error("agentx path is not absolute")]
    AgentxPathNotAbsolute,
    #[error("agentx context too large")]
    AgentxContextTooLarge,
    #[error("agentx path too large")]
    AgentxPathTooLarge,
    #[error("switch \"{0}\" is missing interface name")]
    SwitchMissingInterface(String),
    #[error("invalid switch interface: {0}")]
    InvalidSwitchInterface(String),
    #[error("switch interface too long")]
    SwitchInterfaceTooLong,
    #[error("switch name too long: {0}")]
    SwitchNameTooLong(String),
    #[error("invalid group name: {0}")]
    InvalidGroup(String),
    #[error("invalid rdomain: {0}")]
    InvalidRdomain(i64),
    #[error("vm name too long")]
    VmNameTooLong,
    #[error("vm {0} name too long")]
    ParentNameTooLong(String),
    #[error("vm \"{name}\" failed: {reason}")]
    VmFailed { name: String, reason: String },
    #[error("failed to parse disks: {path}: {reason}")]
    Disk { path: String, reason: String },
    #[error("unrecognized disk format {0}")]
    DiskFormat(String),
    #[error("too many interfaces: {0}")]
    TooManyInterfaces(i64),
    #[error("invalid interface: {0}")]
    InvalidInterface(String),
    #[error("interface name too long: {0}")]
    InterfaceNameTooLong(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("kernel specified more than once")]
    KernelTwice,
    #[error("kernel path not found: {path}: {reason}")]
    KernelNotFound { path: String, reason: String },
    #[error("cdrom specified more than once")]
    CdromTwice,
    #[error("cdrom name too long")]
    CdromNameTooLong,
    #[error("interfaces specified more than once")]
    InterfacesTwice,
    #[error("memory specified more than once")]
    MemoryTwice,
    #[error("argument specified more than once")]
    ArgumentTwice,
    #[error("failed to parse size: {value}: {reason}")]
    Size { value: String, reason: String },
    #[error("failed to get user: {0}")]
    UnknownUser(String),
    #[error("failed to get group: {0}")]
    UnknownGroup(String),
    #[error("invalid uid: {0}")]
    InvalidUid(i64),
    #[error("cpus specified more than once")]
    CpusTwice,
    #[error("invalid cpus: {0} (must be 1 to {max})", max = crate::validate::MAX_VCPUS)]
    InvalidCpus(i64),
    #[error("initrd specified more than once")]
    InitrdTwice,
    #[error("initrd path not found: {path}: {reason}")]
    InitrdNotFound { path: String, reason: String },
    #[error("cmdline specified more than once")]
    CmdlineTwice,
    #[error("cmdline too long (limit is {max} bytes)", max = crate::validate::MAX_CMDLINE_LEN)]
    CmdlineTooLong,
    #[error("{0} needs a kernel: add \"boot PATH\"")]
    NeedsKernel(&'static str),
}

/// Something accepted but worth telling the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Warning {
    /// A macro defined (in the file or with `-D`) and never expanded.
    UnusedMacro(String),
    /// `memory` was not a whole number of MiB and was rounded down.
    MemoryRounded { location: Location, bytes: u64 },
    /// A second `vm` block with a name already defined; OpenBSD skips it and so do we.
    DuplicateVm { location: Location, name: String },
    /// `vm P instance N` where no VM `P` came before in this load.
    UnknownParent {
        location: Location,
        name: String,
        parent: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnusedMacro(name) => write!(f, "warning: macro '{name}' not used"),
            Warning::MemoryRounded { location, bytes } => {
                write!(f, "{location}: memory size rounded to {bytes} bytes")
            }
            Warning::DuplicateVm { location, name } => {
                write!(f, "{location}: vm \"{name}\" skipped (already exists)")
            }
            Warning::UnknownParent {
                location,
                name,
                parent,
            } => write!(
                f,
                "{location}: vm \"{name}\": parent vm \"{parent}\" is not defined before it"
            ),
        }
    }
}
