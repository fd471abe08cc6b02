//! Helpers shared by the integration tests: fixture guests, and running the `compose-spt`
//! binary with a time limit (over solo5-tender's `fixtures`, which hvt's tests use too).
// Each test binary uses some of these.
#![allow(dead_code, unused_imports)]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use solo5_abi::{AbiTarget, MftDevice};
pub use solo5_tender::fixtures::{
    Run, TempDir, blocked_in_syscall, catches_signal, guest as guest_for, path_str, wait_for,
};

/// An spt guest whose text segment at 0x100000 is `code`.
pub fn guest(code: &[u8], devices: &[MftDevice<'_>]) -> Vec<u8> {
    guest_for(AbiTarget::Spt, code, devices)
}

/// `compose-spt`, with core dumps off: a guest killed by SIGSYS or SIGSEGV must not leave
/// core files in the source tree.
pub fn tender() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compose-spt"));
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
    cmd
}

/// Runs `compose-spt ARGS`, killing it after `limit`.
pub fn run_with(args: &[&str], limit: Duration) -> Run {
    let mut cmd = tender();
    cmd.args(args);
    solo5_tender::fixtures::run(cmd, limit, |_| {})
}

pub fn run(args: &[&str]) -> Run {
    run_with(args, Duration::from_secs(60))
}

/// The message `compose-spt` prints when the filter killed the guest.
pub const SIGSYS_MESSAGE: &str = "made a system call the spt seccomp policy does not allow";
