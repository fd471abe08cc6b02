//! Log levels per source, set at boot and changed at run time (by the `monitoring`
//! device's endpoint), as mirage's `--logs=SRC:LEVEL` does.
//!
//! A device asks [`enabled`] before it formats a message; the levels are atomics, so a
//! level changed at run time takes effect at the next message.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// How much a source says, from least to most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Only what stops the device.
    Error = 0,
    /// Also what goes wrong without stopping it.
    Warn = 1,
    /// Also starts and stops. The default.
    Info = 2,
    /// Also every connection and event.
    Debug = 3,
}

impl Level {
    /// The names [`Level::parse`] accepts, least to most.
    pub const NAMES: &'static str = "error, warn, info or debug";

    /// The level named `name` (case-insensitive; `warning` is `warn`).
    pub fn parse(name: &str) -> Option<Level> {
        let name = name.trim();
        [
            ("error", Level::Error),
            ("warn", Level::Warn),
            ("warning", Level::Warn),
            ("info", Level::Info),
            ("debug", Level::Debug),
        ]
        .into_iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, l)| l)
    }

    /// The level's name, as [`Level::parse`] reads it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    const fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            _ => Level::Debug,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Source {
    /// The network stack (netstack on Solo5 and xen, the host's sockets on unix).
    Stack = 0,
    /// The HTTP server.
    Http = 1,
    /// The TLS layer.
    Tls = 2,
    /// The monitoring device itself.
    Monitoring = 3,
}

impl Source {
    /// Every source, in the order [`Source::name`] lists them.
    pub const ALL: [Source; 4] = [Source::Stack, Source::Http, Source::Tls, Source::Monitoring];

    /// The source's name in boot arguments and on the monitoring endpoint.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Stack => "stack",
            Source::Http => "http",
            Source::Tls => "tls",
            Source::Monitoring => "monitoring",
        }
    }

    /// The source named `name` (case-insensitive).
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL
            .into_iter()
            .find(|s| name.trim().eq_ignore_ascii_case(s.name()))
    }
}

static LEVELS: [AtomicU8; 4] = [
    AtomicU8::new(Level::Info as u8),
    AtomicU8::new(Level::Info as u8),
    AtomicU8::new(Level::Info as u8),
    AtomicU8::new(Level::Info as u8),
];

/// The level of `source` now.
#[inline]
pub fn level(source: Source) -> Level {
    Level::from_u8(LEVELS[source as usize].load(Ordering::Relaxed))
}

/// Sets the level of `source`.
pub fn set_level(source: Source, level: Level) {
    LEVELS[source as usize].store(level as u8, Ordering::Relaxed);
}

/// Sources whose level [`apply`] set (a `--logs` boot argument, the monitoring endpoint):
/// a device's own default ([`set_initial`]) no longer changes them.
static SET: [core::sync::atomic::AtomicBool; 4] = [
    core::sync::atomic::AtomicBool::new(false),
    core::sync::atomic::AtomicBool::new(false),
    core::sync::atomic::AtomicBool::new(false),
    core::sync::atomic::AtomicBool::new(false),
];

/// Sets the level of `source` unless [`apply`] has set it: a device's own setting (the
/// site's `log-level`) is the default that `--logs=http:debug` overrides, whichever
/// device starts first.
pub fn set_initial(source: Source, level: Level) {
    if !SET[source as usize].load(Ordering::Relaxed) {
        set_level(source, level);
    }
}

/// Whether `source` shows messages of `at`.
#[inline]
pub fn enabled(source: Source, at: Level) -> bool {
    at <= level(source)
}

/// Why [`apply`] refused a setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingError {
    /// The source is none of [`Source::ALL`].
    Source(alloc::string::String),
    /// The level is none of [`Level::NAMES`].
    Level(alloc::string::String),
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingError::Source(s) => {
                write!(
                    f,
                    "unknown log source {s:?} (expected stack, http, tls or monitoring)"
                )
            }
            SettingError::Level(l) => {
                write!(f, "unknown log level {l:?} (expected {})", Level::NAMES)
            }
        }
    }
}

/// Checks a setting as [`apply`] reads it, changing nothing.
pub fn check(setting: &str) -> Result<(), SettingError> {
    parse(setting).map(drop)
}

/// Applies a setting such as `debug` (every source), `http:debug` or
/// `stack:warn,http:debug`; nothing is changed if any part is wrong.
pub fn apply(setting: &str) -> Result<(), SettingError> {
    let parsed = parse(setting)?;
    let set = |s: Source, level| {
        SET[s as usize].store(true, Ordering::Relaxed);
        set_level(s, level);
    };
    for (source, level) in parsed {
        match source {
            Some(s) => set(s, level),
            None => Source::ALL.into_iter().for_each(|s| set(s, level)),
        }
    }
    Ok(())
}

/// The parts of a setting: each a source (`None`: every source) and a level.
fn parse(setting: &str) -> Result<alloc::vec::Vec<(Option<Source>, Level)>, SettingError> {
    let mut parsed: alloc::vec::Vec<(Option<Source>, Level)> = alloc::vec::Vec::new();
    for part in setting.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (source, level) = match part.split_once(':') {
            Some((s, l)) => (
                Some(Source::parse(s).ok_or_else(|| SettingError::Source(s.into()))?),
                l,
            ),
            None => (None, part),
        };
        let level = Level::parse(level).ok_or_else(|| SettingError::Level(level.into()))?;
        parsed.push((source, level));
    }
    Ok(parsed)
}

/// Where [`log`] writes: a console a device registered with [`set_console`] (the
/// `monitoring` device registers its own), else nowhere.
static CONSOLE: spin::Mutex<Option<&'static (dyn crate::console::Console + Sync)>> =
    spin::Mutex::new(None);

/// Makes `console` the one [`log`] writes to (devices without a console of their own, such
/// as the network stack, log through it).
pub fn set_console(console: &'static (dyn crate::console::Console + Sync)) {
    *CONSOLE.lock() = Some(console);
}

/// Writes `SOURCE: MESSAGE` on the registered console if `source` shows `at`. Callers
/// that format should ask [`enabled`] first, so that a message not shown costs nothing:
/// `if logs::enabled(Source::Stack, Level::Debug) { logs::log(...) }`.
pub fn log(source: Source, at: Level, message: fmt::Arguments<'_>) {
    if !enabled(source, at) {
        return;
    }
    let console = *CONSOLE.lock();
    if let Some(console) = console {
        let mut line = alloc::string::String::new();
        let _ = fmt::write(&mut line, format_args!("{}: {message}", source.name()));
        console.log(&line);
    }
}

/// The levels of every source, as `stack:info,http:debug,tls:info,monitoring:info` (what
/// [`apply`] reads back).
pub fn describe() -> alloc::string::String {
    let mut out = alloc::string::String::new();
    for (i, s) in Source::ALL.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s.name());
        out.push(':');
        out.push_str(level(s).name());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_whole_or_not_at_all() {
        apply("stack:warn,tls:debug").unwrap();
        assert_eq!(level(Source::Stack), Level::Warn);
        assert_eq!(level(Source::Tls), Level::Debug);
        assert!(apply("http:debug,nope:info").is_err());
        assert_eq!(level(Source::Http), Level::Info);
        assert!(matches!(apply("loud"), Err(SettingError::Level(_))));
        apply("info").unwrap();
        assert!(Source::ALL.iter().all(|s| level(*s) == Level::Info));
        assert!(enabled(Source::Http, Level::Warn));
        assert!(!enabled(Source::Http, Level::Debug));
        // A device's own default does not undo a setting.
        set_initial(Source::Http, Level::Error);
        assert_eq!(level(Source::Http), Level::Info);
        assert_eq!(describe(), "stack:info,http:info,tls:info,monitoring:info");
    }
}
