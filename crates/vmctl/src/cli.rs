//! The command line: `vmctl [-v] [-s socket] command [arg ...]`, parsed as OpenBSD's vmctl
//! does (spec §3.1–§3.3): getopt(3) semantics (options before operands, clustered flags,
//! `--` ends the options, no reordering), commands matched by any unique prefix, and the
//! same diagnostics and usage lines.
//!
//! Hand-written rather than clap: clap cannot reproduce getopt's and vmctl's exact
//! messages (`unknown option -- x`, `ambiguous argument: st`, per-command usage).
//!
//! Parsing touches the file system only through `realpath(3)` of the paths `start` takes,
//! which is injected so tests need no files (and `load`'s path is made absolute against the
//! working directory). Every failure is the list of lines to print to stderr before
//! exiting with status 1.

use std::io;
use std::path::PathBuf;

use ipc::proto::{BootDevice, DiskFormat, DiskSpec, NicSpec, ResetKind, StartRequest, VmRef};

use crate::messages::{io_error_text, warnx};
use crate::size::{parse_size, SizeKind};

/// Longest VM name in bytes (`VMM_MAX_NAME_LEN`, 64 with its NUL).
pub const MAX_NAME_LEN: usize = 63;
/// NICs per VM (`VM_MAX_NICS_PER_VM`).
pub const MAX_NICS: usize = 4;
/// Disks per VM (`VM_MAX_DISKS_PER_VM`).
pub const MAX_DISKS: usize = 4;
/// Extension `-p`: the vCPU maximum vmm(4) headers define.
pub const MAX_CPUS: u32 = 64;
/// Extension `--cmdline`: x86 Linux `COMMAND_LINE_SIZE` less its NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;
/// `-i` takes a positive C `int` (strtonum's range in OpenBSD).
const MAX_IFS_WORD: i64 = i32::MAX as i64;

/// The main usage line (7.x wording; `-s` is documented in the man page).
pub const USAGE: &str = "usage:\tvmctl [-v] command [arg ...]";

/// What a parsed command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `-v`: print each request and answer exchanged with vmd.
    pub verbose: bool,
    /// `-s socket`: vmd's control socket.
    pub socket: PathBuf,
    /// The command.
    pub command: Command,
    /// Warnings found while parsing (e.g. a rounded size), printed before running.
    pub warnings: Vec<String>,
}

/// Whom `stop` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopTarget {
    /// One VM.
    Vm(VmRef),
    /// `-a`: every running VM.
    All,
}

/// `start`: the request (paths resolved, NIC list expanded) and `-c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartArgs {
    /// What to send, before the new-VM defaults of [`crate::start`].
    pub request: StartRequest,
    /// `-c`: attach to the console instead of printing the success line.
    pub console: bool,
}

/// `create`: the operands as typed; checks that need the file system happen in
/// [`crate::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateArgs {
    /// The image, possibly with a `raw:`/`qcow2:` prefix.
    pub disk: String,
    /// `-b base`.
    pub base: Option<String>,
    /// `-i disk`.
    pub input: Option<String>,
    /// `-s size`, bytes (whole MiB).
    pub size: Option<u64>,
}

/// A vmctl command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `console id`.
    Console(VmRef),
    /// `create [-b base | -i disk] [-s size] disk`.
    Create(CreateArgs),
    /// `load filename` (made absolute: vmd does not share our working directory).
    Load(PathBuf),
    /// `log brief|verbose`.
    Log { verbose: bool },
    /// `pause id`.
    Pause(VmRef),
    /// `receive name`: a VM from the stream on stdin, started under `name`.
    Receive(String),
    /// `reload`.
    Reload,
    /// `reset [all|switches|vms]`.
    Reset(ResetKind),
    /// `send [-l] id`: the VM's state to stdout, then the VM stops; `-l` (extension): live,
    /// while the guest runs.
    Send { vm: VmRef, live: bool },
    /// `show`/`status [-r] [--json] [id]`.
    Status {
        vm: Option<VmRef>,
        running_only: bool,
        json: bool,
    },
    /// `start ...`.
    Start(StartArgs),
    /// `stop [-fw] [id|-a]`.
    Stop {
        target: StopTarget,
        force: bool,
        wait: bool,
    },
    /// `unpause id`.
    Unpause(VmRef),
    /// `wait id`.
    Wait(VmRef),
}

/// The command table, in OpenBSD's order: name and per-command usage.
const COMMANDS: &[(&str, &str)] = &[
    ("console", "id"),
    ("create", "[-b base | -i disk] [-s size] disk"),
    ("load", "filename"),
    ("log", "[brief | verbose]"),
    ("pause", "id"),
    ("receive", "name"),
    ("reload", ""),
    ("reset", "[all | switches | vms]"),
    ("send", "[-l] id"),
    ("show", "[-r] [--json] [id]"),
    (
        "start",
        "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
         \t\t[-m size] [-n switch] [-p cpus] [-r path] [-t name]\n\
         \t\t[--initrd path] [--cmdline string] id | name",
    ),
    ("status", "[-r] [--json] [id]"),
    ("stop", "[-fw] [id | -a]"),
    ("unpause", "id"),
    ("wait", "id"),
];

/// The per-command usage line (`ctl_usage`).
pub fn command_usage(name: &str) -> String {
    let usage = COMMANDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, u)| u);
    format!("usage:\tvmctl [-v] {name} {usage}")
}

/// Resolves a path as `realpath(3)`.
pub type Realpath<'a> = &'a dyn Fn(&str) -> io::Result<PathBuf>;

/// Parses the arguments after the program name, resolving `start`'s paths with `realpath`.
pub fn parse(args: &[String], realpath: Realpath<'_>) -> Result<Invocation, Vec<String>> {
    let mut verbose = false;
    let mut socket = PathBuf::from(ipc::proto::DEFAULT_SOCKET);
    let mut opts = Getopt::new(args, 0, "s:v", &[]);
    while let Some(opt) = opts.next() {
        match opt {
            Ok(Opt::Short('v', _)) => verbose = true,
            Ok(Opt::Short('s', Some(path))) => socket = PathBuf::from(path),
            Ok(_) => unreachable!("only the declared options are returned"),
            Err(line) => return Err(vec![line, USAGE.to_string()]),
        }
    }
    let rest = opts.rest();
    let Some(word) = rest.first() else {
        return Err(vec![USAGE.to_string()]);
    };
    let mut matches = COMMANDS
        .iter()
        .filter(|(name, _)| name.starts_with(word.as_str()));
    let name = match (matches.next(), matches.next()) {
        (Some((name, _)), None) => *name,
        (Some(_), Some(_)) => {
            return Err(vec![
                format!("ambiguous argument: {word}"),
                USAGE.to_string(),
            ])
        }
        (None, _) => return Err(vec![format!("unknown argument: {word}"), USAGE.to_string()]),
    };
    let mut cx = Cx {
        name,
        diag: Vec::new(),
        realpath,
    };
    match cx.command(rest) {
        Ok(command) => Ok(Invocation {
            verbose,
            socket,
            command,
            warnings: cx.diag,
        }),
        Err(lines) => {
            cx.diag.extend(lines);
            Err(cx.diag)
        }
    }
}

/// How the word naming a VM was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRefError {
    /// Starts with `-`: silently not an id (it is an option in the wrong place).
    Dash,
    /// 64 bytes or more.
    TooLong,
    /// Not the name charset of spec §3.1.
    BadName,
}

/// The id-or-name rule of spec §3.1: a word `strtonum(3)` reads as an unsigned 32-bit
/// number is an id, anything else a name (so an all-digit name cannot be addressed by
/// name, as in OpenBSD).
pub fn vm_ref(word: &str) -> Result<VmRef, VmRefError> {
    if word.starts_with('-') {
        return Err(VmRefError::Dash);
    }
    if let Some(id) = strtonum_u32(word) {
        return Ok(VmRef::Id(id));
    }
    if word.len() > MAX_NAME_LEN {
        return Err(VmRefError::TooLong);
    }
    if !valid_name(word) {
        return Err(VmRefError::BadName);
    }
    Ok(VmRef::Name(word.to_string()))
}

/// vmd's name charset (checked by vmctl too, spec §3.1): letters, digits, `.`, `-`, `_`,
/// not starting with `.`, `-` or `_`. vmd applies the same rule to configured VMs, so a
/// name refused here can never match a VM.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_alphanumeric() => {
            bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
        _ => false,
    }
}

/// `strtonum(word, 0, UINT32_MAX)`: leading blanks, an optional `+`, decimal digits only.
fn strtonum_u32(word: &str) -> Option<u32> {
    let digits = word.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// strtonum's verdict on a count, in its words (`invalid`, `too small`, `too large`).
fn strtonum(word: &str, min: i64, max: i64) -> Result<i64, &'static str> {
    let trimmed = word.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid");
    }
    match digits.parse::<i64>() {
        Ok(v) => {
            let v = if negative { -v } else { v };
            if v < min {
                Err("too small")
            } else if v > max {
                Err("too large")
            } else {
                Ok(v)
            }
        }
        Err(_) if negative => Err("too small"),
        Err(_) => Err("too large"),
    }
}

/// A `[raw:|qcow2:]path` disk word: the explicit format, if any, and the path.
pub fn disk_prefix(word: &str) -> (Option<DiskFormat>, &str) {
    if let Some(path) = word.strip_prefix("raw:") {
        (Some(DiskFormat::Raw), path)
    } else if let Some(path) = word.strip_prefix("qcow2:") {
        (Some(DiskFormat::Qcow2), path)
    } else {
        (None, word)
    }
}

/// Per-command parsing state: the command's name (for its usage line), warnings so far,
/// and the path resolver.
struct Cx<'a> {
    name: &'static str,
    diag: Vec<String>,
    realpath: Realpath<'a>,
}

type Parsed<T> = Result<T, Vec<String>>;

impl Cx<'_> {
    fn usage(&self) -> Vec<String> {
        vec![command_usage(self.name)]
    }

    /// The option error line followed by the usage.
    fn opt_error(&self, line: String) -> Vec<String> {
        vec![line, command_usage(self.name)]
    }

    fn command(&mut self, args: &[String]) -> Parsed<Command> {
        match self.name {
            "console" => Ok(Command::Console(self.single_id(args)?)),
            "pause" => Ok(Command::Pause(self.single_id(args)?)),
            "unpause" => Ok(Command::Unpause(self.single_id(args)?)),
            "wait" => Ok(Command::Wait(self.single_id(args)?)),
            "send" => self.send(args),
            "receive" => self.receive(args),
            "create" => self.create(args),
            "load" => self.load(args),
            "log" => self.log(args),
            "reload" if args.len() == 1 => Ok(Command::Reload),
            "reload" => Err(self.usage()),
            "reset" => self.reset(args),
            "show" | "status" => self.status(args),
            "start" => self.start(args),
            "stop" => self.stop(args),
            other => unreachable!("command {other} is in the table"),
        }
    }

    /// `errx(1, "invalid id: %s")` after parse_vmid's own warning.
    fn id(&self, word: &str) -> Parsed<VmRef> {
        vm_ref(word).map_err(|e| {
            let mut lines = Vec::new();
            match e {
                VmRefError::Dash => {}
                VmRefError::TooLong => lines.push(warnx("name too long")),
                VmRefError::BadName => lines.push(warnx("invalid vm name")),
            }
            lines.push(warnx(format_args!("invalid id: {word}")));
            lines
        })
    }

    /// Commands taking exactly one id and no options.
    fn single_id(&self, args: &[String]) -> Parsed<VmRef> {
        match args {
            [_, word] => self.id(word),
            _ => Err(self.usage()),
        }
    }

    /// `send [-l] id`.
    fn send(&self, args: &[String]) -> Parsed<Command> {
        let mut live = false;
        let mut opts = Getopt::new(args, 1, "l", &[]);
        while let Some(opt) = opts.next() {
            match opt.map_err(|line| self.opt_error(line))? {
                Opt::Short('l', _) => live = true,
                _ => unreachable!("only the declared options are returned"),
            }
        }
        let [word] = opts.rest() else {
            return Err(self.usage());
        };
        Ok(Command::Send {
            vm: self.id(word)?,
            live,
        })
    }

    /// `receive name`: a name, never an id (OpenBSD's `parse_vmid` with `needname`).
    fn receive(&self, args: &[String]) -> Parsed<Command> {
        let [_, word] = args else {
            return Err(self.usage());
        };
        match self.id(word)? {
            VmRef::Name(name) => Ok(Command::Receive(name)),
            VmRef::Id(_) => Err(vec![
                warnx("invalid vm name"),
                warnx(format_args!("invalid id: {word}")),
            ]),
        }
    }

    fn load(&self, args: &[String]) -> Parsed<Command> {
        let [_, file] = args else {
            return Err(self.usage());
        };
        std::path::absolute(file)
            .map(Command::Load)
            .map_err(|e| vec![warnx(format_args!("{file}: {}", io_error_text(&e)))])
    }

    fn log(&self, args: &[String]) -> Parsed<Command> {
        let [_, word] = args else {
            return Err(self.usage());
        };
        // strncasecmp over the word's length: any prefix, any case (even the empty word).
        let is_prefix =
            |full: &str| word.len() <= full.len() && full[..word.len()].eq_ignore_ascii_case(word);
        if is_prefix("brief") {
            Ok(Command::Log { verbose: false })
        } else if is_prefix("verbose") {
            Ok(Command::Log { verbose: true })
        } else {
            Err(self.usage())
        }
    }

    fn reset(&self, args: &[String]) -> Parsed<Command> {
        let kind = match args {
            [_] => ResetKind::All,
            [_, word] if word.eq_ignore_ascii_case("all") => ResetKind::All,
            [_, word] if word.eq_ignore_ascii_case("vms") => ResetKind::Vms,
            [_, word] if word.eq_ignore_ascii_case("switches") => ResetKind::Switches,
            _ => return Err(self.usage()),
        };
        Ok(Command::Reset(kind))
    }

    fn status(&self, args: &[String]) -> Parsed<Command> {
        let mut running_only = false;
        let mut json = false;
        const LONG: [LongOpt; 1] = [LongOpt::flag("json")];
        let mut opts = Getopt::new(args, 1, "r", &LONG);
        while let Some(opt) = opts.next() {
            match opt.map_err(|line| self.opt_error(line))? {
                Opt::Short('r', _) => running_only = true,
                Opt::Long("json", _) => json = true,
                _ => unreachable!("only the declared options are returned"),
            }
        }
        let vm = match opts.rest() {
            [] => None,
            [word] => Some(self.id(word)?),
            _ => return Err(self.usage()),
        };
        Ok(Command::Status {
            vm,
            running_only,
            json,
        })
    }

    fn stop(&self, args: &[String]) -> Parsed<Command> {
        let (mut all, mut force, mut wait) = (false, false, false);
        let mut opts = Getopt::new(args, 1, "afw", &[]);
        while let Some(opt) = opts.next() {
            match opt.map_err(|line| self.opt_error(line))? {
                Opt::Short('a', _) => all = true,
                Opt::Short('f', _) => force = true,
                Opt::Short('w', _) => wait = true,
                _ => unreachable!("only the declared options are returned"),
            }
        }
        let target = match (all, opts.rest()) {
            (true, []) => StopTarget::All,
            (false, [word]) => StopTarget::Vm(self.id(word)?),
            _ => return Err(self.usage()),
        };
        Ok(Command::Stop {
            target,
            force,
            wait,
        })
    }

    fn create(&mut self, args: &[String]) -> Parsed<Command> {
        let (mut base, mut input, mut size) = (None, None, None);
        let mut opts = Getopt::new(args, 1, "b:i:s:", &[]);
        while let Some(opt) = opts.next() {
            match opt.map_err(|line| self.opt_error(line))? {
                Opt::Short('b', arg) => base = arg,
                Opt::Short('i', arg) => input = arg,
                Opt::Short('s', Some(word)) => {
                    size = Some(self.size(&word, SizeKind::Disk, "invalid size")?)
                }
                _ => unreachable!("only the declared options are returned"),
            }
        }
        let [disk] = opts.rest() else {
            return Err(self.usage());
        };
        Ok(Command::Create(CreateArgs {
            disk: disk.clone(),
            base,
            input,
            size,
        }))
    }

    /// parse_size, then `errx(1, "<what>: %s")` on failure; a rounding warning is kept.
    fn size(&mut self, word: &str, kind: SizeKind, what: &str) -> Parsed<u64> {
        match parse_size(word, kind) {
            Ok(size) => {
                self.diag.extend(size.rounded.map(warnx));
                Ok(size.bytes)
            }
            Err(reason) => Err(vec![warnx(reason), warnx(format_args!("{what}: {word}"))]),
        }
    }

    /// `realpath(3)` or `err(1, "<what>")`.
    fn resolve(&self, path: &str, what: &str) -> Parsed<PathBuf> {
        (self.realpath)(path)
            .map_err(|e| vec![warnx(format_args!("{what}: {}", io_error_text(&e)))])
    }

    fn start(&mut self, args: &[String]) -> Parsed<Command> {
        let mut req = StartRequest::default();
        let mut console = false;
        let mut ifs: Option<usize> = None;
        let long = [LongOpt::with_arg("initrd"), LongOpt::with_arg("cmdline")];
        let mut opts = Getopt::new(args, 1, "b:B:cd:i:Lm:n:p:r:t:", &long);
        let once = |set: bool, what: &str| -> Parsed<()> {
            if set {
                Err(vec![warnx(format_args!("{what} specified multiple times"))])
            } else {
                Ok(())
            }
        };
        while let Some(opt) = opts.next() {
            let opt = opt.map_err(|line| self.opt_error(line))?;
            let arg = match &opt {
                Opt::Short(_, Some(a)) | Opt::Long(_, Some(a)) => a.as_str(),
                _ => "",
            };
            match opt {
                Opt::Short('b', _) => {
                    once(req.boot.is_some(), "boot image")?;
                    req.boot = Some(self.resolve(arg, "invalid boot image path")?);
                }
                Opt::Short('B', _) => {
                    once(req.boot_device.is_some(), "boot device")?;
                    req.boot_device = Some(match arg {
                        "disk" => BootDevice::Disk,
                        "cdrom" => BootDevice::Cdrom,
                        "net" => BootDevice::Net,
                        _ => return Err(vec![warnx(format_args!("unknown boot device {arg}"))]),
                    });
                }
                Opt::Short('c', _) => console = true,
                Opt::Short('d', _) => {
                    let (format, path) = disk_prefix(arg);
                    let path = self.resolve(path, "invalid disk path")?;
                    req.disks.push(DiskSpec { path, format });
                }
                Opt::Short('i', _) => {
                    once(ifs.is_some(), "interfaces")?;
                    let count = strtonum(arg, 1, MAX_IFS_WORD).map_err(|why| {
                        vec![
                            warnx(format_args!("count is {why}: {arg}")),
                            warnx(format_args!("invalid interface count: {arg}")),
                        ]
                    })?;
                    ifs = Some(usize::try_from(count).unwrap_or(usize::MAX));
                }
                Opt::Short('L', _) => req.nics.push(NicSpec::Local),
                Opt::Short('m', _) => {
                    once(req.memory.is_some(), "memory")?;
                    req.memory = Some(self.size(arg, SizeKind::Memory, "invalid memory size")?);
                }
                // An empty switch name is a plain interface, as vmd reads it.
                Opt::Short('n', _) if arg.is_empty() => req.nics.push(NicSpec::Plain),
                Opt::Short('n', _) => req.nics.push(NicSpec::Switch(arg.to_string())),
                Opt::Short('p', _) => {
                    once(req.cpus.is_some(), "cpu count")?;
                    let cpus = strtonum(arg, 1, i64::from(MAX_CPUS)).map_err(|why| {
                        vec![
                            warnx(format_args!("cpu count is {why}: {arg}")),
                            warnx(format_args!("invalid cpu count: {arg}")),
                        ]
                    })?;
                    req.cpus = u32::try_from(cpus).ok();
                }
                Opt::Short('r', _) => {
                    once(req.cdrom.is_some(), "iso image")?;
                    req.cdrom = Some(self.resolve(arg, "invalid iso image path")?);
                }
                Opt::Short('t', _) => {
                    once(req.template.is_some(), "instance")?;
                    if arg.len() > MAX_NAME_LEN {
                        return Err(vec![
                            warnx("instance vm name too long"),
                            warnx(format_args!("invalid name: {arg}")),
                        ]);
                    }
                    req.template = Some(arg.to_string());
                }
                Opt::Long("initrd", _) => {
                    once(req.initrd.is_some(), "initrd")?;
                    req.initrd = Some(self.resolve(arg, "invalid initrd path")?);
                }
                Opt::Long("cmdline", _) => {
                    once(req.cmdline.is_some(), "kernel command line")?;
                    if arg.len() > MAX_CMDLINE_LEN {
                        return Err(vec![warnx(format_args!(
                            "kernel command line too long (limit is {MAX_CMDLINE_LEN} bytes)"
                        ))]);
                    }
                    req.cmdline = Some(arg.to_string());
                }
                _ => unreachable!("only the declared options are returned"),
            }
        }
        let [word] = opts.rest() else {
            return Err(self.usage());
        };
        req.vm = Some(self.id(word)?);
        if (req.initrd.is_some() || req.cmdline.is_some()) && req.boot.is_none() {
            return Err(vec![warnx("--initrd and --cmdline need a kernel (-b)")]);
        }
        // Plain interfaces fill up to -i after the -L/-n ones (spec §3.3); more than a VM
        // can have is refused here, before building a list of that length.
        let total = ifs.unwrap_or(0).max(req.nics.len());
        if total > MAX_NICS {
            return Err(vec![warnx("too many network interfaces")]);
        }
        req.nics.resize(total, NicSpec::Plain);
        Ok(Command::Start(StartArgs {
            request: req,
            console,
        }))
    }
}

/// A long option: its name and whether it takes an argument.
#[derive(Debug, Clone, Copy)]
struct LongOpt {
    name: &'static str,
    has_arg: bool,
}

impl LongOpt {
    const fn flag(name: &'static str) -> LongOpt {
        LongOpt {
            name,
            has_arg: false,
        }
    }

    const fn with_arg(name: &'static str) -> LongOpt {
        LongOpt {
            name,
            has_arg: true,
        }
    }
}

/// One option found by [`Getopt`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Opt {
    Short(char, Option<String>),
    Long(&'static str, Option<String>),
}

/// getopt(3)/getopt_long(3) as OpenBSD's libc behaves: stops at the first operand or after
/// `--`; `-abc` clusters; `-mVALUE` or `-m VALUE`; `--name=value` or `--name value`; a long
/// name may be abbreviated to a unique prefix. Errors are OpenBSD's lines.
struct Getopt<'a> {
    args: &'a [String],
    optind: usize,
    /// Byte offset of the next option letter inside `args[optind]`; 0 between words.
    pos: usize,
    short: &'static str,
    long: &'a [LongOpt],
}

impl<'a> Getopt<'a> {
    /// Starts at `args[first]` (1 to skip the command word, as getopt skips `argv[0]`).
    fn new(args: &'a [String], first: usize, short: &'static str, long: &'a [LongOpt]) -> Self {
        Getopt {
            args,
            optind: first,
            pos: 0,
            short,
            long,
        }
    }

    /// The operands after the options.
    fn rest(&self) -> &'a [String] {
        &self.args[self.optind.min(self.args.len())..]
    }

    /// Whether `c` is an option letter, and whether it takes an argument.
    fn lookup(&self, c: char) -> Option<bool> {
        if c == ':' {
            return None;
        }
        let at = self.short.find(c)?;
        Some(self.short[at + c.len_utf8()..].starts_with(':'))
    }

    fn next(&mut self) -> Option<Result<Opt, String>> {
        if self.pos == 0 {
            let word = self.args.get(self.optind)?;
            if word == "--" {
                self.optind += 1;
                return None;
            }
            if let Some(long) = word.strip_prefix("--") {
                self.optind += 1;
                return Some(self.long_opt(long));
            }
            if word.len() < 2 || !word.starts_with('-') {
                return None;
            }
            self.pos = 1;
        }
        let args = self.args;
        let word = &args[self.optind];
        let c = word[self.pos..].chars().next()?;
        self.pos += c.len_utf8();
        let at_end = self.pos >= word.len();
        let rest_of_word = word[self.pos..].to_string();
        if at_end {
            self.pos = 0;
            self.optind += 1;
        }
        match self.lookup(c) {
            None => Some(Err(warnx(format_args!("unknown option -- {c}")))),
            Some(false) => Some(Ok(Opt::Short(c, None))),
            Some(true) if !at_end => {
                self.pos = 0;
                self.optind += 1;
                Some(Ok(Opt::Short(c, Some(rest_of_word))))
            }
            Some(true) => match self.args.get(self.optind) {
                Some(value) => {
                    self.optind += 1;
                    Some(Ok(Opt::Short(c, Some(value.clone()))))
                }
                None => Some(Err(warnx(format_args!(
                    "option requires an argument -- {c}"
                )))),
            },
        }
    }

    fn long_opt(&mut self, word: &str) -> Result<Opt, String> {
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (word, None),
        };
        let exact = self.long.iter().find(|o| o.name == name);
        let mut prefixed = self.long.iter().filter(|o| o.name.starts_with(name));
        let opt = match (exact, prefixed.next(), prefixed.next()) {
            (Some(o), _, _) => *o,
            (None, Some(o), None) if !name.is_empty() => *o,
            (None, Some(_), Some(_)) => {
                return Err(warnx(format_args!("ambiguous option -- {name}")))
            }
            _ => return Err(warnx(format_args!("unknown option -- {name}"))),
        };
        match (opt.has_arg, inline) {
            (false, None) => Ok(Opt::Long(opt.name, None)),
            (false, Some(_)) => Err(warnx(format_args!(
                "option doesn't take an argument -- {}",
                opt.name
            ))),
            (true, Some(value)) => Ok(Opt::Long(opt.name, Some(value))),
            (true, None) => match self.args.get(self.optind) {
                Some(value) => {
                    self.optind += 1;
                    Ok(Opt::Long(opt.name, Some(value.clone())))
                }
                None => Err(warnx(format_args!(
                    "option requires an argument -- {}",
                    opt.name
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests;
