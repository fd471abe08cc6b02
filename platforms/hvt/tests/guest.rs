//! The hvt guest, end to end: builds the glue of `examples/` as real guest images, checks
//! their ELF layout against what the hvt tender requires, and runs them on the tender.
//!
//! The steps are shared with spt (`../../solo5/testing/guest_harness.rs`):
//!
//! 1. `cargo build --examples --features examples --target x86_64-unknown-none --release`
//!    with the flags a unikernel needs (`harness::rustflags`), in a target directory of
//!    its own.
//! 2. The images' ELF header, program headers and Solo5 notes are checked (what
//!    `readelf -lnW` shows, against shared/reference/solo5-abi.md §1).
//! 3. With a tender (`$COMPOSE_HVT`, or `compose-hvt` next to this test's target directory,
//!    or `/tmp/target-hvt/debug/compose-hvt`) and a usable `/dev/kvm`, the images run:
//!    hello greets and exits 0; bad boot arguments exit 64; the devices example uses the
//!    wall clock, the random device and a block device; a panic and a CPU fault exit 255;
//!    and, as root with `ip` available, echo serves TCP clients through a tap in a network
//!    namespace of its own, without spinning while idle: once on private addresses
//!    (10.77.0.0/24, inside the namespace only), once with `specs/echo.kdl`'s own address,
//!    127.0.0.1/8 (reachable over a tap from a namespace whose `lo` is down, with
//!    `route_localnet`). Each run that lacks what it needs is reported as skipped.
//!
//! The test has its own `main` (harness = false): re-executed inside the namespace with
//! `COMPOSE_HVT_ECHO_CLIENT=ADDR`, it is the echo client.

#[path = "../../solo5/testing/guest_harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Output;

use harness::{Net, Results, Target, Tender, text};

static HVT: Target = Target {
    name: "hvt",
    abi_target: 1,
    client_env: "COMPOSE_HVT_ECHO_CLIENT",
    prepare: |_| {},
    check_fault,
};

fn main() {
    harness::be_echo_client_if_asked(&HVT);
    let images = harness::build_examples(&HVT);
    let images = &images;
    let mut results = Results::default();
    results.run("elf_layout", || harness::elf_layout(&HVT, images));
    match tender_or_why() {
        Err(why) => {
            println!("guest: skipping the runs on the tender: {why}");
        }
        Ok(tender) => {
            let t = &tender;
            results.run("hello_greets", || harness::hello_greets(t, images));
            results.run("hello_help_and_bad_arguments", || {
                harness::hello_help_and_bad_arguments(t, images)
            });
            results.run("devices_clock_random_block", || harness::devices(t, images));
            results.run("devices_panic_and_bad_sector_size", || {
                harness::devices_failures(t, images)
            });
            match harness::netns_or_why(&HVT) {
                Ok(()) => {
                    results.run("echo_private_address_over_a_tap", || {
                        harness::echo(t, images, Net::Private)
                    });
                    results.run("echo_spec_address_over_a_tap", || {
                        harness::echo(t, images, Net::Loopback)
                    });
                }
                Err(why) => println!("guest: skipping the echo runs: {why}"),
            }
        }
    }
    results.exit();
}

fn tender_or_why() -> Result<Tender, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("COMPOSE_HVT") {
        candidates.push(PathBuf::from(p));
    }
    // This test is <target>/<profile>/deps/guest-HASH; the workspace's binaries are in
    // <target>/<profile>.
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join("compose-hvt"));
    }
    candidates.push(PathBuf::from("/tmp/target-hvt/debug/compose-hvt"));
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or("no compose-hvt tender was built (set COMPOSE_HVT to one)")?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    Ok(Tender { path, target: &HVT })
}

/// A CPU fault is reported by the runtime's exception handlers, not a triple fault.
fn check_fault(out: &Output) {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(255),
        "{stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Solo5: trap: page fault (vector 14)") && stdout.contains("cr2 0x8"),
        "{stdout}"
    );
}
