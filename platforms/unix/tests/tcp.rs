//! TCP on the host's stack, driven by the reactor, all inside `run` on one thread.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use compose_devices::executor::timeout;
use compose_devices::net::{
    Ipv4 as _, NetError, Netif as _, Tcp as _, TcpFlow as _, TcpListener as _,
};
use compose_unix::{Ipv4, Ipv4Config, Netif, Tcp, TcpFlow, run};

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

fn local(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// Waits, letting other tasks run, until `ready` holds; the test's `within` bounds the wait.
async fn until(mut ready: impl FnMut() -> bool) {
    while !ready() {
        compose_devices::sleep(Duration::from_millis(1)).await;
    }
}

/// Bytes that have arrived on `flow` and were not read yet (FIONREAD).
fn unread(flow: &TcpFlow) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on an open socket writes one int through a valid pointer.
    let rc = unsafe { libc::ioctl(flow.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(n).unwrap_or(0)
}

/// Echoes one flow until the peer closes, then closes.
async fn echo(mut flow: TcpFlow) {
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = flow.read(&mut buf).await {
        if flow.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = flow.close().await;
}

/// Reads until the peer closes.
async fn read_to_end(flow: &mut TcpFlow) -> Result<Vec<u8>, NetError> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match flow.read(&mut buf).await? {
            0 => return Ok(out),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A deadline for a whole test body, so that a lost wake-up fails instead of hanging.
async fn within<T>(secs: u64, f: impl Future<Output = T>) -> T {
    timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

#[test]
fn devices_describe_themselves() {
    let netif = compose_devices::leak(Netif::new("service").unwrap());
    assert_eq!(
        (netif.name(), netif.mac(), netif.mtu()),
        ("service", None, 1500)
    );
    let cidr = "127.0.0.1/8".parse().unwrap();
    let gw = Some(Ipv4Addr::new(127, 0, 0, 254));
    let stack = Ipv4::new(
        netif,
        Ipv4Config {
            address: Some(cidr),
            gateway: gw,
            dhcp: false,
        },
    )
    .unwrap();
    assert_eq!(
        (stack.address(), stack.gateway(), stack.local_address()),
        (Some(cidr), gw, Ipv4Addr::LOCALHOST)
    );
    let dhcp = Ipv4::new(
        netif,
        Ipv4Config {
            address: None,
            gateway: None,
            dhcp: true,
        },
    )
    .unwrap();
    assert_eq!(
        (dhcp.address(), dhcp.local_address()),
        (None, Ipv4Addr::UNSPECIFIED)
    );
    // With no address, only this host can connect: loopback.
    let none = compose_devices::leak(
        Ipv4::new(
            netif,
            Ipv4Config {
                address: None,
                gateway: None,
                dhcp: false,
            },
        )
        .unwrap(),
    );
    assert_eq!(
        (none.address(), none.local_address()),
        (None, Ipv4Addr::LOCALHOST)
    );
    let tcp = Tcp::new(none).unwrap();
    let listener = compose_devices::net::Tcp::listen(&tcp, 0).unwrap();
    let fd = std::os::fd::AsFd::as_fd(&listener)
        .try_clone_to_owned()
        .unwrap();
    let bound = std::net::TcpListener::from(fd).local_addr().unwrap();
    assert_eq!(bound.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Every host address, when the spec asks for it.
    let all = Ipv4::new(
        netif,
        Ipv4Config {
            address: Some("0.0.0.0/0".parse().unwrap()),
            gateway: None,
            dhcp: false,
        },
    )
    .unwrap();
    assert_eq!(all.local_address(), Ipv4Addr::UNSPECIFIED);
    // TEST-NET-1 is nobody's address.
    let foreign = Ipv4Config {
        address: Some("192.0.2.1/24".parse().unwrap()),
        gateway: None,
        dhcp: false,
    };
    let err = Ipv4::new(netif, foreign).unwrap_err().to_string();
    assert!(
        err.contains("192.0.2.1") && err.contains("not an address of this host"),
        "{err}"
    );
}

#[test]
fn echo_between_two_tasks() {
    let _turn = serial();
    let tcp = loopback_tcp();
    run(within(10, async {
        let listener = tcp.listen(0).unwrap();
        let port = listener.port();
        assert_ne!(port, 0);
        compose_devices::spawn(async move {
            let flow = listener.accept().await.unwrap();
            assert_eq!(*flow.peer().ip(), Ipv4Addr::LOCALHOST);
            echo(flow).await;
        });
        let mut client = tcp.connect(local(port)).await.unwrap();
        assert_eq!(client.peer(), local(port));
        let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut back = Vec::new();
        let mut buf = [0u8; 8192];
        for chunk in payload.chunks(32 * 1024) {
            client.write_all(chunk).await.unwrap();
            let want = back.len() + chunk.len();
            while back.len() < want {
                let n = client.read(&mut buf).await.unwrap();
                assert_ne!(n, 0, "server closed early");
                back.extend_from_slice(&buf[..n]);
            }
        }
        assert!(back == payload);
        // Our FIN makes the server close too; reads go on after close until then.
        client.close().await.unwrap();
        assert_eq!(read_to_end(&mut client).await.unwrap(), b"");
        assert_eq!(client.write(b"x").await, Err(NetError::Closed));
    }));
}

#[test]
fn writer_waits_for_a_slow_reader() {
    let _turn = serial();
    let tcp = loopback_tcp();
    let blob: Rc<Vec<u8>> = Rc::new((0..8_000_000u32).map(|i| (i * 7) as u8).collect());
    let sent = blob.clone();
    run(within(10, async move {
        let listener = tcp.listen(0).unwrap();
        let port = listener.port();
        let finished = Rc::new(Cell::new(false));
        let f = finished.clone();
        compose_devices::spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            flow.write_all(&sent).await.unwrap(); // far more than the socket buffers
            flow.close().await.unwrap();
            f.set(true);
        });
        let mut client = tcp.connect(local(port)).await.unwrap();
        compose_devices::sleep(Duration::from_millis(50)).await;
        assert!(
            !finished.get(),
            "the writer cannot be done before anyone reads"
        );
        let got = read_to_end(&mut client).await.unwrap();
        assert!(got == *blob);
        assert!(finished.get());
    }));
}

#[test]
fn many_concurrent_connections() {
    const CLIENTS: usize = 200;
    let _turn = serial();
    let tcp = loopback_tcp();
    let served = run(within(20, async {
        let listener = tcp.listen(0).unwrap();
        let port = listener.port();
        compose_devices::spawn(async move {
            loop {
                let flow = listener.accept().await.unwrap();
                compose_devices::spawn(echo(flow));
            }
        });
        let done = Rc::new(Cell::new(0));
        for i in 0..CLIENTS {
            let done = done.clone();
            compose_devices::spawn(async move {
                let mut flow = tcp.connect(local(port)).await.unwrap();
                // Stagger the conversation so that all connections are open at once.
                compose_devices::sleep(Duration::from_millis((i % 10) as u64)).await;
                let msg = format!("hello from client {i}\n").repeat(50);
                flow.write_all(msg.as_bytes()).await.unwrap();
                flow.close().await.unwrap();
                assert_eq!(read_to_end(&mut flow).await.unwrap(), msg.as_bytes());
                done.set(done.get() + 1);
            });
        }
        while done.get() < CLIENTS {
            compose_devices::sleep(Duration::from_millis(5)).await;
        }
        // Every per-connection task has ended (only the acceptor is left).
        assert_eq!(compose_devices::executor::live_tasks(), 1);
        done.get()
    }));
    assert_eq!(served, CLIENTS);
}

#[test]
fn peer_close_reset_and_refusal() {
    let _turn = serial();
    let tcp = loopback_tcp();
    run(within(10, async {
        let listener = tcp.listen(0).unwrap();
        let port = listener.port();

        // Dropping a flow closes it: the other side reads 0.
        let client = tcp.connect(local(port)).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        drop(client);
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await, Ok(0));

        // Dropping a flow with unread data resets it: the other side sees the reset.
        let mut client = tcp.connect(local(port)).await.unwrap();
        let server = listener.accept().await.unwrap();
        client.write_all(b"unread").await.unwrap();
        until(|| unread(&server) == 6).await;
        drop(server);
        // The read waits for the reset to arrive.
        assert_eq!(client.read(&mut buf).await, Err(NetError::ConnectionReset));

        // Nobody listening: refused.
        drop(listener);
        assert_eq!(
            tcp.connect(local(port)).await.err(),
            Some(NetError::ConnectionReset)
        );
    }));
}

#[test]
fn port_in_use() {
    let _turn = serial();
    let tcp = loopback_tcp();
    let first = tcp.listen(0).unwrap();
    assert_eq!(tcp.listen(first.port()).err(), Some(NetError::AddrInUse));
    // SO_REUSEADDR: the port can be listened on again right after a connection's close,
    // although that connection's TIME_WAIT state remains.
    let port = first.port();
    run(within(10, async {
        let client = tcp.connect(local(port)).await.unwrap();
        let server = first.accept().await.unwrap();
        drop(server); // the server closes first: TIME_WAIT is on the listener's side
        drop(client);
        drop(first);
        let again = tcp.listen(port).unwrap();
        assert_eq!(again.port(), port);
    }));
}

#[test]
fn abandoned_operations_leave_nothing_behind() {
    let _turn = serial();
    let tcp = loopback_tcp();
    run(within(10, async {
        let listener = tcp.listen(0).unwrap();
        let port = listener.port();
        // Give up on an accept and on a read; the sockets stay usable.
        assert!(
            timeout(Duration::from_millis(10), listener.accept())
                .await
                .is_none()
        );
        let mut client = tcp.connect(local(port)).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        assert!(
            timeout(Duration::from_millis(10), server.read(&mut buf))
                .await
                .is_none()
        );
        client.write_all(b"late").await.unwrap();
        assert_eq!(server.read(&mut buf).await, Ok(4));
        assert_eq!(&buf, b"late");
    }));
}
