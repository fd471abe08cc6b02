//! End to end on the unix platform: the site server on real loopback sockets, queried by a
//! real HTTP client (ureq) and by raw sockets for what no polite client sends.
//!
//! One server process-wide: a thread runs `compose_unix::run` with two sites, the same
//! archive through the `embed` backend and through the `block` backend (on an in-memory
//! block device). Tests take turns (a lock), so that each can check that every connection
//! it opened was released.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use compose_assets::{Embedded, OnBlock, PackOptions, pack};
use compose_devices::block::{Block, BlockError, BlockInfo};
use compose_devices::console::Console;
use compose_devices::leak;
use compose_http::{SiteConfig, open_connections, serve_site};
use compose_unix::{Ipv4, Ipv4Config, Netif, Tcp};

const IDLE: Duration = Duration::from_millis(500);
const BIG: usize = 16 << 20;

struct Server {
    /// Ports of the embed and block sites.
    ports: [u16; 2],
    files: Vec<(&'static str, Vec<u8>)>,
}

/// Noise that does not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as u8
        })
        .collect()
}

fn site_files() -> Vec<(&'static str, Vec<u8>)> {
    let page = |title: &str| {
        format!(
            "<!doctype html><html><head><title>{title}</title><link rel=stylesheet href=/style.css></head>\n<body>{}</body></html>\n",
            "<p>compose turns a spec into a unikernel; this page is served from it.</p>\n".repeat(20)
        )
        .into_bytes()
    };
    vec![
        ("index.html", page("home")),
        ("docs/index.html", page("docs")),
        ("docs/guide.html", page("guide")),
        (
            "style.css",
            "body { font-family: sans-serif; margin: 0 auto; max-width: 42em; }\n"
                .repeat(10)
                .into_bytes(),
        ),
        ("big.bin", noise(BIG)),
    ]
}

/// A read-only block device over bytes in memory.
struct MemBlock(&'static [u8]);

impl Block for MemBlock {
    fn info(&self) -> BlockInfo {
        let mut info = BlockInfo::new(512, self.0.len() as u64 / 512);
        info.read_only = true;
        info
    }
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        let start = sector as usize * 512;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    async fn write(&self, _: u64, _: &[u8]) -> Result<(), BlockError> {
        Err(BlockError::ReadOnly)
    }
}

/// A console that reports the ports servers say they listen on.
struct PortConsole {
    line: RefCell<Vec<u8>>,
    ports: mpsc::Sender<u16>,
    /// How many listening lines it has seen.
    listening: Cell<usize>,
}

impl Console for PortConsole {
    fn write(&self, bytes: &[u8]) {
        let mut line = self.line.borrow_mut();
        for &b in bytes {
            if b != b'\n' {
                line.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let port = text
                .strip_prefix("site: listening on port ")
                .and_then(|p| p.parse().ok());
            let _ = self.ports.send(port.expect("the listening line"));
            self.listening.set(self.listening.get() + 1);
        }
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let files = site_files();
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in &files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }
        let archive = dir.path().join("site.kv");
        let options = PackOptions {
            zstd_level: 3,
            exclude: vec!["site.kv".into()],
            ..PackOptions::default()
        };
        pack(dir.path(), &options, &archive).unwrap();
        let bytes: &'static [u8] = Vec::leak(std::fs::read(&archive).unwrap());

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            compose_unix::run(async move {
                let netif = leak(Netif::new("service").unwrap());
                let config = Ipv4Config {
                    address: Some("127.0.0.1/8".parse().unwrap()),
                    gateway: None,
                    dhcp: false,
                };
                let stack = leak(Ipv4::new(netif, config).unwrap());
                let tcp = leak(Tcp::new(stack).unwrap());
                let console = leak(PortConsole {
                    line: RefCell::new(Vec::new()),
                    ports: tx,
                    listening: Cell::new(0),
                });
                let site = SiteConfig {
                    idle_timeout: IDLE,
                    send_timeout: IDLE,
                    ..SiteConfig::default()
                };

                let clock = leak(compose_unix::WallClock::new().unwrap());
                let embedded = leak(Embedded::new(bytes).unwrap());
                let on_block = leak(OnBlock::open(leak(MemBlock(bytes)), 1 << 20).await.unwrap());
                compose_devices::spawn(async move {
                    serve_site(console, clock, tcp, embedded, 0, site, "info")
                        .await
                        .unwrap();
                });
                // Wait for the first to listen so that the ports come in order.
                let deadline = Instant::now() + Duration::from_secs(10);
                while console.listening.get() == 0 {
                    assert!(Instant::now() < deadline, "the first site never listened");
                    compose_devices::sleep(Duration::from_millis(1)).await;
                }
                serve_site(console, clock, tcp, on_block, 0, site, "info")
                    .await
                    .unwrap();
            })
        });
        let ports = [rx.recv().unwrap(), rx.recv().unwrap()];
        Server { ports, files }
    })
}

/// Tests take turns, so that connection counts are their own.
fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// Waits until the server has released every connection.
fn wait_for_no_connections() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_connections() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} connections still open",
            open_connections()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `request` on a fresh connection and reads until the server closes it.
fn raw(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn file<'a>(server: &'a Server, name: &str) -> &'a [u8] {
    &server.files.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn serves_files_to_a_real_client() {
    let server = server();
    let _turn = turn();
    let agent = agent();
    for port in server.ports {
        let mut r = agent.get(url(port, "/")).call().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(
            r.body_mut().read_to_vec().unwrap(),
            file(server, "index.html")
        );

        let mut r = agent.get(url(port, "/docs/")).call().unwrap();
        assert_eq!(
            r.body_mut().read_to_vec().unwrap(),
            file(server, "docs/index.html")
        );
        let r = agent.get(url(port, "/docs")).call().unwrap();
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()["location"], "/docs/");
        let mut r = agent.get(url(port, "/nope.html")).call().unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.body_mut().read_to_string().unwrap(), "404 Not Found\n");

        let mut r = agent.get(url(port, "/big.bin")).call().unwrap();
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        let body = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        assert!(body == file(server, "big.bin"), "big.bin differs");

        let r = agent.head(url(port, "/big.bin")).call().unwrap();
        assert_eq!(r.headers()["content-length"], BIG.to_string());

        let mut r = agent
            .get(url(port, "/style.css"))
            .header("Accept-Encoding", "gzip")
            .call()
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let mut css = Vec::new();
        flate2::read::GzDecoder::new(&r.body_mut().read_to_vec().unwrap()[..])
            .read_to_end(&mut css)
            .unwrap();
        assert_eq!(css, file(server, "style.css"));

        let mut r = agent
            .get(url(port, "/docs/guide.html"))
            .header("Accept-Encoding", "gzip, zstd")
            .call()
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "zstd");
        let zstd = r.body_mut().read_to_vec().unwrap();
        assert_eq!(
            zstd::stream::decode_all(&zstd[..]).unwrap(),
            file(server, "docs/guide.html")
        );
    }
    wait_for_no_connections();
}

#[test]
fn conditional_and_range_requests() {
    let server = server();
    let _turn = turn();
    let agent = agent();
    for port in server.ports {
        let r = agent.get(url(port, "/index.html")).call().unwrap();
        let tag = r.headers()["etag"].to_str().unwrap().to_string();
        let r = agent
            .get(url(port, "/index.html"))
            .header("If-None-Match", &tag)
            .call()
            .unwrap();
        assert_eq!(r.status(), 304);

        let mut r = agent
            .get(url(port, "/big.bin"))
            .header("Range", "bytes=1000000-1000099")
            .call()
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes 1000000-1000099/{BIG}")
        );
        assert_eq!(
            r.body_mut().read_to_vec().unwrap(),
            &file(server, "big.bin")[1_000_000..1_000_100]
        );
        let mut r = agent
            .get(url(port, "/index.html"))
            .header("Range", "bytes=-10")
            .header("Accept-Encoding", "zstd")
            .call()
            .unwrap();
        assert_eq!(r.headers().get("content-encoding"), None);
        let index = file(server, "index.html");
        assert_eq!(
            r.body_mut().read_to_vec().unwrap(),
            &index[index.len() - 10..]
        );
        let r = agent
            .get(url(port, "/index.html"))
            .header("Range", "bytes=999999-")
            .call()
            .unwrap();
        assert_eq!(r.status(), 416);
    }
    wait_for_no_connections();
}

/// Reads one response (head and `Content-Length` body) from a kept-alive connection.
fn read_response(s: &mut TcpStream, head_only: bool) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed mid-head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

#[test]
fn keep_alive_and_pipelining_on_one_connection() {
    let server = server();
    let _turn = turn();
    for port in server.ports {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..3 {
            s.write_all(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let (head, body) = read_response(&mut s, false);
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert_eq!(body, file(server, "style.css"));
        }
        s.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /docs/guide.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut s, true);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        let (head, body) = read_response(&mut s, false);
        assert!(head.contains("Connection: close\r\n"));
        assert_eq!(body, file(server, "docs/guide.html"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed after Connection: close");
    }
    wait_for_no_connections();
}

#[test]
fn malformed_requests_get_errors_and_a_close() {
    let server = server();
    let _turn = turn();
    for port in server.ports {
        let cases: [(&[u8], &str); 7] = [
            (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 "),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", "HTTP/1.1 400 "),
            (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", "HTTP/1.1 413 "),
            (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 405 "),
            (b"GET / HTTP/2.0\r\n\r\n", "HTTP/1.1 505 "),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\nX: y\r\n\r\n", "HTTP/1.1 431 "),
        ];
        for (request, status) in cases {
            let response = raw(port, request);
            let text = String::from_utf8_lossy(&response);
            assert!(text.starts_with(status), "{status}: {text}");
        }
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
        assert!(raw(port, long.as_bytes()).starts_with(b"HTTP/1.1 414 "));
        // A 405 with a small body keeps the connection: the next request is answered.
        let two = raw(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbodyGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let text = String::from_utf8_lossy(&two);
        assert!(
            text.starts_with("HTTP/1.1 405 ") && text.contains("HTTP/1.1 404 "),
            "{text}"
        );
    }
    wait_for_no_connections();
}

#[test]
fn abandoned_and_idle_connections_are_released() {
    let server = server();
    let _turn = turn();
    for port in server.ports {
        // Connect and leave.
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
        // Leave mid-request.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /index.html HTTP/1.1\r\nHo").unwrap();
        drop(s);
        // Half-close mid-request.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /index.html HTTP/1.1\r\nHo").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        drop(s);
        // Leave mid-response.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut some = [0u8; 4096];
        s.read_exact(&mut some).unwrap();
        drop(s);
        wait_for_no_connections();

        // Say nothing: the server closes after the idle timeout.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(
            started.elapsed() >= IDLE - Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );

        // Ask for 16 MiB and never read: the server gives up sending and lets go, while
        // the client still holds its socket.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // The server has taken the connection once the response starts to arrive.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(s.peek(&mut [0u8; 1]).unwrap(), 1);
        wait_for_no_connections();
        drop(s);
    }
}
