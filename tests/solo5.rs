//! The Solo5 targets end to end: images built by compose from the unchanged example specs,
//! run by compose's own tenders (hvt on KVM, spt in a seccomp sandbox). hello prints and
//! exits 0; echo answers a TCP client, and the site serves every file byte-identical,
//! through a tap in a network namespace this test creates (and removes), and the echo
//! unikernel answers ping.
//!
//! hvt needs /dev/kvm, and both need root for the namespace; where either is missing the
//! test says so loudly and skips that part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_compose"));
    c.current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"));
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o.stderr));
    o
}

#[path = "support/netns.rs"]
mod netns;
use netns::{KillOnDrop, Netns};

impl Netns {
    /// `compose ARGS` inside the namespace; the process is killed when the handle drops, so
    /// a failed assertion leaves no tender behind.
    fn compose(&self, args: &[&str]) -> KillOnDrop {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_compose")])
            .args(args)
            .current_dir(root())
            .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
            .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }
}

fn wait_for_line(child: &mut Child, what: &str) -> String {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.contains(what) {
            return line;
        }
        line.clear();
    }
    panic!("the unikernel never said {what:?}");
}

fn site_files() -> Vec<(String, Vec<u8>)> {
    let base = root().join("specs/site/public");
    let mut out = Vec::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(&base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out
}

#[test]
fn hello_echo_and_site_on_hvt() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    hello_echo_and_site("hvt", 41);
}

#[test]
fn hello_echo_and_site_on_spt() {
    hello_echo_and_site("spt", 42);
}

fn hello_echo_and_site(target: &'static str, subnet: u8) {
    // hello: the greeting, exit 0.
    let o = ok(compose()
        .args([
            "run",
            "specs/hello.kdl",
            "--no-out-link",
            "--target",
            target,
            "--",
            "--name=KVM",
            "--times=2",
        ])
        .output()
        .unwrap());
    assert_eq!(text(&o.stdout), "Hello, KVM! (1/2)\nHello, KVM! (2/2)\n");
    // A boot argument the image would refuse is refused by compose before anything starts.
    let o = compose()
        .args([
            "run",
            "specs/hello.kdl",
            "--no-out-link",
            "--target",
            target,
            "--",
            "--times=x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("--times=\"x\""),
        "{}",
        text(&o.stderr)
    );
    // Exit statuses pass through the tender: the deploy line (the tender and its
    // arguments) with a boot argument the guest refuses (exit 64) added by hand.
    let entry = text(
        &ok(compose()
            .args([
                "build",
                "specs/hello.kdl",
                "--no-out-link",
                "--target",
                target,
            ])
            .output()
            .unwrap())
        .stdout,
    )
    .trim()
    .to_string();
    let line = text(
        &ok(compose()
            .args(["deploy", &entry, "--format", "solo5"])
            .output()
            .unwrap())
        .stdout,
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let o = Command::new(words[0])
        .args(&words[1..])
        .arg("--times=x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{line}\n{}", text(&o.stderr));
    // A launch without the network interface the image declares is refused up front.
    ok(compose()
        .args([
            "build",
            "specs/echo.kdl",
            "--target",
            target,
            "--no-out-link",
        ])
        .output()
        .unwrap());
    let o = compose()
        .args(["run", "specs/echo.kdl", "--no-out-link", "--target", target])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("--net service="),
        "{}",
        text(&o.stderr)
    );

    let Some(ns) = Netns::new("compose-solo5", subnet) else {
        eprintln!(
            "\n*** SKIPPED: cannot create a network namespace (root and iproute2 needed): echo and site on {target} not run ***\n"
        );
        return;
    };
    // echo through the tap.
    let ipv4 = format!("--ipv4={}/24", ns.guest());
    let mut echo = ns.compose(&[
        "run",
        "specs/echo.kdl",
        "--no-out-link",
        "--target",
        target,
        "--net",
        "service=tap0",
        "--",
        &ipv4,
        "--port=7",
    ]);
    wait_for_line(&mut echo, "listening on port 7");
    // The stack answers ICMP echo.
    let ping = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c", "3", "-W", "5"])
        .arg(ns.guest())
        .output()
        .map_err(|e| e.to_string());
    let guest = ns.guest();
    let result = std::panic::catch_unwind(|| {
        let ping = ping.expect("ping runs (iputils-ping is installed)");
        assert!(
            ping.status.success() && text(&ping.stdout).contains("3 received"),
            "ping {target}: {}{}",
            text(&ping.stdout),
            text(&ping.stderr)
        );
        ns.inside(move || {
            for i in 0..3u8 {
                let mut c = TcpStream::connect_timeout(
                    &format!("{guest}:7").parse().unwrap(),
                    Duration::from_secs(20),
                )
                .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let payload: Vec<u8> = (0..4000u32)
                    .map(|j| (j as u8).wrapping_mul(i + 3))
                    .collect();
                c.write_all(&payload).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                assert_eq!(back, payload, "echo {i}");
            }
        })
    });
    echo.kill().ok();
    echo.wait().ok();
    result.unwrap();

    // A secret: built in memory into the `secrets` block device, used by the unikernel, and
    // on no command line.
    let secret = format!("s{}x{}", std::process::id(), subnet);
    let token_file =
        std::env::temp_dir().join(format!("compose-token-{}-{target}", std::process::id()));
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    ok(compose()
        .args([
            "build",
            "specs/echo-token.kdl",
            "--target",
            target,
            "--no-out-link",
        ])
        .output()
        .unwrap());
    let secret_arg = format!("token=@{}", token_file.display());
    let mut vault = ns.compose(&[
        "run",
        "specs/echo-token.kdl",
        "--no-out-link",
        "--target",
        target,
        "--net",
        "service=tap0",
        "--secret",
        &secret_arg,
        "--",
        &ipv4,
        "--port=9",
    ]);
    wait_for_line(&mut vault, "listening on port 9");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vault.id())).unwrap();
    assert!(
        !cmdline
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the secret is on the tender's command line"
    );
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--block-ro:secrets="),
        "{}",
        String::from_utf8_lossy(&cmdline)
    );
    let guest = ns.guest();
    let token = secret.clone();
    let result = std::panic::catch_unwind(|| {
        ns.inside(move || {
            let talk = |t: &str| {
                let mut c = TcpStream::connect_timeout(
                    &format!("{guest}:9").parse().unwrap(),
                    Duration::from_secs(20),
                )
                .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                c.write_all(format!("{t}\nping\n").as_bytes()).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut back = String::new();
                let _ = c.read_to_string(&mut back);
                back
            };
            assert_eq!(talk(&token), "ok\nping\n");
            assert_eq!(talk("guess"), "denied\n");
        })
    });
    vault.kill().ok();
    vault.wait().ok();
    let _ = std::fs::remove_file(&token_file);
    result.unwrap();

    // The site: every file, byte-identical, over the tap.
    ok(compose()
        .args([
            "build",
            "specs/site.kdl",
            "--target",
            target,
            "--no-out-link",
        ])
        .output()
        .unwrap());
    let mut site = ns.compose(&[
        "run",
        "specs/site.kdl",
        "--no-out-link",
        "--target",
        target,
        "--net",
        "service=tap0",
        "--",
        &ipv4,
        "--port=80",
    ]);
    wait_for_line(&mut site, "listening on port 80");
    let guest = ns.guest();
    let result = std::panic::catch_unwind(|| {
        ns.inside(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into();
            for (path, bytes) in site_files() {
                let mut r = agent.get(&format!("http://{guest}/{path}")).call().unwrap();
                assert_eq!(r.status(), 200, "{path}");
                assert!(
                    r.body_mut().read_to_vec().unwrap() == bytes,
                    "{path} differs from the source"
                );
            }
            assert_eq!(
                agent
                    .get(&format!("http://{guest}/nope"))
                    .call()
                    .unwrap()
                    .status(),
                404
            );
        })
    });
    site.kill().ok();
    site.wait().ok();
    result.unwrap();
}
