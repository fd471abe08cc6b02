//! The seccomp policy, broken on purpose: a child process installs the same
//! filter the tender installs and then makes one system call. Allowed calls
//! let it exit 0; anything else must kill it with SIGSYS.
//!
//! The filter is compiled before `fork`, so the child only makes raw system
//! calls (no allocation) between `fork` and `_exit`.

use compose_hvt::seccomp::{self, Fds, KVM_GET_REGS, KVM_RUN};

const VCPU: i32 = 100;
const TAP: i32 = 101;
const BLOCK: i32 = 102;

/// Forks; the child installs the filter, runs `call`, then `_exit(0)`.
/// Returns the child's wait status.
fn in_filtered_child(call: fn()) -> i32 {
    let prog = seccomp::build(&Fds {
        vcpu: VCPU,
        net: vec![TAP],
        block: vec![BLOCK],
    })
    .unwrap();
    // SAFETY: the child only makes async-signal-safe system calls (prctl,
    // seccomp, the call under test, _exit) and never returns into the test
    // harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        if seccomp::install(&prog).is_err() {
            // SAFETY: leaving the child immediately.
            unsafe { libc::_exit(99) };
        }
        call();
        // SAFETY: leaving the child immediately.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    status
}

fn killed_by_sigsys(status: i32) -> bool {
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
}

fn exited_zero(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

#[test]
fn allowed_calls_pass() {
    // A write to stderr (fd 2) and to the TAP fd (EBADF here, but allowed).
    let s = in_filtered_child(|| {
        // SAFETY: raw write(2) of a static buffer.
        unsafe {
            libc::write(2, c"".as_ptr().cast(), 0);
            libc::write(TAP, c"x".as_ptr().cast(), 1);
        }
    });
    assert!(exited_zero(s), "status {s:#x}");
    // KVM_RUN on the vCPU fd (EBADF: fd 100 is not open, but the filter allows it).
    let s = in_filtered_child(|| {
        // SAFETY: an ioctl on a closed fd only fails.
        unsafe { libc::ioctl(VCPU, KVM_RUN as libc::Ioctl, 0) };
    });
    assert!(exited_zero(s), "status {s:#x}");
    // pread64 on the block fd.
    let s = in_filtered_child(|| {
        let mut b = [0u8; 4];
        // SAFETY: `b` is a valid 4-byte buffer.
        unsafe { libc::pread(BLOCK, b.as_mut_ptr().cast(), 4, 0) };
    });
    assert!(exited_zero(s), "status {s:#x}");
}

#[test]
fn forbidden_syscall_kills() {
    let s = in_filtered_child(|| {
        // SAFETY: getpid has no arguments.
        unsafe { libc::syscall(libc::SYS_getpid) };
    });
    assert!(killed_by_sigsys(s), "getpid: status {s:#x}");
    let s = in_filtered_child(|| {
        // SAFETY: socket(2) takes no pointers.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    });
    assert!(killed_by_sigsys(s), "socket: status {s:#x}");
    let s = in_filtered_child(|| {
        // SAFETY: a path that is a valid C string.
        unsafe { libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY) };
    });
    assert!(killed_by_sigsys(s), "open: status {s:#x}");
}

#[test]
fn argument_filters_kill() {
    // write to an fd that is neither the console nor a TAP.
    let s = in_filtered_child(|| {
        // SAFETY: raw write(2) of a static buffer.
        unsafe { libc::write(BLOCK, c"x".as_ptr().cast(), 1) };
    });
    assert!(killed_by_sigsys(s), "write(block fd): status {s:#x}");
    // read from the console.
    let s = in_filtered_child(|| {
        let mut b = [0u8; 1];
        // SAFETY: `b` is a valid 1-byte buffer.
        unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) };
    });
    assert!(killed_by_sigsys(s), "read(0): status {s:#x}");
    // Another KVM ioctl on the vCPU fd, and KVM_GET_REGS on another fd.
    let s = in_filtered_child(|| {
        // SAFETY: an ioctl on a closed fd only fails.
        unsafe { libc::ioctl(VCPU, 0xAE9A as libc::Ioctl, 0) };
    });
    assert!(
        killed_by_sigsys(s),
        "ioctl(KVM_SET_REGS-ish): status {s:#x}"
    );
    let s = in_filtered_child(|| {
        // SAFETY: an ioctl on a closed fd only fails.
        unsafe { libc::ioctl(TAP, KVM_GET_REGS as libc::Ioctl, 0) };
    });
    assert!(killed_by_sigsys(s), "ioctl(tap fd): status {s:#x}");
    // An executable mapping.
    let s = in_filtered_child(|| {
        // SAFETY: a fresh anonymous mapping; never used.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
    });
    assert!(killed_by_sigsys(s), "mmap(PROT_EXEC): status {s:#x}");
    // A clock other than REALTIME/MONOTONIC, through the raw syscall (the
    // vDSO would not trap).
    let s = in_filtered_child(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec.
        unsafe {
            libc::syscall(
                libc::SYS_clock_gettime,
                libc::CLOCK_PROCESS_CPUTIME_ID,
                &mut ts,
            )
        };
    });
    assert!(killed_by_sigsys(s), "clock_gettime(CPUTIME): status {s:#x}");
}
