//! The adapter from an [`EthernetDevice`] to smoltcp's token-based `Device`.

use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::EthernetDevice;

/// Length of the Ethernet header that the MTU does not include.
pub(crate) const ETHERNET_HEADER: usize = 14;

/// An [`EthernetDevice`] with the two frame buffers smoltcp's tokens hand out.
pub(crate) struct Phy<D> {
    pub(crate) device: D,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Frames left to take in before `receive` reports none, for the current poll.
    pub(crate) rx_budget: usize,
    /// Local ports whose listener has no socket listening: a connection request (SYN) to
    /// one is dropped here, unseen by smoltcp, which would answer it with a reset. The
    /// client retransmits it, and finds a socket once the application has accepted.
    pub(crate) refused_ports: Vec<u16>,
}

impl<D: EthernetDevice> Phy<D> {
    pub(crate) fn new(device: D) -> Self {
        let frame = usize::from(device.mtu()) + ETHERNET_HEADER;
        Phy {
            device,
            rx: vec![0; frame],
            tx: vec![0; frame],
            rx_budget: 0,
            refused_ports: Vec::new(),
        }
    }

    /// The largest frame, Ethernet header included.
    fn frame_len(&self) -> usize {
        self.rx.len()
    }
}

/// The destination port of `frame` if it is an IPv4 TCP connection request (SYN without
/// ACK), else `None`.
fn syn_port(frame: &[u8]) -> Option<u16> {
    const IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let ip = frame
        .get(ETHERNET_HEADER..)
        .filter(|_| frame[12..14] == IPV4)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ihl < 20 || *ip.get(9)? != TCP {
        return None;
    }
    let tcp = ip.get(ihl..)?;
    let flags = *tcp.get(13)?;
    (flags & (SYN | ACK) == SYN).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

pub(crate) struct RxToken<'a> {
    frame: &'a [u8],
}

pub(crate) struct TxToken<'a, D> {
    device: &'a D,
    buf: &'a mut [u8],
}

impl<D: EthernetDevice> phy::Device for Phy<D> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken<'_>, TxToken<'_, D>)> {
        if self.rx_budget == 0 {
            return None;
        }
        let Phy {
            device,
            rx,
            tx,
            rx_budget,
            refused_ports,
        } = self;
        loop {
            let len = device.receive(rx)?;
            *rx_budget -= 1;
            let len = len.min(rx.len());
            if !refused_ports.is_empty()
                && syn_port(&rx[..len]).is_some_and(|p| refused_ports.contains(&p))
            {
                if *rx_budget == 0 {
                    return None;
                }
                continue;
            }
            let frame = &rx[..len];
            return Some((RxToken { frame }, TxToken { device, buf: tx }));
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_, D>> {
        Some(TxToken {
            device: &self.device,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // For Ethernet, smoltcp's MTU counts the Ethernet header.
        caps.max_transmission_unit = self.frame_len();
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<D: EthernetDevice> phy::TxToken for TxToken<'_, D> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU it was given; the `min` only keeps a
        // broken request from panicking.
        let len = len.min(self.buf.len());
        let frame = &mut self.buf[..len];
        let r = f(frame);
        self.device.send(frame);
        r
    }
}
