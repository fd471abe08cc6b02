//! A minimal XenStore client: read, write, directory and a wait for a value, over the
//! ring at `HVM_PARAM_STORE_PFN` with `HVM_PARAM_STORE_EVTCHN` (xenstored in dom0).
//!
//! `struct xenstore_domain_interface` (xen/include/public/io/xs_wire.h): `req[1024]`,
//! `rsp[1024]`, then `req_cons`, `req_prod`, `rsp_cons`, `rsp_prod` (u32, free-running).
//! A message is a `xsd_sockmsg` header (type, req_id, tx_id, len: u32 each) and `len`
//! bytes of payload. Requests are made one at a time and answered in order; watch
//! events, which may arrive in between, are skipped (the front ends wait for a value by
//! re-reading it each time the store's event channel fires, with a deadline). Relative
//! paths are relative to the domain's home, `/local/domain/<domid>/`. Works without a
//! heap (the runtime attaches devices before it has one).

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering, fence};

use crate::{hypercall, shared};

const REQ: usize = 0;
const RSP: usize = 1024;
const RING_SIZE: u32 = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;

const XS_DIRECTORY: u32 = 1;
const XS_READ: u32 = 2;
const XS_WATCH: u32 = 4;
const XS_UNWATCH: u32 = 5;
const XS_WRITE: u32 = 11;
const XS_WATCH_EVENT: u32 = 15;
const XS_ERROR: u32 = 16;

/// Why a XenStore request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XsError {
    /// No XenStore ring (the HVM parameters were missing).
    NoStore,
    /// xenstored answered with an error (`ENOENT`, `EACCES`, ...).
    Store([u8; 12]),
    /// The answer did not fit the buffer.
    TooLong,
    /// No answer in time.
    Timeout,
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::NoStore => f.write_str("no XenStore"),
            XsError::Store(e) => {
                let n = e.iter().position(|&b| b == 0).unwrap_or(e.len());
                f.write_str(core::str::from_utf8(&e[..n]).unwrap_or("error"))
            }
            XsError::TooLong => f.write_str("value too long"),
            XsError::Timeout => f.write_str("XenStore did not answer"),
        }
    }
}

static RING: AtomicUsize = AtomicUsize::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);
static REQ_ID: AtomicU32 = AtomicU32::new(1);

/// How long one request may take.
const TIMEOUT_NS: u64 = 10_000_000_000;

fn ring() -> Result<usize, XsError> {
    let r = RING.load(Ordering::Acquire);
    if r != 0 {
        return Ok(r);
    }
    let pfn = hypercall::hvm_param(hypercall::param::STORE_PFN).map_err(|_| XsError::NoStore)?;
    let port =
        hypercall::hvm_param(hypercall::param::STORE_EVTCHN).map_err(|_| XsError::NoStore)?;
    if pfn == 0 || pfn >= 1 << 20 {
        return Err(XsError::NoStore);
    }
    PORT.store(port as u32, Ordering::Relaxed);
    RING.store((pfn << 12) as usize, Ordering::Release);
    Ok((pfn << 12) as usize)
}

/// The store's event channel (for waits on changes).
pub(crate) fn port() -> u32 {
    PORT.load(Ordering::Relaxed)
}

fn idx(ring: usize, off: usize) -> &'static AtomicU32 {
    // SAFETY: the ring page is Xen's, identity-mapped; `off` an aligned index field.
    unsafe { &*((ring + off) as *const AtomicU32) }
}

fn wait_store(deadline: u64) -> Result<(), XsError> {
    let now = shared::system_time_ns();
    if now >= deadline {
        return Err(XsError::Timeout);
    }
    shared::wait(&[port()], deadline.min(now + 50_000_000));
    Ok(())
}

fn put(ring: usize, mut bytes: &[u8], deadline: u64) -> Result<(), XsError> {
    let (cons, prod) = (idx(ring, REQ_CONS), idx(ring, REQ_PROD));
    while !bytes.is_empty() {
        let p = prod.load(Ordering::Relaxed);
        let room = RING_SIZE - p.wrapping_sub(cons.load(Ordering::Acquire)).min(RING_SIZE);
        if room == 0 {
            hypercall::evtchn_send(port());
            wait_store(deadline)?;
            continue;
        }
        let n = (room as usize).min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let at = ring + REQ + (p.wrapping_add(i as u32) % RING_SIZE) as usize;
            // SAFETY: a free slot of the request ring.
            unsafe { (at as *mut u8).write_volatile(b) };
        }
        fence(Ordering::Release);
        prod.store(p.wrapping_add(n as u32), Ordering::Release);
        bytes = &bytes[n..];
    }
    hypercall::evtchn_send(port());
    Ok(())
}

/// Takes `out.len()` bytes of the response ring (or skips them when `out` is `None`).
fn take(
    ring: usize,
    mut len: usize,
    mut out: Option<&mut [u8]>,
    deadline: u64,
) -> Result<(), XsError> {
    let (cons, prod) = (idx(ring, RSP_CONS), idx(ring, RSP_PROD));
    let mut at = 0;
    while len > 0 {
        let c = cons.load(Ordering::Relaxed);
        let avail = prod.load(Ordering::Acquire).wrapping_sub(c).min(RING_SIZE) as usize;
        if avail == 0 {
            wait_store(deadline)?;
            continue;
        }
        fence(Ordering::Acquire);
        let n = avail.min(len);
        for i in 0..n {
            let src = ring + RSP + (c.wrapping_add(i as u32) % RING_SIZE) as usize;
            // SAFETY: a filled slot of the response ring.
            let b = unsafe { (src as *const u8).read_volatile() };
            if let Some(o) = out.as_deref_mut() {
                o[at + i] = b;
            }
        }
        fence(Ordering::Release);
        cons.store(c.wrapping_add(n as u32), Ordering::Release);
        hypercall::evtchn_send(port());
        at += n;
        len -= n;
    }
    Ok(())
}

/// Sends one request (`parts` concatenated as its payload) and copies the answer's
/// payload into `out`; returns its length.
fn request(ty: u32, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, XsError> {
    let ring = ring()?;
    let deadline = shared::system_time_ns() + TIMEOUT_NS;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > 4096 {
        return Err(XsError::TooLong);
    }
    let id = REQ_ID.fetch_add(1, Ordering::Relaxed);
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&ty.to_le_bytes());
    header[4..8].copy_from_slice(&id.to_le_bytes());
    header[12..].copy_from_slice(&(len as u32).to_le_bytes());
    put(ring, &header, deadline)?;
    for p in parts {
        put(ring, p, deadline)?;
    }
    loop {
        let mut h = [0u8; 16];
        take(ring, 16, Some(&mut h), deadline)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (rty, rid, rlen) = (word(0), word(4), word(12) as usize);
        if rty == XS_WATCH_EVENT || rid != id {
            take(ring, rlen, None, deadline)?;
            continue;
        }
        if rty == XS_ERROR {
            let mut e = [0u8; 12];
            let n = rlen.min(e.len());
            take(ring, n, Some(&mut e[..n]), deadline)?;
            take(ring, rlen - n, None, deadline)?;
            return Err(XsError::Store(e));
        }
        if rlen > out.len() {
            take(ring, rlen, None, deadline)?;
            return Err(XsError::TooLong);
        }
        take(ring, rlen, Some(&mut out[..rlen]), deadline)?;
        return Ok(rlen);
    }
}

/// Reads `path` into `out`; returns the value (without a trailing NUL).
pub(crate) fn read<'a>(path: &str, out: &'a mut [u8]) -> Result<&'a [u8], XsError> {
    let n = request(XS_READ, &[path.as_bytes(), b"\0"], out)?;
    let v = &out[..n];
    Ok(v.strip_suffix(b"\0").unwrap_or(v))
}

/// Reads `path` as a decimal number.
pub(crate) fn read_u64(path: &str) -> Result<u64, XsError> {
    let mut buf = [0u8; 32];
    let v = read(path, &mut buf)?;
    core::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(XsError::Store(*b"EINVAL\0\0\0\0\0\0"))
}

/// Writes `value` at `path`.
pub(crate) fn write(path: &str, value: &[u8]) -> Result<(), XsError> {
    let mut ack = [0u8; 8];
    request(XS_WRITE, &[path.as_bytes(), b"\0", value], &mut ack).map(|_| ())
}

/// Lists the children of `path` (NUL-separated) into `out`.
#[allow(dead_code)]
pub(crate) fn directory<'a>(path: &str, out: &'a mut [u8]) -> Result<&'a [u8], XsError> {
    let n = request(XS_DIRECTORY, &[path.as_bytes(), b"\0"], out)?;
    Ok(&out[..n])
}

/// Waits until the number at `path` is one of `wanted`, until `deadline_ns`; returns the
/// last value read. A watch on `path` makes xenstored notify the store's event channel
/// when it changes, and the value is read again then (and at least every half second).
pub(crate) fn wait_for(path: &str, wanted: &[u64], deadline_ns: u64) -> Result<u64, XsError> {
    const TOKEN: &[u8] = b"compose-wait\0";
    let mut ack = [0u8; 8];
    let watching = request(XS_WATCH, &[path.as_bytes(), b"\0", TOKEN], &mut ack).is_ok();
    let r = wait_for_value(path, wanted, deadline_ns, if watching { 500 } else { 20 });
    if watching {
        let _ = request(XS_UNWATCH, &[path.as_bytes(), b"\0", TOKEN], &mut ack);
    }
    r
}

fn wait_for_value(
    path: &str,
    wanted: &[u64],
    deadline_ns: u64,
    every_ms: u64,
) -> Result<u64, XsError> {
    loop {
        let v = read_u64(path).ok();
        if let Some(v) = v
            && wanted.contains(&v)
        {
            return Ok(v);
        }
        let now = shared::system_time_ns();
        if now >= deadline_ns {
            return v.ok_or(XsError::Timeout);
        }
        // Read again when the store has news (the watch fires), or after a while.
        shared::wait(&[port()], deadline_ns.min(now + every_ms * 1_000_000));
    }
}

/// A path built on the stack (`format_args!` into 128 bytes).
pub(crate) struct Path {
    buf: [u8; 160],
    len: usize,
}

impl Path {
    pub(crate) fn new(args: fmt::Arguments<'_>) -> Self {
        let mut p = Path {
            buf: [0; 160],
            len: 0,
        };
        let _ = fmt::write(&mut p, args);
        p
    }

    pub(crate) fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for Path {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let b = s.as_bytes();
        if self.len + b.len() > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        Ok(())
    }
}

/// `Path::new(format_args!(...))`.
macro_rules! xs_path {
    ($($t:tt)*) => { $crate::xenstore::Path::new(format_args!($($t)*)) };
}
pub(crate) use xs_path;
