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

/// Counters of the executor's idling, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParkStats {
    /// Times the executor ran out of ready tasks and parked.
    pub parks: u64,
    /// Times parking blocked in the tender (the others found work at once).
    pub yields: u64,
}

/// The executor's idling counters so far.
pub fn park_stats() -> ParkStats {
    ParkStats {
        parks: PARKS.load(Ordering::Relaxed),
        yields: YIELDS.load(Ordering::Relaxed),
    }
}

/// compose-devices' executor platform on Solo5 target `B`.
pub struct Solo5<B>(PhantomData<fn() -> B>);

impl<B: Bindings> Platform for Solo5<B> {
    /// Nanoseconds since the unikernel started, from the target's monotonic clock.
    fn now_ns() -> u64 {
        time::since_boot(B::monotonic_ns())
    }

    /// Polls the network stacks (sending what tasks wrote); unless that woke a task or a
    /// deadline is already due, yields to the tender until the earliest of `deadline`, the
    /// stacks' own timers and network input; then polls the stacks again so that tasks
    /// waiting for the input are woken.
    fn park(deadline: Option<u64>) {
        PARKS.fetch_add(1, Ordering::Relaxed);
        let now = Self::now_ns();
        let next = match (deadline, poll_stacks(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next.is_some_and(|t| t <= now) {
            return;
        }
        // With no deadline at all, sleep until network input; without network, until the
        // tender ends the unikernel (a signal). Waits are capped so that a tender never
        // sees an absurd timeout; the executor simply parks again.
        let until = next
            .unwrap_or(u64::MAX)
            .min(now.saturating_add(MAX_WAIT_NS));
        YIELDS.fetch_add(1, Ordering::Relaxed);
        B::yield_until(time::to_target(until));
        if !STACKS.with(|s| s.is_empty()) {
            poll_stacks(Self::now_ns());
        }
    }
}
