//! A cell for state that only the unikernel's single thread touches.

use core::cell::RefCell;

/// A `RefCell` that may live in a `static`.
///
/// Solo5 guests have one vCPU (or one host thread on spt), no threads and no interrupt
/// handlers that touch Rust state, so there is never a second thread to race with.
pub(crate) struct Single<T>(RefCell<T>);

// SAFETY: see the type's documentation: a Solo5 guest runs exactly one thread of
// execution, so the RefCell is never shared between threads. The runtime is built only for
// targets without threads (target_os = "none"); the host builds used by clippy and docs
// never run it.
unsafe impl<T> Sync for Single<T> {}

impl<T> Single<T> {
    pub(crate) const fn new(value: T) -> Self {
        Single(RefCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}
