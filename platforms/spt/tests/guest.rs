//! The spt guest, end to end: builds the glue of `examples/` as real guest images, checks
//! their ELF layout against what the spt tender requires, and runs them on the tender.
//!
//! The steps are shared with hvt (`../../solo5/testing/guest_harness.rs`):
//!
//! 1. `cargo build --examples --features examples --target x86_64-unknown-none --release`
//!    with the flags a unikernel needs (`harness::rustflags`), in a target directory of
//!    its own.
//! 2. The images' ELF header, program headers and Solo5 notes are checked (what
//!    `readelf -lnW` shows, against shared/reference/solo5-abi.md §1).
//! 3. The images run on the tender (`$COMPOSE_SPT`, or `compose-spt` built by this test in
//!    a target directory of its own): hello greets and exits 0; bad boot arguments exit 64;
//!    the devices example uses the wall clock, the random device and a block device; a
//!    panic exits 255 and a memory fault 139 (SIGSEGV, reported by the tender); the sandbox
//!    example makes every allowed call at the edges of the seccomp policy, then one
//!    forbidden call per run, each killed with SIGSYS and reported (exit 159); and, as root
//!    with `ip` available, echo serves TCP clients through a tap in a network namespace of
//!    its own, without spinning while idle: once on private addresses (10.77.0.0/24, inside
//!    the namespace only), once with `specs/echo.kdl`'s own address, 127.0.0.1/8 (reachable
//!    over a tap from a namespace whose `lo` is down, with `route_localnet`). The echo runs
//!    are skipped, loudly, without root.
//!
//! The test has its own `main` (harness = false): re-executed inside the namespace with
//! `COMPOSE_SPT_ECHO_CLIENT=ADDR`, it is the echo client.

#[path = "../../solo5/testing/guest_harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{Disk, Images, Net, Results, Target, Tender, text};

static SPT: Target = Target {
    name: "spt",
    abi_target: 2,
    client_env: "COMPOSE_SPT_ECHO_CLIENT",
    prepare: no_core_dumps,
    check_fault,
};

fn main() {
    harness::be_echo_client_if_asked(&SPT);
    let images = harness::build_examples(&SPT);
    let images = &images;
    let tender = build_tender();
    let t = &tender;
    let mut results = Results::default();
    results.run("elf_layout", || harness::elf_layout(&SPT, images));
    results.run("hello_greets", || harness::hello_greets(t, images));
    results.run("hello_help_and_bad_arguments", || {
        harness::hello_help_and_bad_arguments(t, images)
    });
    results.run("devices_clock_random_block", || harness::devices(t, images));
    results.run("devices_panic_fault_and_bad_sector_size", || {
        harness::devices_failures(t, images)
    });
    results.run("sandbox_allowed_calls", || sandbox_allowed(t, images));
    results.run("sandbox_forbidden_calls_are_killed", || {
        sandbox_forbidden(t, images)
    });
    match harness::netns_or_why(&SPT) {
        Ok(()) => {
            results.run("echo_private_address_over_a_tap", || {
                harness::echo(t, images, Net::Private)
            });
            results.run("echo_spec_address_over_a_tap", || {
                harness::echo(t, images, Net::Loopback)
            });
        }
        Err(why) => {
            println!("SKIPPED: guest: the echo runs over a tap: {why}");
            eprintln!("SKIPPED: guest: the echo runs over a tap: {why}");
        }
    }
    results.exit();
}

/// The tender: `$COMPOSE_SPT`, or `compose-spt` built (or found up to date) by cargo in a
/// target directory of this test's.
fn build_tender() -> Tender {
    if let Some(p) = std::env::var_os("COMPOSE_SPT") {
        return Tender {
            path: PathBuf::from(p),
            target: &SPT,
        };
    }
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("spt-tender");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(harness::workspace())
        .args(["build", "-p", "compose-spt"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building compose-spt failed");
    Tender {
        path: target_dir.join("debug/compose-spt"),
        target: &SPT,
    }
}

/// Keeps guests killed by SIGSYS or SIGSEGV from leaving core files behind.
fn no_core_dumps(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit(2) is async-signal-safe and takes a pointer to a local.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
}

/// A memory fault kills the guest process with SIGSEGV; the tender says so.
fn check_fault(out: &Output) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(139), "{stderr}");
    assert!(
        stderr.contains("compose-spt: the unikernel crashed: invalid memory access")
            && stderr.contains("(SIGSEGV)"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// The seccomp policy, from a Rust unikernel
// ---------------------------------------------------------------------------------------

fn sandbox(t: &Tender, images: &Images, call: &str) -> Output {
    let disk = Disk::new(&SPT, &format!("sandbox-{call}"), 64 * 1024);
    let flag = disk.flag();
    let arg = format!("--call={call}");
    t.run(&["--mem=32", &flag], &images.get("sandbox_guest"), &[&arg])
}

fn sandbox_allowed(t: &Tender, images: &Images) {
    let out = sandbox(t, images, "none");
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert_eq!(stdout.matches(": ok").count(), 5, "{stdout}");
}

fn sandbox_forbidden(t: &Tender, images: &Images) {
    for call in [
        "getpid",
        "open",
        "openat",
        "exit",
        "mmap",
        "getrandom",
        "sched-yield",
        "epoll-wait",
        "write-stderr",
        "write-block-fd",
        "read-stdin",
        "pread-two-blocks",
        "pread-half-block",
        "pread-past-end",
        "pread-negative",
        "pwrite-two-blocks",
        "pwrite-past-end",
        "pread-stdout",
        "clock-cputime",
        "clock-boottime",
        "arch-get-fs",
        "timerfd-other-fd",
        "epoll-other-fd",
    ] {
        let out = sandbox(t, images, call);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(159),
            "{call}: {stdout}\nstderr: {stderr}"
        );
        assert_eq!(stdout, format!("sandbox: {call}\n"), "{call}");
        assert!(
            stderr.contains(
                "compose-spt: the unikernel made a system call the spt seccomp policy does \
                 not allow, and was killed (SIGSYS)"
            ),
            "{call}: {stderr}"
        );
    }
}
