//! Helpers shared by the integration tests: KVM detection, fixture guests,
//! temp files and running the `compose-hvt` binary with a time limit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use solo5_abi::{AbiTarget, MftDevice};
use solo5_tender::elf::{PF_R, PF_X};
use solo5_tender::fixtures::ElfBuilder;

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
            std::env::temp_dir().join(format!("compose-hvt-test-{}-{name}", std::process::id()));
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

pub fn tender() -> Command {
    Command::new(env!("CARGO_BIN_EXE_compose-hvt"))
}

/// Runs `compose-hvt ARGS`, killing it after `limit`.
pub fn run_with(args: &[&str], limit: Duration, before_wait: impl FnOnce(u32)) -> Run {
    let start = Instant::now();
    let mut child = tender()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn compose-hvt");
    before_wait(child.id());
    let deadline = start + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
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
    run_with(args, Duration::from_secs(60), |_| {})
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
