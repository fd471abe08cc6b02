//! How a guest ended, told by the guest's own process: signal handlers installed just
//! before the jump, which write one line on stderr and exit with 128 + N.
//!
//! Under solo5-spt a guest killed by its seccomp filter leaves a bare "Bad system call"
//! from the shell (status 159), or nothing at all under a supervisor that only logs exit
//! codes. compose-spt says what happened, without a second process (a supervising parent
//! cost a `fork` per boot, a third of the tender's CPU time):
//!
//! * the filter's default action is `SECCOMP_RET_TRAP`, not a kill: a forbidden call does
//!   not run, and the kernel delivers SIGSYS with the call's number and address, which the
//!   handler prints: `compose-spt: the unikernel made a system call the spt seccomp policy
//!   does not allow, and was killed (SIGSYS): getpid (system call 39) at 0x100a2e`;
//! * a fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP) is reported with the faulting
//!   address and the instruction's, both guest addresses to look up in the unikernel's
//!   symbols;
//! * SIGINT, SIGTERM, SIGHUP and SIGQUIT print `Exiting on signal N (SIGTERM)`; any other
//!   signal that would end the process names itself.
//!
//! Every case exits with 128 + N, the status a shell shows for a process killed by signal
//! N, so scripts written for solo5-spt see the same numbers (159, 139, 143...). SIGKILL
//! cannot be caught: the process (tender and guest are one) just dies of it.
//!
//! # Constraints on the handler
//!
//! It runs inside the guest's sandbox with the guest's registers, stack and TLS base, so it
//! is written for that: it runs on its own signal stack (mapped here, before the filter),
//! touches no TLS and no heap (errno, `malloc` and `std` are out), takes its text from
//! read-only constants and formats numbers into a buffer on its stack, and makes exactly
//! two system calls with inline assembly: `write` on fd 2, and `exit_group`. The policy
//! allows the guest no write on fd 2; the filter lets that one call through only from the
//! `syscall` instruction of [`stderr_write`], which loads fd 2 itself (see
//! `seccomp::build`). A guest that jumps there can write on stderr what it can already
//! write on stdout; nothing more. Every signal is blocked while the handler runs, so a
//! fault in the handler itself ends the process with that signal's default action.

use std::io;

use crate::PROGRAM;

/// Size of the signal stack: room for the kernel's signal frame (the x86 XSAVE area
/// included) and the handler's few hundred bytes.
const SIGNAL_STACK: usize = 64 << 10;

// The one place stderr may be written from once the filter is in: `write(2, buf, len)`.
// `compose_spt_stderr_write_ret` (after the `syscall`) is the address the filter checks.
std::arch::global_asm!(
    ".pushsection .text.compose_spt_stderr_write,\"ax\",@progbits",
    ".globl compose_spt_stderr_write",
    ".hidden compose_spt_stderr_write",
    ".type compose_spt_stderr_write,@function",
    "compose_spt_stderr_write:",
    "mov rdx, rsi",
    "mov rsi, rdi",
    "mov edi, 2",
    "mov eax, 1",
    "syscall",
    ".globl compose_spt_stderr_write_ret",
    ".hidden compose_spt_stderr_write_ret",
    "compose_spt_stderr_write_ret:",
    "ret",
    ".size compose_spt_stderr_write, . - compose_spt_stderr_write",
    ".popsection",
);

unsafe extern "C" {
    /// `write(2, buf, len)`; returns the raw result (bytes written or `-errno`).
    fn compose_spt_stderr_write(buf: *const u8, len: usize) -> isize;
    /// The instruction after the `syscall` in `compose_spt_stderr_write`.
    static compose_spt_stderr_write_ret: u8;
}

/// The address the kernel reports as the instruction pointer of [`stderr_write`]'s system
/// call (the instruction after `syscall`), for the filter.
pub fn stderr_write_ip() -> u64 {
    (&raw const compose_spt_stderr_write_ret) as u64
}

/// Writes all of `bytes` on stderr with raw system calls (no errno, no locks).
fn stderr_write(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the routine reads `bytes.len()` bytes at `bytes.as_ptr()`.
        let n = unsafe { compose_spt_stderr_write(bytes.as_ptr(), bytes.len()) };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            return;
        }
        bytes = &bytes[(n as usize).min(bytes.len())..];
    }
}

/// `exit_group(code)` with a raw system call.
fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group(2) does not return.
    unsafe {
        core::arch::asm!(
            "syscall",
            in("rax") libc::SYS_exit_group,
            in("rdi") code as i64,
            options(noreturn, nostack),
        )
    }
}

/// A line being formatted on the handler's stack; text past its end is dropped.
#[derive(Debug)]
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl Line {
    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    fn byte(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn dec(&mut self, v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let (mut v, mut n) = (v, 0);
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            self.byte(digits[i]);
        }
        self
    }

    fn hex(&mut self, v: u64) -> &mut Self {
        self.push("0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let d = ((v >> (shift * 4)) & 0xf) as u8;
            if d != 0 || started || shift == 0 {
                started = true;
                self.byte(if d < 10 { b'0' + d } else { b'a' + d - 10 });
            }
        }
        self
    }
}

/// What the kernel told about a signal, as far as the report uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Nothing more (the signal was sent by a process, or carries no address).
    None,
    /// A call the filter refused: its number and the address after its `syscall`.
    Syscall {
        /// x86_64 system call number.
        nr: i64,
        /// The instruction pointer the kernel reports (just after the `syscall`).
        ip: u64,
    },
    /// A fault: the address it concerns and the instruction that caused it.
    Fault {
        /// `si_addr`: the faulting memory address (SIGSEGV, SIGBUS) or instruction (SIGILL,
        /// SIGFPE).
        addr: u64,
        /// The instruction pointer at the fault.
        ip: u64,
    },
}

/// Formats the report for signal `sig` with `detail` (without the trailing newline) and
/// returns the exit code, 128 + `sig`.
pub fn describe(sig: i32, detail: Detail, line: &mut Line) -> i32 {
    line.push(PROGRAM).push(": ");
    let what = match sig {
        libc::SIGSYS => {
            "the unikernel made a system call the spt seccomp policy does not allow, and was \
             killed"
        }
        libc::SIGSEGV | libc::SIGBUS => {
            "the unikernel crashed: invalid memory access (a write to read-only memory, a null \
             pointer, a stack overflow...)"
        }
        libc::SIGILL => "the unikernel crashed: illegal instruction",
        libc::SIGFPE => "the unikernel crashed: arithmetic fault",
        libc::SIGTRAP => "the unikernel stopped at a breakpoint instruction",
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT => {
            line.push("Exiting on signal ").dec(sig as u64);
            ""
        }
        _ => "the unikernel was killed",
    };
    line.push(what).push(" (");
    match signal_name(sig) {
        Some(name) => line.push(name),
        None => line.push("signal ").dec(sig as u64),
    };
    line.push(")");
    match detail {
        Detail::None => {}
        Detail::Syscall { nr, ip } => {
            line.push(": ");
            if let Some(name) = syscall_name(nr) {
                line.push(name)
                    .push(" (system call ")
                    .dec(nr as u64)
                    .push(")");
            } else {
                line.push("system call ").dec(nr as u64);
            }
            // `syscall` is two bytes long: name the instruction itself.
            line.push(" at ").hex(ip.wrapping_sub(2));
        }
        Detail::Fault { addr, ip } => {
            if matches!(sig, libc::SIGSEGV | libc::SIGBUS) {
                line.push(": address ")
                    .hex(addr)
                    .push(", instruction at ")
                    .hex(ip);
            } else {
                line.push(" at ").hex(ip);
            }
        }
    }
    128 + sig
}

/// The handler for every reported signal: one line on stderr, then exit 128 + N.
extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let mut detail = Detail::None;
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo (SA_SIGINFO) and ucontext.
        unsafe {
            let code = (*info).si_code;
            // si_code > 0: the kernel raised it (a fault, a seccomp trap), not a process.
            if code > 0 {
                // The union after si_signo, si_errno, si_code (and padding) starts at
                // offset 16: `_sigsys { void *call_addr; int syscall; unsigned arch; }`,
                // `_sigfault { void *addr; ... }`.
                let fields = info.cast::<u8>().add(16);
                let ip = if ctx.is_null() {
                    0
                } else {
                    let uc = ctx.cast::<libc::ucontext_t>();
                    (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as u64
                };
                detail = if sig == libc::SIGSYS && code == 1 {
                    // SYS_SECCOMP
                    Detail::Syscall {
                        nr: i64::from(fields.add(8).cast::<i32>().read_unaligned()),
                        ip: fields.cast::<u64>().read_unaligned(),
                    }
                } else if matches!(
                    sig,
                    libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
                ) {
                    Detail::Fault {
                        addr: fields.cast::<u64>().read_unaligned(),
                        ip,
                    }
                } else {
                    Detail::None
                };
            }
        }
    }
    let mut line = Line::default();
    let code = describe(sig, detail, &mut line);
    line.byte(b'\n');
    stderr_write(line.as_bytes());
    exit_group(code)
}

/// Whether the handler reports signal `sig`: every signal whose default action ends the
/// process and that can be caught.
pub fn reported(sig: i32) -> bool {
    !matches!(
        sig,
        libc::SIGKILL
            | libc::SIGSTOP
            | libc::SIGPIPE
            | libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGURG
            | libc::SIGWINCH
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    )
}

/// Gives the guest its signal state: the reporting handler (on its own stack) for every
/// signal that would end the process, SIGPIPE ignored (a console whose reader went away
/// must not kill a server; console writes are best effort), the default for the rest
/// (which the guest cannot change: `rt_sigaction` is not in the policy), nothing blocked.
pub fn install() -> io::Result<()> {
    // SAFETY: a fresh private anonymous mapping; the result is checked.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SIGNAL_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ss = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: SIGNAL_STACK,
    };
    // SAFETY: `ss` describes the mapping above, which is never unmapped.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: an all-zero sigaction is valid; the handler is written to run in the
        // guest's sandbox (module docs).
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = if reported(sig) {
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                on_signal as *const () as libc::sighandler_t
            } else if sig == libc::SIGPIPE {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            libc::sigfillset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset, is a valid argument.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The name of signal `sig` (`SIGSYS`).
fn signal_name(sig: libc::c_int) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

macro_rules! syscall_names {
    ($($name:ident)*) => {
        /// The name of x86_64 system call `nr`, for the calls a program is likely to make.
        pub fn syscall_name(nr: i64) -> Option<&'static str> {
            $(if nr == libc::$name {
                return Some(&stringify!($name)[4..]);
            })*
            None
        }
    };
}

syscall_names!(
    SYS_read SYS_write SYS_open SYS_close SYS_stat SYS_fstat SYS_lstat SYS_poll SYS_lseek
    SYS_mmap SYS_mprotect SYS_munmap SYS_brk SYS_rt_sigaction SYS_rt_sigprocmask
    SYS_rt_sigreturn SYS_ioctl SYS_pread64 SYS_pwrite64 SYS_readv SYS_writev SYS_access
    SYS_pipe SYS_select SYS_sched_yield SYS_mremap SYS_msync SYS_madvise SYS_dup SYS_dup2
    SYS_pause SYS_nanosleep SYS_getitimer SYS_alarm SYS_setitimer SYS_getpid SYS_sendfile
    SYS_socket SYS_connect SYS_accept SYS_sendto SYS_recvfrom SYS_sendmsg SYS_recvmsg
    SYS_shutdown SYS_bind SYS_listen SYS_clone SYS_fork SYS_vfork SYS_execve SYS_exit
    SYS_wait4 SYS_kill SYS_uname SYS_fcntl SYS_flock SYS_fsync SYS_ftruncate SYS_getcwd
    SYS_chdir SYS_rename SYS_mkdir SYS_rmdir SYS_unlink SYS_readlink SYS_chmod SYS_umask
    SYS_gettimeofday SYS_getrlimit SYS_getrusage SYS_sysinfo SYS_times SYS_ptrace
    SYS_getuid SYS_getgid SYS_geteuid SYS_getegid SYS_getppid SYS_sigaltstack SYS_prctl
    SYS_arch_prctl SYS_gettid SYS_tkill SYS_futex SYS_sched_getaffinity
    SYS_set_tid_address SYS_clock_gettime SYS_clock_getres SYS_clock_nanosleep
    SYS_exit_group SYS_epoll_wait SYS_epoll_ctl SYS_tgkill SYS_openat SYS_newfstatat
    SYS_ppoll SYS_set_robust_list SYS_epoll_pwait SYS_timerfd_create SYS_timerfd_settime
    SYS_timerfd_gettime SYS_accept4 SYS_eventfd2 SYS_epoll_create1 SYS_dup3 SYS_pipe2
    SYS_prlimit64 SYS_getrandom SYS_memfd_create SYS_statx SYS_rseq SYS_io_uring_setup
    SYS_io_uring_enter SYS_epoll_pwait2 SYS_mount SYS_reboot SYS_seccomp SYS_bpf
);

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sig: i32, detail: Detail) -> (i32, String) {
        let mut line = Line::default();
        let code = describe(sig, detail, &mut line);
        (code, String::from_utf8(line.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn reports() {
        assert_eq!(
            text(
                libc::SIGSYS,
                Detail::Syscall {
                    nr: 39,
                    ip: 0x100a30
                }
            ),
            (
                159,
                "compose-spt: the unikernel made a system call the spt seccomp policy does not \
                 allow, and was killed (SIGSYS): getpid (system call 39) at 0x100a2e"
                    .into()
            )
        );
        let (code, msg) = text(libc::SIGSYS, Detail::Syscall { nr: 999, ip: 2 });
        assert_eq!(code, 159);
        assert!(msg.ends_with("(SIGSYS): system call 999 at 0x0"), "{msg}");
        let (code, msg) = text(
            libc::SIGSEGV,
            Detail::Fault {
                addr: 0x10_0000,
                ip: 0x10_0004,
            },
        );
        assert_eq!(code, 139);
        assert!(
            msg.contains("invalid memory access")
                && msg.ends_with("(SIGSEGV): address 0x100000, instruction at 0x100004"),
            "{msg}"
        );
        assert_eq!(
            text(libc::SIGTERM, Detail::None),
            (143, "compose-spt: Exiting on signal 15 (SIGTERM)".into())
        );
        assert_eq!(
            text(libc::SIGILL, Detail::Fault { addr: 5, ip: 5 }).1,
            "compose-spt: the unikernel crashed: illegal instruction (SIGILL) at 0x5"
        );
        assert_eq!(
            text(libc::SIGUSR1, Detail::None),
            (
                138,
                "compose-spt: the unikernel was killed (SIGUSR1)".into()
            )
        );
        assert!(text(40, Detail::None).1.ends_with("(signal 40)"));
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(syscall_name(libc::SYS_getpid), Some("getpid"));
        assert_eq!(syscall_name(libc::SYS_exit), Some("exit"));
        assert_eq!(syscall_name(100_000), None);
        let mut line = Line::default();
        line.dec(0)
            .push(" ")
            .dec(u64::MAX)
            .push(" ")
            .hex(0)
            .push(" ")
            .hex(u64::MAX);
        assert_eq!(
            line.as_bytes(),
            b"0 18446744073709551615 0x0 0xffffffffffffffff"
        );
        // An overlong line is cut, not overflowed.
        let mut line = Line::default();
        for _ in 0..100 {
            line.push("0123456789");
        }
        assert_eq!(line.as_bytes().len(), 512);
        assert!(reported(libc::SIGSYS) && reported(libc::SIGTERM) && !reported(libc::SIGCHLD));
    }
}
