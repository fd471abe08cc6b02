//! netfront: a network interface of the domain (a vif), for solo5-guest's `Netif`.
//!
//! At boot, [`attach`] connects `device/vif/N` (xen/include/public/io/netif.h): it reads
//! the backend's path and domain and the MAC from XenStore, shares a tx and an rx ring
//! page and [`RX_SLOTS`] receive buffers with the backend (grant references), allocates
//! an event channel, writes `tx-ring-ref`, `rx-ring-ref`, `event-channel`,
//! `request-rx-copy` (the backend copies frames into our buffers),
//! `feature-rx-notify` and `feature-no-csum-offload` (the backend hands over complete
//! checksums), switches the frontend to Connected and waits for the backend to be
//! Connected. The manifest entry then carries the MAC and is attached.
//!
//! Sending copies the frame into one of [`TX_SLOTS`] granted pages and posts a tx
//! request; completed requests free their slot. Receiving takes a response from the rx
//! ring, copies the frame out, and posts the buffer again (rx refill). The shared rings
//! have a 64-byte header (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`, padding)
//! and 256 entries: tx requests `{gref u32, offset u16, flags u16, id u16, size u16}`,
//! responses `{id u16, status i16}`; rx requests `{id u16, pad u16, gref u32}`,
//! responses `{id u16, offset u16, flags u16, status i16}`.

use core::sync::atomic::{AtomicU32, Ordering, fence};

use solo5_abi::MftEntry;
use solo5_guest::HostError;

use crate::devices::Pages;
use crate::xenstore::{self, xs_path};
use crate::{hypercall, shared};

/// Receive buffers posted to the backend.
pub(crate) const RX_SLOTS: usize = 64;
/// Send buffers.
pub(crate) const TX_SLOTS: usize = 32;
const RING: u32 = 256;
const MAX_NETS: usize = 8;

struct Net {
    port: u32,
    tx: *mut u8,
    rx: *mut u8,
    /// Our copies of the indexes.
    tx_req_prod: u32,
    tx_rsp_cons: u32,
    rx_req_prod: u32,
    rx_rsp_cons: u32,
    tx_pages: [(*mut u8, u32); TX_SLOTS],
    tx_free: [bool; TX_SLOTS],
    rx_pages: [(*mut u8, u32); RX_SLOTS],
}

struct Nets([Option<Net>; MAX_NETS], [u64; MAX_NETS]);

static NETS: spin::Mutex<Nets> = spin::Mutex::new(Nets([const { None }; MAX_NETS], [0; MAX_NETS]));

// SAFETY: the raw pointers are to pages this runtime owns for good; there is one vCPU.
unsafe impl Send for Net {}

fn u32_at(page: *mut u8, off: usize) -> &'static AtomicU32 {
    // SAFETY: `page` is a ring page of ours, `off` an aligned offset in it.
    unsafe { &*(page.add(off) as *const AtomicU32) }
}

fn w16(p: *mut u8, off: usize, v: u16) {
    // SAFETY: `p + off` is inside a ring page of ours, 2-aligned.
    unsafe { (p.add(off) as *mut u16).write_volatile(v) }
}
fn w32(p: *mut u8, off: usize, v: u32) {
    // SAFETY: as `w16`, 4-aligned.
    unsafe { (p.add(off) as *mut u32).write_volatile(v) }
}
fn r16(p: *mut u8, off: usize) -> u16 {
    // SAFETY: as `w16`.
    unsafe { (p.add(off) as *const u16).read_volatile() }
}

/// The event channel ports of the attached interfaces (for the executor's yield).
pub(crate) fn ports(out: &mut [u32; MAX_NETS]) -> usize {
    let nets = NETS.lock();
    let mut n = 0;
    for net in nets.0.iter().flatten() {
        out[n] = net.port;
        n += 1;
    }
    n
}

/// The manifest handles of the interfaces whose rx ring has frames (bit per handle).
pub(crate) fn ready() -> u64 {
    let nets = NETS.lock();
    let mut bits = 0;
    for (i, net) in nets.0.iter().enumerate() {
        if let Some(net) = net
            && u32_at(net.rx, 8).load(Ordering::Acquire) != net.rx_rsp_cons
        {
            bits |= 1 << nets.1[i];
        }
    }
    bits
}

fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(s).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn report(index: u32, what: &str) {
    let p = xs_path!("xen: netfront vif {index}: {what}\n");
    crate::console::write(p.as_str().as_bytes());
}

/// Connects vif `index` for manifest entry `entry` (handle `handle`); on failure the
/// entry stays unattached and the console says why.
pub(crate) fn attach(handle: usize, index: u32, entry: &mut MftEntry, pages: &mut Pages) {
    match connect(index, pages) {
        Ok((net, mac)) => {
            let mut nets = NETS.lock();
            if let Some(slot) = nets.0.iter().position(|n| n.is_none()) {
                nets.0[slot] = Some(net);
                nets.1[slot] = handle as u64;
                entry.set_net_info(mac, 1500);
                entry.attached = 1;
            } else {
                report(index, "too many interfaces");
            }
        }
        Err(why) => report(index, why),
    }
}

fn connect(index: u32, pages: &mut Pages) -> Result<(Net, [u8; 6]), &'static str> {
    let fe = xs_path!("device/vif/{index}");
    let fe = fe.as_str();
    let mut buf = [0u8; 128];
    let backend = xenstore::read(xs_path!("{fe}/backend").as_str(), &mut buf)
        .map_err(|_| "no such vif in XenStore (is it in the domain's vif list?)")?;
    let backend = xs_path!("{}", core::str::from_utf8(backend).unwrap_or(""));
    let backend_id = xenstore::read_u64(xs_path!("{fe}/backend-id").as_str())
        .map_err(|_| "no backend-id")? as u16;
    let mut mbuf = [0u8; 32];
    let mac = xenstore::read(xs_path!("{fe}/mac").as_str(), &mut mbuf)
        .ok()
        .and_then(parse_mac)
        .ok_or("no MAC in XenStore")?;

    let oom = "not enough memory for the rings";
    let tx = pages.take().ok_or(oom)?;
    let rx = pages.take().ok_or(oom)?;
    for ring in [tx, rx] {
        // SHARED_RING_INIT: req_event = rsp_event = 1.
        w32(ring, 4, 1);
        w32(ring, 12, 1);
    }
    let nogrant = "no grant table entries left";
    let tx_ref = crate::grant::grant(backend_id, tx, false).ok_or(nogrant)?;
    let rx_ref = crate::grant::grant(backend_id, rx, false).ok_or(nogrant)?;
    let mut tx_pages = [(core::ptr::null_mut(), 0); TX_SLOTS];
    for slot in &mut tx_pages {
        let p = pages.take().ok_or(oom)?;
        *slot = (p, crate::grant::grant(backend_id, p, true).ok_or(nogrant)?);
    }
    let mut rx_pages = [(core::ptr::null_mut(), 0); RX_SLOTS];
    for slot in &mut rx_pages {
        let p = pages.take().ok_or(oom)?;
        *slot = (p, crate::grant::grant(backend_id, p, false).ok_or(nogrant)?);
    }
    let port = hypercall::evtchn_alloc_unbound(backend_id).map_err(|_| "no event channel")?;
    let mut net = Net {
        port,
        tx,
        rx,
        tx_req_prod: 0,
        tx_rsp_cons: 0,
        rx_req_prod: 0,
        rx_rsp_cons: 0,
        tx_pages,
        tx_free: [true; TX_SLOTS],
        rx_pages,
    };
    // Post every receive buffer.
    for id in 0..RX_SLOTS {
        net.post_rx(id as u16);
    }
    u32_at(rx, 0).store(net.rx_req_prod, Ordering::Release);

    let deadline = shared::system_time_ns() + 20_000_000_000;
    // The backend must be ready for us (InitWait) before the frontend connects.
    let be_state = xs_path!("{}/state", backend.as_str());
    let st = xenstore::wait_for(be_state.as_str(), &[2, 4], deadline).unwrap_or(0);
    if st != 2 && st != 4 {
        return Err("the backend did not reach InitWait");
    }
    let num = |v: u32| xs_path!("{v}");
    let xw = |k: &str, v: &str| {
        xenstore::write(xs_path!("{fe}/{k}").as_str(), v.as_bytes())
            .map_err(|_| "XenStore write failed")
    };
    xw("tx-ring-ref", num(tx_ref).as_str())?;
    xw("rx-ring-ref", num(rx_ref).as_str())?;
    xw("event-channel", num(port).as_str())?;
    xw("request-rx-copy", "1")?;
    xw("feature-rx-notify", "1")?;
    xw("feature-no-csum-offload", "1")?;
    xw("feature-sg", "0")?;
    xw("feature-gso-tcpv4", "0")?;
    xw("state", "4")?;
    let st = xenstore::wait_for(be_state.as_str(), &[4], deadline).unwrap_or(0);
    if st != 4 {
        return Err("the backend did not connect");
    }
    hypercall::evtchn_send(port);
    Ok((net, mac))
}

impl Net {
    fn post_rx(&mut self, id: u16) {
        let slot = 64 + (self.rx_req_prod % RING) as usize * 8;
        w16(self.rx, slot, id);
        w32(self.rx, slot + 4, self.rx_pages[id as usize].1);
        self.rx_req_prod = self.rx_req_prod.wrapping_add(1);
    }

    fn reap_tx(&mut self) {
        let prod = u32_at(self.tx, 8).load(Ordering::Acquire);
        while self.tx_rsp_cons != prod {
            let slot = 64 + (self.tx_rsp_cons % RING) as usize * 12;
            let id = r16(self.tx, slot) as usize;
            if id < TX_SLOTS {
                self.tx_free[id] = true;
            }
            self.tx_rsp_cons = self.tx_rsp_cons.wrapping_add(1);
        }
        // Ask to be notified of the next response.
        u32_at(self.tx, 12).store(self.tx_rsp_cons.wrapping_add(1), Ordering::Release);
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), HostError> {
        if frame.len() > 4096 || frame.is_empty() {
            return Err(HostError::Invalid);
        }
        let deadline = shared::system_time_ns() + 1_000_000_000;
        let id = loop {
            self.reap_tx();
            if let Some(id) = self.tx_free.iter().position(|&f| f) {
                break id;
            }
            let now = shared::system_time_ns();
            if now >= deadline {
                return Err(HostError::Unspecified);
            }
            shared::wait(&[self.port], deadline.min(now + 10_000_000));
        };
        self.tx_free[id] = false;
        let (page, gref) = self.tx_pages[id];
        // SAFETY: the page is ours (granted read-only to the backend, which has finished
        // with it: its slot was free).
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), page, frame.len()) };
        let slot = 64 + (self.tx_req_prod % RING) as usize * 12;
        w32(self.tx, slot, gref);
        w16(self.tx, slot + 4, 0); // offset
        w16(self.tx, slot + 6, 0); // flags
        w16(self.tx, slot + 8, id as u16);
        w16(self.tx, slot + 10, frame.len() as u16);
        self.tx_req_prod = self.tx_req_prod.wrapping_add(1);
        fence(Ordering::Release);
        u32_at(self.tx, 0).store(self.tx_req_prod, Ordering::Release);
        hypercall::evtchn_send(self.port);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, HostError> {
        loop {
            let prod = u32_at(self.rx, 8).load(Ordering::Acquire);
            if self.rx_rsp_cons == prod {
                u32_at(self.rx, 12).store(self.rx_rsp_cons.wrapping_add(1), Ordering::Release);
                fence(Ordering::SeqCst);
                if u32_at(self.rx, 8).load(Ordering::Acquire) == prod {
                    return Ok(None);
                }
                continue;
            }
            fence(Ordering::Acquire);
            let slot = 64 + (self.rx_rsp_cons % RING) as usize * 8;
            let id = r16(self.rx, slot);
            let offset = r16(self.rx, slot + 2) as usize;
            let flags = r16(self.rx, slot + 4);
            let status = r16(self.rx, slot + 6) as i16;
            self.rx_rsp_cons = self.rx_rsp_cons.wrapping_add(1);
            let got = if (id as usize) < RX_SLOTS && status > 0 {
                let n = status as usize;
                if offset + n <= 4096 && n <= buf.len() {
                    let page = self.rx_pages[id as usize].0;
                    // SAFETY: the backend filled `n` bytes at `offset` of this page of ours
                    // and handed it back with this response.
                    unsafe {
                        core::ptr::copy_nonoverlapping(page.add(offset), buf.as_mut_ptr(), n)
                    };
                    Some(n)
                } else {
                    None
                }
            } else {
                None
            };
            // NETRXF_extra_info: the next slot holds an extra-info entry, not a frame.
            if flags & 8 != 0 {
                self.rx_rsp_cons = self.rx_rsp_cons.wrapping_add(1);
            }
            if (id as usize) < RX_SLOTS {
                self.post_rx(id);
                fence(Ordering::Release);
                u32_at(self.rx, 0).store(self.rx_req_prod, Ordering::Release);
                hypercall::evtchn_send(self.port);
            }
            if got.is_some() {
                return Ok(got);
            }
        }
    }
}

fn with<R>(handle: u64, f: impl FnOnce(&mut Net) -> R) -> Option<R> {
    let mut nets = NETS.lock();
    let i = nets.1.iter().position(|&h| h == handle)?;
    nets.0[i].as_mut().map(f)
}

/// Sends `frame` on the interface of manifest handle `handle`.
pub(crate) fn write(handle: u64, frame: &[u8]) -> Result<(), HostError> {
    with(handle, |n| n.write(frame)).unwrap_or(Err(HostError::Invalid))
}

/// Takes one received frame of manifest handle `handle`.
pub(crate) fn read(handle: u64, buf: &mut [u8]) -> Result<Option<usize>, HostError> {
    with(handle, |n| n.read(buf)).unwrap_or(Err(HostError::Invalid))
}
