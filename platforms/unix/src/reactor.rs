//! The reactor: waits in `poll(2)` for the file descriptors tasks are blocked on.
//!
//! A task whose non-blocking syscall fails with `EWOULDBLOCK` awaits [`readable`] or
//! [`writable`]. That future registers `(fd, interest, waker)` here and stays pending until
//! [`park`] sees the descriptor ready (or in error, or hung up); then it completes and the
//! task retries the syscall. Registrations are one-shot: a fired entry is removed, and a
//! future dropped before firing removes its own entry, so nothing stale is polled.
//!
//! The state is per thread: the executor, every task and so every registration live on
//! the thread that called [`crate::run`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// How long to sleep when there is neither a timer nor a descriptor to wait for. Nothing
/// in the unikernel can then wake a task; a waker called from another host thread is
/// picked up at the latest after this long.
const IDLE_NAP_MS: libc::c_int = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interest {
    Read,
    Write,
}

struct Entry {
    fd: RawFd,
    interest: Interest,
    waker: Waker,
}

#[derive(Default)]
struct Reactor {
    next_key: u64,
    entries: BTreeMap<u64, Entry>,
}

thread_local! {
    static REACTOR: RefCell<Reactor> = RefCell::new(Reactor::default());
}

/// Completes once `fd` may be read (or accepted) without blocking.
pub(crate) fn readable(fd: RawFd) -> Readiness {
    Readiness {
        fd,
        interest: Interest::Read,
        key: None,
    }
}

/// Completes once `fd` may be written (or a connect has finished) without blocking.
pub(crate) fn writable(fd: RawFd) -> Readiness {
    Readiness {
        fd,
        interest: Interest::Write,
        key: None,
    }
}

/// A wait for one descriptor to become ready; see [`readable`] and [`writable`].
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct Readiness {
    fd: RawFd,
    interest: Interest,
    /// The registration, while there is one.
    key: Option<u64>,
}

impl Future for Readiness {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        REACTOR.with_borrow_mut(|r| match this.key {
            None => {
                let key = r.next_key;
                r.next_key += 1;
                r.entries.insert(
                    key,
                    Entry {
                        fd: this.fd,
                        interest: this.interest,
                        waker: cx.waker().clone(),
                    },
                );
                this.key = Some(key);
                Poll::Pending
            }
            Some(key) => match r.entries.get_mut(&key) {
                // Polled for another reason (a timer of the same task): still waiting.
                Some(entry) => {
                    entry.waker.clone_from(cx.waker());
                    Poll::Pending
                }
                // `park` removed the entry: the descriptor is ready.
                None => {
                    this.key = None;
                    Poll::Ready(())
                }
            },
        })
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // `try_with`: the task may be dropped while the thread is exiting.
            let _ = REACTOR.try_with(|r| r.borrow_mut().entries.remove(&key));
        }
    }
}

/// Blocks until a registered descriptor is ready or `timeout_ns` passes (`None`: no timer),
/// then wakes the tasks whose descriptor is ready. May return early (on a signal).
pub(crate) fn park(timeout_ns: Option<u64>) {
    let (mut fds, keys): (Vec<libc::pollfd>, Vec<u64>) = REACTOR.with_borrow(|r| {
        r.entries
            .iter()
            .map(|(&key, e)| {
                let events = match e.interest {
                    Interest::Read => libc::POLLIN,
                    Interest::Write => libc::POLLOUT,
                };
                (
                    libc::pollfd {
                        fd: e.fd,
                        events,
                        revents: 0,
                    },
                    key,
                )
            })
            .unzip()
    });
    let timeout_ms = match timeout_ns {
        // Round up: waking before the deadline would only make the executor park again.
        Some(ns) => libc::c_int::try_from(ns.div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX),
        None if fds.is_empty() => IDLE_NAP_MS,
        None => -1,
    };
    let nfds = libc::nfds_t::try_from(fds.len()).expect("too many descriptors to poll");
    // SAFETY: `fds` is an initialized array of exactly `nfds` pollfd structs, exclusively
    // borrowed for the duration of the call; poll(2) writes only their `revents` fields.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return;
        }
        panic!("compose-unix: poll(2) failed: {err}");
    }
    if n == 0 {
        return;
    }
    let ready: Vec<Waker> = REACTOR.with_borrow_mut(|r| {
        fds.iter()
            .zip(&keys)
            .filter(|(p, _)| p.revents != 0)
            .filter_map(|(_, key)| r.entries.remove(key).map(|e| e.waker))
            .collect()
    });
    // Wake outside the borrow: a waker may be anything.
    for waker in ready {
        waker.wake();
    }
}

/// The number of pending registrations (for tests).
#[cfg(test)]
pub(crate) fn registrations() -> usize {
    REACTOR.with_borrow(|r| r.entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fires_on_ready_and_cleans_up() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(std::sync::Arc::new(Flag(flag.clone())));
        let mut cx = Context::from_waker(&waker);

        let mut wait = std::pin::pin!(readable(a.as_raw_fd()));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(registrations(), 1);
        park(Some(5_000_000)); // nothing to read: times out
        assert!(!flag.load(std::sync::atomic::Ordering::SeqCst));
        assert!(wait.as_mut().poll(&mut cx).is_pending());

        b.write_all(b"x").unwrap();
        park(Some(1_000_000_000));
        assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(registrations(), 0);
        assert!(wait.as_mut().poll(&mut cx).is_ready());

        // A wait dropped before it fires leaves nothing behind.
        let mut other = Box::pin(writable(b.as_raw_fd()));
        assert!(other.as_mut().poll(&mut cx).is_pending());
        assert_eq!(registrations(), 1);
        drop(other);
        assert_eq!(registrations(), 0);
    }
}
