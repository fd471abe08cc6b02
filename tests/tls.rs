//! HTTPS end to end: specs/site-https.kdl built by compose and run as a user runs it
//! (`compose run ... --secret tls=@site.pem`), on unix and on spt (in a network namespace
//! with a tap), with real clients: curl `--cacert` against a CA this test makes with openssl,
//! `openssl s_client`, headless Chromium (unix), and raw sockets for failed handshakes.
//!
//! Each target is one test that boots the unikernel once per certificate: the page over
//! HTTPS byte-identical, the redirect port's 301, a wrong key refused at start, no window of
//! the private key in the store entry, the bundle, the glue or any process's command line,
//! and failed handshakes of every kind (garbage, plain HTTP, close mid-handshake, silent
//! client until the deadline, TLS 1.0) leaving the site serving and the process's memory
//! where it was: the process's memory, and the connection count, heap and handshakes in
//! progress that the unikernel reports on its monitoring endpoint ([`Snapshot`]).
//!
//! How many failures of each kind: `COMPOSE_TLS_FAILURES` (default 10,000 on unix and
//! 10,000 on spt too: ~20 s there).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/netns.rs"]
mod netns;
use netns::{KillOnDrop, Netns};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    root().join("target/compose-tests")
}

fn store() -> PathBuf {
    target_dir().join("store")
}

fn compose() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_compose"));
    c.current_dir(root())
        .env("COMPOSE_TARGET_DIR", target_dir())
        .env("COMPOSE_STORE", store());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    o
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The test's CA and server certificates, made with openssl.
struct Certs {
    dir: tempfile::TempDir,
}

/// One server certificate and key.
struct Cert {
    /// The secret: chain then key.
    pem: PathBuf,
    /// The key alone, PEM and DER.
    key_pem: Vec<u8>,
    key_der: Vec<u8>,
    /// A second key of the same kind: windows both share are structure, not secret.
    other_pem: Vec<u8>,
    other_der: Vec<u8>,
    /// base64 sha256 of the SPKI (for Chromium's --ignore-certificate-errors-spki-list).
    spki_hash: String,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sh = |script: &str| {
            ok(run(Command::new("sh")
                .args(["-ec", script])
                .current_dir(d)
                .stdin(Stdio::null())));
        };
        sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout ca.key -out ca.pem -days 2 -subj /CN=compose-test-ca 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.77.31.2,IP:10.77.33.2\\nbasicConstraints=CA:FALSE\\n' > ext
            for k in p256 p256b; do openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $k.key; done
            for k in ed ed2; do openssl genpkey -algorithm ed25519 -out $k.key; done
            for k in p256 ed; do
              openssl req -new -key $k.key -out $k.csr -subj /CN=localhost
              openssl x509 -req -in $k.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $k.crt -days 2 -extfile ext 2>/dev/null
              cat $k.crt $k.key > $k.pem
              openssl x509 -in $k.crt -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl base64 -A > $k.spki
            done
            for k in p256 p256b ed ed2; do openssl pkey -in $k.key -outform der -out $k.der; done
            cat ed.crt p256.key > wrong.pem
            cat p256.crt > nokey.pem
            cat p256.key > nocert.pem");
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cert(&self, kind: &str, other: &str) -> Cert {
        let read = |n: String| std::fs::read(self.path(&n)).unwrap();
        Cert {
            pem: self.path(&format!("{kind}.pem")),
            key_pem: read(format!("{kind}.key")),
            key_der: read(format!("{kind}.der")),
            other_pem: read(format!("{other}.key")),
            other_der: read(format!("{other}.der")),
            spki_hash: text(&read(format!("{kind}.spki"))).trim().to_string(),
        }
    }
}

impl Cert {
    /// Every 16-byte window of the key (its PEM body lines and its DER) that a second key
    /// of the same kind does not also have.
    fn secret_windows(&self) -> Vec<Vec<u8>> {
        let windows = |b: &[u8]| -> Vec<Vec<u8>> { b.windows(16).map(<[u8]>::to_vec).collect() };
        let body = |pem: &[u8]| -> Vec<Vec<u8>> {
            text(pem)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .flat_map(|l| windows(l.as_bytes()))
                .collect()
        };
        let shared: std::collections::HashSet<Vec<u8>> = body(&self.other_pem)
            .into_iter()
            .chain(windows(&self.other_der))
            .collect();
        let mut out: Vec<Vec<u8>> = body(&self.key_pem)
            .into_iter()
            .chain(windows(&self.key_der))
            .filter(|w| !shared.contains(w))
            .collect();
        out.sort();
        out.dedup();
        assert!(out.len() > 40, "too few secret windows: {}", out.len());
        out
    }
}

/// A free TCP port on 127.0.0.1 (for unix servers).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads the child's stdout until a line contains `what` (or panics at EOF); the rest of
/// its output is drained on a thread so it never blocks on a full pipe.
fn wait_for_line(child: &mut Child, what: &str) {
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.contains(what) {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return;
        }
        line.clear();
    }
    panic!("the unikernel never said {what:?}");
}

/// The pids of `pid`'s descendants.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let Some(after) = stat.rsplit_once(") ") else {
                continue;
            };
            let ppid: u32 = after
                .1
                .split(' ')
                .nth(1)
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            if ppid == p {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// The process among `pid` and its descendants whose command name starts with `comm` (the
/// spt tender names itself `spt:IMAGE`).
fn find_process(pid: u32, comm: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for p in std::iter::once(pid).chain(descendants(pid)) {
            let c = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if c.trim().starts_with(comm) {
                return p;
            }
        }
        assert!(Instant::now() < deadline, "no process {comm:?} under {pid}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the leak check compares before and after the failed handshakes: the process's
/// resident memory, and what the unikernel itself reports on its monitoring endpoint
/// (specs/site-https.kdl serves it on a second, private stack).
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    /// Resident memory of the unix process or the spt tender, KiB.
    rss_kib: u64,
    /// `tcp_connections_established`: TCP connections open in the unikernel (the scrape's
    /// own connection is on the other stack, but counted too).
    established: u64,
    /// `heap_in_use_bytes`.
    heap: u64,
    /// `tls_handshakes_active`.
    active: u64,
    /// `tls_handshakes_total{outcome="failed"}`.
    failed: u64,
}

/// The monitoring endpoint's metrics at `mgmt`: `name{labels}` (as written) to value.
fn scrape(mgmt: SocketAddr) -> std::collections::BTreeMap<String, u64> {
    let mut c = TcpStream::connect_timeout(&mgmt, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the monitoring endpoint {mgmt}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "/metrics: {body}");
    body.split_once("\r\n\r\n")
        .unwrap()
        .1
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse::<f64>().ok()? as u64))
        })
        .collect()
}

fn snapshot(pid: u32, mgmt: SocketAddr) -> Snapshot {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let m = scrape(mgmt);
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no {k} in /metrics: {m:?}"))
    };
    Snapshot {
        rss_kib,
        established: get("tcp_connections_established"),
        heap: get("heap_in_use_bytes"),
        active: get("tls_handshakes_active"),
        failed: get("tls_handshakes_total{outcome=\"failed\"}"),
    }
}

/// After tens of thousands of failures the unikernel is back where it started: no TLS
/// handshake in progress, no more TCP connections open than before, its heap within
/// 256 KiB of where it was, and the process's memory within 3 MiB (a leak of even 100
/// bytes per failed handshake would show in either). Connections may take a moment to be
/// released after the last client goes, so this waits (with a deadline) for the gauges.
fn assert_back_near(before: Snapshot, now: impl Fn() -> Snapshot, failures: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = |a: &Snapshot| {
        a.active == 0 && a.established <= before.established && a.heap <= before.heap + (256 << 10)
    };
    let mut after = now();
    while !settled(&after) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        after = now();
    }
    eprintln!(
        "tls leak check: {failures} failed handshakes ({} counted), RSS {} KiB -> {} KiB, \
         heap {} -> {} bytes, connections {} -> {}",
        after.failed - before.failed,
        before.rss_kib,
        after.rss_kib,
        before.heap,
        after.heap,
        before.established,
        after.established
    );
    assert!(
        settled(&after),
        "not back where it started: {before:?} -> {after:?}"
    );
    assert!(
        after.failed - before.failed >= (failures as u64).saturating_sub(100) * 3 / 4,
        "only {} of {failures} failed handshakes counted",
        after.failed - before.failed
    );
    let grown = after.rss_kib.saturating_sub(before.rss_kib);
    assert!(
        grown < 3 * 1024,
        "RSS grew by {grown} KiB over {failures} failed handshakes ({before:?} -> {after:?})"
    );
}

/// How many failures of each cheap kind.
fn failures(default: usize) -> usize {
    std::env::var("COMPOSE_TLS_FAILURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The first record a real `openssl s_client ARGS` sends: its ClientHello.
fn client_hello(args: &[&str]) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = KillOnDrop(child);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x16, "not a handshake record");
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    [&head[..], &body].concat()
}

/// Sends `payload`, reads what the server answers until it closes (at most 64 KiB, or
/// until `wait` passes), returns it.
fn exchange(addr: SocketAddr, payload: &[u8], wait: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20))?;
    s.set_read_timeout(Some(wait))?;
    s.write_all(payload)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 65536 {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// `n` failed handshakes of each kind against `addr`; the site must still serve after.
/// Runs on two threads (the machine has two cores).
fn fail_handshakes(addr: SocketAddr, n: usize, hello: &[u8], old_hello: &[u8], timeout_s: u64) {
    let start = Instant::now();
    let kinds: [(&str, Vec<u8>); 3] = [
        ("garbage", (0..300u32).map(|i| (i * 7 + 3) as u8).collect()),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("TLS 1.0", old_hello.to_vec()),
    ];
    for (kind, payload) in &kinds {
        std::thread::scope(|s| {
            for t in 0..2 {
                s.spawn(move || {
                    for i in (t..n).step_by(2) {
                        let back = exchange(addr, payload, Duration::from_secs(30))
                            .unwrap_or_else(|e| panic!("{kind} #{i}: {e}"));
                        // A fatal alert record, then the server closes.
                        assert!(
                            back.len() >= 7 && back[0] == 0x15 && back[5] == 2,
                            "{kind} #{i}: no fatal alert: {back:02x?}"
                        );
                    }
                });
            }
        });
        eprintln!("tls: {n} x {kind} in {:?}", start.elapsed());
    }
    // Close mid-handshake: a real ClientHello, the first bytes of the server's flight, gone.
    let mid = n.max(100);
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                for i in (t..mid).step_by(2) {
                    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    c.write_all(hello).unwrap();
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b)
                        .unwrap_or_else(|e| panic!("mid-handshake #{i}: {e}"));
                    assert_eq!(b[0], 0x16, "mid-handshake #{i}: not a ServerHello");
                }
            });
        }
    });
    eprintln!("tls: {mid} x close mid-handshake in {:?}", start.elapsed());
    // Silent clients, more than max-handshakes (64) at once: each is closed at its deadline.
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(20)).unwrap())
        .collect();
    let t0 = Instant::now();
    for (i, mut c) in silent.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(timeout_s * 4 + 30)))
            .unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("silent client #{i} was not closed: {other:?}"),
        }
    }
    eprintln!(
        "tls: 100 silent clients closed within {:?} (timeout {timeout_s} s)",
        t0.elapsed()
    );
}

/// The page over HTTPS with curl --cacert, byte-identical, through `wrap` (a namespace on
/// spt); and openssl s_client's handshake with verification.
fn check_https(wrap: &[&str], certs: &Certs, host: &str, port: u16, http_port: u16) {
    let ca = certs.path("ca.pem");
    let index = std::fs::read(root().join("specs/site/public/index.html")).unwrap();
    let css = std::fs::read(root().join("specs/site/public/style.css")).unwrap();
    for (path, want) in [("/", &index), ("/style.css", &css)] {
        let o = ok(run(Command::new(wrap[0])
            .args(&wrap[1..])
            .args(["curl", "-sS", "--fail", "--max-time", "60", "--cacert"])
            .arg(&ca)
            .arg(format!("https://{host}:{port}{path}"))));
        assert!(
            &o.stdout == want,
            "{path} over HTTPS differs from the source"
        );
    }
    // TLS 1.2 too.
    let o = ok(run(Command::new(wrap[0])
        .args(&wrap[1..])
        .args([
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "60",
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .arg(format!("https://{host}:{port}/"))));
    assert_eq!(text(&o.stdout), "200");
    // openssl s_client: a verified handshake, ALPN http/1.1.
    let mut c = Command::new(wrap[0]);
    c.args(&wrap[1..])
        .args([
            "openssl",
            "s_client",
            "-ign_eof",
            "-verify_return_error",
            "-alpn",
            "http/1.1",
            "-CAfile",
        ])
        .arg(&ca)
        .arg("-connect")
        .arg(format!("{host}:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = text(&o.stdout);
    assert!(
        out.contains("Verify return code: 0 (ok)") && out.contains("ALPN protocol: http/1.1"),
        "s_client: {out}{}",
        text(&o.stderr)
    );
    assert!(
        out.contains("HTTP/1.1 200 OK"),
        "s_client got no page: {out}"
    );
    // The redirect port.
    let o = ok(run(Command::new(wrap[0])
        .args(&wrap[1..])
        .args(["curl", "-sS", "-i", "--max-time", "60"])
        .arg(format!("http://{host}:{http_port}/docs/?a=b"))));
    let head = text(&o.stdout);
    assert!(head.starts_with("HTTP/1.1 301 "), "{head}");
    let location = if port == 443 {
        format!("https://{host}/docs/?a=b")
    } else {
        format!("https://{host}:{port}/docs/?a=b")
    };
    assert!(
        head.contains(&format!("Location: {location}\r\n")),
        "{head}"
    );
}

/// Refusals at start: a key of another certificate, no key, no certificate.
fn check_refusals(certs: &Certs, run_args: &[String]) {
    for (file, message) in [
        (
            "wrong.pem",
            "secret `tls`: its private key does not match its first certificate",
        ),
        ("nokey.pem", "secret `tls`: it holds no private key"),
        ("nocert.pem", "secret `tls`: it holds no certificate"),
    ] {
        let secret = format!("tls=@{}", certs.path(file).display());
        let mut args = run_args.to_vec();
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.splice(at..at, ["--secret".to_string(), secret]);
        let mut cmd = if run_args[0] == "ip" {
            let mut c = Command::new("ip");
            c.args(&args[1..])
                .current_dir(root())
                .env("COMPOSE_TARGET_DIR", target_dir())
                .env("COMPOSE_STORE", store());
            c
        } else {
            let mut c = compose();
            c.args(&args);
            c
        };
        let o = run(cmd.stdin(Stdio::null()));
        // On unix the message is on stderr; on Solo5 on the tender's console (stdout).
        let err = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(!o.status.success(), "{file} was accepted: {err}");
        assert_eq!(o.status.code(), Some(1), "{file}: {err}");
        assert!(err.contains(message), "{file}: {err}");
    }
}

/// No 16-byte window of the key in the store entry (every file, the bundle unpacked), the
/// glue directory, or any process's command line.
fn check_key_absent(cert: &Cert, entry: &Path, glue: &Path) {
    let windows: std::collections::HashSet<Vec<u8>> = cert.secret_windows().into_iter().collect();
    // A table of the windows' first two bytes keeps the scan of a large image fast.
    let mut first = vec![false; 1 << 16];
    for w in &windows {
        first[usize::from(u16::from_be_bytes([w[0], w[1]]))] = true;
    }
    let has = |hay: &[u8]| {
        hay.windows(16)
            .any(|h| first[usize::from(u16::from_be_bytes([h[0], h[1]]))] && windows.contains(h))
    };
    let mut files = Vec::new();
    for dir in [entry, glue] {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(p);
                } else if ft.is_file() {
                    files.push(p);
                }
            }
        }
    }
    assert!(files.len() > 3, "nothing to search in {}", entry.display());
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !has(&bytes),
            "a window of the private key is in {}",
            f.display()
        );
        if f.to_string_lossy().ends_with(".tar.zst") {
            let tar = zstd::decode_all(bytes.as_slice()).unwrap();
            assert!(
                !has(&tar),
                "a window of the private key is in the bundle {}",
                f.display()
            );
        }
    }
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            assert!(
                !has(&cmdline),
                "a window of the private key is on the command line of {}",
                e.path().display()
            );
        }
    }
}

/// The store entry compose built for `target`.
fn entry_for(target: &str) -> PathBuf {
    let o = ok(run(compose().args([
        "build",
        "specs/site-https.kdl",
        "--target",
        target,
        "--no-out-link",
    ])));
    let path = text(&o.stdout).trim().lines().last().unwrap().to_string();
    let p = PathBuf::from(path);
    assert!(p.is_dir(), "{}", p.display());
    p
}

/// Headless Chromium loads the page over HTTPS, trusting the test key's SPKI.
fn check_chromium(cert: &Cert, port: u16) {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!(
            "--ignore-certificate-errors-spki-list={}",
            cert.spki_hash
        ))
        .arg("--dump-dom")
        .arg(format!("https://localhost:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(child) = child else {
        panic!("chromium is not installed (.ci/run installs it)");
    };
    let mut child = KillOnDrop(child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    let index = text(&std::fs::read(root().join("specs/site/public/index.html")).unwrap());
    let title = index
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap();
    assert!(
        out.contains(&format!("<title>{title}</title>")),
        "chromium did not load the page: {out}"
    );
}

#[test]
fn https_on_unix() {
    let certs = Certs::new();
    let entry = entry_for("unix");
    let glue = root().join("specs/_build/site-https-unix");
    let mgmt_port = free_port();
    let mgmt: SocketAddr = format!("127.0.0.2:{mgmt_port}").parse().unwrap();
    let base = |port: u16, http_port: u16| -> Vec<String> {
        [
            "run",
            "specs/site-https.kdl",
            "--no-out-link",
            "--",
            &format!("--port={port}"),
            &format!("--http-port={http_port}"),
            &format!("--mgmt-port={mgmt_port}"),
            "--handshake-timeout=1",
        ]
        .map(String::from)
        .to_vec()
    };
    check_refusals(&certs, &base(free_port(), free_port()));
    let hello = client_hello(&[]);
    let old_hello = client_hello(&["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    for (kind, other) in [("p256", "p256b"), ("ed", "ed2")] {
        let cert = certs.cert(kind, other);
        let (port, http_port) = (free_port(), free_port());
        let mut args = base(port, http_port);
        args.splice(
            3..3,
            [
                "--secret".to_string(),
                format!("tls=@{}", cert.pem.display()),
            ],
        );
        let child = compose()
            .args(&args)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut site = KillOnDrop(child);
        wait_for_line(&mut site, &format!("listening on port {port}"));
        let pid = find_process(site.id(), "site-https");
        check_https(&["env"], &certs, "127.0.0.1", port, http_port);
        if kind == "p256" {
            // Chromium does not take Ed25519 server certificates (BoringSSL offers no
            // ed25519 signature scheme to servers): P-256 only.
            check_chromium(&cert, port);
        }
        check_key_absent(&cert, &entry, &glue);
        if kind == "p256" {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            // Warm up (the allocator's pools, the stack's buffers), then measure.
            fail_handshakes(addr, 200, &hello, &old_hello, 1);
            let before = snapshot(pid, mgmt);
            let n = failures(10_000);
            fail_handshakes(addr, n, &hello, &old_hello, 1);
            assert_back_near(before, || snapshot(pid, mgmt), 4 * n + 100);
            check_https(&["env"], &certs, "127.0.0.1", port, http_port);
        }
    }
}

#[test]
fn https_on_spt() {
    https_on_solo5("spt", 31, true);
}

/// hvt: the page, s_client and the redirect with a P-256 certificate, and the handshake
/// counted on the monitoring endpoint (the refusals, Ed25519 and the leak check are the
/// same code as on spt, which runs them).
#[test]
fn https_on_hvt() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    https_on_solo5("hvt", 33, false);
}

/// Site-https on a Solo5 target in a namespace: the site on tap0 (`10.77.SUBNET.2`), its
/// monitoring on tap1 (`10.77.SUBNET+1.2`). `full`: also the refusals, the Ed25519
/// certificate and the failed handshakes.
fn https_on_solo5(target: &str, subnet: u8, full: bool) {
    let certs = Certs::new();
    let entry = entry_for(target);
    let glue = root().join(format!("specs/_build/site-https-{target}"));
    let Some(ns) = Netns::new("compose-tls", subnet) else {
        eprintln!(
            "\n*** SKIPPED: cannot create a network namespace (root and iproute2 needed): HTTPS on {target} not run ***\n"
        );
        return;
    };
    ns.add_tap("tap1", subnet + 1);
    let guest = ns.guest();
    let ipv4 = format!("--ipv4={guest}/24");
    let mgmt_ipv4 = format!("--mgmt-ipv4=10.77.{}.2/24", subnet + 1);
    let mgmt: SocketAddr = format!("10.77.{}.2:9090", subnet + 1).parse().unwrap();
    let base = |secret: Option<&Path>| -> Vec<String> {
        let mut v: Vec<String> = [
            "ip",
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_compose"),
            "run",
            "specs/site-https.kdl",
            "--no-out-link",
            "--target",
            target,
            "--net",
            "service=tap0",
            "--net",
            "management=tap1",
        ]
        .map(String::from)
        .to_vec();
        if let Some(s) = secret {
            v.push("--secret".into());
            v.push(format!("tls=@{}", s.display()));
        }
        v.extend(
            [
                "--",
                &ipv4,
                &mgmt_ipv4,
                "--port=443",
                "--http-port=80",
                "--handshake-timeout=1",
            ]
            .map(String::from),
        );
        v
    };
    if full {
        check_refusals(&certs, &base(None));
    }
    let hello = client_hello(&[]);
    let old_hello = client_hello(&["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    let wrap = ["ip", "netns", "exec", ns.name.as_str()];
    let kinds: &[(&str, &str)] = if full {
        &[("p256", "p256b"), ("ed", "ed2")]
    } else {
        &[("p256", "p256b")]
    };
    for &(kind, other) in kinds {
        let cert = certs.cert(kind, other);
        let args = base(Some(&cert.pem));
        let child = Command::new("ip")
            .args(&args[1..])
            .current_dir(root())
            .env("COMPOSE_TARGET_DIR", target_dir())
            .env("COMPOSE_STORE", store())
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut site = KillOnDrop(child);
        wait_for_line(&mut site, "listening on port 443");
        check_https(&wrap, &certs, &guest, 443, 80);
        check_key_absent(&cert, &entry, &glue);
        let handshakes = ns.inside(move || scrape(mgmt));
        let ok = handshakes["tls_handshakes_total{outcome=\"succeeded\"}"];
        assert!(ok >= 2, "{target}: {ok} handshakes counted: {handshakes:?}");
        if full && kind == "p256" {
            let tender = find_process(site.id(), "spt:");
            let hello = hello.clone();
            let old_hello = old_hello.clone();
            let g = guest.clone();
            let n = failures(10_000);
            ns.inside(move || {
                let addr: SocketAddr = format!("{g}:443").parse().unwrap();
                fail_handshakes(addr, 200, &hello, &old_hello, 1);
                let before = snapshot(tender, mgmt);
                fail_handshakes(addr, n, &hello, &old_hello, 1);
                assert_back_near(before, || snapshot(tender, mgmt), 4 * n + 100);
            });
            check_https(&wrap, &certs, &guest, 443, 80);
        }
    }
}
