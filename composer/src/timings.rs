//! How long each step of a build took: with `COMPOSE_TIMINGS=1` in the environment,
//! `compose build` ends with one line on stderr,
//!
//! ```text
//! timings: parse=0.012s key=0.310s pack=1.204s cargo=0.402s ... total=2.310s; archive-written=1
//! ```
//!
//! the wall time of each step (summed when a step runs more than once, in the order the
//! steps first ran) and counters of work done (`archive-written`: archives the packer
//! wrote; `bundle-entries-compressed`: large bundle entries compressed rather than taken
//! from the cache). The line is for people and benchmarks (benches/rebuild.sh); its
//! format may change.

use std::sync::Mutex;
use std::time::{Duration, Instant};

static PHASES: Mutex<Vec<(&'static str, Duration)>> = Mutex::new(Vec::new());
static COUNTERS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Whether `COMPOSE_TIMINGS` asks for the report (set, and neither empty nor `0`).
pub fn enabled() -> bool {
    std::env::var_os("COMPOSE_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Runs `f`, adding its wall time to `phase`.
pub fn time<T>(phase: &'static str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    add(phase, start.elapsed());
    out
}

/// Adds `d` to `phase`.
pub fn add(phase: &'static str, d: Duration) {
    let mut p = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    match p.iter_mut().find(|(n, _)| *n == phase) {
        Some((_, t)) => *t += d,
        None => p.push((phase, d)),
    }
}

/// Adds `n` to the counter `name`.
pub fn count(name: &'static str, n: u64) {
    let mut c = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    match c.iter_mut().find(|(k, _)| *k == name) {
        Some((_, v)) => *v += n,
        None => c.push((name, n)),
    }
}

/// The report line (without the `timings: ` prefix), `total` being the whole build.
pub fn line(total: Duration) -> String {
    let p = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let c = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    let mut s: Vec<String> = p
        .iter()
        .map(|(n, d)| format!("{n}={:.3}s", d.as_secs_f64()))
        .collect();
    s.push(format!("total={:.3}s", total.as_secs_f64()));
    let mut out = s.join(" ");
    if !c.is_empty() {
        let c: Vec<String> = c.iter().map(|(n, v)| format!("{n}={v}")).collect();
        out.push_str("; ");
        out.push_str(&c.join(" "));
    }
    out
}

/// Prints the report on stderr when [`enabled`].
pub fn report(total: Duration) {
    if enabled() {
        eprintln!("timings: {}", line(total));
    }
}
