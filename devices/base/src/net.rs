//! Networking: an Ethernet interface, an IPv4 stack on it, and TCP on the stack.
//!
//! The layers mirror the spec's devices: `netif` (raw frames), `ipv4` (addressing), `tcp`
//! (streams). On `unix` the stack is the host's and `netif` only names the attachment; on
//! Solo5 targets the stack runs in the unikernel on smoltcp.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

use crate::kv::FileSpan;

/// Why a network operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The address or port is already taken.
    AddrInUse,
    /// The peer refused or reset the connection.
    ConnectionReset,
    /// No route to the peer, or the stack has no address yet.
    Unreachable,
    /// The operation took longer than allowed.
    TimedOut,
    /// The flow was already shut down for this direction.
    Closed,
    /// Out of sockets or buffers.
    Exhausted,
    /// Any other error reported by the host or the stack.
    Other,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetError::AddrInUse => "address in use",
            NetError::ConnectionReset => "connection reset",
            NetError::Unreachable => "unreachable",
            NetError::TimedOut => "timed out",
            NetError::Closed => "closed",
            NetError::Exhausted => "out of sockets or buffers",
            NetError::Other => "network error",
        })
    }
}

/// An IPv4 address with its prefix length, as written in a spec (`10.0.0.2/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl core::str::FromStr for Ipv4Cidr {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or("expected ADDRESS/PREFIX, like 10.0.0.2/24")?;
        let address = a.parse().map_err(|_| "not an IPv4 address")?;
        let prefix: u8 = p.parse().map_err(|_| "prefix is not a number")?;
        if prefix > 32 {
            return Err("prefix must be at most 32");
        }
        Ok(Ipv4Cidr { address, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A network interface: the attachment point of a stack (a tap on Solo5, the host on unix).
pub trait Netif {
    /// The interface's name in the spec and the manifest.
    fn name(&self) -> &str;
    /// The MAC address, where the platform has one.
    fn mac(&self) -> Option<[u8; 6]>;
    /// Maximum transmission unit in bytes.
    fn mtu(&self) -> u16;
}

/// An IPv4 stack bound to one interface.
pub trait Ipv4 {
    /// The configured (or leased) address, once known.
    fn address(&self) -> Option<Ipv4Cidr>;
    /// The default gateway, if any.
    fn gateway(&self) -> Option<Ipv4Addr>;
}

/// TCP on an IPv4 stack.
pub trait Tcp {
    /// A listening socket.
    type Listener: TcpListener<Flow = Self::Flow>;
    /// A connected stream.
    type Flow: TcpFlow;

    /// Listens on `port` of the stack's address.
    fn listen(&self, port: u16) -> Result<Self::Listener, NetError>;
    /// Connects to `peer`.
    async fn connect(&self, peer: SocketAddrV4) -> Result<Self::Flow, NetError>;
    /// The address listeners bind to, if the stack knows it (for messages such as
    /// "cannot listen on 127.0.0.1:8080"); `0.0.0.0` for every host address on unix.
    fn local_address(&self) -> Option<Ipv4Addr> {
        None
    }
}

/// A listening TCP socket.
pub trait TcpListener {
    /// The connected stream type.
    type Flow: TcpFlow;
    /// Waits for the next connection.
    async fn accept(&self) -> Result<Self::Flow, NetError>;
    /// The local port (useful when listening on port 0).
    fn port(&self) -> u16;
}

/// A connected TCP stream. Dropping it releases the connection (an orderly close if
/// [`TcpFlow::close`] was not called, otherwise nothing more).
pub trait TcpFlow {
    /// Reads at least one byte into `buf`; `Ok(0)` means the peer closed its side.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError>;
    /// Writes some of `buf`, returning how much was taken.
    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError>;
    /// Closes the sending side; reads may continue until the peer closes.
    async fn close(&mut self) -> Result<(), NetError>;
    /// The remote end.
    fn peer(&self) -> SocketAddrV4;

    /// Writes some of `first` followed by `second` as one stream of bytes, returning how
    /// much was taken (counting from the start of `first`). A stack that can take both in
    /// one operation (writev on a host socket) sends them in as few segments as they fill;
    /// the default writes `first` alone, or `second` once `first` is empty.
    async fn write2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, NetError> {
        if first.is_empty() {
            self.write(second).await
        } else {
            self.write(first).await
        }
    }

    /// Whether [`TcpFlow::write_file`] works: the stack is the host's and sends from host
    /// files (unix). The default is `false`, and a server then reads values itself.
    fn sends_files(&self) -> bool {
        false
    }

    /// Writes some of `first` followed by the bytes of the host file span `file`, as one
    /// stream, returning how much was taken (counting from the start of `first`), as
    /// [`TcpFlow::write2`] does. On unix, `first` leaves in the same segment as the start of
    /// the file's bytes where it can, and those go from the file to the socket without a
    /// copy through the unikernel (`sendfile(2)`). Only call it where
    /// [`TcpFlow::sends_files`] says so: the default fails with [`NetError::Other`].
    async fn write_file(&mut self, first: &[u8], file: FileSpan) -> Result<usize, NetError> {
        let _ = (first, file);
        Err(NetError::Other)
    }

    /// Writes all of `buf`.
    async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), NetError> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            if n == 0 {
                return Err(NetError::Closed);
            }
            buf = &buf[n..];
        }
        Ok(())
    }
}
