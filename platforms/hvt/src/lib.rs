//! The `hvt` target of compose: a unikernel that runs on the Solo5 hvt tender (KVM).
//!
//! The generated glue uses this crate as `platform`, in the same shape as the unix target:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use compose_hvt_guest as platform;
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
//! brings the rest of what the tender requires: the entry point `_start`, the ABI note, a
//! panic handler, the hypercall bindings ([`Hvt`]) and, in `compose-hvt.ld` beside this
//! crate, the linker script.
//!
//! # Building a unikernel
//!
//! Target `x86_64-unknown-none` (soft-float, no red zone), with these flags for every crate
//! (in the glue's `.cargo/config.toml`):
//!
//! ```toml
//! [build]
//! target = "x86_64-unknown-none"
//! [target.x86_64-unknown-none]
//! rustflags = [
//!     "-C", "relocation-model=static",          # ET_EXEC: the tender rejects PIE
//!     "-C", "link-arg=-Tcompose-hvt.ld",        # or the script's absolute path
//!     "-C", "link-arg=-zmax-page-size=0x1000",  # every PT_LOAD 4 KiB-aligned at >= 1 MiB
//!     "-C", "link-arg=-znorelro",
//!     "-C", "link-arg=--no-pie",
//! ]
//! ```
//!
//! The linker finds `compose-hvt.ld` by name because this crate's build script adds its
//! directory to the link search path. `panic = "abort"` is the target's default.
//!
//! # What runs where
//!
//! Everything shared with spt (boot, heap, executor platform, devices) is in
//! [`solo5_guest`]; the network stack is compose-netstack (smoltcp). Time comes from the
//! TSC, scaled with the frequency the tender reports; the executor idles in the POLL
//! hypercall; randomness comes from RDSEED/RDRAND (see [`Random`]).
#![no_std]

mod hypercall;

#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod start;

pub use hypercall::Hvt;
pub use solo5_guest::{Boot, Ipv4Config, Random};
#[cfg(target_os = "none")]
pub use start::SOLO5_ABI;

solo5_guest::facade!(Hvt);

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
        pub extern "Rust" fn __compose_hvt_main() {
            $crate::__set_program(match option_env!("CARGO_BIN_NAME") {
                Some(bin) => bin,
                None => env!("CARGO_PKG_NAME"),
            });
            let main: fn() = $main;
            main()
        }
    };
}
