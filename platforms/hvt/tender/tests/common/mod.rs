//! Helpers shared by the integration tests: KVM detection, fixture guests, and running the
//! `compose-hvt` binary with a time limit (over solo5-tender's `fixtures`, which spt's
//! tests use too).
// Each test binary uses some of these.
#![allow(dead_code, unused_imports)]

use std::process::Command;
use std::time::Duration;

use solo5_abi::{AbiTarget, MftDevice};
pub use solo5_tender::fixtures::{
    Run, TempDir, catches_signal, guest as guest_for, path_str, wait_for,
};

/// Whether `/dev/kvm` can be opened. Prints a loud SKIPPED line if not.
pub fn have_kvm(test: &str) -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        println!("SKIPPED: no /dev/kvm ({test})");
        eprintln!("SKIPPED: no /dev/kvm ({test})");
    }
    ok
}

/// An hvt guest whose text segment at 0x100000 is `code`.
pub fn guest(code: &[u8], devices: &[MftDevice<'_>]) -> Vec<u8> {
    guest_for(AbiTarget::Hvt, code, devices)
}

pub fn tender() -> Command {
    Command::new(env!("CARGO_BIN_EXE_compose-hvt"))
}

/// Runs `compose-hvt ARGS`, killing it after `limit`.
pub fn run_with(args: &[&str], limit: Duration, before_wait: impl FnOnce(u32)) -> Run {
    let mut cmd = tender();
    cmd.args(args);
    solo5_tender::fixtures::run(cmd, limit, before_wait)
}

pub fn run(args: &[&str]) -> Run {
    run_with(args, Duration::from_secs(60), |_| {})
}
