//! The global allocator: talc over the ARM memory above the stack.

use compose_devices::metrics::{self, Counting};
use talc::source::Manual;

/// talc behind a spin lock (one core, so never contended: the lock only makes it `Sync`).
type Heap = talc::TalcLock<spin::mutex::SpinMutex<()>, Manual>;

/// Counted in `compose_devices::metrics` (heap in use and peak).
#[global_allocator]
static HEAP: Counting<Heap> = Counting::new(Heap::new(Manual));

/// Gives `[start, end)` to the heap.
///
/// # Safety
///
/// Unused, writable RAM for the rest of the run; called once.
pub(crate) unsafe fn claim(start: usize, end: usize) {
    // SAFETY: the caller promises the range is unused, writable and ours for good.
    let claimed = unsafe { HEAP.inner().lock().claim(start as *mut u8, end - start) };
    metrics::HEAP_SIZE.set((end - start) as u64);
    assert!(
        claimed.is_some(),
        "compose-rpi4: the heap range is too small"
    );
}
