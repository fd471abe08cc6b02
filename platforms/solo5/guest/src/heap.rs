//! The global allocator: talc over the memory between the image and the stack.

use compose_devices::metrics::{self, Counting};
use talc::source::Manual;

/// The allocator type: talc, locked by a spin lock (there is one thread, so the lock is
/// never contended; it only makes the allocator `Sync`).
pub type Heap = talc::TalcLock<spin::mutex::SpinMutex<()>, Manual>;

/// The unikernel's heap. It is empty until [`crate::start`] hands it guest memory; an
/// allocation that does not fit fails, which panics (out of memory). What it holds is
/// counted in `compose_devices::metrics` (heap in use and peak) for the monitoring device.
#[cfg_attr(target_os = "none", global_allocator)]
pub static HEAP: Counting<Heap> = Counting::new(Heap::new(Manual));

/// Gives the guest memory `[start, end)` to the heap.
///
/// # Safety
///
/// The range must be unused, writable RAM for the rest of the run, and this must be called
/// once.
pub(crate) unsafe fn claim(start: u64, end: u64) {
    // SAFETY: the caller promises the range is unused, writable and ours for good.
    let claimed = unsafe {
        HEAP.inner()
            .lock()
            .claim(start as *mut u8, (end - start) as usize)
    };
    metrics::HEAP_SIZE.set(end - start);
    assert!(
        claimed.is_some(),
        "solo5-guest: the heap range is too small"
    );
}
