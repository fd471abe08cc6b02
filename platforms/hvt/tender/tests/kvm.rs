//! End-to-end tests: tiny hand-assembled guests run under the real
//! `compose-hvt` binary (seccomp filter included). They need `/dev/kvm`;
//! without it each prints "SKIPPED: no /dev/kvm" and passes.

mod common;
mod guests;

use common::*;
use solo5_abi::{AbiTarget, MftDevice};
use std::time::Duration;

macro_rules! require_kvm {
    ($name:expr) => {
        if !have_kvm($name) {
            return;
        }
    };
}

#[test]
fn hello_puts_and_halt_status() {
    require_kvm!("hello_puts_and_halt_status");
    let dir = TempDir::new("hello");
    let k = dir.file("hello.hvt", &guest(guests::HELLO, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.stdout, "hello\n", "{r:?}");
    assert_eq!(r.code, Some(7), "{r:?}");
}

#[test]
fn out_of_range_puts_pointer_ends_the_guest() {
    require_kvm!("out_of_range_puts_pointer_ends_the_guest");
    let dir = TempDir::new("badptr");
    let k = dir.file("badptr.hvt", &guest(guests::BADPTR, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("Invalid guest access"), "{r:?}");
}

#[test]
fn ud2_triple_faults() {
    require_kvm!("ud2_triple_faults");
    let dir = TempDir::new("ud2");
    let k = dir.file("ud2.hvt", &guest(guests::UD2, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("unhandled exit"), "{r:?}");
}

#[test]
fn cmdline_and_boot_info() {
    require_kvm!("cmdline_and_boot_info");
    let dir = TempDir::new("cmdline");
    let k = dir.file("cmdline.hvt", &guest(guests::CMDLINE, &[]));
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
    // Memory is rounded down to 2 MiB, and the guest still sees rsp + 8 == mem_size.
    let r = run(&["--mem=7", path_str(&k)]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "\n"), "{r:?}");
    assert!(
        r.stderr.contains("adjusting memory to 6291456 bytes"),
        "{r:?}"
    );
}

#[test]
fn block_write_read_round_trip() {
    require_kvm!("block_write_read_round_trip");
    let dir = TempDir::new("block");
    let k = dir.file(
        "block.hvt",
        &guest(guests::BLOCK, &[MftDevice::block("storage")]),
    );
    let img = dir.file("disk.img", &[0u8; 4096]);
    let arg = format!("--block:storage={}", path_str(&img));
    let r = run(&["--mem=8", &arg, path_str(&k)]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let data = std::fs::read(&img).unwrap();
    assert!(data[..512].iter().all(|&b| b == 0));
    assert!(data[512..1024].iter().all(|&b| b == 0x5a));
    assert!(data[1024..].iter().all(|&b| b == 0));
}

#[test]
fn walltime_and_poll_timeout() {
    require_kvm!("walltime_and_poll_timeout");
    let dir = TempDir::new("poll");
    let k = dir.file("poll.hvt", &guest(guests::POLL, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.elapsed >= Duration::from_millis(300), "{r:?}");
}

#[test]
fn write_to_read_only_text_stops_the_guest() {
    require_kvm!("write_to_read_only_text_stops_the_guest");
    let dir = TempDir::new("rowrite");
    let k = dir.file("rowrite.hvt", &guest(guests::ROWRITE, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("KVM:"), "{r:?}");
}

#[test]
fn reply_into_read_only_memory_is_refused() {
    require_kvm!("reply_into_read_only_memory_is_refused");
    let dir = TempDir::new("rostruct");
    let k = dir.file("rostruct.hvt", &guest(guests::ROSTRUCT, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("read-only"), "{r:?}");
}

#[test]
fn invalid_port_and_bare_hlt() {
    require_kvm!("invalid_port_and_bare_hlt");
    let dir = TempDir::new("ports");
    let k = dir.file("badport.hvt", &guest(guests::BADPORT, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("Invalid guest port access: port=0x3f8"),
        "{r:?}"
    );
    let k = dir.file("hlt.hvt", &guest(guests::HLT, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("unhandled exit"), "{r:?}");
}

#[test]
fn block_hypercall_without_block_module() {
    require_kvm!("block_hypercall_without_block_module");
    let dir = TempDir::new("nomodule");
    let k = dir.file("block.hvt", &guest(guests::BLOCK, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("Invalid guest port access: port=0x504"),
        "{r:?}"
    );
}

#[test]
fn abort_status_255_with_cookie() {
    require_kvm!("abort_status_255_with_cookie");
    let dir = TempDir::new("abort");
    let k = dir.file("abort.hvt", &guest(guests::ABORT, &[]));
    let r = run(&["--mem=8", path_str(&k)]);
    assert_eq!(r.code, Some(255), "{r:?}");
}

#[test]
fn sigterm_exits_1() {
    require_kvm!("sigterm_exits_1");
    let dir = TempDir::new("spin");
    let k = dir.file("spin.hvt", &guest(guests::SPIN, &[]));
    let r = run_with(&["--mem=8", path_str(&k)], Duration::from_secs(60), |pid| {
        // The tender reports the signal once its handler is in place (just before the
        // vCPU runs); a SIGTERM before that would kill it silently.
        wait_for(
            "compose-hvt to handle SIGTERM",
            Duration::from_secs(30),
            || catches_signal(pid, libc::SIGTERM).then_some(()),
        );
        // SAFETY: kill(2) on the child we just spawned.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    });
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("Exiting on signal 15"), "{r:?}");
}

// ---------------------------------------------------------------------------
// Start-up errors (no guest code runs, but the tender opens /dev/kvm only
// after these checks, so they need no KVM).
// ---------------------------------------------------------------------------

#[test]
fn help_and_version() {
    let r = run(&["--help"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("usage: compose-hvt"), "{r:?}");
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stderr.contains("ABI version 2"), "{r:?}");
    let r = run(&[]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("Missing KERNEL operand"), "{r:?}");
    let r = run(&["--frobnicate", "k"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("Invalid option"), "{r:?}");
}

#[test]
fn device_options_checked_against_the_manifest() {
    let dir = TempDir::new("devopts");
    let k = dir.file(
        "block.hvt",
        &guest(guests::BLOCK, &[MftDevice::block("storage")]),
    );
    let img = dir.file("disk.img", &[0u8; 1000]);
    let r = run(&[path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("Device `storage' of type BLOCK_BASIC declared but not attached"),
        "{r:?}"
    );
    let r = run(&["--net:storage=tap0", path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("Resource not declared in manifest"),
        "{r:?}"
    );
    let arg = format!("--block:storage={}", path_str(&img));
    let r = run(&[&arg, path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("not a non-zero multiple"), "{r:?}");
}

#[test]
fn bad_kernels_are_refused() {
    let dir = TempDir::new("badkernels");
    let k = dir.file("spt.spt", &guest_for(AbiTarget::Spt, guests::HELLO, &[]));
    let r = run(&[path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("Executable is not for the solo5-hvt target"),
        "{r:?}"
    );
    let r = run(&["/nonexistent/kernel"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("Could not open"), "{r:?}");
    let k = dir.file("junk", b"not an elf");
    let r = run(&[path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("Invalid or unsupported executable"),
        "{r:?}"
    );
    let r = run(&["--mem=1", path_str(&k)]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("below the minimum"), "{r:?}");
}
