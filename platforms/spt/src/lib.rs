//! The `spt` target of compose: a unikernel that runs on the Solo5 spt tender, as a Linux
//! process behind a strict seccomp filter.
//!
//! The generated glue uses this crate as `platform`, exactly as it uses compose-hvt-guest
//! for hvt: the glue for one target builds unchanged for the other once the `use` line
//! names this crate.
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use compose_spt_guest as platform;
//! fn main() {
//!     let boot = platform::boot(BOOT_ARGS);
//!     let console = platform::init("console", platform::Console::new());
//!     let service = platform::init("service", platform::Netif::new("service"));
//!     let stack = platform::init("stack", platform::Ipv4::new(service, config));
//!     let tcp = platform::init("tcp", platform::Tcp::new(stack));
//!     let status = platform::run(echo::start(console, tcp, boot.args.get::<u16>("port")));
//!     platform::exit(compose_devices::Termination::exit_code(status));
//! }
//! platform::entry!(main);
//! ```
//!
//! plus the manifest note (`.note.solo5.manifest`, see solo5-abi's `Mft1Note`). This crate
//! brings the rest of what the tender requires: the entry point `_start`, the ABI note
//! (target spt), a panic handler, the system-call bindings ([`Spt`], over [`sys`]) and, in
//! `compose-spt.ld` beside this crate, the linker script.
//!
//! # Building a unikernel
//!
//! Target `x86_64-unknown-none` (soft-float, no red zone), with these flags for every crate
//! (in the glue's `.cargo/config.toml`): the same as hvt's but for the linker script.
//!
//! ```toml
//! [build]
//! target = "x86_64-unknown-none"
//! [target.x86_64-unknown-none]
//! rustflags = [
//!     "-C", "relocation-model=static",          # ET_EXEC: the tender relocates nothing
//!     "-C", "link-arg=-Tcompose-spt.ld",        # or the script's absolute path
//!     "-C", "link-arg=-zmax-page-size=0x1000",  # every PT_LOAD 4 KiB-aligned at >= 1 MiB
//!     "-C", "link-arg=-znorelro",
//!     "-C", "link-arg=--no-pie",
//! ]
//! ```
//!
//! The linker finds `compose-spt.ld` by name because this crate's build script adds its
//! directory to the link search path. `panic = "abort"` is the target's default.
//!
//! # What runs where
//!
//! Everything shared with hvt (boot, command line, manifest and device model, heap, panic,
//! executor platform and yield semantics, network stack) is in [`solo5_guest`]; this crate
//! only has what the spt ABI makes different:
//!
//! | | hvt | spt |
//! |---|---|---|
//! | host calls | `out` to the tender's ports | Linux system calls ([`sys`]) |
//! | boot info | 0x10000, with the TSC frequency | 0x11000, with an epoll fd and a timerfd |
//! | monotonic clock | TSC | `clock_gettime(CLOCK_MONOTONIC)` |
//! | yield | POLL hypercall (relative timeout) | `timerfd_settime` (absolute) + `epoll_pwait` |
//! | devices | handles, checked by the tender | the host fds in the manifest copy, checked by the bindings and the filter |
//! | CPU faults | the runtime's IDT prints a trap report | the process dies of the signal; the tender reports it |
//! | exit | HALT hypercall | `exit_group` |
//!
//! Randomness comes from RDSEED/RDRAND in both (see [`Random`]): the filter allows no
//! `getrandom`.
#![cfg_attr(not(test), no_std)]

mod bindings;
pub mod sys;

#[cfg(target_os = "none")]
mod start;

pub use bindings::Spt;
pub use solo5_guest::{Boot, Ipv4Config, Random};
#[cfg(target_os = "none")]
pub use start::SOLO5_ABI;

solo5_guest::facade!(Spt);

#[doc(hidden)]
pub use solo5_guest::set_program as __set_program;

/// Names the glue's `main` as the unikernel's entry: `platform::entry!(main);`.
///
/// `_start` (in this crate) sets up the runtime, then calls `main`; when `main` returns,
/// the unikernel exits with status 0. Messages from the runtime start with the glue's
/// binary name (its package name if cargo does not say).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "Rust" fn __compose_spt_main() {
            $crate::__set_program(match option_env!("CARGO_BIN_NAME") {
                Some(bin) => bin,
                None => env!("CARGO_PKG_NAME"),
            });
            let main: fn() = $main;
            main()
        }
    };
}
