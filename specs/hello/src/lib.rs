//! The hello example: greets someone a few times, a tenth of a second apart.
//!
//! It shows the smallest useful unikernel: a console, a clock and two boot arguments.
#![no_std]
extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::time::MonotonicClock;

/// Prints `"{greeting}, {name}! ({i}/{times})"` for `i` in `1..=times`, sleeping 100 ms
/// between lines.
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
