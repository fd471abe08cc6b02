//! An idle unikernel sleeps in the kernel: it burns (almost) no CPU while it waits.
//!
//! A file of its own, so that no other test's work shows in the process's CPU time.

use std::time::{Duration, Instant};

use compose_devices::executor::sleep;
use compose_devices::net::{Tcp as _, TcpListener as _};
use compose_unix::{Ipv4, Ipv4Config, Netif, Tcp, run};

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` is a valid value; getrusage(2) overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live, writable rusage for the duration of the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(r, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `f` and returns (wall time, CPU time) it took.
fn measure(f: impl FnOnce()) -> (Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    f();
    (wall.elapsed(), cpu_time() - cpu)
}

#[test]
fn idle_unikernel_does_not_spin() {
    // Only a timer pending.
    let (wall, cpu) = measure(|| run(sleep(Duration::from_secs(1))));
    assert!(wall >= Duration::from_secs(1));
    assert!(cpu < wall / 20, "sleeping 1 s used {cpu:?} of CPU");

    // A timer and a socket that never becomes ready (a listener nobody connects to).
    let netif = compose_devices::leak(Netif::new("service").unwrap());
    let config = Ipv4Config {
        address: None,
        gateway: None,
        dhcp: false,
    };
    let stack = compose_devices::leak(Ipv4::new(netif, config).unwrap());
    let tcp = compose_devices::leak(Tcp::new(stack).unwrap());
    let (wall, cpu) = measure(|| {
        run(async {
            let listener = tcp.listen(0).unwrap();
            compose_devices::spawn(async move {
                let _ = listener.accept().await;
                panic!("nobody connects");
            });
            sleep(Duration::from_secs(1)).await;
        })
    });
    assert!(wall >= Duration::from_secs(1));
    assert!(
        cpu < wall / 20,
        "waiting 1 s on a socket used {cpu:?} of CPU"
    );
}
