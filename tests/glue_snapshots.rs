//! The glue compose generates, pinned: for every example spec in `specs/` and every target
//! compose builds for, `compose::glue::generate` renders the glue crate, and each of its
//! files must equal the committed snapshot `tests/snapshots/glue/<spec>-<target>/<path>`
//! (no file missing, none extra).
//!
//! After an intended change to the templates or the descriptors, regenerate with
//! `BLESS=1 cargo test -p compose --test glue_snapshots` and review the diff.
//!
//! Snapshots do not depend on where the checkout is: the compose tree's absolute path is
//! written as `@COMPOSE_ROOT@`. Rust files are compared as rustfmt formats them: the
//! platform crates' `hello_glue` and `echo_glue` examples are these `main.rs` files
//! (their Cargo.toml points at them), so the platform tests run exactly this glue, and
//! `cargo fmt --all` formats them like any other source.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use compose::ops::LoadOptions;

/// The targets compose generates glue for today.
const TARGETS: &[&str] = &["unix", "hvt", "spt", "xen", "rpi4"];

/// Stands for the compose tree's location in the snapshots.
const ROOT_MARK: &str = "@COMPOSE_ROOT@";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `specs/*.kdl`, by file stem.
fn specs() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("specs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl") && p.is_file())
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

/// `text` as rustfmt (the toolchain's, with the workspace's edition) formats it.
fn rustfmt(text: &str, what: &str) -> String {
    let rustfmt = std::env::var("RUSTFMT").unwrap_or_else(|_| "rustfmt".into());
    let mut child = Command::new(&rustfmt)
        .args(["--edition", "2024"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {rustfmt} (a component of the toolchain): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "rustfmt rejects the generated {what}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The generated files of `spec` on `target`, by relative path, with the tree's absolute
/// path replaced by [`ROOT_MARK`]; `None` if the target lacks one of the spec's devices
/// (the jukebox's audio on hvt and spt).
fn generated(spec: &Path, target: &str) -> Option<BTreeMap<PathBuf, String>> {
    let opts = LoadOptions {
        spec: spec.to_path_buf(),
        target: Some(target.to_string()),
        args: Vec::new(),
    };
    let (_, graph) = match compose::ops::check(&opts) {
        Ok(checked) => checked,
        Err(compose::error::Error::Spec(diags))
            if diags
                .iter()
                .all(|d| d.code == "compose::unsupported-target") =>
        {
            return None;
        }
        Err(e) => panic!("{} ({target}) does not check: {e:?}", spec.display()),
    };
    let glue = compose::glue::generate(&graph, spec)
        .unwrap_or_else(|e| panic!("{} ({target}): no glue: {e}", spec.display()));
    let root = root();
    let mut roots = vec![root.display().to_string()];
    if let Ok(canonical) = root.canonicalize() {
        roots.insert(0, canonical.display().to_string());
    }
    let files = glue
        .files
        .iter()
        .map(|f| {
            let mut text = f.contents.clone();
            for r in &roots {
                text = text.replace(r.as_str(), ROOT_MARK);
            }
            // The application call is an expression `include!`d by main.rs: rustfmt (and so
            // `cargo fmt`) formats only whole files of items.
            if f.path.extension().is_some_and(|x| x == "rs")
                && f.path != Path::new(compose::glue::APP_FILE)
            {
                text = rustfmt(&text, &format!("{} of {target}", f.path.display()));
            }
            (f.path.clone(), text)
        })
        .collect();
    Some(files)
}

/// The files under `dir`, by path relative to it.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let text =
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), text);
            }
        }
    }
    out
}

fn bless(dir: &Path, files: &BTreeMap<PathBuf, String>) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
    }
}

/// What differs between the snapshot and the generated glue, one paragraph per file.
fn differences(
    expected: &BTreeMap<PathBuf, String>,
    actual: &BTreeMap<PathBuf, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => out.push(format!(
                "{}: in the snapshot, no longer generated",
                path.display()
            )),
            Some(got) if got != want => {
                let line = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
                out.push(format!(
                    "{}: differs from line {}\n  snapshot:  {:?}\n  generated: {:?}",
                    path.display(),
                    line + 1,
                    want.lines().nth(line).unwrap_or("<end of file>"),
                    got.lines().nth(line).unwrap_or("<end of file>"),
                ));
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        out.push(format!(
            "{}: generated, not in the snapshot",
            path.display()
        ));
    }
    out
}

#[test]
fn glue_matches_the_snapshots() {
    let base = root().join("tests/snapshots/glue");
    let blessing = std::env::var_os("BLESS").is_some();
    let specs = specs();
    assert!(
        specs.len() >= 3,
        "expected the example specs in specs/, found {specs:?}"
    );
    let mut failures = Vec::new();
    let mut cases = Vec::new();
    for (stem, spec) in &specs {
        for target in TARGETS {
            let case = format!("{stem}-{target}");
            let dir = base.join(&case);
            let Some(actual) = generated(spec, target) else {
                continue;
            };
            assert!(
                actual.keys().any(|p| p == Path::new("main.rs")),
                "{case}: the glue has no main.rs"
            );
            if blessing {
                bless(&dir, &actual);
            } else {
                let expected = snapshot(&dir);
                if expected.is_empty() {
                    failures.push(format!("{case}: no snapshot; run with BLESS=1"));
                } else {
                    for d in differences(&expected, &actual) {
                        failures.push(format!("{case}: {d}"));
                    }
                }
            }
            cases.push(case);
        }
    }
    // A snapshot whose spec or target is gone is stale.
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !cases.contains(&name) {
            if blessing {
                std::fs::remove_dir_all(e.path()).unwrap();
            } else {
                failures.push(format!("{name}: a snapshot of no spec and target"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the generated glue differs from tests/snapshots/glue (if intended, rerun with \
         BLESS=1 and review the diff):\n{}",
        failures.join("\n")
    );
}
