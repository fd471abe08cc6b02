//! The offline, sandbox-like build that the flake's `lib.buildImage` performs, without Nix:
//! its builder script (nix/build-image.sh) runs with the crates vendored by `cargo vendor`
//! into a registry-layout CARGO_HOME, cargo offline, a HOME that does not exist, a read-only
//! copy of the sources (a read-only bind mount: we may be root), no network (a fresh network
//! namespace), an empty environment and the pinned toolchain on PATH without rustup. The
//! image and bundle must be bit-identical to those of the ordinary build from the checkout.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Entry;
use std::path::Path;
use std::process::Command;

/// Mounts the sources read-only in a private mount namespace, checks that they are
/// read-only and that there is no network, then runs the builder.
const SANDBOX: &str = r#"set -eu
mount --bind "$src" "$src"
mount -o remount,bind,ro "$src"
if touch "$src/.write-probe" 2>/dev/null; then echo "sandbox: the sources are writable" >&2; exit 97; fi
if awk 'NR > 2 && $1 != "lo:" { found = 1 } END { exit !found }' /proc/net/dev; then
    echo "sandbox: a network interface is present" >&2; exit 98
fi
exec bash "$1"
"#;

struct Sandbox {
    src: tempfile::TempDir,
    vendor: tempfile::TempDir,
    toolchain: std::path::PathBuf,
}

impl Sandbox {
    /// Builds `spec` for `target` in the sandbox; returns the output directory ($out).
    fn build(&self, spec: &str, target: &str, index_dir: Option<&str>) -> tempfile::TempDir {
        let scratch = tempfile::Builder::new()
            .prefix("compose-offline-")
            .tempdir()
            .unwrap();
        let out = scratch.path().join("out");
        let tmp = scratch.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(SANDBOX)
            .arg("sandbox")
            .arg(sandbox::builder_script())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.toolchain.display()))
            .env("TMPDIR", &tmp)
            .env("src", self.src.path())
            .env("specFile", spec)
            .env("composeTarget", target)
            .env("cargoVendorDir", self.vendor.path())
            .env("composeBin", sandbox::compose())
            .env("composeRootFromSrc", "1")
            .env("out", &out);
        if let Some(dir) = index_dir {
            cmd.env("cargoIndexDir", dir);
        }
        let run = cmd.output().expect("unshare");
        assert!(
            run.status.success(),
            "sandboxed build of {spec} ({target}) failed ({}):\n{}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(out.is_dir(), "the builder wrote no {}", out.display());
        // Nothing was written into the sources, and HOME was never created.
        assert!(!self.src.path().join("specs/_build").exists());
        assert!(!Path::new("/homeless-shelter").exists());
        scratch
    }
}

fn verify(entry: &Path) {
    let out = Command::new(sandbox::compose())
        .arg("verify")
        .arg(entry)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compose verify {}: {}{}",
        entry.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn offline_sandboxed_build_gives_the_checkout_image() {
    let sandbox = Sandbox {
        src: tempfile::Builder::new()
            .prefix("compose-offline-src-")
            .tempdir()
            .unwrap(),
        vendor: tempfile::Builder::new()
            .prefix("compose-vendor-")
            .tempdir()
            .unwrap(),
        toolchain: sandbox::toolchain_bin(),
    };
    sandbox::copy_sources(sandbox.src.path());
    sandbox::vendor_crates(sandbox.vendor.path());
    let store = tempfile::tempdir().unwrap();

    for target in ["unix", "spt"] {
        let checkout = sandbox::checkout_build("specs/hello.kdl", target, store.path());
        let expected = Entry::read(&checkout, "hello", target);
        let built = sandbox.build("specs/hello.kdl", target, None);
        let out = built.path().join("out");
        let got = Entry::read(&out, "hello", target);
        assert_eq!(
            got, expected,
            "hello ({target}): the sandboxed build differs from the checkout build"
        );
        verify(&out);
        println!("hello ({target}): image {} identical", &got.image[..16]);

        if target == "spt" {
            // The control: the spt image records the source paths of the crates it uses
            // (spin's panic locations), so vendored crates anywhere but cargo's own registry
            // path give another image. This is why the builder uses the registry layout.
            let elsewhere = sandbox.build("specs/hello.kdl", target, Some("vendor"));
            let other = Entry::read(&elsewhere.path().join("out"), "hello", target);
            assert_ne!(
                other.image, expected.image,
                "hello ({target}): the image does not depend on where the crates are"
            );
        }
    }
}
