//! Clocks: the host's monotonic and real-time clocks.

use core::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use compose_devices::executor::Platform;

use crate::{Error, Unix};

/// Time since the unikernel started, from CLOCK_MONOTONIC. Its `sleep` parks the process
/// in the host (see [`Unix`]).
#[derive(Debug)]
pub struct MonotonicClock {
    _private: (),
}

impl MonotonicClock {
    /// The host's monotonic clock.
    pub fn new() -> Result<Self, Error> {
        let _ = Unix::now_ns(); // starts counting, if `boot` did not already
        Ok(MonotonicClock { _private: () })
    }
}

impl compose_devices::time::MonotonicClock for MonotonicClock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Unix::now_ns())
    }
}

/// The host's real-time clock (CLOCK_REALTIME).
#[derive(Debug)]
pub struct WallClock {
    _private: (),
}

impl WallClock {
    /// The host's wall clock.
    pub fn new() -> Result<Self, Error> {
        Ok(WallClock { _private: () })
    }
}

impl compose_devices::time::WallClock for WallClock {
    fn now(&self) -> Duration {
        // A host clock set before 1970 reads as the epoch.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}
