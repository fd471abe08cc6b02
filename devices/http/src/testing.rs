//! Test doubles: an in-memory store, scripted TCP flows, and a host platform for the
//! executor.

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::string::{String, ToString};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use std::vec::Vec;

use compose_devices::console::Console;
use compose_devices::executor::Platform;
use compose_devices::kv::{Encoding, Entry, Kv, KvError};
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};
use sha2::{Digest, Sha256};

/// One stored value.
pub struct MemEntry {
    pub key: String,
    pub data: Vec<u8>,
    pub content_type: String,
    pub gzip: Option<Vec<u8>>,
    pub zstd: Option<Vec<u8>>,
    /// The value's own time ([`Entry::modified`]).
    pub modified: Option<u64>,
}

/// A store in memory that, unlike `Embedded`, lends no slices: the server must read.
pub struct MemKv {
    pub entries: Vec<MemEntry>,
    pub modified: Option<u64>,
}

impl MemKv {
    /// A store of `(key, data)` with types by extension and, for text, fake variants (the
    /// server never decodes them) a third and a quarter of the size.
    pub fn new(files: &[(&str, &[u8])]) -> MemKv {
        let mut entries: Vec<MemEntry> = files
            .iter()
            .map(|(key, data)| {
                let text = key.ends_with(".html") || key.ends_with(".css");
                let content_type = if key.ends_with(".html") {
                    "text/html; charset=utf-8"
                } else if key.ends_with(".css") {
                    "text/css; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                let compressible = text && data.len() >= 12;
                MemEntry {
                    key: key.to_string(),
                    data: data.to_vec(),
                    content_type: content_type.to_string(),
                    gzip: compressible.then(|| std::vec![b'g'; data.len() / 3]),
                    zstd: compressible.then(|| std::vec![b'z'; data.len() / 4]),
                    modified: None,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        MemKv {
            entries,
            modified: Some(1_700_000_000),
        }
    }

    fn value(&self, handle: u64, encoding: Encoding) -> Option<&[u8]> {
        let e = self.entries.get(handle as usize)?;
        match encoding {
            Encoding::Identity => Some(&e.data),
            Encoding::Gzip => e.gzip.as_deref(),
            Encoding::Zstd => e.zstd.as_deref(),
        }
    }
}

impl Kv for MemKv {
    async fn get(&self, key: &str) -> Result<Option<Entry<'_>>, KvError> {
        let Some(i) = self.entries.iter().position(|e| e.key == key) else {
            return Ok(None);
        };
        let e = &self.entries[i];
        Ok(Some(Entry {
            key: &e.key,
            handle: i as u64,
            size: e.data.len() as u64,
            sha256: Sha256::digest(&e.data).into(),
            content_type: &e.content_type,
            gzip_size: e.gzip.as_ref().map(|v| v.len() as u64),
            zstd_size: e.zstd.as_ref().map(|v| v.len() as u64),
            modified: e.modified,
        }))
    }

    async fn read(
        &self,
        entry: &Entry<'_>,
        encoding: Encoding,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, KvError> {
        let value = self
            .value(entry.handle, encoding)
            .ok_or(KvError::NotFound)?;
        let rest = value.get(offset as usize..).unwrap_or(&[]);
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        Ok(self
            .entries
            .iter()
            .map(|e| e.key.clone())
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .collect())
    }

    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn modified(&self) -> Option<u64> {
        self.modified
    }
}

/// Polls a future that never waits on anything external to completion (no executor).
pub fn poll_ready<F: core::future::Future>(f: F) -> F::Output {
    let mut f = core::pin::pin!(f);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    for _ in 0..1_000_000 {
        if let core::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete");
}

/// The executor is one per process and not thread-safe: tests that run it take this lock.
static EXECUTOR: Mutex<()> = Mutex::new(());

pub fn executor_lock() -> MutexGuard<'static, ()> {
    EXECUTOR.lock().unwrap_or_else(|e| e.into_inner())
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The host as a platform: a monotonic clock, and parking by sleeping a little.
pub struct TestPlatform;

impl Platform for TestPlatform {
    fn now_ns() -> u64 {
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
    fn park(deadline_ns: Option<u64>) {
        // Scripted flows never wake a task; only timers do. Sleep until the next one.
        let now = Self::now_ns();
        let wait = deadline_ns
            .map_or(1_000_000, |d| d.saturating_sub(now))
            .min(5_000_000);
        std::thread::sleep(std::time::Duration::from_nanos(wait));
    }
}

/// Runs `f` on the executor, holding the executor lock.
pub fn block_on<F: core::future::Future>(f: F) -> F::Output {
    let _lock = executor_lock();
    compose_devices::block_on::<TestPlatform, _>(f)
}

/// What a scripted flow does on its next read.
#[derive(Clone, Debug)]
pub enum Step {
    /// Returns these bytes (over several reads if the buffer is small).
    Data(Vec<u8>),
    /// Returns end of stream, now and on every later read.
    Eof,
    /// Never completes.
    Stall,
    /// Fails with a reset.
    Reset,
    /// Waits this long, then goes on with the next step.
    Delay(std::time::Duration),
}

/// What a scripted flow did, shared with the test.
#[derive(Default)]
pub struct Log {
    pub written: RefCell<Vec<u8>>,
    pub closed: Cell<bool>,
    pub dropped: Cell<bool>,
}

/// A TCP flow that reads from a script and records what is written to it.
pub struct ScriptFlow {
    steps: VecDeque<Step>,
    pub log: Rc<Log>,
    /// Writes stall forever once this many bytes were written.
    pub write_limit: usize,
    /// Most bytes taken per write (to exercise partial writes).
    pub write_chunk: usize,
}

impl ScriptFlow {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> (ScriptFlow, Rc<Log>) {
        let log = Rc::new(Log::default());
        let flow = ScriptFlow {
            steps: steps.into_iter().collect(),
            log: log.clone(),
            write_limit: usize::MAX,
            write_chunk: 7000,
        };
        (flow, log)
    }
}

impl Drop for ScriptFlow {
    fn drop(&mut self) {
        self.log.dropped.set(true);
    }
}

fn pending_forever<T>() -> impl core::future::Future<Output = T> {
    core::future::poll_fn(|_| core::task::Poll::Pending)
}

impl TcpFlow for ScriptFlow {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        while let Some(Step::Delay(d)) = self.steps.front() {
            let d = *d;
            self.steps.pop_front();
            compose_devices::sleep(d).await;
        }
        match self.steps.pop_front() {
            Some(Step::Data(mut data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if n < data.len() {
                    self.steps.push_front(Step::Data(data.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) | None => {
                self.steps.push_front(Step::Eof);
                Ok(0)
            }
            Some(Step::Stall) => {
                self.steps.push_front(Step::Stall);
                pending_forever().await
            }
            Some(Step::Reset) => Err(NetError::ConnectionReset),
            Some(Step::Delay(_)) => unreachable!("delays are taken above"),
        }
    }

    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        let written = self.log.written.borrow().len();
        if written >= self.write_limit {
            return pending_forever().await;
        }
        let n = buf
            .len()
            .min(self.write_chunk)
            .min(self.write_limit - written);
        self.log.written.borrow_mut().extend_from_slice(&buf[..n]);
        Ok(n)
    }

    async fn close(&mut self) -> Result<(), NetError> {
        self.log.closed.set(true);
        Ok(())
    }

    fn peer(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000)
    }
}

/// A TCP device whose listener hands out the given flows, then waits forever.
pub struct FakeTcp {
    pub flows: RefCell<Option<Vec<ScriptFlow>>>,
}

pub struct FakeListener {
    flows: RefCell<VecDeque<ScriptFlow>>,
    port: u16,
}

impl Tcp for FakeTcp {
    type Listener = FakeListener;
    type Flow = ScriptFlow;

    fn listen(&self, port: u16) -> Result<FakeListener, NetError> {
        let flows = self.flows.borrow_mut().take().ok_or(NetError::AddrInUse)?;
        Ok(FakeListener {
            flows: RefCell::new(flows.into()),
            port,
        })
    }

    async fn connect(&self, _: SocketAddrV4) -> Result<ScriptFlow, NetError> {
        Err(NetError::Unreachable)
    }
}

impl TcpListener for FakeListener {
    type Flow = ScriptFlow;

    async fn accept(&self) -> Result<ScriptFlow, NetError> {
        let next = self.flows.borrow_mut().pop_front();
        match next {
            Some(flow) => Ok(flow),
            None => pending_forever().await,
        }
    }

    fn port(&self) -> u16 {
        self.port
    }
}

/// A wall clock stopped at a fixed time.
pub struct FixedClock(pub u64);

impl compose_devices::time::WallClock for FixedClock {
    fn now(&self) -> core::time::Duration {
        core::time::Duration::from_secs(self.0)
    }
}

/// A wall clock stopped at 2000-10-10T13:55:36Z.
pub fn clock() -> &'static FixedClock {
    leak(FixedClock(971_186_136))
}

/// A console that keeps what is written.
#[derive(Default)]
pub struct MemConsole(pub RefCell<Vec<u8>>);

impl Console for MemConsole {
    fn write(&self, bytes: &[u8]) {
        self.0.borrow_mut().extend_from_slice(bytes);
    }
}

pub fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// One parsed response from a byte stream.
#[derive(Debug)]
pub struct Parsed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Parsed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits a stream of responses; `head_only` marks responses to HEAD (no body).
pub fn parse_responses(mut bytes: &[u8], head_only: &[bool]) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut i = 0;
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let n = match r.parse(bytes).expect("valid response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!(
                "truncated response head: {:?}",
                String::from_utf8_lossy(bytes)
            ),
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let len = if head_only.get(i).copied().unwrap_or(false) || status == 304 {
            0
        } else {
            len
        };
        assert!(bytes.len() >= n + len, "truncated body");
        out.push(Parsed {
            status,
            headers,
            body: bytes[n..n + len].to_vec(),
        });
        bytes = &bytes[n + len..];
        i += 1;
    }
    out
}
