//! The reactor: waits in `epoll(7)` for the file descriptors tasks are blocked on.
//!
//! A task whose non-blocking syscall fails with `EWOULDBLOCK` awaits [`readable`] or
//! [`writable`]. The first wait on a descriptor registers it with the thread's epoll
//! instance, edge-triggered, for both directions; it stays registered until its owner
//! calls [`forget`] before closing it. An edge that arrives while a task waits wakes that
//! task; one that arrives while nobody waits is remembered, so the next wait completes at
//! once and the task retries its syscall (which then tells). A wait costs nothing in the
//! kernel beyond the first, and [`park`] costs what is ready, not what is registered: with
//! thousands of idle connections, a turn of the executor no longer walks them all.
//!
//! Only after `EWOULDBLOCK` may a task wait (edge-triggered: data already there gives no
//! new edge). The state is per thread: the executor, every task and so every registration
//! live on the thread that called [`crate::run`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// How long to sleep when there is neither a timer nor a task waiting on a descriptor.
/// Nothing in the unikernel can then wake a task; a waker called from another host thread
/// is picked up at the latest after this long.
const IDLE_NAP_MS: libc::c_int = 1000;

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interest {
    Read,
    Write,
}

/// A registered descriptor: the task waiting in each direction, and edges nobody waited for.
#[derive(Default)]
struct Slot {
    read: Option<Waker>,
    write: Option<Waker>,
    readable: bool,
    writable: bool,
}

#[derive(Default)]
struct Reactor {
    /// The epoll instance (-1 until the first registration).
    epfd: RawFd,
    slots: HashMap<RawFd, Slot>,
    /// Wakers held in `slots`.
    waiting: usize,
}

thread_local! {
    static REACTOR: RefCell<Reactor> = RefCell::new(Reactor { epfd: -1, ..Reactor::default() });
}

/// Creates the thread's epoll instance now (else the first wait does), so that the
/// descriptors a unikernel holds do not change once it serves: the executor calls it
/// before the application starts, and so does a listening socket.
pub(crate) fn init() {
    REACTOR.with_borrow_mut(|r| r.epoll());
}

impl Reactor {
    /// The epoll instance, created on first use (-1 if it cannot be).
    fn epoll(&mut self) -> RawFd {
        if self.epfd < 0 {
            // SAFETY: no pointers; the result is checked by the callers.
            self.epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        }
        self.epfd
    }

    /// Registers `fd` (both directions, edge-triggered). `false` if epoll takes no such
    /// descriptor (a regular file is always ready) or the call failed.
    fn register(&mut self, fd: RawFd) -> bool {
        if self.epoll() < 0 {
            return false;
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: fd as u32 as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
    }
}

/// Completes once `fd` may be read (or accepted) without blocking.
pub(crate) fn readable(fd: RawFd) -> Readiness {
    Readiness {
        fd,
        interest: Interest::Read,
        waits: false,
    }
}

/// Completes once `fd` may be written (or a connect has finished) without blocking.
pub(crate) fn writable(fd: RawFd) -> Readiness {
    Readiness {
        fd,
        interest: Interest::Write,
        waits: false,
    }
}

/// Removes `fd` from the reactor: its owner calls this before closing it, so that a new
/// descriptor with the same number starts unregistered.
pub(crate) fn forget(fd: RawFd) {
    let _ = REACTOR.try_with(|r| {
        let mut r = r.borrow_mut();
        if let Some(slot) = r.slots.remove(&fd) {
            r.waiting -= slot.read.is_some() as usize + slot.write.is_some() as usize;
            if r.epfd >= 0 {
                // SAFETY: no pointers are read for EPOLL_CTL_DEL (a null event is allowed).
                unsafe {
                    libc::epoll_ctl(r.epfd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
                }
            }
        }
    });
}

/// A wait for one descriptor to become ready; see [`readable`] and [`writable`].
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct Readiness {
    fd: RawFd,
    interest: Interest,
    /// Whether its waker is in the slot (one task waits per descriptor and direction).
    waits: bool,
}

impl Future for Readiness {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (fd, interest) = (self.fd, self.interest);
        let waits = &mut self.waits;
        REACTOR.with_borrow_mut(|r| {
            if !r.slots.contains_key(&fd) {
                if !r.register(fd) {
                    // Not a descriptor epoll waits for: the retry will tell.
                    return Poll::Ready(());
                }
                r.slots.insert(fd, Slot::default());
            }
            let slot = r.slots.get_mut(&fd).expect("registered above");
            let (ready, waker) = match interest {
                Interest::Read => (&mut slot.readable, &mut slot.read),
                Interest::Write => (&mut slot.writable, &mut slot.write),
            };
            if std::mem::take(ready) {
                *waits = false;
                return Poll::Ready(());
            }
            let new = waker.is_none();
            match waker {
                Some(w) => w.clone_from(cx.waker()),
                None => *waker = Some(cx.waker().clone()),
            }
            r.waiting += new as usize;
            *waits = true;
            Poll::Pending
        })
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if !self.waits {
            return;
        }
        // A wait given up (a timeout): its waker leaves the slot. `try_with`: the task may
        // be dropped while the thread is exiting.
        let (fd, interest) = (self.fd, self.interest);
        let _ = REACTOR.try_with(|r| {
            let mut r = r.borrow_mut();
            let Some(slot) = r.slots.get_mut(&fd) else {
                return;
            };
            let waker = match interest {
                Interest::Read => &mut slot.read,
                Interest::Write => &mut slot.write,
            };
            if waker.take().is_some() {
                r.waiting -= 1;
            }
        });
    }
}

/// Blocks until a registered descriptor is ready or `timeout_ns` passes (`None`: no timer),
/// then wakes the tasks whose descriptor is ready. May return early (on a signal).
pub(crate) fn park(timeout_ns: Option<u64>) {
    let (epfd, waiting) = REACTOR.with_borrow(|r| (r.epfd, r.waiting));
    let timeout_ms = match timeout_ns {
        // Round up: waking before the deadline would only make the executor park again.
        Some(ns) => libc::c_int::try_from(ns.div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX),
        None if waiting == 0 => IDLE_NAP_MS,
        None => -1,
    };
    if epfd < 0 {
        // Nothing was ever registered: only the timer.
        let ms = if timeout_ms < 0 {
            IDLE_NAP_MS
        } else {
            timeout_ms
        };
        std::thread::sleep(std::time::Duration::from_millis(ms as u64));
        return;
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    // SAFETY: `events` is a writable array of EVENTS epoll_event structs.
    let n =
        unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS as libc::c_int, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return;
        }
        panic!("compose-unix: epoll_wait(2) failed: {err}");
    }
    let mut ready: Vec<Waker> = Vec::new();
    // An edge is remembered in the slot (the woken task finds it there), and wakes the
    // task waiting for it, if any.
    let mut fire = |flag: &mut bool, waker: &mut Option<Waker>| {
        *flag = true;
        ready.extend(waker.take());
    };
    REACTOR.with_borrow_mut(|r| {
        for ev in &events[..n as usize] {
            let fd = ev.u64 as u32 as RawFd;
            let bits = ev.events as libc::c_int;
            let Some(slot) = r.slots.get_mut(&fd) else {
                continue;
            };
            let broken = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
            if broken || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0 {
                fire(&mut slot.readable, &mut slot.read);
            }
            if broken || bits & libc::EPOLLOUT != 0 {
                fire(&mut slot.writable, &mut slot.write);
            }
        }
    });
    REACTOR.with_borrow_mut(|r| r.waiting -= ready.len());
    // Wake outside the borrow: a waker may be anything.
    for waker in ready {
        waker.wake();
    }
}

/// The number of tasks waiting on a descriptor (for tests).
#[cfg(test)]
pub(crate) fn registrations() -> usize {
    REACTOR.with_borrow(|r| r.waiting)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn fires_on_an_edge_remembers_one_nobody_waited_for_and_forgets() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fired = || flag.swap(false, std::sync::atomic::Ordering::SeqCst);
        let waker = Waker::from(std::sync::Arc::new(Flag(flag.clone())));
        let mut cx = Context::from_waker(&waker);

        let mut buf = [0u8; 8];
        assert!(a.read(&mut buf).is_err()); // EWOULDBLOCK: now it may wait
        // The first wait registers `a`; a writable socket reports that at once, which is
        // remembered (nobody waits to write).
        let mut wait = std::pin::pin!(readable(a.as_raw_fd()));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(registrations(), 1);
        park(Some(5_000_000));
        assert!(!fired(), "nothing to read, yet woken");
        assert!(wait.as_mut().poll(&mut cx).is_pending());

        b.write_all(b"x").unwrap();
        park(Some(1_000_000_000));
        assert!(fired());
        assert_eq!(registrations(), 0);
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(a.read(&mut buf).unwrap(), 1);

        // The writable edge of the registration was kept: a write wait completes at once.
        assert!(
            std::pin::pin!(writable(a.as_raw_fd()))
                .poll(&mut cx)
                .is_ready()
        );

        // An edge while nobody waits: the next wait completes at once, the one after waits.
        b.write_all(b"y").unwrap();
        park(Some(1_000_000_000));
        assert!(!fired());
        assert!(
            std::pin::pin!(readable(a.as_raw_fd()))
                .poll(&mut cx)
                .is_ready()
        );
        assert_eq!(a.read(&mut buf).unwrap(), 1);
        let mut again = Box::pin(readable(a.as_raw_fd()));
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(registrations(), 1);
        drop(again);

        // Forgotten before close: a new socket with the same number is registered anew.
        let fd = a.as_raw_fd();
        forget(fd);
        assert_eq!(registrations(), 0);
        drop(a);
        let (c, mut d) = UnixStream::pair().unwrap();
        c.set_nonblocking(true).unwrap();
        let mut on_c = std::pin::pin!(readable(c.as_raw_fd()));
        assert!(on_c.as_mut().poll(&mut cx).is_pending());
        d.write_all(b"z").unwrap();
        park(Some(1_000_000_000));
        assert!(fired(), "a reused descriptor number was never registered");
        forget(c.as_raw_fd());
    }
}
