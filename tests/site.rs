//! The static-site unikernel on unix, exercised as a user would: a real HTTP client
//! fetches every file; 304, 206, HEAD, 404 and malformed requests; a real browser loads the
//! page; and thousands of abandoned connections leave nothing behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds specs/site.kdl with `args` into its own output directory; returns the image.
fn build(label: &str, args: &[&str]) -> PathBuf {
    let out = root().join("target/e2e-out").join(label);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compose"));
    cmd.args(["build", "specs/site.kdl", "--out", out.to_str().unwrap()])
        .args(args);
    let o = cmd
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("site")
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start(image: &Path, extra: &[String]) -> Server {
    let mut child = Command::new(image)
        .arg("--port=0")
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Server { child, port }
}

fn site_files() -> BTreeMap<String, Vec<u8>> {
    let base = root().join("specs/site/public");
    let mut out = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    assert!(
        out.len() >= 4,
        "the example site has pages, CSS, an image and a nested directory"
    );
    out
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn url(s: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}/{path}", s.port)
}

fn fetch_all_identical(s: &Server) {
    let agent = agent();
    for (path, bytes) in site_files() {
        let mut r = agent.get(&url(s, &path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap();
        assert!(body == bytes, "{path}: served bytes differ from the source");
    }
    // A directory serves its index.html.
    let mut r = agent.get(&url(s, "")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.body_mut().read_to_vec().unwrap(),
        site_files()["index.html"]
    );
}

#[test]
fn embedded_site_serves_every_file_byte_identical_and_speaks_http() {
    let s = start(&build("site-embed", &[]), &[]);
    fetch_all_identical(&s);
    let agent = agent();
    let index = &site_files()["index.html"];

    // ETag and If-None-Match → 304 with no body.
    let r = agent.get(&url(&s, "index.html")).call().unwrap();
    let etag = r
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        r.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let mut r = agent
        .get(&url(&s, "index.html"))
        .header("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.body_mut().read_to_vec().unwrap().is_empty());

    // Range → 206 with exactly those bytes.
    let mut r = agent
        .get(&url(&s, "index.html"))
        .header("Range", "bytes=5-14")
        .call()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers().get("content-range").unwrap().to_str().unwrap(),
        format!("bytes 5-14/{}", index.len())
    );
    assert_eq!(r.body_mut().read_to_vec().unwrap(), index[5..15]);

    // HEAD: the headers of a GET, no body.
    let r = agent.head(&url(&s, "index.html")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-length").unwrap().to_str().unwrap(),
        index.len().to_string()
    );

    // 404 and 405.
    assert_eq!(
        agent
            .get(&url(&s, "no/such/page.html"))
            .call()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        agent
            .post(&url(&s, "index.html"))
            .send("x")
            .unwrap()
            .status(),
        405
    );

    // Malformed requests get 400 and the server goes on serving.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(garbage).unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(resp.starts_with("HTTP/1.1 400"), "{garbage:?} → {resp:?}");
    }
    // An oversized request line is refused too.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let _ = c.write_all(long.as_bytes());
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 414")
            || resp.starts_with("HTTP/1.1 431")
            || resp.starts_with("HTTP/1.1 400"),
        "{resp:?}"
    );
    fetch_all_identical(&s);

    // Precompressed variants are served to clients that accept them, and decode to the file.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(
        b"GET /style.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = Vec::new();
    c.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..split]).to_lowercase();
    if head.contains("content-encoding: gzip") {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&resp[split + 4..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, site_files()["style.css"]);
    } else {
        assert_eq!(
            &resp[split + 4..],
            &site_files()["style.css"][..],
            "identity fallback"
        );
    }
}

#[test]
fn block_backend_serves_the_same_site() {
    let image = build("site-block", &["--arg", "backend=block"]);
    let disk = image.parent().unwrap().join("public.img");
    assert!(disk.exists(), "the archive ships as a block device image");
    let s = start(&image, &[format!("--block:public={}", disk.display())]);
    fetch_all_identical(&s);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Opens `n` connections in assorted states and abandons them, at most `batch` at a time.
fn abandon(port: u16, n: usize, batch: usize) {
    let mut done = 0;
    while done < n {
        let mut open = Vec::new();
        for i in done..(done + batch).min(n) {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let _ = match i % 6 {
                0 => Ok(()),                        // connect, say nothing
                1 => c.write_all(b"GET /index.ht"), // half a request line
                2 => c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n"), // headers never end
                3 => c.write_all(b"GET /logo.png HTTP/1.1\r\nHost: x\r\n\r\n"), // never read the response
                4 => c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /style.css HTTP/1.1\r\n"), // pipelined, cut
                _ => socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)), // reset on close
            };
            open.push(c);
        }
        done += batch;
        drop(open);
    }
}

fn settle(pid: u32, baseline_fds: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fds = open_fds(pid);
        if fds <= baseline_fds || Instant::now() > deadline {
            return fds;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ten_thousand_abandoned_connections_leave_nothing_behind() {
    // A short idle timeout so that connections that go quiet are reaped within the test.
    let image = build("site-leak", &["--arg", "idle-timeout=2"]);
    let s = start(&image, &[]);
    let pid = s.child.id();
    // The descriptors of a server with no connection, before any client came.
    let fds_idle = open_fds(pid);
    fetch_all_identical(&s);
    // The fetches' connections close on the server's side a moment after the client's.
    let fds_before = settle(pid, fds_idle);
    assert_eq!(fds_before, fds_idle, "the fetches' connections are closed");
    // Warm up with the same pattern, so allocator pools reach their working size.
    abandon(s.port, 1_000, 250);
    assert_eq!(settle(pid, fds_before), fds_before);
    let rss_before = rss_kib(pid);
    abandon(s.port, 10_000, 250);
    let fds_after = settle(pid, fds_before);
    let rss_after = rss_kib(pid);
    assert_eq!(fds_after, fds_before, "open connections are back to zero");
    assert!(
        rss_after <= rss_before + 2048,
        "memory back to its baseline: {rss_before} KiB before, {rss_after} KiB after"
    );
    fetch_all_identical(&s);
    println!(
        "10000 abandoned connections: fds {fds_before} → {fds_after}, RSS {rss_before} KiB → {rss_after} KiB"
    );
}

#[test]
fn a_real_browser_loads_the_page_with_its_css_and_image() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(chromium) = chromium else {
        eprintln!(
            "\n*** SKIPPED: no Chromium on this machine (install Debian's `chromium`; .ci/run does) ***\n"
        );
        return;
    };
    let s = start(&build("site-browser", &[]), &[]);
    let dir = root().join("target/e2e-out/browser");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("site.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    // --dump-dom after the page settles; the page's own script reports each resource it loaded.
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1024,768",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url(&s, ""))
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "the screenshot is a real, non-blank picture"
    );
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url(&s, ""))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    // The page marks itself when its stylesheet applied and its image decoded (see index.html).
    assert!(
        dom.contains("data-css=\"loaded\""),
        "the stylesheet did not apply:\n{dom}"
    );
    assert!(
        dom.contains("data-img=\"loaded\""),
        "the image did not load:\n{dom}"
    );
    assert!(!dom.contains("data-failed"), "a resource failed:\n{dom}");
    println!("screenshot kept at {}", shot.display());
}

/// `compose run specs/site.kdl -- ARGS`, its stdout piped, with the suite's target
/// directory and store (so the build is the one the other tests made).
fn compose_run(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compose"));
    cmd.args(["run", "--no-out-link", "specs/site.kdl", "--"])
        .args(args)
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A `compose run` (which execs the unikernel): its stdout lines, as they come; killed
/// and reaped however the test ends.
struct Run {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let mut child = compose_run(args).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Run {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, within `limit`; `None` once stdout closed.
    fn line(&self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("no output within {limit:?}")
            }
        }
    }

    /// The port of the first line, `site: listening on port N` (the build may come first).
    fn port(&self) -> u16 {
        let line = self
            .line(Duration::from_secs(900))
            .expect("compose run ended before the site listened");
        line.strip_prefix("site: listening on port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not the listening line: {line:?}"))
    }

    /// Waits (within `limit`) for the process to end; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "compose run did not end in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Sends `request` on a new connection and reads until the server closes it.
fn exchange(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(request).unwrap();
    let mut response = Vec::new();
    c.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of header `name` in a response head.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = &response[..response.find("\r\n\r\n")?];
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Seconds since the epoch of an HTTP date, as GNU date reads it.
fn date_secs(value: &str) -> i64 {
    let o = Command::new("date")
        .args(["-u", "-d", value, "+%s"])
        .output()
        .unwrap();
    assert!(o.status.success(), "date cannot read {value:?}");
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// The access log (`--access-log`), the `Date` header, 400 for a raw space in the target,
/// and the message and exit status when the port is taken: all through `compose run`, as a
/// user runs the site.
#[test]
fn compose_run_dates_responses_logs_access_and_names_a_taken_port() {
    let index_len = site_files()["index.html"].len();
    let get_index = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    // With --access-log: one Common Log Format line per response, after it is sent (the
    // server closes the connection after logging, so reading to the end orders them).
    let run = Run::start(&["--port=0", "--access-log"]);
    let port = run.port();
    let response = exchange(port, get_index);
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let date = header(&response, "date").expect("a Date header");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (date_secs(date) - now).abs() < 120,
        "Date {date:?} is not the wall clock's"
    );
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date:?}");
    // The Date advances with the wall clock, also across idle spells (the site keeps no
    // timer for it: each response takes the executor's reading for its turn).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut again_sent = 0;
    let later = loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = exchange(port, get_index);
        again_sent += 1;
        let d = header(&again, "date").expect("a Date header").to_string();
        if date_secs(&d) > date_secs(date) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Date stays {d:?} for 30 s"
        );
    };
    assert!(
        date_secs(&later) - date_secs(date) < 30,
        "{date:?} then {later:?}"
    );
    let bad = exchange(port, b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
    assert!(header(&bad, "date").is_some(), "{bad}");
    // The first request, those until the Date changed, then the bad one.
    let mut expected = vec![("GET / HTTP/1.1", 200, index_len.to_string()); 1 + again_sent];
    expected.push(("GET /a b HTTP/1.1", 400, "16".to_string()));
    for (request, status, bytes) in expected {
        let line = run
            .line(Duration::from_secs(30))
            .expect("an access log line");
        let (client, rest) = line
            .split_once(" - - [")
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(client, "127.0.0.1", "{line}");
        let (time, rest) = rest.split_once("] ").unwrap_or_else(|| panic!("{line}"));
        assert!(time.ends_with(" +0000") && time.len() == 26, "{line}");
        assert_eq!(rest, format!("\"{request}\" {status} {bytes}"), "{line}");
    }
    drop(run);

    // Without it (the default): nothing but the listening line.
    let mut run = Run::start(&["--port=0"]);
    let port = run.port();
    assert!(exchange(port, get_index).starts_with("HTTP/1.1 200 "));
    run.child.kill().unwrap();
    run.wait(Duration::from_secs(30));
    let rest: Vec<String> = std::iter::from_fn(|| run.line(Duration::from_secs(30))).collect();
    assert!(rest.is_empty(), "logged without --access-log: {rest:?}");
    drop(run);

    // A port someone else listens on: the site says which, and compose run fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut run = Run::start(&[&format!("--port={port}")]);
    let code = run.wait(Duration::from_secs(900));
    let out: Vec<String> = std::iter::from_fn(|| run.line(Duration::from_secs(30))).collect();
    let stderr = std::mem::replace(&mut run.stderr, std::thread::spawn(String::new));
    let stderr = stderr.join().unwrap();
    assert_eq!(code, Some(1), "stdout {out:?}, stderr {stderr}");
    assert_eq!(
        out,
        [format!(
            "site: cannot listen on 127.0.0.1:{port}: address in use"
        )],
        "stderr {stderr}"
    );
    drop(taken);
}

/// Builds `spec` (in its own directory) with the shared target directory and store.
fn build_spec(spec: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["build", spec.to_str().unwrap(), "--no-out-link"])
        .current_dir(spec.parent().unwrap())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .output()
        .unwrap()
}

#[test]
fn private_keys_are_refused_by_name_unless_the_device_allows_them() {
    let d = tempfile::tempdir().unwrap();
    let site = d.path().join("public");
    std::fs::create_dir_all(site.join("keys")).unwrap();
    // A page about TLS that shows what a key file looks like: no key behind the header.
    std::fs::write(
        site.join("index.html"),
        "<h1>TLS</h1><pre>-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC...\n-----END PRIVATE KEY-----</pre>\n\
         <pre>-----BEGIN RSA PRIVATE KEY-----\n&lt;your key&gt;\n-----END RSA PRIVATE KEY-----</pre>\n",
    )
    .unwrap();
    let spec = |allow: &str| {
        format!(
            "unikernel keysite {{\n    target unix\n}}\nnetif service\nipv4 stack net=service address=\"127.0.0.1/8\"\ntcp\n\
             assets public dir=\"public\" backend=\"block\"{allow}\n\
             application site builtin=static-site assets=public port=8080\n"
        )
    };
    let spec_path = d.path().join("keysite.kdl");
    std::fs::write(&spec_path, spec("")).unwrap();
    let o = build_spec(&spec_path);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The block image is not kept twice: the store's is the build folder's archive.
    {
        use std::os::unix::fs::MetadataExt;
        let entry = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let stored = std::fs::metadata(entry.join("public.img")).unwrap();
        let built = std::fs::metadata(d.path().join("_build/keysite-unix/assets/public.car"));
        let built = built.unwrap();
        assert_eq!((stored.dev(), stored.ino()), (built.dev(), built.ino()));
    }

    // A real PKCS#8 key, as openssl makes it.
    let key = site.join("keys/server.pem");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let o = build_spec(&spec_path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a key was packed: {err}");
    assert!(err.contains("keys/server.pem"), "{err}");
    assert!(err.contains("PKCS#8 private key"), "{err}");
    assert!(err.contains("allow-private-keys"), "{err}");
    assert!(
        !err.contains("public.img") && !err.contains("panicked"),
        "{err}"
    );

    // A site that publishes it on purpose.
    std::fs::write(&spec_path, spec(" allow-private-keys=#true")).unwrap();
    let o = build_spec(&spec_path);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A server run under `strace -e trace=sendfile` (started by strace, so no ptrace
/// permission beyond a parent's is needed); killed and reaped however the test ends.
struct Traced {
    strace: Child,
    port: u16,
    pid: u32,
    trace: PathBuf,
}

impl Traced {
    fn start(image: &Path, extra: &[String], trace: PathBuf) -> Traced {
        let mut strace = Command::new("strace")
            .args(["-qq", "--seccomp-bpf", "-f", "-e", "trace=sendfile", "-o"])
            .arg(&trace)
            .arg(image)
            .arg("--port=0")
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("strace (Debian: strace) runs");
        let mut line = String::new();
        BufReader::new(strace.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("site: listening on port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).unwrap();
        let pid = children.split_whitespace().next().unwrap().parse().unwrap();
        Traced {
            strace,
            port,
            pid,
            trace,
        }
    }

    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|s| !s.contains(") Z "))
    }

    /// Bytes each sendfile call sent so far, as strace logged them.
    fn sendfiles(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(&self.trace).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("sendfile("))
            .filter_map(|l| l.rsplit("= ").next()?.trim().parse().ok())
            .collect()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is the server this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.strace.kill().ok();
        self.strace.wait().ok();
    }
}

/// Runs curl with `args`; its stdout, after checking that it succeeded.
fn curl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        o.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Large values go from the host file to the socket with sendfile(2), from the block image
/// (block backend) and from the executable itself (embed backend): curl gets every file byte
/// for byte, whole, as ranges, as gzip and zstd variants, HEAD gets no body, a value larger
/// than the socket buffer and several at once arrive whole, and clients that go away in the
/// middle of a file leave the server serving.
#[test]
fn large_values_are_sent_from_the_file_byte_identical_on_both_backends() {
    let d = tempfile::tempdir().unwrap();
    let public = d.path().join("public");
    std::fs::create_dir_all(public.join("docs")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // 6 MiB of noise: more than a loopback socket buffer, and no compressed variant.
    let big: Vec<u8> = (0..6 << 20).map(|_| next() as u8).collect();
    // 400 KB of words: compressible, with gzip and zstd variants far over 16 KiB.
    let words = [
        "alpha",
        "beta",
        "<p>",
        "gamma",
        "delta</p>",
        "epsilon",
        "\n",
        "zeta",
    ];
    let mut page = String::from("<!doctype html>\n");
    while page.len() < 400_000 {
        page.push_str(words[next() as usize % words.len()]);
        page.push_str(&format!(" {} ", next() % 1000));
    }
    let mid: Vec<u8> = (0..20_000).map(|_| b'a' + (next() % 26) as u8).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("big.bin", big.clone()),
        ("docs/page.html", page.into_bytes()),
        ("mid.css", mid.clone()),
        ("small.txt", b"small enough for one sendmsg\n".to_vec()),
    ];
    for (name, bytes) in &files {
        std::fs::write(public.join(name), bytes).unwrap();
    }
    for backend in ["embed", "block"] {
        let spec = d.path().join(format!("bigfiles-{backend}.kdl"));
        std::fs::write(
            &spec,
            format!(
                "unikernel bigfiles-{backend} {{\n    target unix\n}}\n\
                 bootarg port type=u16 default=8080\nnetif service\n\
                 ipv4 stack net=service address=\"127.0.0.1/8\"\ntcp\n\
                 assets public dir=\"public\" backend=\"{backend}\"\n\
                 application site builtin=static-site assets=public port=(bootarg)\"port\"\n"
            ),
        )
        .unwrap();
        let o = build_spec(&spec);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let entry = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let image = entry.join(format!("bigfiles-{backend}"));
        let extra = match backend {
            "block" => vec![format!(
                "--block:public={}",
                entry.join("public.img").display()
            )],
            _ => vec![],
        };
        let s = Traced::start(&image, &extra, d.path().join(format!("{backend}.trace")));
        let base = format!("http://127.0.0.1:{}", s.port);
        let at = |name: &str| format!("{base}/{name}");

        // Whole files.
        for (name, bytes) in &files {
            assert!(curl(&[&at(name)]) == *bytes, "{backend}: {name} differs");
        }
        // Ranges, inside the large value and at its end.
        let r = curl(&["-r", "1000-5000999", &at("big.bin")]);
        assert!(r == big[1000..5_001_000], "{backend}: range differs");
        let r = curl(&["-r", "-70000", &at("big.bin")]);
        assert!(
            r == big[big.len() - 70_000..],
            "{backend}: suffix range differs"
        );
        let r = curl(&["-r", "100-19999", &at("mid.css")]);
        assert!(r == mid[100..], "{backend}: range of mid.css differs");
        // Precompressed variants, as curl asks for them and decodes them.
        for encoding in ["gzip", "zstd"] {
            let head = d.path().join("head.txt");
            let ae = format!("Accept-Encoding: {encoding}");
            let body = curl(&[
                "--compressed",
                "-H",
                &ae,
                "-D",
                head.to_str().unwrap(),
                &at("docs/page.html"),
            ]);
            let head = std::fs::read_to_string(&head).unwrap().to_lowercase();
            assert!(
                head.contains(&format!("content-encoding: {encoding}")),
                "{backend}: no {encoding} variant: {head}"
            );
            assert!(
                body == files[1].1,
                "{backend}: {encoding} decodes to other bytes"
            );
        }
        // HEAD sends no body: the next response on the connection starts right after it.
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.write_all(
            b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /mid.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).unwrap();
        let heads: Vec<usize> = resp
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"\r\n\r\n")
            .map(|(i, _)| i + 4)
            .take(2)
            .collect();
        let first = String::from_utf8_lossy(&resp[..heads[0]]).to_lowercase();
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(
            first.contains(&format!("content-length: {}", big.len())),
            "{first}"
        );
        assert!(
            resp[heads[0]..].starts_with(b"HTTP/1.1 200"),
            "{backend}: HEAD sent a body"
        );
        assert!(
            resp[heads[1]..] == mid,
            "{backend}: the GET after HEAD differs"
        );
        // Several large values at once, interleaved by the server.
        let fetches: Vec<_> = (0..4)
            .map(|_| {
                let url = at("big.bin");
                std::thread::spawn(move || curl(&[&url]))
            })
            .collect();
        for f in fetches {
            assert!(
                f.join().unwrap() == big,
                "{backend}: a concurrent fetch differs"
            );
        }
        // Clients that go away mid-file (some after reading a little, some at once).
        for i in 0..20 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut got = 0;
            let mut buf = vec![0u8; 64 * 1024];
            while got < i * 20_000 {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        }
        assert!(s.alive(), "{backend}: the server died");
        assert!(
            curl(&[&at("big.bin")]) == big,
            "{backend}: big.bin after the aborts"
        );
        // And the bytes went by sendfile: at least the large value's worth.
        let sent = s.sendfiles();
        assert!(
            sent.iter().sum::<u64>() >= big.len() as u64,
            "{backend}: sendfile sent {} bytes in {} calls",
            sent.iter().sum::<u64>(),
            sent.len()
        );
    }
}

/// `compose build` of `spec` (in its own directory) into `store`, with the phase report
/// (`COMPOSE_TIMINGS=1`) and a fixed `SOURCE_DATE_EPOCH`: (entry, stderr).
fn timed_build(spec: &Path, store: &Path) -> (PathBuf, String) {
    timed_build_env(spec, store, &[])
}

/// [`timed_build`] with more environment variables.
fn timed_build_env(spec: &Path, store: &Path, env: &[(&str, &str)]) -> (PathBuf, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["build", spec.to_str().unwrap(), "--no-out-link"])
        .envs(env.iter().copied())
        .current_dir(spec.parent().unwrap())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", store)
        .env("COMPOSE_TIMINGS", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let entry = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    (entry, err)
}

/// A counter of the build's `timings:` line (0 when absent).
fn counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("timings: "))
        .unwrap_or_else(|| panic!("no timings line in {stderr}"));
    line.split([' ', ';'])
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .map_or(0, |v| v.parse().unwrap())
}

fn fetch(s: &Server, path: &str) -> Vec<u8> {
    let mut r = agent().get(&url(s, path)).call().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .unwrap()
}

#[test]
fn one_changed_file_rebuilds_the_block_image_and_an_unchanged_tree_is_not_repacked() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let site = d.path().join("a");
    let public = site.join("public");
    std::fs::create_dir_all(public.join("docs")).unwrap();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("index.html".into(), b"<h1>home</h1>\n".to_vec());
    files.insert(
        "docs/page.html".into(),
        "<p>a page that compresses</p>\n".repeat(3000).into_bytes(),
    );
    files.insert(
        "style.css".into(),
        "p { margin: 0 }\n".repeat(500).into_bytes(),
    );
    files.insert(
        "blob.bin".into(),
        (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    for (k, v) in &files {
        std::fs::write(public.join(k), v).unwrap();
    }
    let spec = |port: u16| {
        format!(
            "unikernel resite {{\n    target unix\n}}\nbootarg port type=u16 default={port}\n\
             netif service\nipv4 stack net=service address=\"127.0.0.1/8\"\ntcp\n\
             assets public dir=\"public\" backend=\"block\"\n\
             application site builtin=static-site assets=public port=(bootarg)\"port\"\n"
        )
    };
    let spec_path = site.join("resite.kdl");
    std::fs::write(&spec_path, spec(8080)).unwrap();
    // Files modified in the two seconds before a pack are read again whatever their
    // stamps say (racily clean): let the tree age past that.
    let written = std::time::SystemTime::now();
    while written.elapsed().unwrap() < Duration::from_millis(2100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let archive = site.join("_build/resite-unix/assets/public.car");
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };

    let (first, err) = timed_build(&spec_path, &store);
    assert_eq!(counter(&err, "archive-written"), 1, "{err}");
    let first_archive = stat(&archive);
    let first_image = std::fs::read(first.join("public.img")).unwrap();

    // Nothing changed: found in the store, nothing packed.
    let (again, err) = timed_build(&spec_path, &store);
    assert_eq!(again, first);
    assert!(err.contains("unchanged"), "{err}");
    assert!(!err.contains(" pack="), "an unchanged build packed: {err}");
    assert_eq!(stat(&archive), first_archive);

    // Only the unikernel changed (a boot argument's default): a new entry, but the
    // archive is the one already there, neither read nor rewritten.
    std::fs::write(&spec_path, spec(8081)).unwrap();
    let (code_only, err) = timed_build(&spec_path, &store);
    assert_ne!(code_only, first);
    assert_eq!(counter(&err, "archive-written"), 0, "{err}");
    assert_eq!(counter(&err, "files-read"), 0, "{err}");
    assert_eq!(stat(&archive), first_archive, "the archive was rewritten");
    assert!(std::fs::read(code_only.join("public.img")).unwrap() == first_image);

    // One file changed: only it is read, a new entry, and the old one intact.
    let changed = "<p>the page, edited</p>\n".repeat(2000).into_bytes();
    std::fs::write(public.join("docs/page.html"), &changed).unwrap();
    files.insert("docs/page.html".into(), changed);
    let (one, err) = timed_build(&spec_path, &store);
    assert_ne!(one, code_only);
    assert_eq!(counter(&err, "archive-written"), 1, "{err}");
    assert_eq!(counter(&err, "files-read"), 1, "{err}");
    assert_eq!(counter(&err, "files-reused"), 3, "{err}");
    assert!(std::fs::read(code_only.join("public.img")).unwrap() == first_image);
    for entry in [&first, &code_only, &one] {
        let v = Command::new(env!("CARGO_BIN_EXE_compose"))
            .args(["verify", "--no-trust"])
            .arg(entry)
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    }

    // The new image serves the edited page and every other file as it was; the old
    // image still serves the old page.
    let new = start(
        &one.join("resite"),
        &[format!(
            "--block:public={}",
            one.join("public.img").display()
        )],
    );
    for (k, v) in &files {
        assert!(fetch(&new, k) == *v, "{k}: served bytes differ");
    }
    drop(new);
    let old = start(
        &code_only.join("resite"),
        &[format!(
            "--block:public={}",
            code_only.join("public.img").display()
        )],
    );
    assert!(
        fetch(&old, "docs/page.html")
            == "<p>a page that compresses</p>\n".repeat(3000).into_bytes()
    );
    drop(old);

    // The same tree built from scratch elsewhere (no previous archive, an empty store):
    // the same entry, byte for byte (the image, the block image and the bundle). That
    // build leaves the bundle to `compose bundle`, as a build of block images of 256 MiB
    // or more does: it writes the very bytes the build would have.
    let elsewhere = d.path().join("b");
    std::fs::create_dir_all(elsewhere.join("public/docs")).unwrap();
    for (k, v) in &files {
        std::fs::write(elsewhere.join("public").join(k), v).unwrap();
    }
    std::fs::copy(&spec_path, elsewhere.join("resite.kdl")).unwrap();
    let spec_b = elsewhere.join("resite.kdl");
    let store2 = d.path().join("store2");
    let (fresh, err) = timed_build_env(&spec_b, &store2, &[("COMPOSE_DEFER_BUNDLE_FROM", "1")]);
    assert_eq!(counter(&err, "bundle-deferred"), 1, "{err}");
    assert_eq!(fresh.file_name(), one.file_name());
    assert!(!fresh.join("resite-unix.tar.zst").exists());
    for f in ["resite", "public.img", "manifest.json"] {
        assert!(
            std::fs::read(fresh.join(f)).unwrap() == std::fs::read(one.join(f)).unwrap(),
            "{f} differs between the incremental and the fresh build"
        );
    }
    let bundle = |entry: &Path, out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_compose"))
            .arg("bundle")
            .arg(entry)
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap()
    };
    let written = d.path().join("deferred.tar.zst");
    let o = bundle(&fresh, &written);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        written.to_str().unwrap()
    );
    assert!(
        std::fs::read(&written).unwrap() == std::fs::read(one.join("resite-unix.tar.zst")).unwrap(),
        "`compose bundle` differs from the bundle the build wrote"
    );
    let v = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["verify", "--no-trust"])
        .arg(&written)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // An entry altered since its build gives no bundle, and a clear message.
    let altered = d.path().join("altered");
    std::fs::create_dir_all(&altered).unwrap();
    for e in std::fs::read_dir(&fresh).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), altered.join(e.file_name())).unwrap();
    }
    let img = altered.join("public.img");
    let mut perms = std::fs::metadata(&img).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&img, perms).unwrap();
    let mut bytes = std::fs::read(&img).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&img, bytes).unwrap();
    let refused = d.path().join("refused.tar.zst");
    let o = bundle(&altered, &refused);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("public.img") && err.contains("no bundle written"),
        "{err}"
    );
    assert!(!refused.exists());
    assert!(
        std::fs::read_dir(d.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp"))
    );
    // A bad threshold is refused, and nothing is stored.
    let entries = |store: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let before = entries(&store2);
    std::fs::write(elsewhere.join("public/new.txt"), "new\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["build", spec_b.to_str().unwrap(), "--no-out-link"])
        .current_dir(&elsewhere)
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", &store2)
        .env("COMPOSE_DEFER_BUNDLE_FROM", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("COMPOSE_DEFER_BUNDLE_FROM") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(entries(&store2), before);
}

/// The bytes of a block image in the store: a plain file's, or what a layered image's
/// parts make.
fn image_bytes(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    compose_blockfile::BlockFile::open(path)
        .unwrap()
        .reader()
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn a_rebuild_stores_a_layered_image_that_serves_verifies_and_bundles_as_a_plain_one() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let site = d.path().join("a");
    let public = site.join("public");
    std::fs::create_dir_all(public.join("docs")).unwrap();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("index.html".into(), b"<h1>home</h1>\n".to_vec());
    files.insert(
        "docs/page.html".into(),
        "<p>a page that compresses</p>\n".repeat(3000).into_bytes(),
    );
    files.insert(
        "style.css".into(),
        "p { margin: 0 }\n".repeat(500).into_bytes(),
    );
    // Large and incompressible: a rebuild that wrote it again would show in the delta.
    let blob: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    files.insert("blob.bin".into(), blob.clone());
    for (k, v) in &files {
        std::fs::write(public.join(k), v).unwrap();
    }
    let spec_path = site.join("layered.kdl");
    std::fs::write(
        &spec_path,
        "unikernel layered {\n    target unix\n}\nbootarg port type=u16 default=8080\n\
         netif service\nipv4 stack net=service address=\"127.0.0.1/8\"\ntcp\n\
         assets public dir=\"public\" backend=\"block\"\n\
         application site builtin=static-site assets=public port=(bootarg)\"port\"\n",
    )
    .unwrap();
    // Past the racily-clean window, so that unchanged files are taken from their stamps.
    let written = std::time::SystemTime::now();
    while written.elapsed().unwrap() < Duration::from_millis(2100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let layered = [("COMPOSE_LAYERED_FROM", "0")];
    let (first, _) = timed_build_env(&spec_path, &store, &layered);
    assert!(!compose_blockfile::is_layered(&first.join("public.img")).unwrap());
    let first_bytes = image_bytes(&first.join("public.img"));

    let mut entries = vec![first.clone()];
    for (round, file) in ["docs/page.html", "style.css"].into_iter().enumerate() {
        let new = format!("<p>edit {round} of {file}</p>\n")
            .repeat(700 + round)
            .into_bytes();
        std::fs::write(public.join(file), &new).unwrap();
        files.insert(file.into(), new);
        // Past the racily-clean window again, so that the next round reads one file.
        let written = std::time::SystemTime::now();
        while written.elapsed().unwrap() < Duration::from_millis(2100) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (entry, err) = timed_build_env(&spec_path, &store, &layered);
        assert_eq!(counter(&err, "files-read"), 1, "{err}");
        let img = entry.join("public.img");
        assert!(
            compose_blockfile::is_layered(&img).unwrap(),
            "round {round}"
        );
        // Only the changed page, the index and the header were written: the new part
        // is much smaller than the blob, which is referenced, not copied.
        let layout = compose_blockfile::read_layout(&img).unwrap().unwrap();
        assert_eq!(layout.parts.len(), round + 2, "{layout:?}");
        let before: Vec<String> =
            compose_blockfile::read_layout(&entries[round].join("public.img"))
                .unwrap()
                .map_or(Vec::new(), |l| l.parts.into_iter().map(|p| p.0).collect());
        let new_parts: Vec<u64> = layout
            .parts
            .iter()
            .filter(|p| !before.contains(&p.0) && p.0.starts_with("d-"))
            .map(|p| p.1)
            .collect();
        assert_eq!(new_parts.len(), 1, "{layout:?}");
        assert!(
            new_parts[0] < blob.len() as u64 / 2,
            "a {}-byte new part",
            new_parts[0]
        );
        let v = Command::new(env!("CARGO_BIN_EXE_compose"))
            .args(["verify", "--no-trust"])
            .arg(&entry)
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        // Served from the parts (the block backend sends with sendfile from them).
        let server = start(
            &entry.join("layered"),
            &[format!("--block-ro:public={}", img.display())],
        );
        for (k, v) in &files {
            assert!(
                fetch(&server, k) == *v,
                "round {round}: {k}: served bytes differ"
            );
        }
        drop(server);
        entries.push(entry);
    }
    // The first entry is as it was, and still serves the first page.
    assert!(image_bytes(&first.join("public.img")) == first_bytes);
    let old = start(
        &first.join("layered"),
        &[format!(
            "--block-ro:public={}",
            first.join("public.img").display()
        )],
    );
    assert!(
        fetch(&old, "docs/page.html")
            == "<p>a page that compresses</p>\n".repeat(3000).into_bytes()
    );
    drop(old);

    // The same tree built plain from scratch: the same entry name, manifest, image bytes
    // and bundle.
    let last = entries.last().unwrap();
    let elsewhere = d.path().join("b");
    std::fs::create_dir_all(elsewhere.join("public/docs")).unwrap();
    for (k, v) in &files {
        std::fs::write(elsewhere.join("public").join(k), v).unwrap();
    }
    std::fs::copy(&spec_path, elsewhere.join("layered.kdl")).unwrap();
    let (fresh, _) = timed_build_env(
        &elsewhere.join("layered.kdl"),
        &d.path().join("store2"),
        &[("COMPOSE_LAYERED_FROM", "off")],
    );
    assert_eq!(fresh.file_name(), last.file_name());
    assert!(!compose_blockfile::is_layered(&fresh.join("public.img")).unwrap());
    assert!(image_bytes(&fresh.join("public.img")) == image_bytes(&last.join("public.img")));
    for f in ["manifest.json", "layered-unix.tar.zst"] {
        assert!(
            std::fs::read(fresh.join(f)).unwrap() == std::fs::read(last.join(f)).unwrap(),
            "{f} differs between the layered and the plain build"
        );
    }
    // `compose bundle` of the layered entry: the same bytes again.
    let bundled = d.path().join("again.tar.zst");
    let o = Command::new(env!("CARGO_BIN_EXE_compose"))
        .arg("bundle")
        .arg(last)
        .arg("-o")
        .arg(&bundled)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&bundled).unwrap()
            == std::fs::read(fresh.join("layered-unix.tar.zst")).unwrap()
    );
    // `--out` writes the block image as one plain file, for programs that need one.
    let out = d.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args([
            "build",
            spec_path.to_str().unwrap(),
            "--no-out-link",
            "--out",
        ])
        .arg(&out)
        .current_dir(&site)
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", &store)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!compose_blockfile::is_layered(&out.join("public.img")).unwrap());
    assert!(
        std::fs::read(out.join("public.img")).unwrap() == image_bytes(&fresh.join("public.img"))
    );
    // A layered image damaged in one of its parts fails verification.
    let copy = d.path().join("damaged");
    std::fs::create_dir_all(compose_blockfile::parts_dir(&copy.join("public.img"))).unwrap();
    for e in walk(last) {
        let rel = e.strip_prefix(last).unwrap();
        let to = copy.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&e, &to).unwrap();
    }
    let layout = compose_blockfile::read_layout(&copy.join("public.img"))
        .unwrap()
        .unwrap();
    let biggest = layout.parts.iter().max_by_key(|p| p.1).unwrap();
    let part = compose_blockfile::parts_dir(&copy.join("public.img")).join(&biggest.0);
    let mut perms = std::fs::metadata(&part).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&part, perms).unwrap();
    let mut bytes = std::fs::read(&part).unwrap();
    // Inside the blob, which every image since the first uses.
    let at = bytes
        .windows(64)
        .position(|w| w == &blob[1000..1064])
        .unwrap();
    bytes[at] ^= 1;
    std::fs::write(&part, bytes).unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(["verify", "--no-trust"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("public.img")
            || String::from_utf8_lossy(&v.stderr).contains("public.img")
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
