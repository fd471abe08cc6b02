//! The IPv4 stack: a smoltcp interface on one device, its sockets, and DHCP.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::Ipv4Addr;
use core::task::Waker;

use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr as SmolCidr};

use crate::device::Phy;
use crate::tcp::{Host, Net, TcpState};
use crate::{Error, EthernetDevice, INGRESS_BUDGET, Ipv4Cidr, Ipv4Config};

/// An IPv4 stack on one [`EthernetDevice`].
///
/// A `Stack` is a cheap handle: clones share the same stack. The platform keeps one to call
/// [`Stack::poll`]; [`crate::Tcp`] keeps another. The stack is single-threaded (it is not
/// `Send`), like the unikernel that runs it.
pub struct Stack<D: EthernetDevice> {
    inner: Rc<RefCell<Inner<D>>>,
}

impl<D: EthernetDevice> Clone for Stack<D> {
    fn clone(&self) -> Self {
        Stack {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<D: EthernetDevice> AsRef<Stack<D>> for Stack<D> {
    fn as_ref(&self) -> &Stack<D> {
        self
    }
}

impl<D: EthernetDevice> core::fmt::Debug for Stack<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("Stack")
            .field("address", &inner.address)
            .field("gateway", &inner.gateway)
            .field("dhcp", &inner.dhcp.is_some())
            .field("sockets", &inner.sockets.iter().count())
            .finish()
    }
}

/// The state behind a [`Stack`] handle.
struct Inner<D> {
    phy: Phy<D>,
    iface: Interface,
    sockets: SocketSet<'static>,
    /// The DHCP client's socket, when the address is leased.
    dhcp: Option<SocketHandle>,
    /// The current address: the static one, or the lease.
    address: Option<Ipv4Cidr>,
    gateway: Option<Ipv4Addr>,
    /// Tasks waiting for a DHCP lease (connecting before the stack has an address).
    address_wakers: Vec<Waker>,
    /// When the stack was last polled: the clock of everything the sockets do.
    now: Instant,
    /// TCP's listeners, closing sockets and ephemeral ports.
    tcp: TcpState,
}

/// Converts a time on the platform's nanosecond scale to smoltcp's.
fn instant(ns: u64) -> Instant {
    Instant::from_micros(i64::try_from(ns / 1000).unwrap_or(i64::MAX))
}

/// Converts a smoltcp time back to nanoseconds.
fn nanos(t: Instant) -> u64 {
    u64::try_from(t.total_micros())
        .unwrap_or(0)
        .saturating_mul(1000)
}

fn smol_cidr(c: Ipv4Cidr) -> SmolCidr {
    SmolCidr::new(c.address, c.prefix)
}

impl<D: EthernetDevice> Stack<D> {
    /// Starts a stack on `device` with the address `config` asks for.
    ///
    /// `seed` should differ on every boot: it seeds TCP initial sequence numbers, ephemeral
    /// ports and DHCP transaction ids (it need not be secret; the platform's random device
    /// is a good source). A static address is usable at once; with DHCP the stack has no
    /// address until the first lease, which [`Stack::poll`] obtains.
    pub fn new(device: D, config: Ipv4Config, seed: u64) -> Result<Self, Error> {
        match config {
            Ipv4Config {
                address: Some(_),
                dhcp: true,
                ..
            } => return Err(Error::AddressAndDhcp),
            Ipv4Config {
                gateway: Some(_),
                dhcp: true,
                ..
            } => return Err(Error::GatewayAndDhcp),
            Ipv4Config {
                address: None,
                dhcp: false,
                ..
            } => return Err(Error::NoAddress),
            _ => {}
        }
        if let Some(cidr) = config.address {
            check_static(cidr, config.gateway)?;
        }
        let mac = device.mac();
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(Error::BadMac(mac));
        }
        if device.mtu() < 576 {
            return Err(Error::MtuTooSmall(device.mtu()));
        }
        let mut phy = Phy::new(device);
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, &mut phy, Instant::ZERO);
        let mut sockets = SocketSet::new(Vec::new());
        let dhcp = if config.dhcp {
            Some(sockets.add(dhcpv4::Socket::new()))
        } else {
            let cidr = config.address.ok_or(Error::NoAddress)?;
            iface.update_ip_addrs(|addrs| {
                // A fresh interface has no address, and holds at least one.
                let _ = addrs.push(IpCidr::Ipv4(smol_cidr(cidr)));
            });
            if let Some(gw) = config.gateway {
                // There is room: the route table is empty.
                let _ = iface.routes_mut().add_default_ipv4_route(gw);
            }
            None
        };
        let inner = Inner {
            phy,
            iface,
            sockets,
            dhcp,
            address: if config.dhcp { None } else { config.address },
            gateway: if config.dhcp { None } else { config.gateway },
            address_wakers: Vec::new(),
            now: Instant::ZERO,
            tcp: TcpState::new(seed),
        };
        Ok(Stack {
            inner: Rc::new(RefCell::new(inner)),
        })
    }

    /// Runs the stack at time `now_ns` (the platform's monotonic clock, in nanoseconds):
    /// sends what sockets have queued, takes in the device's pending frames (at most
    /// [`INGRESS_BUDGET`]), runs timers, DHCP and socket housekeeping, and wakes the tasks
    /// whose sockets changed.
    ///
    /// Returns when the stack wants to be polled again, on the same scale: `Some(now_ns)`
    /// (or earlier) when it did something that may have woken a task or has more frames to
    /// take in, so the caller should not block; `None` when only a new frame can give it
    /// work. Polling earlier than asked is harmless.
    pub fn poll(&self, now_ns: u64) -> Option<u64> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let now = instant(now_ns);
        if now > inner.now {
            inner.now = now;
        }
        let now = inner.now;
        inner.iface.poll_maintenance(now);

        // Flush what tasks wrote since the last poll before taking anything in.
        let mut changed = egress(inner, now);

        inner.phy.rx_budget = INGRESS_BUDGET;
        inner.tcp.maintain_listeners(&mut inner.sockets);
        inner.tcp.refused_ports(&mut inner.phy.refused_ports);
        loop {
            match inner
                .iface
                .poll_ingress_single(now, &mut inner.phy, &mut inner.sockets)
            {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => changed = true,
            }
            // Keep every listener's backlog full between frames, so that a burst of SYNs
            // finds a listening socket for each (up to the listener's limit); beyond it,
            // SYNs are dropped (and retransmitted by the client), not reset.
            inner.tcp.maintain_listeners(&mut inner.sockets);
            inner.tcp.refused_ports(&mut inner.phy.refused_ports);
        }
        let more_frames = inner.phy.rx_budget == 0;

        changed |= self::dhcp(inner);
        changed |= egress(inner, now);
        inner.tcp.maintain_listeners(&mut inner.sockets);
        let orphans_next = inner.tcp.reap_orphans(&mut inner.sockets, now);

        if changed || more_frames {
            return Some(nanos(now));
        }
        let next = inner.iface.poll_at(now, &inner.sockets);
        match (next, orphans_next) {
            (Some(a), Some(b)) => Some(nanos(a.min(b))),
            (a, b) => a.or(b).map(nanos),
        }
    }

    /// How many sockets the stack holds: listening, connected, closing, and DHCP's. For
    /// diagnostics, and for tests that check that finished connections are released.
    pub fn socket_count(&self) -> usize {
        self.inner.borrow().sockets.iter().count()
    }

    /// The device the stack runs on.
    pub fn with_device<R>(&self, f: impl FnOnce(&D) -> R) -> R {
        f(&self.inner.borrow().phy.device)
    }
}

/// Sends everything the sockets have queued; true if a socket's state may have changed.
fn egress<D: EthernetDevice>(inner: &mut Inner<D>, now: Instant) -> bool {
    let mut changed = false;
    // Each round is bounded; smoltcp reports `None` once no socket has anything to send.
    while inner
        .iface
        .poll_egress(now, &mut inner.phy, &mut inner.sockets)
        == PollResult::SocketStateChanged
    {
        changed = true;
    }
    changed
}

/// Applies the DHCP client's news (a new lease, or its loss) to the interface.
fn dhcp<D: EthernetDevice>(inner: &mut Inner<D>) -> bool {
    let Some(handle) = inner.dhcp else {
        return false;
    };
    let event = match inner.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
        None => return false,
        Some(dhcpv4::Event::Configured(config)) => Some((config.address, config.router)),
        Some(dhcpv4::Event::Deconfigured) => None,
    };
    inner.iface.update_ip_addrs(|addrs| {
        addrs.clear();
        if let Some((cidr, _)) = event {
            // Room for one address was just made.
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        }
    });
    inner.iface.routes_mut().remove_default_ipv4_route();
    if let Some((_, Some(router))) = event {
        // The route table was just emptied.
        let _ = inner.iface.routes_mut().add_default_ipv4_route(router);
    }
    inner.address = event.map(|(cidr, _)| Ipv4Cidr {
        address: cidr.address(),
        prefix: cidr.prefix_len(),
    });
    inner.gateway = event.and_then(|(_, router)| router);
    match event {
        Some((cidr, router)) => compose_devices::logs::log(
            compose_devices::logs::Source::Stack,
            compose_devices::logs::Level::Info,
            format_args!(
                "DHCP lease {cidr}{}",
                router.map_or(alloc::string::String::new(), |r| alloc::format!(" via {r}"))
            ),
        ),
        None => compose_devices::logs::log(
            compose_devices::logs::Source::Stack,
            compose_devices::logs::Level::Warn,
            format_args!("DHCP lease lost"),
        ),
    }
    for waker in inner.address_wakers.drain(..) {
        waker.wake();
    }
    true
}

/// Checks a static address and gateway.
fn check_static(cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) -> Result<(), Error> {
    let a = cidr.address;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || cidr.prefix > 32 {
        return Err(Error::BadAddress(cidr));
    }
    if let Some(gw) = gateway
        && (!smol_cidr(cidr).contains_addr(&gw) || gw == a)
    {
        return Err(Error::GatewayOffLink(gw));
    }
    Ok(())
}

impl<D: EthernetDevice> compose_devices::net::Ipv4 for Stack<D> {
    fn address(&self) -> Option<Ipv4Cidr> {
        self.inner.borrow().address
    }

    fn gateway(&self) -> Option<Ipv4Addr> {
        self.inner.borrow().gateway
    }
}

impl<D: EthernetDevice> Host for Stack<D> {
    fn with_net<R>(&self, f: impl FnOnce(Net<'_>) -> R) -> R {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        f(Net {
            iface: &mut inner.iface,
            sockets: &mut inner.sockets,
            now: inner.now,
            has_address: inner.address.is_some(),
            address_wakers: &mut inner.address_wakers,
            tcp: &mut inner.tcp,
        })
    }
}
