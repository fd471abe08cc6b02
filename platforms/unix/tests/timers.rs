//! The executor on the unix platform: timers, sleeping accuracy, timeouts.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use compose_devices::executor::{Platform, sleep, timeout};
use compose_devices::net::{Tcp as _, TcpListener as _};
use compose_devices::time::MonotonicClock as _;
use compose_unix::{Ipv4, Ipv4Config, MonotonicClock, Netif, Tcp, Unix, run};

/// The executor is one per process: tests that run it take turns.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn loopback_tcp() -> &'static Tcp {
    let netif = compose_devices::leak(Netif::new("service").unwrap());
    let config = Ipv4Config {
        address: Some("127.0.0.1/8".parse().unwrap()),
        gateway: None,
        dhcp: false,
    };
    let stack = compose_devices::leak(Ipv4::new(netif, config).unwrap());
    compose_devices::leak(Tcp::new(stack).unwrap())
}

#[test]
fn sleep_is_accurate() {
    let _turn = serial();
    let clock = MonotonicClock::new().unwrap();
    for ms in [1u64, 20, 50] {
        let start = Instant::now();
        let before = clock.elapsed();
        run(clock.sleep(Duration::from_millis(ms)));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(ms),
            "sleep({ms} ms) took {took:?}"
        );
        assert!(
            took < Duration::from_millis(ms + 50),
            "sleep({ms} ms) took {took:?}"
        );
        assert!(clock.elapsed() - before >= Duration::from_millis(ms));
    }
}

#[test]
fn clock_is_monotonic() {
    let mut last = Unix::now_ns();
    for _ in 0..1000 {
        let now = Unix::now_ns();
        assert!(now >= last);
        last = now;
    }
}

#[test]
fn timers_fire_in_deadline_order() {
    let _turn = serial();
    let order = Rc::new(RefCell::new(Vec::new()));
    let o = order.clone();
    let start = Instant::now();
    run(async move {
        for ms in [30u64, 10, 20] {
            let o = o.clone();
            compose_devices::spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                o.borrow_mut().push(ms);
            });
        }
        sleep(Duration::from_millis(40)).await;
    });
    assert_eq!(*order.borrow(), [10, 20, 30]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(40) && took < Duration::from_millis(120),
        "{took:?}"
    );
}

#[test]
fn timeout_ends_a_wait_on_a_socket() {
    let _turn = serial();
    let tcp = loopback_tcp();
    let start = Instant::now();
    let got = run(async {
        let listener = tcp.listen(0).unwrap();
        // Nobody connects: the accept waits in the reactor until the timer ends it.
        timeout(Duration::from_millis(30), listener.accept())
            .await
            .map(|_| ())
    });
    assert!(got.is_none());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_millis(120),
        "{took:?}"
    );
}

#[test]
#[should_panic(expected = "already running")]
fn run_is_not_reentrant() {
    let _turn = serial();
    run(async { run(async {}) });
}
