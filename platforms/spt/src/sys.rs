//! The Linux system calls an spt guest makes, raw (no libc, no vDSO).
//!
//! The spt tender's seccomp filter allows exactly these, each with argument constraints
//! (fact sheet §4.4): `read`/`write` on the tap fds (`write` also on fd 1, the console),
//! `pread64`/`pwrite64` of exactly one block inside a block device, `clock_gettime` on
//! `CLOCK_REALTIME` and `CLOCK_MONOTONIC`, `epoll_pwait` on the tender's epoll fd,
//! `timerfd_settime` on its timerfd, `exit_group`, and `arch_prctl(ARCH_SET_FS)`. Any other
//! call, or one of these with other arguments, kills the unikernel with SIGSYS.
//!
//! The typed wrappers below are safe: they only pass buffers the borrow checker vouches
//! for. Calling one with arguments the filter refuses is not memory-unsafe either, only
//! fatal. [`syscall`] is the raw instruction, for anything else (tests of the filter).
//!
//! The same code runs on an x86_64 Linux host, which is how the wrappers are unit-tested.

/// x86_64 system call numbers.
pub mod nr {
    /// `read(fd, buf, count)`
    pub const READ: usize = 0;
    /// `write(fd, buf, count)`
    pub const WRITE: usize = 1;
    /// `pread64(fd, buf, count, offset)`
    pub const PREAD64: usize = 17;
    /// `pwrite64(fd, buf, count, offset)`
    pub const PWRITE64: usize = 18;
    /// `arch_prctl(code, addr)`
    pub const ARCH_PRCTL: usize = 158;
    /// `clock_gettime(clockid, tp)`
    pub const CLOCK_GETTIME: usize = 228;
    /// `exit_group(status)`
    pub const EXIT_GROUP: usize = 231;
    /// `epoll_pwait(epfd, events, maxevents, timeout, sigmask, sigsetsize)`
    pub const EPOLL_PWAIT: usize = 281;
    /// `timerfd_settime(fd, flags, new_value, old_value)`
    pub const TIMERFD_SETTIME: usize = 286;
}

/// `EINTR`: interrupted (epoll_pwait after SIGSTOP/SIGCONT, for example).
pub const EINTR: i32 = 4;
/// `EAGAIN`: nothing to read on a non-blocking fd.
pub const EAGAIN: i32 = 11;
/// `CLOCK_REALTIME`
pub const CLOCK_REALTIME: u32 = 0;
/// `CLOCK_MONOTONIC`
pub const CLOCK_MONOTONIC: u32 = 1;
/// `TFD_TIMER_ABSTIME`: `timerfd_settime`'s time is absolute.
pub const TFD_TIMER_ABSTIME: u32 = 1;
/// `ARCH_SET_FS`: `arch_prctl` sets the FS base.
pub const ARCH_SET_FS: u32 = 0x1002;

/// A failed call's error number (positive, as `errno`).
pub type Errno = i32;

/// Makes system call `nr` with up to six arguments (unused ones are ignored by the
/// kernel); returns the kernel's raw result (`-errno` on failure).
///
/// # Safety
///
/// The call must be sound for its arguments: every pointer must be valid for what the
/// call reads or writes, and the call must not invalidate memory or state that Rust code
/// relies on (unmapping memory, changing the FS base while something uses TLS, ...).
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn syscall(nr: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller vouches for the call. `syscall` clobbers rcx and r11 only and does
    // not touch the user stack; the asm is not `nomem`, so memory the kernel reads or
    // writes through pointer arguments is treated as used and changed.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// Not x86_64 (a host build for docs or lints): every call fails with `ENOSYS`.
///
/// # Safety
///
/// None needed; it has the x86_64 version's signature.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn syscall(_nr: usize, _args: [usize; 6]) -> isize {
    -38
}

/// The result of a call that returns a count: `Ok(count)` or `Err(errno)`.
fn check(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(-ret as Errno)
    } else {
        Ok(ret as usize)
    }
}

/// `write(fd, bytes)`: the number of bytes written.
pub fn write(fd: i32, bytes: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `bytes.len()` bytes of `bytes`.
    check(unsafe {
        syscall(
            nr::WRITE,
            [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
        )
    })
}

/// `read(fd, buf)`: the number of bytes read.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    check(unsafe {
        syscall(
            nr::READ,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// `pread64(fd, buf, offset)`: the number of bytes read.
pub fn pread64(fd: i32, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    check(unsafe {
        syscall(
            nr::PREAD64,
            [
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                offset as usize,
                0,
                0,
            ],
        )
    })
}

/// `pwrite64(fd, bytes, offset)`: the number of bytes written.
pub fn pwrite64(fd: i32, bytes: &[u8], offset: u64) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `bytes.len()` bytes of `bytes`.
    check(unsafe {
        syscall(
            nr::PWRITE64,
            [
                fd as usize,
                bytes.as_ptr() as usize,
                bytes.len(),
                offset as usize,
                0,
                0,
            ],
        )
    })
}

/// `struct timespec` (x86_64: two 64-bit fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: i64,
}

impl Timespec {
    /// The time `ns` nanoseconds after the clock's epoch.
    pub const fn from_nanos(ns: u64) -> Self {
        Timespec {
            sec: (ns / 1_000_000_000) as i64,
            nsec: (ns % 1_000_000_000) as i64,
        }
    }

    /// Nanoseconds since the clock's epoch (0 before it; saturating).
    pub fn as_nanos(self) -> u64 {
        let sec = u64::try_from(self.sec).unwrap_or(0);
        let nsec = u64::try_from(self.nsec).unwrap_or(0);
        sec.saturating_mul(1_000_000_000).saturating_add(nsec)
    }
}

/// `clock_gettime(clock)`; `clock` must be [`CLOCK_REALTIME`] or [`CLOCK_MONOTONIC`] for
/// the filter to let it through.
pub fn clock_gettime(clock: u32) -> Result<Timespec, Errno> {
    let mut ts = Timespec::default();
    // SAFETY: the kernel writes one `struct timespec` into `ts`.
    check(unsafe {
        syscall(
            nr::CLOCK_GETTIME,
            [clock as usize, (&raw mut ts) as usize, 0, 0, 0, 0],
        )
    })?;
    Ok(ts)
}

/// `struct itimerspec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Itimerspec {
    /// Period of a repeating timer (zero: one-shot).
    pub interval: Timespec,
    /// First expiry (zero disarms the timer).
    pub value: Timespec,
}

/// `timerfd_settime(fd, flags, new, NULL)`.
pub fn timerfd_settime(fd: i32, flags: u32, new: &Itimerspec) -> Result<(), Errno> {
    // SAFETY: the kernel reads one `struct itimerspec` from `new`; the old value is not
    // asked for (NULL).
    check(unsafe {
        syscall(
            nr::TIMERFD_SETTIME,
            [
                fd as usize,
                flags as usize,
                new as *const _ as usize,
                0,
                0,
                0,
            ],
        )
    })
    .map(drop)
}

/// `struct epoll_event`, which is packed on x86_64 (12 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EpollEvent {
    /// `EPOLLIN` and friends.
    pub events: u32,
    /// The tag given when the fd was added (the tender uses the device handle).
    pub data: u64,
}

const _: () = assert!(core::mem::size_of::<EpollEvent>() == 12);

/// `epoll_pwait(epfd, events, events.len(), timeout_ms, NULL, 0)`: the number of events
/// filled in. A timeout of -1 waits for ever.
pub fn epoll_pwait(epfd: i32, events: &mut [EpollEvent], timeout_ms: i32) -> Result<usize, Errno> {
    let max = events.len().min(i32::MAX as usize);
    // SAFETY: the kernel writes at most `max` events into `events`; no signal mask is
    // passed (NULL, size 0).
    check(unsafe {
        syscall(
            nr::EPOLL_PWAIT,
            [
                epfd as usize,
                events.as_mut_ptr() as usize,
                max,
                timeout_ms as isize as usize,
                0,
                0,
            ],
        )
    })
}

/// `exit_group(status)`: ends the process (the only way out: `exit` is not allowed).
pub fn exit_group(status: i32) -> ! {
    // SAFETY: exit_group takes no pointers and does not return.
    unsafe { syscall(nr::EXIT_GROUP, [status as usize, 0, 0, 0, 0, 0]) };
    // Not reached; a filter that refused exit_group would have killed the process.
    loop {
        core::hint::spin_loop();
    }
}

/// `arch_prctl(ARCH_SET_FS, base)`: sets the FS base, the thread pointer of x86_64 TLS.
///
/// # Safety
///
/// Nothing running may rely on the current FS base (thread-local storage): the guest
/// runtime uses none.
pub unsafe fn arch_prctl_set_fs(base: u64) -> Result<(), Errno> {
    // SAFETY: the caller promises nothing uses the old FS base; the call takes no pointer
    // it dereferences.
    check(unsafe {
        syscall(
            nr::ARCH_PRCTL,
            [ARCH_SET_FS as usize, base as usize, 0, 0, 0, 0],
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    //! These run on the x86_64 Linux host, without a filter: the same instructions the
    //! guest executes.
    use super::*;

    const EPOLL_CREATE1: usize = 291;
    const EPOLL_CTL: usize = 233;
    const TIMERFD_CREATE: usize = 283;
    const PIPE2: usize = 293;
    const CLOSE: usize = 3;
    const EPOLL_CTL_ADD: usize = 1;
    const EPOLLIN: u32 = 1;

    fn raw(nr: usize, args: [usize; 6]) -> usize {
        // SAFETY: the tests only make calls whose pointer arguments are valid.
        let r = unsafe { syscall(nr, args) };
        assert!(r >= 0, "syscall {nr}: errno {}", -r);
        r as usize
    }

    fn epoll_add(epfd: i32, fd: i32, tag: u64) {
        let ev = EpollEvent {
            events: EPOLLIN,
            data: tag,
        };
        raw(
            EPOLL_CTL,
            [
                epfd as usize,
                EPOLL_CTL_ADD,
                fd as usize,
                &ev as *const _ as usize,
                0,
                0,
            ],
        );
    }

    #[test]
    fn clocks() {
        let a = clock_gettime(CLOCK_MONOTONIC).unwrap().as_nanos();
        let b = clock_gettime(CLOCK_MONOTONIC).unwrap().as_nanos();
        assert!(b >= a && a > 0);
        let wall = clock_gettime(CLOCK_REALTIME).unwrap().sec;
        assert!(wall > 1_577_836_800, "{wall}");
        assert_eq!(
            Timespec::from_nanos(1_500_000_001).as_nanos(),
            1_500_000_001
        );
    }

    #[test]
    fn errors_come_back_as_errno() {
        // fd 12345 is not open.
        assert_eq!(write(12345, b"x"), Err(9)); // EBADF
        assert_eq!(pread64(12345, &mut [0; 4], 0), Err(9));
    }

    #[test]
    fn pipe_read_write_and_epoll_with_a_timer() {
        let mut fds = [0i32; 2];
        const O_NONBLOCK: usize = 0o4000;
        raw(PIPE2, [fds.as_mut_ptr() as usize, O_NONBLOCK, 0, 0, 0, 0]);
        let [r, w] = fds;
        let epfd = raw(EPOLL_CREATE1, [0; 6]) as i32;
        let tfd = raw(
            TIMERFD_CREATE,
            [CLOCK_MONOTONIC as usize, O_NONBLOCK, 0, 0, 0, 0],
        ) as i32;
        epoll_add(epfd, tfd, solo5_abi::spt::TIMER_EPOLL_TAG);
        epoll_add(epfd, r, 3);

        // Nothing to read yet.
        assert_eq!(read(r, &mut [0; 8]), Err(EAGAIN));
        // A timer 30 ms ahead wakes the wait, with only the timer's tag.
        let now = clock_gettime(CLOCK_MONOTONIC).unwrap().as_nanos();
        let deadline = now + 30_000_000;
        let it = Itimerspec {
            interval: Timespec::default(),
            value: Timespec::from_nanos(deadline),
        };
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it).unwrap();
        let mut events = [EpollEvent::default(); 4];
        let n = epoll_pwait(epfd, &mut events, -1).unwrap();
        assert!(clock_gettime(CLOCK_MONOTONIC).unwrap().as_nanos() >= deadline);
        assert_eq!(n, 1);
        assert_eq!({ events[0].data }, solo5_abi::spt::TIMER_EPOLL_TAG);
        // Re-arming clears the expiry, so the next wait blocks until the pipe has data.
        let it = Itimerspec {
            interval: Timespec::default(),
            value: Timespec::from_nanos(now + 3_600_000_000_000),
        };
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it).unwrap();
        assert_eq!(write(w, b"frame").unwrap(), 5);
        let n = epoll_pwait(epfd, &mut events, -1).unwrap();
        assert_eq!((n, { events[0].data }), (1, 3));
        let mut buf = [0u8; 16];
        assert_eq!(read(r, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"frame");
        for fd in [r, w, epfd, tfd] {
            raw(CLOSE, [fd as usize, 0, 0, 0, 0, 0]);
        }
    }

    /// The yield the bindings make: a past deadline returns at once, a frame on a tap
    /// returns its handle in the ready set, a future deadline returns an empty set.
    #[test]
    fn bindings_wait() {
        use crate::bindings::wait;
        let mut fds = [0i32; 2];
        const O_NONBLOCK: usize = 0o4000;
        raw(PIPE2, [fds.as_mut_ptr() as usize, O_NONBLOCK, 0, 0, 0, 0]);
        let [r, w] = fds;
        let epfd = raw(EPOLL_CREATE1, [0; 6]) as i32;
        let tfd = raw(
            TIMERFD_CREATE,
            [CLOCK_MONOTONIC as usize, O_NONBLOCK, 0, 0, 0, 0],
        ) as i32;
        epoll_add(epfd, tfd, solo5_abi::spt::TIMER_EPOLL_TAG);
        epoll_add(epfd, r, 5);
        let now = || clock_gettime(CLOCK_MONOTONIC).unwrap().as_nanos();

        assert_eq!(wait(epfd, tfd, 0), Ok(0), "deadline 0 still fires");
        let t0 = now();
        assert_eq!(wait(epfd, tfd, t0 + 20_000_000), Ok(0));
        assert!(now() >= t0 + 20_000_000);
        write(w, b"x").unwrap();
        assert_eq!(wait(epfd, tfd, now() + 3_600_000_000_000), Ok(1 << 5));
        // Level-triggered: still ready until read.
        assert_eq!(wait(epfd, tfd, now() + 3_600_000_000_000), Ok(1 << 5));
        read(r, &mut [0; 4]).unwrap();
        assert_eq!(wait(epfd, tfd, now() + 1_000_000), Ok(0));
        assert_eq!(wait(-1, tfd, 0), Err(9), "a bad epoll fd is EBADF");
        for fd in [r, w, epfd, tfd] {
            raw(CLOSE, [fd as usize, 0, 0, 0, 0, 0]);
        }
    }
}
