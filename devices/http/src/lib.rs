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
pub mod redirect;
pub mod request;
pub mod response;
#[cfg(test)]
mod testing;

pub use conn::{CHUNK, open_connections, serve_connection, serve_connection_with};
pub use log::{LogLevel, Observer, SiteTime, UnknownLevel, parse_level};
pub use redirect::start_https_redirect;

use alloc::format;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;
use core::time::Duration;

use conn::Control;

use compose_devices::console::Console;
use compose_devices::kv::Kv;
use compose_devices::logs::{self, Source};
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};
use compose_devices::time::WallClock;
use compose_devices::{sleep, spawn};
use conn::serve_controlled;

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
    /// Most connections served at once. When a new client comes with all of them open,
    /// the connection idle the longest (waiting for a request of which nothing arrived) is
    /// closed to make room; with none idle, the client waits up to [`BUSY_WAIT`] for one
    /// to end, then gets a `503`. See [`connection_limit`] for the default.
    pub max_connections: usize,
    /// Whether every response is logged on the console, in the Common Log Format.
    pub access_log: bool,
}

/// Memory a connection may cost at most, for [`connection_limit`]: on the Solo5 targets
/// the socket's receive and transmit buffers (2 × 32 KiB), the request buffer (2 KiB,
/// growing to the request limits only for a large head) and, while a response is being
/// sent, the head and up to 2 × [`CHUNK`] of the body read from a block device; rounded up
/// to 160 KiB.
pub const CONNECTION_COST: u64 = 160 * 1024;

/// Memory [`connection_limit`] keeps for everything but connections: the image when it is
/// loaded in guest memory (a small site), the stack's listening and not yet accepted
/// sockets (at most 128 × 64 KiB), the block cache and the executor.
pub const MEMORY_RESERVE: u64 = 16 << 20;

/// The fewest connections [`connection_limit`] allows.
pub const MIN_CONNECTIONS: usize = 16;

/// How long a new client waits for a connection slot when every connection is busy with a
/// request, before it gets a `503 Service Unavailable`.
pub const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The connection limit of a site whose unikernel has `memory` bytes: the given limit if
/// the spec sets `max-connections`, else `(memory - MEMORY_RESERVE) / CONNECTION_COST`, at
/// least [`MIN_CONNECTIONS`]: 307 for 64 MiB, 1536 for 256 MiB. Memory the image takes
/// beyond the reserve (a large embedded site) is not counted; running out of it drops a
/// connection instead of crashing the unikernel (every connection buffer is allocated
/// fallibly), and idle connections make room for new ones.
pub const fn connection_limit(memory: u64, given: Option<u32>) -> usize {
    if let Some(n) = given {
        return if n == 0 { 1 } else { n as usize };
    }
    let n = (memory.saturating_sub(MEMORY_RESERVE) / CONNECTION_COST) as usize;
    if n < MIN_CONNECTIONS {
        MIN_CONNECTIONS
    } else {
        n
    }
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
            max_connections: connection_limit(64 << 20, None),
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
/// Log Format. `log_level` (see [`parse_level`]) chooses which of the server's own
/// messages are shown: it sets the level of the `http` source of `compose_devices::logs`
/// unless a `--logs` setting did (`logs::set_initial`); the level is read at each message,
/// so that the monitoring device can change it at run time. Returns only if the log level is unknown, listening fails (the
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
    match parse_level(log_level.as_ref()) {
        Ok(level) => logs::set_initial(Source::Http, level),
        Err(e) => return fail(SiteError::LogLevel(e)),
    }
    let level = |at| logs::enabled(Source::Http, at);
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
    if level(LogLevel::Info) {
        console.log(&format!("site: listening on port {}", listener.port()));
    }
    let now: &'static SiteTime<'static> = compose_devices::leak(SiteTime::new(clock));
    let obs = Observer::new(now, console, config.access_log);
    let live = Rc::new(Cell::new(0usize));
    let controls: Rc<RefCell<Vec<Rc<Control>>>> = Rc::new(RefCell::new(Vec::new()));
    let max = config.max_connections.max(1);
    loop {
        let flow = match listener.accept().await {
            Ok(flow) => flow,
            Err(NetError::Closed) => return fail(SiteError::Closed),
            // Out of descriptors or memory: make room by closing an idle connection, or
            // wait a little rather than spin; a connection reset before it was accepted:
            // go on.
            Err(e) => {
                if e != NetError::Exhausted || !evict_oldest_idle(&controls) {
                    if level(LogLevel::Warn) {
                        console.log(&format!("site: accepting a connection failed: {e}"));
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        if live.get() >= max && !evict_oldest_idle(&controls) {
            // Every connection is busy with a request: wait for one to end or go idle.
            let mut waited = Duration::ZERO;
            while live.get() >= max && waited < BUSY_WAIT && !evict_oldest_idle(&controls) {
                sleep(Duration::from_millis(10)).await;
                waited += Duration::from_millis(10);
            }
            if live.get() >= max && waited >= BUSY_WAIT {
                spawn(conn::refuse(flow, config));
                continue;
            }
        }
        let slot = Slot::take(&live);
        if level(LogLevel::Debug) {
            console.log(&format!(
                "site: connection from {} ({} open)",
                flow.peer(),
                live.get()
            ));
        }
        let control = Rc::new(Control::default());
        controls.borrow_mut().push(Rc::clone(&control));
        let controls = Rc::clone(&controls);
        spawn(async move {
            let _slot = slot;
            serve_controlled(flow, assets, &config, &obs, &control).await;
            controls.borrow_mut().retain(|c| !Rc::ptr_eq(c, &control));
        });
    }
}

/// Asks the connection idle the longest to close; false if none is idle.
fn evict_oldest_idle(controls: &RefCell<Vec<Rc<Control>>>) -> bool {
    let controls = controls.borrow();
    let oldest = controls
        .iter()
        .filter_map(|c| Some((c.idle_order()?, c)))
        .min_by_key(|(order, _)| *order);
    match oldest {
        Some((_, c)) => {
            c.evict();
            true
        }
        None => false,
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
