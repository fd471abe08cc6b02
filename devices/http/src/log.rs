//! What the server tells the operator: its messages, filtered by a [`LogLevel`], and the
//! access log, one line per response in the Common Log Format.
//!
//! An access log line is `CLIENT - - [TIME] "REQUEST LINE" STATUS BYTES`, as Apache and
//! nginx write it: `127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 2326`.
//! `BYTES` counts the body sent (`-` for none, or when the response could not be sent
//! whole); the request line is written as received, with `"`, `\` and bytes outside
//! printable ASCII escaped as `\xHH` (so a client cannot forge lines), and `-` when the
//! client sent no line at all.

use alloc::string::String;
use core::cell::Cell;
use core::fmt::{self, Write as _};
use core::net::SocketAddrV4;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::time::WallClock;

use crate::date::{format_clf_date, format_http_date};

/// How much the server says, from least to most: the levels of
/// `compose_devices::logs`, where the server's messages are the source `http` (so that
/// the monitoring device can change them at run time). `error` shows only what stops the
/// server (it cannot listen), `warn` adds failed accepts, `info` (the default) the start
/// (`site: listening on port PORT`), `debug` every connection accepted.
pub use compose_devices::logs::Level as LogLevel;

/// The level named `name` (`error`, `warn`, `info`, `debug`; case-insensitive).
pub fn parse_level(name: &str) -> Result<LogLevel, UnknownLevel> {
    LogLevel::parse(name).ok_or_else(|| UnknownLevel(String::from(name.trim())))
}

/// A log level name that is none of [`LogLevel::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownLevel(pub String);

impl fmt::Display for UnknownLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log level {:?} (expected {})",
            self.0,
            LogLevel::NAMES
        )
    }
}

/// What a connection reports to: the time for `Date` headers and the access log, and the
/// console the access log goes to. [`Observer::none`] reports nothing (no `Date` header,
/// no log).
///
/// The time is a cell of seconds since the Unix epoch that [`keep_time`] refreshes from
/// the wall clock once a second, as nginx caches its time: a response reads no clock
/// (on hvt a wall-clock read is an exit to the tender).
#[derive(Clone, Copy)]
pub struct Observer<'a> {
    now: Option<&'a Cell<u64>>,
    access_log: Option<&'a dyn Console>,
}

/// Keeps `now` at the wall clock's seconds since the Unix epoch, forever: reads it, then
/// sleeps a second.
pub async fn keep_time<W: WallClock>(clock: &W, now: &Cell<u64>) {
    loop {
        now.set(clock.now().as_secs());
        compose_devices::sleep(Duration::from_secs(1)).await;
    }
}

impl<'a> Observer<'a> {
    /// No clock and no access log.
    pub const fn none() -> Observer<'static> {
        Observer {
            now: None,
            access_log: None,
        }
    }

    /// `Date` headers from `now` (seconds since the Unix epoch, see [`keep_time`]), and
    /// the access log on `console` if `access_log`.
    pub fn new(now: &'a Cell<u64>, console: &'a dyn Console, access_log: bool) -> Observer<'a> {
        Observer {
            now: Some(now),
            access_log: access_log.then_some(console),
        }
    }

    /// Seconds since the Unix epoch.
    fn now(&self) -> Option<u64> {
        self.now.map(Cell::get)
    }

    /// The `Date` header's value for a response sent now.
    pub fn date(&self) -> Option<String> {
        self.now().map(format_http_date)
    }

    /// Whether responses are logged.
    pub fn logs_access(&self) -> bool {
        self.access_log.is_some()
    }

    /// The request line at the start of `head`, escaped for the log; `None` if the access
    /// log is off (so that nothing is copied then).
    pub fn request_line(&self, head: &[u8]) -> Option<String> {
        self.access_log?;
        // Empty lines before the request line are allowed (RFC 9112 §2.2) and skipped.
        let start = head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(head.len());
        let head = &head[start..];
        let line = &head[..head.iter().position(|&b| b == b'\n').unwrap_or(head.len())];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut out = String::with_capacity(line.len());
        for &b in line {
            match b {
                b'"' | b'\\' => {
                    let _ = write!(out, "\\x{b:02X}");
                }
                0x20..=0x7e => out.push(char::from(b)),
                _ => {
                    let _ = write!(out, "\\x{b:02X}");
                }
            }
        }
        Some(out)
    }

    /// Logs one response to `peer`: its request line (from [`Observer::request_line`]),
    /// its status and the body bytes sent (`None`: nothing, or not all of it).
    pub fn served(&self, peer: SocketAddrV4, line: Option<&str>, status: u16, body: Option<u64>) {
        let Some(console) = self.access_log else {
            return;
        };
        let mut s = String::with_capacity(96 + line.map_or(0, str::len));
        let _ = write!(s, "{} - - [", peer.ip());
        match self.now() {
            Some(secs) => s.push_str(&format_clf_date(secs)),
            None => s.push('-'),
        }
        let line = match line {
            Some(l) if !l.is_empty() => l,
            _ => "-",
        };
        let _ = write!(s, "] \"{line}\" {status} ");
        match body {
            Some(n) if n > 0 => {
                let _ = write!(s, "{n}");
            }
            _ => s.push('-'),
        }
        console.log(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemConsole;
    use core::net::Ipv4Addr;
    use core::time::Duration;
    use std::string::ToString;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(parse_level("debug"), Ok(LogLevel::Debug));
        assert_eq!(parse_level("WARN"), Ok(LogLevel::Warn));
        assert_eq!(parse_level(" info "), Ok(LogLevel::Info));
        assert_eq!(parse_level("error"), Ok(LogLevel::Error));
        assert!(LogLevel::Error < LogLevel::Warn && LogLevel::Info < LogLevel::Debug);
        let e = parse_level("loud").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown log level \"loud\" (expected error, warn, info or debug)"
        );
    }

    #[test]
    fn access_log_lines_are_common_log_format() {
        let console = MemConsole::default();
        let now = Cell::new(971_186_136);
        let obs = Observer::new(&now, &console, true);
        let peer = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 7), 5555);
        let line = obs.request_line(b"\r\nGET /a?b HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(line.as_deref(), Some("GET /a?b HTTP/1.1"));
        obs.served(peer, line.as_deref(), 200, Some(2326));
        let line = obs.request_line(b"GET /\"x\\ y\x01\xff HTTP/1.1\r\n");
        obs.served(peer, line.as_deref(), 400, Some(0));
        obs.served(peer, None, 408, None);
        assert_eq!(
            std::string::String::from_utf8_lossy(&console.0.borrow()),
            "10.0.0.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b HTTP/1.1\" 200 2326\n\
             10.0.0.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /\\x22x\\x5C y\\x01\\xFF HTTP/1.1\" 400 -\n\
             10.0.0.7 - - [10/Oct/2000:13:55:36 +0000] \"-\" 408 -\n"
        );
        assert_eq!(obs.date().as_deref(), Some("Tue, 10 Oct 2000 13:55:36 GMT"));
    }

    #[test]
    fn without_access_log_nothing_is_copied_or_written() {
        let console = MemConsole::default();
        let now = Cell::new(0);
        let obs = Observer::new(&now, &console, false);
        assert_eq!(obs.request_line(b"GET / HTTP/1.1\r\n"), None);
        obs.served(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
            None,
            200,
            Some(1),
        );
        assert!(console.0.borrow().is_empty());
        assert!(obs.date().is_some());
        assert_eq!(Observer::none().date(), None);
    }

    #[test]
    fn the_time_is_kept_from_the_wall_clock() {
        use crate::testing::{FixedClock, block_on};
        let now = Cell::new(0);
        let clock = FixedClock(1_700_000_000);
        block_on(async {
            let _ = compose_devices::executor::timeout(
                Duration::from_millis(10),
                keep_time(&clock, &now),
            )
            .await;
        });
        assert_eq!(now.get(), 1_700_000_000);
    }
}
