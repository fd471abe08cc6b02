//! Hostile spec inputs, through the real `compose` binary: a FIFO and `/dev/zero` as the spec
//! and as an import, a link to `/etc/passwd` as an import, an oversized file and 5000-deep
//! nesting. Each must be a clear error with exit 1, quickly, and never show the content of a
//! file that is not a KDL spec. compose runs under a deadline, so a hang fails the test
//! instead of hanging it, and is killed whatever happens.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the child when dropped (an assertion failing mid-test included).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `compose check SPEC` in `dir`; returns (exit status, stderr).
fn check(dir: &Path, spec: &str) -> (Option<i32>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["check", spec])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("COMPOSE_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run compose");
    let mut running = Running(child);
    let mut stderr = running.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = running.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "compose check {spec} did not finish within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = reader.join().unwrap();
    (status.code(), err)
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

fn expect_error(dir: &Path, spec: &str, code: &str, says: &str) -> String {
    let (status, err) = check(dir, spec);
    assert_eq!(
        status,
        Some(1),
        "exit status of check {spec}; stderr:\n{err}"
    );
    assert!(err.contains(code), "expected {code} for {spec}:\n{err}");
    assert!(err.contains(says), "expected {says:?} for {spec}:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_fifo_is_never_opened_as_spec_or_import() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("pipe.kdl"));
    expect_error(
        dir.path(),
        "pipe.kdl",
        "compose::not-a-file",
        "it is a FIFO",
    );
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"pipe.kdl\"\nunikernel u\n",
    )
    .unwrap();
    let err = expect_error(
        dir.path(),
        "spec.kdl",
        "compose::not-a-file",
        "it is a FIFO",
    );
    assert!(
        err.contains("spec.kdl:1:8"),
        "located at the import:\n{err}"
    );
}

#[test]
fn dev_zero_is_never_read_as_spec_or_import() {
    let dir = tempfile::tempdir().unwrap();
    expect_error(
        dir.path(),
        "/dev/zero",
        "compose::not-a-file",
        "character device",
    );
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"/dev/zero\"\nunikernel u\n",
    )
    .unwrap();
    expect_error(
        dir.path(),
        "spec.kdl",
        "compose::not-a-file",
        "character device",
    );
    // A link to it is no better.
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.kdl")).unwrap();
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"zero.kdl\"\nunikernel u\n",
    )
    .unwrap();
    expect_error(
        dir.path(),
        "spec.kdl",
        "compose::not-a-file",
        "character device",
    );
}

#[test]
fn an_imported_host_file_is_never_shown() {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("base.kdl")).unwrap();
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"base.kdl\"\nunikernel u\nconsole\n",
    )
    .unwrap();
    let err = expect_error(dir.path(), "spec.kdl", "compose::not-kdl", "not a KDL spec");
    assert!(
        err.contains("spec.kdl:1:8"),
        "located at the import:\n{err}"
    );
    for line in passwd.lines().filter(|l| !l.trim().is_empty()) {
        assert!(!err.contains(line), "the diagnostic shows {line:?}:\n{err}");
        for field in line.split(':').filter(|f| f.len() > 3) {
            assert!(
                !err.contains(field),
                "the diagnostic shows {field:?}:\n{err}"
            );
        }
    }
}

#[test]
fn an_oversized_spec_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("unikernel u\n");
    while big.len() <= compose::spec::MAX_SPEC_BYTES as usize {
        big.push_str("// padding padding padding padding padding padding padding\n");
    }
    std::fs::write(dir.path().join("big.kdl"), &big).unwrap();
    expect_error(
        dir.path(),
        "big.kdl",
        "compose::spec-too-large",
        "larger than 64 KiB",
    );
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"big.kdl\"\nunikernel u\n",
    )
    .unwrap();
    expect_error(
        dir.path(),
        "spec.kdl",
        "compose::spec-too-large",
        "larger than 64 KiB",
    );
}

#[test]
fn deep_nesting_is_a_located_diagnostic_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!(
        "unikernel u\n{}{}",
        "a {\n".repeat(5000),
        "}\n".repeat(5000)
    );
    std::fs::write(dir.path().join("deep.kdl"), &deep).unwrap();
    let start = Instant::now();
    let err = expect_error(
        dir.path(),
        "deep.kdl",
        "compose::nesting-too-deep",
        "deeper than 64",
    );
    assert!(
        err.contains("deep.kdl:66:3"),
        "located at the 65th level:\n{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "slow: {:?}",
        start.elapsed()
    );
    // Through an import, it is reported at the import.
    std::fs::write(
        dir.path().join("spec.kdl"),
        "import \"deep.kdl\"\nunikernel u\n",
    )
    .unwrap();
    let err = expect_error(dir.path(), "spec.kdl", "compose::not-kdl", "deeper than 64");
    assert!(err.contains("spec.kdl:1:8"), "{err}");
    // Other constructs the KDL parser recurses on: runs of `/-`, long and nested comments.
    let runs = format!("unikernel u\n{}console\n", "/- ".repeat(5000));
    std::fs::write(dir.path().join("runs.kdl"), runs).unwrap();
    expect_error(dir.path(), "runs.kdl", "compose::syntax", "`/-` in a row");
    let comments = format!(
        "unikernel u\n/* {} */\n{}{}\n",
        "x*y/".repeat(10000),
        "/*".repeat(5000),
        "*/".repeat(5000)
    );
    std::fs::write(dir.path().join("comments.kdl"), comments).unwrap();
    let (status, err) = check(dir.path(), "comments.kdl");
    assert_eq!(status, Some(1), "{err}");
}
