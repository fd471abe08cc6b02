//! TCP on a [`Stack`]: listeners with a backlog, connections, and flows with wakers.
//!
//! smoltcp has no accept queue: a socket listens, takes one handshake, and becomes that
//! connection. A [`TcpListener`] therefore owns a set of sockets on its port, keeps
//! [`LISTEN_BACKLOG`] of them listening, and hands out the ones whose handshake completed.
//! Everything a socket could be waiting for wakes the tasks through smoltcp's wakers, except
//! accepting, whose wakers the listener keeps and [`Stack::poll`] wakes.

use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::SocketAddrV4;
use core::task::{Context, Poll, Waker};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, RecvError, SendError, State};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::stack::Inner;
use crate::{
    EthernetDevice, LINGER, LISTEN_BACKLOG, MAX_PENDING, NetError, SOCKET_BUFFER, Stack,
    TCP_TIMEOUT,
};

/// A listener's sockets and the tasks waiting in `accept`.
pub(crate) struct ListenerState {
    pub(crate) port: u16,
    /// Sockets on `port` that were not accepted yet: listening, handshaking, or connected.
    sockets: Vec<SocketHandle>,
    wakers: Vec<Waker>,
}

/// A dropped flow's socket, kept until its connection has ended.
pub(crate) struct Orphan {
    handle: SocketHandle,
    /// When it is reset if still open; after the reset, when it is removed regardless.
    deadline: Instant,
    aborted: bool,
}

/// A socket with the standard buffers.
fn new_socket() -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]);
    let tx = tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]);
    tcp::Socket::new(rx, tx)
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

/// Keeps each listener's backlog: drops connections reset before they were accepted, tops
/// up the listening sockets, and wakes `accept`ers when a connection is ready.
pub(crate) fn maintain_listeners(
    sockets: &mut SocketSet<'static>,
    listeners: &mut [Option<ListenerState>],
) {
    for l in listeners.iter_mut().flatten() {
        let mut listening = 0;
        let mut ready = false;
        l.sockets.retain(|&h| {
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
        while listening < LISTEN_BACKLOG && l.sockets.len() < MAX_PENDING {
            let mut s = new_socket();
            // Listening on a fixed, non-zero port of a fresh socket cannot fail.
            if s.listen(l.port).is_err() {
                break;
            }
            l.sockets.push(sockets.add(s));
            listening += 1;
        }
        if ready {
            for w in l.wakers.drain(..) {
                w.wake();
            }
        }
    }
}

/// Removes the sockets of dropped flows whose connection has ended, and resets those that
/// outlived [`LINGER`]. Returns the next orphan deadline.
pub(crate) fn reap_orphans(
    sockets: &mut SocketSet<'static>,
    orphans: &mut Vec<Orphan>,
    now: Instant,
) -> Option<Instant> {
    orphans.retain_mut(|o| {
        let s = sockets.get_mut::<tcp::Socket>(o.handle);
        // Closed with no endpoint: the FIN exchange or the reset is complete.
        let done = s.state() == State::Closed && s.remote_endpoint().is_none();
        if done || (o.aborted && now >= o.deadline) {
            sockets.remove(o.handle);
            return false;
        }
        if now >= o.deadline {
            // One RST goes out on the next egress; give it a second, then remove.
            s.abort();
            o.aborted = true;
            o.deadline = now + smoltcp::time::Duration::from_secs(1);
        }
        true
    });
    orphans.iter().map(|o| o.deadline).min()
}

/// Releases a socket nobody will use again: removes it if its connection is over, else
/// closes it gracefully and keeps it as an orphan until the connection ends.
fn release<D>(inner: &mut Inner<D>, handle: SocketHandle, graceful: bool) {
    let now = inner.now;
    let s = inner.sockets.get_mut::<tcp::Socket>(handle);
    if s.state() == State::Listen || (s.state() == State::Closed && s.remote_endpoint().is_none()) {
        inner.sockets.remove(handle);
        return;
    }
    let deadline = if graceful {
        s.close();
        now + LINGER.into()
    } else {
        s.abort();
        now
    };
    inner.orphans.push(Orphan {
        handle,
        deadline,
        aborted: !graceful,
    });
}

/// TCP on a [`Stack`].
pub struct Tcp<D: EthernetDevice> {
    stack: Stack<D>,
}

impl<D: EthernetDevice> core::fmt::Debug for Tcp<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tcp").field("stack", &self.stack).finish()
    }
}

impl<D: EthernetDevice> Tcp<D> {
    /// TCP on `stack` (a [`Stack`], or a platform type that wraps one).
    pub fn new<S: AsRef<Stack<D>> + ?Sized>(stack: &S) -> Result<Self, NetError> {
        Ok(Tcp {
            stack: stack.as_ref().clone(),
        })
    }

    /// The stack this runs on.
    pub fn stack(&self) -> &Stack<D> {
        &self.stack
    }
}

impl<D: EthernetDevice> compose_devices::net::Tcp for Tcp<D> {
    type Listener = TcpListener<D>;
    type Flow = TcpFlow<D>;

    /// Listens on `port` of every address the stack has (including a lease to come);
    /// port 0 picks a free port from the dynamic range. Fails with `AddrInUse` if another
    /// listener or a connection already uses the port.
    fn listen(&self, port: u16) -> Result<TcpListener<D>, NetError> {
        let mut guard = self.stack.inner.borrow_mut();
        let inner = &mut *guard;
        let port = match port {
            0 => inner.ephemeral_port().ok_or(NetError::Exhausted)?,
            p if inner.port_in_use(p) => return Err(NetError::AddrInUse),
            p => p,
        };
        let state = ListenerState {
            port,
            sockets: Vec::new(),
            wakers: Vec::new(),
        };
        let id = match inner.listeners.iter().position(Option::is_none) {
            Some(free) => {
                inner.listeners[free] = Some(state);
                free
            }
            None => {
                inner.listeners.push(Some(state));
                inner.listeners.len() - 1
            }
        };
        maintain_listeners(&mut inner.sockets, &mut inner.listeners[id..=id]);
        drop(guard);
        Ok(TcpListener {
            stack: self.stack.clone(),
            id,
            port,
        })
    }

    /// Connects to `peer`. With DHCP, waits for the first lease. Fails with
    /// `ConnectionReset` if the peer refuses, `TimedOut` if it does not answer within
    /// [`TCP_TIMEOUT`], and `Unreachable` if the stack has no route to it or got no lease
    /// within [`TCP_TIMEOUT`].
    async fn connect(&self, peer: SocketAddrV4) -> Result<TcpFlow<D>, NetError> {
        // Wait for an address first: only a DHCP stack can be without one.
        let leased = poll_fn(|cx| {
            let mut inner = self.stack.inner.borrow_mut();
            if inner.address.is_some() {
                return Poll::Ready(());
            }
            if !inner.address_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                inner.address_wakers.push(cx.waker().clone());
            }
            Poll::Pending
        });
        if compose_devices::executor::timeout(TCP_TIMEOUT, leased)
            .await
            .is_none()
        {
            return Err(NetError::Unreachable);
        }

        let (flow, started) = {
            let mut guard = self.stack.inner.borrow_mut();
            let inner = &mut *guard;
            let local = inner.ephemeral_port().ok_or(NetError::Exhausted)?;
            let mut socket = new_socket();
            socket.set_timeout(Some(TCP_TIMEOUT.into()));
            let remote = IpEndpoint::new(IpAddress::Ipv4(*peer.ip()), peer.port());
            socket
                .connect(inner.iface.context(), remote, local)
                .map_err(|e| match e {
                    tcp::ConnectError::Unaddressable => NetError::Unreachable,
                    tcp::ConnectError::InvalidState => NetError::Other,
                })?;
            let handle = inner.sockets.add(socket);
            // From here on, dropping `flow` (also when this future is dropped) releases
            // the socket.
            (TcpFlow::new(self.stack.clone(), handle, peer), inner.now)
        };
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
pub struct TcpListener<D: EthernetDevice> {
    stack: Stack<D>,
    id: usize,
    port: u16,
}

impl<D: EthernetDevice> core::fmt::Debug for TcpListener<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpListener")
            .field("port", &self.port)
            .finish()
    }
}

impl<D: EthernetDevice> TcpListener<D> {
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<TcpFlow<D>, NetError>> {
        let mut guard = self.stack.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(Some(l)) = inner.listeners.get_mut(self.id) else {
            return Poll::Ready(Err(NetError::Closed));
        };
        let found = l
            .sockets
            .iter()
            .position(|&h| acceptable(inner.sockets.get::<tcp::Socket>(h).state()));
        let Some(i) = found else {
            if !l.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                l.wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        };
        let handle = l.sockets.remove(i);
        let socket = inner.sockets.get_mut::<tcp::Socket>(handle);
        socket.set_timeout(Some(TCP_TIMEOUT.into()));
        let peer = peer_of(socket.remote_endpoint());
        maintain_listeners(&mut inner.sockets, &mut inner.listeners[self.id..=self.id]);
        drop(guard);
        Poll::Ready(Ok(TcpFlow::new(self.stack.clone(), handle, peer)))
    }
}

impl<D: EthernetDevice> compose_devices::net::TcpListener for TcpListener<D> {
    type Flow = TcpFlow<D>;

    async fn accept(&self) -> Result<TcpFlow<D>, NetError> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn port(&self) -> u16 {
        self.port
    }
}

impl<D: EthernetDevice> Drop for TcpListener<D> {
    fn drop(&mut self) {
        let mut inner = self.stack.inner.borrow_mut();
        let Some(state) = inner.listeners.get_mut(self.id).and_then(Option::take) else {
            return;
        };
        for handle in state.sockets {
            release(&mut inner, handle, false);
        }
        for w in state.wakers {
            w.wake();
        }
    }
}

/// A TCP connection.
///
/// Dropping it closes the connection gracefully (a FIN after the queued data); the stack
/// removes the socket once the connection has ended, or resets it after [`LINGER`].
pub struct TcpFlow<D: EthernetDevice> {
    stack: Stack<D>,
    handle: SocketHandle,
    peer: SocketAddrV4,
    write_closed: bool,
    /// Whether dropping resets the connection instead of closing it.
    abort_on_drop: bool,
}

impl<D: EthernetDevice> core::fmt::Debug for TcpFlow<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpFlow").field("peer", &self.peer).finish()
    }
}

impl<D: EthernetDevice> TcpFlow<D> {
    fn new(stack: Stack<D>, handle: SocketHandle, peer: SocketAddrV4) -> Self {
        TcpFlow {
            stack,
            handle,
            peer,
            write_closed: false,
            abort_on_drop: false,
        }
    }

    fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>, Instant) -> R) -> R {
        let mut inner = self.stack.inner.borrow_mut();
        let now = inner.now;
        f(inner.sockets.get_mut::<tcp::Socket>(self.handle), now)
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

impl<D: EthernetDevice> compose_devices::net::TcpFlow for TcpFlow<D> {
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
                Ok(n) => Poll::Ready(Ok(n)),
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
                Ok(n) => Poll::Ready(Ok(n)),
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

impl<D: EthernetDevice> Drop for TcpFlow<D> {
    fn drop(&mut self) {
        let mut inner = self.stack.inner.borrow_mut();
        release(&mut inner, self.handle, !self.abort_on_drop);
    }
}
