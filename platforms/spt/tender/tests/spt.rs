//! End-to-end tests: tiny hand-assembled guests run under the real `compose-spt` binary,
//! seccomp filter included. Nothing here needs privileges (the tap test is in `net.rs`).

mod common;
mod guests;

use common::*;
use solo5_abi::{AbiTarget, MftDevice};
use std::process::Stdio;
use std::time::Duration;

#[test]
fn hello_prints_and_exits_0() {
    let dir = TempDir::new("hello");
    let k = dir.file("hello.spt", &guest(guests::HELLO, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "hello\n"), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn cmdline_boot_info_and_entry_state() {
    let dir = TempDir::new("cmdline");
    let k = dir.file("bootinfo.spt", &guest(guests::BOOTINFO, &[]));
    let r = run(&[
        "--mem=8",
        "--",
        path_str(&k),
        "one",
        "two  three",
        "--mem=4",
    ]);
    assert_eq!(r.stdout, "one two  three --mem=4\n", "{r:?}");
    assert_eq!(r.code, Some(0), "{r:?}");
    // spt takes --mem as given (no rounding): rsp + 8 is still mem_size.
    let r = run(&["--mem=7", path_str(&k)]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "\n"), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
}

/// Runs the probe guest with a block device of `blocks` blocks of `bs` bytes and the
/// selector `call`.
fn probe(call: &str, bs: u16, blocks: usize) -> Run {
    let dir = TempDir::new(&format!("probe-{call}-{bs}"));
    let k = dir.file(
        "probe.spt",
        &guest(guests::PROBE, &[MftDevice::block("storage")]),
    );
    let img = dir.file("disk.img", &vec![0u8; usize::from(bs) * blocks]);
    let block = format!("--block:storage={}", path_str(&img));
    let size = format!("--block-sector-size:storage={bs}");
    run(&["--mem=8", &block, &size, path_str(&k), call])
}

#[test]
fn calls_inside_the_policy_pass() {
    for (call, bs) in [("r", 512), ("w", 512), ("r", 4096), ("w", 4096), ("m", 512)] {
        let r = probe(call, bs, 8);
        assert_eq!(r.code, Some(0), "{call} with {bs}-byte blocks: {r:?}");
    }
    // arch_prctl(ARCH_SET_FS) is allowed: clearing FS in the tender's stead is harmless.
    let r = probe("f", 512, 8);
    assert_eq!(r.code, Some(0), "{r:?}");
    // The guest's exit status is the tender's (2: an unknown selector).
    let r = probe("?", 512, 8);
    assert_eq!((r.code, r.stderr.as_str()), (Some(2), ""), "{r:?}");
}

fn assert_killed(r: &Run, what: &str) {
    assert_eq!(r.code, Some(159), "{what}: {r:?}");
    assert!(r.stderr.contains(SIGSYS_MESSAGE), "{what}: {r:?}");
    assert!(r.stderr.contains("(SIGSYS)"), "{what}: {r:?}");
}

#[test]
fn forbidden_system_calls_are_killed_and_reported() {
    for (call, what, named) in [
        ("p", "getpid", "getpid (system call 39) at 0x10"),
        ("o", "open", "open (system call 2) at 0x10"),
        (
            "x",
            "exit instead of exit_group",
            "exit (system call 60) at 0x10",
        ),
        (
            "c",
            "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)",
            "clock_gettime (system call 228) at 0x10",
        ),
    ] {
        let r = probe(call, 512, 8);
        assert_killed(&r, what);
        // The report names the refused call and the guest address it was made from (the
        // probe's code is at 0x100000).
        assert!(
            r.stderr.contains(&format!("(SIGSYS): {named}")),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn calls_on_the_wrong_fd_are_killed() {
    assert_killed(&probe("s", 512, 8), "write to stderr");
    assert_killed(&probe("b", 512, 8), "write to the block image");
}

#[test]
fn block_io_of_the_wrong_size_or_place_is_killed() {
    assert_killed(&probe("2", 512, 8), "pread64 of two blocks");
    assert_killed(&probe("2", 4096, 8), "pread64 of two 4 KiB blocks");
    assert_killed(&probe("e", 512, 8), "pread64 at the capacity");
}

#[test]
fn the_deadline_timer_wakes_a_yield() {
    let dir = TempDir::new("yield");
    let k = dir.file("yield.spt", &guest(guests::YIELD, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.elapsed >= Duration::from_secs(1), "{r:?}");
}

#[test]
fn memory_faults_are_reported() {
    let dir = TempDir::new("faults");
    for (name, code) in [
        ("rowrite", guests::ROWRITE),
        ("bootwrite", guests::BOOTWRITE),
        ("execheap", guests::EXECHEAP),
    ] {
        let k = dir.file(name, &guest(code, &[]));
        let r = run(&["--mem=8", path_str(&k)]);
        assert_eq!(r.code, Some(139), "{name}: {r:?}");
        assert!(
            r.stderr.contains("invalid memory access")
                && r.stderr.contains("(SIGSEGV): address 0x")
                && r.stderr.contains(", instruction at 0x"),
            "{name}: {r:?}"
        );
    }
    // With --x-exec-heap, code copied to the heap runs.
    let k = dir.file("execheap", &guest(guests::EXECHEAP, &[]));
    let r = run(&["--mem=8", "--x-exec-heap", path_str(&k)]);
    assert_eq!(r.code, Some(0), "{r:?}");
}

#[test]
fn refuses_what_is_not_an_spt_guest() {
    let dir = TempDir::new("refuse");
    let k = dir.file("hvt", &guest_for(AbiTarget::Hvt, guests::HELLO, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr
            .contains("Executable is not for the solo5-spt target"),
        "{r:?}"
    );
    // A declared device must be attached.
    let k = dir.file(
        "probe",
        &guest(guests::PROBE, &[MftDevice::block("storage")]),
    );
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("declared but not attached"), "{r:?}");
    // Memory must leave room for the image.
    let k = dir.file("hello", &guest(guests::HELLO, &[]));
    let r = run(&["--mem=1", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("below the minimum"), "{r:?}");
}

#[test]
fn help_and_version() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("usage: compose-spt") && r.stderr.contains("--x-exec-heap"),
        "{r:?}"
    );
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("spt ABI version 2"), "{r:?}");
    let r = run(&["--x-exec-heap"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("Missing KERNEL"), "{r:?}");
}

/// The state letter of process `pid` (`S`, `Z`...), or `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Waits until the WAIT guest `pid` sleeps in `epoll_pwait` (where `/proc/PID/syscall`
/// can be read; the state `S` alone elsewhere). On a busy machine it may still be
/// `R` for a while after it started.
fn wait_until_guest_sleeps(pid: u32) {
    wait_for(
        "the guest to sleep in epoll_pwait",
        Duration::from_secs(20),
        || {
            let sleeping = state(pid) == Some('S')
                && blocked_in_syscall(pid).is_none_or(|nr| nr == libc::SYS_epoll_pwait);
            sleeping.then_some(())
        },
    );
}

/// Kills a child on drop, so that a failed assertion leaves no process behind.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn signals_are_reported_and_the_guest_is_the_tenders_own_process() {
    let dir = TempDir::new("signals");
    let k = dir.file("wait.spt", &guest(guests::WAIT, &[]));

    // SIGTERM to compose-spt ends the guest, and is reported.
    let mut t = Reap(Some(
        tender()
            .args(["--mem=8", path_str(&k)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = t.0.as_ref().unwrap().id();
    // The handler is in place once the guest runs, and the guest waits in the tender's
    // own process: there is no second one.
    wait_for(
        "compose-spt to handle SIGTERM",
        Duration::from_secs(20),
        || catches_signal(pid, libc::SIGTERM).then_some(()),
    );
    wait_until_guest_sleeps(pid);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    assert_eq!(children.trim(), "", "compose-spt has a child process");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "spt:wait.spt");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = t.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "compose-spt: Exiting on signal 15 (SIGTERM)\n",
        "{out:?}"
    );

    // Any other signal that ends a process is named.
    let mut t = Reap(Some(
        tender()
            .args(["--mem=8", path_str(&k)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = t.0.as_ref().unwrap().id();
    wait_until_guest_sleeps(pid);
    wait_for(
        "compose-spt to handle SIGUSR1",
        Duration::from_secs(20),
        || catches_signal(pid, libc::SIGUSR1).then_some(()),
    );
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    let out = t.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(138), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the unikernel was killed (SIGUSR1)"),
        "{out:?}"
    );
}
