//! A TLS connection over a TCP flow: the handshake and the record path, through rustls'
//! unbuffered API and two fixed buffers.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddrV4;

use compose_devices::net::{NetError, TcpFlow};
use rustls::ServerConfig;
use rustls::server::ServerConnectionData;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeTlsData};

/// The largest TLS record on the wire: a 5-byte header and 2^14 + 2048 bytes of ciphertext
/// (TLS 1.2's limit; TLS 1.3's is 2^14 + 256). A record must fit whole to be decrypted.
pub(crate) const IN_CAPACITY: usize = 5 + 16384 + 2048;
/// Plaintext taken per record written.
pub(crate) const RECORD_PLAINTEXT: usize = 16384;
/// The largest record rustls encodes: a header, 2^14 bytes of plaintext and at most 256 of
/// content type, AEAD tag and TLS 1.2's explicit nonce.
const MAX_RECORD_WIRE: usize = 5 + 16384 + 256;
/// Room for one largest record, and for a handshake flight of up to 4 KiB beside it (a
/// flight's records go out in one write). rustls hands over each encoded record once, so
/// there is always room for the largest before it is asked for the next.
pub(crate) const OUT_CAPACITY: usize = MAX_RECORD_WIRE + 4096;

/// Why a handshake or a record failed.
#[derive(Debug)]
pub enum FlowError {
    /// The TCP flow failed.
    Net(NetError),
    /// The peer violated TLS (or is not speaking it).
    Tls(rustls::Error),
    /// The peer closed before the handshake completed.
    PeerClosed,
    /// A message larger than the receive buffer.
    TooLarge,
    /// The buffers could not be allocated.
    OutOfMemory,
    /// The state machine asked for something the server does not do.
    Unexpected(&'static str),
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Net(e) => write!(f, "{e}"),
            FlowError::Tls(e) => write!(f, "{e}"),
            FlowError::PeerClosed => f.write_str("the peer closed the connection"),
            FlowError::TooLarge => f.write_str("a TLS message larger than the receive buffer"),
            FlowError::OutOfMemory => f.write_str("out of memory for the connection's buffers"),
            FlowError::Unexpected(s) => write!(f, "unexpected TLS state: {s}"),
        }
    }
}

impl From<NetError> for FlowError {
    fn from(e: NetError) -> Self {
        FlowError::Net(e)
    }
}

impl From<FlowError> for NetError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Net(e) => e,
            FlowError::OutOfMemory => NetError::Exhausted,
            FlowError::PeerClosed => NetError::ConnectionReset,
            _ => NetError::Other,
        }
    }
}

/// A buffer of exactly `n` zero bytes, or `None` when the heap cannot hold it.
fn buffer(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.resize(n, 0);
    Some(v)
}

/// A TLS server connection whose handshake completed.
pub struct TlsFlow<F> {
    tcp: F,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes not yet processed: `incoming[..in_len]`.
    incoming: Vec<u8>,
    in_len: usize,
    /// Encoded TLS bytes to send: `outgoing[..out_len]`.
    outgoing: Vec<u8>,
    out_len: usize,
    /// Decrypted bytes a read could not take yet: `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// The peer sent close_notify (or closed its side of TCP).
    eof: bool,
}

impl<F> fmt::Debug for TlsFlow<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFlow").finish_non_exhaustive()
    }
}

/// What to do once the state of one `process_tls_records` call is handled (and its
/// borrows of the connection and the receive buffer have ended).
enum Next {
    /// Call `process_tls_records` again.
    Again,
    /// Send `outgoing[..out_len]`, then tell rustls it went (`TransmitTlsData::done` was
    /// called already: the bytes are ours to send).
    Transmit,
    /// Read more bytes from the peer.
    Read,
    /// The handshake is complete / application data is ready to be written.
    Established,
    /// `n` bytes of plaintext were copied to the caller.
    Got(usize),
    /// The peer closed cleanly.
    Eof,
    /// The connection failed.
    Fail(FlowError),
}

impl<F: TcpFlow> TlsFlow<F> {
    /// Runs the server handshake on `tcp`. On failure the alert rustls queued, if any, is
    /// sent, and everything is dropped.
    pub(crate) async fn handshake(tcp: F, server: Arc<ServerConfig>) -> Result<Self, FlowError> {
        let conn = UnbufferedServerConnection::new(server).map_err(FlowError::Tls)?;
        let (Some(incoming), Some(outgoing)) = (buffer(IN_CAPACITY), buffer(OUT_CAPACITY)) else {
            return Err(FlowError::OutOfMemory);
        };
        let mut flow = TlsFlow {
            tcp,
            conn,
            incoming,
            in_len: 0,
            outgoing,
            out_len: 0,
            plain: Vec::new(),
            plain_pos: 0,
            eof: false,
        };
        loop {
            match flow.step(None) {
                Next::Again => {}
                Next::Transmit => flow.transmit().await?,
                Next::Read => flow.fill().await?,
                Next::Established | Next::Got(_) => return Ok(flow),
                Next::Eof => return Err(FlowError::PeerClosed),
                Next::Fail(e) => {
                    flow.send_alert().await;
                    return Err(e);
                }
            }
        }
    }

    /// One call of `process_tls_records` and the handling of its state. Plaintext records
    /// go to `read` if given (and the rest of a record to `plain`), else all to `plain`.
    fn step(&mut self, read: Option<&mut [u8]>) -> Next {
        if !self.room() {
            return Next::Transmit;
        }
        let status = self
            .conn
            .process_tls_records(&mut self.incoming[..self.in_len]);
        let discard = status.discard;
        let next = match status.state {
            Err(e) => Next::Fail(FlowError::Tls(e)),
            Ok(ConnectionState::EncodeTlsData(mut state)) => {
                if encode_into(&mut state, &mut self.outgoing, &mut self.out_len) {
                    Next::Again
                } else {
                    Next::Fail(FlowError::TooLarge)
                }
            }
            Ok(ConnectionState::TransmitTlsData(state)) => {
                state.done();
                Next::Transmit
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Next::Established,
            Ok(ConnectionState::ReadTraffic(mut state)) => match state.next_record() {
                Some(Ok(record)) => {
                    let payload = record.payload;
                    let taken = match read {
                        Some(buf) if self.plain_pos >= self.plain.len() => {
                            let n = buf.len().min(payload.len());
                            buf[..n].copy_from_slice(&payload[..n]);
                            n
                        }
                        _ => 0,
                    };
                    let rest = &payload[taken..];
                    if rest.is_empty() {
                        Next::Got(taken)
                    } else {
                        if self.plain_pos >= self.plain.len() {
                            self.plain.clear();
                            self.plain_pos = 0;
                        }
                        if self.plain.try_reserve(rest.len()).is_err() {
                            Next::Fail(FlowError::OutOfMemory)
                        } else {
                            self.plain.extend_from_slice(rest);
                            Next::Got(taken)
                        }
                    }
                }
                Some(Err(e)) => Next::Fail(FlowError::Tls(e)),
                None => Next::Again,
            },
            Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => Next::Eof,
            Ok(ConnectionState::ReadEarlyData(_)) => {
                Next::Fail(FlowError::Unexpected("early data"))
            }
            Ok(_) => Next::Fail(FlowError::Unexpected("unknown state")),
        };
        if discard > 0 {
            self.incoming.copy_within(discard..self.in_len, 0);
            self.in_len -= discard;
        }
        next
    }

    /// Whether `outgoing` can take the largest record.
    fn room(&self) -> bool {
        OUT_CAPACITY - self.out_len >= MAX_RECORD_WIRE
    }

    /// Sends `outgoing[..out_len]`.
    async fn transmit(&mut self) -> Result<(), FlowError> {
        let n = self.out_len;
        self.out_len = 0;
        self.tcp.write_all(&self.outgoing[..n]).await?;
        Ok(())
    }

    /// Reads more TLS bytes from the peer.
    async fn fill(&mut self) -> Result<(), FlowError> {
        if self.in_len == self.incoming.len() {
            return Err(FlowError::TooLarge);
        }
        let n = self.tcp.read(&mut self.incoming[self.in_len..]).await?;
        if n == 0 {
            return Err(FlowError::PeerClosed);
        }
        self.in_len += n;
        Ok(())
    }

    /// After an error: encodes and sends the alert rustls queued, if any (best effort; the
    /// handshake's deadline bounds it).
    async fn send_alert(&mut self) {
        for _ in 0..4 {
            if !self.room() {
                break;
            }
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[..self.in_len]);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut state)) => {
                    if !encode_into(&mut state, &mut self.outgoing, &mut self.out_len) {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(state)) => state.done(),
                _ => break,
            }
        }
        if self.out_len > 0 {
            let _ = self.transmit().await;
        }
    }
}

impl<F: TcpFlow> TcpFlow for TlsFlow<F> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.plain_pos < self.plain.len() {
            let n = buf.len().min(self.plain.len() - self.plain_pos);
            buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
            self.plain_pos += n;
            if self.plain_pos == self.plain.len() {
                self.plain.clear();
                self.plain_pos = 0;
            }
            return Ok(n);
        }
        if self.eof {
            return Ok(0);
        }
        loop {
            match self.step(Some(&mut *buf)) {
                Next::Again => {}
                Next::Transmit => self.transmit().await?,
                Next::Got(0) => {}
                Next::Got(n) => return Ok(n),
                Next::Read | Next::Established => {
                    if self.in_len == self.incoming.len() {
                        return Err(NetError::Other);
                    }
                    let n = self.tcp.read(&mut self.incoming[self.in_len..]).await?;
                    if n == 0 {
                        // Closed without close_notify: the end of the stream all the same
                        // (HTTP/1.1 frames its messages itself).
                        self.eof = true;
                        return Ok(0);
                    }
                    self.in_len += n;
                }
                Next::Eof => {
                    self.eof = true;
                    return Ok(0);
                }
                Next::Fail(e) => {
                    self.send_alert().await;
                    return Err(e.into());
                }
            }
        }
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = &buf[..buf.len().min(RECORD_PLAINTEXT)];
        loop {
            if !self.room() {
                self.transmit().await?;
            }
            // Records that arrive meanwhile are kept for the next read.
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[..self.in_len]);
            let discard = status.discard;
            let next = match status.state {
                Ok(ConnectionState::WriteTraffic(mut state)) => {
                    match state.encrypt(chunk, &mut self.outgoing[self.out_len..]) {
                        Ok(n) => {
                            self.out_len += n;
                            Next::Got(chunk.len())
                        }
                        Err(_) => Next::Fail(FlowError::TooLarge),
                    }
                }
                Ok(ConnectionState::ReadTraffic(mut state)) => match state.next_record() {
                    Some(Ok(record)) => {
                        if self.plain.try_reserve(record.payload.len()).is_err() {
                            Next::Fail(FlowError::OutOfMemory)
                        } else {
                            self.plain.extend_from_slice(record.payload);
                            Next::Again
                        }
                    }
                    Some(Err(e)) => Next::Fail(FlowError::Tls(e)),
                    None => Next::Again,
                },
                Ok(ConnectionState::EncodeTlsData(mut state)) => {
                    if encode_into(&mut state, &mut self.outgoing, &mut self.out_len) {
                        Next::Again
                    } else {
                        Next::Fail(FlowError::TooLarge)
                    }
                }
                Ok(ConnectionState::TransmitTlsData(state)) => {
                    state.done();
                    Next::Transmit
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.eof = true;
                    Next::Again
                }
                Ok(ConnectionState::Closed) => Next::Fail(FlowError::Net(NetError::Closed)),
                Ok(ConnectionState::BlockedHandshake) => {
                    Next::Fail(FlowError::Unexpected("handshake after it completed"))
                }
                Ok(_) => Next::Fail(FlowError::Unexpected("unknown state")),
                Err(e) => Next::Fail(FlowError::Tls(e)),
            };
            if discard > 0 {
                self.incoming.copy_within(discard..self.in_len, 0);
                self.in_len -= discard;
            }
            match next {
                Next::Got(n) => {
                    self.transmit().await?;
                    return Ok(n);
                }
                Next::Transmit => self.transmit().await?,
                Next::Fail(e) => return Err(e.into()),
                _ => {}
            }
        }
    }

    async fn close(&mut self) -> Result<(), NetError> {
        for _ in 0..8 {
            if !self.room() {
                self.transmit().await?;
            }
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[..self.in_len]);
            let discard = status.discard;
            let done = match status.state {
                Ok(ConnectionState::WriteTraffic(mut state)) => {
                    if let Ok(n) = state.queue_close_notify(&mut self.outgoing[self.out_len..]) {
                        self.out_len += n;
                    }
                    true
                }
                Ok(ConnectionState::ReadTraffic(mut state)) => {
                    // Unread requests are dropped: the application is closing.
                    let _ = state.next_record();
                    false
                }
                Ok(ConnectionState::EncodeTlsData(mut state)) => {
                    encode_into(&mut state, &mut self.outgoing, &mut self.out_len);
                    false
                }
                Ok(ConnectionState::TransmitTlsData(state)) => {
                    state.done();
                    false
                }
                Ok(ConnectionState::PeerClosed) => false,
                _ => true,
            };
            if discard > 0 {
                self.incoming.copy_within(discard..self.in_len, 0);
                self.in_len -= discard;
            }
            if done {
                break;
            }
        }
        if self.out_len > 0 {
            self.transmit().await?;
        }
        self.tcp.close().await
    }

    fn peer(&self) -> SocketAddrV4 {
        self.tcp.peer()
    }
}

/// Encodes the TLS bytes rustls has for the peer into `out` after the `out_len` bytes
/// already there; false if they do not fit.
fn encode_into(
    state: &mut EncodeTlsData<'_, ServerConnectionData>,
    out: &mut [u8],
    out_len: &mut usize,
) -> bool {
    match state.encode(&mut out[*out_len..]) {
        Ok(n) => {
            *out_len += n;
            true
        }
        Err(_) => false,
    }
}
