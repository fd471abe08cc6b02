//! The offline, sandbox-like build that the flake's `lib.buildImage` performs, without Nix:
//! its builder script (nix/build-image.sh) runs with the crates vendored by `cargo vendor`
//! into a registry-layout CARGO_HOME, cargo offline, a HOME that does not exist, a read-only
//! copy of the sources (a read-only bind mount: we may be root), no network (a fresh network
//! namespace), an empty environment and the pinned toolchain on PATH without rustup. The
//! image and bundle must be bit-identical to those of the ordinary build from the checkout.

#[path = "support/sandbox.rs"]
mod sandbox;

use sandbox::Entry;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mounts the sources read-only in a private mount namespace, checks that they are
/// read-only and that there is no network, then runs the builder.
const SANDBOX: &str = r#"set -eu
for tree in "$src" ${COMPOSE_ROOT:+"$COMPOSE_ROOT"}; do
    mount --bind "$tree" "$tree"
    mount -o remount,bind,ro "$tree"
    if touch "$tree/.write-probe" 2>/dev/null; then echo "sandbox: $tree is writable" >&2; exit 97; fi
done
if awk 'NR > 2 && $1 != "lo:" { found = 1 } END { exit !found }' /proc/net/dev; then
    echo "sandbox: a network interface is present" >&2; exit 98
fi
exec bash "$1"
"#;

struct Sandbox {
    /// The sources of the build (read-only in the sandbox).
    src: PathBuf,
    vendor: PathBuf,
    toolchain: PathBuf,
    /// compose's tree when it is not `src` (read-only too), as the package's share/compose.
    compose_root: Option<PathBuf>,
}

impl Sandbox {
    fn new(src: &Path, vendor: &Path, compose_root: Option<&Path>) -> Sandbox {
        Sandbox {
            src: src.to_path_buf(),
            vendor: vendor.to_path_buf(),
            toolchain: sandbox::toolchain_bin(),
            compose_root: compose_root.map(Path::to_path_buf),
        }
    }

    /// Builds `spec` for `target` in the sandbox; returns the scratch directory, whose
    /// `out` is the builder's $out.
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
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.toolchain.display()),
            )
            .env("TMPDIR", &tmp)
            .env("src", &self.src)
            .env("specFile", spec)
            .env("composeTarget", target)
            .env("cargoVendorDir", &self.vendor)
            .env("composeBin", sandbox::compose())
            .env("out", &out);
        match &self.compose_root {
            Some(root) => cmd.env("COMPOSE_ROOT", root),
            None => cmd.env("composeRootFromSrc", "1"),
        };
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
        assert!(!self.src.join("specs/_build").exists() && !self.src.join("_build").exists());
        assert!(!Path::new("/homeless-shelter").exists());
        scratch
    }
}

fn verify(entry: &Path) {
    let out = Command::new(sandbox::compose())
        .args(["verify", "--no-trust"])
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
    let src = tempfile::Builder::new()
        .prefix("compose-offline-src-")
        .tempdir()
        .unwrap();
    let vendor = tempfile::Builder::new()
        .prefix("compose-vendor-")
        .tempdir()
        .unwrap();
    sandbox::copy_sources(src.path());
    sandbox::vendor_crates(vendor.path());
    let sandbox = Sandbox::new(src.path(), vendor.path(), None);
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

/// Ends the child when dropped, even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn copy_template(dest: &Path) {
    // Times kept, as the image records each asset file's mtime.
    let status = Command::new("cp")
        .args(["-R", "--preserve=timestamps"])
        .arg(sandbox::root().join("nix/templates/site/."))
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The flake's template as a consumer builds it: its own directory as the sources, compose's
/// tree read-only beside it (as the package's share/compose). The image equals a plain
/// `compose build` of the template from a writable copy, and it serves the template's page.
#[test]
fn template_site_builds_offline_against_a_read_only_compose_tree() {
    let tree = tempfile::Builder::new()
        .prefix("compose-share-")
        .tempdir()
        .unwrap();
    let vendor = tempfile::Builder::new()
        .prefix("compose-vendor-")
        .tempdir()
        .unwrap();
    let consumer = tempfile::Builder::new()
        .prefix("compose-consumer-")
        .tempdir()
        .unwrap();
    sandbox::copy_sources(tree.path());
    sandbox::vendor_crates(vendor.path());
    copy_template(consumer.path());
    let sandbox = Sandbox::new(consumer.path(), vendor.path(), Some(tree.path()));
    let built = sandbox.build("site.kdl", "unix", None);
    let out = built.path().join("out");

    let plain = tempfile::tempdir().unwrap();
    copy_template(plain.path());
    let store = tempfile::tempdir().unwrap();
    let run = Command::new(sandbox::compose())
        .args([
            "build",
            "site.kdl",
            "--target",
            "unix",
            "--no-out-link",
            "--store",
        ])
        .arg(store.path())
        .current_dir(plain.path())
        .env("COMPOSE_ROOT", sandbox::root())
        .env_remove("COMPOSE_STORE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "plain build of the template: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let entry = PathBuf::from(String::from_utf8_lossy(&run.stdout).trim());
    let (got, expected) = (
        Entry::read(&out, "site", "unix"),
        Entry::read(&entry, "site", "unix"),
    );
    assert_eq!(
        got.image, expected.image,
        "the template's sandboxed image differs from its plain build"
    );
    // The bundles differ only in where the spec was: compose records the absolute path of
    // a spec outside its tree in buildinfo.json. Everything else must be equal.
    let info = |dir: &Path, spec: &Path| {
        let text = std::fs::read_to_string(dir.join("buildinfo.json")).unwrap();
        text.replace(&spec.display().to_string(), "<spec>")
    };
    assert_eq!(
        info(
            &out,
            &built.path().join("tmp/compose-build/source/site.kdl")
        ),
        info(&entry, &plain.path().join("site.kdl")),
        "the template's build information differs beyond the spec's path"
    );
    verify(&out);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _site = Child(
        Command::new(out.join("site"))
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        match ureq::get(&url).call() {
            Ok(mut r) => break r.body_mut().read_to_string().unwrap(),
            Err(e) if std::time::Instant::now() > deadline => panic!("GET {url}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    assert!(page.contains("Served by a unikernel"), "{page}");
}
