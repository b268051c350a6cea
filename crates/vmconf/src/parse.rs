//! Recursive-descent parser for the vm.conf grammar (spec §2.2), with one token of lookahead.
//!
//! The grammar is flat (blocks nest at most two deep), so every loop here consumes at least
//! one token per turn and nothing recurses on input. After an error the parser skips to the
//! end of the line, like parse.y's `error '\n'` rule, and goes on to report further errors;
//! any error fails the whole load.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Warning};
use crate::lexer::{io_reason, Keyword, Lexer, Loc, Tok, Token};
use crate::limits::{MAX_ERRORS, MAX_STRING_LEN};
use crate::model::{
    AgentX, BootDevice, Config, Disk, DiskFormat, InstancePermissions, Interface, LocalInet6,
    Owner, Sev, SocketOwner, StaggeredStart, Switch, Vm, DEFAULT_AGENTX_PATH,
};
use crate::owner::Resolver;
use crate::validate::{self, SwitchIfError};

struct Fault {
    loc: Loc,
    kind: ErrorKind,
}

type PResult<T> = Result<T, Fault>;

/// qcow2 images start with these bytes.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Max length of a VM's switch reference (`VM_NAME_MAX` with NUL).
const MAX_SWITCH_REF: usize = 64;

#[derive(Default)]
struct VmBuilder {
    disabled: bool,
    boot: Option<PathBuf>,
    boot_device: Option<BootDevice>,
    cdrom: Option<PathBuf>,
    disks: Vec<Disk>,
    nics: Vec<Interface>,
    interfaces: Option<usize>,
    memory: Option<u64>,
    owner: Option<Owner>,
    allow: Option<InstancePermissions>,
    sev: Sev,
    cpus: Option<u32>,
    initrd: Option<PathBuf>,
    cmdline: Option<String>,
}

struct SwitchBuilder {
    interface: Option<String>,
    group: Option<String>,
    locked: bool,
    rdomain: Option<u8>,
    up: bool,
    disabled: bool,
}

pub(crate) struct Parser<'a> {
    lx: Lexer,
    peeked: Option<Token>,
    last_was_newline: bool,
    /// Braces opened minus braces closed so far: error recovery uses it to tell whether
    /// the skipped text closed the block being parsed.
    depth: i64,
    resolver: &'a dyn Resolver,
    pub(crate) errors: Vec<Error>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) config: Config,
    vm_names: HashSet<String>,
    gave_up: bool,
}

fn syntax(tok: Token) -> Fault {
    match tok.tok {
        Tok::Error(kind) => Fault { loc: tok.loc, kind },
        _ => Fault {
            loc: tok.loc,
            kind: ErrorKind::Syntax,
        },
    }
}

fn fault(loc: &Loc, kind: ErrorKind) -> Fault {
    Fault {
        loc: loc.clone(),
        kind,
    }
}

fn canonical(path: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(path).map_err(|e| io_reason(&e))
}

/// Explicit format wins; else qcow2 if the image starts with its magic; else raw. Only
/// regular files and block devices are opened, so a FIFO cannot block the parser.
fn sniff_format(path: &Path) -> DiskFormat {
    let Ok(meta) = std::fs::metadata(path) else {
        return DiskFormat::Raw;
    };
    if !(meta.is_file() || meta.file_type().is_block_device()) {
        return DiskFormat::Raw;
    }
    let mut magic = [0u8; 4];
    match File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) if &magic == QCOW2_MAGIC => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}

impl<'a> Parser<'a> {
    pub(crate) fn new(lx: Lexer, resolver: &'a dyn Resolver) -> Parser<'a> {
        Parser {
            lx,
            peeked: None,
            last_was_newline: true,
            depth: 0,
            resolver,
            errors: Vec::new(),
            warnings: Vec::new(),
            config: Config::default(),
            vm_names: HashSet::new(),
            gave_up: false,
        }
    }

    pub(crate) fn into_lexer(self) -> Lexer {
        self.lx
    }

    fn peek(&mut self) -> &Tok {
        let lx = &mut self.lx;
        &self.peeked.get_or_insert_with(|| lx.next_token()).tok
    }

    fn peek_loc(&mut self) -> Loc {
        self.peek();
        self.peeked
            .as_ref()
            .map(|t| t.loc.clone())
            .unwrap_or_else(|| Loc {
                file: "".into(),
                line: 0,
            })
    }

    fn bump(&mut self) -> Token {
        let tok = match self.peeked.take() {
            Some(t) => t,
            None => self.lx.next_token(),
        };
        self.last_was_newline = tok.tok == Tok::Newline;
        match tok.tok {
            Tok::Punct(b'{') => self.depth = self.depth.saturating_add(1),
            Tok::Punct(b'}') => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        tok
    }

    fn record(&mut self, f: Fault) {
        if self.gave_up {
            return;
        }
        if self.errors.len() >= MAX_ERRORS {
            self.errors.push(Error::At {
                location: f.loc.to_location(),
                kind: ErrorKind::TooManyErrors,
            });
            self.gave_up = true;
            return;
        }
        self.errors.push(Error::At {
            location: f.loc.to_location(),
            kind: f.kind,
        });
    }

    /// Skips to just after the end of the current line, unless already there.
    fn skip_line(&mut self) {
        if self.last_was_newline {
            return;
        }
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::Newline => {
                    self.bump();
                    return;
                }
                _ => {}
            }
            self.bump();
        }
    }

    fn is_punct(&mut self, c: u8) -> bool {
        *self.peek() == Tok::Punct(c)
    }

    fn is_kw(&mut self, k: Keyword) -> bool {
        *self.peek() == Tok::Keyword(k)
    }

    fn expect_punct(&mut self, c: u8) -> PResult<()> {
        let t = self.bump();
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            Err(syntax(t))
        }
    }

    fn expect_kw(&mut self, k: Keyword) -> PResult<()> {
        let t = self.bump();
        if t.tok == Tok::Keyword(k) {
            Ok(())
        } else {
            Err(syntax(t))
        }
    }

    fn optnl(&mut self) {
        while *self.peek() == Tok::Newline {
            self.bump();
        }
    }

    /// One or more newlines.
    fn nl(&mut self) -> PResult<()> {
        if *self.peek() != Tok::Newline {
            return Err(syntax(self.bump()));
        }
        self.optnl();
        Ok(())
    }

    /// End of a top-level statement.
    fn eol(&mut self) -> PResult<()> {
        // Error recovery inside a block may already have eaten the line's end.
        if self.last_was_newline {
            return Ok(());
        }
        match self.peek() {
            Tok::Newline => {
                self.bump();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(syntax(self.bump())),
        }
    }

    /// A single STRING token.
    fn single_str(&mut self) -> PResult<(String, Loc)> {
        let t = self.bump();
        match t.tok {
            Tok::Str { text, .. } => Ok((text, t.loc)),
            _ => Err(syntax(t)),
        }
    }

    /// `string ::= STRING { STRING }`: adjacent strings joined with nothing between them.
    fn string(&mut self) -> PResult<(String, Loc)> {
        let (mut s, loc) = self.single_str()?;
        while matches!(self.peek(), Tok::Str { .. }) {
            let (more, more_loc) = self.single_str()?;
            if s.len() + more.len() > MAX_STRING_LEN {
                return Err(fault(&more_loc, ErrorKind::StringTooLong));
            }
            s.push_str(&more);
        }
        Ok((s, loc))
    }

    fn number(&mut self) -> PResult<(i64, Loc)> {
        let t = self.bump();
        match t.tok {
            Tok::Num(n) => Ok((n, t.loc)),
            _ => Err(syntax(t)),
        }
    }

    pub(crate) fn run(&mut self) {
        while !self.gave_up {
            match self.peek() {
                Tok::Eof => break,
                Tok::Newline => {
                    self.bump();
                }
                _ => {
                    if let Err(f) = self.statement() {
                        self.record(f);
                        self.skip_line();
                    }
                }
            }
        }
    }

    fn statement(&mut self) -> PResult<()> {
        let loc = self.peek_loc();
        match self.peek().clone() {
            Tok::Keyword(Keyword::Include) => self.include(),
            Tok::Str { .. } => self.macro_definition(),
            Tok::Keyword(Keyword::Local) => self.local(),
            Tok::Keyword(Keyword::Socket) => {
                self.bump();
                self.expect_kw(Keyword::Owner)?;
                let owner = self.owner_id()?;
                self.config.global.socket_owner = SocketOwner {
                    uid: owner.uid,
                    gid: owner.gid.unwrap_or(0),
                };
                self.eol()
            }
            Tok::Keyword(Keyword::Agentx) => self.agentx(),
            Tok::Keyword(Keyword::Staggered) => self.staggered(),
            Tok::Keyword(Keyword::Switch) => self.switch(loc),
            Tok::Keyword(Keyword::Vm) => self.vm(loc),
            _ => Err(syntax(self.bump())),
        }
    }

    fn include(&mut self) -> PResult<()> {
        let loc = self.bump().loc;
        let (path, _) = self.string()?;
        self.eol()?;
        self.lx
            .push_file(&path)
            .map_err(|reason| fault(&loc, ErrorKind::Include { path, reason }))
    }

    fn macro_definition(&mut self) -> PResult<()> {
        let (name, loc) = self.single_str()?;
        self.expect_punct(b'=')?;
        let (value, _) = self.single_str()?;
        if name.chars().any(char::is_whitespace) {
            return Err(fault(&loc, ErrorKind::MacroNameWhitespace));
        }
        self.lx.macros.define(&name, &value, false);
        self.eol()
    }

    fn local(&mut self) -> PResult<()> {
        self.bump();
        let t = self.bump();
        match t.tok {
            Tok::Keyword(Keyword::Inet6) => {
                if self.is_kw(Keyword::Prefix) {
                    self.bump();
                    let (s, loc) = self.single_str()?;
                    let p = validate::parse_prefix6(&s)
                        .map_err(|e| fault(&loc, ErrorKind::LocalInet6Prefix(e)))?;
                    self.config.global.local_inet6 = Some(LocalInet6::Prefix(p));
                } else if self.config.global.local_inet6.is_none() {
                    self.config.global.local_inet6 = Some(LocalInet6::Auto);
                }
            }
            Tok::Keyword(Keyword::Prefix) => {
                let (s, loc) = self.single_str()?;
                self.config.global.local_prefix = validate::parse_prefix4(&s)
                    .map_err(|e| fault(&loc, ErrorKind::LocalPrefix(e)))?;
            }
            _ => return Err(syntax(t)),
        }
        self.eol()
    }

    fn agentx(&mut self) -> PResult<()> {
        self.bump();
        let mut ax = self.config.global.agentx.clone().unwrap_or(AgentX {
            context: None,
            path: DEFAULT_AGENTX_PATH.to_owned(),
        });
        loop {
            if self.is_kw(Keyword::Context) {
                self.bump();
                let (s, loc) = self.single_str()?;
                if s.len() > validate::MAX_AGENTX_CONTEXT {
                    return Err(fault(&loc, ErrorKind::AgentxContextTooLarge));
                }
                ax.context = Some(s);
            } else if self.is_kw(Keyword::Path) {
                self.bump();
                let (s, loc) = self.single_str()?;
                if s.len() > validate::MAX_AGENTX_PATH {
                    return Err(fault(&loc, ErrorKind::AgentxPathTooLarge));
                }
                if !s.starts_with('/') {
                    return Err(fault(&loc, ErrorKind::AgentxPathNotAbsolute));
                }
                ax.path = s;
            } else {
                break;
            }
        }
        self.config.global.agentx = Some(ax);
        self.eol()
    }

    fn staggered(&mut self) -> PResult<()> {
        self.bump();
        self.expect_kw(Keyword::Start)?;
        self.expect_kw(Keyword::Parallel)?;
        let (parallel, ploc) = self.number()?;
        self.expect_kw(Keyword::Delay)?;
        let (delay, dloc) = self.number()?;
        let parallel = u32::try_from(parallel)
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| {
                fault(
                    &ploc,
                    ErrorKind::Staggered {
                        what: "parallel",
                        value: parallel,
                    },
                )
            })?;
        let delay_secs = u32::try_from(delay).map_err(|_| {
            fault(
                &dloc,
                ErrorKind::Staggered {
                    what: "delay",
                    value: delay,
                },
            )
        })?;
        self.config.global.staggered_start = Some(StaggeredStart {
            parallel,
            delay_secs,
        });
        self.eol()
    }

    /// `owner_id`: a NUMBER is a uid; a STRING is `user`, `user:group` or `:group`.
    fn owner_id(&mut self) -> PResult<Owner> {
        let t = self.bump();
        match t.tok {
            Tok::Num(n) => match u32::try_from(n) {
                Ok(uid) if uid != u32::MAX => Ok(Owner { uid, gid: None }),
                _ => Err(fault(&t.loc, ErrorKind::InvalidUid(n))),
            },
            Tok::Str { text, .. } => {
                let (user, group) = match text.split_once(':') {
                    Some((u, g)) => (u, Some(g)),
                    None => (text.as_str(), None),
                };
                let mut owner = Owner { uid: 0, gid: None };
                if !user.is_empty() {
                    owner.uid = self
                        .resolver
                        .uid(user)
                        .ok_or_else(|| fault(&t.loc, ErrorKind::UnknownUser(user.to_owned())))?;
                }
                if let Some(g) = group.filter(|g| !g.is_empty()) {
                    owner.gid = Some(
                        self.resolver
                            .gid(g)
                            .ok_or_else(|| fault(&t.loc, ErrorKind::UnknownGroup(g.to_owned())))?,
                    );
                }
                Ok(owner)
            }
            _ => Err(syntax(t)),
        }
    }

    fn rdomain(&mut self) -> PResult<u8> {
        let (n, loc) = self.number()?;
        if !(0..=validate::MAX_RDOMAIN).contains(&n) {
            return Err(fault(&loc, ErrorKind::InvalidRdomain(n)));
        }
        u8::try_from(n).map_err(|_| fault(&loc, ErrorKind::InvalidRdomain(n)))
    }

    fn group(&mut self) -> PResult<String> {
        let (g, loc) = self.string()?;
        if !validate::valid_group(&g) {
            return Err(fault(&loc, ErrorKind::InvalidGroup(g)));
        }
        Ok(g)
    }

    /// `{ optnl X_l }` with parse.y's separator rule: the first option may be followed by
    /// optional newlines, every later one by at least one newline.
    fn block<F>(&mut self, mut opt: F) -> PResult<()>
    where
        F: FnMut(&mut Self) -> PResult<()>,
    {
        self.expect_punct(b'{')?;
        let inside = self.depth;
        self.optnl();
        let mut first = true;
        loop {
            if self.gave_up {
                return Ok(());
            }
            if *self.peek() == Tok::Eof {
                return Err(syntax(self.bump()));
            }
            if !first && self.is_punct(b'}') {
                self.bump();
                return Ok(());
            }
            let res = opt(self).and_then(|()| {
                if first {
                    self.optnl();
                    Ok(())
                } else {
                    self.nl()
                }
            });
            first = false;
            if let Err(f) = res {
                self.record(f);
                self.skip_line();
                if self.depth < inside {
                    return Ok(());
                }
            }
        }
    }

    fn switch(&mut self, loc: Loc) -> PResult<()> {
        self.bump();
        let (name, _) = self.string()?;
        let mut b = SwitchBuilder {
            interface: None,
            group: None,
            locked: false,
            rdomain: None,
            up: true,
            disabled: false,
        };
        let errors_before = self.errors.len();
        self.block(|p| p.switch_opt(&mut b))?;
        if self.errors.len() > errors_before {
            return self.eol();
        }
        let Some(interface) = b.interface else {
            return Err(fault(&loc, ErrorKind::SwitchMissingInterface(name)));
        };
        if !b.disabled {
            let id = u32::try_from(self.config.switches.len() + 1).unwrap_or(u32::MAX);
            self.config.switches.push(Switch {
                id,
                name,
                interface,
                group: b.group,
                locked: b.locked,
                rdomain: b.rdomain,
                up: b.up,
                location: loc.to_location(),
            });
        }
        self.eol()
    }

    fn switch_opt(&mut self, b: &mut SwitchBuilder) -> PResult<()> {
        let t = self.bump();
        match t.tok {
            Tok::Keyword(Keyword::Enable) => b.disabled = false,
            Tok::Keyword(Keyword::Disable) => b.disabled = true,
            Tok::Keyword(Keyword::Group) => b.group = Some(self.group()?),
            Tok::Keyword(Keyword::Interface) => {
                let (ifname, loc) = self.string()?;
                match validate::switch_ifname(&ifname) {
                    Ok(()) => b.interface = Some(ifname),
                    Err(SwitchIfError::Invalid) => {
                        return Err(fault(&loc, ErrorKind::InvalidSwitchInterface(ifname)))
                    }
                    Err(SwitchIfError::TooLong) => {
                        return Err(fault(&loc, ErrorKind::SwitchInterfaceTooLong))
                    }
                }
            }
            Tok::Keyword(Keyword::Locked) => {
                self.expect_kw(Keyword::Lladdr)?;
                b.locked = true;
            }
            Tok::Keyword(Keyword::Rdomain) => b.rdomain = Some(self.rdomain()?),
            Tok::Keyword(Keyword::Up) => b.up = true,
            Tok::Keyword(Keyword::Down) => b.up = false,
            _ => return Err(syntax(t)),
        }
        Ok(())
    }

    fn vm(&mut self, loc: Loc) -> PResult<()> {
        self.bump();
        let (first, _) = self.string()?;
        let (name, parent) = if self.is_kw(Keyword::Instance) {
            self.bump();
            (self.string()?.0, Some(first))
        } else {
            (first, None)
        };
        let errors_before = self.errors.len();
        if let Some(p) = parent.as_ref().filter(|p| p.len() > validate::MAX_NAME_LEN) {
            self.record(fault(&loc, ErrorKind::ParentNameTooLong(p.clone())));
        } else if name.len() > validate::MAX_NAME_LEN {
            self.record(fault(&loc, ErrorKind::VmNameTooLong));
        }
        let mut b = VmBuilder::default();
        self.block(|p| p.vm_opt(&mut b))?;
        if self.errors.len() > errors_before {
            return self.eol();
        }
        self.finish_vm(name, parent, b, loc)?;
        self.eol()
    }

    /// Checks vmd makes when it registers the VM (`vm_register`), then stores it.
    fn finish_vm(
        &mut self,
        name: String,
        parent: Option<String>,
        mut b: VmBuilder,
        loc: Loc,
    ) -> PResult<()> {
        let failed = |reason: &str| {
            fault(
                &loc,
                ErrorKind::VmFailed {
                    name: name.clone(),
                    reason: reason.to_owned(),
                },
            )
        };
        validate::check_vm_name(&name).map_err(failed)?;
        if let Some(p) = &parent {
            // vmd refuses an instance whose name is taken, where a plain duplicate is
            // skipped.
            if self.vm_names.contains(&name) {
                return Err(failed("vm already exists"));
            }
            // The parent may come from an earlier load, so this is only a warning.
            if !self.vm_names.contains(p) {
                self.warnings.push(Warning::UnknownParent {
                    location: loc.to_location(),
                    name: name.clone(),
                    parent: p.clone(),
                });
            }
        } else {
            if b.boot.is_none() && b.disks.is_empty() && b.cdrom.is_none() {
                return Err(failed("no kernel or disk/cdrom specified"));
            }
            if b.initrd.is_some() && b.boot.is_none() {
                return Err(fault(&loc, ErrorKind::NeedsKernel("initrd")));
            }
            if b.cmdline.is_some() && b.boot.is_none() {
                return Err(fault(&loc, ErrorKind::NeedsKernel("cmdline")));
            }
        }
        if let Some(n) = b.interfaces {
            while b.nics.len() < n {
                b.nics.push(Interface::default());
            }
        }
        if !self.vm_names.insert(name.clone()) {
            self.warnings.push(Warning::DuplicateVm {
                location: loc.to_location(),
                name,
            });
            return Ok(());
        }
        self.config.vms.push(Vm {
            name,
            parent,
            enabled: !b.disabled,
            boot: b.boot,
            boot_device: b.boot_device,
            cdrom: b.cdrom,
            disks: b.disks,
            interfaces: b.nics,
            memory: b.memory,
            owner: b.owner,
            allow_instance: b.allow,
            sev: b.sev,
            cpus: b.cpus,
            initrd: b.initrd,
            cmdline: b.cmdline,
            location: loc.to_location(),
        });
        Ok(())
    }

    fn vm_opt(&mut self, b: &mut VmBuilder) -> PResult<()> {
        let t = self.bump();
        match t.tok {
            Tok::Keyword(Keyword::Enable) => b.disabled = false,
            Tok::Keyword(Keyword::Disable) => b.disabled = true,
            Tok::Keyword(Keyword::Sev) => {
                if b.sev == Sev::Off {
                    b.sev = Sev::Sev;
                }
            }
            Tok::Keyword(Keyword::Seves) => b.sev = Sev::SevEs,
            Tok::Keyword(Keyword::Disk) => self.disk(b)?,
            Tok::Keyword(Keyword::Local) => {
                self.expect_kw(Keyword::Interface)?;
                self.interface(b, true, t.loc)?;
            }
            Tok::Keyword(Keyword::Interface) => self.interface(b, false, t.loc)?,
            Tok::Keyword(Keyword::Boot) => self.boot(b, &t.loc)?,
            Tok::Keyword(Keyword::Cdrom) => {
                let (path, loc) = self.string()?;
                if b.cdrom.is_some() {
                    return Err(fault(&t.loc, ErrorKind::CdromTwice));
                }
                if path.len() >= validate::PATH_MAX {
                    return Err(fault(&loc, ErrorKind::CdromNameTooLong));
                }
                b.cdrom = Some(PathBuf::from(path));
            }
            Tok::Keyword(Keyword::Interfaces) => {
                let (n, loc) = self.number()?;
                if b.interfaces.is_some() {
                    return Err(fault(&t.loc, ErrorKind::InterfacesTwice));
                }
                match usize::try_from(n) {
                    Ok(n) if n <= validate::MAX_NICS => b.interfaces = Some(n),
                    _ => return Err(fault(&loc, ErrorKind::TooManyInterfaces(n))),
                }
            }
            Tok::Keyword(Keyword::Memory) => self.memory(b, &t.loc)?,
            Tok::Keyword(Keyword::Owner) => b.owner = Some(self.owner_id()?),
            Tok::Keyword(Keyword::Allow) => self.allow_instance(b)?,
            Tok::Str {
                text,
                quoted: false,
            } if matches!(text.as_str(), "cpus" | "initrd" | "cmdline") => {
                self.extension(b, &text, &t.loc)?
            }
            _ => return Err(syntax(t)),
        }
        Ok(())
    }

    /// Options OpenBSD has no word for. They are matched as bare words in option position
    /// only, where OpenBSD would fail, so they reserve nothing: `cpus` is still a valid
    /// macro name, disk path or group elsewhere.
    fn extension(&mut self, b: &mut VmBuilder, word: &str, kw: &Loc) -> PResult<()> {
        match word {
            "cpus" => self.cpus(b, kw),
            "initrd" => {
                let (path, loc) = self.string()?;
                if b.initrd.is_some() {
                    return Err(fault(kw, ErrorKind::InitrdTwice));
                }
                let canon = canonical(&path)
                    .map_err(|reason| fault(&loc, ErrorKind::InitrdNotFound { path, reason }))?;
                b.initrd = Some(canon);
                Ok(())
            }
            _ => {
                let (line, loc) = self.string()?;
                if b.cmdline.is_some() {
                    return Err(fault(kw, ErrorKind::CmdlineTwice));
                }
                if line.len() > validate::MAX_CMDLINE_LEN {
                    return Err(fault(&loc, ErrorKind::CmdlineTooLong));
                }
                b.cmdline = Some(line);
                Ok(())
            }
        }
    }

    fn cpus(&mut self, b: &mut VmBuilder, kw: &Loc) -> PResult<()> {
        let (n, loc) = self.number()?;
        if b.cpus.is_some() {
            return Err(fault(kw, ErrorKind::CpusTwice));
        }
        if !(1..=validate::MAX_VCPUS).contains(&n) {
            return Err(fault(&loc, ErrorKind::InvalidCpus(n)));
        }
        b.cpus = u32::try_from(n).ok();
        Ok(())
    }

    fn boot(&mut self, b: &mut VmBuilder, kw: &Loc) -> PResult<()> {
        if self.is_kw(Keyword::Device) {
            self.bump();
            let t = self.bump();
            b.boot_device = Some(match t.tok {
                Tok::Keyword(Keyword::Cdrom) => BootDevice::Cdrom,
                Tok::Keyword(Keyword::Disk) => BootDevice::Disk,
                Tok::Keyword(Keyword::Net) => BootDevice::Net,
                _ => return Err(syntax(t)),
            });
            return Ok(());
        }
        let (path, loc) = self.string()?;
        if b.boot.is_some() {
            return Err(fault(kw, ErrorKind::KernelTwice));
        }
        let canon = canonical(&path)
            .map_err(|reason| fault(&loc, ErrorKind::KernelNotFound { path, reason }))?;
        b.boot = Some(canon);
        Ok(())
    }

    fn disk(&mut self, b: &mut VmBuilder) -> PResult<()> {
        let (path, loc) = self.string()?;
        let explicit = if self.is_kw(Keyword::Format) {
            self.bump();
            let (f, floc) = self.string()?;
            Some(match f.to_ascii_lowercase().as_str() {
                "raw" => DiskFormat::Raw,
                "qcow2" => DiskFormat::Qcow2,
                _ => return Err(fault(&floc, ErrorKind::DiskFormat(f))),
            })
        } else {
            None
        };
        let disk_err = |path: String, reason: String| fault(&loc, ErrorKind::Disk { path, reason });
        if b.disks.len() >= validate::MAX_DISKS {
            return Err(disk_err(path, "too many disks".into()));
        }
        let canon = match canonical(&path) {
            Ok(c) => c,
            Err(reason) => return Err(disk_err(path, reason)),
        };
        if canon.as_os_str().len() >= validate::PATH_MAX {
            return Err(disk_err(path, "disk path too long".into()));
        }
        let format = explicit.unwrap_or_else(|| sniff_format(&canon));
        b.disks.push(Disk {
            path: canon,
            format,
        });
        Ok(())
    }

    fn memory(&mut self, b: &mut VmBuilder, kw: &Loc) -> PResult<()> {
        let t = self.bump();
        let (bytes, text, twice) = match t.tok {
            Tok::Num(n) => (Some(n), n.to_string(), ErrorKind::MemoryTwice),
            Tok::Str { text, .. } => (validate::scan_scaled(&text), text, ErrorKind::ArgumentTwice),
            _ => return Err(syntax(t)),
        };
        if b.memory.is_some() {
            return Err(fault(kw, twice));
        }
        let size_err = |reason: String| {
            fault(
                &t.loc,
                ErrorKind::Size {
                    value: text.clone(),
                    reason,
                },
            )
        };
        let bytes = bytes.ok_or_else(|| size_err("invalid memory size".into()))?;
        let (size, rounded) = validate::memory_size(bytes).map_err(size_err)?;
        if rounded {
            self.warnings.push(Warning::MemoryRounded {
                location: t.loc.to_location(),
                bytes: size,
            });
        }
        b.memory = Some(size);
        Ok(())
    }

    fn starts_iface_opt(&mut self) -> bool {
        matches!(
            self.peek(),
            Tok::Keyword(
                Keyword::Switch
                    | Keyword::Group
                    | Keyword::Locked
                    | Keyword::Lladdr
                    | Keyword::Rdomain
                    | Keyword::Up
                    | Keyword::Down
            )
        )
    }

    /// `[local] interface [NAME] [opts]`, opts in block form (blank or newline separated) or
    /// inline form (a comma may follow the second and later options only).
    fn interface(&mut self, b: &mut VmBuilder, local: bool, kw: Loc) -> PResult<()> {
        let mut nic = Interface {
            local,
            ..Interface::default()
        };
        if matches!(self.peek(), Tok::Str { .. }) {
            let (name, loc) = self.single_str()?;
            if !validate::is_tap_name(&name) {
                return Err(fault(&loc, ErrorKind::InvalidInterface(name)));
            }
            if name.len() >= validate::IF_NAMESIZE {
                return Err(fault(&loc, ErrorKind::InterfaceNameTooLong(name)));
            }
            if name != "tap" {
                nic.name = Some(name);
            }
        }
        if self.is_punct(b'{') {
            self.bump();
            self.optnl();
            loop {
                self.iface_opt(&mut nic)?;
                self.optnl();
                if self.is_punct(b'}') {
                    self.bump();
                    break;
                }
            }
        } else if self.starts_iface_opt() {
            self.iface_opt(&mut nic)?;
            while self.starts_iface_opt() {
                self.iface_opt(&mut nic)?;
                if self.is_punct(b',') {
                    self.bump();
                }
            }
        }
        if b.nics.len() >= validate::MAX_NICS {
            let n = i64::try_from(b.nics.len() + 1).unwrap_or(i64::MAX);
            return Err(fault(&kw, ErrorKind::TooManyInterfaces(n)));
        }
        b.nics.push(nic);
        Ok(())
    }

    fn iface_opt(&mut self, nic: &mut Interface) -> PResult<()> {
        let t = self.bump();
        match t.tok {
            Tok::Keyword(Keyword::Switch) => {
                let (sw, loc) = self.string()?;
                if sw.len() >= MAX_SWITCH_REF {
                    return Err(fault(&loc, ErrorKind::SwitchNameTooLong(sw)));
                }
                nic.switch = Some(sw);
            }
            Tok::Keyword(Keyword::Group) => nic.group = Some(self.group()?),
            Tok::Keyword(Keyword::Locked) => {
                self.expect_kw(Keyword::Lladdr)?;
                nic.locked = true;
                nic.lladdr = self.lladdr()?;
            }
            Tok::Keyword(Keyword::Lladdr) => nic.lladdr = self.lladdr()?,
            Tok::Keyword(Keyword::Rdomain) => nic.rdomain = Some(self.rdomain()?),
            Tok::Keyword(Keyword::Up) => nic.up = true,
            Tok::Keyword(Keyword::Down) => nic.up = false,
            _ => return Err(syntax(t)),
        }
        Ok(())
    }

    /// The optional address after `lladdr`; none means "generate one".
    fn lladdr(&mut self) -> PResult<Option<crate::model::MacAddr>> {
        if !matches!(self.peek(), Tok::Str { .. }) {
            return Ok(None);
        }
        let (s, loc) = self.single_str()?;
        validate::ether_aton(&s)
            .map(Some)
            .ok_or_else(|| fault(&loc, ErrorKind::InvalidAddress(s)))
    }

    fn allow_instance(&mut self, b: &mut VmBuilder) -> PResult<()> {
        self.expect_kw(Keyword::Instance)?;
        let mut perms = b.allow.unwrap_or_default();
        if self.is_punct(b'{') {
            self.bump();
            self.optnl();
            loop {
                self.instance_flag(&mut perms)?;
                if self.is_punct(b',') {
                    self.bump();
                    self.optnl();
                } else if *self.peek() == Tok::Newline {
                    self.optnl();
                    if self.is_punct(b'}') {
                        self.bump();
                        break;
                    }
                } else if self.is_punct(b'}') {
                    self.bump();
                    break;
                } else {
                    return Err(syntax(self.bump()));
                }
            }
        } else {
            self.instance_flag(&mut perms)?;
        }
        b.allow = Some(perms);
        Ok(())
    }

    fn instance_flag(&mut self, perms: &mut InstancePermissions) -> PResult<()> {
        let t = self.bump();
        match t.tok {
            Tok::Keyword(Keyword::Boot) => perms.boot = true,
            Tok::Keyword(Keyword::Memory) => perms.memory = true,
            Tok::Keyword(Keyword::Interface) => perms.interface = true,
            Tok::Keyword(Keyword::Disk) => perms.disk = true,
            Tok::Keyword(Keyword::Cdrom) => perms.cdrom = true,
            Tok::Keyword(Keyword::Instance) => perms.instance = true,
            Tok::Keyword(Keyword::Owner) => perms.owner = Some(self.owner_id()?),
            _ => return Err(syntax(t)),
        }
        Ok(())
    }
}
