//! UI tests: every case under tests/ui/<case>/ runs the real `compose` binary in that
//! directory and compares its exit status and stderr with `expected.txt`.
//!
//! A case holds `spec.kdl` (plus whatever it imports) and optionally `cmd`, the command
//! line (default: `check spec.kdl`). Run with `BLESS=1` to rewrite the expectations after
//! an intended change, then review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn expected_of(status: Option<i32>, stderr: &str) -> String {
    let code = status.map_or("signal".to_string(), |c| c.to_string());
    format!("exit: {code}\n---\n{}", stderr.replace("\r\n", "\n"))
}

/// One cargo target directory for every build the tests make, so the platform crates
/// compile once per test run.
fn shared_target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/compose-tests")
}

fn run_case(dir: &Path) -> Result<(), String> {
    let cmd = std::fs::read_to_string(dir.join("cmd")).unwrap_or_else(|_| "check spec.kdl".into());
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(&args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("COMPOSE_TARGET_DIR", shared_target_dir())
        .env("COMPOSE_STORE", shared_target_dir().join("store"))
        .env_remove("COMPOSE_ROOT")
        .output()
        .map_err(|e| format!("cannot run compose: {e}"))?;
    let actual = expected_of(out.status.code(), &String::from_utf8_lossy(&out.stderr));
    let file = dir.join("expected.txt");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&file, &actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&file)
        .map_err(|_| format!("no expected.txt; run with BLESS=1\n--- actual ---\n{actual}"))?;
    if expected != actual {
        return Err(format!(
            "--- expected ---\n{expected}\n--- actual ---\n{actual}"
        ));
    }
    if !actual.contains("\n---\n")
        || (out.status.code() == Some(0)) != actual.starts_with("exit: 0")
    {
        return Err("malformed expectation".into());
    }
    Ok(())
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ui");
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/ui")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        match run_case(case) {
            Ok(()) => {
                passed += 1;
                println!("test ui::{name} ... ok");
            }
            Err(e) => {
                failed += 1;
                println!("test ui::{name} ... FAILED\n{e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
