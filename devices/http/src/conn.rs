//! Connections: reading requests, writing responses, limits and timeouts.

use alloc::vec::Vec;
use core::cell::Cell;
use core::future::poll_fn;
use core::pin::pin;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Poll, Waker};
use core::time::Duration;

use compose_devices::executor::timeout;
use compose_devices::kv::{Encoding, Entry, FileSpan, Kv};
use compose_devices::net::{NetError, TcpFlow};

use crate::SiteConfig;
use crate::log::{HttpDate, Observer};
use crate::request::{Reject, parse_request};
use crate::response::{Body, Response, error_response, respond};

/// Connections being served now, by every server in the unikernel.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The number of connections being served now.
///
/// A connection counts from the start of [`serve_connection`] until everything it holds
/// (socket, buffers) is released, whether it ended normally, by a timeout, by an error, or
/// because the executor dropped its task.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// Counts a connection in [`OPEN`] for as long as it lives.
struct Open;

impl Open {
    fn new() -> Open {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes of a value read per step when the store cannot lend it as a slice: large writes,
/// few segments. (A value the store lends as a slice is written from it in one go, after
/// the head in the same write.)
pub const CHUNK: usize = 64 * 1024;
/// With a value read from the store in steps, this much of it goes in the head's write.
const COALESCE: usize = CHUNK;
/// A connection going idle keeps its buffers up to this size and frees larger ones, so
/// that an idle connection costs little more than its socket.
const KEEP_WHILE_IDLE: usize = 4 * 1024;
/// How long a closing connection waits for the client's remaining bytes (at most; never
/// longer than the idle timeout), so that they do not turn the close into a reset that
/// destroys the response in flight.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes a closing connection reads and discards.
const LINGER_BYTES: usize = 256 * 1024;

/// How waiting for a request head ended.
enum Head {
    /// A complete head of this many bytes is at the start of the buffer.
    Complete(usize),
    /// The head is unacceptable; answer with this status and close.
    Reject(u16),
    /// The peer closed the connection before sending anything.
    Closed,
    /// The peer closed the connection in the middle of a request.
    Truncated,
}

/// A connection as its server sees it: whether it is idle (waiting for a request of which
/// nothing arrived yet), since when, and whether the server asked it to go.
#[derive(Default)]
pub(crate) struct Control {
    /// While idle, the order in which it became idle (smaller is older).
    idle_since: Cell<Option<u64>>,
    /// Set by the server to close the connection if it is (still) idle.
    evict: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Hands out the order of becoming idle.
static IDLE_ORDER: AtomicU64 = AtomicU64::new(0);

impl Control {
    fn set_idle(&self, idle: bool) {
        let order = idle.then(|| IDLE_ORDER.fetch_add(1, Ordering::Relaxed));
        self.idle_since.set(order);
    }

    /// While idle, since when (see [`Control::idle_since`]), unless already asked to go.
    pub(crate) fn idle_order(&self) -> Option<u64> {
        self.idle_since.get().filter(|_| !self.evict.get())
    }

    /// Asks the connection to close if it is idle; it goes the next time it runs.
    pub(crate) fn evict(&self) {
        self.evict.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether the server asked this connection, idle, to go.
    fn evicted(&self) -> bool {
        self.evict.get() && self.idle_since.get().is_some()
    }
}

/// Grows `v` to `len` bytes (zeros), failing rather than aborting when memory is short.
fn grow(v: &mut Vec<u8>, len: usize) -> Result<(), NetError> {
    if len > v.len() {
        v.try_reserve_exact(len - v.len())
            .map_err(|_| NetError::Exhausted)?;
        v.resize(len, 0);
    }
    Ok(())
}

/// Frees `v` if it holds more than an idle connection should keep.
fn shrink(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_WHILE_IDLE {
        *v = Vec::new();
    }
}

/// The receive buffer: bytes read but not yet consumed are `buf[..filled]`.
struct Inbox {
    buf: Vec<u8>,
    filled: usize,
    cap: usize,
}

impl Inbox {
    fn consume(&mut self, n: usize) {
        let n = n.min(self.filled);
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// Serves HTTP/1.1 requests from `assets` on one connection until the client closes it,
/// it stays idle too long, a limit is exceeded, or an I/O error occurs; then closes it.
/// Never panics on any input.
pub async fn serve_connection<F: TcpFlow, K: Kv>(flow: F, assets: &K, config: &SiteConfig) {
    serve_connection_with(flow, assets, config, &Observer::none()).await;
}

/// [`serve_connection`], with a `Date` header on every response and each response
/// reported to `obs` (the access log).
pub async fn serve_connection_with<F: TcpFlow, K: Kv>(
    flow: F,
    assets: &K,
    config: &SiteConfig,
    obs: &Observer<'_>,
) {
    serve_controlled(flow, assets, config, obs, &Control::default()).await
}

/// [`serve_connection_with`] under a server's control: `control` tells the server when the
/// connection is idle, and the server may ask it to go (see [`crate::serve_site`]).
pub(crate) async fn serve_controlled<F: TcpFlow, K: Kv>(
    mut flow: F,
    assets: &K,
    config: &SiteConfig,
    obs: &Observer<'_>,
    control: &Control,
) {
    let _open = Open::new();
    let close = run(&mut flow, assets, config, obs, control).await;
    if close == Ending::Close {
        linger(&mut flow, LINGER.min(config.idle_timeout)).await;
    }
}

#[derive(PartialEq, Eq)]
enum Ending {
    /// Close gracefully: shut down our side and drain what the client still sends.
    Close,
    /// Just drop the connection (the peer is gone or misbehaving).
    Drop,
}

/// The request loop of one connection: read a head, answer it, repeat; says how to end.
async fn run<F: TcpFlow, K: Kv>(
    flow: &mut F,
    kv: &K,
    config: &SiteConfig,
    obs: &Observer<'_>,
    control: &Control,
) -> Ending {
    let cap = config
        .max_request_line
        .saturating_add(config.max_header_bytes)
        .max(16);
    let mut inbox = Inbox {
        buf: Vec::new(),
        filled: 0,
        cap,
    };
    // Every buffer is allocated fallibly: out of memory, the connection ends instead of
    // the unikernel.
    if grow(&mut inbox.buf, cap.min(2048)).is_err() {
        return Ending::Drop;
    }
    let mut out: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        // The whole head must arrive within `idle_timeout` of when the server started
        // waiting for it: a deadline that bytes trickling in (slowloris) do not extend.
        let waiting = read_head(flow, &mut inbox, config, control);
        let head = match timeout(config.idle_timeout, unless_evicted(control, waiting)).await {
            Some(Some(Ok(head))) => head,
            Some(Some(Err(_))) => return Ending::Drop,
            // The server needs the room for a new client: an idle connection goes first.
            Some(None) => return Ending::Drop,
            None if inbox.filled == 0 => {
                compose_devices::metrics::TCP_TIMED_OUT.inc();
                return Ending::Close;
            }
            // Part of a request came, but not all of it in time.
            None => {
                compose_devices::metrics::TCP_TIMED_OUT.inc();
                let response = error_response(408, true, false);
                let line = obs.request_line(&inbox.buf[..inbox.filled]);
                let sent =
                    send_response(flow, kv, &response, config, &mut out, &mut scratch, obs).await;
                served(obs, flow, line, &response, sent.is_ok());
                return Ending::Close;
            }
        };
        let head_len = match head {
            Head::Complete(n) => n,
            Head::Reject(status) => {
                let response = error_response(status, true, false);
                let line = obs.request_line(&inbox.buf[..inbox.filled]);
                let sent =
                    send_response(flow, kv, &response, config, &mut out, &mut scratch, obs).await;
                served(obs, flow, line, &response, sent.is_ok());
                return Ending::Close;
            }
            Head::Closed => return Ending::Close,
            Head::Truncated => return Ending::Drop,
        };

        let Ok(mut headers) = headers_buf(config) else {
            return Ending::Drop;
        };
        let (response, body_len) =
            match parse_request(&inbox.buf[..inbox.filled], &mut headers, config) {
                Ok(Some((req, _))) => (
                    respond(&req, kv, config).await,
                    req.content_length.unwrap_or(0),
                ),
                // `read_head` just parsed this head; a different answer would be a bug.
                _ => (error_response(500, true, false), 0),
            };
        drop(headers);
        let line = obs.request_line(&inbox.buf[..head_len]);
        inbox.consume(head_len);
        if !response.close
            && body_len > 0
            && discard_body(flow, &mut inbox, body_len, config, &mut scratch)
                .await
                .is_err()
        {
            return Ending::Drop;
        }
        let sent = send_response(flow, kv, &response, config, &mut out, &mut scratch, obs).await;
        served(obs, flow, line, &response, sent.is_ok());
        if sent.is_err() {
            return Ending::Drop;
        }
        if response.close {
            return Ending::Close;
        }
        shrink(&mut out);
        shrink(&mut scratch);
        if inbox.filled == 0 && inbox.buf.capacity() > KEEP_WHILE_IDLE {
            inbox.buf = Vec::new();
            if grow(&mut inbox.buf, cap.min(2048)).is_err() {
                return Ending::Drop;
            }
        }
    }
}

/// Reports a response to the access log: its status and, if it was sent whole, its body's
/// length.
fn served<F: TcpFlow>(
    obs: &Observer<'_>,
    flow: &F,
    line: Option<alloc::string::String>,
    response: &Response<'_>,
    sent: bool,
) {
    compose_devices::metrics::http_response(response.status);
    if !obs.logs_access() {
        return;
    }
    let body = match &response.body {
        Body::Empty => 0,
        Body::Message(m) => m.len() as u64,
        Body::Value { len, .. } => *len,
    };
    obs.served(
        flow.peer(),
        line.as_deref(),
        response.status,
        sent.then_some(body),
    );
}

/// Runs `fut` until it ends, or until the server asks the connection (idle) to go: `None`.
async fn unless_evicted<T>(control: &Control, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if control.evicted() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        control.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

/// Reads until the buffer starts with a complete request head, or a reason to stop.
async fn read_head<F: TcpFlow>(
    flow: &mut F,
    inbox: &mut Inbox,
    config: &SiteConfig,
    control: &Control,
) -> Result<Head, NetError> {
    // Idle until the first byte of a request arrives.
    control.set_idle(inbox.filled == 0);
    let result = read_head_inner(flow, inbox, config, control).await;
    control.set_idle(false);
    result
}

async fn read_head_inner<F: TcpFlow>(
    flow: &mut F,
    inbox: &mut Inbox,
    config: &SiteConfig,
    control: &Control,
) -> Result<Head, NetError> {
    // A head can only become complete with a new line feed, so the parser runs only when
    // one arrives: a client trickling bytes costs a scan of each byte, not a parse of the
    // whole buffer per byte. `scanned` is where the bytes not yet looked at start.
    let mut scanned = 0;
    let mut line_seen = false;
    loop {
        if inbox.buf[scanned..inbox.filled].contains(&b'\n') {
            line_seen = true;
            let mut headers = headers_buf(config)?;
            match parse_request(&inbox.buf[..inbox.filled], &mut headers, config) {
                Ok(Some((_, n))) => return Ok(Head::Complete(n)),
                Ok(None) => {}
                Err(Reject(status)) => return Ok(Head::Reject(status)),
            }
        } else if !line_seen && inbox.filled > config.max_request_line {
            return Ok(Head::Reject(414));
        }
        scanned = inbox.filled;
        if inbox.filled == inbox.buf.len() {
            let len = inbox.buf.len().saturating_mul(2).min(inbox.cap);
            if len <= inbox.filled {
                return Ok(Head::Reject(431));
            }
            grow(&mut inbox.buf, len)?;
        }
        let n = flow.read(&mut inbox.buf[inbox.filled..]).await?;
        if n == 0 {
            return Ok(if inbox.filled == 0 {
                Head::Closed
            } else {
                Head::Truncated
            });
        }
        inbox.filled += n;
        control.set_idle(false);
    }
}

/// Room for the header fields of one request, allocated fallibly.
fn headers_buf<'h>(config: &SiteConfig) -> Result<Vec<httparse::Header<'h>>, NetError> {
    let mut headers = Vec::new();
    headers
        .try_reserve_exact(config.max_headers)
        .map_err(|_| NetError::Exhausted)?;
    headers.resize(config.max_headers, httparse::EMPTY_HEADER);
    Ok(headers)
}

/// Reads and drops a request body of `len` bytes (already known to be within limits).
async fn discard_body<F: TcpFlow>(
    flow: &mut F,
    inbox: &mut Inbox,
    len: u64,
    config: &SiteConfig,
    scratch: &mut Vec<u8>,
) -> Result<(), NetError> {
    let buffered = (inbox.filled as u64).min(len) as usize;
    inbox.consume(buffered);
    let mut left = len - buffered as u64;
    if left > 0 {
        grow(scratch, CHUNK)?;
    }
    while left > 0 {
        let want = (left as usize).min(scratch.len());
        match timeout(config.idle_timeout, flow.read(&mut scratch[..want])).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) => left -= n as u64,
            Some(Err(e)) => return Err(e),
            None => {
                compose_devices::metrics::TCP_TIMED_OUT.inc();
                return Err(NetError::TimedOut);
            }
        }
    }
    Ok(())
}

/// Writes all of `bytes`, giving up if the peer takes nothing for `send_timeout`.
async fn send<F: TcpFlow>(
    flow: &mut F,
    mut bytes: &[u8],
    config: &SiteConfig,
) -> Result<(), NetError> {
    while !bytes.is_empty() {
        match timeout(config.send_timeout, flow.write(bytes)).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) => bytes = &bytes[n.min(bytes.len())..],
            Some(Err(e)) => return Err(e),
            None => {
                compose_devices::metrics::TCP_TIMED_OUT.inc();
                return Err(NetError::TimedOut);
            }
        }
    }
    Ok(())
}

/// Writes all of `first` then all of `second`, as one stream: on a host socket one
/// `sendmsg` takes both, so a head and its body leave together. Gives up like [`send`].
async fn send2<F: TcpFlow>(
    flow: &mut F,
    mut first: &[u8],
    mut second: &[u8],
    config: &SiteConfig,
) -> Result<(), NetError> {
    while !first.is_empty() {
        match timeout(config.send_timeout, flow.write2(first, second)).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) if n >= first.len() => {
                second = &second[(n - first.len()).min(second.len())..];
                first = &[];
            }
            Some(Ok(n)) => first = &first[n..],
            Some(Err(e)) => return Err(e),
            None => {
                compose_devices::metrics::TCP_TIMED_OUT.inc();
                return Err(NetError::TimedOut);
            }
        }
    }
    send(flow, second, config).await
}

/// Writes all of `first`, then the whole of the host file span `file`, as one stream (see
/// [`TcpFlow::write_file`]). Gives up like [`send`].
async fn send_file<F: TcpFlow>(
    flow: &mut F,
    mut first: &[u8],
    mut file: FileSpan,
    config: &SiteConfig,
) -> Result<(), NetError> {
    while !first.is_empty() || file.len > 0 {
        match timeout(config.send_timeout, flow.write_file(first, file)).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) => {
                let head = n.min(first.len());
                first = &first[head..];
                let body = (n - head) as u64;
                file = file
                    .part(body, file.len.checked_sub(body).ok_or(NetError::Other)?)
                    .ok_or(NetError::Other)?;
            }
            Some(Err(e)) => return Err(e),
            None => return Err(NetError::TimedOut),
        }
    }
    Ok(())
}

/// Writes `response`: its head, then its body, from the store's slice when it has one
/// (no copy), otherwise read in chunks through `scratch`.
async fn send_response<F: TcpFlow, K: Kv>(
    flow: &mut F,
    kv: &K,
    response: &Response<'_>,
    config: &SiteConfig,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    obs: &Observer<'_>,
) -> Result<(), NetError> {
    out.clear();
    out.try_reserve(1024).map_err(|_| NetError::Exhausted)?;
    let date = obs.http_date();
    response.write_head_dated(out, date.as_ref().map(HttpDate::as_str));
    match &response.body {
        Body::Empty => send(flow, out, config).await,
        Body::Message(m) => send2(flow, out, m.as_bytes(), config).await,
        Body::Value {
            entry,
            encoding,
            offset,
            len,
        } => {
            send_value(
                flow, kv, entry, *encoding, *offset, *len, config, out, scratch,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_value<F: TcpFlow, K: Kv>(
    flow: &mut F,
    kv: &K,
    entry: &Entry<'_>,
    encoding: Encoding,
    offset: u64,
    len: u64,
    config: &SiteConfig,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), NetError> {
    // The head promised `len` bytes: anything else must end the connection, not the
    // response, so that the client sees a truncated response rather than a wrong one.
    if let Some(value) = kv.slice(entry, encoding) {
        let part = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(o, l)| value.get(o..o.checked_add(l)?))
            .ok_or(NetError::Other)?;
        return send2(flow, out, part, config).await;
    }
    // A value the store names as a span of a host file goes from the file to the socket
    // (sendfile on unix), whatever its size: the host's page cache holds it, where reading
    // it first would cost a read and a copy (and the store's cache) for each response.
    if flow.sends_files()
        && let Some(file) = kv.file_span(entry, encoding)
    {
        let part = file.part(offset, len).ok_or(NetError::Other)?;
        return send_file(flow, out, part, config).await;
    }
    // Fill the rest of the first write with the start of the value.
    let mut sent = 0u64;
    let first = (len.min(COALESCE as u64)) as usize;
    let head_len = out.len();
    grow(out, head_len + first)?;
    let n = kv
        .read(entry, encoding, offset, &mut out[head_len..])
        .await
        .map_err(|_| NetError::Other)?;
    if n != first {
        return Err(NetError::Other);
    }
    send(flow, out, config).await?;
    sent += n as u64;
    if sent < len {
        grow(scratch, CHUNK)?;
    }
    while sent < len {
        let want = ((len - sent) as usize).min(scratch.len());
        let n = kv
            .read(entry, encoding, offset + sent, &mut scratch[..want])
            .await
            .map_err(|_| NetError::Other)?;
        if n == 0 {
            return Err(NetError::Other);
        }
        send(flow, &scratch[..n], config).await?;
        sent += n as u64;
    }
    Ok(())
}

/// Answers a client the server has no room for with a `503` and closes; a client that
/// does not take it within a second is dropped.
pub(crate) async fn refuse<F: TcpFlow>(mut flow: F, config: SiteConfig) {
    let _open = Open::new();
    let config = SiteConfig {
        send_timeout: config.send_timeout.min(Duration::from_secs(1)),
        ..config
    };
    let response = error_response(503, true, false);
    compose_devices::metrics::http_response(503);
    let mut out = Vec::new();
    if out.try_reserve(256).is_err() {
        return;
    }
    response.write_head(&mut out);
    if let Body::Message(m) = &response.body {
        let _ = send2(&mut flow, &out, m.as_bytes(), &config).await;
    }
    linger(&mut flow, Duration::from_secs(1)).await;
}

/// Shuts down our side, then reads (and drops) what the client still sends, for a bounded
/// time and amount, so that closing does not reset a response the client is reading.
async fn linger<F: TcpFlow>(flow: &mut F, limit: Duration) {
    let _ = timeout(limit, async {
        if flow.close().await.is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match flow.read(&mut buf).await {
                Ok(n) if n > 0 => drained += n,
                _ => return,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests;
