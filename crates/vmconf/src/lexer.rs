//! Tokenizer with the byte-level rules of OpenBSD's parse.y: comments, backslash-newline
//! continuation, quoting, NUMBER versus STRING, `$macro` expansion and the stack of included
//! files.
//!
//! Expansion works like the original: the macro value is pushed back onto the input between
//! two markers and lexed again, and `$` is not special while those markers are open, so a
//! value can never expand another macro and expansion depth is one by construction. What can
//! still grow is the number of expansions, which `MAX_EXPANDED_BYTES` bounds.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::rc::Rc;

use crate::error::{ErrorKind, Location};
use crate::limits::{
    MAX_EXPANDED_BYTES, MAX_FILE_SIZE, MAX_INCLUDED_FILES, MAX_INCLUDE_DEPTH, MAX_TOKEN_LEN,
    MAX_TOTAL_INPUT,
};

/// Reserved words. Any other word is a STRING, so these can never be bare names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Add,
    Agentx,
    Allow,
    Boot,
    Cdrom,
    Context,
    Delay,
    Device,
    Disable,
    Disk,
    Down,
    Enable,
    Format,
    Group,
    Id,
    Include,
    Inet6,
    Instance,
    Interface,
    Interfaces,
    Lladdr,
    Local,
    Locked,
    Memory,
    Net,
    Owner,
    Parallel,
    Path,
    Prefix,
    Rdomain,
    Sev,
    Seves,
    Size,
    Socket,
    Staggered,
    Start,
    Switch,
    Up,
    Vm,
}

impl Keyword {
    fn lookup(word: &[u8]) -> Option<Keyword> {
        use Keyword::*;
        Some(match word {
            b"add" => Add,
            b"agentx" => Agentx,
            b"allow" => Allow,
            b"boot" => Boot,
            b"cdrom" => Cdrom,
            b"context" => Context,
            b"delay" => Delay,
            b"device" => Device,
            b"disable" => Disable,
            b"disk" => Disk,
            b"down" => Down,
            b"enable" => Enable,
            b"format" => Format,
            b"group" => Group,
            b"id" => Id,
            b"include" => Include,
            b"inet6" => Inet6,
            b"instance" => Instance,
            b"interface" => Interface,
            b"interfaces" => Interfaces,
            b"lladdr" => Lladdr,
            b"local" => Local,
            b"locked" => Locked,
            b"memory" => Memory,
            b"net" => Net,
            b"owner" => Owner,
            b"parallel" => Parallel,
            b"path" => Path,
            b"prefix" => Prefix,
            b"rdomain" => Rdomain,
            b"sev" => Sev,
            b"seves" => Seves,
            b"size" => Size,
            b"socket" => Socket,
            b"staggered" => Staggered,
            b"start" => Start,
            b"switch" => Switch,
            b"up" => Up,
            b"vm" => Vm,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Keyword(Keyword),
    /// `quoted` lets extension keywords match only bare words, so `"cpus"` stays a string.
    Str {
        text: String,
        quoted: bool,
    },
    Num(i64),
    /// Any other single byte, e.g. `{`, `}`, `=`, `,`.
    Punct(u8),
    Newline,
    Eof,
    /// A lexical error; the lexer has already skipped to the end of the line.
    Error(ErrorKind),
}

/// A token's place; the file name is shared because every token carries one.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub file: Rc<str>,
    pub line: u32,
}

impl Loc {
    pub(crate) fn to_location(&self) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.line,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub loc: Loc,
}

/// One element of push-back input: a byte or an expansion boundary.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Byte(u8),
    StartExpand,
    DoneExpand,
}

struct Frame {
    name: Rc<str>,
    /// Canonical path, for loop detection and relative includes; `None` for in-memory text.
    path: Option<PathBuf>,
    data: Vec<u8>,
    pos: usize,
    line: u32,
    eof_reached: bool,
    unget: Vec<Unit>,
}

struct Macro {
    value: String,
    used: bool,
    /// Defined with `-D`: the file cannot redefine it.
    persist: bool,
}

/// Macros in definition order, so unused-macro warnings come out in a stable order.
#[derive(Default)]
pub(crate) struct Macros {
    index: HashMap<String, usize>,
    entries: Vec<(String, Macro)>,
}

impl Macros {
    pub(crate) fn define(&mut self, name: &str, value: &str, persist: bool) {
        let new = Macro {
            value: value.to_owned(),
            used: false,
            persist,
        };
        match self.index.get(name) {
            Some(&i) => {
                if let Some((_, old)) = self.entries.get_mut(i) {
                    if !old.persist || persist {
                        *old = new;
                    }
                }
            }
            None => {
                self.index.insert(name.to_owned(), self.entries.len());
                self.entries.push((name.to_owned(), new));
            }
        }
    }

    fn expand(&mut self, name: &str) -> Option<&str> {
        let i = *self.index.get(name)?;
        let (_, m) = self.entries.get_mut(i)?;
        m.used = true;
        Some(&m.value)
    }

    pub(crate) fn unused(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(|(_, m)| !m.used)
            .map(|(n, _)| n.as_str())
    }
}

pub(crate) struct Lexer {
    files: Vec<Frame>,
    expanding: bool,
    pub(crate) macros: Macros,
    expanded_bytes: usize,
    total_input: usize,
    files_opened: usize,
}

/// C's `isspace`, which unlike `u8::is_ascii_whitespace` includes vertical tab.
fn is_c_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn allowed_to_end_number(c: u8) -> bool {
    is_c_space(c) || matches!(c, b')' | b',' | b'/' | b'}' | b'=')
}

fn allowed_in_string(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_ascii_punctuation()
            && !matches!(c, b'(' | b')' | b'{' | b'}' | b'!' | b'=' | b'#' | b','))
}

fn starts_string(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'/')
}

/// strerror-style text of an I/O error, without Rust's "(os error N)" suffix.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_owned(),
        None => e.to_string(),
    }
}

impl Lexer {
    pub(crate) fn new(name: &str, data: Vec<u8>, path: Option<PathBuf>) -> Lexer {
        let total_input = data.len();
        Lexer {
            files: vec![Frame {
                name: Rc::from(name),
                path,
                data,
                pos: 0,
                line: 1,
                eof_reached: false,
                unget: Vec::new(),
            }],
            expanding: false,
            macros: Macros::default(),
            expanded_bytes: 0,
            total_input,
            files_opened: 1,
        }
    }

    /// Reads a file for the top level or an include, refusing anything that could hang the
    /// parser (FIFOs, devices) or blow up memory.
    pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
        let file = File::open(path).map_err(|e| io_reason(&e))?;
        let meta = file.metadata().map_err(|e| io_reason(&e))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.len() > MAX_FILE_SIZE as u64 {
            return Err(format!("file too large (limit is {MAX_FILE_SIZE} bytes)"));
        }
        let mut data = Vec::new();
        file.take(MAX_FILE_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| io_reason(&e))?;
        if data.len() > MAX_FILE_SIZE {
            return Err(format!("file too large (limit is {MAX_FILE_SIZE} bytes)"));
        }
        Ok(data)
    }

    /// Makes `given` the current input, as `include` does. Relative paths are taken from the
    /// directory of the including file.
    pub(crate) fn push_file(&mut self, given: &str) -> Result<(), String> {
        if self.files.len() >= MAX_INCLUDE_DEPTH {
            return Err(format!(
                "includes nested too deeply (limit is {MAX_INCLUDE_DEPTH})"
            ));
        }
        if self.files_opened >= MAX_INCLUDED_FILES {
            return Err(format!(
                "too many included files (limit is {MAX_INCLUDED_FILES})"
            ));
        }
        let mut path = PathBuf::from(given);
        if path.is_relative() {
            if let Some(dir) = self
                .files
                .last()
                .and_then(|f| f.path.as_deref())
                .and_then(Path::parent)
            {
                path = dir.join(path);
            }
        }
        let canon = std::fs::canonicalize(&path).map_err(|e| io_reason(&e))?;
        if self.files.iter().any(|f| f.path.as_deref() == Some(&canon)) {
            return Err("include loop".into());
        }
        let data = Self::read_limited(&canon)?;
        if self.total_input + data.len() > MAX_TOTAL_INPUT {
            return Err(format!(
                "configuration too large (limit is {MAX_TOTAL_INPUT} bytes in all files)"
            ));
        }
        self.total_input += data.len();
        self.files_opened += 1;
        self.files.push(Frame {
            name: Rc::from(given),
            path: Some(canon),
            data,
            pos: 0,
            line: 1,
            eof_reached: false,
            unget: Vec::new(),
        });
        Ok(())
    }

    fn location(&self) -> Loc {
        match self.files.last() {
            Some(f) => Loc {
                file: Rc::clone(&f.name),
                line: f.line,
            },
            None => Loc {
                file: Rc::from(""),
                line: 0,
            },
        }
    }

    fn bump_line(&mut self) {
        if let Some(f) = self.files.last_mut() {
            f.line = f.line.saturating_add(1);
        }
    }

    fn igetc(&mut self) -> Option<u8> {
        loop {
            let f = self.files.last_mut()?;
            let unit = match f.unget.pop() {
                Some(u) => u,
                None => {
                    let b = *f.data.get(f.pos)?;
                    f.pos += 1;
                    Unit::Byte(b)
                }
            };
            match unit {
                Unit::StartExpand => self.expanding = true,
                Unit::DoneExpand => self.expanding = false,
                Unit::Byte(b) => return Some(b),
            }
        }
    }

    fn lungetc(&mut self, c: Option<u8>) {
        if let (Some(b), Some(f)) = (c, self.files.last_mut()) {
            f.unget.push(Unit::Byte(b));
        }
    }

    /// Next byte inside quotes: no continuation handling, and the end of a file is an error.
    fn lgetc_quoted(&mut self) -> Result<u8, ErrorKind> {
        self.igetc().ok_or(ErrorKind::UnterminatedQuote)
    }

    /// Next byte outside quotes. A backslash joins lines or escapes the next byte; the end
    /// of a file first yields a newline (so a last line without one still ends a statement),
    /// then continues with the including file.
    fn lgetc(&mut self) -> Option<u8> {
        loop {
            let mut c = self.igetc();
            while c == Some(b'\\') {
                let next = self.igetc();
                if next != Some(b'\n') {
                    c = next;
                    break;
                }
                self.bump_line();
                c = self.igetc();
            }
            if c.is_some() {
                return c;
            }
            let f = self.files.last_mut()?;
            if !f.eof_reached {
                f.eof_reached = true;
                return Some(b'\n');
            }
            if self.files.len() == 1 {
                return None;
            }
            self.files.pop();
        }
    }

    /// Skips the rest of the line after a lexical error, leaving the newline to be read.
    fn findeol(&mut self) {
        loop {
            match self.lgetc() {
                Some(b'\n') => {
                    self.lungetc(Some(b'\n'));
                    return;
                }
                None => return,
                Some(_) => {}
            }
        }
    }

    fn error(&mut self, kind: ErrorKind, loc: Loc) -> Token {
        self.findeol();
        Token {
            tok: Tok::Error(kind),
            loc,
        }
    }

    pub(crate) fn next_token(&mut self) -> Token {
        loop {
            let mut c = self.lgetc();
            while matches!(c, Some(b' ' | b'\t')) {
                c = self.lgetc();
            }
            let loc = self.location();
            if c == Some(b'#') {
                while !matches!(c, Some(b'\n') | None) {
                    c = self.lgetc();
                }
            }
            if c == Some(b'$') && !self.expanding {
                match self.expand_macro() {
                    Ok(()) => continue,
                    Err(kind) => return self.error(kind, loc),
                }
            }
            return match c {
                Some(q @ (b'"' | b'\'')) => self.quoted(q, loc),
                Some(b) if b == b'-' || b.is_ascii_digit() => self.number_or_string(b, loc),
                Some(b) if starts_string(b) => self.bare_word(b, loc),
                Some(b'\n') => {
                    self.bump_line();
                    Token {
                        tok: Tok::Newline,
                        loc,
                    }
                }
                Some(b) => Token {
                    tok: Tok::Punct(b),
                    loc,
                },
                None => Token { tok: Tok::Eof, loc },
            };
        }
    }

    fn expand_macro(&mut self) -> Result<(), ErrorKind> {
        let mut name = Vec::new();
        loop {
            let c = self.lgetc();
            match c {
                Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {
                    if name.len() >= MAX_TOKEN_LEN {
                        return Err(ErrorKind::StringTooLong);
                    }
                    name.push(b);
                }
                _ => {
                    self.lungetc(c);
                    break;
                }
            }
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let value = match self.macros.expand(&name) {
            Some(v) => v.as_bytes().to_vec(),
            None => return Err(ErrorKind::MacroNotDefined(name)),
        };
        self.expanded_bytes = self.expanded_bytes.saturating_add(value.len());
        if self.expanded_bytes > MAX_EXPANDED_BYTES {
            return Err(ErrorKind::ExpansionLimit(MAX_EXPANDED_BYTES));
        }
        if let Some(f) = self.files.last_mut() {
            f.unget.push(Unit::DoneExpand);
            f.unget.extend(value.iter().rev().map(|&b| Unit::Byte(b)));
            f.unget.push(Unit::StartExpand);
        }
        Ok(())
    }

    fn quoted(&mut self, quote: u8, loc: Loc) -> Token {
        let mut buf = Vec::new();
        loop {
            let mut c = match self.lgetc_quoted() {
                Ok(c) => c,
                Err(kind) => return self.error(kind, loc),
            };
            if c == b'\n' {
                self.bump_line();
                continue;
            } else if c == b'\\' {
                let next = match self.lgetc_quoted() {
                    Ok(n) => n,
                    Err(kind) => return self.error(kind, loc),
                };
                if next == quote || next == b' ' || next == b'\t' {
                    c = next;
                } else if next == b'\n' {
                    self.bump_line();
                    continue;
                } else {
                    self.lungetc(Some(next));
                }
            } else if c == quote {
                break;
            } else if c == 0 {
                return self.error(ErrorKind::Syntax, loc);
            }
            if buf.len() + 1 >= MAX_TOKEN_LEN {
                return self.error(ErrorKind::StringTooLong, loc);
            }
            buf.push(c);
        }
        Token {
            tok: Tok::Str {
                text: String::from_utf8_lossy(&buf).into_owned(),
                quoted: true,
            },
            loc,
        }
    }

    fn number_or_string(&mut self, first: u8, loc: Loc) -> Token {
        let mut buf = vec![first];
        let mut c = self.lgetc();
        while let Some(d) = c.filter(u8::is_ascii_digit) {
            if buf.len() >= MAX_TOKEN_LEN {
                return self.error(ErrorKind::StringTooLong, loc);
            }
            buf.push(d);
            c = self.lgetc();
        }
        self.lungetc(c);
        if buf != b"-" && c.is_none_or(allowed_to_end_number) {
            let text = String::from_utf8_lossy(&buf).into_owned();
            return match text.parse::<i64>() {
                Ok(n) => Token {
                    tok: Tok::Num(n),
                    loc,
                },
                Err(_) => {
                    let reason = if first == b'-' {
                        "too small"
                    } else {
                        "too large"
                    };
                    self.error(ErrorKind::InvalidNumber { text, reason }, loc)
                }
            };
        }
        // Not a number after all (e.g. `512M`): give back all but the first byte and lex
        // the whole thing as a word, as parse.y does.
        for &b in buf.iter().skip(1).rev() {
            self.lungetc(Some(b));
        }
        if first == b'-' {
            return Token {
                tok: Tok::Punct(b'-'),
                loc,
            };
        }
        self.bare_word(first, loc)
    }

    fn bare_word(&mut self, first: u8, loc: Loc) -> Token {
        let mut buf = vec![first];
        let mut c = self.lgetc();
        while let Some(b) = c.filter(|&b| allowed_in_string(b)) {
            if buf.len() >= MAX_TOKEN_LEN {
                return self.error(ErrorKind::StringTooLong, loc);
            }
            buf.push(b);
            c = self.lgetc();
        }
        self.lungetc(c);
        let tok = match Keyword::lookup(&buf) {
            Some(k) => Tok::Keyword(k),
            None => Tok::Str {
                text: String::from_utf8_lossy(&buf).into_owned(),
                quoted: false,
            },
        };
        Token { tok, loc }
    }
}
