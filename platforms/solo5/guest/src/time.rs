//! Clocks: the monotonic clock the executor runs on, the TSC behind it on hvt, and the
//! host's wall clock.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use compose_devices::executor::Platform;

use crate::{Bindings, Error, Solo5};

/// Reading of [`Bindings::monotonic_ns`] when the unikernel started: the zero of
/// [`Solo5::now_ns`].
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Starts the unikernel's clock at the target's current monotonic time.
pub(crate) fn set_epoch<B: Bindings>() {
    EPOCH.store(B::monotonic_ns(), Ordering::Relaxed);
}

/// Converts a time since boot to the target's monotonic scale.
pub(crate) fn to_target(ns_since_boot: u64) -> u64 {
    ns_since_boot.saturating_add(EPOCH.load(Ordering::Relaxed))
}

/// Converts a time on the target's monotonic scale to time since boot.
pub(crate) fn since_boot(target_ns: u64) -> u64 {
    target_ns.saturating_sub(EPOCH.load(Ordering::Relaxed))
}

/// A monotonic clock from the CPU's time-stamp counter, for targets where reading the host
/// clock would cost an exit (hvt).
///
/// The tender reports the TSC frequency (KVM's, which requires an invariant TSC); the
/// clock scales the counter with a 32.32 fixed-point multiplier, as Solo5's bindings do.
#[derive(Debug)]
pub struct TscClock;

/// Nanoseconds per TSC tick, times 2^32.
static TSC_MULT: AtomicU64 = AtomicU64::new(0);

impl TscClock {
    /// Sets the TSC frequency in Hz (ignored if 0: the target has no TSC clock).
    pub(crate) fn init(hz: u64) {
        if hz != 0 {
            let mult = (1_000_000_000u128 << 32) / u128::from(hz);
            TSC_MULT.store(u64::try_from(mult).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Nanoseconds since the TSC started counting (at host boot, usually).
    #[cfg(target_arch = "x86_64")]
    pub fn now_ns() -> u64 {
        // SAFETY: RDTSC has no preconditions, and the Solo5 targets allow it at every
        // privilege level (CR4.TSD = 0).
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        let mult = TSC_MULT.load(Ordering::Relaxed);
        ((u128::from(tsc) * u128::from(mult)) >> 32) as u64
    }
}

/// Time since the unikernel started. Its `sleep` parks the unikernel in the tender (see
/// [`Solo5`]).
pub struct MonotonicClock<B> {
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> MonotonicClock<B> {
    /// The target's monotonic clock.
    pub fn new() -> Result<Self, Error> {
        Ok(MonotonicClock {
            _target: PhantomData,
        })
    }
}

impl<B> core::fmt::Debug for MonotonicClock<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MonotonicClock")
    }
}

impl<B: Bindings> compose_devices::time::MonotonicClock for MonotonicClock<B> {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Solo5::<B>::now_ns())
    }
}

/// The host's wall clock, read from the tender on every call.
pub struct WallClock<B> {
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> WallClock<B> {
    /// The host's wall clock.
    pub fn new() -> Result<Self, Error> {
        Ok(WallClock {
            _target: PhantomData,
        })
    }
}

impl<B> core::fmt::Debug for WallClock<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WallClock")
    }
}

impl<B: Bindings> compose_devices::time::WallClock for WallClock<B> {
    fn now(&self) -> Duration {
        Duration::from_nanos(B::wall_clock_ns())
    }
}
