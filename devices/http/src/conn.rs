//! Connections: reading requests, writing responses, limits and timeouts.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use compose_devices::executor::timeout;
use compose_devices::kv::{Encoding, Entry, Kv};
use compose_devices::net::{NetError, TcpFlow};

use crate::SiteConfig;
use crate::log::Observer;
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

/// Bytes of a value read per step when the store cannot lend it as a slice.
const CHUNK: usize = 16 * 1024;
/// Values (or ranges) up to this size are sent in the same write as the head.
const COALESCE: usize = 16 * 1024;
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
    mut flow: F,
    assets: &K,
    config: &SiteConfig,
    obs: &Observer<'_>,
) {
    let _open = Open::new();
    let close = run(&mut flow, assets, config, obs).await;
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
) -> Ending {
    let cap = config
        .max_request_line
        .saturating_add(config.max_header_bytes)
        .max(16);
    let mut inbox = Inbox {
        buf: vec![0; cap.min(2048)],
        filled: 0,
        cap,
    };
    let mut out: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let head = match timeout(config.idle_timeout, read_head(flow, &mut inbox, config)).await {
            Some(Ok(head)) => head,
            Some(Err(_)) => return Ending::Drop,
            None if inbox.filled == 0 => return Ending::Close,
            // Part of a request came, but not all of it in time.
            None => {
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

        let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
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

/// Reads until the buffer starts with a complete request head, or a reason to stop.
async fn read_head<F: TcpFlow>(
    flow: &mut F,
    inbox: &mut Inbox,
    config: &SiteConfig,
) -> Result<Head, NetError> {
    // A head can only become complete with a new line feed, so the parser runs only when
    // one arrives: a client trickling bytes costs a scan of each byte, not a parse of the
    // whole buffer per byte. `scanned` is where the bytes not yet looked at start.
    let mut scanned = 0;
    let mut line_seen = false;
    loop {
        if inbox.buf[scanned..inbox.filled].contains(&b'\n') {
            line_seen = true;
            let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
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
            inbox.buf.resize(len, 0);
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
    }
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
    if left > 0 && scratch.len() < CHUNK {
        scratch.resize(CHUNK, 0);
    }
    while left > 0 {
        let want = (left as usize).min(scratch.len());
        match timeout(config.idle_timeout, flow.read(&mut scratch[..want])).await {
            Some(Ok(0)) => return Err(NetError::Closed),
            Some(Ok(n)) => left -= n as u64,
            Some(Err(e)) => return Err(e),
            None => return Err(NetError::TimedOut),
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
    response.write_head_dated(out, obs.date().as_deref());
    match &response.body {
        Body::Empty => send(flow, out, config).await,
        Body::Message(m) => {
            out.extend_from_slice(m.as_bytes());
            send(flow, out, config).await
        }
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
        if part.len() <= COALESCE {
            out.extend_from_slice(part);
            return send(flow, out, config).await;
        }
        send(flow, out, config).await?;
        return send(flow, part, config).await;
    }
    // Fill the rest of the first write with the start of the value.
    let mut sent = 0u64;
    let first = (len.min(COALESCE as u64)) as usize;
    let head_len = out.len();
    out.resize(head_len + first, 0);
    let n = kv
        .read(entry, encoding, offset, &mut out[head_len..])
        .await
        .map_err(|_| NetError::Other)?;
    if n != first {
        return Err(NetError::Other);
    }
    send(flow, out, config).await?;
    sent += n as u64;
    if sent < len && scratch.len() < CHUNK {
        scratch.resize(CHUNK, 0);
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
