//! End-to-end tests: the real `compose` binary on the example specs, and the unikernels it
//! builds, talked to as a user would (a terminal, a TCP client).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `compose ARGS` run from the repository root, sharing one cargo target directory.
fn compose(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(args)
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .output()
        .expect("run compose")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn out_dir(name: &str) -> PathBuf {
    let d = root().join("target/e2e-out").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn hello_runs_greets_and_exits_zero() {
    let out = out_dir("hello");
    let o = compose(&[
        "run",
        "specs/hello.kdl",
        "--no-out-link",
        "--out",
        out.to_str().unwrap(),
        "--",
        "--name=Ada",
        "--times=2",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "Hello, Ada! (1/2)\nHello, Ada! (2/2)\n");
    // The image is a standalone program: boot defaults apply when no argument is given.
    let image = out.join("hello");
    let o = Command::new(&image).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout).lines().count(), 3);
    assert!(text(&o.stdout).starts_with("Hello, world! (1/3)"));
}

#[test]
fn build_time_parameters_change_the_image_and_boot_args_are_checked() {
    let out = out_dir("hello-bonjour");
    let o = compose(&[
        "build",
        "specs/hello.kdl",
        "--arg",
        "greeting=Bonjour",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let image = out.join("hello");
    let o = Command::new(&image)
        .args(["--times", "1", "--name", "Lin"])
        .output()
        .unwrap();
    assert_eq!(text(&o.stdout), "Bonjour, Lin! (1/1)\n");
    // A mistyped boot argument stops the unikernel before it starts.
    let o = Command::new(&image).arg("--times=many").output().unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o.stderr).contains("--times"), "{}", text(&o.stderr));
    let o = Command::new(&image).arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stdout).contains("--name=<string>"),
        "{}",
        text(&o.stdout)
    );
}

fn read_port(stdout: &mut BufReader<std::process::ChildStdout>) -> u16 {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

#[test]
fn echo_answers_a_real_tcp_client() {
    let out = out_dir("echo");
    let o = compose(&[
        "build",
        "specs/echo.kdl",
        "--no-out-link",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let mut child = Command::new(out.join("echo"))
        .arg("--port=0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let port = read_port(&mut stdout);
    let result = std::panic::catch_unwind(|| {
        // Several clients at once, each with its own data, one of them abandoning midway.
        let mut abandoned = TcpStream::connect(("127.0.0.1", port)).unwrap();
        abandoned.write_all(b"half a mess").unwrap();
        drop(abandoned);
        let clients: Vec<_> = (0..8)
            .map(|i| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let payload: Vec<u8> = (0..100_000u32).map(|j| (j * 7 + i) as u8).collect();
                    let writer = {
                        let mut s = s.try_clone().unwrap();
                        let p = payload.clone();
                        std::thread::spawn(move || {
                            s.write_all(&p).unwrap();
                            s.shutdown(std::net::Shutdown::Write).unwrap();
                        })
                    };
                    let mut back = Vec::new();
                    s.read_to_end(&mut back).unwrap();
                    writer.join().unwrap();
                    assert_eq!(back, payload);
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    });
    child.kill().ok();
    child.wait().ok();
    result.unwrap();
}

#[test]
fn describe_json_lists_devices_interfaces_and_edges() {
    let o = compose(&["describe", "specs/echo.kdl", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "compose.describe/v1");
    let devices = v["devices"].as_array().unwrap();
    let names: Vec<&str> = devices
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["console", "service", "stack", "tcp"]);
    let tcp = &devices[3];
    assert_eq!(tcp["kind"], "tcp");
    assert_eq!(tcp["interfaces"], serde_json::json!(["tcp"]));
    assert_eq!(
        tcp["requires"],
        serde_json::json!([{"slot": "stack", "interface": "ipv4", "device": "stack"}])
    );
    assert_eq!(
        v["edges"],
        serde_json::json!([
            {"from": "stack", "to": "service", "slot": "net"},
            {"from": "tcp", "to": "stack", "slot": "stack"},
        ])
    );
    assert_eq!(
        v["application"]["uses"][2],
        serde_json::json!({"kind": "bootarg", "name": "port"})
    );
}

#[test]
fn defaults_fill_unnamed_references_and_are_shared() {
    // tcp with no stack anywhere: compose creates the documented defaults, once.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.kdl");
    let echo = root().join("specs/echo");
    std::fs::write(
        &spec,
        format!("unikernel d\nconsole\ntcp a\ntcp b\napplication app {{\n crate {:?}\n entry \"echo::start\"\n use console a\n}}\n", echo.display()),
    )
    .unwrap();
    let o = compose(&["describe", spec.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<(&str, bool)> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["implicit"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("console", false),
            ("service", true),
            ("ipv4", true),
            ("a", false),
            ("b", false)
        ]
    );
}

#[test]
fn dot_output_is_a_readable_graph() {
    let o = compose(&["describe", "specs/echo.kdl", "--format", "dot"]);
    let dot = text(&o.stdout);
    assert!(dot.starts_with("digraph \"echo (unix)\" {"), "{dot}");
    assert!(
        dot.contains("\"tcp\" -> \"stack\" [label=\"stack\"];"),
        "{dot}"
    );
    assert!(dot.contains("\"app:echo\" -> \"tcp\";"), "{dot}");
}

#[test]
fn every_subcommand_has_help_and_completions_work() {
    for cmd in [
        "check",
        "describe",
        "build",
        "run",
        "init",
        "verify",
        "keygen",
        "sign",
        "gc",
        "pin",
        "unpin",
        "deploy",
        "completions",
    ] {
        let o = compose(&[cmd, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(text(&o.stdout).contains("Usage: compose"), "{cmd}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let o = compose(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        assert!(text(&o.stdout).contains("describe"), "{shell}");
    }
    // Usage errors exit 2.
    assert_eq!(compose(&["build"]).status.code(), Some(2));
    assert_eq!(compose(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn message_format_json_reports_stages_and_diagnostics() {
    let out = out_dir("json");
    let o = compose(&[
        "build",
        "specs/hello.kdl",
        "--message-format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["reason"], "compose-result");
    assert!(lines.iter().any(|l| l["reason"] == "compose-stage"));
    let bad = root().join("tests/ui/dangling-reference/spec.kdl");
    let o = compose(&[
        "build",
        bad.to_str().unwrap(),
        "--message-format",
        "json",
        "--no-out-link",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let d: serde_json::Value =
        serde_json::from_str(text(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(d["reason"], "compose-diagnostic");
    assert_eq!(d["code"], "compose::dangling-reference");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(12))
    );
}

#[test]
fn a_missing_spec_is_an_error_not_a_panic() {
    let o = compose(&["check", "no/such/spec.kdl"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot read spec"));
    let _ = Path::new("");
}

/// Every line of `stdout` as JSON; fails on a line that is not.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

#[test]
fn a_usage_error_is_printed_once_with_exit_2() {
    let cases: [(&[&str], &str); 4] = [
        (&["--target", "vmx"], "--target vmx: unknown target"),
        (
            &["--arg", "nope=1"],
            "--arg nope=1: the spec has no param `nope`",
        ),
        (&["--arg", "nope"], "expected NAME=VALUE"),
        (&["--target", "xen64"], "--target xen64: unknown target"),
    ];
    for command in ["build", "run"] {
        for (flags, message) in cases {
            let mut args = vec![command, "specs/hello.kdl", "--no-out-link"];
            args.extend_from_slice(flags);
            let o = compose(&args);
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.matches(message).count(), 1, "{args:?}: {err}");
            assert_eq!(text(&o.stdout), "", "{args:?}");
            // Nothing was started: no stage line before the error.
            assert!(!err.contains("Generating"), "{args:?}: {err}");

            // As JSON: stdout is only JSON lines, one diagnostic, and stderr says nothing.
            if flags[1] == "nope" {
                continue; // clap's own parse error: reported by clap before compose runs
            }
            args.extend(["--message-format", "json"]);
            let o = compose(&args);
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            assert_eq!(text(&o.stderr), "", "{args:?}");
            let lines = json_lines(&o.stdout);
            assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
            assert_eq!(lines[0]["reason"], "compose-diagnostic");
            assert_eq!(lines[0]["code"], "compose::bad-arg");
            assert!(
                lines[0]["message"].as_str().unwrap().contains(message),
                "{lines:?}"
            );
        }
    }
}

#[test]
fn a_stage_error_is_one_report_human_or_json() {
    let store = out_dir("bad-store").join("a-file");
    std::fs::write(&store, "not a directory").unwrap();
    let store = store.join("store");
    let base = [
        "build",
        "specs/hello.kdl",
        "--no-out-link",
        "--store",
        store.to_str().unwrap(),
    ];
    let o = compose(&base);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("compose::store").count(), 1, "{err}");
    assert_eq!(err.matches(store.to_str().unwrap()).count(), 1, "{err}");
    assert_eq!(text(&o.stdout), "");

    let mut args = base.to_vec();
    args.extend(["--message-format", "json"]);
    let o = compose(&args);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "", "no human text after JSON");
    let lines = json_lines(&o.stdout);
    let last = lines.last().expect("an error line");
    assert_eq!(last["reason"], "compose-error", "{lines:?}");
    assert_eq!(last["code"], "compose::store");
    assert_eq!(last["exit"], 1);
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains(store.to_str().unwrap())
    );
    assert!(lines.iter().all(|l| l["reason"] != "compose-result"));
}
