//! Targets as types, used as a user uses them: `compose deploy` refuses a format that does
//! not apply to the result's target, Solo5 images are named `NAME.hvt` / `NAME.spt`, and the
//! glue of a Solo5 target declares its manifest note as a typed constant.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(args)
        .current_dir(dir)
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .env_remove("COMPOSE_ROOT")
        .output()
        .expect("run compose")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A result directory as `compose build --target TARGET` leaves it for echo: the image under
/// the target's name and a manifest naming it with its sha256.
fn solo5_result(dir: &Path, target: &str) -> PathBuf {
    let image = format!("echo.{target}");
    std::fs::write(dir.join(&image), b"\x7fELF not really").unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(dir.join(&image)).unwrap(),
        ))
    };
    let manifest = serde_json::json!({
        "schema": "compose.manifest/v1",
        "name": "echo",
        "target": target,
        "memory": 64u64 << 20,
        "image": image,
        "bootargs": [],
        "devices": [{"name": "service", "kind": "net"}],
        "files": {image.clone(): sha},
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    dir.join(image)
}

#[test]
fn deploy_renders_the_formats_of_the_target_and_refuses_the_others() {
    for target in ["hvt", "spt"] {
        let tmp = tempfile::tempdir().unwrap();
        let image = solo5_result(tmp.path(), target);
        let dir = tmp.path().to_str().unwrap();
        let o = compose(
            &["deploy", dir, "--format", "solo5", "--net", "service=tap0"],
            tmp.path(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let line = text(&o.stdout);
        assert!(line.contains("--net:service=tap0"), "{line}");
        assert!(
            line.trim_end()
                .ends_with(&format!("-- {}", image.display())),
            "{line}"
        );
        let o = compose(
            &[
                "deploy",
                dir,
                "--format",
                "albatross",
                "--net",
                "service=br0",
            ],
            tmp.path(),
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(text(&o.stdout).starts_with("albatross-client create"));
        // xl is for xen: a usage error, and nothing on stdout.
        let o = compose(
            &["deploy", dir, "--format", "xl", "--net", "service=br0"],
            tmp.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(o.stdout.is_empty());
        assert!(
            text(&o.stderr).contains(&format!(
                "--format xl: a {target} image cannot be deployed that way (formats for {target}: solo5, albatross)"
            )),
            "{}",
            text(&o.stderr)
        );
    }
}

#[test]
fn a_unix_result_keeps_its_plain_name_and_is_not_deployed_to_a_tender() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("result");
    let spec = root().join("specs/hello.kdl");
    let o = compose(
        &[
            "build",
            spec.to_str().unwrap(),
            "--out-link",
            link.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(link.join("hello").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(link.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["image"], "hello");
    let o = compose(
        &["deploy", link.to_str().unwrap(), "--format", "solo5"],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr)
            .contains("a unix image cannot be deployed that way (formats for unix: none)"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn solo5_glue_declares_its_manifest_with_the_typed_constructor() {
    let load = |spec: &str, target: &str| compose::ops::LoadOptions {
        spec: root().join(spec),
        target: Some(target.into()),
        args: vec![],
    };
    for target in ["hvt", "spt"] {
        let (_, graph) = compose::ops::check(&load("specs/echo-token.kdl", target))
            .unwrap_or_else(|_| panic!("echo-token checks on {target}"));
        let glue = compose::glue::generate(&graph, Path::new("echo-token.kdl")).unwrap();
        let main = &glue
            .files
            .iter()
            .find(|f| f.path == Path::new("main.rs"))
            .unwrap()
            .contents;
        // The network interface, then the block device that carries the secrets.
        assert!(
            main.contains("static SOLO5_MANIFEST: platform::solo5_abi::Mft1Note<3> =")
                && main.contains("platform::solo5_abi::MftDevice::net(\"service\"),")
                && main.contains("platform::solo5_abi::MftDevice::block(\"secrets\"),"),
            "{main}"
        );
        assert!(!main.contains("0x"), "hex bytes in the glue:\n{main}");
        // The application call is alone in its own file, which main.rs includes.
        assert!(main.contains("platform::run(include!(\"application.rs\"))"));
        let app = &glue
            .files
            .iter()
            .find(|f| f.path == glue.app_file)
            .unwrap()
            .contents;
        assert!(
            app.lines()
                .any(|l| l.starts_with("echo::start_with_token(")),
            "{app}"
        );
    }
}
