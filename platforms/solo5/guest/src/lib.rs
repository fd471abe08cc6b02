//! What the Solo5 guest targets share: boot, memory, the executor platform and the devices.
//!
//! A Solo5 unikernel runs on a *tender* (`hvt`: a KVM virtual machine; `spt`: a
//! seccomp-sandboxed process) and reaches the host only through a handful of calls: write
//! to the console, read the clocks, sleep until a deadline or network input, move Ethernet
//! frames and disk blocks, and halt. Everything above those calls is the same on every
//! Solo5 target, and lives here, parameterised by the [`Bindings`] trait that each target
//! crate implements with its own calls (hvt: port-I/O hypercalls; spt: Linux system calls).
//!
//! The target crate (for example `compose-hvt-guest`) owns the entry point: it reads the
//! tender's boot information, calls [`start`] once, then runs the generated glue, which uses
//! the target crate as `platform`:
//!
//! 1. [`boot`] reads the boot arguments from the tender's command line (after the leading
//!    `--solo5:LEVEL` tokens, which [`start`] strips), exiting with a usage message when they
//!    do not fit;
//! 2. [`init`] keeps each started device for the rest of the run (or stops the unikernel
//!    with exit status 1 if it failed);
//! 3. [`run`] drives the application on compose-devices' executor with [`Solo5`] as the
//!    platform, and [`exit`] halts with the application's status.
//!
//! # Memory
//!
//! The tender loads the image at 1 MiB and gives the guest everything up to `mem_size`;
//! the initial stack grows down from `mem_size`. [`start`] leaves the top [`STACK_SIZE`]
//! bytes to the stack (a quarter of the free memory when that is less, as with
//! `--mem=2`) and makes the rest, from the end of the image (page-rounded), the heap of
//! the global allocator (talc, behind a spin lock). There is no guard page: a stack deeper
//! than its reservation overwrites the top of the heap.
//!
//! # Idling
//!
//! [`Solo5`]'s `park` first polls the network stacks (which flushes what tasks wrote), then,
//! if no task was woken and no timer is due, makes the target's *yield* call with the next
//! deadline: the tender blocks the whole unikernel until then or until a frame arrives, so
//! an idle unikernel uses no CPU. After the yield it polls the stacks again, which takes in
//! the frames and wakes the tasks waiting for them.
#![no_std]
extern crate alloc;

mod block;
mod boot;
mod console;
mod heap;
mod net;
pub mod panic;
mod park;
mod random;
mod secret;
mod single;
mod time;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

pub use block::Block;
pub use boot::{
    Boot, BootInfo, LogLevel, StartInfo, boot, boot_info, cmdline, log_level, manifest, program,
    set_program, start,
};
pub use console::Console;
pub use heap::{HEAP, Heap};
pub use net::{Ipv4, Ipv4Config, Netif, Tcp, TcpFlow, TcpListener, frame_stats};
pub use park::{ParkStats, Solo5, count_clock_read, park_stats};
pub use random::{Random, seed};
pub use secret::{SECRETS_DEVICE, Secret};
pub use time::{MonotonicClock, TscClock, WallClock};

/// Bytes at the top of guest memory left for the stack, at most; the heap ends below them.
/// When the free memory is less than four times this, the stack gets a quarter of it.
pub const STACK_SIZE: u64 = 1024 * 1024;

/// The least stack and the least heap the unikernel starts with (each); with less memory
/// it halts at boot with status 255.
pub const MIN_MEMORY: u64 = 128 * 1024;

/// Why a host call failed (`solo5_result_t` other than OK and AGAIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The tender refused the arguments (`SOLO5_R_EINVAL`).
    Invalid,
    /// Anything else (`SOLO5_R_EUNSPEC`).
    Unspecified,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Invalid => "invalid argument",
            HostError::Unspecified => "host error",
        })
    }
}

/// A Solo5 target's calls into its tender.
///
/// Implementations are zero-sized types with only associated functions; every device and
/// the executor platform in this crate are generic over one. Device handles are manifest
/// indices (the first user device is 1). All buffers live in guest memory.
pub trait Bindings: 'static {
    /// The target's name as Solo5 spells it (`hvt`, `spt`), for messages.
    const TARGET: &'static str;

    /// Writes `bytes` to the tender's console (its stdout). Best effort; never fails.
    fn console_write(bytes: &[u8]);

    /// A monotonic clock in nanoseconds, from an epoch of the target's choosing.
    fn monotonic_ns() -> u64;

    /// The host's wall clock: nanoseconds since 1970-01-01T00:00:00Z.
    fn wall_clock_ns() -> u64;

    /// Blocks until [`Bindings::monotonic_ns`] reaches `deadline_ns` or a network device has
    /// input, whichever comes first, and returns the set of network handles with input
    /// (bit *n* for handle *n*). May return early. `now_ns` is a recent reading of the
    /// clock, for a target whose host wants a relative timeout (hvt), so that it need not
    /// read the clock again.
    fn yield_until(deadline_ns: u64, now_ns: u64) -> u64;

    /// Sends one Ethernet frame on network device `handle`.
    fn net_write(handle: u64, frame: &[u8]) -> Result<(), HostError>;

    /// Moves one pending frame of network device `handle` into `buf` (at least MTU + 14
    /// bytes); `Ok(None)` when no frame is pending.
    fn net_read(handle: u64, buf: &mut [u8]) -> Result<Option<usize>, HostError>;

    /// Writes one block at byte `offset` of block device `handle`; `buf` is one block.
    fn block_write(handle: u64, offset: u64, buf: &[u8]) -> Result<(), HostError>;

    /// Reads one block at byte `offset` of block device `handle`; `buf` is one block.
    fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), HostError>;

    /// Ends the unikernel: the tender exits with `status`.
    fn halt(status: u8) -> !;
}

/// Why a device could not start.
#[derive(Debug)]
pub struct Error(alloc::string::String);

impl Error {
    pub(crate) fn new(message: impl Into<alloc::string::String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for Error {}

/// Writes formatted text straight to the console of target `B`, without allocating.
pub(crate) struct RawConsole<B>(core::marker::PhantomData<B>);

impl<B: Bindings> RawConsole<B> {
    pub(crate) const fn new() -> Self {
        RawConsole(core::marker::PhantomData)
    }
}

impl<B: Bindings> fmt::Write for RawConsole<B> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        B::console_write(s.as_bytes());
        Ok(())
    }
}

/// Whether [`run`] is driving the executor.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Runs the application's entry future, and every task it spawns, until it completes.
///
/// The executor is one per unikernel: calling `run` again from inside it panics.
pub fn run<B: Bindings, F: Future>(future: F) -> F::Output {
    assert!(
        !RUNNING.swap(true, Ordering::AcqRel),
        "the executor is already running (one `run` per unikernel)"
    );
    let out = compose_devices::block_on::<Solo5<B>, _>(future);
    RUNNING.store(false, Ordering::Release);
    out
}

/// Drives `future`, a device constructor's I/O, to completion on the executor before the
/// application starts (the glue constructs every device before calling [`run`]).
///
/// [`run`] may be called again afterwards, but it panics inside a running executor, and
/// when it returns it drops every spawned task and timer; so this refuses, with an error
/// rather than a panic, to run inside the application or once tasks exist.
pub(crate) fn block_on_io<B: Bindings, F: Future>(future: F) -> Result<F::Output, Error> {
    use compose_devices::executor::{live_tasks, pending_timers};
    if RUNNING.load(Ordering::Acquire) || live_tasks() != 0 || pending_timers() != 0 {
        return Err(Error::new(
            "a device that reads at start must be constructed before the application runs",
        ));
    }
    Ok(run::<B, F>(future))
}

/// Keeps a started device for the rest of the run, or stops the unikernel if it failed.
///
/// On failure it prints `<program>: device '<device>' failed to start: <error>` and halts
/// with status 1.
pub fn init<B: Bindings, T, E: fmt::Display>(device: &str, started: Result<T, E>) -> &'static T {
    match started {
        Ok(d) => compose_devices::leak(d),
        Err(e) => {
            let _ = fmt::write(
                &mut RawConsole::<B>::new(),
                format_args!("{}: device '{device}' failed to start: {e}\n", program()),
            );
            B::halt(1)
        }
    }
}

/// Ends the unikernel with exit status `code`.
pub fn exit<B: Bindings>(code: u8) -> ! {
    B::halt(code)
}

#[doc(hidden)]
pub use compose_devices as __compose_devices;
#[doc(hidden)]
pub use solo5_abi as __solo5_abi;

/// The platform API the composer's glue calls (`platform::Console::new()`,
/// `platform::boot(..)`, ...), for the bindings `$bindings` of one Solo5 target. Each
/// runtime crate invokes it once; only its bindings (and `_start`) are its own.
#[macro_export]
macro_rules! facade {
    ($bindings:ty) => {
        /// The executor platform: the monotonic clock, and the tender's yield to idle.
        pub type Platform = $crate::Solo5<$bindings>;
        /// The tender's console (its stdout).
        pub type Console = $crate::Console<$bindings>;
        /// Time since boot.
        pub type MonotonicClock = $crate::MonotonicClock<$bindings>;
        /// The host's wall clock.
        pub type WallClock = $crate::WallClock<$bindings>;
        /// A network device of the manifest (`--net:NAME=TAP`).
        pub type Netif = $crate::Netif<$bindings>;
        /// An IPv4 stack on a [`Netif`].
        pub type Ipv4 = $crate::Ipv4<$bindings>;
        /// TCP on an [`Ipv4`] stack.
        pub type Tcp = $crate::Tcp<$bindings>;
        /// A listening TCP port.
        pub type TcpListener = $crate::TcpListener<$bindings>;
        /// A TCP connection.
        pub type TcpFlow = $crate::TcpFlow<$bindings>;
        /// A block device of the manifest (`--block:NAME=FILE`).
        pub type Block = $crate::Block<$bindings>;
        /// A secret, from the `secrets` block device the launcher builds.
        pub type Secret = $crate::Secret<$bindings>;
        /// The Solo5 ABI types, for the manifest note the glue declares
        /// (`solo5_abi::Mft1Note::new(&[...])`).
        pub use $crate::__solo5_abi as solo5_abi;

        /// Reads the boot arguments from the tender's command line (the arguments after
        /// the unikernel, without leading `--solo5:LEVEL` ones). Prints the usage and
        /// exits 0 on `--help`; prints the error and exits 64 when they do not fit `specs`.
        pub fn boot(specs: &'static [$crate::__compose_devices::bootargs::Spec]) -> $crate::Boot {
            $crate::boot::<$bindings>(specs)
        }

        /// Keeps a started device for the rest of the run, or prints why it failed and
        /// exits 1.
        pub fn init<T, E: core::fmt::Display>(device: &str, started: Result<T, E>) -> &'static T {
            $crate::init::<$bindings, T, E>(device, started)
        }

        /// Runs the application's entry future, and every task it spawns, until it completes.
        pub fn run<F: core::future::Future>(future: F) -> F::Output {
            $crate::run::<$bindings, F>(future)
        }

        /// The executor's idling counters and the clock reads so far, for diagnostics.
        pub fn park_stats() -> $crate::ParkStats {
            $crate::park_stats()
        }

        /// Ends the unikernel: the tender exits with `code`.
        pub fn exit(code: u8) -> ! {
            $crate::exit::<$bindings>(code)
        }

        // The facade provides the whole platform contract (compose_devices::platform).
        $crate::__compose_devices::platform_conformance!(Platform);
    };
}
