//! The generated glue, end to end: the examples `hello_glue` and `echo_glue` are the glue
//! compose generates for `specs/hello.kdl` and `specs/echo.kdl` (Cargo.toml points them at
//! the snapshots that `tests/glue_snapshots.rs` pins). This test builds them with cargo, in
//! a target directory of its own (the outer cargo holds the lock on the workspace's), runs
//! them as processes and drives them from outside as a user would: command lines, exit
//! statuses, stdout, and a real TCP client.
//!
//! The test has its own `main` (harness = false) and a small runner.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

fn main() {
    let tests: &[(&str, fn())] = &[
        ("hello_greets", hello_greets),
        ("hello_help", hello_help),
        ("hello_bad_boot_argument", hello_bad_boot_argument),
        ("echo_serves_clients", echo_serves_clients),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok { passed += 1 } else { failed += 1 }
    }
    println!("glue: {passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// Builds the examples once; returns the directory that holds them.
fn examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unix-glue");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "-p", "compose-unix", "--examples"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the glue examples failed");
        target_dir.join("debug/examples")
    })
}

/// The glue of `app` (`hello`, `echo`) with `args`.
fn glue(app: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(examples().join(format!("{app}_glue")));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hello_greets() {
    let start = Instant::now();
    let out: Output = glue("hello", &["--name=Ada", "--times", "3"])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "Hello, Ada! (1/3)\nHello, Ada! (2/3)\nHello, Ada! (3/3)\n"
    );
    assert!(
        took >= Duration::from_millis(200),
        "two 100 ms sleeps took {took:?}"
    );
}

fn hello_help() {
    let out = glue("hello", &["--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let usage = text(&out.stdout);
    assert!(
        usage.contains("--name=<string>  who to greet (default: world)"),
        "{usage}"
    );
    assert!(usage.contains("--block:NAME=PATH"), "{usage}");
}

fn hello_bad_boot_argument() {
    let out = glue("hello", &["--times=many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(r#": boot argument --times="many": expected a value of type u32"#),
        "{err}"
    );
    assert!(err.contains("--help"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Kills the server when the test ends, passed or not.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn echo_serves_clients() {
    let mut server = Server(
        glue("echo", &["--port=0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read the server's log on a thread so that a silent server fails the test, not hangs it.
    let (tx, rx) = mpsc::channel();
    let stdout = server.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("echo did not log that it listens");
    let port: u16 = line
        .strip_prefix("echo: listening on port ")
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert_ne!(port, 0);

    let timeout = Some(Duration::from_secs(10));
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(timeout).unwrap();
        s
    };

    // A reset and an abandoned connection must not disturb the server.
    let reset = connect();
    reset_on_close(&reset);
    (&reset).write_all(b"bye").unwrap();
    drop(reset);
    let _abandoned = connect();

    // Several clients at once, each with a larger-than-one-read payload.
    let clients: Vec<_> = (0..8u8)
        .map(|i| {
            let mut s = connect();
            std::thread::spawn(move || {
                let payload: Vec<u8> = (0..100_000u32)
                    .map(|j| (j as u8).wrapping_mul(i + 1))
                    .collect();
                let reader = {
                    let mut s = s.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let mut back = Vec::new();
                        s.read_to_end(&mut back).unwrap();
                        back
                    })
                };
                s.write_all(&payload).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                // The server closes after echoing everything: read_to_end sees EOF.
                assert!(
                    reader.join().unwrap() == payload,
                    "client {i} got a different echo"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }

    // Still serving, and still the same process.
    let mut s = connect();
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
}

/// Makes closing `s` send a reset (SO_LINGER with a zero timeout) instead of a FIN.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `s` is an open socket; the option value points to a live `linger` of the
    // length passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of_val(&linger) as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}
