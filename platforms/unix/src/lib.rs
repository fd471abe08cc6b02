//! The `unix` target of compose: a unikernel that runs as an ordinary host process.
//!
//! The generated glue (`main.rs`) uses this crate as `platform`:
//!
//! 1. [`boot`] parses the command line into boot arguments and attachments
//!    (`--block:NAME=PATH`), exiting with a usage message when they do not fit;
//! 2. [`init`] starts each device in the device graph's order and leaks it, so that the
//!    application and spawned tasks share it as `&'static`;
//! 3. [`run`] drives the application's entry future on compose-devices' single-threaded
//!    executor, with [`Unix`] as the platform, and [`exit`] ends the process with its status.
//!
//! The executor runs on the thread that calls [`run`] (the main thread, in the glue). When
//! no task is ready it parks in `epoll_wait(2)` (see the `reactor` module) on the sockets tasks
//! wait for, with a timeout up to the next timer, so an idle unikernel sleeps in the kernel
//! instead of spinning.
//!
//! Devices map onto the host: the console is stdout, the clocks are the host's, randomness
//! comes from getrandom(2), TCP uses non-blocking host sockets, block devices are files and
//! an audio device records a WAV file.
//! The code targets Linux (it uses `SOCK_CLOEXEC`, `MSG_NOSIGNAL` and getrandom(2)).

use std::fmt;
use std::io::Write;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use compose_devices::executor::Platform;

mod audio;
mod block;
mod boot;
mod console;
mod image;
mod net;
mod random;
mod reactor;
mod secret;
mod time;

pub use audio::Audio;
pub use block::Block;
pub use boot::{Boot, BootError, boot};
pub use console::Console;
pub use net::{Ipv4, Ipv4Config, Netif, Tcp, TcpFlow, TcpListener};
pub use random::Random;
pub use secret::Secret;
pub use time::{MonotonicClock, WallClock};

/// The process's allocator: the system's, counted in `compose_devices::metrics` (heap in
/// use and peak) for the monitoring device. The heap of a host process is unbounded, so
/// `heap_size_bytes` stays 0.
#[global_allocator]
static ALLOCATOR: compose_devices::metrics::Counting<std::alloc::System> =
    compose_devices::metrics::Counting::new(std::alloc::System);

/// The unix platform for compose-devices' executor.
pub struct Unix;

// This crate provides the whole platform contract (compose_devices::platform), and audio.
compose_devices::platform_conformance!(Unix, audio);

/// The instant the unikernel started: the zero of [`Unix::now_ns`].
static START: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Platform for Unix {
    /// Nanoseconds since the process started, from CLOCK_MONOTONIC (what `Instant` reads).
    fn now_ns() -> u64 {
        u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Blocks in `epoll_wait(2)` on the sockets tasks wait for, until one is ready or the
    /// deadline passes, and wakes the tasks whose socket is ready.
    fn park(deadline_ns: Option<u64>) {
        reactor::park(deadline_ns.map(|d| d.saturating_sub(Self::now_ns())));
    }
}

/// Runs the application's entry future, and every task it spawns, until it completes.
///
/// The executor is one per process: running it from two threads at once, or from inside
/// itself, panics.
pub fn run<F: Future>(future: F) -> F::Output {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }
    assert!(
        !RUNNING.swap(true, Ordering::AcqRel),
        "compose-unix: the executor is already running (one `run` at a time per process)"
    );
    let _running = Running;
    reactor::init();
    compose_devices::block_on::<Unix, _>(future)
}

/// Keeps a started device for the rest of the run, or stops the unikernel if it failed.
///
/// On failure it prints `compose-unix: device '<device>' failed to start: <error>` to stderr
/// and exits with status 1.
pub fn init<T, E: fmt::Display>(device: &str, started: Result<T, E>) -> &'static T {
    match started {
        Ok(d) => compose_devices::leak(d),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("compose-unix: device '{device}' failed to start: {e}");
            std::process::exit(1)
        }
    }
}

/// Ends the unikernel with exit status `code`, after flushing stdout.
pub fn exit(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code))
}

/// Why a unix device could not start.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
