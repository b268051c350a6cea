//! Logging for every vmd process: to stderr with `vmd -d`, otherwise to syslog (journald
//! collects it). Verbosity is process-wide and changes at run time (`vmctl log`).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::OnceLock;

/// Messages at or below this level are shown: 0 errors and notices, 1 info (`-v`), 2 debug.
static VERBOSITY: AtomicU8 = AtomicU8::new(0);
static FOREGROUND: AtomicBool = AtomicBool::new(true);
static PREFIX: OnceLock<String> = OnceLock::new();

/// Level of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Always shown.
    Warn = 0,
    /// `-v`.
    Info = 1,
    /// `-vv` / `vmctl log verbose`.
    Debug = 2,
}

/// Set up this process's logging: `prefix` names the process (`vmd`, `control`, `vm/web`).
pub fn init(prefix: &str, foreground: bool, verbosity: u8) {
    let _ = PREFIX.set(prefix.to_string());
    FOREGROUND.store(foreground, Ordering::Relaxed);
    set_verbosity(verbosity);
    if !foreground {
        let ident = CString::new("vmd").unwrap_or_default();
        // openlog keeps the pointer: leak the ident for the process lifetime.
        let ident = Box::leak(ident.into_boxed_c_str());
        // SAFETY: `ident` is a valid NUL-terminated string that lives forever.
        unsafe {
            libc::openlog(
                ident.as_ptr(),
                libc::LOG_PID | libc::LOG_NDELAY,
                libc::LOG_DAEMON,
            )
        };
    }
}

/// Change the verbosity (0..=2).
pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level.min(Level::Debug as u8), Ordering::Relaxed);
}

/// Current verbosity.
pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// Log `msg` at `level`.
pub fn log(level: Level, msg: &str) {
    if level as u8 > verbosity() {
        return;
    }
    let prefix = PREFIX.get().map(String::as_str).unwrap_or("vmd");
    if FOREGROUND.load(Ordering::Relaxed) {
        eprintln!("{prefix}: {msg}");
        return;
    }
    let priority = match level {
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug => libc::LOG_DEBUG,
    };
    let text = CString::new(format!("{prefix}: {msg}").replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: "%s" with one valid C string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
}

/// `warn!`-style helpers.
#[macro_export]
macro_rules! log_warn { ($($a:tt)*) => { $crate::daemon::log::log($crate::daemon::log::Level::Warn, &format!($($a)*)) } }
/// Info level.
#[macro_export]
macro_rules! log_info { ($($a:tt)*) => { $crate::daemon::log::log($crate::daemon::log::Level::Info, &format!($($a)*)) } }
/// Debug level.
#[macro_export]
macro_rules! log_debug { ($($a:tt)*) => { $crate::daemon::log::log($crate::daemon::log::Level::Debug, &format!($($a)*)) } }

/// Forwards the `tracing` events of the libraries (devices, hypervisor) to this log, so a
/// device's warnings — a guest breaking its rings, dropped frames, I/O errors — reach vmd's
/// log like its own messages. Spans are not tracked.
struct TracingBridge;

/// Collects an event's `message` and other fields into one line.
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, "{}={value:?}", field.name())
        };
    }
}

impl tracing::Subscriber for TracingBridge {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR | tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            _ => Level::Debug,
        };
        let mut line = Line(String::new());
        event.record(&mut line);
        log(level, &line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Send the libraries' `tracing` events to this process's log (once per process).
pub fn forward_tracing() {
    let _ = tracing::subscriber::set_global_default(TracingBridge);
}
