//! compose as a user installs it: `cargo install --path composer` (and the two tenders) into
//! a fresh root, then, in directories outside the repository with a fresh HOME and cache,
//! `compose init`, `compose build`, `compose run` for unix and spt, `compose run RESULT`,
//! `compose deploy`, and plain `cargo check` in the application crate. The installed
//! compose is not the checkout's build, so it builds from the source tree it carries.
//!
//! The install uses `--debug` and the repository's own target directory, so that it reuses
//! the artifacts `cargo test` built (a release install would compile everything again).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

/// The real toolchain and crate cache, wherever this test process found them.
fn real_home(var: &str, sub: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| format!("{}/{sub}", std::env::var("HOME").unwrap()))
}

/// The installation: a root holding bin/compose, bin/compose-hvt, bin/compose-spt, and a
/// HOME and cache shared by the tests (so the tree is unpacked once).
struct Installed {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    home: PathBuf,
    cache: PathBuf,
}

/// Where [`installed`] put the installation, for [`remove_install_dir`].
static INSTALL_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_install_dir() {
    if let Some(dir) = INSTALL_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn installed() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("compose-install-")
            .tempdir()
            .unwrap();
        // A static is never dropped, so the TempDir would outlive the process: remove the
        // installation when the test process exits.
        INSTALL_DIR.set(dir.path().to_path_buf()).unwrap();
        // SAFETY: `remove_install_dir` is an `extern "C" fn()` with no preconditions.
        unsafe { libc::atexit(remove_install_dir) };
        let root = dir.path().join("root");
        for path in ["composer", "platforms/hvt/tender", "platforms/spt/tender"] {
            let out = Command::new("cargo")
                .args(["install", "--quiet", "--debug", "--offline", "--path", path])
                .arg("--root")
                .arg(&root)
                .env("CARGO_TARGET_DIR", repo().join("target"))
                .env_remove("CARGO")
                .env_remove("RUSTFLAGS")
                .current_dir(repo())
                .output()
                .unwrap();
            ok(&format!("cargo install --path {path}"), out);
        }
        let home = dir.path().join("home");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&home).unwrap();
        Installed {
            bin: root.join("bin"),
            home,
            cache,
            _dir: dir,
        }
    })
}

/// `compose` as a user runs it: the installed binary, in `dir`, with a fresh HOME and cache
/// and nothing of this repository or of the outer cargo in its environment.
fn compose(dir: &Path) -> Command {
    let i = installed();
    let mut c = Command::new(i.bin.join("compose"));
    c.current_dir(dir)
        .env("HOME", &i.home)
        .env("XDG_CACHE_HOME", &i.cache)
        .env("RUSTUP_HOME", real_home("RUSTUP_HOME", ".rustup"))
        .env("CARGO_HOME", real_home("CARGO_HOME", ".cargo"));
    for var in [
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_MANIFEST_DIR",
        "RUSTFLAGS",
        "COMPOSE_ROOT",
        "COMPOSE_STORE",
        "COMPOSE_TARGET_DIR",
        "COMPOSE_TENDER_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

/// A directory outside the repository.
fn outside(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    assert!(!d.path().starts_with(repo()));
    d
}

fn init(dir: &Path, template: &str) -> PathBuf {
    let project = dir.join("project");
    ok(
        "compose init",
        compose(dir)
            .args(["init", "project", "--template", template])
            .output()
            .unwrap(),
    );
    project
}

fn greeting_lines(o: &Output) -> Vec<String> {
    text(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("Hello, "))
        .map(str::to_string)
        .collect()
}

#[test]
fn init_writes_a_project_and_refuses_a_non_empty_directory() {
    let tmp = outside("compose-init-");
    let project = init(tmp.path(), "hello");
    let mut files: Vec<String> = walk(&project)
        .into_iter()
        .filter(|p| !p.starts_with("_build"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            ".gitignore",
            "hello.kdl",
            "hello/Cargo.toml",
            "hello/src/lib.rs"
        ]
    );
    let gitignore = std::fs::read_to_string(project.join(".gitignore")).unwrap();
    assert!(gitignore.lines().any(|l| l == "_build/"));
    assert!(gitignore.lines().any(|l| l == "result*"));
    // The sdk link leads to the compose tree the installed compose carries.
    let sdk = std::fs::read_link(project.join("_build/sdk")).unwrap();
    assert!(
        sdk.starts_with(installed().cache.join("compose/src")),
        "{}",
        sdk.display()
    );
    assert!(project.join("_build/sdk/devices/base/Cargo.toml").is_file());

    // A non-empty directory is refused, and nothing is written into it or next to it.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let before = walk(tmp.path());
    let o = compose(tmp.path())
        .args(["init", "busy", "--template", "echo"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("is not empty"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(walk(tmp.path()), before);

    // An unknown template is a usage error.
    let o = compose(tmp.path())
        .args(["init", "x", "--template", "nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!tmp.path().join("x").exists());
}

/// Every file and link below `dir`, relative to it (links are not followed).
fn walk(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .flatten()
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn hello_builds_and_runs_anywhere_for_unix_and_spt() {
    let tmp = outside("compose-hello-");
    let project = init(tmp.path(), "hello");

    // compose run SPEC: the greeting, exit 0, and ./result left behind like build.
    let o = ok(
        "compose run hello.kdl",
        compose(&project)
            .args(["run", "hello.kdl", "--", "--name=Ada", "--times=2"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        greeting_lines(&o),
        ["Hello, Ada! (1/2)", "Hello, Ada! (2/2)"]
    );
    let result = project.join("result");
    assert!(result.join("manifest.json").is_file());
    let image = std::fs::read(result.join("hello")).unwrap();

    // compose run RESULT: no spec, no build.
    let elsewhere = outside("compose-service-");
    let o = ok(
        "compose run RESULT",
        compose(elsewhere.path())
            .arg("run")
            .arg(&result)
            .args(["--", "--name=service", "--times=1"])
            .output()
            .unwrap(),
    );
    assert_eq!(greeting_lines(&o), ["Hello, service! (1/1)"]);
    assert!(!text(&o.stderr).contains("Building"), "{}", text(&o.stderr));
    // Boot arguments are checked against the image's declared ones before it starts.
    let o = compose(elsewhere.path())
        .arg("run")
        .arg(&result)
        .args(["--", "--nmae=x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("unknown boot argument --nmae"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("--name=<string>"),
        "{}",
        text(&o.stderr)
    );
    // A result cannot take build options.
    let o = compose(elsewhere.path())
        .arg("run")
        .arg(&result)
        .args(["--target", "spt"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // The same project in a second place gives a bit-identical image.
    let second = outside("compose-hello-again-");
    let copy = second.path().join("some/deeper/place");
    std::fs::create_dir_all(&copy).unwrap();
    for f in [
        "hello.kdl",
        "hello/Cargo.toml",
        "hello/src/lib.rs",
        ".gitignore",
    ] {
        std::fs::create_dir_all(copy.join(f).parent().unwrap()).unwrap();
        std::fs::copy(project.join(f), copy.join(f)).unwrap();
    }
    let o = ok(
        "compose build (second place)",
        compose(&copy)
            .args(["build", "hello.kdl", "--store"])
            .arg(second.path().join("store"))
            .output()
            .unwrap(),
    );
    let entry = PathBuf::from(text(&o.stdout).trim());
    assert!(entry.starts_with(second.path().join("store")));
    assert!(
        std::fs::read(entry.join("hello")).unwrap() == image,
        "the image differs between {} and {}",
        project.display(),
        copy.display()
    );

    // Plain cargo check in the application crate (editor support), offline.
    ok(
        "cargo check in the application crate",
        Command::new("cargo")
            .args(["check", "--offline", "--quiet"])
            .current_dir(project.join("hello"))
            .env("CARGO_HOME", real_home("CARGO_HOME", ".cargo"))
            .env("RUSTUP_HOME", real_home("RUSTUP_HOME", ".rustup"))
            .env("HOME", &installed().home)
            .env_remove("CARGO")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap(),
    );

    // spt: the tender installed next to compose runs it in its sandbox.
    let o = ok(
        "compose run hello.kdl --target spt",
        compose(&project)
            .args([
                "run",
                "hello.kdl",
                "--target",
                "spt",
                "--",
                "--name=spt",
                "--times=2",
            ])
            .output()
            .unwrap(),
    );
    assert_eq!(
        greeting_lines(&o),
        ["Hello, spt! (1/2)", "Hello, spt! (2/2)"]
    );
    assert!(!text(&o.stderr).contains("tender"), "{}", text(&o.stderr));
    // deploy: a complete command line, the installed tender first.
    let o = ok(
        "compose deploy",
        compose(&project)
            .args(["deploy", "result", "--", "--name=deployed", "--times=1"])
            .output()
            .unwrap(),
    );
    let line = text(&o.stdout);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        Path::new(words[0]),
        installed().bin.join("compose-spt"),
        "{line}"
    );
    assert_eq!(words.last(), Some(&"--times=1"), "{line}");
    let o = ok(
        "the deployed command",
        Command::new(words[0]).args(&words[1..]).output().unwrap(),
    );
    assert_eq!(greeting_lines(&o), ["Hello, deployed! (1/1)"]);
    let o = compose(&project)
        .args(["deploy", "result", "--", "--times=many"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--times"), "{}", text(&o.stderr));
}

/// Kills the child when dropped, so a failed assertion leaves no unikernel running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn echo_answers_a_tcp_client() {
    let tmp = outside("compose-echo-");
    let project = init(tmp.path(), "echo");
    ok(
        "compose build echo.kdl",
        compose(&project)
            .args(["build", "echo.kdl"])
            .output()
            .unwrap(),
    );
    // The service manager's way: the result, with a free port chosen by the stack.
    let mut child = Running(
        compose(tmp.path())
            .arg("run")
            .arg(project.join("result"))
            .args(["--", "--port=0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let port: u16 = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("echo did not say it is listening within 60 s");
        if let Some(p) = line.strip_prefix("echo: listening on port ") {
            break p.trim().parse().unwrap();
        }
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&sent).unwrap();
    let mut got = vec![0u8; sent.len()];
    stream.read_exact(&mut got).unwrap();
    assert!(got == sent, "echo sent back different bytes");
    drop(stream);
    drop(child);
}
