//! Runs `hello` on a simulated platform whose clock jumps to each timer's deadline.

use core::cell::RefCell;
use core::time::Duration;
use std::sync::atomic::{AtomicU64, Ordering};

use compose_devices::console::Console;
use compose_devices::executor::{Platform, block_on};
use compose_devices::time::MonotonicClock;

static NOW: AtomicU64 = AtomicU64::new(0);

/// Virtual time: parking jumps straight to the next deadline.
struct Simulated;

impl Platform for Simulated {
    fn now_ns() -> u64 {
        NOW.load(Ordering::SeqCst)
    }
    fn park(deadline_ns: Option<u64>) {
        let deadline = deadline_ns.expect("hello waits only on timers");
        NOW.fetch_max(deadline, Ordering::SeqCst);
    }
}

/// Records each line with the virtual time it was written at.
struct Lines(RefCell<Vec<(u64, String)>>);

impl Console for Lines {
    fn write(&self, bytes: &[u8]) {
        let mut lines = self.0.borrow_mut();
        let text = String::from_utf8_lossy(bytes);
        if text == "\n" {
            return;
        }
        lines.push((Simulated::now_ns(), text.into_owned()));
    }
}

struct Clock;

impl MonotonicClock for Clock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Simulated::now_ns())
    }
}

#[test]
fn greets_times_times_100ms_apart() {
    let console: &'static Lines = compose_devices::leak(Lines(RefCell::new(Vec::new())));
    block_on::<Simulated, _>(hello::start(console, &Clock, "Hello", "Ada".into(), 3));
    let lines = console.0.borrow();
    let start = lines[0].0;
    let got: Vec<(u64, &str)> = lines
        .iter()
        .map(|(t, l)| ((t - start) / 1_000_000, l.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "Hello, Ada! (1/3)"),
            (100, "Hello, Ada! (2/3)"),
            (200, "Hello, Ada! (3/3)")
        ]
    );
}
