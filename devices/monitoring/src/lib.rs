//! The `monitoring` device: one line of a spec (`monitoring tcp=mgmt port=9090`) that
//! serves the counters and gauges the devices keep (`compose_devices::metrics`) and the
//! log levels per source (`compose_devices::logs`) on a TCP stack of its own choosing, so
//! that metrics can stay off the public interface, as mirage-monitoring does with a second
//! stack.
//!
//! [`start`] applies the boot-time log setting, listens, spawns the server (and the
//! InfluxDB push, if an address is given) as tasks of the executor and returns: the
//! application runs unchanged. Endpoints (HTTP/1.1, one request per connection):
//!
//! - `GET /metrics`: the Prometheus text format 0.0.4, or OpenMetrics 1.0 when the
//!   `Accept` header asks for `application/openmetrics-text` (as Prometheus does);
//! - `GET /logs`: the levels, `stack:info,http:info,tls:info,monitoring:info`;
//! - `PUT /logs` or `POST /logs` with a body such as `http:debug` or
//!   `stack:warn,http:debug`: changes them (200 and the new levels), or `400` with a
//!   message naming the mistake, and nothing changed;
//! - `GET /`: a line naming the endpoints.
//!
//! It must not be a new way to take the unikernel down: at most [`MAX_CONNECTIONS`] are
//! served at once (more are closed at once), a request head is at most [`MAX_HEAD`]
//! bytes and a body [`MAX_BODY`], the whole request must arrive within
//! [`REQUEST_DEADLINE`] and each write make progress within [`WRITE_DEADLINE`]; buffers
//! are allocated fallibly.
//!
//! The push ([`Config::influx`]) POSTs the metrics in InfluxDB's line protocol to
//! `/write?db=compose` (the InfluxDB 1.x API) every [`Config::influx_interval`] seconds,
//! tagged `unikernel=NAME` and stamped with the wall clock. A failed push is logged (the
//! first failure, then at most once a minute, and the recovery) and the next interval
//! tries again; a push is bounded by [`PUSH_DEADLINE`], so a dead collector costs a
//! sleeping task, never the unikernel.
#![no_std]
#![allow(async_fn_in_trait)]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod format;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::net::SocketAddrV4;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::executor::timeout;
use compose_devices::logs::{self, Level, Source};
use compose_devices::metrics;
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};
use compose_devices::time::{MonotonicClock, WallClock};
use compose_devices::{sleep, spawn};

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 8;
/// Largest request head (request line and header fields), in bytes.
pub const MAX_HEAD: usize = 4096;
/// Largest request body (a log setting), in bytes.
pub const MAX_BODY: usize = 1024;
/// How long a client has to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a write may wait for the client to take any bytes.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How long one push to InfluxDB may take, from connecting to its answer.
pub const PUSH_DEADLINE: Duration = Duration::from_secs(5);
/// Failed pushes are logged at most this often (and the first one at once).
pub const PUSH_LOG_EVERY: Duration = Duration::from_secs(60);

/// The device's settings, from its properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The TCP port of the endpoint.
    pub port: u16,
    /// Log levels applied at start (`stack:debug,http:warn`); empty: none.
    pub logs: String,
    /// `IPv4:PORT` of an InfluxDB to push to; empty: no push.
    pub influx: String,
    /// Seconds between pushes (at least 1).
    pub influx_interval: u32,
    /// The unikernel's name: the `unikernel` tag of pushed metrics.
    pub unikernel: &'static str,
}

/// Why the device did not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The `logs` setting is wrong.
    Logs(logs::SettingError),
    /// The `influx` address is not `IPv4:PORT`.
    Influx(String),
    /// Listening on the port failed.
    Listen {
        /// The stack's address, if it has one.
        address: Option<core::net::Ipv4Addr>,
        /// The port.
        port: u16,
        /// What went wrong.
        error: NetError,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Logs(e) => write!(f, "logs: {e}"),
            Error::Influx(a) => write!(
                f,
                "influx: {a:?} is not an IPv4 address and port, like 10.0.1.1:8086"
            ),
            Error::Listen {
                address: Some(a),
                port,
                error,
            } => write!(f, "cannot listen on {a}:{port}: {error}"),
            Error::Listen {
                address: None,
                port,
                error,
            } => write!(f, "cannot listen on port {port}: {error}"),
        }
    }
}

/// The started device: where it serves and pushes.
#[derive(Debug)]
pub struct Monitoring {
    port: u16,
    influx: Option<SocketAddrV4>,
}

impl Monitoring {
    /// The port the endpoint listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where metrics are pushed, if anywhere.
    pub fn influx(&self) -> Option<SocketAddrV4> {
        self.influx
    }
}

/// Starts the device: makes `console` the one per-source messages go to, applies
/// `config.logs`, listens on `config.port` of `tcp`, spawns the server and the push, and
/// returns. Nothing is started if a setting is wrong or the port is taken.
pub fn start<T, C, M, W>(
    tcp: &'static T,
    console: &'static C,
    clock: &'static M,
    wall: &'static W,
    config: Config,
) -> Result<Monitoring, Error>
where
    T: Tcp,
    T::Flow: 'static,
    T::Listener: 'static,
    C: Console + Sync,
    M: MonotonicClock,
    W: WallClock,
{
    let influx = match config.influx.trim() {
        "" => None,
        a => Some(
            a.parse::<SocketAddrV4>()
                .map_err(|_| Error::Influx(a.into()))?,
        ),
    };
    // Check the whole setting before anything changes.
    if let Err(e) = logs::check(&config.logs) {
        return Err(Error::Logs(e));
    }
    let listener = tcp.listen(config.port).map_err(|error| Error::Listen {
        address: tcp.local_address(),
        port: config.port,
        error,
    })?;
    logs::set_console(console);
    // Applies (it was checked above, so it cannot fail now).
    let _ = logs::apply(&config.logs);
    let port = listener.port();
    logs::log(
        Source::Monitoring,
        Level::Info,
        format_args!("serving /metrics and /logs on port {port}"),
    );
    spawn(serve(listener, clock));
    if let Some(addr) = influx {
        let interval = Duration::from_secs(config.influx_interval.max(1).into());
        logs::log(
            Source::Monitoring,
            Level::Info,
            format_args!(
                "pushing to InfluxDB at {addr} every {}s",
                interval.as_secs()
            ),
        );
        spawn(push(tcp, clock, wall, addr, interval, config.unikernel));
    }
    Ok(Monitoring { port, influx })
}

/// Accepts connections forever, serving each in a task of its own, at most
/// [`MAX_CONNECTIONS`] at once.
async fn serve<L, M>(listener: L, clock: &'static M)
where
    L: TcpListener,
    L::Flow: 'static,
    M: MonotonicClock,
{
    let live = Rc::new(Cell::new(0usize));
    loop {
        let flow = match listener.accept().await {
            Ok(flow) => flow,
            Err(NetError::Closed) => {
                logs::log(
                    Source::Monitoring,
                    Level::Error,
                    format_args!("the listener was closed"),
                );
                return;
            }
            Err(e) => {
                if logs::enabled(Source::Monitoring, Level::Warn) {
                    logs::log(
                        Source::Monitoring,
                        Level::Warn,
                        format_args!("accepting a connection failed: {e}"),
                    );
                }
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if live.get() >= MAX_CONNECTIONS {
            // Dropping it closes it: a scraper retries next interval.
            drop(flow);
            continue;
        }
        live.set(live.get() + 1);
        let live = Rc::clone(&live);
        spawn(async move {
            connection(flow, clock).await;
            live.set(live.get() - 1);
        });
    }
}

/// A request, as far as the endpoints care.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path, without a query.
    pub path: String,
    /// The `Accept` header (empty if none).
    pub accept: String,
    /// The body.
    pub body: Vec<u8>,
}

/// What [`parse`] makes of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request.
    Complete(Request),
    /// A request the endpoint refuses with this status (400, 413, 431).
    Refused(u16),
}

/// Parses a request from `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Parsed::Refused(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(431),
        Err(_) => return Parsed::Refused(400),
    };
    if head > MAX_HEAD {
        return Parsed::Refused(431);
    }
    let mut length = 0usize;
    let mut accept = String::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match core::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => length = n,
                None => return Parsed::Refused(400),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not needed by any client of these endpoints.
            return Parsed::Refused(411);
        } else if h.name.eq_ignore_ascii_case("accept") {
            accept = String::from_utf8_lossy(h.value).into();
        }
    }
    if length > MAX_BODY {
        return Parsed::Refused(413);
    }
    if buf.len() < head + length {
        return Parsed::Partial;
    }
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Parsed::Complete(Request {
        method: req.method.unwrap_or("").into(),
        path: path.into(),
        accept,
        body: buf[head..head + length].to_vec(),
    })
}

/// A response: status, content type and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Whether the body is left out (HEAD).
    pub head_only: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: u16, body: String) -> Response {
    Response {
        status,
        content_type: TEXT,
        body,
        head_only: false,
    }
}

/// The endpoints' answer to `req`, with `uptime` since boot.
pub fn respond(req: &Request, uptime: Duration) -> Response {
    let head_only = req.method == "HEAD";
    let get = req.method == "GET" || head_only;
    let mut response = match req.path.as_str() {
        "/metrics" if get => {
            let om = format::wants_openmetrics(&req.accept);
            let mut body = String::new();
            format::exposition(&mut body, metrics::ALL, uptime, om);
            Response {
                status: 200,
                content_type: if om {
                    format::OPENMETRICS_TYPE
                } else {
                    format::PROMETHEUS_TYPE
                },
                body,
                head_only: false,
            }
        }
        "/logs" if get => text(200, format!("{}\n", logs::describe())),
        "/logs" if req.method == "PUT" || req.method == "POST" => {
            let setting = match core::str::from_utf8(&req.body) {
                Ok(s) => s.trim(),
                Err(_) => return text(400, String::from("the setting is not UTF-8\n")),
            };
            if setting.is_empty() {
                text(
                    400,
                    String::from("no setting: send one like http:debug or stack:warn,http:debug\n"),
                )
            } else {
                match logs::apply(setting) {
                    Ok(()) => {
                        logs::log(
                            Source::Monitoring,
                            Level::Info,
                            format_args!("log levels now {}", logs::describe()),
                        );
                        text(200, format!("{}\n", logs::describe()))
                    }
                    Err(e) => text(400, format!("{e}; nothing changed\n")),
                }
            }
        }
        "/" if get => text(
            200,
            String::from("GET /metrics, GET /logs, PUT /logs (a setting like http:debug)\n"),
        ),
        "/metrics" | "/logs" | "/" => text(405, String::from("method not allowed\n")),
        _ => text(404, String::from("not found: try /metrics or /logs\n")),
    };
    response.head_only = head_only;
    response
}

/// Serves one request on `flow`, then closes it.
async fn connection<F: TcpFlow, M: MonotonicClock>(mut flow: F, clock: &M) {
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve(1024).is_err() {
        return;
    }
    let read = timeout(REQUEST_DEADLINE, read_request(&mut flow, &mut buf)).await;
    let response = match read {
        Some(Ok(Parsed::Complete(req))) => respond(&req, clock.elapsed()),
        Some(Ok(Parsed::Refused(status))) => text(status, format!("{}\n", reason(status))),
        Some(Ok(Parsed::Partial)) | Some(Err(_)) => return,
        None => {
            metrics::TCP_TIMED_OUT.inc();
            if buf.is_empty() {
                return;
            }
            text(408, String::from("request timeout\n"))
        }
    };
    let mut out = String::new();
    if out
        .try_reserve(
            160 + if response.head_only {
                0
            } else {
                response.body.len()
            },
        )
        .is_err()
    {
        return;
    }
    let _ = core::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            response.status,
            reason(response.status),
            response.content_type,
            response.body.len()
        ),
    );
    if !response.head_only {
        out.push_str(&response.body);
    }
    if write_all(&mut flow, out.as_bytes()).await.is_err() {
        return;
    }
    // Close our side, then drain what the client still sends (briefly), so that closing
    // does not reset the response it is reading.
    let _ = timeout(Duration::from_secs(1), async {
        if flow.close().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 1024];
        for _ in 0..64 {
            match flow.read(&mut scratch).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    })
    .await;
}

/// Reads until `buf` holds a whole request (or one to refuse), or the client goes away.
async fn read_request<F: TcpFlow>(flow: &mut F, buf: &mut Vec<u8>) -> Result<Parsed, NetError> {
    let mut chunk = [0u8; 512];
    loop {
        let n = flow.read(&mut chunk).await?;
        if n == 0 {
            return Err(NetError::Closed);
        }
        if buf.try_reserve(n).is_err() {
            return Err(NetError::Exhausted);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(buf) {
            Parsed::Partial if buf.len() > MAX_HEAD + MAX_BODY => return Ok(Parsed::Refused(413)),
            Parsed::Partial => {}
            done => return Ok(done),
        }
    }
}

/// Writes all of `bytes`, giving up if the peer takes nothing for [`WRITE_DEADLINE`].
async fn write_all<F: TcpFlow>(flow: &mut F, mut bytes: &[u8]) -> Result<(), NetError> {
    while !bytes.is_empty() {
        match timeout(WRITE_DEADLINE, flow.write(bytes)).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) => bytes = &bytes[n.min(bytes.len())..],
            Some(Err(e)) => return Err(e),
            None => {
                metrics::TCP_TIMED_OUT.inc();
                return Err(NetError::TimedOut);
            }
        }
    }
    Ok(())
}

/// Why a push failed.
#[derive(Debug)]
enum PushError {
    Net(NetError),
    Status(String),
    TimedOut,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Net(e) => write!(f, "{e}"),
            PushError::Status(s) => write!(f, "InfluxDB answered {s:?}"),
            PushError::TimedOut => write!(f, "no answer within {}s", PUSH_DEADLINE.as_secs()),
        }
    }
}

/// Pushes the metrics to `addr` every `interval`, forever.
async fn push<T: Tcp, M: MonotonicClock, W: WallClock>(
    tcp: &'static T,
    clock: &'static M,
    wall: &'static W,
    addr: SocketAddrV4,
    interval: Duration,
    unikernel: &'static str,
) {
    let mut failing = false;
    let mut last_logged: Option<Duration> = None;
    loop {
        sleep(interval).await;
        let mut body = String::new();
        format::line_protocol(
            &mut body,
            metrics::ALL,
            unikernel,
            clock.elapsed(),
            wall.now().as_nanos(),
        );
        let result = match timeout(PUSH_DEADLINE, post(tcp, addr, &body)).await {
            Some(r) => r,
            None => Err(PushError::TimedOut),
        };
        match result {
            Ok(()) => {
                if failing {
                    logs::log(
                        Source::Monitoring,
                        Level::Info,
                        format_args!("pushing to {addr} works again"),
                    );
                }
                failing = false;
            }
            Err(e) => {
                let now = clock.elapsed();
                let due = last_logged.is_none_or(|t| now.saturating_sub(t) >= PUSH_LOG_EVERY);
                if !failing || due {
                    last_logged = Some(now);
                    logs::log(
                        Source::Monitoring,
                        Level::Warn,
                        format_args!(
                            "pushing metrics to {addr} failed: {e}; retrying every {}s",
                            interval.as_secs()
                        ),
                    );
                }
                failing = true;
            }
        }
    }
}

/// One POST of `body` to InfluxDB's `/write?db=compose`; Ok on a 2xx answer.
async fn post<T: Tcp>(tcp: &T, addr: SocketAddrV4, body: &str) -> Result<(), PushError> {
    let mut flow = tcp.connect(addr).await.map_err(PushError::Net)?;
    let head = format!(
        "POST /write?db=compose HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    flow.write_all(head.as_bytes())
        .await
        .map_err(PushError::Net)?;
    flow.write_all(body.as_bytes())
        .await
        .map_err(PushError::Net)?;
    let mut answer = [0u8; 256];
    let mut filled = 0;
    while !answer[..filled].contains(&b'\n') && filled < answer.len() {
        match flow.read(&mut answer[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(PushError::Net(e)),
        }
    }
    let line = answer[..filled]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or(&[]);
    let line = String::from_utf8_lossy(line).trim().into();
    let ok = {
        let s: &String = &line;
        s.starts_with("HTTP/1.") && s.get(9..10) == Some("2")
    };
    let _ = flow.close().await;
    if ok {
        Ok(())
    } else {
        Err(PushError::Status(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Request {
        match parse(raw) {
            Parsed::Complete(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_parse_with_limits() {
        let r = req(b"GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept, "application/openmetrics-text");
        assert_eq!(parse(b"GET /metr"), Parsed::Partial);
        assert_eq!(
            parse(b"PUT /logs HTTP/1.1\r\nContent-Length: 10\r\n\r\nhttp"),
            Parsed::Partial
        );
        let r = req(b"PUT /logs HTTP/1.1\r\nContent-Length: 10\r\n\r\nhttp:debug");
        assert_eq!(r.body, b"http:debug");
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n"),
            Parsed::Refused(413)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parsed::Refused(400)
        );
        assert_eq!(parse(b"\x01\x02 nonsense\r\n\r\n"), Parsed::Refused(400));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse(&big), Parsed::Refused(431));
    }

    #[test]
    fn endpoints_answer() {
        let m = respond(
            &req(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Duration::from_secs(3),
        );
        assert_eq!((m.status, m.content_type), (200, format::PROMETHEUS_TYPE));
        assert!(
            m.body
                .contains("# TYPE tcp_connections_opened_total counter\n")
        );
        assert!(m.body.contains("uptime_seconds 3.000\n"));
        let m = respond(
            &req(b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"),
            Duration::ZERO,
        );
        assert_eq!(m.content_type, format::OPENMETRICS_TYPE);
        assert!(m.body.ends_with("# EOF\n"));
        assert_eq!(
            respond(&req(b"DELETE /metrics HTTP/1.1\r\n\r\n"), Duration::ZERO).status,
            405
        );
        assert_eq!(
            respond(&req(b"GET /nope HTTP/1.1\r\n\r\n"), Duration::ZERO).status,
            404
        );
        assert!(respond(&req(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Duration::ZERO).head_only);
    }

    #[test]
    fn log_settings_change_whole_or_not_at_all() {
        let put = |body: &str| {
            let raw = format!(
                "PUT /logs HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            respond(&req(raw.as_bytes()), Duration::ZERO)
        };
        let ok = put("http:debug");
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert!(ok.body.contains("http:debug"));
        let bad = put("http:info,stack:loud");
        assert_eq!(bad.status, 400);
        assert!(
            bad.body.contains("unknown log level \"loud\""),
            "{}",
            bad.body
        );
        assert_eq!(logs::level(Source::Http), Level::Debug);
        assert_eq!(put("").status, 400);
        let got = respond(&req(b"GET /logs HTTP/1.1\r\n\r\n"), Duration::ZERO);
        assert!(got.body.contains("http:debug"), "{}", got.body);
        logs::apply("info").unwrap();
    }
}
