//! The single-threaded executor every target runs its unikernel on.
//!
//! A unikernel has one CPU and no threads. The executor polls ready tasks; when none is
//! ready it asks the platform to *park* until the next timer deadline or an I/O event.
//! Parking blocks in the host (poll(2) on unix, the yield hypercall on Solo5), so an idle
//! unikernel does not spin.
//!
//! Platforms implement [`Platform`]: a monotonic clock and `park`. I/O readiness is the
//! platform's business: it keeps the wakers of the tasks waiting on its devices and wakes
//! them from `park`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

/// What the executor needs from a target.
pub trait Platform {
    /// Nanoseconds since boot, never decreasing.
    fn now_ns() -> u64;
    /// Blocks until an I/O event may have occurred or `deadline_ns` (on the [`Platform::now_ns`]
    /// scale) passes; `None` means no timer is pending. Wakes the tasks whose I/O is ready.
    /// Spurious returns are allowed.
    fn park(deadline_ns: Option<u64>);
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// A task table entry: the task and its waker's header, or `None` while free or polled.
type Slot = Option<(Task, Arc<Header>)>;

/// Executor state that only the unikernel's single thread touches.
struct Local {
    tasks: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    /// Pending timers by (deadline, sequence number); a dropped [`Sleep`] removes its own.
    timers: RefCell<BTreeMap<(u64, u64), Waker>>,
    timer_seq: RefCell<u64>,
    now: RefCell<Option<fn() -> u64>>,
    /// The clock reading of the current turn of [`block_on`], which `Sleep::poll` uses:
    /// polling timers costs no read. (`sleep` reads the clock afresh, so that a sleep
    /// lasts at least its duration.)
    turn_now: Cell<Option<u64>>,
}

/// A cell for state that belongs to the unikernel's only thread.
struct ThreadOwned(Local);

// SAFETY: a compose unikernel runs one thread. The guest targets have no threads at all,
// and the unix platform runs the executor (and so every task, waker call-back and timer)
// on the process's main thread and never hands this state to another thread. Wakers, which
// may be sent elsewhere, only touch `READY`, a real mutex.
unsafe impl Sync for ThreadOwned {}

static LOCAL: ThreadOwned = ThreadOwned(Local {
    tasks: RefCell::new(Vec::new()),
    free: RefCell::new(Vec::new()),
    timers: RefCell::new(BTreeMap::new()),
    timer_seq: RefCell::new(0),
    now: RefCell::new(None),
    turn_now: Cell::new(None),
});

/// Ids of tasks that were woken and must be polled.
static READY: spin::Mutex<VecDeque<usize>> = spin::Mutex::new(VecDeque::new());

const MAIN: usize = usize::MAX;

struct Header {
    id: usize,
    queued: AtomicBool,
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            READY.lock().push_back(self.id);
        }
    }
}

/// Starts `future` as a task of its own. It runs until it completes or the unikernel exits.
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    let local = &LOCAL.0;
    let id = match local.free.borrow_mut().pop() {
        Some(id) => id,
        None => {
            let mut tasks = local.tasks.borrow_mut();
            tasks.push(None);
            tasks.len() - 1
        }
    };
    let header = Arc::new(Header {
        id,
        queued: AtomicBool::new(true),
    });
    local.tasks.borrow_mut()[id] = Some((Box::pin(future), header));
    READY.lock().push_back(id);
}

/// The number of spawned tasks that have not completed yet.
pub fn live_tasks() -> usize {
    let local = &LOCAL.0;
    local.tasks.borrow().len() - local.free.borrow().len()
}

/// The current turn's reading, else a fresh one. It may lag the true time by the turn's
/// length so far, so it only serves to decide that a deadline has passed: a late answer
/// delays a timer by at most that much, never ends it early.
fn turn_now_ns() -> u64 {
    match LOCAL.0.turn_now.get() {
        Some(now) => now,
        None => now_ns(),
    }
}

/// The time since boot as of the current turn of [`block_on`]: the reading the executor
/// took for its timers when the turn began (no clock read), or a fresh reading outside a
/// turn (zero outside the executor). It lags the true time by the turn's length so far.
pub fn turn_now() -> Duration {
    Duration::from_nanos(turn_now_ns())
}

/// A fresh reading of the platform's clock.
fn now_ns() -> u64 {
    match *LOCAL.0.now.borrow() {
        Some(now) => now(),
        None => 0,
    }
}

/// Runs `main` and every task it spawns until `main` completes; returns its output.
///
/// Tasks still running when `main` completes are dropped.
pub fn block_on<P: Platform, F: Future>(main: F) -> F::Output {
    let local = &LOCAL.0;
    *local.now.borrow_mut() = Some(P::now_ns);
    let mut main = core::pin::pin!(main);
    let main_header = Arc::new(Header {
        id: MAIN,
        queued: AtomicBool::new(true),
    });
    let main_waker = Waker::from(main_header.clone());
    READY.lock().push_back(MAIN);
    loop {
        // One clock read per turn for the timers (a read may be expensive: an emulated
        // `rdtsc` under software virtualization, a system call on spt). Timers due by then
        // fire, and pending ones are polled against that time; a timer that comes due
        // while the tasks run fires next turn, after a park that returns at once.
        //
        // A turn polls the tasks that are ready when it starts (a task that wakes itself,
        // as `yield_now` does, runs again next turn, with a new reading).
        let now = P::now_ns();
        local.turn_now.set(Some(now));
        fire_timers(now);
        let batch = READY.lock().len();
        for _ in 0..batch {
            let next = READY.lock().pop_front();
            let Some(id) = next else { break };
            if id == MAIN {
                main_header.queued.store(false, Ordering::Release);
                let mut cx = Context::from_waker(&main_waker);
                if let Poll::Ready(out) = main.as_mut().poll(&mut cx) {
                    local.turn_now.set(None);
                    drop_all_tasks();
                    return out;
                }
                continue;
            }
            let taken = local.tasks.borrow_mut().get_mut(id).and_then(Option::take);
            let Some((mut task, header)) = taken else {
                continue;
            };
            header.queued.store(false, Ordering::Release);
            let waker = Waker::from(header.clone());
            let mut cx = Context::from_waker(&waker);
            match task.as_mut().poll(&mut cx) {
                Poll::Ready(()) => {
                    drop(task);
                    local.free.borrow_mut().push(id);
                }
                Poll::Pending => local.tasks.borrow_mut()[id] = Some((task, header)),
            }
        }
        let next_deadline = fire_timers(now);
        local.turn_now.set(None);
        if READY.lock().is_empty() {
            P::park(next_deadline);
        }
    }
}

/// Wakes every timer due at `now`; returns the next pending deadline.
fn fire_timers(now: u64) -> Option<u64> {
    let mut timers = LOCAL.0.timers.borrow_mut();
    while let Some(entry) = timers.first_entry() {
        if entry.key().0 > now {
            return Some(entry.key().0);
        }
        entry.remove().wake();
    }
    None
}

fn drop_all_tasks() {
    let local = &LOCAL.0;
    let tasks = core::mem::take(&mut *local.tasks.borrow_mut());
    local.free.borrow_mut().clear();
    local.timers.borrow_mut().clear();
    READY.lock().clear();
    drop(tasks);
}

/// A future that completes at a deadline on the monotonic clock.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: u64,
    /// The key of its entry in the timer table, once registered.
    registered: Option<(u64, u64)>,
}

/// Completes once `duration` has passed.
pub fn sleep(duration: Duration) -> Sleep {
    let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Sleep {
        deadline: now_ns().saturating_add(ns),
        registered: None,
    }
}

/// Completes at `deadline_ns` on the platform's monotonic scale.
pub fn sleep_until(deadline_ns: u64) -> Sleep {
    Sleep {
        deadline: deadline_ns,
        registered: None,
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if turn_now_ns() >= self.deadline {
            if let Some(key) = self.registered.take() {
                LOCAL.0.timers.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let local = &LOCAL.0;
        let mut timers = local.timers.borrow_mut();
        match self.registered {
            // Still pending: keep the waker current (the task may have moved).
            Some(key) if timers.contains_key(&key) => {
                if let Some(w) = timers.get_mut(&key) {
                    w.clone_from(cx.waker());
                }
            }
            _ => {
                let seq = {
                    let mut s = local.timer_seq.borrow_mut();
                    *s += 1;
                    *s
                };
                timers.insert((self.deadline, seq), cx.waker().clone());
                self.registered = Some((self.deadline, seq));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    /// A sleep abandoned before its deadline (a `timeout` whose future won) leaves nothing
    /// behind in the timer table.
    fn drop(&mut self) {
        if let Some(key) = self.registered.take() {
            LOCAL.0.timers.borrow_mut().remove(&key);
        }
    }
}

/// The number of timers pending (for tests and diagnostics).
pub fn pending_timers() -> usize {
    LOCAL.0.timers.borrow().len()
}

/// Lets other ready tasks run before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Runs `future` with a deadline; `None` if the deadline passed first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Option<F::Output> {
    let mut future = core::pin::pin!(future);
    let mut timer = sleep(duration);
    core::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    static NOW: AtomicU64 = AtomicU64::new(0);

    /// A platform whose clock jumps to the deadline when parked: timers fire at once.
    struct Virtual;
    impl Platform for Virtual {
        fn now_ns() -> u64 {
            NOW.load(Ordering::SeqCst)
        }
        fn park(deadline_ns: Option<u64>) {
            if let Some(d) = deadline_ns {
                NOW.fetch_max(d, Ordering::SeqCst);
            }
        }
    }

    /// The executor's state is one per process: its tests take turns.
    static SERIAL: spin::Mutex<()> = spin::Mutex::new(());

    static READS: AtomicU64 = AtomicU64::new(0);
    static TICKS: AtomicU64 = AtomicU64::new(0);

    /// A platform whose clock advances 1 µs at every read, and counts the reads.
    struct Ticking;
    impl Platform for Ticking {
        fn now_ns() -> u64 {
            READS.fetch_add(1, Ordering::SeqCst);
            TICKS.fetch_add(1000, Ordering::SeqCst)
        }
        fn park(_: Option<u64>) {}
    }

    #[test]
    fn one_clock_read_per_turn_and_time_still_moves_in_busy_turns() {
        let _serial = SERIAL.lock();
        let reads = block_on::<Ticking, _>(async {
            let before = READS.load(Ordering::SeqCst);
            // Ten sleeps, each under a timeout, and each polled with the turn's reading.
            for _ in 0..10 {
                let _ = timeout(Duration::from_secs(1), sleep(Duration::from_micros(5))).await;
            }
            READS.load(Ordering::SeqCst) - before
        });
        // A 5 µs sleep comes due after a few turns of 1 µs: the reads are the turns' and
        // one per `sleep` (two per round with the timeout's), none for the polls.
        assert!(reads <= 10 * 8, "{reads} clock reads");
        // A task that never parks still sees time pass (no turn freezes the clock).
        block_on::<Ticking, _>(async {
            let deadline = sleep(Duration::from_micros(50));
            let mut deadline = core::pin::pin!(deadline);
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            while deadline.as_mut().poll(&mut cx).is_pending() {
                yield_now().await;
            }
        });
    }

    #[test]
    fn timers_fire_in_order_and_abandoned_ones_leave_nothing() {
        let _serial = SERIAL.lock();
        let order = block_on::<Virtual, _>(async {
            // A thousand timeouts whose futures win: their timers must be gone.
            for _ in 0..1000 {
                assert_eq!(timeout(Duration::from_secs(30), async { 7 }).await, Some(7));
            }
            assert_eq!(pending_timers(), 0);
            // A timeout whose timer wins.
            assert_eq!(
                timeout(Duration::from_millis(5), core::future::pending::<()>()).await,
                None
            );
            let log = alloc::rc::Rc::new(RefCell::new(Vec::new()));
            for (i, ms) in [(0, 30u64), (1, 10), (2, 20)] {
                let log = log.clone();
                spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    log.borrow_mut().push(i);
                });
            }
            sleep(Duration::from_millis(50)).await;
            log.take()
        });
        assert_eq!(order, [1, 2, 0]);
    }
}
