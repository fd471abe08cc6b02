//! An idle guest must not spin: a guest that sleeps 1 s in epoll_pwait (its deadline on
//! the tender's timerfd) should cost far less than 1 s of CPU. This is its own test
//! binary with a single test, so `RUSAGE_CHILDREN` counts only this run (the tender and,
//! through it, the guest process it waited for).

mod common;
mod guests;

use common::*;
use std::time::Duration;

fn cpu_time(ru: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    cpu_time(&ru)
}

#[test]
fn idle_guest_sleeps_in_the_host() {
    let dir = TempDir::new("idle");
    let k = dir.file("yield.spt", &guest(guests::YIELD, &[]));
    let before = children_cpu();
    let r = run(&["--mem=8", path_str(&k)]);
    let cpu = children_cpu() - before;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.elapsed >= Duration::from_secs(1), "{r:?}");
    assert!(
        cpu < Duration::from_millis(200),
        "tender and guest used {cpu:?} of CPU for a 1 s idle wait"
    );
}
