//! Networking: manifest network devices, and compose-netstack's IPv4 and TCP on them.

use alloc::rc::Rc;
use core::marker::PhantomData;
use core::net::Ipv4Addr;
use core::sync::atomic::{AtomicU64, Ordering};

use compose_devices::net::Ipv4Cidr;
use compose_netstack::{EthernetDevice, Stack};
use solo5_abi::DeviceType;

use crate::{Bindings, Error, boot, park, random};

pub use compose_netstack::Ipv4Config;

static FRAMES_IN: AtomicU64 = AtomicU64::new(0);
static FRAMES_OUT: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);

/// Frames moved by every network device so far, for diagnostics: `(received, sent,
/// read calls)` (read calls include those that found no frame).
pub fn frame_stats() -> (u64, u64, u64) {
    (
        FRAMES_IN.load(Ordering::Relaxed),
        FRAMES_OUT.load(Ordering::Relaxed),
        READS.load(Ordering::Relaxed),
    )
}

/// A network device of the manifest: a tap the tender attached with `--net:NAME=TAP`.
pub struct Netif<B> {
    name: &'static str,
    handle: u64,
    mac: [u8; 6],
    mtu: u16,
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> Netif<B> {
    /// The manifest's network device `name`. Fails if the manifest has no such network
    /// device or the tender did not attach it.
    pub fn new(name: &'static str) -> Result<Self, Error> {
        let (handle, entry) = boot::device(name, DeviceType::Net)?;
        let (mac, mtu) = entry.net_info();
        Ok(Netif {
            name,
            handle,
            mac,
            mtu,
            _target: PhantomData,
        })
    }

    /// The device's handle (its manifest index).
    pub fn handle(&self) -> u64 {
        self.handle
    }
}

impl<B> core::fmt::Debug for Netif<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Netif")
            .field("name", &self.name)
            .field("handle", &self.handle)
            .field("mtu", &self.mtu)
            .finish()
    }
}

impl<B: Bindings> compose_devices::net::Netif for Netif<B> {
    fn name(&self) -> &str {
        self.name
    }
    fn mac(&self) -> Option<[u8; 6]> {
        Some(self.mac)
    }
    fn mtu(&self) -> u16 {
        self.mtu
    }
}

impl<B: Bindings> EthernetDevice for Netif<B> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> u16 {
        self.mtu
    }

    fn send(&self, frame: &[u8]) {
        // Best effort, like the link itself: TCP retransmits what is lost.
        FRAMES_OUT.fetch_add(1, Ordering::Relaxed);
        let _ = B::net_write(self.handle, frame);
    }

    fn receive(&self, buf: &mut [u8]) -> Option<usize> {
        READS.fetch_add(1, Ordering::Relaxed);
        let got = B::net_read(self.handle, buf).ok().flatten();
        if got.is_some() {
            FRAMES_IN.fetch_add(1, Ordering::Relaxed);
        }
        got
    }
}

/// The device type a stack on a [`Netif`] runs over.
pub type NetDevice<B> = &'static Netif<B>;

/// An IPv4 stack (compose-netstack, on smoltcp) on a [`Netif`], polled by the platform's
/// `park`.
pub struct Ipv4<B: Bindings> {
    stack: Stack<NetDevice<B>>,
}

impl<B: Bindings> Ipv4<B> {
    /// Starts a stack on `netif` with a static address or DHCP, seeded from the CPU's
    /// random number generator.
    pub fn new(
        netif: &'static Netif<B>,
        config: Ipv4Config,
    ) -> Result<Self, compose_netstack::Error> {
        let stack = Stack::new(netif, config, random::seed())?;
        park::register(Rc::new(stack.clone()));
        Ok(Ipv4 { stack })
    }

    /// The stack.
    pub fn stack(&self) -> &Stack<NetDevice<B>> {
        &self.stack
    }
}

impl<B: Bindings> core::fmt::Debug for Ipv4<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.stack.fmt(f)
    }
}

impl<B: Bindings> AsRef<Stack<NetDevice<B>>> for Ipv4<B> {
    fn as_ref(&self) -> &Stack<NetDevice<B>> {
        &self.stack
    }
}

impl<B: Bindings> compose_devices::net::Ipv4 for Ipv4<B> {
    fn address(&self) -> Option<Ipv4Cidr> {
        self.stack.address()
    }
    fn gateway(&self) -> Option<Ipv4Addr> {
        self.stack.gateway()
    }
}

/// TCP on an [`Ipv4`] stack: `Tcp::new(&ipv4)`.
pub type Tcp<B> = compose_netstack::Tcp<NetDevice<B>>;
/// A listening TCP port.
pub type TcpListener<B> = compose_netstack::TcpListener<NetDevice<B>>;
/// A TCP connection.
pub type TcpFlow<B> = compose_netstack::TcpFlow<NetDevice<B>>;
