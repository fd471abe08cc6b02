//! The executor platform: the clock, and parking in the tender while polling the stacks.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use compose_devices::executor::Platform;

use crate::single::Single;
use crate::{Bindings, time};

/// Something [`Solo5::park`] polls: a network stack.
pub(crate) trait Poll {
    /// Runs at `now` (ns since boot); returns when it wants to run next.
    fn poll(&self, now: u64) -> Option<u64>;
}

impl<D: compose_netstack::EthernetDevice> Poll for compose_netstack::Stack<D> {
    fn poll(&self, now: u64) -> Option<u64> {
        compose_netstack::Stack::poll(self, now)
    }
}

/// The longest single wait in the tender: an hour.
const MAX_WAIT_NS: u64 = 3600 * 1_000_000_000;

/// The network stacks started so far.
static STACKS: Single<Vec<Rc<dyn Poll>>> = Single::new(Vec::new());

/// Adds a stack for [`Solo5::park`] to poll.
pub(crate) fn register(stack: Rc<dyn Poll>) {
    STACKS.with(|s| s.push(stack));
}

/// Polls every stack at `now`; returns the earliest time one wants to run next.
fn poll_stacks(now: u64) -> Option<u64> {
    // Clone the list so that a stack's poll could, in principle, start another.
    let stacks: Vec<Rc<dyn Poll>> = STACKS.with(|s| s.clone());
    stacks.iter().filter_map(|s| s.poll(now)).min()
}

/// How often the executor parked, and how often parking blocked in the tender.
static PARKS: AtomicU64 = AtomicU64::new(0);
static YIELDS: AtomicU64 = AtomicU64::new(0);
/// How often the target's monotonic clock was read ([`count_clock_read`]).
static CLOCK_READS: AtomicU64 = AtomicU64::new(0);

/// Counts one read of the target's monotonic clock: each target's
/// `Bindings::monotonic_ns` calls it. On hvt a read is an `rdtsc`, which software
/// virtualization may emulate at 10-20 us a read; on spt it is a system call.
#[doc(hidden)]
pub fn count_clock_read() {
    CLOCK_READS.fetch_add(1, Ordering::Relaxed);
}

/// Counters of the executor's idling, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkStats {
    /// Times the executor ran out of ready tasks and parked.
    pub parks: u64,
    /// Times parking blocked in the tender (the others found work at once).
    pub yields: u64,
    /// Reads of the target's monotonic clock.
    pub clock_reads: u64,
}

/// The executor's idling counters so far.
pub fn park_stats() -> ParkStats {
    ParkStats {
        parks: PARKS.load(Ordering::Relaxed),
        yields: YIELDS.load(Ordering::Relaxed),
        clock_reads: CLOCK_READS.load(Ordering::Relaxed),
    }
}

/// compose-devices' executor platform on Solo5 target `B`.
pub struct Solo5<B>(PhantomData<fn() -> B>);

/// The reading [`Solo5::park`] took last, for the executor's next turn (which reads the
/// clock as it starts, right after the park), or `NO_READING`. Taken by the first read.
static PARK_READING: AtomicU64 = AtomicU64::new(NO_READING);
const NO_READING: u64 = u64::MAX;

impl<B: Bindings> Solo5<B> {
    /// A fresh reading, since the unikernel started.
    fn read() -> u64 {
        time::since_boot(B::monotonic_ns())
    }
}

impl<B: Bindings> Platform for Solo5<B> {
    /// Nanoseconds since the unikernel started, from the target's monotonic clock: the
    /// reading the last park ended with if nothing has used it yet (the executor starts
    /// its turn with it), else a fresh one.
    fn now_ns() -> u64 {
        match PARK_READING.swap(NO_READING, Ordering::Relaxed) {
            NO_READING => Self::read(),
            t => t,
        }
    }

    /// Polls the network stacks (sending what tasks wrote); unless that woke a task or a
    /// deadline is already due, yields to the tender until the earliest of `deadline`, the
    /// stacks' own timers and network input; then polls the stacks again so that tasks
    /// waiting for the input are woken.
    ///
    /// It reads the clock once before yielding and once after (each read may be costly:
    /// an emulated `rdtsc` on hvt under software virtualization, a system call on spt),
    /// and leaves its last reading to the executor's next turn.
    fn park(deadline: Option<u64>) {
        PARKS.fetch_add(1, Ordering::Relaxed);
        PARK_READING.store(NO_READING, Ordering::Relaxed);
        let now = Self::read();
        let next = match (deadline, poll_stacks(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next.is_some_and(|t| t <= now) {
            PARK_READING.store(now, Ordering::Relaxed);
            return;
        }
        // With no deadline at all, sleep until network input; without network, until the
        // tender ends the unikernel (a signal). Waits are capped so that a tender never
        // sees an absurd timeout; the executor simply parks again.
        let until = next
            .unwrap_or(u64::MAX)
            .min(now.saturating_add(MAX_WAIT_NS));
        YIELDS.fetch_add(1, Ordering::Relaxed);
        B::yield_until(time::to_target(until), time::to_target(now));
        let woke = Self::read();
        if !STACKS.with(|s| s.is_empty()) {
            poll_stacks(woke);
        }
        PARK_READING.store(woke, Ordering::Relaxed);
    }
}
