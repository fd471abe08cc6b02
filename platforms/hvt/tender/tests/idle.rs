//! An idle guest must not spin: a guest that POLLs for 1 s with no devices
//! should cost the tender far less than 1 s of CPU. This is its own test
//! binary with a single test, so `RUSAGE_CHILDREN` counts only this tender.

mod common;

use common::*;
use std::time::Duration;

/// ```text
/// _start:
///     sub rsp, 32
///     mov qword ptr [rsp], 1000000000   # POLL 1 s
///     mov edx, 0x503
///     mov eax, esp
///     out dx, eax
///     mov qword ptr [rsp], 0            # HALT 0
///     mov dword ptr [rsp + 8], 0
///     mov edx, 0x508
///     mov eax, esp
///     out dx, eax
/// 1:  jmp 1b
/// ```
const POLL_1S: &[u8] = &[
    0x48, 0x83, 0xec, 0x20, 0x48, 0xc7, 0x04, 0x24, 0x00, 0xca, 0x9a, 0x3b, 0xba, 0x03, 0x05, 0x00,
    0x00, 0x89, 0xe0, 0xef, 0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00, 0xc7, 0x44, 0x24, 0x08,
    0x00, 0x00, 0x00, 0x00, 0xba, 0x08, 0x05, 0x00, 0x00, 0x89, 0xe0, 0xef, 0xeb, 0xfe,
];

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
    if !have_kvm("idle_guest_sleeps_in_the_host") {
        return;
    }
    let dir = TempDir::new("idle");
    let k = dir.file("idle.hvt", &guest(POLL_1S, &[]));
    let before = children_cpu();
    let r = run(&["--mem=8", path_str(&k)]);
    let cpu = children_cpu() - before;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.elapsed >= Duration::from_secs(1), "{r:?}");
    assert!(
        cpu < Duration::from_millis(500),
        "tender used {cpu:?} of CPU for a 1 s idle poll"
    );
}
