//! A unikernel application: a `no_std` library whose entry function compose calls with the
//! devices and values the spec's `use` list names, in that order.
#![no_std]
extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::time::MonotonicClock;

/// Writes `"{greeting}, {name}! ({i}/{times})"` `times` times, a tenth of a second apart.
/// When it returns, the unikernel exits 0.
pub async fn start<C: Console, T: MonotonicClock>(
    console: &'static C,
    clock: &'static T,
    greeting: &'static str,
    name: String,
    times: u32,
) {
    for i in 1..=times {
        if i > 1 {
            clock.sleep(Duration::from_millis(100)).await;
        }
        console.log(&format!("{greeting}, {name}! ({i}/{times})"));
    }
}
