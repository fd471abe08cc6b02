//! The monitoring device, used as an operator would: specs/site-monitored.kdl serves the
//! site on one address and /metrics and /logs on another; curl-like requests move the
//! counters; a real Prometheus (Debian's `prometheus`) scrapes the endpoint and its HTTP API
//! returns the connection counter; the InfluxDB push is received by a real InfluxDB
//! (Debian's `influxdb`, 1.6) and the values read back match; log levels change at run
//! time. On spt the two stacks sit on two taps of one network namespace.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
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

fn compose() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_compose"));
    c.current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"));
    c
}

/// The console of a running unikernel, read by a thread: every line so far, and a way to
/// wait for one.
#[derive(Clone, Default)]
struct Console(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Console {
    fn read(out: impl Read + Send + 'static) -> Console {
        let console = Console::default();
        let c = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let (lines, cv) = &*c.0;
                lines.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        console
    }

    /// The first line after the first `skip` that contains `what`, waiting up to 30 s.
    fn wait_for(&self, skip: usize, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (lines, cv) = &*self.0;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().skip(skip).find(|l| l.contains(what)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the unikernel never said {what:?}; it said:\n{}",
                guard.join("\n")
            );
            guard = cv.wait_timeout(guard, left).unwrap().0;
        }
    }

    fn len(&self) -> usize {
        self.0.0.lock().unwrap().len()
    }

    fn since(&self, skip: usize) -> Vec<String> {
        self.0.0.lock().unwrap()[skip..].to_vec()
    }
}

/// The port at the end of a line such as `site: listening on port 8080`.
fn port_of(line: &str) -> u16 {
    line.rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A plain HTTP/1.1 request: `(status, body)`.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The samples of a Prometheus text exposition, by name with labels.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(addr, "GET", "/metrics", "", "");
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 200 ms until it returns `Some`, for up to `secs`.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET on a local HTTP API: the body if 200.
fn get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    (r.status() == 200).then(|| r.body_mut().read_to_string().ok())?
}

/// Debian's InfluxDB 1.x, started on 127.0.0.1 with a config in `dir`, with a database
/// `compose` made.
struct Influx {
    _child: KillOnDrop,
    port: u16,
}

impl Influx {
    fn start(dir: &Path) -> Influx {
        let port = free_port();
        let rpc = free_port();
        let d = dir.display();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        std::fs::write(dir.join("influxdb.conf"), config).unwrap();
        let child = Command::new("influxd")
            .arg("-config")
            .arg(dir.join("influxdb.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("influxd.log")).unwrap())
            .spawn()
            .expect("influxd (Debian's influxdb package; .ci/run installs it)");
        let influx = Influx {
            _child: KillOnDrop(child),
            port,
        };
        eventually(60, "influxd to answer /ping", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        eventually(30, "CREATE DATABASE compose", || {
            agent
                .post(&format!("http://127.0.0.1:{port}/query"))
                .content_type("application/x-www-form-urlencoded")
                .send("q=CREATE+DATABASE+compose")
                .ok()
        });
        influx
    }

    /// The last values of `fields` of `measurement` pushed by unikernel `site`.
    fn last(&self, measurement: &str, fields: &[&str]) -> Option<Vec<f64>> {
        let select = fields
            .iter()
            .map(|f| format!("last(\"{f}\")"))
            .collect::<Vec<_>>()
            .join(",");
        let q = format!("SELECT {select} FROM \"{measurement}\" WHERE \"unikernel\" = 'site'");
        let url = format!(
            "http://127.0.0.1:{}/query?db=compose&q={}",
            self.port,
            q.bytes()
                .map(|b| if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        let body = get(&url)?;
        // {"results":[{"statement_id":0,"series":[{"name":..,"columns":["time",..],"values":[["..",3,..]]}]}]}
        let values = body.split("\"values\":[[").nth(1)?;
        let row = values.split("]]").next()?;
        let mut cells = row.split(',');
        cells.next()?; // the time
        let v: Vec<f64> = cells
            .map(|c| c.trim().parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == fields.len()).then_some(v)
    }
}

#[test]
fn unix_site_and_monitoring_on_two_addresses_with_prometheus_and_influxdb() {
    let out = root().join("target/e2e-out/site-monitored");
    let o = compose()
        .args(["build", "specs/site-monitored.kdl", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tmp = tempfile::tempdir().unwrap();
    let influx = Influx::start(tmp.path());

    let mut child = KillOnDrop(
        Command::new(out.join("site"))
            .args([
                "--port=0",
                "--mgmt-port=0",
                "--logs=stack:debug",
                &format!("--influx=127.0.0.1:{}", influx.port),
                "--influx-interval=1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let console = Console::read(child.stdout.take().unwrap());
    let mport = port_of(&console.wait_for(0, "monitoring: serving /metrics"));
    let sport = port_of(&console.wait_for(0, "site: listening on port"));
    let site: SocketAddr = format!("127.0.0.1:{sport}").parse().unwrap();
    let mgmt: SocketAddr = format!("127.0.0.2:{mport}").parse().unwrap();

    // Each address serves only its own port.
    assert!(refused(format!("127.0.0.2:{sport}").parse().unwrap()));
    assert!(refused(format!("127.0.0.1:{mport}").parse().unwrap()));

    // --logs=stack:debug at boot: the stack says when a connection opens; the site's own
    // level (info) shows no connection.
    let before = metrics(mgmt);
    let seen = console.len();
    let (status, page) = http(site, "GET", "/", "", "");
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    assert_eq!(http(site, "GET", "/no/such/page", "", "").0, 404);
    console.wait_for(seen, "stack: connection with 127.0.0.1");
    let after = metrics(mgmt);
    let d = |k: &str| after[k] - before[k];
    assert_eq!(d("http_responses_total{status=\"2xx\"}"), 1.0, "{after:?}");
    assert_eq!(d("http_responses_total{status=\"4xx\"}"), 1.0);
    // Two site connections and the first /metrics connection, at least.
    assert!(
        d("tcp_connections_opened_total") >= 3.0,
        "{before:?} {after:?}"
    );
    assert!(d("tcp_connections_closed_total") >= 2.0);
    assert!(d("tcp_received_bytes_total") >= 60.0);
    assert!(d("tcp_sent_bytes_total") >= page.len() as f64);
    let (in_use, peak) = (after["heap_in_use_bytes"], after["heap_peak_bytes"]);
    assert!(in_use > 0.0 && in_use <= peak, "heap {in_use} peak {peak}");
    assert!(after["uptime_seconds"] > before["uptime_seconds"]);
    assert!(
        !console
            .since(seen)
            .iter()
            .any(|l| l.contains("site: connection from")),
        "the site logs connections at info"
    );

    // OpenMetrics when asked, with its Content-Type and # EOF.
    let (status, om) = http(
        mgmt,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n",
        "",
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE tcp_connections_opened counter\n"));

    // Log levels at run time: http:debug shows the next connection; garbage is refused and
    // changes nothing.
    let (status, levels) = http(mgmt, "PUT", "/logs", "", "http:debug");
    assert_eq!(status, 200, "{levels}");
    assert!(
        levels.contains("http:debug") && levels.contains("stack:debug"),
        "{levels}"
    );
    let seen = console.len();
    assert_eq!(http(site, "GET", "/", "", "").0, 200);
    console.wait_for(seen, "site: connection from 127.0.0.1");
    let (status, why) = http(mgmt, "PUT", "/logs", "", "http:warn,stack:loud");
    assert_eq!(status, 400);
    assert!(why.contains("unknown log level \"loud\""), "{why}");
    let (status, why) = http(mgmt, "POST", "/logs", "", "disk:debug");
    assert_eq!(status, 400);
    assert!(why.contains("unknown log source \"disk\""), "{why}");
    let (_, levels) = http(mgmt, "GET", "/logs", "", "");
    assert_eq!(levels, "stack:debug,http:debug,tls:info,monitoring:info\n");
    let (status, levels) = http(mgmt, "PUT", "/logs", "", "stack:info,http:info");
    assert_eq!(status, 200, "{levels}");

    // The endpoint is no new way to take the unikernel down: an oversized head is refused,
    // silent clients hold at most its 8 slots (the site goes on serving), and once they go
    // the endpoint answers again.
    let big = format!("X-Big: {}\r\n", "a".repeat(8192));
    assert_eq!(http(mgmt, "GET", "/metrics", &big, "").0, 431);
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect_timeout(&mgmt, Duration::from_secs(20)).unwrap())
        .collect();
    assert_eq!(http(site, "GET", "/", "", "").0, 200);
    drop(silent);
    eventually(
        30,
        "the endpoint to answer after the silent clients",
        || {
            let mut c = TcpStream::connect_timeout(&mgmt, Duration::from_secs(5)).ok()?;
            c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            c.write_all(b"GET /logs HTTP/1.1\r\n\r\n").ok()?;
            let mut answer = String::new();
            c.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        },
    );

    // The site's responses stay where they are now (only the site counts them): the
    // values InfluxDB receives and Prometheus scrapes must come to exactly these.
    let now = metrics(mgmt);
    let ok = now["http_responses_total{status=\"2xx\"}"];
    let missing = now["http_responses_total{status=\"4xx\"}"];

    // InfluxDB: the pushed line protocol, read back through its query API.
    let pushed = eventually(60, "InfluxDB to hold the pushed responses", || {
        let v = influx.last("http_responses", &["status_2xx", "status_4xx"])?;
        (v == [ok, missing]).then_some(v)
    });
    assert_eq!(pushed, [ok, missing]);
    let opened = eventually(30, "InfluxDB to hold tcp_connections_opened", || {
        influx.last("tcp_connections_opened", &["value"])
    })[0];
    assert!(opened >= now["tcp_connections_opened_total"] - 1.0 && opened > 3.0);
    let heap = eventually(30, "InfluxDB to hold heap_peak_bytes", || {
        influx.last("heap_peak_bytes", &["value"])
    })[0];
    assert!(heap > 0.0);

    // Prometheus scrapes the management address every second.
    let pport = free_port();
    let pdir = tmp.path().join("prometheus");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: compose\n    static_configs:\n      - targets: ['{mgmt}']\n"
        ),
    )
    .unwrap();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                pdir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                pdir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(pdir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's prometheus package; .ci/run installs it)"),
    );
    let api = |q: &str| {
        get(&format!(
            "http://127.0.0.1:{pport}/api/v1/query?query={}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
        ))
    };
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[1700000000.1,"12"]}]}}
    let value = |body: &str| -> Option<f64> {
        let v = body.split("\"value\":[").nth(1)?;
        v.split('"').nth(1)?.parse().ok()
    };
    let scraped = eventually(
        90,
        "Prometheus to return tcp_connections_opened_total",
        || value(&api("tcp_connections_opened_total")?),
    );
    assert!(scraped >= now["tcp_connections_opened_total"], "{scraped}");
    let by_status = eventually(30, "Prometheus to return http_responses_total", || {
        value(&api("http_responses_total{status=\"2xx\"}")?)
    });
    assert_eq!(by_status, ok);
    // The scrapes come from Prometheus on 127.0.0.1 to 127.0.0.2: the unikernel is still
    // serving both.
    assert_eq!(http(site, "GET", "/", "", "").0, 200);
    assert!(metrics(mgmt)["tcp_connections_opened_total"] > scraped);
}

#[test]
fn bad_settings_stop_it_at_start_and_a_dead_collector_blocks_nothing() {
    let out = root().join("target/e2e-out/site-monitored-bad");
    let o = compose()
        .args(["build", "specs/site-monitored.kdl", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (arg, says) in [
        ("--logs=http:loud", "unknown log level \"loud\""),
        ("--influx=somewhere", "is not an IPv4 address and port"),
    ] {
        let o = Command::new(out.join("site"))
            .args(["--port=0", "--mgmt-port=0", arg])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{arg}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("device 'monitoring' failed to start") && err.contains(says),
            "{arg}: {err}"
        );
    }

    // A collector that hangs up without answering: the failure is logged once (not every
    // second), the push goes on trying, and the endpoint and the site go on serving.
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = collector.local_addr().unwrap().port();
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Arc::clone(&tries);
    std::thread::spawn(move || {
        for c in collector.incoming() {
            drop(c);
            t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut child = KillOnDrop(
        Command::new(out.join("site"))
            .args(["--port=0", "--mgmt-port=0", "--influx-interval=1"])
            .arg(format!("--influx=127.0.0.1:{dead}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let console = Console::read(child.stdout.take().unwrap());
    let mport = port_of(&console.wait_for(0, "monitoring: serving /metrics"));
    let sport = port_of(&console.wait_for(0, "site: listening on port"));
    let failed = console.wait_for(0, "monitoring: pushing metrics to");
    assert!(
        failed.contains(&format!("127.0.0.1:{dead} failed")),
        "{failed}"
    );
    let mgmt: SocketAddr = format!("127.0.0.2:{mport}").parse().unwrap();
    let site: SocketAddr = format!("127.0.0.1:{sport}").parse().unwrap();
    let first = tries.load(std::sync::atomic::Ordering::SeqCst);
    eventually(30, "three more pushes", || {
        (tries.load(std::sync::atomic::Ordering::SeqCst) >= first + 3).then_some(())
    });
    assert_eq!(metrics(mgmt)["http_responses_total{status=\"2xx\"}"], 0.0);
    assert_eq!(http(site, "GET", "/", "", "").0, 200);
    let lines = console.since(0);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("pushing metrics"))
            .count(),
        1,
        "{lines:?}"
    );
}

#[test]
fn spt_site_and_monitoring_on_two_taps() {
    two_taps("spt", 51);
}

#[test]
fn hvt_site_and_monitoring_on_two_taps() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    two_taps("hvt", 53);
}

/// The site on tap0 (`10.77.SUBNET.2`), monitoring on tap1 (`10.77.SUBNET+1.2`).
fn two_taps(target: &str, subnet: u8) {
    let Some(ns) = Netns::new("compose-mon", subnet) else {
        eprintln!("\n*** SKIPPED: network namespaces need root ***\n");
        return;
    };
    ns.add_tap("tap1", subnet + 1);
    let site_ip = ns.guest();
    let mgmt_ip = format!("10.77.{}.2", subnet + 1);
    let client = format!("stack: connection with 10.77.{subnet}.1");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_compose")])
        .args([
            "run",
            "specs/site-monitored.kdl",
            "--no-out-link",
            "--target",
            target,
            "--net",
            "service=tap0",
            "--net",
            "management=tap1",
            "--",
        ])
        .arg(format!("--ipv4={site_ip}/24"))
        .arg(format!("--mgmt-ipv4={mgmt_ip}/24"))
        .args(["--port=80", "--mgmt-port=9090"])
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let console = Console::read(child.stdout.take().unwrap());
    console.wait_for(0, "site: listening on port 80");
    console.wait_for(0, "monitoring: serving /metrics and /logs on port 9090");
    let site: SocketAddr = format!("{site_ip}:80").parse().unwrap();
    let mgmt: SocketAddr = format!("{mgmt_ip}:9090").parse().unwrap();
    let c = console.clone();
    ns.inside(move || {
        let before = metrics(mgmt);
        assert_eq!(http(site, "GET", "/", "", "").0, 200);
        assert_eq!(http(site, "GET", "/nope", "", "").0, 404);
        let after = metrics(mgmt);
        let d = |k: &str| after[k] - before[k];
        assert_eq!(d("http_responses_total{status=\"2xx\"}"), 1.0, "{after:?}");
        assert_eq!(d("http_responses_total{status=\"4xx\"}"), 1.0);
        assert!(d("tcp_connections_opened_total") >= 3.0);
        assert!(d("tcp_sent_bytes_total") > 0.0 && d("tcp_received_bytes_total") > 0.0);
        let (in_use, peak, size) = (
            after["heap_in_use_bytes"],
            after["heap_peak_bytes"],
            after["heap_size_bytes"],
        );
        assert!(
            in_use > 0.0 && in_use <= peak && peak < size && size <= 64.0 * 1048576.0,
            "heap {in_use} peak {peak} size {size}"
        );
        // Each stack serves only its own port.
        assert!(refused(format!("{mgmt_ip}:80").parse().unwrap()));
        assert!(refused(format!("{site_ip}:9090").parse().unwrap()));
        // A level changed at run time on the guest.
        assert_eq!(http(mgmt, "PUT", "/logs", "", "stack:debug").0, 200);
        let seen = c.len();
        assert_eq!(http(site, "GET", "/", "", "").0, 200);
        c.wait_for(seen, &client);
        assert_eq!(http(mgmt, "PUT", "/logs", "", "stack:nope").0, 400);
    });
    drop(child);
}
