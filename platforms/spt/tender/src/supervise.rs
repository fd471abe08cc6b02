//! The guest runs in a child process; the parent waits for it and says how it ended.
//!
//! A seccomp violation kills the process that made the call, and with it any code that
//! could explain what happened: under solo5-spt, where tender and guest are one process,
//! the user sees a bare "Bad system call" from the shell (status 159), or nothing at all
//! under a supervisor that only logs exit codes. So `compose-spt` forks first: the child
//! is a complete Solo5 spt tender (it sets up the guest, installs the filter and becomes
//! the guest), and the parent, which never runs guest code and keeps no guest resources,
//! waits for it and reports:
//!
//! * the guest exited: the parent exits with the same status (`solo5_exit(n)` → n);
//! * the guest was killed by signal N: the parent prints why on stderr and exits with
//!   128 + N, the status a shell shows for a process killed by that signal, so scripts
//!   written for solo5-spt see the same number: 159 for a forbidden system call
//!   (SIGSYS), 139 for a memory fault (SIGSEGV), 130/143 for SIGINT/SIGTERM.
//!
//! Which call was refused is not something the parent can learn, but the kernel logs
//! every seccomp kill in its audit log (`dmesg`: `type=1326 ... pid=N comm="spt:KERNEL"
//! ... syscall=S ... ip=A`, A being a guest address to look up in the unikernel's
//! symbols); the SIGSYS message gives the pid to look for.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to the parent are passed on to the guest,
//! which dies of them (it installs no handlers, as with solo5-spt); if the parent itself
//! dies, even of SIGKILL, the kernel kills the guest (`PR_SET_PDEATHSIG`), so no guest
//! outlives its tender.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::PROGRAM;

/// The child's pid, for the forwarding handler (0 until forked).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signals the parent forwards to the guest.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes no pointers.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs `child` in a child process and returns the exit code for this process: the
/// child's exit status, or 128 + N (with a message) if a signal N killed it.
///
/// `child` returns the code to exit with when it fails before the guest runs; once the
/// guest runs it never returns.
pub fn run(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: getpid(2) cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the tender is single-threaded at this point, so the child may go on running
    // arbitrary code (allocating, formatting) after the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!(
            "{PROGRAM}: Could not start the guest process: {}",
            io::Error::last_os_error()
        );
        return 1;
    }
    if pid == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer; getppid cannot fail.
        let orphan = unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
        };
        let code = if orphan { 1 } else { child() };
        // SAFETY: _exit(2) ends the child without running the parent's atexit handlers or
        // flushing buffers it inherited.
        unsafe { libc::_exit(code) };
    }
    CHILD.store(pid, Ordering::Relaxed);
    for sig in FORWARDED {
        // SAFETY: an all-zero sigaction is valid; the handler only calls kill(2), which is
        // async-signal-safe, and SA_RESTART keeps waitpid going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let status = loop {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break status;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            eprintln!("{PROGRAM}: Could not wait for the guest process: {e}");
            return 1;
        }
    };
    let (code, message) = outcome(status, pid);
    if let Some(message) = message {
        // Not eprintln!, which panics when stderr is gone.
        let _ = writeln!(io::stderr(), "{PROGRAM}: {message}");
    }
    code
}

/// The exit code for the wait status of guest process `pid`, and what to tell the user.
pub fn outcome(status: libc::c_int, pid: libc::pid_t) -> (i32, Option<String>) {
    if libc::WIFEXITED(status) {
        return (libc::WEXITSTATUS(status), None);
    }
    if !libc::WIFSIGNALED(status) {
        return (1, Some(format!("unexpected wait status {status:#x}")));
    }
    let sig = libc::WTERMSIG(status);
    let what = match sig {
        libc::SIGSYS => "the unikernel made a system call the spt seccomp policy does not \
                         allow, and was killed"
            .to_owned(),
        libc::SIGSEGV | libc::SIGBUS => "the unikernel crashed: invalid memory access (a \
                                         write to read-only memory, a null pointer, a stack \
                                         overflow...)"
            .to_owned(),
        libc::SIGILL => "the unikernel crashed: illegal instruction".to_owned(),
        libc::SIGFPE => "the unikernel crashed: arithmetic fault".to_owned(),
        libc::SIGTRAP => "the unikernel stopped at a breakpoint instruction".to_owned(),
        libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT => {
            format!("Exiting on signal {sig}")
        }
        _ => "the unikernel was killed".to_owned(),
    };
    let core = if libc::WCOREDUMP(status) {
        " (core dumped)"
    } else {
        ""
    };
    // The kernel's audit log records every seccomp kill with the call's number and
    // address (`type=1326 ... pid=N comm="spt:..." ... syscall=S ... ip=A`).
    let hint = if sig == libc::SIGSYS {
        format!("; the kernel's audit log has its number and address (dmesg: type=1326 pid={pid})")
    } else {
        String::new()
    };
    (
        128 + sig,
        Some(format!("{what} ({}){core}{hint}", signal_name(sig))),
    )
}

/// The name of signal `sig` (`SIGSYS`), or its number.
fn signal_name(sig: libc::c_int) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait status for a process killed by `sig` (Linux encoding).
    fn killed(sig: i32, core: bool) -> i32 {
        sig | if core { 0x80 } else { 0 }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(outcome(7 << 8, 9), (7, None));
        assert_eq!(outcome(255 << 8, 9), (255, None));
        let (code, msg) = outcome(killed(libc::SIGSYS, false), 42);
        assert_eq!(code, 159);
        let msg = msg.unwrap();
        assert!(
            msg.contains("system call")
                && msg.contains("killed (SIGSYS); ")
                && msg.contains("pid=42"),
            "{msg}"
        );
        let (code, msg) = outcome(killed(libc::SIGSEGV, true), 9);
        assert_eq!(code, 139);
        assert!(msg.unwrap().ends_with("(SIGSEGV) (core dumped)"));
        assert_eq!(
            outcome(killed(libc::SIGTERM, false), 9),
            (143, Some("Exiting on signal 15 (SIGTERM)".into()))
        );
        assert_eq!(outcome(killed(libc::SIGKILL, false), 9).0, 137);
        assert!(
            outcome(killed(40, false), 9)
                .1
                .unwrap()
                .contains("signal 40")
        );
    }
}
