//! Networking on the host's stack: non-blocking sockets driven by the reactor.
//!
//! On unix the unikernel does not run a TCP/IP stack of its own. [`Netif`] only names the
//! attachment, [`Ipv4`] chooses the host address sockets bind to, and [`Tcp`] opens
//! non-blocking host sockets. An operation that would block awaits readiness from the
//! reactor, so other tasks run meanwhile and an idle unikernel sleeps in epoll_wait(2).

use std::io::{self, Read};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use compose_devices::kv::FileSpan;
use compose_devices::metrics;
use compose_devices::net::{Ipv4Cidr, NetError};

use crate::Error;
use crate::reactor::{forget, readable, writable};

/// Pending connections a listener queues before the kernel refuses more (capped by
/// `net.core.somaxconn`).
const BACKLOG: libc::c_int = 1024;

/// How many reads in a row may complete without waiting before the task yields, so that
/// one busy connection cannot starve the others.
const READ_BUDGET: u32 = 64;

/// A slice of the executable's read-only image (an embedded asset archive's value) at least
/// this long is sent from the executable's file with sendfile(2), not copied out of memory:
/// below it, one copying sendmsg costs less than a send and a sendfile.
const SENDFILE_FROM_IMAGE: usize = 16 * 1024;

/// The most bytes one sendfile(2) call is asked for (the kernel caps it near 2 GiB).
const SENDFILE_MAX: u64 = 0x7fff_f000;

/// A network interface. On unix it is the host's networking; this only carries the name.
#[derive(Debug)]
pub struct Netif {
    name: &'static str,
}

impl Netif {
    /// The interface the spec calls `name`.
    pub fn new(name: &'static str) -> Result<Self, Error> {
        Ok(Netif { name })
    }
}

impl compose_devices::net::Netif for Netif {
    fn name(&self) -> &str {
        self.name
    }
    fn mac(&self) -> Option<[u8; 6]> {
        None
    }
    fn mtu(&self) -> u16 {
        1500
    }
}

/// How an IPv4 stack gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Config {
    /// A static address.
    pub address: Option<Ipv4Cidr>,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Whether to lease an address by DHCP.
    pub dhcp: bool,
}

/// An IPv4 stack. On unix a static address is a host address to bind sockets to (0.0.0.0
/// for all of them); with no address sockets bind to loopback (127.0.0.1), so that a
/// development unikernel is not reachable from other hosts unless the spec (or a boot
/// argument) says so; with DHCP, which asks for the host's network, sockets bind to all host
/// addresses (0.0.0.0).
#[derive(Debug)]
pub struct Ipv4 {
    netif: &'static Netif,
    config: Ipv4Config,
}

impl Ipv4 {
    /// The stack on `netif`. Fails if the static address is not one of the host's.
    pub fn new(netif: &'static Netif, config: Ipv4Config) -> Result<Self, Error> {
        let stack = Ipv4 { netif, config };
        let local = stack.local_address();
        if !local.is_unspecified() {
            UdpSocket::bind((local, 0)).map_err(|e| {
                Error::new(format!(
                    "cannot use {local}: it is not an address of this host ({e})"
                ))
            })?;
        }
        Ok(stack)
    }

    /// The interface the stack is on.
    pub fn netif(&self) -> &'static Netif {
        self.netif
    }

    /// The host address sockets bind to: the static address; 127.0.0.1 with none; 0.0.0.0
    /// with DHCP.
    pub fn local_address(&self) -> Ipv4Addr {
        match self.config {
            Ipv4Config { dhcp: true, .. } => Ipv4Addr::UNSPECIFIED,
            Ipv4Config {
                address: Some(cidr),
                ..
            } => cidr.address,
            Ipv4Config { address: None, .. } => Ipv4Addr::LOCALHOST,
        }
    }
}

impl compose_devices::net::Ipv4 for Ipv4 {
    fn address(&self) -> Option<Ipv4Cidr> {
        // The host leases addresses itself; a DHCP stack on unix has none of its own.
        if self.config.dhcp {
            None
        } else {
            self.config.address
        }
    }
    fn gateway(&self) -> Option<Ipv4Addr> {
        self.config.gateway
    }
}

/// TCP on the host's stack.
#[derive(Debug)]
pub struct Tcp {
    stack: &'static Ipv4,
}

impl Tcp {
    /// TCP on `stack`.
    pub fn new(stack: &'static Ipv4) -> Result<Self, Error> {
        Ok(Tcp { stack })
    }
}

impl compose_devices::net::Tcp for Tcp {
    type Listener = TcpListener;
    type Flow = TcpFlow;

    fn listen(&self, port: u16) -> Result<TcpListener, NetError> {
        let fd = socket()?;
        let one: libc::c_int = 1;
        // SAFETY: `fd` is an open socket; the option value points to a live c_int of the
        // length passed.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const one).cast(),
                mem::size_of_val(&one) as libc::socklen_t,
            )
        })?;
        bind(&fd, SocketAddrV4::new(self.stack.local_address(), port))?;
        // SAFETY: `fd` is an open, bound socket; listen(2) takes no pointers.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) })?;
        let inner = std::net::TcpListener::from(fd);
        let port = inner.local_addr().map_err(|e| net_error(&e))?.port();
        crate::reactor::init();
        Ok(TcpListener { inner, port })
    }

    fn local_address(&self) -> Option<Ipv4Addr> {
        Some(self.stack.local_address())
    }

    async fn connect(&self, peer: SocketAddrV4) -> Result<TcpFlow, NetError> {
        let fd = socket()?;
        // Outgoing connections leave from the spec's address; with none given, the host
        // picks (binding loopback would make every other host unreachable).
        let local = self.stack.local_address();
        if self.stack.config.address.is_some() && !self.stack.config.dhcp && !local.is_unspecified()
        {
            bind(&fd, SocketAddrV4::new(local, 0))?;
        }
        let addr = sockaddr(peer);
        // SAFETY: `fd` is an open socket; `addr` is a live sockaddr_in of the length passed.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                mem::size_of_val(&addr) as libc::socklen_t,
            )
        };
        let stream = TcpStream::from(fd);
        no_delay(&stream)?;
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(net_error(&err));
            }
            // The handshake goes on in the kernel; the socket becomes writable when it ends.
            // However this ends, the socket leaves the reactor before it is closed (a
            // TcpFlow does that when dropped).
            struct Forget(RawFd);
            impl Drop for Forget {
                fn drop(&mut self) {
                    forget(self.0);
                }
            }
            let guard = Forget(stream.as_raw_fd());
            writable(stream.as_raw_fd()).await;
            if let Some(err) = stream.take_error().map_err(|e| net_error(&e))? {
                return Err(net_error(&err));
            }
            std::mem::forget(guard);
        }
        Ok(TcpFlow::new(stream, peer))
    }
}

/// A listening host socket.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
    port: u16,
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl compose_devices::net::TcpListener for TcpListener {
    type Flow = TcpFlow;

    async fn accept(&self) -> Result<TcpFlow, NetError> {
        loop {
            match self.inner.accept() {
                Ok((stream, addr)) => {
                    stream.set_nonblocking(true).map_err(|e| net_error(&e))?;
                    no_delay(&stream)?;
                    let SocketAddr::V4(peer) = addr else {
                        return Err(NetError::Other);
                    };
                    return Ok(TcpFlow::new(stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    readable(self.inner.as_raw_fd()).await
                }
                // The peer gave up before we took the connection: wait for the next one.
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => return Err(net_error(&e)),
            }
        }
    }

    fn port(&self) -> u16 {
        self.port
    }
}

/// A connected host socket. Dropping it closes the socket.
#[derive(Debug)]
pub struct TcpFlow {
    stream: TcpStream,
    peer: SocketAddrV4,
    write_closed: bool,
    reads_without_waiting: u32,
}

impl TcpFlow {
    fn new(stream: TcpStream, peer: SocketAddrV4) -> Self {
        metrics::tcp_opened(peer);
        TcpFlow {
            stream,
            peer,
            write_closed: false,
            reads_without_waiting: 0,
        }
    }

    fn fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    /// One send(2) of some of `buf` with `flags`, waiting while the socket is full.
    async fn send_flags(&mut self, buf: &[u8], flags: libc::c_int) -> Result<usize, NetError> {
        loop {
            // SAFETY: the socket is open; `buf` is valid for reads of `buf.len()` bytes.
            let n = unsafe { libc::send(self.fd(), buf.as_ptr().cast(), buf.len(), flags) };
            if n >= 0 {
                metrics::TCP_BYTES_OUT.add(n.unsigned_abs() as u64);
                return Ok(n.unsigned_abs());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => writable(self.fd()).await,
                io::ErrorKind::Interrupted => {}
                _ => return Err(net_error(&err)),
            }
        }
    }
}

/// The executable's file span of `buf`, if it is a large enough slice of the read-only
/// image (see [`SENDFILE_FROM_IMAGE`]).
fn from_image(buf: &[u8]) -> Option<FileSpan> {
    if buf.len() < SENDFILE_FROM_IMAGE {
        return None;
    }
    crate::image::span(buf)
}

/// The host socket, for options the device interface does not cover.
impl AsFd for TcpFlow {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for TcpFlow {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

impl Drop for TcpFlow {
    fn drop(&mut self) {
        forget(self.fd());
        metrics::tcp_released(self.peer, false);
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        forget(self.inner.as_raw_fd());
    }
}

impl compose_devices::net::TcpFlow for TcpFlow {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        if self.reads_without_waiting >= READ_BUDGET {
            self.reads_without_waiting = 0;
            compose_devices::yield_now().await;
        }
        loop {
            match (&self.stream).read(buf) {
                Ok(n) => {
                    self.reads_without_waiting += 1;
                    metrics::TCP_BYTES_IN.add(n as u64);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reads_without_waiting = 0;
                    readable(self.fd()).await;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(net_error(&e)),
            }
        }
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        if self.write_closed {
            return Err(NetError::Closed);
        }
        if let Some(span) = from_image(buf) {
            return self.write_file(&[], span).await;
        }
        // MSG_NOSIGNAL: a peer that is gone gives EPIPE rather than killing the process
        // with SIGPIPE.
        self.send_flags(buf, libc::MSG_NOSIGNAL).await
    }

    async fn write2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, NetError> {
        if self.write_closed {
            return Err(NetError::Closed);
        }
        if let Some(span) = from_image(second) {
            return self.write_file(first, span).await;
        }
        let mut iov = [
            libc::iovec {
                iov_base: first.as_ptr().cast_mut().cast(),
                iov_len: first.len(),
            },
            libc::iovec {
                iov_base: second.as_ptr().cast_mut().cast(),
                iov_len: second.len(),
            },
        ];
        loop {
            // SAFETY: msghdr is plain old data, for which all-zero bytes are a valid value
            // (no name, no control data).
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            // One sendmsg for head and body: with TCP_NODELAY a separate small write would
            // leave as a segment of its own. MSG_NOSIGNAL as in `write`.
            // SAFETY: the socket is open; `msg` points to two iovecs describing live
            // slices that the kernel only reads.
            let n = unsafe { libc::sendmsg(self.fd(), &raw const msg, libc::MSG_NOSIGNAL) };
            if n >= 0 {
                metrics::TCP_BYTES_OUT.add(n.unsigned_abs() as u64);
                return Ok(n.unsigned_abs());
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => writable(self.fd()).await,
                io::ErrorKind::Interrupted => {}
                _ => return Err(net_error(&err)),
            }
        }
    }

    fn sends_files(&self) -> bool {
        true
    }

    /// Sends `first` with `MSG_MORE` (so that it waits for the file's first bytes and leaves
    /// in the same segment), then as much of `file` as the socket takes with sendfile(2).
    async fn write_file(&mut self, first: &[u8], file: FileSpan) -> Result<usize, NetError> {
        if self.write_closed {
            return Err(NetError::Closed);
        }
        let mut taken = 0;
        if !first.is_empty() {
            let more = if file.len > 0 { libc::MSG_MORE } else { 0 };
            taken = self.send_flags(first, libc::MSG_NOSIGNAL | more).await?;
            if taken < first.len() || file.len == 0 {
                return Ok(taken);
            }
        }
        let Ok(mut offset) = libc::off_t::try_from(file.offset) else {
            return Err(NetError::Other);
        };
        let want = file.len.min(SENDFILE_MAX) as usize;
        loop {
            // SAFETY: both descriptors are open; `offset` is a live off_t that the kernel
            // advances (the file's own position is left alone).
            let n = unsafe { libc::sendfile(self.fd(), file.fd, &raw mut offset, want) };
            if n > 0 {
                metrics::TCP_BYTES_OUT.add(n.unsigned_abs() as u64);
                return Ok(taken + n.unsigned_abs());
            }
            if n == 0 {
                // The file ends before the span does: it changed under us.
                return if taken > 0 {
                    Ok(taken)
                } else {
                    Err(NetError::Other)
                };
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                // The head went; the caller comes back for the rest (and times it).
                io::ErrorKind::WouldBlock if taken > 0 => return Ok(taken),
                io::ErrorKind::WouldBlock => writable(self.fd()).await,
                io::ErrorKind::Interrupted => {}
                _ if taken > 0 => return Ok(taken),
                _ => return Err(net_error(&err)),
            }
        }
    }

    async fn close(&mut self) -> Result<(), NetError> {
        if self.write_closed {
            return Ok(());
        }
        self.write_closed = true;
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| net_error(&e))
    }

    fn peer(&self) -> SocketAddrV4 {
        self.peer
    }
}

/// Turns Nagle's algorithm off: the server writes whole responses, and a small segment held
/// back until the peer's delayed ACK costs 40 ms a response.
fn no_delay(stream: &TcpStream) -> Result<(), NetError> {
    stream.set_nodelay(true).map_err(|e| net_error(&e))
}

/// Maps a host socket error to the device error.
fn net_error(e: &io::Error) -> NetError {
    use io::ErrorKind as K;
    match e.kind() {
        K::AddrInUse => NetError::AddrInUse,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::ConnectionRefused
        | K::BrokenPipe
        | K::NotConnected => NetError::ConnectionReset,
        K::AddrNotAvailable | K::NetworkUnreachable | K::HostUnreachable | K::NetworkDown => {
            NetError::Unreachable
        }
        K::TimedOut => NetError::TimedOut,
        K::OutOfMemory => NetError::Exhausted,
        _ => match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => NetError::Exhausted,
            _ => NetError::Other,
        },
    }
}

/// Errors of accept(2) that concern only the connection being taken, not the listener.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Turns a -1 return into the thread's errno, as a device error.
fn cvt(r: libc::c_int) -> Result<libc::c_int, NetError> {
    if r < 0 {
        Err(net_error(&io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

/// A new non-blocking, close-on-exec IPv4 TCP socket.
fn socket() -> Result<OwnedFd, NetError> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, ty, 0) })?;
    // SAFETY: `fd` was just returned by socket(2): it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, addr: SocketAddrV4) -> Result<(), NetError> {
    let addr = sockaddr(addr);
    // SAFETY: `fd` is an open socket; `addr` is a live sockaddr_in of the length passed.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            mem::size_of_val(&addr) as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data, for which all-zero bytes are a valid value
    // (and the required value of its padding).
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: u32::from(*addr.ip()).to_be(),
    };
    sa
}
