//! TCP on an IPv4 stack: listeners with a backlog, connections, and flows with wakers.
//!
//! smoltcp has no accept queue: a socket listens, takes one handshake, and becomes that
//! connection. A [`TcpListener`] therefore owns a set of sockets on its port, keeps
//! [`LISTEN_BACKLOG`] of them listening, and hands out the ones whose handshake completed.
//! Everything a socket could be waiting for wakes the tasks through smoltcp's wakers, except
//! accepting, whose wakers the listener keeps and [`TcpState::maintain_listeners`] wakes.
//!
//! This module does not know the stack it runs on. Its own state (listeners, the sockets of
//! dropped flows, the next ephemeral port) is a [`TcpState`] the stack holds and drives from
//! its poll; the handles reach the interface, the socket set and the clock through [`Host`],
//! which lends them as a [`Net`] for the length of one operation.

use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::SocketAddrV4;
use core::task::{Context, Poll, Waker};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, RecvError, SendError, State};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use compose_devices::logs::{self, Level, Source};
use compose_devices::metrics;

use crate::{LINGER, LISTEN_BACKLOG, MAX_PENDING, NetError, SOCKET_BUFFER, TCP_TIMEOUT};

/// First port of the IANA dynamic range, used for outgoing connections.
const EPHEMERAL_FIRST: u16 = 49152;

/// What TCP borrows from the stack it runs on, for one operation.
pub struct Net<'a> {
    pub(crate) iface: &'a mut Interface,
    pub(crate) sockets: &'a mut SocketSet<'static>,
    /// When the stack was last polled: the clock of everything the sockets do.
    pub(crate) now: Instant,
    /// Whether the stack has an address (a DHCP stack has none until its first lease).
    pub(crate) has_address: bool,
    /// Tasks the stack wakes when it gets an address.
    pub(crate) address_wakers: &'a mut Vec<Waker>,
    pub(crate) tcp: &'a mut TcpState,
}

/// A stack TCP runs on: a cheap, cloneable handle that lends its parts to TCP.
///
/// The closure must not call back into the host (the parts are borrowed while it runs).
pub trait Host: Clone {
    /// Runs `f` on the stack's interface, sockets, clock and TCP state.
    fn with_net<R>(&self, f: impl FnOnce(Net<'_>) -> R) -> R;
}

/// A listener's sockets and the tasks waiting in `accept`.
struct ListenerState {
    port: u16,
    /// Sockets on `port` that were not accepted yet: listening, handshaking, or connected.
    sockets: Vec<SocketHandle>,
    wakers: Vec<Waker>,
    /// Whether no socket is listening (the backlog is full, or memory is short).
    full: bool,
}

/// A dropped flow's socket, kept until its connection has ended.
struct Orphan {
    handle: SocketHandle,
    /// When it is reset if still open; after the reset, when it is removed regardless.
    deadline: Instant,
    aborted: bool,
}

/// TCP's own state on a stack: its listeners, the sockets of dropped flows that are still
/// closing, and the next ephemeral port. The stack holds it and calls
/// [`TcpState::maintain_listeners`] and [`TcpState::reap_orphans`] from its poll.
pub(crate) struct TcpState {
    /// Listening ports; a listener's id is its index here.
    listeners: Vec<Option<ListenerState>>,
    /// Sockets of dropped flows that are still closing.
    orphans: Vec<Orphan>,
    /// The next local port to try for an outgoing connection or `listen(0)`.
    next_port: u16,
}

impl TcpState {
    /// No listeners, no orphans, and ephemeral ports starting at a place `seed` picks.
    pub(crate) fn new(seed: u64) -> Self {
        let span = 65535 - EPHEMERAL_FIRST;
        TcpState {
            listeners: Vec::new(),
            orphans: Vec::new(),
            next_port: EPHEMERAL_FIRST + (seed % u64::from(span)) as u16,
        }
    }

    /// Whether an outgoing connection from `port` or a listener on it would clash.
    fn port_in_use(&self, sockets: &SocketSet<'static>, port: u16) -> bool {
        self.listeners.iter().flatten().any(|l| l.port == port)
            || sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => {
                    t.local_endpoint().is_some_and(|e| e.port == port)
                        || t.listen_endpoint().port == port
                }
                #[allow(unreachable_patterns)] // DHCP's socket is the only other kind
                _ => false,
            })
    }

    /// A free port from the dynamic range, for `listen(0)` and outgoing connections.
    fn ephemeral_port(&mut self, sockets: &SocketSet<'static>) -> Option<u16> {
        let span = 65535 - EPHEMERAL_FIRST + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == 65535 {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            if !self.port_in_use(sockets, port) {
                return Some(port);
            }
        }
        None
    }

    /// Keeps each listener's backlog: drops connections reset before they were accepted,
    /// tops up the listening sockets, and wakes `accept`ers when a connection is ready.
    pub(crate) fn maintain_listeners(&mut self, sockets: &mut SocketSet<'static>) {
        for l in self.listeners.iter_mut().flatten() {
            l.maintain(sockets);
        }
    }

    /// Puts in `ports` the ports whose listener has no socket listening (its backlog is
    /// full, or memory is short): the stack drops a SYN to one rather than let smoltcp
    /// reset it.
    pub(crate) fn refused_ports(&self, ports: &mut Vec<u16>) {
        ports.clear();
        ports.extend(
            self.listeners
                .iter()
                .flatten()
                .filter(|l| l.full)
                .map(|l| l.port),
        );
    }

    /// Removes the sockets of dropped flows whose connection has ended, and resets those
    /// that outlived [`LINGER`]. Returns the next orphan deadline.
    pub(crate) fn reap_orphans(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
    ) -> Option<Instant> {
        self.orphans.retain_mut(|o| {
            let s = sockets.get_mut::<tcp::Socket>(o.handle);
            // Closed with no endpoint: the FIN exchange or the reset is complete. In
            // FIN-WAIT-2 and TIME-WAIT the peer has acknowledged everything including our
            // FIN: nothing of ours is left to deliver, so the socket (and its buffers) goes
            // at once rather than waiting for a peer that may never close (what the peer
            // still sends gets a reset).
            let done = matches!(s.state(), State::FinWait2 | State::TimeWait)
                || (s.state() == State::Closed && s.remote_endpoint().is_none());
            if done || (o.aborted && now >= o.deadline) {
                sockets.remove(o.handle);
                return false;
            }
            if now >= o.deadline {
                // The connection outlived LINGER: a peer that never acknowledged our FIN.
                metrics::TCP_TIMED_OUT.inc();
                // One RST goes out on the next egress; give it a second, then remove.
                s.abort();
                o.aborted = true;
                o.deadline = now + smoltcp::time::Duration::from_secs(1);
            }
            true
        });
        self.orphans.iter().map(|o| o.deadline).min()
    }

    /// Releases a socket nobody will use again: removes it if its connection is over, else
    /// closes it gracefully (or resets it) and keeps it as an orphan until the connection
    /// ends.
    fn release(
        &mut self,
        sockets: &mut SocketSet<'static>,
        handle: SocketHandle,
        graceful: bool,
        now: Instant,
    ) {
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if s.state() == State::Listen
            || (s.state() == State::Closed && s.remote_endpoint().is_none())
        {
            sockets.remove(handle);
            return;
        }
        let deadline = if graceful {
            s.close();
            now + LINGER.into()
        } else {
            s.abort();
            now
        };
        self.orphans.push(Orphan {
            handle,
            deadline,
            aborted: !graceful,
        });
    }
}

impl ListenerState {
    /// Keeps this listener's backlog (see [`TcpState::maintain_listeners`]).
    fn maintain(&mut self, sockets: &mut SocketSet<'static>) {
        let mut listening = 0;
        let mut ready = false;
        self.sockets.retain(|&h| {
            let s = sockets.get::<tcp::Socket>(h);
            let state = s.state();
            // A connection reset before it was accepted: nobody will ever see it.
            if state == State::Closed && s.remote_endpoint().is_none() {
                sockets.remove(h);
                return false;
            }
            listening += usize::from(state == State::Listen);
            ready |= acceptable(state);
            true
        });
        while listening < LISTEN_BACKLOG && self.sockets.len() < MAX_PENDING {
            // Out of memory: no more listening sockets for now; SYNs wait (see `full`).
            let Some(mut s) = new_socket() else {
                break;
            };
            // Listening on a fixed, non-zero port of a fresh socket cannot fail.
            if s.listen(self.port).is_err() {
                break;
            }
            self.sockets.push(sockets.add(s));
            listening += 1;
        }
        // With no socket listening, a SYN would be answered with a reset: the stack drops
        // it instead, and the client sends it again a second later, when the application
        // has accepted some of the pending connections (as a full accept queue does on
        // Linux).
        if listening == 0 && !self.full && logs::enabled(Source::Stack, Level::Warn) {
            logs::log(
                Source::Stack,
                Level::Warn,
                format_args!(
                    "port {}: {} connections wait to be accepted; new ones are held back",
                    self.port,
                    self.sockets.len()
                ),
            );
        }
        self.full = listening == 0;
        if ready {
            for w in self.wakers.drain(..) {
                w.wake();
            }
        }
    }
}

/// A socket with the standard buffers and Nagle's algorithm off (a response leaves at
/// once, not when the client's delayed ACK comes), or `None` if memory is short: the
/// buffers are allocated fallibly, so that running out of memory refuses a connection
/// instead of panicking the unikernel.
fn new_socket() -> Option<tcp::Socket<'static>> {
    let buffer = || {
        let mut v = Vec::new();
        v.try_reserve_exact(SOCKET_BUFFER).ok()?;
        v.resize(SOCKET_BUFFER, 0u8);
        Some(tcp::SocketBuffer::new(v))
    };
    let rx = buffer()?;
    let tx = buffer()?;
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(false);
    Some(s)
}

/// Whether a socket taken from a listener is a connection that `accept` can return.
fn acceptable(state: State) -> bool {
    !matches!(state, State::Listen | State::SynReceived | State::Closed)
}

fn peer_of(endpoint: Option<IpEndpoint>) -> SocketAddrV4 {
    match endpoint {
        // With IPv4 as the only protocol, every endpoint is IPv4.
        #[allow(irrefutable_let_patterns)]
        Some(IpEndpoint {
            addr: IpAddress::Ipv4(a),
            port,
        }) => SocketAddrV4::new(a, port),
        #[allow(unreachable_patterns)]
        _ => SocketAddrV4::new(core::net::Ipv4Addr::UNSPECIFIED, 0),
    }
}

/// TCP on a stack (`H` is [`crate::Stack`]; the crate root names this `Tcp<D>`).
pub struct Tcp<H: Host> {
    stack: H,
}

impl<H: Host + core::fmt::Debug> core::fmt::Debug for Tcp<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tcp").field("stack", &self.stack).finish()
    }
}

impl<H: Host> Tcp<H> {
    /// TCP on `stack` (a [`crate::Stack`], or a platform type that wraps one).
    pub fn new<S: AsRef<H> + ?Sized>(stack: &S) -> Result<Self, NetError> {
        Ok(Tcp {
            stack: stack.as_ref().clone(),
        })
    }

    /// The stack this runs on.
    pub fn stack(&self) -> &H {
        &self.stack
    }
}

impl<H: Host> compose_devices::net::Tcp for Tcp<H> {
    type Listener = TcpListener<H>;
    type Flow = TcpFlow<H>;

    /// Listens on `port` of every address the stack has (including a lease to come);
    /// port 0 picks a free port from the dynamic range. Fails with `AddrInUse` if another
    /// listener or a connection already uses the port.
    fn listen(&self, port: u16) -> Result<TcpListener<H>, NetError> {
        let (id, port) = self.stack.with_net(|net| {
            let tcp = net.tcp;
            let port = match port {
                0 => tcp.ephemeral_port(net.sockets).ok_or(NetError::Exhausted)?,
                p if tcp.port_in_use(net.sockets, p) => return Err(NetError::AddrInUse),
                p => p,
            };
            let mut state = ListenerState {
                port,
                sockets: Vec::new(),
                wakers: Vec::new(),
                full: false,
            };
            state.maintain(net.sockets);
            let id = match tcp.listeners.iter().position(Option::is_none) {
                Some(free) => {
                    tcp.listeners[free] = Some(state);
                    free
                }
                None => {
                    tcp.listeners.push(Some(state));
                    tcp.listeners.len() - 1
                }
            };
            Ok((id, port))
        })?;
        Ok(TcpListener {
            stack: self.stack.clone(),
            id,
            port,
        })
    }

    /// The interface's address, once it has one (a lease may still be to come).
    fn local_address(&self) -> Option<core::net::Ipv4Addr> {
        self.stack.with_net(|net| net.iface.ipv4_addr())
    }

    /// Connects to `peer`. With DHCP, waits for the first lease. Fails with
    /// `ConnectionReset` if the peer refuses, `TimedOut` if it does not answer within
    /// [`TCP_TIMEOUT`], and `Unreachable` if the stack has no route to it or got no lease
    /// within [`TCP_TIMEOUT`].
    async fn connect(&self, peer: SocketAddrV4) -> Result<TcpFlow<H>, NetError> {
        // Wait for an address first: only a DHCP stack can be without one.
        let leased = poll_fn(|cx| {
            self.stack.with_net(|net| {
                if net.has_address {
                    return Poll::Ready(());
                }
                if !net.address_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    net.address_wakers.push(cx.waker().clone());
                }
                Poll::Pending
            })
        });
        if compose_devices::executor::timeout(TCP_TIMEOUT, leased)
            .await
            .is_none()
        {
            return Err(NetError::Unreachable);
        }

        let (handle, started) = self.stack.with_net(|net| {
            let local = net
                .tcp
                .ephemeral_port(net.sockets)
                .ok_or(NetError::Exhausted)?;
            let mut socket = new_socket().ok_or(NetError::Exhausted)?;
            socket.set_timeout(Some(TCP_TIMEOUT.into()));
            let remote = IpEndpoint::new(IpAddress::Ipv4(*peer.ip()), peer.port());
            socket
                .connect(net.iface.context(), remote, local)
                .map_err(|e| match e {
                    tcp::ConnectError::Unaddressable => NetError::Unreachable,
                    tcp::ConnectError::InvalidState => NetError::Other,
                })?;
            Ok::<_, NetError>((net.sockets.add(socket), net.now))
        })?;
        // From here on, dropping `flow` (also when this future is dropped) releases the
        // socket.
        let flow = TcpFlow::new(self.stack.clone(), handle, peer);
        poll_fn(|cx| {
            flow.with_socket(|s, now| match s.state() {
                State::SynSent | State::SynReceived => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                State::Closed if now - started >= TCP_TIMEOUT.into() => {
                    Poll::Ready(Err(NetError::TimedOut))
                }
                State::Closed => Poll::Ready(Err(NetError::ConnectionReset)),
                _ => Poll::Ready(Ok(())),
            })
        })
        .await?;
        Ok(flow)
    }
}

/// A listening port.
///
/// smoltcp has no accept queue: a socket listens, takes one handshake, and becomes that
/// connection. A listener therefore owns a set of sockets on its port, keeps
/// [`LISTEN_BACKLOG`] of them listening (refilled after every frame the stack takes in),
/// and hands out those whose handshake completed, at most [`MAX_PENDING`] waiting.
///
/// Dropping it stops listening and resets the connections it had not handed out.
pub struct TcpListener<H: Host> {
    stack: H,
    id: usize,
    port: u16,
}

impl<H: Host> core::fmt::Debug for TcpListener<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpListener")
            .field("port", &self.port)
            .finish()
    }
}

impl<H: Host> TcpListener<H> {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<TcpFlow<H>, NetError>> {
        let accepted = self.stack.with_net(|net| {
            let Some(Some(l)) = net.tcp.listeners.get_mut(self.id) else {
                return Poll::Ready(Err(NetError::Closed));
            };
            let found = l
                .sockets
                .iter()
                .position(|&h| acceptable(net.sockets.get::<tcp::Socket>(h).state()));
            let Some(i) = found else {
                if !l.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    l.wakers.push(cx.waker().clone());
                }
                return Poll::Pending;
            };
            let handle = l.sockets.remove(i);
            let socket = net.sockets.get_mut::<tcp::Socket>(handle);
            socket.set_timeout(Some(TCP_TIMEOUT.into()));
            let peer = peer_of(socket.remote_endpoint());
            l.maintain(net.sockets);
            Poll::Ready(Ok((handle, peer)))
        });
        accepted.map_ok(|(handle, peer)| TcpFlow::new(self.stack.clone(), handle, peer))
    }
}

impl<H: Host> compose_devices::net::TcpListener for TcpListener<H> {
    type Flow = TcpFlow<H>;

    async fn accept(&self) -> Result<TcpFlow<H>, NetError> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn port(&self) -> u16 {
        self.port
    }
}

impl<H: Host> Drop for TcpListener<H> {
    fn drop(&mut self) {
        let wakers = self.stack.with_net(|net| {
            let state = net.tcp.listeners.get_mut(self.id).and_then(Option::take)?;
            for handle in state.sockets {
                net.tcp.release(net.sockets, handle, false, net.now);
            }
            Some(state.wakers)
        });
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }
}

/// A TCP connection.
///
/// Dropping it closes the connection gracefully (a FIN after the queued data); the stack
/// removes the socket once the connection has ended, or resets it after [`LINGER`].
pub struct TcpFlow<H: Host> {
    stack: H,
    handle: SocketHandle,
    peer: SocketAddrV4,
    write_closed: bool,
    /// Whether dropping resets the connection instead of closing it.
    abort_on_drop: bool,
}

impl<H: Host> core::fmt::Debug for TcpFlow<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpFlow").field("peer", &self.peer).finish()
    }
}

impl<H: Host> TcpFlow<H> {
    fn new(stack: H, handle: SocketHandle, peer: SocketAddrV4) -> Self {
        metrics::tcp_opened(peer);
        TcpFlow {
            stack,
            handle,
            peer,
            write_closed: false,
            abort_on_drop: false,
        }
    }

    fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>, Instant) -> R) -> R {
        self.stack
            .with_net(|net| f(net.sockets.get_mut::<tcp::Socket>(self.handle), net.now))
    }

    /// The connection's state, as smoltcp sees it (for diagnostics and tests).
    pub fn state(&self) -> State {
        self.with_socket(|s, _| s.state())
    }

    /// The local port.
    pub fn local_port(&self) -> u16 {
        self.with_socket(|s, _| s.local_endpoint().map_or(0, |e| e.port))
    }

    /// Resets the connection at once (an RST to the peer), dropping queued data.
    pub fn abort(mut self) {
        self.abort_on_drop = true;
    }
}

impl<H: Host> compose_devices::net::TcpFlow for TcpFlow<H> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            self.with_socket(|s, _| match s.recv_slice(buf) {
                Ok(0) => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => {
                    metrics::TCP_BYTES_IN.add(n as u64);
                    Poll::Ready(Ok(n))
                }
                Err(RecvError::Finished) => Poll::Ready(Ok(0)),
                Err(RecvError::InvalidState) => match s.state() {
                    State::SynSent | State::SynReceived => {
                        s.register_recv_waker(cx.waker());
                        Poll::Pending
                    }
                    _ => Poll::Ready(Err(NetError::ConnectionReset)),
                },
            })
        })
        .await
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if self.write_closed {
            return Err(NetError::Closed);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            self.with_socket(|s, _| match s.send_slice(buf) {
                Ok(0) => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                Ok(n) => {
                    metrics::TCP_BYTES_OUT.add(n as u64);
                    Poll::Ready(Ok(n))
                }
                Err(SendError::InvalidState) => match s.state() {
                    State::SynSent | State::SynReceived => {
                        s.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                    _ => Poll::Ready(Err(NetError::ConnectionReset)),
                },
            })
        })
        .await
    }

    async fn write2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, NetError> {
        if first.is_empty() {
            return self.write(second).await;
        }
        let n = self.write(first).await?;
        if n < first.len() || second.is_empty() {
            return Ok(n);
        }
        // `first` is in the send buffer; add what fits of `second` before the stack runs,
        // so the two leave as one stream of full segments.
        let more = self.with_socket(|s, _| s.send_slice(second).unwrap_or(0));
        metrics::TCP_BYTES_OUT.add(more as u64);
        Ok(n + more)
    }

    async fn close(&mut self) -> Result<(), NetError> {
        if self.write_closed {
            return Ok(());
        }
        self.write_closed = true;
        self.with_socket(|s, _| {
            if s.state() == State::Closed {
                return Err(NetError::ConnectionReset);
            }
            s.close();
            Ok(())
        })
    }

    fn peer(&self) -> SocketAddrV4 {
        self.peer
    }
}

impl<H: Host> Drop for TcpFlow<H> {
    fn drop(&mut self) {
        let (handle, graceful) = (self.handle, !self.abort_on_drop);
        metrics::tcp_released(self.peer, !graceful);
        self.stack
            .with_net(|net| net.tcp.release(net.sockets, handle, graceful, net.now));
    }
}
