//! Helpers shared by the integration tests: fixture guests, temp files and running the
//! `compose-spt` binary with a time limit.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use solo5_abi::{AbiTarget, MftDevice};
use solo5_tender::elf::{PF_R, PF_X};
use solo5_tender::fixtures::ElfBuilder;

/// An spt guest whose text segment at 0x100000 is `code`.
pub fn guest(code: &[u8], devices: &[MftDevice<'_>]) -> Vec<u8> {
    guest_for(AbiTarget::Spt, code, devices)
}

/// A guest for `target` whose text segment at 0x100000 is `code`.
pub fn guest_for(target: AbiTarget, code: &[u8], devices: &[MftDevice<'_>]) -> Vec<u8> {
    ElfBuilder::new(0x10_0000)
        .segment(0x10_0000, PF_R | PF_X, code, code.len() as u64)
        .abi_note(target)
        .manifest(devices)
        .build()
}

/// A private temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("compose-spt-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a tender run produced.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
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
    let start = Instant::now();
    let mut child = tender()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn compose-spt");
    let deadline = start + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

pub fn run(args: &[&str]) -> Run {
    run_with(args, Duration::from_secs(60))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The message `compose-spt` prints when the filter killed the guest.
pub const SIGSYS_MESSAGE: &str = "made a system call the spt seccomp policy does not allow";
