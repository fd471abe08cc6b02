//! Nix on this machine is Debian's nix-bin (2.8): too old for today's nixpkgs' lib, and
//! nixpkgs cannot be fetched here. So the suite checks what it can with it: every `.nix`
//! file of the repository parses, and the builder of the flake's `lib.buildImage`
//! (nix/build-image.sh) runs as a real Nix derivation in Nix's build sandbox
//! (nix/tests/offline-image.nix: the `derivation` builtin, the host toolchain bound in),
//! giving the same image as the build from the checkout.
//!
//! `.ci/run` installs nix-bin, so these tests always run there; elsewhere, without
//! `nix-instantiate` on PATH they fail, unless COMPOSE_TESTS_WITHOUT_NIX=1 says to skip.

#[path = "support/sandbox.rs"]
mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether Nix is here; panics with what to do if it is not and skipping was not asked for.
fn have_nix() -> bool {
    let found = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("COMPOSE_TESTS_WITHOUT_NIX").is_some() {
            eprintln!(
                "\n*** SKIPPED: nix-instantiate is not installed (COMPOSE_TESTS_WITHOUT_NIX is set); \
                 the Nix files were not checked ***\n"
            );
            return false;
        }
        panic!(
            "nix-instantiate is not installed: `apt-get install nix-bin` (as .ci/run does), or set \
             COMPOSE_TESTS_WITHOUT_NIX=1 to skip the Nix tests"
        );
    }
    true
}

/// Every `.nix` file git knows.
fn nix_files() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.nix",
        ])
        .current_dir(sandbox::root())
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| sandbox::root().join(std::str::from_utf8(s).unwrap()))
        .filter(|p| p.is_file())
        .collect()
}

#[test]
fn every_nix_file_parses() {
    if !have_nix() {
        return;
    }
    let files = nix_files();
    for expected in [
        "flake.nix",
        "nix/package.nix",
        "nix/lib.nix",
        "nix/module.nix",
        "nix/tests/offline-image.nix",
        "nix/templates/site/flake.nix",
    ] {
        assert!(
            files.contains(&sandbox::root().join(expected)),
            "{expected} is not among the .nix files: {files:?}"
        );
    }
    let mut failures = Vec::new();
    for f in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(f)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}:\n{}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parse_check_fails_on_a_broken_file() {
    // The check above can fail: a syntax error is reported as one.
    if !have_nix() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.nix");
    std::fs::write(&bad, "{ a = 1; b = ; }\n").unwrap();
    let out = Command::new("nix-instantiate")
        .arg("--parse")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// A Nix configuration for a private store in `dir`: sandboxed builds with the host paths
/// the derivation uses bound in, no substituters, root without build users.
fn nix_env(cmd: &mut Command, dir: &Path, sandbox_paths: &[&Path]) {
    let conf = dir.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let mut paths = vec!["/usr".to_string(), "/etc/alternatives".to_string()];
    for p in ["/bin", "/lib", "/lib64"] {
        if Path::new(p).exists() {
            paths.push(p.to_string());
        }
    }
    paths.extend(sandbox_paths.iter().map(|p| p.display().to_string()));
    std::fs::write(
        conf.join("nix.conf"),
        format!(
            "build-users-group =\nsandbox = true\nextra-sandbox-paths = {}\nsubstituters =\n\
             experimental-features = nix-command\n",
            paths.join(" ")
        ),
    )
    .unwrap();
    cmd.env("NIX_CONF_DIR", &conf)
        .env("NIX_STORE_DIR", dir.join("store"))
        .env("NIX_STATE_DIR", dir.join("state"))
        .env("NIX_LOG_DIR", dir.join("log"))
        .env_remove("NIX_REMOTE")
        .env_remove("NIX_PATH");
}

#[test]
fn build_image_runs_as_a_nix_derivation_and_gives_the_checkout_image() {
    if !have_nix() {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("compose-nix-")
        .tempdir()
        .unwrap();
    let src = work.path().join("src");
    let vendor = work.path().join("vendor");
    sandbox::copy_sources(&src);
    sandbox::vendor_crates(&vendor);
    let toolchain = sandbox::toolchain_bin();
    let sysroot = toolchain.parent().unwrap().to_path_buf();
    let compose = sandbox::compose();

    let mut cmd = Command::new("nix-build");
    cmd.arg(sandbox::root().join("nix/tests/offline-image.nix"))
        .args(["--no-out-link", "--arg", "src"])
        .arg(&src)
        .arg("--argstr")
        .arg("toolchainBin")
        .arg(&toolchain)
        .arg("--argstr")
        .arg("composeBin")
        .arg(&compose)
        .arg("--argstr")
        .arg("cargoVendorDir")
        .arg(&vendor);
    nix_env(&mut cmd, work.path(), &[&sysroot, &compose, &vendor]);
    let out = cmd.output().expect("nix-build");
    assert!(
        out.status.success(),
        "nix-build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        result.starts_with(work.path().join("store")),
        "nix-build printed {}",
        result.display()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Building hello for unix"),
        "the derivation did not build the image itself:\n{stderr}"
    );

    let store = tempfile::tempdir().unwrap();
    let checkout = sandbox::checkout_build("specs/hello.kdl", "unix", store.path());
    assert_eq!(
        sandbox::Entry::read(&result, "hello", "unix"),
        sandbox::Entry::read(&checkout, "hello", "unix"),
        "the Nix derivation's image differs from the checkout build's"
    );
    let verify = Command::new(&compose)
        .args(["verify", "--no-trust"])
        .arg(&result)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "compose verify {}: {}",
        result.display(),
        String::from_utf8_lossy(&verify.stderr)
    );
}
