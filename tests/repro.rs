//! Bit-for-bit reproducibility: the same specs built from two copies of the repository, in
//! different directories, at different times, under different HOME, user name and umask,
//! with separate cargo target directories and stores, give byte-identical images and
//! bundles. New targets join the list as they land.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Copies the files git knows (tracked or not ignored) into `dest`.
fn copy_repo(dest: &Path) {
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
        .unwrap();
    assert!(out.status.success());
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

fn sha256(path: &Path) -> String {
    compose::store::sha256_file(path).unwrap().0
}

struct Copy {
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    user: &'static str,
    umask: &'static str,
}

impl Copy {
    fn new(prefix: &str, user: &'static str, umask: &'static str) -> Copy {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        copy_repo(dir.path());
        Copy {
            dir,
            home: tempfile::tempdir().unwrap(),
            user,
            umask,
        }
    }

    /// A stand-in for the Pi's firmware in this copy (same bytes in every copy).
    fn firmware(&self) -> PathBuf {
        let dir = self.dir.path().join("rpi4-firmware");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("start4.elf"),
            b"not the real start4.elf\n".repeat(1000),
        )
        .unwrap();
        std::fs::write(dir.join("fixup4.dat"), b"not the real fixup4.dat\n").unwrap();
        dir
    }

    /// Builds `spec` (relative to the copy) for `target` and returns (image sha, bundle sha).
    fn build(&self, spec: &str, target: &str) -> (String, String) {
        let r = self.dir.path();
        let compose = env!("CARGO_BIN_EXE_compose");
        // Keep the toolchain and the crate cache where they are; everything else moves.
        let rustup_home = std::env::var("RUSTUP_HOME")
            .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap()));
        let cargo_home = std::env::var("CARGO_HOME")
            .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {} && exec \"$0\" build {spec} --target {target} --no-out-link",
                self.umask
            ))
            .arg(compose)
            .current_dir(r)
            .env("COMPOSE_ROOT", r)
            .env("COMPOSE_STORE", r.join("store"))
            .env("COMPOSE_TARGET_DIR", r.join("target"))
            // rpi4's SD card takes the Pi's firmware from here (a stand-in made below).
            .env("COMPOSE_RPI4_FIRMWARE", self.firmware())
            .env("HOME", self.home.path())
            .env("USER", self.user)
            .env("LOGNAME", self.user)
            .env("RUSTUP_HOME", rustup_home)
            .env("CARGO_HOME", cargo_home)
            // Fixed: without it each asset file's mtime is its time in the archive, and
            // the two copies' files were written at different times.
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build of {spec} in {}: {}",
            r.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let entry = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let name = Path::new(spec)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let card = entry.join(format!("{name}.sdcard.img"));
        if target == "rpi4" {
            assert!(card.is_file(), "{spec} ({target}): no SD card image");
        }
        (
            // Solo5 images are NAME.hvt / NAME.spt; unix ones NAME; rpi4's kernel8.img, and
            // its SD card image is compared too.
            sha256(&entry.join(compose::target::by_name(target).unwrap().image_file(&name)))
                + &(if card.is_file() {
                    sha256(&card)
                } else {
                    String::new()
                }),
            sha256(&entry.join(format!("{name}-{target}.tar.zst"))),
        )
    }
}

#[test]
fn two_copies_build_bit_for_bit_identical_images_and_bundles() {
    let a = Copy::new("compose-repro-a-", "alice", "022");
    let b = Copy::new("compose-repro-b-with-a-longer-path-", "bob", "077");
    let mut cases = vec![
        ("specs/hello.kdl", "unix"),
        ("specs/echo.kdl", "unix"),
        ("specs/site.kdl", "unix"),
    ];
    for target in ["hvt", "spt"] {
        cases.extend([
            ("specs/hello.kdl", target),
            ("specs/echo.kdl", target),
            ("specs/site.kdl", target),
        ]);
    }
    cases.push(("specs/hello.kdl", "rpi4"));
    for (spec, target) in cases {
        let first = a.build(spec, target);
        std::thread::sleep(std::time::Duration::from_millis(1100)); // a different second
        let second = b.build(spec, target);
        assert_eq!(first.0, second.0, "{spec} ({target}): images differ");
        assert_eq!(first.1, second.1, "{spec} ({target}): bundles differ");
        println!(
            "{spec} ({target}): image {} bundle {}",
            &first.0[..16],
            &first.1[..16]
        );
    }
}
