//! The `xen` target of compose: a PVH unikernel that runs as a Xen domain.
//!
//! The generated glue is the Solo5 template's (`templates/solo5/`), with this crate as
//! `platform`: the same boot arguments, devices and executor as on hvt and spt, because
//! this crate implements solo5-guest's [`Bindings`] with Xen's own interfaces:
//!
//! | binding | Xen |
//! |---|---|
//! | console | the PV console ring (`HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`), xenconsoled |
//! | monotonic clock | the PV clock: vCPU 0's `vcpu_time_info` in the shared info page |
//! | wall clock | the shared info's `wc_sec`/`wc_nsec` plus the system time |
//! | yield | `SCHEDOP_poll` on the network event channels with the deadline as timeout |
//! | network | netfront (`device/vif/N`): grant tables, event channels, XenStore |
//! | block | blkfront (`device/vbd/ID`) |
//! | halt | `SCHEDOP_shutdown`: poweroff, or crash for status 255 (a panic, a fault) |
//!
//! The boot arguments are the start info's command line (`cmdline=` in the .xl). The
//! image also carries Solo5's ABI note for xen and the glue's manifest note, as a Solo5
//! xen image does; see [`devices`] for how manifest devices map to vifs and vbds.
//!
//! # Exit status
//!
//! A Xen domain has no exit status: it powers off, reboots or crashes. So that a
//! launcher can report the unikernel's status, the runtime prints a last console line
//! `compose: exit status N` before it shuts down, waits (at most a second) until
//! xenconsoled has read the ring, then powers off (any status but 255) or crashes (255,
//! Solo5's abort status: a panic, a CPU fault, not enough memory). `compose run
//! --target xen` exits with that status; without the line (a guest that died another
//! way) it reports how the domain ended.
//!
//! # Randomness
//!
//! The random device uses RDSEED/RDRAND (solo5-guest's `Random`) when Xen's CPU policy
//! offers them; without either, `Random::new` fails (the spec's `random` device does
//! not start) rather than hand out predictable bytes. Seeds that need not be secret
//! (TCP sequence numbers) fall back to the TSC.
#![no_std]

#[cfg(target_os = "none")]
mod blkfront;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
pub mod devices;
#[cfg(target_os = "none")]
mod grant;
#[cfg(target_os = "none")]
mod hypercall;
#[cfg(target_os = "none")]
mod netfront;
#[cfg(target_os = "none")]
mod shared;
#[cfg(target_os = "none")]
mod start;
#[cfg(target_os = "none")]
mod xenstore;

pub use solo5_guest::{Bindings, Boot, HostError, Ipv4Config, Random};
#[cfg(target_os = "none")]
pub use start::SOLO5_ABI;

/// The prefix of the last console line, before the status: `compose: exit status N`.
pub const EXIT_LINE: &str = "compose: exit status ";

/// The xen target's [`Bindings`].
#[derive(Debug)]
pub struct Xen;

#[cfg(target_os = "none")]
impl Bindings for Xen {
    const TARGET: &'static str = "xen";

    fn console_write(bytes: &[u8]) {
        console::write(bytes);
    }

    fn monotonic_ns() -> u64 {
        shared::system_time_ns()
    }

    fn wall_clock_ns() -> u64 {
        shared::wall_clock_ns()
    }

    fn yield_until(deadline_ns: u64, _now_ns: u64) -> u64 {
        let ready = netfront::ready();
        if ready != 0 {
            return ready;
        }
        let mut ports = [0u32; 8];
        let n = netfront::ports(&mut ports);
        // Without a deadline and without network there is nothing to wait for: sleep in
        // long steps (the executor parks again).
        let deadline = if deadline_ns == u64::MAX {
            shared::system_time_ns().saturating_add(1_000_000_000)
        } else {
            deadline_ns.max(1)
        };
        shared::wait(&ports[..n], deadline);
        netfront::ready()
    }

    fn net_write(handle: u64, frame: &[u8]) -> Result<(), HostError> {
        netfront::write(handle, frame)
    }

    fn net_read(handle: u64, buf: &mut [u8]) -> Result<Option<usize>, HostError> {
        netfront::read(handle, buf)
    }

    fn block_write(handle: u64, offset: u64, buf: &[u8]) -> Result<(), HostError> {
        blkfront::write(handle, offset, buf)
    }

    fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        blkfront::read(handle, offset, buf)
    }

    fn halt(status: u8) -> ! {
        let mut line = [0u8; 32];
        let prefix = EXIT_LINE.as_bytes();
        line[..prefix.len()].copy_from_slice(prefix);
        let mut n = prefix.len();
        let digits = [status / 100, status / 10 % 10, status % 10];
        let skip = if status >= 100 {
            0
        } else if status >= 10 {
            1
        } else {
            2
        };
        for d in &digits[skip..] {
            line[n] = b'0' + d;
            n += 1;
        }
        line[n] = b'\n';
        console::write(&line[..=n]);
        console::flush(1_000_000_000);
        hypercall::shutdown(if status == solo5_guest::panic::ABORT {
            hypercall::Shutdown::Crash
        } else {
            hypercall::Shutdown::Poweroff
        })
    }
}

#[cfg(not(target_os = "none"))]
impl Bindings for Xen {
    const TARGET: &'static str = "xen";
    fn console_write(_: &[u8]) {}
    fn monotonic_ns() -> u64 {
        0
    }
    fn wall_clock_ns() -> u64 {
        0
    }
    fn yield_until(_: u64, _: u64) -> u64 {
        0
    }
    fn net_write(_: u64, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::Unspecified)
    }
    fn net_read(_: u64, _: &mut [u8]) -> Result<Option<usize>, HostError> {
        Err(HostError::Unspecified)
    }
    fn block_write(_: u64, _: u64, _: &[u8]) -> Result<(), HostError> {
        Err(HostError::Unspecified)
    }
    fn block_read(_: u64, _: u64, _: &mut [u8]) -> Result<(), HostError> {
        Err(HostError::Unspecified)
    }
    fn halt(_: u8) -> ! {
        panic!("the xen runtime runs only as a Xen guest (x86_64-unknown-none)")
    }
}

solo5_guest::facade!(Xen);

#[doc(hidden)]
pub use solo5_guest::set_program as __set_program;

/// Names the glue's `main` as the unikernel's entry: `platform::entry!(main);`.
///
/// The PVH entry (in this crate) sets up the runtime, then calls `main`; when `main`
/// returns, the unikernel exits with status 0.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "Rust" fn __compose_xen_main() {
            $crate::__set_program(match option_env!("CARGO_BIN_NAME") {
                Some(bin) => bin,
                None => env!("CARGO_PKG_NAME"),
            });
            let main: fn() = $main;
            main()
        }
    };
}
