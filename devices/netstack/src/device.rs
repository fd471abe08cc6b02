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
}

impl<D: EthernetDevice> Phy<D> {
    pub(crate) fn new(device: D) -> Self {
        let frame = usize::from(device.mtu()) + ETHERNET_HEADER;
        Phy {
            device,
            rx: vec![0; frame],
            tx: vec![0; frame],
            rx_budget: 0,
        }
    }

    /// The largest frame, Ethernet header included.
    fn frame_len(&self) -> usize {
        self.rx.len()
    }
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
        } = self;
        let len = device.receive(rx)?;
        *rx_budget -= 1;
        let frame = &rx[..len.min(rx.len())];
        Some((RxToken { frame }, TxToken { device, buf: tx }))
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
