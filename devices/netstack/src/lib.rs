//! An IPv4 and TCP stack for compose unikernels, on [smoltcp], over any raw Ethernet device.
//!
//! On the Solo5 targets a `netif` is a tap device that moves whole Ethernet frames, so the
//! unikernel runs a TCP/IP stack of its own. This crate is that stack, independent of the
//! platform: a platform implements [`EthernetDevice`] for its interface (send and receive
//! frames, MAC, MTU), and gets
//!
//! * [`Stack`], an IPv4 stack with a static address (and optional default gateway) or an
//!   address leased by DHCP, implementing [`compose_devices::net::Ipv4`];
//! * [`Tcp`], [`TcpListener`] and [`TcpFlow`], implementing compose-devices' `Tcp`,
//!   `TcpListener` and `TcpFlow`, with wakers, so tasks wait for the network without spinning.
//!
//! # Driving the stack
//!
//! The stack does nothing on its own: the platform calls [`Stack::poll`] with the current
//! time, from its executor `park` (see [`compose_devices::executor::Platform`]). `poll` sends
//! what the sockets have queued, takes in every frame the device has pending, wakes the tasks
//! whose sockets changed, and returns when it wants to be polled next. A platform's `park`
//! therefore looks like this:
//!
//! ```text
//! let next = stack.poll(now);              // flush writes, take in pending frames
//! if next <= now { return }                // tasks were woken: let them run
//! block_in_host_until(min(next, deadline)) // until a frame arrives or the deadline
//! stack.poll(now);                         // take in what arrived, wake its readers
//! ```
//!
//! # Sockets and memory
//!
//! Every TCP socket owns a receive and a transmit buffer of [`SOCKET_BUFFER`] bytes. A
//! listener keeps [`LISTEN_BACKLOG`] sockets listening, so that many handshakes can run at
//! once, and keeps at most [`MAX_PENDING`] connections that are not accepted yet (SYNs beyond
//! them are dropped, so the client retries, rather than reset). Buffers are allocated
//! fallibly: out of memory, a listener stops taking new connections and `connect` fails
//! with `Exhausted`, instead of the unikernel panicking. Nagle's algorithm is off on every
//! socket, so a response leaves at once. The interface answers ICMP echo (ping). Sockets are
//! removed from the stack once closed: a dropped flow is closed gracefully and reaped when
//! its connection ends, or as soon as the peer has acknowledged our FIN (FIN-WAIT-2), or
//! after [`LINGER`] with a reset, so nothing leaks and an idle client cannot hold memory.
//!
//! The crate is `no_std` with `alloc`, and has no `unsafe` code.
#![no_std]
#![forbid(unsafe_code)]
extern crate alloc;

mod device;
mod stack;
mod tcp;

use core::fmt;
use core::net::Ipv4Addr;
use core::time::Duration;

pub use compose_devices::net::{Ipv4Cidr, NetError};
pub use stack::Stack;

/// TCP on a [`Stack`] over the device `D`: `Tcp::new(&stack)`.
pub type Tcp<D> = tcp::Tcp<Stack<D>>;
/// A listening TCP port on a [`Stack`] over the device `D`.
pub type TcpListener<D> = tcp::TcpListener<Stack<D>>;
/// A TCP connection on a [`Stack`] over the device `D`.
pub type TcpFlow<D> = tcp::TcpFlow<Stack<D>>;

/// Bytes of receive buffer, and as many of transmit buffer, each TCP socket owns.
pub const SOCKET_BUFFER: usize = 32 * 1024;

/// How many sockets a listener keeps in the LISTEN state, ready for new handshakes.
pub const LISTEN_BACKLOG: usize = 8;

/// The most connections a listener holds (handshaking or established) that were not
/// accepted yet. A SYN beyond that is dropped, not reset: the client sends it again (after
/// 1 s, then 3 s, ... on Linux), by when the application has accepted some, so a burst of
/// connects is absorbed instead of refused. The listening sockets count in it; 128 sockets
/// of 2 × [`SOCKET_BUFFER`] are 8 MiB, within the reserve the site's connection limit keeps.
pub const MAX_PENDING: usize = 128;

/// How long a dropped flow may take to close gracefully before it is reset and removed.
pub const LINGER: Duration = Duration::from_secs(30);

/// How long a peer may stay silent while a flow has unacknowledged data, or while a
/// connection attempt is unanswered, before the connection is given up.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(60);

/// The most frames one [`Stack::poll`] takes in; with more pending it asks to be polled
/// again at once, so that the application's tasks run in between.
pub const INGRESS_BUDGET: usize = 256;

/// A network interface that sends and receives whole Ethernet frames.
///
/// This is what a platform provides to run a [`Stack`]: on Solo5 a tap device reached
/// through hypercalls, in tests an in-memory pipe. The methods take `&self` so that a
/// `&'static` device can be shared; implementations that need state use interior
/// mutability. Neither send nor receive may block.
pub trait EthernetDevice {
    /// The interface's MAC address (unicast).
    fn mac(&self) -> [u8; 6];

    /// The largest IP packet the link carries: the MTU, excluding the 14-byte Ethernet
    /// header. Frames are at most `mtu() + 14` bytes.
    fn mtu(&self) -> u16;

    /// Sends one frame, Ethernet header included. Best effort: a frame the link cannot take
    /// now is dropped, and TCP retransmits.
    fn send(&self, frame: &[u8]);

    /// Moves one pending frame into `buf` (at least `mtu() + 14` bytes long) and returns its
    /// length, or returns `None` at once when no frame is pending.
    fn receive(&self, buf: &mut [u8]) -> Option<usize>;
}

impl<T: EthernetDevice + ?Sized> EthernetDevice for &T {
    fn mac(&self) -> [u8; 6] {
        (**self).mac()
    }
    fn mtu(&self) -> u16 {
        (**self).mtu()
    }
    fn send(&self, frame: &[u8]) {
        (**self).send(frame)
    }
    fn receive(&self, buf: &mut [u8]) -> Option<usize> {
        (**self).receive(buf)
    }
}

/// How a stack gets its IPv4 address: the fields of the spec's `ipv4` device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Config {
    /// A static address with its prefix.
    pub address: Option<Ipv4Cidr>,
    /// The default gateway, with a static address.
    pub gateway: Option<Ipv4Addr>,
    /// Whether to lease the address (and gateway) with DHCP instead.
    pub dhcp: bool,
}

/// Why a stack could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Neither a static address nor DHCP was configured.
    NoAddress,
    /// Both a static address and DHCP were configured.
    AddressAndDhcp,
    /// A gateway was given together with DHCP, which leases the gateway itself.
    GatewayAndDhcp,
    /// The static address is not a usable unicast address.
    BadAddress(Ipv4Cidr),
    /// The gateway is not inside the static address's subnet.
    GatewayOffLink(Ipv4Addr),
    /// The interface's MAC address is not a unicast address.
    BadMac([u8; 6]),
    /// The interface's MTU is too small for IPv4 (576 bytes at least).
    MtuTooSmall(u16),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAddress => f.write_str("the stack needs a static address or dhcp"),
            Error::AddressAndDhcp => f.write_str("a static address and dhcp exclude each other"),
            Error::GatewayAndDhcp => f.write_str("a gateway and dhcp exclude each other"),
            Error::BadAddress(a) => write!(f, "{a} is not a usable unicast address"),
            Error::GatewayOffLink(g) => {
                write!(f, "gateway {g} is not inside the stack's subnet")
            }
            Error::BadMac(m) => write!(
                f,
                "MAC address {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} is not unicast",
                m[0], m[1], m[2], m[3], m[4], m[5]
            ),
            Error::MtuTooSmall(mtu) => write!(f, "MTU {mtu} is below the IPv4 minimum of 576"),
        }
    }
}

impl core::error::Error for Error {}
