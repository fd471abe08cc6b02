//! `compose-spt`: a memory-safe, drop-in replacement for Solo5's `solo5-spt` tender: a
//! unikernel runs as a Linux process behind a strict seccomp filter (x86_64).
//!
//! ```text
//! compose-spt [--mem=MiB] [--net:NAME=TAP]... [--net-mac:NAME=MAC]...
//!             [--block:NAME=FILE]... [--block-sector-size:NAME=N]... [--x-exec-heap]
//!             [--] KERNEL [ARGS...]
//! ```
//!
//! The start-up follows Solo5's (fact sheet §1.5, §4): parse the command line, load and
//! check the kernel (solo5-tender: ET_EXEC, the spt ABI note, the manifest, W^X segments),
//! attach its devices (taps and block images, solo5-tender), map guest memory at the
//! guest's own addresses from 0x10000 ([`memory`]), create the epoll fd and timerfd the
//! guest sleeps on, write the boot info, manifest copy and command line, install the
//! seccomp filter ([`seccomp`]) and jump to the guest ([`launch`]).
//!
//! # One difference: a supervising parent
//!
//! All of that happens in a child process, and the `compose-spt` process the user started
//! waits for it ([`supervise`]). The child is exactly a solo5-spt process (same memory
//! layout, same filter, same fds); the parent adds what a process killed by its own
//! seccomp filter cannot do: say why it died. Exit codes:
//!
//! | what happened | exit code |
//! |---|---|
//! | the guest exited with status n (`exit_group`) | n & 0xff (255 on abort or panic) |
//! | a forbidden system call (SIGSYS) | 159, "made a system call the spt seccomp policy does not allow" |
//! | a guest memory fault (SIGSEGV) | 139, "crashed: invalid memory access" |
//! | SIGINT/SIGTERM/SIGHUP/SIGQUIT (passed on to the guest) | 128 + N, "Exiting on signal N" |
//! | any other signal N | 128 + N, with its name |
//! | bad kernel, manifest, option, device; no room for guest memory | 1 |
//! | `--help` / `--version` | 1 / 0 |
//!
//! 128 + N is what a shell shows for solo5-spt, which dies of the signal itself, so
//! scripts see the same numbers. The cost of the extra process is a `fork` (see the
//! boot-to-exit benchmark in `platforms/spt/benches`). If the parent is killed, the kernel
//! kills the guest too.
//!
//! # Guest view
//!
//! Guest memory is `[0x10000, mem_size)` at the same addresses in this process: the boot
//! info at 0x11000 (`mem_size`, `kernel_end`, cmdline and manifest addresses, the epoll fd
//! and the timerfd), the manifest copy at 0x11028 with each device's host fd, the command
//! line after it (that area is read-only once written), the image from 0x100000 with
//! each segment's exact permissions, and read-write memory above it (executable too with
//! `--x-exec-heap`). The guest starts with `rsp = mem_size - 8` and `rdi = 0x11000`.

#![deny(missing_docs, missing_debug_implementations)]

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("compose-spt runs x86_64 spt guests, on x86_64 Linux hosts only");

pub mod launch;
pub mod memory;
pub mod seccomp;
pub mod supervise;

use std::ffi::OsString;

use solo5_tender::cli;

/// The program name used in messages.
pub const PROGRAM: &str = "compose-spt";

/// The spt-only flag: make guest memory outside the image executable.
pub const EXEC_HEAP_FLAG: &str = "--x-exec-heap";

/// Guest memory when `--mem` is not given, in MiB (Solo5's default).
pub const DEFAULT_MEM_MIB: u64 = 512;

/// The least guest memory, in MiB: the image loads at 1 MiB.
pub const MIN_MEM_MIB: u64 = 2;

/// The guest memory size for `--mem=MiB`. spt uses the value as given (no rounding); it
/// must leave room for the image above 1 MiB.
pub fn mem_size(mib: u64) -> Result<u64, String> {
    if mib < MIN_MEM_MIB {
        return Err(format!(
            "Guest memory size {mib} MB is below the minimum of {MIN_MEM_MIB} MB"
        ));
    }
    // The guest's addresses are the tender's: keep clear of everything but the lowest
    // part of a 47-bit address space (mapping would fail anyway; this says it sooner).
    const MAX_MIB: u64 = 1 << 26; // 64 TiB
    if mib > MAX_MIB {
        return Err(format!(
            "Guest memory size {mib} MB exceeds the maximum of {MAX_MIB} MB"
        ));
    }
    Ok(mib << 20)
}

fn usage() -> String {
    cli::usage(
        PROGRAM,
        "  [ --x-exec-heap ] (make the heap executable; WARNING: weakens W^X)\n",
    )
}

/// Runs the tender with `args` (without the program name) and returns the process exit
/// code: the guest's exit status, 128 + N if signal N killed it, 1 if it could not start.
pub fn main(args: &[OsString]) -> i32 {
    let inv = match cli::front(
        args,
        &[EXEC_HEAP_FLAG],
        PROGRAM,
        &usage(),
        ("spt", solo5_abi::SPT_ABI_VERSION),
    ) {
        Ok(inv) => inv,
        Err(code) => return code,
    };
    supervise::run(|| match launch::start(&inv) {
        Ok(never) => match never {},
        Err(msg) => {
            eprintln!("{PROGRAM}: {msg}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_sizes() {
        use super::mem_size;
        assert_eq!(mem_size(512), Ok(512 << 20));
        assert_eq!(mem_size(3), Ok(3 << 20));
        assert!(mem_size(1).is_err());
        assert!(mem_size(0).is_err());
        assert!(mem_size(u64::MAX).is_err());
    }
}
