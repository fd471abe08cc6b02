//! What tests/offline.rs and tests/nix.rs share: a copy of the sources, the crates vendored
//! with `cargo vendor`, the pinned toolchain's bin directory, and the checkout build to
//! compare against.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn compose() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_compose"))
}

/// The builder script of the flake's `lib.buildImage`.
pub fn builder_script() -> PathBuf {
    root().join("nix/build-image.sh")
}

pub fn sha256(path: &Path) -> String {
    compose::store::sha256_file(path)
        .unwrap_or_else(|e| panic!("cannot hash {}: {e}", path.display()))
        .0
}

/// Copies the files git knows (tracked, or untracked and not ignored) into `dest`: what the
/// flake's filtered source holds.
pub fn copy_sources(dest: &Path) {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    for rel in out.stdout.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).unwrap());
        let from = root().join(rel);
        if !from.is_file() {
            continue;
        }
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
}

/// Every crate of the lock file, vendored by `cargo vendor --versioned-dirs` into `dest`
/// (the layout nixpkgs' importCargoLock produces: NAME-VERSION/ with .cargo-checksum.json).
/// Uses cargo's own cache; crates it lacks (other platforms') are downloaded.
pub fn vendor_crates(dest: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["vendor", "--locked", "--versioned-dirs", "--quiet"])
        .arg(dest)
        .current_dir(root())
        .output()
        .expect("cargo vendor");
    assert!(
        out.status.success(),
        "cargo vendor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates = std::fs::read_dir(dest).map_or(0, |d| d.count());
    assert!(
        crates > 0,
        "cargo vendor wrote no crates into {}",
        dest.display()
    );
}

/// The bin directory of the toolchain rust-toolchain.toml pins (what the flake puts on PATH
/// from rust-overlay): cargo and rustc there run without rustup.
pub fn toolchain_bin() -> PathBuf {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .current_dir(root())
        .output()
        .expect("rustc --print sysroot");
    assert!(out.status.success());
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin");
    assert!(bin.join("cargo").is_file(), "no cargo in {}", bin.display());
    bin
}

/// A store entry's image and bundle hashes.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub image: String,
    pub bundle: String,
}

impl Entry {
    pub fn read(dir: &Path, unikernel: &str, target: &str) -> Entry {
        Entry {
            image: sha256(
                &dir.join(
                    compose::target::by_name(target)
                        .expect("a target compose builds for")
                        .image_file(unikernel),
                ),
            ),
            bundle: sha256(&dir.join(format!("{unikernel}-{target}.tar.zst"))),
        }
    }
}

/// The ordinary build from the checkout, as a developer runs it, into a fresh store.
pub fn checkout_build(spec: &str, target: &str, store: &Path) -> PathBuf {
    let out = Command::new(compose())
        .args([
            "build",
            spec,
            "--target",
            target,
            "--no-out-link",
            "--store",
        ])
        .arg(store)
        .current_dir(root())
        .env_remove("COMPOSE_ROOT")
        .env_remove("COMPOSE_STORE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("compose build");
    assert!(
        out.status.success(),
        "checkout build of {spec} ({target}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
