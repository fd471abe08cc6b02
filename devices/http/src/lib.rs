//! An HTTP/1.1 server for compose unikernels, and the static-site application built on it.
//!
//! [`serve_site`] listens on a port of any [`Tcp`] device and serves the values of a
//! read-only key-value store ([`Kv`], typically the `assets` device) as a website:
//!
//! - GET and HEAD (405 for other methods), persistent connections and pipelining;
//! - `index.html` for directories, and a 301 adding the slash to `/dir`;
//! - `Content-Type` from the store (decided when the site was packed);
//! - `ETag` from each value's SHA-256, `Last-Modified` from the store's time
//!   (`SOURCE_DATE_EPOCH`), and `If-None-Match` / `If-Modified-Since` → 304;
//! - single byte ranges → 206 (416 if unsatisfiable), with `If-Range`;
//! - precompressed variants chosen by `Accept-Encoding` (zstd, then gzip, by q-value),
//!   with `Content-Encoding` and `Vary: Accept-Encoding`; ranges are always served from
//!   the original bytes;
//! - 404 (the site's own `404.html` if it has one), 400, 411, 413, 414, 431 and 505, each
//!   with a one-line body (400 for any malformed request line, 505 only for a well-formed
//!   one naming another version);
//! - a `Date` header on every response, from the wall clock;
//! - an access log in the Common Log Format and the server's messages by [`LogLevel`]
//!   ([`log`]), and a message naming the address and port when listening fails;
//! - limits on the request line, the header section and the number of header fields, on
//!   request bodies, on the time to receive a request and to make progress sending a
//!   response, and on simultaneous connections ([`SiteConfig`]).
//!
//! Requests are parsed by `httparse`. Each connection runs as a task of its own; whatever
//! the client does (malformed input, going away mid-request or mid-response, stalling),
//! the connection ends and releases everything it holds, which [`open_connections`] lets
//! tests observe. The server writes values held in memory (the `embed` backend) straight
//! from the image, without copying.
//!
//! The protocol logic, [`request::parse_request`] and [`response::respond`], does no I/O,
//! so it can be exercised with byte strings.
#![no_std]
#![allow(async_fn_in_trait)]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod conn;
pub mod date;
pub mod log;
pub mod request;
pub mod response;
#[cfg(test)]
mod testing;

pub use conn::{open_connections, serve_connection, serve_connection_with};
pub use log::{LogLevel, Observer, UnknownLevel, keep_time};

use alloc::format;
use alloc::rc::Rc;
use core::cell::Cell;
use core::fmt;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::kv::Kv;
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};
use compose_devices::time::WallClock;
use compose_devices::{sleep, spawn};

/// Limits and timeouts of the site server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteConfig {
    /// Longest request line (method, target, version), in bytes; longer gets 414.
    pub max_request_line: usize,
    /// Largest header section (after the request line), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most header fields; more gets 431.
    pub max_headers: usize,
    /// Largest request body the server reads past (and ignores); larger gets 413.
    pub max_body: u64,
    /// How long a connection may take to deliver a complete request head, counted from
    /// when the server starts waiting for it (so also the keep-alive idle time).
    pub idle_timeout: Duration,
    /// How long a write may wait for the client to take any bytes.
    pub send_timeout: Duration,
    /// Most connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Whether every response is logged on the console, in the Common Log Format.
    pub access_log: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            max_request_line: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body: 4 * 1024,
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 1024,
            access_log: false,
        }
    }
}

/// Why [`serve_site`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteError {
    /// The log level is not one of [`LogLevel::NAMES`].
    LogLevel(UnknownLevel),
    /// Listening on the port failed (`address` when the stack knows its own).
    Listen {
        /// The stack's address, if it has one.
        address: Option<core::net::Ipv4Addr>,
        /// The port.
        port: u16,
        /// What went wrong.
        error: NetError,
    },
    /// The listener was closed.
    Closed,
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteError::LogLevel(e) => write!(f, "{e}"),
            SiteError::Listen {
                address: Some(a),
                port,
                error,
            } => write!(f, "cannot listen on {a}:{port}: {error}"),
            SiteError::Listen {
                address: None,
                port,
                error,
            } => write!(f, "cannot listen on port {port}: {error}"),
            SiteError::Closed => f.write_str("the listener was closed"),
        }
    }
}

/// Serves the site in `assets` over HTTP/1.1 on `port` of `tcp`, forever.
///
/// Logs `site: listening on port PORT` on `console` once listening (at level `info`), then
/// accepts connections and serves each in a task of its own; every response carries a
/// `Date` from `clock`, and with `config.access_log` is logged on `console` in the Common
/// Log Format. `log_level` (see [`LogLevel::parse`]) chooses which of the server's own
/// messages are shown. Returns only if the log level is unknown, listening fails (the
/// port is taken: `site: cannot listen on 127.0.0.1:8080: address in use`) or the
/// listener is closed, after logging why on `console`.
pub async fn serve_site<C: Console, W: WallClock, T: Tcp, K: Kv>(
    console: &'static C,
    clock: &'static W,
    tcp: &'static T,
    assets: &'static K,
    port: u16,
    config: SiteConfig,
    log_level: impl AsRef<str>,
) -> Result<(), SiteError>
where
    T::Flow: 'static,
{
    let fail = |e: SiteError| {
        console.log(&format!("site: {e}"));
        Err(e)
    };
    let level = match LogLevel::parse(log_level.as_ref()) {
        Ok(level) => level,
        Err(e) => return fail(SiteError::LogLevel(e)),
    };
    let listener = match tcp.listen(port) {
        Ok(listener) => listener,
        Err(error) => {
            let address = tcp.local_address();
            return fail(SiteError::Listen {
                address,
                port,
                error,
            });
        }
    };
    if level >= LogLevel::Info {
        console.log(&format!("site: listening on port {}", listener.port()));
    }
    let now: &'static Cell<u64> = compose_devices::leak(Cell::new(clock.now().as_secs()));
    spawn(log::keep_time(clock, now));
    let obs = Observer::new(now, console, config.access_log);
    let live = Rc::new(Cell::new(0usize));
    loop {
        while live.get() >= config.max_connections.max(1) {
            sleep(Duration::from_millis(10)).await;
        }
        match listener.accept().await {
            Ok(flow) => {
                let slot = Slot::take(&live);
                if level >= LogLevel::Debug {
                    console.log(&format!(
                        "site: connection from {} ({} open)",
                        flow.peer(),
                        live.get()
                    ));
                }
                spawn(async move {
                    let _slot = slot;
                    serve_connection_with(flow, assets, &config, &obs).await;
                });
            }
            Err(NetError::Closed) => return fail(SiteError::Closed),
            // Out of descriptors or a connection reset before it was accepted: wait a
            // little rather than spin, and go on.
            Err(e) => {
                if level >= LogLevel::Warn {
                    console.log(&format!("site: accepting a connection failed: {e}"));
                }
                sleep(Duration::from_millis(10)).await
            }
        }
    }
}

/// One of the server's `max_connections` slots, given back when dropped.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(live: &Rc<Cell<usize>>) -> Slot {
        live.set(live.get() + 1);
        Slot(live.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
