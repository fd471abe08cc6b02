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
//! # One addition: it says how the guest ended
//!
//! The process is exactly a solo5-spt process (one process, same memory layout, same
//! filter, same fds), and on top of that it tells why it died, which a process killed by
//! its own seccomp filter normally cannot: the filter traps instead of killing, and a
//! signal handler installed before the jump prints the refused call's name, number and
//! address, or the fault and its addresses, and exits with 128 + N ([`report`]). Exit
//! codes:
//!
//! | what happened | exit code |
//! |---|---|
//! | the guest exited with status n (`exit_group`) | n & 0xff (255 on abort or panic) |
//! | a forbidden system call (SIGSYS) | 159, "made a system call the spt seccomp policy does not allow ... (SIGSYS): getpid (system call 39) at 0x..." |
//! | a guest memory fault (SIGSEGV) | 139, "crashed: invalid memory access ... address A, instruction at I" |
//! | SIGINT/SIGTERM/SIGHUP/SIGQUIT | 128 + N, "Exiting on signal N" |
//! | any other signal N that ends a process | 128 + N, with its name (SIGKILL: killed by it) |
//! | bad kernel, manifest, option, device; no room for guest memory | 1 |
//! | `--help` / `--version` | 1 / 0 |
//!
//! 128 + N is what a shell shows for solo5-spt, which dies of the signal itself, so
//! scripts see the same numbers. There is no second process: earlier versions forked a
//! supervising parent for this, which cost a third of the boot's CPU time
//! (`benches/spt-boot.sh` measures a boot next to solo5-spt's). The binary also skips
//! Rust's runtime start-up (`#![no_main]`: no stack-overflow handler setup, which reads
//! `/proc/self/maps`), and does the one part of it that matters here, making sure fds 0-2
//! are open, itself ([`std_fds`]).
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
pub mod report;
pub mod seccomp;

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
    match launch::start(&inv) {
        Ok(never) => match never {},
        Err(msg) => {
            eprintln!("{PROGRAM}: {msg}");
            1
        }
    }
}

/// What Rust's runtime start-up would do that the tender needs (it runs without it, see
/// the crate docs): open `/dev/null` on any of fds 0-2 that is closed, so that no device
/// the tender opens lands on the console's fd 1 or on stderr; and ignore SIGPIPE, so that
/// a message to a closed stderr is lost rather than fatal.
pub fn std_fds() {
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) and open(2) of a literal path; a failure leaves the fd
        // closed, as it was.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    // SAFETY: ignoring a signal runs no code of ours.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
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
