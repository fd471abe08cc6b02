//! Test fixture: stacks on an in-memory Ethernet segment, run on compose-devices' executor
//! with a virtual clock.
//!
//! A [`Hub`] repeats every frame a port sends to every other port, like a real hub; each
//! stack only takes frames for its MAC or broadcast. [`Sim`] is the executor platform: its
//! `park` polls every node (stacks and scripted servers) until the segment is quiet, and when
//! nothing is left to do it jumps the virtual clock to the next deadline instead of sleeping,
//! so timeouts of a minute take no real time. If nothing at all is pending, the test is
//! deadlocked and `park` panics instead of hanging.

#![allow(dead_code)] // each test binary uses a different part of the fixture

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::Mutex;

use compose_devices::executor::Platform;
use compose_netstack::{EthernetDevice, Ipv4Cidr, Ipv4Config, Stack};

/// An Ethernet segment: one frame queue per port.
#[derive(Default)]
pub struct Hub {
    queues: RefCell<Vec<VecDeque<Vec<u8>>>>,
    /// Frames sent so far, for tests that check traffic.
    pub sent: Cell<usize>,
}

impl Hub {
    pub fn new() -> Rc<Hub> {
        Rc::new(Hub::default())
    }

    /// A new port on the segment, with this MAC and a 1500-byte MTU.
    pub fn port(self: &Rc<Self>, mac: [u8; 6]) -> Port {
        let mut q = self.queues.borrow_mut();
        q.push(VecDeque::new());
        Port {
            hub: Rc::clone(self),
            index: q.len() - 1,
            mac,
        }
    }

    fn pending(&self) -> bool {
        self.queues.borrow().iter().any(|q| !q.is_empty())
    }
}

/// One attachment to a [`Hub`].
pub struct Port {
    hub: Rc<Hub>,
    index: usize,
    mac: [u8; 6],
}

impl EthernetDevice for Port {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }
    fn mtu(&self) -> u16 {
        1500
    }
    fn send(&self, frame: &[u8]) {
        assert!(
            frame.len() <= 1514,
            "frame of {} bytes exceeds the MTU",
            frame.len()
        );
        self.hub.sent.set(self.hub.sent.get() + 1);
        for (i, q) in self.hub.queues.borrow_mut().iter_mut().enumerate() {
            if i != self.index {
                q.push_back(frame.to_vec());
            }
        }
    }
    fn receive(&self, buf: &mut [u8]) -> Option<usize> {
        let frame = self.hub.queues.borrow_mut()[self.index].pop_front()?;
        buf[..frame.len()].copy_from_slice(&frame);
        Some(frame.len())
    }
}

/// Something on the segment that `park` polls.
pub trait Node {
    /// Like [`Stack::poll`]: runs at `now`, returns when to be polled next.
    fn poll(&self, now: u64) -> Option<u64>;
}

impl<D: EthernetDevice> Node for Stack<D> {
    fn poll(&self, now: u64) -> Option<u64> {
        Stack::poll(self, now)
    }
}

thread_local! {
    static NODES: RefCell<Vec<Rc<dyn Node>>> = const { RefCell::new(Vec::new()) };
    static HUBS: RefCell<Vec<Rc<Hub>>> = const { RefCell::new(Vec::new()) };
    static NOW: Cell<u64> = const { Cell::new(START) };
    static PARKS: Cell<u64> = const { Cell::new(0) };
}

/// The virtual clock's reading when a test starts: 1 s.
pub const START: u64 = 1_000_000_000;

/// Adds a node for `park` to poll.
pub fn add_node(node: Rc<dyn Node>) {
    NODES.with(|n| n.borrow_mut().push(node));
}

/// Registers a hub, so that `park` knows when frames are still in flight.
pub fn add_hub(hub: &Rc<Hub>) {
    HUBS.with(|h| h.borrow_mut().push(Rc::clone(hub)));
}

/// The virtual clock.
pub fn now() -> u64 {
    NOW.with(Cell::get)
}

/// How many times the executor parked (a measure of idling).
pub fn parks() -> u64 {
    PARKS.with(Cell::get)
}

/// Polls every node until no node has work at `now` and no frame is in flight. Returns
/// whether anything happened, and the earliest deadline the nodes asked for.
fn settle() -> (bool, Option<u64>) {
    let nodes: Vec<Rc<dyn Node>> = NODES.with(|n| n.borrow().clone());
    let now = now();
    let mut active = false;
    for _ in 0..100_000 {
        let mut busy = HUBS.with(|h| h.borrow().iter().any(|h| h.pending()));
        let mut next: Option<u64> = None;
        for node in &nodes {
            match node.poll(now) {
                Some(t) if t <= now => busy = true,
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        if !busy && !HUBS.with(|h| h.borrow().iter().any(|h| h.pending())) {
            return (active, next);
        }
        active = true;
    }
    panic!("the network never settles: a node keeps asking to be polled at once");
}

/// The executor platform of the tests.
pub struct Sim;

impl Platform for Sim {
    fn now_ns() -> u64 {
        now()
    }

    fn park(deadline: Option<u64>) {
        PARKS.with(|p| p.set(p.get() + 1));
        let (active, next) = settle();
        if active {
            return;
        }
        let wake = match (deadline, next) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or_else(|| {
                panic!("deadlock: no task is ready, no timer is set and the network is idle")
            }),
        };
        NOW.with(|n| n.set(n.get().max(wake)));
        settle();
    }
}

/// The executor is one per process; tests take turns.
static EXECUTOR: Mutex<()> = Mutex::new(());

/// Runs `f` on the executor with the simulated network, after the test set it up.
pub fn run<F: Future>(f: F) -> F::Output {
    let _turn = EXECUTOR.lock().unwrap_or_else(|e| e.into_inner());
    compose_devices::block_on::<Sim, _>(f)
}

/// A locally administered unicast MAC ending in `n`.
pub fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, n]
}

/// A stack on `hub` with the static address `10.0.0.n/24`, polled by `park`.
pub fn static_stack(hub: &Rc<Hub>, n: u8) -> Stack<Port> {
    let config = Ipv4Config {
        address: Some(Ipv4Cidr {
            address: Ipv4Addr::new(10, 0, 0, n),
            prefix: 24,
        }),
        gateway: None,
        dhcp: false,
    };
    let stack = Stack::new(hub.port(mac(n)), config, 0x9e37_79b9 * u64::from(n)).unwrap();
    add_node(Rc::new(stack.clone()));
    stack
}
