//! TLS for compose unikernels: a device that provides the `tcp` interface on top of a `tcp`
//! it requires, so an unchanged server (the static site) speaks HTTPS.
//!
//! rustls 0.23 without std, driven through its unbuffered API
//! ([`rustls::server::UnbufferedServerConnection`]): records go through two fixed buffers
//! per connection (18 KiB in, 16.5 KiB out), allocated fallibly when the handshake starts.
//! Crypto is `rustls-rustcrypto` (pure Rust, so it builds for the targets without an OS);
//! its randomness and rustls' come from the `random` device, time from the wall clock.
//!
//! [`Tls::listen`](compose_devices::net::Tcp::listen) starts a task that accepts plain
//! connections and runs each handshake in a task of its own, under a deadline and a cap on
//! how many run at once; `accept()` yields only connections whose handshake completed. A
//! failed handshake (garbage, plain HTTP, an old protocol, a peer that goes away or says
//! nothing) sends its alert where one applies and frees the socket, the rustls state and the
//! buffers: the task that owned them ends.

#![no_std]

extern crate alloc;

mod flow;
pub mod keys;
mod random;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec;
use core::cell::RefCell;
use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::task::{Poll, Waker};
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::logs::{self, Level, Source};
use compose_devices::metrics;
use compose_devices::net::{NetError, Tcp, TcpListener};
use compose_devices::random::Random;
use compose_devices::secret::Secret;
use compose_devices::time::WallClock;
use rustls::ServerConfig;

pub use flow::TlsFlow;
pub use keys::KeyError;

/// The device's properties.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a handshake may take, from the TCP accept to the client's Finished.
    pub handshake_timeout: Duration,
    /// Handshakes (and completed connections not yet accepted) at once; further clients
    /// wait in the TCP stack's backlog.
    pub max_handshakes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
        }
    }
}

/// Why the device cannot start.
#[derive(Debug)]
pub enum Error {
    /// The secret is not a usable certificate chain and key.
    Secret {
        /// The secret's name in the spec.
        name: &'static str,
        /// What is wrong with it.
        error: KeyError,
    },
    /// rustls refused the configuration.
    Config(rustls::Error),
    /// A property out of range.
    Property(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Secret { name, error } => write!(f, "secret `{name}`: {error}"),
            Error::Config(e) => write!(f, "TLS configuration refused: {e}"),
            Error::Property(p) => f.write_str(p),
        }
    }
}

impl core::error::Error for Error {}

/// The `tls` device: TLS server connections over `T`.
pub struct Tls<C: 'static, T: 'static> {
    console: &'static C,
    tcp: &'static T,
    server: Arc<ServerConfig>,
    config: Config,
}

impl<C, T> fmt::Debug for Tls<C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The crypto provider the device uses (`rustls-rustcrypto`), with its own randomness.
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls_rustcrypto::provider()
}

/// The server configuration for the certificate and key in `pem`.
pub fn server_config(
    pem: &[u8],
    secret_name: &'static str,
    random: &'static dyn rustls::crypto::SecureRandom,
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Result<ServerConfig, Error> {
    let mut provider = provider();
    provider.secure_random = random;
    // Without an OS the AES code is portable (no AES-NI: see docs/tls.md), several times
    // slower than ChaCha20-Poly1305's: prefer ChaCha20 there, whatever the client's order.
    let soft_aes = cfg!(target_os = "none");
    if soft_aes {
        provider.cipher_suites.sort_by_key(|s| {
            !matches!(
                s.suite(),
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )
        });
    }
    let certified = keys::certified_key(pem, &provider).map_err(|error| Error::Secret {
        name: secret_name,
        error,
    })?;
    let mut server = ServerConfig::builder_with_details(Arc::new(provider), time)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(keys::OneCert(Arc::new(certified))));
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    server.ignore_client_order = soft_aes;
    // No resumption: a unikernel restarts with fresh keys, and tickets cost a record each.
    server.send_tls13_tickets = 0;
    Ok(server)
}

impl<C: Console, T: Tcp> Tls<C, T> {
    /// The device: checks that `secret` (named `secret_name` in the spec) holds a
    /// certificate chain and its private key, and makes the server configuration.
    pub fn new<S: Secret, R: Random, W: WallClock>(
        console: &'static C,
        tcp: &'static T,
        secret: &'static S,
        secret_name: &'static str,
        random: &'static R,
        clock: &'static W,
        config: Config,
    ) -> Result<Self, Error> {
        if config.max_handshakes == 0 {
            return Err(Error::Property("max-handshakes must be at least 1"));
        }
        if config.handshake_timeout.is_zero() {
            return Err(Error::Property(
                "handshake-timeout must be at least 1 second",
            ));
        }
        let random = random::install(random);
        let time = Arc::new(random::Clock(clock));
        let server = server_config(secret.value(), secret_name, random, time)?;
        Ok(Tls {
            console,
            tcp,
            server: Arc::new(server),
            config,
        })
    }
}

/// Shared between a listener, its acceptor task and its handshake tasks.
struct Shared<F> {
    /// Connections whose handshake completed, oldest first.
    ready: VecDeque<TlsFlow<F>>,
    /// Handshakes running plus connections in `ready`.
    pending: u32,
    /// The task waiting in `accept`.
    accept_waker: Option<Waker>,
    /// The acceptor, waiting for a handshake slot.
    slot_waker: Option<Waker>,
    /// The listener was dropped.
    closed: bool,
}

/// A listening TLS socket: yields connections whose handshake completed.
pub struct TlsListener<F> {
    shared: Rc<RefCell<Shared<F>>>,
    port: u16,
}

impl<F> fmt::Debug for TlsListener<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("port", &self.port)
            .finish()
    }
}

impl<F> Drop for TlsListener<F> {
    fn drop(&mut self) {
        let mut s = self.shared.borrow_mut();
        s.closed = true;
        s.ready.clear();
        if let Some(w) = s.slot_waker.take() {
            w.wake();
        }
    }
}

impl<F: compose_devices::net::TcpFlow + 'static> TcpListener for TlsListener<F> {
    type Flow = TlsFlow<F>;

    async fn accept(&self) -> Result<TlsFlow<F>, NetError> {
        core::future::poll_fn(|cx| {
            let mut s = self.shared.borrow_mut();
            match s.ready.pop_front() {
                Some(flow) => {
                    s.pending -= 1;
                    if let Some(w) = s.slot_waker.take() {
                        w.wake();
                    }
                    Poll::Ready(Ok(flow))
                }
                None => {
                    s.accept_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn port(&self) -> u16 {
        self.port
    }
}

impl<C: Console, T: Tcp> Tcp for Tls<C, T>
where
    T::Listener: 'static,
    T::Flow: 'static,
{
    type Listener = TlsListener<T::Flow>;
    type Flow = TlsFlow<T::Flow>;

    fn listen(&self, port: u16) -> Result<Self::Listener, NetError> {
        let inner = self.tcp.listen(port)?;
        let port = inner.port();
        let shared = Rc::new(RefCell::new(Shared {
            ready: VecDeque::new(),
            pending: 0,
            accept_waker: None,
            slot_waker: None,
            closed: false,
        }));
        compose_devices::spawn(acceptor(
            self.console,
            inner,
            shared.clone(),
            self.server.clone(),
            self.config,
        ));
        Ok(TlsListener { shared, port })
    }

    async fn connect(&self, _peer: SocketAddrV4) -> Result<Self::Flow, NetError> {
        // The device is a server: it has no trust anchors to verify a server with.
        Err(NetError::Other)
    }

    fn local_address(&self) -> Option<Ipv4Addr> {
        self.tcp.local_address()
    }
}

/// Accepts plain connections while fewer than `max_handshakes` are pending, and starts a
/// handshake task for each.
async fn acceptor<C: Console, L: TcpListener + 'static>(
    console: &'static C,
    inner: L,
    shared: Rc<RefCell<Shared<L::Flow>>>,
    server: Arc<ServerConfig>,
    config: Config,
) where
    L::Flow: 'static,
{
    loop {
        let open = core::future::poll_fn(|cx| {
            let mut s = shared.borrow_mut();
            if s.closed {
                Poll::Ready(false)
            } else if s.pending < config.max_handshakes {
                Poll::Ready(true)
            } else {
                s.slot_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !open {
            return;
        }
        let tcp = match inner.accept().await {
            Ok(tcp) => tcp,
            Err(e) => {
                if logs::enabled(Source::Tls, Level::Warn) {
                    console.log(&format!("tls: accept failed: {e}"));
                }
                compose_devices::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.borrow().closed {
            return;
        }
        shared.borrow_mut().pending += 1;
        compose_devices::spawn(handshake_task(
            console,
            tcp,
            shared.clone(),
            server.clone(),
            config.handshake_timeout,
        ));
    }
}

/// One handshake: on success the connection joins the listener's ready queue; on failure,
/// or when the deadline passes, everything it holds is dropped here.
async fn handshake_task<C: Console, F: compose_devices::net::TcpFlow + 'static>(
    console: &'static C,
    tcp: F,
    shared: Rc<RefCell<Shared<F>>>,
    server: Arc<ServerConfig>,
    deadline: Duration,
) {
    metrics::TLS_HANDSHAKES_ACTIVE.inc();
    let peer = tcp.peer();
    let outcome =
        compose_devices::executor::timeout(deadline, TlsFlow::handshake(tcp, server)).await;
    metrics::TLS_HANDSHAKES_ACTIVE.dec();
    let mut s = shared.borrow_mut();
    match outcome {
        Some(Ok(flow)) if !s.closed => {
            metrics::TLS_HANDSHAKES_OK.inc();
            s.ready.push_back(flow);
            if let Some(w) = s.accept_waker.take() {
                w.wake();
            }
            return;
        }
        Some(Ok(_)) => metrics::TLS_HANDSHAKES_OK.inc(),
        Some(Err(e)) => {
            metrics::TLS_HANDSHAKES_FAILED.inc();
            if logs::enabled(Source::Tls, Level::Debug) {
                console.log(&format!("tls: handshake with {peer} failed: {e}"));
            }
        }
        None => {
            metrics::TLS_HANDSHAKES_FAILED.inc();
            if logs::enabled(Source::Tls, Level::Debug) {
                console.log(&format!(
                    "tls: handshake with {peer} timed out after {} s",
                    deadline.as_secs()
                ));
            }
        }
    }
    s.pending -= 1;
    if let Some(w) = s.slot_waker.take() {
        w.wake();
    }
}
