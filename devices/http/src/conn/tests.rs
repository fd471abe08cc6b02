//! Connections on scripted flows, run on the real executor (with the host as platform):
//! pipelining, bodies, slow and vanishing clients, timeouts and the connection counter.

use std::io::Read;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use core::cell::RefCell;
use core::time::Duration;

use compose_devices::kv::Kv;
use compose_devices::{sleep, spawn};
use proptest::prelude::*;

use super::{open_connections, serve_connection, serve_connection_with};
use crate::testing::*;
use crate::{SiteConfig, SiteError, serve_site};

fn quick() -> SiteConfig {
    SiteConfig {
        idle_timeout: Duration::from_millis(60),
        send_timeout: Duration::from_millis(60),
        ..SiteConfig::default()
    }
}

fn big() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 253) as u8).collect()
}

fn site() -> MemKv {
    MemKv::new(&[
        (
            "index.html",
            b"<!doctype html><p>home page of the test site</p>",
        ),
        ("style.css", b"p { color: red; } /* a comment */"),
        ("big.bin", &big()),
    ])
}

fn data(bytes: &[u8]) -> Step {
    Step::Data(bytes.to_vec())
}

/// Serves one scripted connection to completion; returns what was written to it.
fn serve<K: Kv>(kv: &K, flow: ScriptFlow, config: SiteConfig) -> (Vec<u8>, std::rc::Rc<Log>) {
    let log = flow.log.clone();
    block_on(async {
        serve_connection(flow, kv, &config).await;
        assert_eq!(open_connections(), 0);
    });
    assert!(log.dropped.get(), "the flow is released");
    let written = log.written.borrow().clone();
    (written, log)
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let kv = site();
    let requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n";
    let (flow, _) = ScriptFlow::new([data(requests), Step::Eof]);
    let (out, log) = serve(&kv, flow, quick());
    let responses = parse_responses(&out, &[false, true, false]);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 404]);
    assert_eq!(
        responses[0].body,
        b"<!doctype html><p>home page of the test site</p>"
    );
    assert_eq!(responses[1].header("content-length"), Some("33"));
    assert_eq!(responses[2].body, b"404 Not Found\n");
    assert!(log.closed.get());
}

#[test]
fn requests_split_into_single_bytes() {
    let kv = site();
    let request = b"GET /style.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n";
    let mut steps: Vec<Step> = request.iter().map(|b| data(&[*b])).collect();
    steps.push(Step::Eof);
    let (flow, _) = ScriptFlow::new(steps);
    let (out, _) = serve(&kv, flow, quick());
    let responses = parse_responses(&out, &[false]);
    assert_eq!(responses[0].status, 200);
    assert_eq!(responses[0].header("content-encoding"), Some("gzip"));
    assert_eq!(responses[0].body.len(), 33 / 3);
}

#[test]
fn large_values_are_streamed_through_reads() {
    let kv = site();
    let (flow, _) = ScriptFlow::new([
        data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=99990-\r\n\r\n"),
        Step::Eof,
    ]);
    let (out, _) = serve(&kv, flow, quick());
    let responses = parse_responses(&out, &[false, false]);
    assert_eq!(responses[0].body, big());
    assert_eq!(responses[1].status, 206);
    assert_eq!(responses[1].body, &big()[99_990..]);
}

#[test]
fn small_request_bodies_are_skipped() {
    let kv = site();
    let (flow, _) = ScriptFlow::new([
        data(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello"),
        data(b" worldGET /style.css HTTP/1.1\r\nHost: x\r\n\r\n"),
        data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        Step::Eof,
    ]);
    let (out, _) = serve(&kv, flow, quick());
    let statuses: Vec<u16> = parse_responses(&out, &[])
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 200, 405, 200]);
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_closed() {
    let kv = site();
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "b".repeat(17_000)
    );
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(65));
    for (request, status) in [
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET / HTTP/3.0\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/3\r\n\r\n".to_vec(), 400),
        (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (long.into_bytes(), 414),
        (huge_header.into_bytes(), 431),
        (many.into_bytes(), 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n".to_vec(),
            413,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            411,
        ),
    ] {
        // A valid request after the bad one must not be answered.
        let mut bytes = request;
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (flow, _) = ScriptFlow::new([Step::Data(bytes), Step::Eof]);
        let (out, log) = serve(&kv, flow, quick());
        let responses = parse_responses(&out, &[]);
        assert_eq!(responses.len(), 1, "{status}");
        assert_eq!(responses[0].status, status);
        assert_eq!(responses[0].header("connection"), Some("close"));
        assert!(log.closed.get());
    }
}

#[test]
fn idle_and_slow_clients_are_timed_out() {
    let kv = site();
    // Connects and says nothing.
    let (flow, _) = ScriptFlow::new([Step::Stall]);
    let started = std::time::Instant::now();
    let (out, log) = serve(&kv, flow, quick());
    assert!(out.is_empty());
    assert!(log.closed.get());
    assert!(started.elapsed() >= Duration::from_millis(60));
    // Keep-alive, then silence.
    let (flow, _) = ScriptFlow::new([data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Step::Stall]);
    let (out, _) = serve(&kv, flow, quick());
    assert_eq!(parse_responses(&out, &[]).len(), 1);
    // Half a request, then silence: 408.
    let (flow, _) = ScriptFlow::new([data(b"GET / HTTP/1.1\r\nHo"), Step::Stall]);
    let (out, _) = serve(&kv, flow, quick());
    assert_eq!(parse_responses(&out, &[])[0].status, 408);
    // A trickle of bytes does not extend the deadline (slowloris).
    let mut steps = vec![data(b"GET / HTTP/1.1\r\n")];
    for _ in 0..1000 {
        steps.push(Step::Delay(Duration::from_millis(10)));
        steps.push(data(b"X"));
    }
    let (flow, _) = ScriptFlow::new(steps);
    let started = std::time::Instant::now();
    let (out, _) = serve(&kv, flow, quick());
    assert_eq!(parse_responses(&out, &[])[0].status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn clients_that_vanish_release_everything() {
    let kv = site();
    let cases: Vec<Vec<Step>> = vec![
        vec![Step::Eof],
        vec![data(b"GET / HTTP/1.1\r\nHost"), Step::Eof],
        vec![data(b"GET / HTTP/1.1\r\nHost"), Step::Reset],
        vec![Step::Reset],
        vec![
            data(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"),
            Step::Eof,
        ],
        vec![
            data(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"),
            Step::Stall,
        ],
    ];
    for steps in cases {
        let (flow, _) = ScriptFlow::new(steps);
        let (out, _) = serve(&kv, flow, quick());
        assert!(out.is_empty());
    }
}

#[test]
fn a_client_that_stops_reading_mid_response_is_dropped() {
    let kv = site();
    let (mut flow, _) = ScriptFlow::new([
        data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"),
        Step::Stall,
    ]);
    flow.write_limit = 30_000;
    let (out, _) = serve(&kv, flow, quick());
    assert_eq!(out.len(), 30_000);
}

#[test]
fn embedded_values_are_sent_from_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let page = "<p>compose serves this page from its image.</p>\n".repeat(100);
    std::fs::write(dir.path().join("index.html"), &page).unwrap();
    std::fs::write(dir.path().join("big.bin"), big()).unwrap();
    let archive = dir.path().join("site.kv");
    let options = compose_assets::PackOptions {
        zstd_level: 3,
        ..Default::default()
    };
    compose_assets::pack(dir.path(), &options, &archive).unwrap();
    let bytes: &'static [u8] = Vec::leak(std::fs::read(&archive).unwrap());
    let kv = compose_assets::Embedded::new(bytes).unwrap();

    let (flow, _) = ScriptFlow::new([
        data(b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, zstd\r\n\r\n"),
        data(b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"),
        data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"),
        data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=-5\r\n\r\n"),
        data(b"GET /site.kv HTTP/1.1\r\nHost: x\r\n\r\n"),
        Step::Eof,
    ]);
    let (out, _) = serve(&kv, flow, quick());
    let r = parse_responses(&out, &[]);
    assert_eq!(r[0].header("content-encoding"), Some("zstd"));
    assert_eq!(
        zstd::stream::decode_all(&r[0].body[..]).unwrap(),
        page.as_bytes()
    );
    assert_eq!(r[1].header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&r[1].body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, page);
    assert_eq!(r[2].body, big());
    assert_eq!(
        r[2].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(r[3].body, &big()[big().len() - 5..]);
    assert_eq!(r[4].status, 404, "the archive does not contain itself");
}

#[test]
fn serve_site_listens_logs_and_serves_connections() {
    let kv = leak(site());
    let console = leak(MemConsole::default());
    let mut flows = Vec::new();
    let mut logs = Vec::new();
    for steps in [
        vec![data(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )],
        vec![Step::Stall],
        vec![
            data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"),
            Step::Reset,
        ],
        vec![data(b"\x00\x00\x00garbage\r\n\r\n")],
        vec![
            data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"),
            Step::Stall,
        ],
    ] {
        let (mut flow, log) = ScriptFlow::new(steps);
        flow.write_limit = 50_000;
        flows.push(flow);
        logs.push(log);
    }
    let tcp = leak(FakeTcp {
        flows: RefCell::new(Some(flows)),
    });
    let config = SiteConfig {
        max_connections: 2,
        ..quick()
    };
    let all_released = || logs.iter().all(|l| l.dropped.get());
    block_on(async {
        spawn(async move {
            let _ = serve_site(console, clock(), tcp, kv, 8080, config, "info").await;
        });
        // Until every scripted connection was served and released, never more than
        // max_connections are open at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !all_released() {
            assert!(open_connections() <= 2, "at most max_connections at once");
            assert!(
                std::time::Instant::now() < deadline,
                "connections were not all released in time"
            );
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(open_connections(), 0);
    });
    assert_eq!(
        String::from_utf8_lossy(&console.0.borrow()),
        "site: listening on port 8080\n"
    );
    for log in &logs {
        assert!(log.dropped.get(), "every connection was released");
    }
    let first = parse_responses(&logs[0].written.borrow(), &[]);
    assert_eq!(first[0].status, 200);
    assert!(logs[1].written.borrow().is_empty());
    assert_eq!(
        parse_responses(&logs[3].written.borrow(), &[])[0].status,
        400
    );
}

/// With the access log on, each response is one Common Log Format line, rejected and
/// timed-out requests included; every response has a `Date` from the wall clock.
#[test]
fn responses_are_dated_and_logged() {
    let kv = site();
    let console = MemConsole::default();
    let clock = crate::testing::FixedClock(971_186_136);
    let now = crate::SiteTime::new(&clock);
    let obs = crate::Observer::new(&now, &console, true);
    let script = |steps: Vec<Step>, head_only: &[bool]| {
        let (flow, log) = ScriptFlow::new(steps);
        block_on(serve_connection_with(flow, &kv, &quick(), &obs));
        parse_responses(&log.written.borrow(), head_only)
    };
    let r = script(
        vec![
            data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n"),
            data(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Step::Eof,
        ],
        &[false, true],
    );
    assert_eq!(r.len(), 4);
    for response in &r {
        assert_eq!(
            response.header("date"),
            Some("Tue, 10 Oct 2000 13:55:36 GMT")
        );
    }
    // Part of a request, then silence: 408.
    let r = script(vec![data(b"GET /style"), Step::Stall], &[]);
    assert_eq!(r[0].status, 408);
    let index_len = site()
        .entries
        .iter()
        .find(|e| e.key == "index.html")
        .unwrap()
        .data
        .len();
    assert_eq!(
        String::from_utf8_lossy(&console.0.borrow()),
        format!(
            "127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET / HTTP/1.1\" 200 {index_len}\n\
             127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"HEAD /style.css HTTP/1.1\" 200 -\n\
             127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /nothing HTTP/1.1\" 404 14\n\
             127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /a b HTTP/1.1\" 400 16\n\
             127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] \"GET /style\" 408 20\n"
        )
    );
    // Without an observer (the default), no Date and nothing logged.
    let (flow, log) = ScriptFlow::new([data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Step::Eof]);
    block_on(serve_connection(flow, &kv, &quick()));
    assert_eq!(
        parse_responses(&log.written.borrow(), &[])[0].header("date"),
        None
    );
}

/// `error` hides the listening line, `debug` adds a line per connection.
#[test]
fn the_log_level_chooses_the_messages() {
    for (level, expected) in [
        ("error", ""),
        ("warn", ""),
        ("info", "site: listening on port 8080\n"),
        (
            "debug",
            "site: listening on port 8080\nsite: connection from 127.0.0.1:40000 (1 open)\n",
        ),
    ] {
        let kv = leak(site());
        let console = leak(MemConsole::default());
        let (flow, log) = ScriptFlow::new([data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Step::Eof]);
        let tcp = leak(FakeTcp {
            flows: RefCell::new(Some(vec![flow])),
        });
        block_on(async {
            spawn(async move {
                let _ = serve_site(console, clock(), tcp, kv, 8080, quick(), level).await;
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !log.dropped.get() {
                assert!(std::time::Instant::now() < deadline, "not served in time");
                sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(
            String::from_utf8_lossy(&console.0.borrow()),
            expected,
            "{level}"
        );
    }
}

#[test]
fn an_unknown_log_level_stops_the_site_with_a_message() {
    let kv = leak(site());
    let console = leak(MemConsole::default());
    let tcp = leak(FakeTcp {
        flows: RefCell::new(Some(Vec::new())),
    });
    let result = block_on(serve_site(console, clock(), tcp, kv, 80, quick(), "loud"));
    assert!(matches!(result, Err(SiteError::LogLevel(_))), "{result:?}");
    assert_eq!(
        String::from_utf8_lossy(&console.0.borrow()),
        "site: unknown log level \"loud\" (expected error, warn, info or debug)\n"
    );
}

/// Runs `serve_site` with `max_connections: 2` on scripted flows until `done` holds for
/// their logs (within 10 s); returns the logs, and which flows had been released then
/// (the executor drops the rest when it ends).
fn site_with_two_slots(
    flows: Vec<ScriptFlow>,
    config: SiteConfig,
    done: impl Fn(&[std::rc::Rc<Log>]) -> bool,
) -> (Vec<std::rc::Rc<Log>>, Vec<bool>) {
    let kv = leak(site());
    let console = leak(MemConsole::default());
    let logs: Vec<_> = flows.iter().map(|f| f.log.clone()).collect();
    let tcp = leak(FakeTcp {
        flows: RefCell::new(Some(flows)),
    });
    let config = SiteConfig {
        max_connections: 2,
        ..config
    };
    let watched = logs.clone();
    let released = block_on(async move {
        spawn(async move {
            let _ = serve_site(console, clock(), tcp, kv, 8080, config, "info").await;
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done(&watched) {
            assert!(std::time::Instant::now() < deadline, "timed out");
            sleep(Duration::from_millis(1)).await;
        }
        watched.iter().map(|l| l.dropped.get()).collect()
    });
    (logs, released)
}

#[test]
fn at_the_limit_the_oldest_idle_connection_makes_room() {
    let config = SiteConfig {
        idle_timeout: Duration::from_secs(30),
        ..quick()
    };
    let flows = vec![
        ScriptFlow::new([Step::Stall]).0,
        ScriptFlow::new([Step::Stall]).0,
        ScriptFlow::new([data(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )])
        .0,
    ];
    let (logs, released) = site_with_two_slots(flows, config, |l| l[2].dropped.get());
    // The newest client was served long before the idle timeout...
    assert_eq!(
        parse_responses(&logs[2].written.borrow(), &[])[0].status,
        200
    );
    // ... because the oldest idle connection was closed, and only that one.
    assert!(released[0], "the oldest idle connection was closed");
    assert!(logs[0].written.borrow().is_empty());
    assert!(!released[1], "the younger idle connection is kept");
}

#[test]
fn at_the_limit_with_every_connection_busy_a_client_gets_503() {
    let config = SiteConfig {
        idle_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(30),
        ..quick()
    };
    let busy = || {
        let (mut f, _) = ScriptFlow::new([
            data(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n"),
            Step::Stall,
        ]);
        // The client stops reading mid-response: the connection stays busy.
        f.write_limit = 50_000;
        f
    };
    let flows = vec![
        busy(),
        busy(),
        ScriptFlow::new([data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")]).0,
    ];
    let started = std::time::Instant::now();
    let (logs, released) = site_with_two_slots(flows, config, |l| l[2].dropped.get());
    assert!(
        started.elapsed() >= crate::BUSY_WAIT,
        "waited for a slot first"
    );
    assert_eq!(
        parse_responses(&logs[2].written.borrow(), &[])[0].status,
        503
    );
    assert!(
        !released[0] && !released[1],
        "the busy connections are kept"
    );
}

#[test]
fn the_connection_limit_follows_memory() {
    use crate::connection_limit;
    assert_eq!(connection_limit(64 << 20, None), 307);
    assert_eq!(connection_limit(256 << 20, None), 1536);
    assert_eq!(connection_limit(2 << 20, None), crate::MIN_CONNECTIONS);
    assert_eq!(connection_limit(64 << 20, Some(5000)), 5000);
    assert_eq!(SiteConfig::default().max_connections, 307);
}

#[test]
fn listening_failure_is_returned() {
    let kv = leak(site());
    let console = leak(MemConsole::default());
    let tcp = leak(FakeTcp {
        flows: RefCell::new(None),
    });
    let result = block_on(serve_site(console, clock(), tcp, kv, 80, quick(), "info"));
    assert_eq!(
        result,
        Err(SiteError::Listen {
            address: None,
            port: 80,
            error: compose_devices::net::NetError::AddrInUse
        })
    );
    assert_eq!(
        String::from_utf8_lossy(&console.0.borrow()),
        "site: cannot listen on port 80: address in use\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever arrives, in whatever pieces, the connection ends and releases everything.
    #[test]
    fn arbitrary_input_never_panics_or_leaks(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                Just(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
                Just(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"Accept-Encoding: zstd;q=0.5, gzip\r\nIf-None-Match: W/\"x\", *\r\n".to_vec()),
            ],
            0..8,
        ),
        end in prop_oneof![Just(Step::Eof), Just(Step::Stall), Just(Step::Reset)],
        write_limit in prop_oneof![Just(usize::MAX), 0usize..5000],
    ) {
        let kv = site();
        let mut steps: Vec<Step> = chunks.into_iter().map(Step::Data).collect();
        steps.push(end);
        let (mut flow, log) = ScriptFlow::new(steps);
        flow.write_limit = write_limit;
        let config = SiteConfig { idle_timeout: Duration::from_millis(5), send_timeout: Duration::from_millis(5), ..SiteConfig::default() };
        // Read the counter before the executor lock is released to other tests.
        let open = block_on(async {
            serve_connection(flow, &kv, &config).await;
            open_connections()
        });
        prop_assert_eq!(open, 0);
        prop_assert!(log.dropped.get());
    }
}
