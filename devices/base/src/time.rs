//! Clocks: a monotonic clock for measuring and sleeping, and a wall clock for dates.

use core::time::Duration;

/// Time since boot that never goes backwards.
pub trait MonotonicClock {
    /// Time elapsed since the unikernel started.
    fn elapsed(&self) -> Duration;

    /// Completes once `duration` has passed. The unikernel is idle meanwhile: the platform
    /// blocks in the host (or hypervisor) until the deadline or an I/O event.
    fn sleep(&self, duration: Duration) -> crate::executor::Sleep {
        crate::executor::sleep(duration)
    }
}

/// Calendar time (POSIX time, UTC), as good as the host's.
pub trait WallClock {
    /// Time since 1970-01-01T00:00:00Z.
    fn now(&self) -> Duration;
}
