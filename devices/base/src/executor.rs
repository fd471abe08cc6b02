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
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::cmp::Reverse;
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
    timers: RefCell<BinaryHeap<Reverse<Timer>>>,
    timer_seq: RefCell<u64>,
    now: RefCell<Option<fn() -> u64>>,
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
    timers: RefCell::new(BinaryHeap::new()),
    timer_seq: RefCell::new(0),
    now: RefCell::new(None),
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

struct Timer {
    deadline: u64,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timer {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(o.deadline, o.seq))
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
    let header = Arc::new(Header { id, queued: AtomicBool::new(true) });
    local.tasks.borrow_mut()[id] = Some((Box::pin(future), header));
    READY.lock().push_back(id);
}

/// The number of spawned tasks that have not completed yet.
pub fn live_tasks() -> usize {
    let local = &LOCAL.0;
    local.tasks.borrow().len() - local.free.borrow().len()
}

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
    let main_header = Arc::new(Header { id: MAIN, queued: AtomicBool::new(true) });
    let main_waker = Waker::from(main_header.clone());
    READY.lock().push_back(MAIN);
    loop {
        loop {
            let next = READY.lock().pop_front();
            let Some(id) = next else { break };
            if id == MAIN {
                main_header.queued.store(false, Ordering::Release);
                let mut cx = Context::from_waker(&main_waker);
                if let Poll::Ready(out) = main.as_mut().poll(&mut cx) {
                    drop_all_tasks();
                    return out;
                }
                continue;
            }
            let taken = local.tasks.borrow_mut().get_mut(id).and_then(Option::take);
            let Some((mut task, header)) = taken else { continue };
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
        let next_deadline = fire_timers(P::now_ns());
        if READY.lock().is_empty() {
            P::park(next_deadline);
            fire_timers(P::now_ns());
        }
    }
}

/// Wakes every timer due at `now`; returns the next pending deadline.
fn fire_timers(now: u64) -> Option<u64> {
    let mut timers = LOCAL.0.timers.borrow_mut();
    while let Some(Reverse(t)) = timers.peek() {
        if t.deadline > now {
            return Some(t.deadline);
        }
        if let Some(Reverse(t)) = timers.pop() {
            t.waker.wake();
        }
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
    registered: bool,
}

/// Completes once `duration` has passed.
pub fn sleep(duration: Duration) -> Sleep {
    let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Sleep { deadline: now_ns().saturating_add(ns), registered: false }
}

/// Completes at `deadline_ns` on the platform's monotonic scale.
pub fn sleep_until(deadline_ns: u64) -> Sleep {
    Sleep { deadline: deadline_ns, registered: false }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now_ns() >= self.deadline {
            return Poll::Ready(());
        }
        if !self.registered {
            let local = &LOCAL.0;
            let seq = {
                let mut s = local.timer_seq.borrow_mut();
                *s += 1;
                *s
            };
            local.timers.borrow_mut().push(Reverse(Timer {
                deadline: self.deadline,
                seq,
                waker: cx.waker().clone(),
            }));
            self.registered = true;
        }
        Poll::Pending
    }
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
