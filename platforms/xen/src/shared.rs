//! The shared info page: the PV clock (vCPU 0's `vcpu_time_info`), the wall clock, and
//! the event-channel pending bits that [`wait`] polls.
//!
//! The runtime gives Xen one page of its own (`XENMEM_add_to_physmap`, space
//! `XENMAPSPACE_shared_info`). Layout on x86_64 (xen/include/public/xen.h):
//! `vcpu_info[32]` of 64 bytes (vCPU *n*'s `vcpu_time_info` at `64n + 32`), then
//! `evtchn_pending[64]` (u64) at 2048, `evtchn_mask[64]` at 2560, `wc_version`,
//! `wc_sec`, `wc_nsec`, `wc_sec_hi` (u32) at 3072.
//!
//! No event is delivered as an interrupt: the runtime never sets a callback vector. It
//! waits with `SCHEDOP_poll` on the ports it cares about (Xen wakes a poller whether or
//! not the port is masked) and clears their pending bits itself.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::hypercall;

#[repr(C, align(4096))]
pub(crate) struct Page(pub(crate) UnsafeCell<[u8; 4096]>);

// SAFETY: the page is written by Xen and read through volatile/atomic accesses only.
unsafe impl Sync for Page {}

static SHARED_INFO: Page = Page(UnsafeCell::new([0; 4096]));

fn base() -> *mut u8 {
    SHARED_INFO.0.get().cast()
}

/// Maps the shared info page over [`SHARED_INFO`].
pub(crate) fn init() -> Result<(), i64> {
    let gpfn = base() as u64 >> 12;
    hypercall::add_to_physmap(0, 0, gpfn)
}

fn u32_at(off: usize) -> u32 {
    // SAFETY: `off` is within the page and 4-aligned; Xen updates these fields under
    // their version counters, which the readers check.
    unsafe { (*base().add(off).cast::<AtomicU32>()).load(Ordering::Acquire) }
}

fn u64_at(off: usize) -> u64 {
    // SAFETY: as `u32_at`, 8-aligned.
    unsafe { (*base().add(off).cast::<AtomicU64>()).load(Ordering::Acquire) }
}

/// Xen's system time: nanoseconds since the host booted, from vCPU 0's time info and
/// the TSC (`system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32`), read under its
/// version counter.
pub(crate) fn system_time_ns() -> u64 {
    const T: usize = 32; // vcpu_info[0].time
    loop {
        let version = u32_at(T);
        if version & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let tsc_timestamp = u64_at(T + 8);
        let system_time = u64_at(T + 16);
        let mul = u32_at(T + 24);
        let shift = (u32_at(T + 28) & 0xff) as u8 as i8;
        // SAFETY: RDTSC has no preconditions; Xen lets PVH guests use it.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        fence(Ordering::Acquire);
        if u32_at(T) != version {
            continue;
        }
        let mut delta = tsc.wrapping_sub(tsc_timestamp);
        if shift >= 0 {
            delta <<= shift;
        } else {
            delta >>= -shift;
        }
        let ns = ((u128::from(delta) * u128::from(mul)) >> 32) as u64;
        return system_time.wrapping_add(ns);
    }
}

/// The wall clock: nanoseconds since 1970 (the wall time at system time 0, plus the
/// system time).
pub(crate) fn wall_clock_ns() -> u64 {
    loop {
        let version = u32_at(3072);
        if version & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let sec = u64::from(u32_at(3076)) | (u64::from(u32_at(3084)) << 32);
        let nsec = u64::from(u32_at(3080));
        fence(Ordering::Acquire);
        if u32_at(3072) != version {
            continue;
        }
        return (sec * 1_000_000_000 + nsec).wrapping_add(system_time_ns());
    }
}

fn pending_word(port: u32) -> &'static AtomicU64 {
    let off = 2048 + (port as usize / 64) * 8;
    // SAFETY: ports below 4096 (the 2-level ABI's limit) index within the bitmap.
    unsafe { &*base().add(off).cast::<AtomicU64>() }
}

/// Clears the pending bit of `port`; returns whether it was set.
pub(crate) fn take_pending(port: u32) -> bool {
    let bit = 1u64 << (port % 64);
    pending_word(port).fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

/// Blocks until one of `ports` is pending or Xen's system time reaches `deadline_ns`
/// (0: no deadline), then clears the pending bits of `ports`.
pub(crate) fn wait(ports: &[u32], deadline_ns: u64) {
    hypercall::sched_poll(ports, deadline_ns);
    for &p in ports {
        take_pending(p);
    }
}
