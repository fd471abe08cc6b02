//! The seccomp policy at its edges: a forked child installs the filter the tender builds
//! for a set of fds and then makes one system call. Calls the policy allows let the child
//! exit 0 (they may fail: the fds need not be open); anything else must kill it with
//! SIGSYS.
//!
//! The filter is compiled before `fork`, so the child only makes raw system calls (no
//! allocation) between `fork` and `_exit`.

use compose_spt::seccomp::{self, BlockFd, Fds};

const EPOLL: i32 = 100;
const TIMER: i32 = 101;
const TAP: i32 = 102;
const BLOCK: i32 = 103;
const BS: u64 = 512;
const CAPACITY: u64 = 64 * BS;

/// Forks; the child installs the filter, makes `nr(args)`, then `_exit(0)`. Returns
/// whether the child was killed by SIGSYS (false: it exited 0).
fn killed(nr: i64, args: [u64; 6]) -> bool {
    let prog = seccomp::build(&Fds {
        epoll: EPOLL,
        timer: TIMER,
        net: vec![TAP],
        block: vec![BlockFd {
            fd: BLOCK,
            capacity: CAPACITY,
            block_size: BS,
        }],
    })
    .unwrap();
    // SAFETY: the child only makes async-signal-safe system calls (prctl, seccomp, the
    // call under test, _exit) and never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: leaving the child at once, without the parent's clean-up.
        unsafe {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            if seccomp::install(&prog).is_err() {
                libc::_exit(99);
            }
            libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS {
        return true;
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "nr {nr} {args:?}: status {status:#x}"
    );
    false
}

fn buf() -> u64 {
    static mut BUF: [u8; 4 * BS as usize] = [0; 4 * BS as usize];
    (&raw mut BUF) as u64
}

#[test]
fn console_and_taps() {
    let b = buf();
    assert!(!killed(libc::SYS_write, [1, b, 0, 0, 0, 0]), "write(1)");
    assert!(
        !killed(libc::SYS_write, [TAP as u64, b, 1, 0, 0, 0]),
        "write(tap)"
    );
    assert!(
        !killed(libc::SYS_read, [TAP as u64, b, 1, 0, 0, 0]),
        "read(tap)"
    );
    assert!(killed(libc::SYS_write, [2, b, 0, 0, 0, 0]), "write(2)");
    assert!(killed(libc::SYS_write, [0, b, 0, 0, 0, 0]), "write(0)");
    assert!(
        killed(libc::SYS_write, [BLOCK as u64, b, 1, 0, 0, 0]),
        "write(block)"
    );
    assert!(
        killed(libc::SYS_write, [EPOLL as u64, b, 1, 0, 0, 0]),
        "write(epoll)"
    );
    assert!(killed(libc::SYS_read, [0, b, 1, 0, 0, 0]), "read(0)");
    assert!(killed(libc::SYS_read, [1, b, 1, 0, 0, 0]), "read(1)");
    assert!(
        killed(libc::SYS_read, [BLOCK as u64, b, 1, 0, 0, 0]),
        "read(block)"
    );
    // The fd is compared on its 32 bits, as the kernel reads an int.
    assert!(
        !killed(libc::SYS_write, [1 | 1 << 32, b, 0, 0, 0, 0]),
        "write(1 with garbage above)"
    );
    assert!(killed(libc::SYS_writev, [1, b, 0, 0, 0, 0]), "writev(1)");
    assert!(
        killed(libc::SYS_recvfrom, [TAP as u64, b, 1, 0, 0, 0]),
        "recvfrom"
    );
}

#[test]
fn block_io_is_one_block_inside_the_image() {
    let b = buf();
    let blk = BLOCK as u64;
    for nr in [libc::SYS_pread64, libc::SYS_pwrite64] {
        assert!(!killed(nr, [blk, b, BS, 0, 0, 0]), "{nr}: first block");
        assert!(
            !killed(nr, [blk, b, BS, CAPACITY - BS, 0, 0]),
            "{nr}: last block"
        );
        // Solo5's policy does not check alignment; the guest's bindings do.
        assert!(!killed(nr, [blk, b, BS, 1, 0, 0]), "{nr}: unaligned");
        assert!(
            killed(nr, [blk, b, BS, CAPACITY - BS + 1, 0, 0]),
            "{nr}: past end"
        );
        assert!(
            killed(nr, [blk, b, BS, CAPACITY, 0, 0]),
            "{nr}: at capacity"
        );
        assert!(killed(nr, [blk, b, BS, u64::MAX, 0, 0]), "{nr}: offset -1");
        assert!(
            killed(nr, [blk, b, BS, 1 << 32, 0, 0]),
            "{nr}: high offset bits"
        );
        assert!(killed(nr, [blk, b, 2 * BS, 0, 0, 0]), "{nr}: two blocks");
        assert!(killed(nr, [blk, b, BS - 1, 0, 0, 0]), "{nr}: short count");
        assert!(
            killed(nr, [blk, b, BS | 1 << 32, 0, 0, 0]),
            "{nr}: count high bits"
        );
        assert!(killed(nr, [TAP as u64, b, BS, 0, 0, 0]), "{nr}: on a tap");
        assert!(killed(nr, [1, b, BS, 0, 0, 0]), "{nr}: on the console");
    }
    assert!(killed(libc::SYS_preadv, [blk, b, 1, 0, 0, 0]), "preadv");
}

#[test]
fn clocks_yield_exit_and_tls() {
    let b = buf();
    for (clock, allowed) in [
        (libc::CLOCK_REALTIME, true),
        (libc::CLOCK_MONOTONIC, true),
        (libc::CLOCK_PROCESS_CPUTIME_ID, false),
        (libc::CLOCK_THREAD_CPUTIME_ID, false),
        (libc::CLOCK_MONOTONIC_RAW, false),
        (libc::CLOCK_BOOTTIME, false),
    ] {
        let k = killed(libc::SYS_clock_gettime, [clock as u64, b, 0, 0, 0, 0]);
        assert_eq!(k, !allowed, "clock_gettime({clock})");
    }
    assert!(
        killed(libc::SYS_clock_getres, [1, b, 0, 0, 0, 0]),
        "clock_getres"
    );
    assert!(
        killed(libc::SYS_clock_nanosleep, [1, 0, b, 0, 0, 0]),
        "clock_nanosleep"
    );
    assert!(killed(libc::SYS_nanosleep, [b, 0, 0, 0, 0, 0]), "nanosleep");

    // epoll_pwait on the epoll fd with a zero timeout (EBADF here: fd 100 is not open).
    assert!(!killed(
        libc::SYS_epoll_pwait,
        [EPOLL as u64, b, 1, 0, 0, 0]
    ));
    assert!(killed(libc::SYS_epoll_pwait, [TAP as u64, b, 1, 0, 0, 0]));
    assert!(killed(libc::SYS_epoll_wait, [EPOLL as u64, b, 1, 0, 0, 0]));
    assert!(killed(
        libc::SYS_epoll_pwait2,
        [EPOLL as u64, b, 1, 0, 0, 0]
    ));
    assert!(killed(
        libc::SYS_epoll_ctl,
        [EPOLL as u64, 1, TAP as u64, b, 0, 0]
    ));
    assert!(!killed(
        libc::SYS_timerfd_settime,
        [TIMER as u64, 1, b, 0, 0, 0]
    ));
    assert!(killed(
        libc::SYS_timerfd_settime,
        [EPOLL as u64, 1, b, 0, 0, 0]
    ));
    assert!(killed(
        libc::SYS_timerfd_gettime,
        [TIMER as u64, b, 0, 0, 0, 0]
    ));
    assert!(
        killed(libc::SYS_read, [TIMER as u64, b, 8, 0, 0, 0]),
        "read(timerfd)"
    );

    // exit_group is the way out (the child's own _exit uses it), exit is not.
    assert!(killed(libc::SYS_exit, [0; 6]), "exit");
    // arch_prctl: only ARCH_SET_FS. (Setting FS to the current value keeps the child's
    // libc working until _exit.)
    let mut fs = 0u64;
    // SAFETY: ARCH_GET_FS writes one u64 into `fs`.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &raw mut fs) };
    assert!(
        !killed(libc::SYS_arch_prctl, [0x1002, fs, 0, 0, 0, 0]),
        "ARCH_SET_FS"
    );
    assert!(
        killed(libc::SYS_arch_prctl, [0x1003, b, 0, 0, 0, 0]),
        "ARCH_GET_FS"
    );
    assert!(
        killed(libc::SYS_arch_prctl, [0x1001, 0, 0, 0, 0, 0]),
        "ARCH_SET_GS"
    );
}

#[test]
fn everything_else_is_killed() {
    let b = buf();
    for (nr, name) in [
        (libc::SYS_getpid, "getpid"),
        (libc::SYS_open, "open"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_mprotect, "mprotect"),
        (libc::SYS_brk, "brk"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_rt_sigreturn, "rt_sigreturn"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_dup, "dup"),
        (libc::SYS_close, "close"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_seccomp, "seccomp"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_ptrace, "ptrace"),
    ] {
        // Harmless arguments: a bad fd or a null pointer where the call takes one.
        assert!(killed(nr, [u64::MAX, b, 0, 0, 0, 0]), "{name}");
    }
}
