//! Signing and verification: an honest bundle verifies (and rebuilds bit for bit); a
//! tampered image, manifest, SBOM or signature each fail with a message naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose(args: &[&str], store: &Path) -> Output {
    compose_env(args, store, &[])
}

/// Runs compose with no trust file but the one `env` names (the user's own is never read:
/// XDG_CONFIG_HOME points into the test's directory).
fn compose_env(args: &[&str], store: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compose"));
    cmd.args(args)
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", store)
        .env("XDG_CONFIG_HOME", store.with_extension("config"))
        .env_remove("COMPOSE_TRUSTED_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Rewrites `bundle` into `out` with `edit` applied to its files.
fn tamper(bundle: &Path, out: &Path, edit: impl Fn(&str, &mut Vec<u8>)) {
    let mut files = compose::bundle::read(bundle).unwrap();
    let mut w = compose::bundle::BundleWriter::new(0);
    for (name, bytes) in &mut files {
        edit(name, bytes);
        w.add_bytes(name, bytes.clone(), name == "hello").unwrap();
    }
    w.write(out).unwrap();
}

/// The id on the `id: ` line that `compose keygen` prints.
fn key_id(stdout: &str) -> String {
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("keygen printed no id: {stdout}"))
        .to_string();
    assert!(
        id.starts_with("compose:")
            && id.len() == 24
            && id[8..].bytes().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    id
}

#[test]
fn signed_bundles_verify_and_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = compose(&["build", "specs/hello.kdl", "--no-out-link"], &store);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let entry = PathBuf::from(text(&o.stdout).trim());

    // Keys: the private key is 0600, and never ends up in a bundle.
    let key = dir.path().join("release.key");
    let o = compose(&["keygen", key.to_str().unwrap()], &store);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let release_id = key_id(&text(&o.stdout));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = dir.path().join("release.key.pub");

    // The outcomes are documented where a user looks.
    let help = text(&compose(&["verify", "--help"], &store).stdout);
    for code in [
        "0 intact and signed by a trusted key",
        "1 does not verify",
        "3 intact but unsigned",
    ] {
        assert!(help.contains(code), "{help}");
    }

    // An unsigned result is intact but says nothing about who made it: exit 3.
    let o = compose(&["verify", entry.to_str().unwrap()], &store);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not signed"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stdout).is_empty(), "{}", text(&o.stdout));
    // --no-trust checks integrity only, as `nix store verify --no-trust` does.
    let o = compose(&["verify", "--no-trust", entry.to_str().unwrap()], &store);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("intact"), "{}", text(&o.stdout));
    let signed = dir.path().join("hello-unix.tar.zst");
    let o = compose(
        &[
            "sign",
            entry.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-o",
            signed.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let private = std::fs::read(&key).unwrap();
    let signed_bytes = compose::bundle::read(&signed).unwrap();
    assert!(
        signed_bytes
            .iter()
            .all(|(_, b)| !b.windows(32).any(|w| private.windows(32).next() == Some(w)))
    );
    let o = compose(
        &[
            "verify",
            signed.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("by the trusted key {release_id}")),
        "verify names the key keygen printed ({release_id}):\n{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains(&format!("verified, signed by trusted key {release_id}")),
        "{}",
        text(&o.stdout)
    );

    // Each kind of tampering fails, exit 1, naming what is wrong.
    type Edit = Box<dyn Fn(&str, &mut Vec<u8>)>;
    let cases: [(&str, &str, Edit); 4] = [
        (
            "image",
            "hello",
            Box::new(|n, b| {
                if n == "hello" {
                    let i = b.len() / 2;
                    b[i] ^= 1
                }
            }),
        ),
        (
            "manifest",
            "manifest.json.sig",
            Box::new(|n, b| {
                if n == "manifest.json" || n == "manifest.kdl" {
                    *b = text(b).replace("33554432", "33554433").into_bytes()
                }
            }),
        ),
        (
            "sbom",
            "sbom.cdx.json",
            Box::new(|n, b| {
                if n == "sbom.cdx.json" {
                    *b = text(b)
                        .replace("compose-devices", "compose-devicez")
                        .into_bytes()
                }
            }),
        ),
        (
            "signature",
            "manifest.json.sig",
            Box::new(|n, b| {
                if n == "manifest.json.sig" {
                    let i = b.len() - 3;
                    b[i] = if b[i] == b'0' { b'1' } else { b'0' }
                }
            }),
        ),
    ];
    for (what, named, edit) in cases {
        let bad = dir.path().join(format!("tampered-{what}.tar.zst"));
        tamper(&signed, &bad, edit);
        let o = compose(
            &[
                "verify",
                bad.to_str().unwrap(),
                "--key",
                public.to_str().unwrap(),
            ],
            &store,
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "tampered {what} must not verify: {}",
            text(&o.stderr)
        );
        let err = text(&o.stderr);
        assert!(
            err.contains("FAILED") && err.contains(named),
            "tampered {what}: the message should name {named}:\n{err}"
        );
        // Integrity is checked without trust too.
        let o = compose(&["verify", "--no-trust", bad.to_str().unwrap()], &store);
        assert_eq!(o.status.code(), Some(1), "--no-trust, tampered {what}");
    }
    // Trusting only another key: the signature is intact but not trusted, exit 3.
    let other = dir.path().join("other.key");
    let o = compose(&["keygen", other.to_str().unwrap()], &store);
    assert!(o.status.success());
    let other_id = key_id(&text(&o.stdout));
    let other_pub = dir.path().join("other.key.pub");
    let o = compose(
        &[
            "verify",
            signed.to_str().unwrap(),
            "--key",
            other_pub.to_str().unwrap(),
        ],
        &store,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("signed by key {release_id}, which is not trusted"))
            && err.contains(&other_id),
        "{err}"
    );

    // Without --key, nothing is trusted until a trust file says so.
    let o = compose(&["verify", signed.to_str().unwrap()], &store);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));

    // The bundle re-signed by an attacker's key (every hash still right): not exit 0
    // against the trust file that lists the release key, exit 0 once it lists theirs.
    let resigned = dir.path().join("resigned.tar.zst");
    let o = compose(
        &[
            "sign",
            signed.to_str().unwrap(),
            "--key",
            other.to_str().unwrap(),
            "-o",
            resigned.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let trust = dir.path().join("trusted-keys");
    std::fs::write(
        &trust,
        format!(
            "# release keys\n\n{}",
            std::fs::read_to_string(&public).unwrap()
        ),
    )
    .unwrap();
    let env = [("COMPOSE_TRUSTED_KEYS", trust.as_path())];
    let o = compose_env(&["verify", resigned.to_str().unwrap()], &store, &env);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("signed by key {other_id}, which is not trusted")),
        "{}",
        text(&o.stderr)
    );
    let o = compose_env(&["verify", signed.to_str().unwrap()], &store, &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The trust file in the default place (XDG_CONFIG_HOME) is read as well.
    let config = store.with_extension("config").join("compose");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("trusted-keys"),
        std::fs::read_to_string(&other_pub).unwrap(),
    )
    .unwrap();
    let o = compose(&["verify", resigned.to_str().unwrap()], &store);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&other_id), "{}", text(&o.stderr));
    std::fs::remove_dir_all(&config).unwrap();

    // A key that cannot be read, and a trust file with a bad line: exit 2, named.
    let o = compose(
        &[
            "verify",
            signed.to_str().unwrap(),
            "--key",
            dir.path().join("missing.pub").to_str().unwrap(),
        ],
        &store,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("missing.pub"),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(&trust, "# ok\nssh-ed25519 AAAA\n").unwrap();
    let o = compose_env(&["verify", signed.to_str().unwrap()], &store, &env);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("trusted-keys:2"),
        "{}",
        text(&o.stderr)
    );
    // A trust file named by $COMPOSE_TRUSTED_KEYS must exist.
    let nope = dir.path().join("nope");
    let gone = [("COMPOSE_TRUSTED_KEYS", nope.as_path())];
    let o = compose_env(&["verify", signed.to_str().unwrap()], &store, &gone);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // An honest bundle rebuilds bit for bit from its recorded inputs.
    let o = compose(
        &[
            "verify",
            signed.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
            "--rebuild",
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("bit-for-bit identical"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_rebuild_with_unchanged_inputs_does_no_work_and_gc_keeps_linked_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let link = dir.path().join("result");
    let o = compose(
        &[
            "build",
            "specs/hello.kdl",
            "--out-link",
            link.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let first = text(&o.stdout);
    let o = compose(
        &[
            "build",
            "specs/hello.kdl",
            "--out-link",
            link.to_str().unwrap(),
        ],
        &store,
    );
    assert_eq!(text(&o.stdout), first, "the same path");
    assert!(
        text(&o.stderr).contains("in the store, unchanged"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from(first.trim())
    );
    // Another build, linked nowhere, is collected; the linked one stays.
    let o = compose(
        &[
            "build",
            "specs/hello.kdl",
            "--arg",
            "greeting=Hi",
            "--no-out-link",
        ],
        &store,
    );
    let unlinked = PathBuf::from(text(&o.stdout).trim());
    assert!(unlinked.exists());
    let o = compose(&["gc", "--store", store.to_str().unwrap()], &store);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!unlinked.exists(), "an unreferenced entry is removed");
    assert!(PathBuf::from(first.trim()).exists(), "a linked entry stays");
    // A pinned result survives without its link; unpinned, it goes.
    std::fs::remove_file(&link).unwrap();
    let o = compose(
        &[
            "pin",
            first.trim(),
            "release",
            "--store",
            store.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        compose(&["gc", "--store", store.to_str().unwrap()], &store)
            .status
            .success()
    );
    assert!(PathBuf::from(first.trim()).exists(), "a pinned entry stays");
    assert!(
        compose(
            &["unpin", "release", "--store", store.to_str().unwrap()],
            &store
        )
        .status
        .success()
    );
    assert!(
        compose(&["gc", "--store", store.to_str().unwrap()], &store)
            .status
            .success()
    );
    assert!(!PathBuf::from(first.trim()).exists());
}

#[test]
fn an_interrupted_build_leaves_no_partial_entry_and_no_dangling_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let link = dir.path().join("result");
    // Kill builds at several points (generating, compiling, storing, linking); after each,
    // every entry in the store is complete and verifies, and the link, if any, resolves.
    for (i, delay) in [30u64, 120, 250, 400, 600, 900].into_iter().enumerate() {
        // A parameter value no other build uses, so each build really runs.
        let arg = format!("greeting=Interrupted{}x{i}", std::process::id());
        let mut child = Command::new(env!("CARGO_BIN_EXE_compose"))
            .args([
                "build",
                "specs/hello.kdl",
                "--arg",
                &arg,
                "--out-link",
                link.to_str().unwrap(),
            ])
            .current_dir(root())
            .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
            .env("COMPOSE_STORE", &store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        for e in std::fs::read_dir(&store).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "gcroots" || name == "pins" {
                continue;
            }
            // Intact (exit 3: intact but unsigned; 1 would mean a damaged entry).
            let o = compose(&["verify", e.path().to_str().unwrap()], &store);
            assert!(
                o.status.code() == Some(3),
                "after a kill at {delay} ms, {name} is not a complete entry: {}",
                text(&o.stderr)
            );
        }
        if std::fs::symlink_metadata(&link).is_ok() {
            assert!(
                link.join("hello").exists(),
                "after a kill at {delay} ms the result link dangles"
            );
        }
    }
    // A build that is left alone completes, and gc clears what interrupted ones left in .tmp.
    let o = compose(
        &[
            "build",
            "specs/hello.kdl",
            "--out-link",
            link.to_str().unwrap(),
        ],
        &store,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(link.join("hello").exists());
    assert!(
        compose(&["gc", "--store", store.to_str().unwrap()], &store)
            .status
            .success()
    );
    let leftovers = std::fs::read_dir(store.join(".tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "gc removes interrupted builds' leftovers");
    assert!(link.join("hello").exists());
}
