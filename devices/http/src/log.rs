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

use crate::date::{HTTP_DATE_LEN, format_clf_date, http_date};

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

/// How long the site's time runs on the executor's monotonic readings before it reads the
/// wall clock again, so that a host clock that was stepped (or slews) is followed.
pub const RESYNC: Duration = Duration::from_secs(60);

/// The site's time for `Date` headers and the access log, as nginx caches its time, but
/// without a timer: the wall clock is read once, then advanced by the executor's reading of
/// the monotonic clock for the current turn, which the executor takes anyway (see
/// [`compose_devices::executor::turn_now`]). A response reads no clock (on hvt a wall-clock
/// read is an exit to the tender) and an idle site has nothing to wake up for; the wall
/// clock is read again when the last reading is [`RESYNC`] old, or if the monotonic
/// reading went backwards.
pub struct SiteTime<'a> {
    clock: &'a dyn WallClock,
    /// The last second formatted for `Date`, and its text.
    formatted: Cell<(u64, [u8; HTTP_DATE_LEN])>,
    /// The last wall-clock reading (ns since the Unix epoch) and the turn's monotonic
    /// reading (ns since boot) when it was taken.
    anchor: Cell<Option<(u64, u64)>>,
}

impl<'a> SiteTime<'a> {
    /// The time from `clock`, read at the first use.
    pub fn new(clock: &'a dyn WallClock) -> SiteTime<'a> {
        SiteTime {
            clock,
            formatted: Cell::new((u64::MAX, [b' '; HTTP_DATE_LEN])),
            anchor: Cell::new(None),
        }
    }

    /// The `Date` header's value now, formatted once a second.
    pub fn http_date(&self) -> HttpDate {
        let secs = self.secs();
        let (at, text) = self.formatted.get();
        if at == secs {
            return HttpDate(text);
        }
        let text = http_date(secs);
        self.formatted.set((secs, text));
        HttpDate(text)
    }

    /// Seconds since the Unix epoch, now (as of the executor's current turn).
    pub fn secs(&self) -> u64 {
        let mono = compose_devices::executor::turn_now().as_nanos();
        let mono = u64::try_from(mono).unwrap_or(u64::MAX);
        let resync = RESYNC.as_nanos() as u64;
        let wall_ns = match self.anchor.get() {
            Some((wall, at)) if mono >= at && mono - at < resync => wall + (mono - at),
            _ => {
                let wall = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
                self.anchor.set(Some((wall, mono)));
                wall
            }
        };
        wall_ns / 1_000_000_000
    }
}

/// An IMF-fixdate for a `Date` header (see [`crate::date::format_http_date`]), held
/// without an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpDate([u8; HTTP_DATE_LEN]);

impl HttpDate {
    /// The text: `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn as_str(&self) -> &str {
        // Only `http_date` makes these bytes, and it writes ASCII.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// What a connection reports to: the time for `Date` headers and the access log (a
/// [`SiteTime`]), and the console the access log goes to. [`Observer::none`] reports
/// nothing (no `Date` header, no log).
#[derive(Clone, Copy)]
pub struct Observer<'a> {
    now: Option<&'a SiteTime<'a>>,
    access_log: Option<&'a dyn Console>,
}

impl<'a> Observer<'a> {
    /// No clock and no access log.
    pub const fn none() -> Observer<'static> {
        Observer {
            now: None,
            access_log: None,
        }
    }

    /// `Date` headers from `time`, and the access log on `console` if `access_log`.
    pub fn new(time: &'a SiteTime<'a>, console: &'a dyn Console, access_log: bool) -> Observer<'a> {
        Observer {
            now: Some(time),
            access_log: access_log.then_some(console),
        }
    }

    /// Seconds since the Unix epoch.
    fn now(&self) -> Option<u64> {
        self.now.map(SiteTime::secs)
    }

    /// The `Date` header's value for a response sent now.
    pub fn date(&self) -> Option<String> {
        self.http_date().map(|d| String::from(d.as_str()))
    }

    /// [`Observer::date`], without an allocation.
    pub fn http_date(&self) -> Option<HttpDate> {
        self.now.map(SiteTime::http_date)
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
        let clock = crate::testing::FixedClock(971_186_136);
        let now = SiteTime::new(&clock);
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
        let clock = crate::testing::FixedClock(0);
        let now = SiteTime::new(&clock);
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
    fn the_time_follows_the_wall_clock_without_a_timer() {
        use crate::testing::block_on;
        use compose_devices::executor::{pending_timers, turn_now};
        struct Moving(Cell<u64>, Cell<u32>);
        impl WallClock for Moving {
            fn now(&self) -> Duration {
                self.1.set(self.1.get() + 1);
                Duration::from_secs(self.0.get())
            }
        }
        let clock = Moving(Cell::new(1_700_000_000), Cell::new(0));
        let time = SiteTime::new(&clock);
        block_on(async {
            assert_eq!(time.secs(), 1_700_000_000);
            assert_eq!(clock.1.get(), 1, "read once");
            // Within a turn and over turns, the executor's readings advance it: no read.
            let start = turn_now();
            while turn_now() - start < Duration::from_millis(1100) {
                compose_devices::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(time.secs(), 1_700_000_001);
            assert_eq!(clock.1.get(), 1, "still read once");
            // Nothing is left waking the executor up.
            assert_eq!(pending_timers(), 0);
        });
        // A stepped host clock shows once the reading is RESYNC old (forced here).
        clock.0.set(1_800_000_000);
        time.anchor.set(Some((0, u64::MAX)));
        block_on(async { assert_eq!(time.secs(), 1_800_000_000) });
        assert_eq!(clock.1.get(), 2);
    }
}
