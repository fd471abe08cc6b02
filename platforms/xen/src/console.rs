//! The PV console: the ring at `HVM_PARAM_CONSOLE_PFN`, served by xenconsoled in dom0,
//! with `HVM_PARAM_CONSOLE_EVTCHN` to notify it.
//!
//! `struct xencons_interface` (xen/include/public/io/console.h): `in[1024]`,
//! `out[2048]`, then the indexes `in_cons`, `in_prod`, `out_cons`, `out_prod` (u32,
//! free-running). The guest produces into `out`; xenconsoled consumes and notifies.

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering, fence};

use crate::{hypercall, shared};

const OUT: usize = 1024;
const OUT_SIZE: u32 = 2048;
const OUT_CONS: usize = 3080;
const OUT_PROD: usize = 3084;

static RING: AtomicUsize = AtomicUsize::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);

/// Finds the console ring (at boot).
pub(crate) fn init() -> Result<(), i64> {
    let pfn = hypercall::hvm_param(hypercall::param::CONSOLE_PFN)?;
    let port = hypercall::hvm_param(hypercall::param::CONSOLE_EVTCHN)?;
    if pfn == 0 || pfn >= 1 << 20 {
        return Err(-22);
    }
    PORT.store(port as u32, Ordering::Relaxed);
    RING.store((pfn << 12) as usize, Ordering::Release);
    Ok(())
}

fn index(ring: usize, off: usize) -> &'static AtomicU32 {
    // SAFETY: the ring is a page Xen mapped for us (identity-mapped below 4 GiB), and
    // `off` one of its aligned index fields.
    unsafe { &*((ring + off) as *const AtomicU32) }
}

/// How long a write waits for xenconsoled to make room before dropping the rest.
const STALL_NS: u64 = 2_000_000_000;

/// Writes `bytes` to the console, waiting (up to [`STALL_NS`] with no progress) for
/// room in the ring. Without a console (before `init`), the bytes are dropped.
pub(crate) fn write(mut bytes: &[u8]) {
    let ring = RING.load(Ordering::Acquire);
    if ring == 0 {
        return;
    }
    let port = PORT.load(Ordering::Relaxed);
    let (cons, prod) = (index(ring, OUT_CONS), index(ring, OUT_PROD));
    let mut stalled_since = None;
    while !bytes.is_empty() {
        let p = prod.load(Ordering::Relaxed);
        let c = cons.load(Ordering::Acquire);
        let room = OUT_SIZE - p.wrapping_sub(c).min(OUT_SIZE);
        if room == 0 {
            hypercall::evtchn_send(port);
            let now = shared::system_time_ns();
            let since = *stalled_since.get_or_insert(now);
            if now.saturating_sub(since) > STALL_NS {
                return;
            }
            shared::wait(&[port], now + 10_000_000);
            continue;
        }
        stalled_since = None;
        let n = (room as usize).min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let at = ring + OUT + (p.wrapping_add(i as u32) % OUT_SIZE) as usize;
            // SAFETY: `at` is inside the ring's `out` array, in a slot the consumer has
            // released (it is within `room`).
            unsafe { (at as *mut u8).write_volatile(b) };
        }
        fence(Ordering::Release);
        prod.store(p.wrapping_add(n as u32), Ordering::Release);
        bytes = &bytes[n..];
    }
    hypercall::evtchn_send(port);
}

/// Waits until xenconsoled has taken everything written (at most `timeout_ns`), so
/// that the last lines are not lost when the domain shuts down.
pub(crate) fn flush(timeout_ns: u64) {
    let ring = RING.load(Ordering::Acquire);
    if ring == 0 {
        return;
    }
    let port = PORT.load(Ordering::Relaxed);
    let deadline = shared::system_time_ns().saturating_add(timeout_ns);
    loop {
        let p = index(ring, OUT_PROD).load(Ordering::Acquire);
        if index(ring, OUT_CONS).load(Ordering::Acquire) == p {
            return;
        }
        let now = shared::system_time_ns();
        if now >= deadline {
            return;
        }
        hypercall::evtchn_send(port);
        shared::wait(&[port], deadline.min(now + 10_000_000));
    }
}
