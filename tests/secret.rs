//! Secrets: a spec with a secret builds without its value; the value is supplied only when
//! the unikernel is launched, and no trace of it is found in the store, the bundle, the
//! manifest, the build's output or the unikernel's command line, while the running
//! unikernel does use it (it refuses clients that do not present it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file below `dir` (following no links), with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

#[test]
fn a_secret_reaches_the_running_unikernel_and_nothing_else() {
    // A value that cannot occur by chance.
    let secret = format!(
        "tok-{:x}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();

    // Launch through compose run, with the secret from a file; capture everything it prints.
    let mut child = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["run", "specs/echo-token.kdl", "--no-out-link", "--secret"])
        .arg(format!("token=@{}", token_file.display()))
        .args(["--", "--port=0"])
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", &store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port: u16 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));

    // The unikernel's command line, as the kernel sees it, while it runs.
    let unikernel = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .find(|c| {
            contains(c, b"echo-token") && contains(c, b"--port=0") && !contains(c, b"compose")
        })
        .expect("the unikernel's process");
    assert!(
        !contains(&unikernel, secret.as_bytes()),
        "the secret is on the unikernel's command line"
    );
    assert!(
        contains(&unikernel, b"--secret:token="),
        "the secret is attached as a file"
    );

    // It uses the secret: the right token is served, a wrong one is refused.
    let talk = |token: &str| -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(format!("{token}\nping\n").as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    assert_eq!(talk(&secret), "ok\nping\n");
    assert_eq!(talk("guess"), "denied\n");

    child.kill().unwrap();
    let mut rest = Vec::new();
    let _ = stdout.read_to_end(&mut rest);
    let mut err = Vec::new();
    let _ = child.stderr.take().unwrap().read_to_end(&mut err);
    child.wait().unwrap();
    let logs = [line.as_bytes().to_vec(), rest, err].concat();
    assert!(
        !contains(&logs, secret.as_bytes()),
        "the secret is in compose's or the unikernel's output"
    );

    // Nothing in the store (images, manifests, bundles, build information, hash cache).
    let stored = files(&store);
    assert!(
        stored
            .iter()
            .any(|(p, _)| p.to_string_lossy().ends_with(".tar.zst")),
        "a bundle was stored"
    );
    for (path, bytes) in &stored {
        assert!(
            !contains(bytes, secret.as_bytes()),
            "the secret is in {}",
            path.display()
        );
    }
    // Inside the bundle, decompressed, and in the manifest's declaration of it.
    let bundle = stored
        .iter()
        .find(|(p, _)| p.to_string_lossy().ends_with(".tar.zst"))
        .unwrap();
    for (name, bytes) in compose::bundle::read(&bundle.0).unwrap() {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "the secret is in {name} in the bundle"
        );
        if name == "manifest.json" {
            assert!(
                contains(&bytes, b"\"secret\""),
                "the manifest declares the secret by name"
            );
        }
    }
    // Nor in the generated glue or the build directory.
    for (path, bytes) in files(&root().join("specs/_build/echo-token-unix")) {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "the secret is in {}",
            path.display()
        );
    }

    // Without the secret, nothing starts, and the message names it.
    let o = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["run", "specs/echo-token.kdl", "--no-out-link"])
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", &store)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("secret `token`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
