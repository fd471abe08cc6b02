//! TCP between two stacks on an in-memory Ethernet segment (see `sim`).

mod sim;

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use compose_devices::net::{Ipv4, NetError, Tcp as _, TcpFlow as _, TcpListener as _};
use compose_devices::{sleep, spawn};
use compose_netstack::{
    Error, EthernetDevice, Ipv4Cidr, Ipv4Config, LINGER, LISTEN_BACKLOG, Stack, TCP_TIMEOUT, Tcp,
    TcpFlow, TcpListener,
};
use sim::{Hub, Port, add_hub, run, static_stack};

fn addr(n: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, n), port)
}

/// Two stacks, 10.0.0.1 (the "server") and 10.0.0.2 (the "client"), and TCP on each.
fn pair() -> (Stack<Port>, Tcp<Port>, Stack<Port>, Tcp<Port>) {
    let hub = Hub::new();
    add_hub(&hub);
    let a = static_stack(&hub, 1);
    let b = static_stack(&hub, 2);
    let ta = Tcp::new(&a).unwrap();
    let tb = Tcp::new(&b).unwrap();
    (a, ta, b, tb)
}

/// Echoes one connection until the peer closes.
async fn serve(mut flow: TcpFlow<Port>) {
    let mut buf = [0u8; 1500];
    loop {
        match flow.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if flow.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = flow.close().await;
}

/// Accepts forever, serving each connection in a task of its own.
async fn echo_server(listener: TcpListener<Port>) {
    loop {
        let flow = listener.accept().await.expect("accept");
        spawn(serve(flow));
    }
}

/// Reads exactly `buf.len()` bytes.
async fn read_exact(flow: &mut TcpFlow<Port>, mut buf: &mut [u8]) -> Result<(), NetError> {
    while !buf.is_empty() {
        match flow.read(buf).await? {
            0 => return Err(NetError::Closed),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// Reads until the peer closes, returning everything.
async fn read_to_end(flow: &mut TcpFlow<Port>) -> Result<Vec<u8>, NetError> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match flow.read(&mut buf).await? {
            0 => return Ok(all),
            n => all.extend_from_slice(&buf[..n]),
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn echo_round_trips_and_peers() {
    let (_a, ta, _b, tb) = pair();
    run(async move {
        let listener = ta.listen(7).unwrap();
        assert_eq!(listener.port(), 7);
        let server = async move {
            let mut flow = listener.accept().await.unwrap();
            assert_eq!(flow.peer().ip(), &Ipv4Addr::new(10, 0, 0, 2));
            // The server speaks first, then echoes.
            flow.write_all(b"hello\n").await.unwrap();
            serve(flow).await;
        };
        spawn(server);
        let mut flow = tb.connect(addr(1, 7)).await.unwrap();
        assert_eq!(flow.peer(), addr(1, 7));
        assert!(flow.local_port() >= 49152);
        let mut hello = [0u8; 6];
        read_exact(&mut flow, &mut hello).await.unwrap();
        assert_eq!(&hello, b"hello\n");
        for round in 0..64u8 {
            let data = pattern(4000, round);
            flow.write_all(&data).await.unwrap();
            let mut back = vec![0u8; data.len()];
            read_exact(&mut flow, &mut back).await.unwrap();
            assert_eq!(back, data, "round {round}");
        }
        flow.close().await.unwrap();
        assert_eq!(read_to_end(&mut flow).await.unwrap(), b"");
    });
}

#[test]
fn bulk_both_ways_with_half_close() {
    let (_a, ta, _b, tb) = pair();
    const LEN: usize = 1 << 20;
    run(async move {
        let listener = ta.listen(9000).unwrap();
        spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            // Everything the client sends, then its FIN: read returns 0.
            let got = read_to_end(&mut flow).await.unwrap();
            assert_eq!(got, pattern(LEN, 1));
            // The half-closed client still reads what the server sends back.
            flow.write_all(&pattern(LEN, 2)).await.unwrap();
            flow.close().await.unwrap();
        });
        let mut flow = tb.connect(addr(1, 9000)).await.unwrap();
        flow.write_all(&pattern(LEN, 1)).await.unwrap();
        flow.close().await.unwrap();
        assert_eq!(flow.write(b"x").await, Err(NetError::Closed));
        let back = read_to_end(&mut flow).await.unwrap();
        assert_eq!(back.len(), LEN);
        assert!(back == pattern(LEN, 2));
    });
}

#[test]
fn many_connections_and_no_leaks() {
    let (a, ta, b, tb) = pair();
    const CONNECTIONS: usize = 40;
    let tb: &'static Tcp<Port> = Box::leak(Box::new(tb));
    let done = Rc::new(Cell::new(0usize));
    let done2 = Rc::clone(&done);
    run(async move {
        let listener = ta.listen(7).unwrap();
        spawn(echo_server(listener));
        // All connections at once: more than the listening backlog, so the listener must
        // refill it while handshakes are in flight.
        for i in 0..CONNECTIONS {
            let done = Rc::clone(&done2);
            spawn(async move {
                let mut flow = tb.connect(addr(1, 7)).await.unwrap();
                for round in 0..3u8 {
                    let data = pattern(100 + i * 10, round ^ i as u8);
                    flow.write_all(&data).await.unwrap();
                    let mut back = vec![0u8; data.len()];
                    read_exact(&mut flow, &mut back).await.unwrap();
                    assert_eq!(back, data);
                }
                flow.close().await.unwrap();
                assert_eq!(read_to_end(&mut flow).await.unwrap(), b"");
                done.set(done.get() + 1);
            });
        }
        while done2.get() < CONNECTIONS {
            sleep(Duration::from_millis(10)).await;
        }
        // TIME-WAIT lasts 10 s in smoltcp; after it every socket is gone but the listener's.
        sleep(Duration::from_secs(15)).await;
    });
    assert_eq!(done.get(), CONNECTIONS);
    assert_eq!(b.socket_count(), 0, "client sockets left behind");
    // The listener was dropped with the executor's tasks; nothing else remains either.
    assert_eq!(a.socket_count(), 0, "server sockets left behind");
}

#[test]
fn listener_keeps_its_backlog() {
    let (a, ta, _b, _tb) = pair();
    run(async move {
        let listener = ta.listen(80).unwrap();
        assert_eq!(a.socket_count(), LISTEN_BACKLOG);
        assert_eq!(ta.listen(80).unwrap_err(), NetError::AddrInUse);
        // What a "cannot listen on ADDRESS:PORT" message names.
        assert_eq!(
            ta.local_address(),
            Some(core::net::Ipv4Addr::new(10, 0, 0, 1))
        );
        let any = ta.listen(0).unwrap();
        assert!(any.port() >= 49152, "ephemeral port {}", any.port());
        drop(any);
        drop(listener);
        // Listening sockets go at once; the port is free again.
        assert_eq!(a.socket_count(), 0);
        let again = ta.listen(80).unwrap();
        assert_eq!(again.port(), 80);
    });
}

#[test]
fn refused_connection_is_a_reset() {
    let (_a, _ta, b, tb) = pair();
    run(async move {
        assert_eq!(
            tb.connect(addr(1, 9)).await.unwrap_err(),
            NetError::ConnectionReset
        );
    });
    assert_eq!(b.socket_count(), 0);
}

#[test]
fn unanswered_connection_times_out() {
    let (_a, _ta, b, tb) = pair();
    let started = sim::now();
    run(async move {
        // Nobody has 10.0.0.99: ARP goes unanswered.
        assert_eq!(
            tb.connect(addr(99, 7)).await.unwrap_err(),
            NetError::TimedOut
        );
        let waited = sim::now() - started;
        assert!(
            waited >= TCP_TIMEOUT.as_nanos() as u64,
            "gave up after {waited} ns"
        );
        // The abandoned attempt is released within the linger time.
        sleep(LINGER + Duration::from_secs(2)).await;
    });
    assert_eq!(b.socket_count(), 0);
}

#[test]
fn reset_by_peer() {
    let (_a, ta, _b, tb) = pair();
    run(async move {
        let listener = ta.listen(7).unwrap();
        spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            read_exact(&mut flow, &mut buf).await.unwrap();
            flow.abort();
            // Keep the listener: only the connection goes.
            core::future::pending::<()>().await;
        });
        let mut flow = tb.connect(addr(1, 7)).await.unwrap();
        flow.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(flow.read(&mut buf).await, Err(NetError::ConnectionReset));
        assert_eq!(flow.write(b"more").await, Err(NetError::ConnectionReset));
    });
}

#[test]
fn abandoned_flow_closes_gracefully() {
    let (a, ta, b, tb) = pair();
    let got = Rc::new(Cell::new(None));
    let got2 = Rc::clone(&got);
    run(async move {
        let listener = ta.listen(7).unwrap();
        spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            // What the client sent before dropping its flow, then end of stream.
            got2.set(Some(read_to_end(&mut flow).await));
        });
        {
            let mut flow = tb.connect(addr(1, 7)).await.unwrap();
            flow.write_all(b"partial").await.unwrap();
            // Dropped here without close: the stack closes it and reaps the socket later.
        }
        sleep(Duration::from_secs(15)).await;
    });
    let got = got.take().expect("the server task finished");
    assert_eq!(got.unwrap(), b"partial");
    assert_eq!(
        b.socket_count(),
        0,
        "the dropped flow's socket was not reaped"
    );
    assert_eq!(a.socket_count(), 0);
}

#[test]
fn unread_peer_gets_reset_after_linger() {
    // A client that closes while the server never reads nor closes: the server's socket is
    // dropped with its task and must still be reaped.
    let (a, ta, b, tb) = pair();
    run(async move {
        let listener = ta.listen(7).unwrap();
        spawn(async move {
            let _flow = listener.accept().await.unwrap();
            sleep(Duration::from_secs(1)).await;
            // `_flow` and the listener drop here, with the client's FIN unanswered by data.
        });
        let mut flow = tb.connect(addr(1, 7)).await.unwrap();
        let mut buf = [0u8; 4];
        // The server's drop closes gracefully: the client sees end of stream.
        assert_eq!(flow.read(&mut buf).await, Ok(0));
        drop(flow);
        sleep(LINGER + Duration::from_secs(15)).await;
    });
    assert_eq!(a.socket_count(), 0);
    assert_eq!(b.socket_count(), 0);
}

#[test]
fn idle_stack_sleeps() {
    let (a, ta, b, _tb) = pair();
    run(async move {
        let _listener = ta.listen(7).unwrap();
        // Let ARP and friends settle, then check the stacks ask for no timer.
        sleep(Duration::from_secs(1)).await;
        let parks = sim::parks();
        sleep(Duration::from_secs(30)).await;
        // One park to reach the deadline (plus at most one spurious return).
        assert!(
            sim::parks() - parks <= 2,
            "parked {} times while idle",
            sim::parks() - parks
        );
    });
    assert_eq!(a.poll(sim::now()), None);
    assert_eq!(b.poll(sim::now()), None);
}

#[test]
fn static_address_and_config_errors() {
    let hub = Hub::new();
    let cidr = |a: [u8; 4], p| {
        Some(Ipv4Cidr {
            address: Ipv4Addr::from(a),
            prefix: p,
        })
    };
    let cfg = |address, gateway, dhcp| Ipv4Config {
        address,
        gateway,
        dhcp,
    };
    let s = Stack::new(
        hub.port(sim::mac(1)),
        cfg(
            cidr([10, 0, 0, 1], 24),
            Some(Ipv4Addr::new(10, 0, 0, 254)),
            false,
        ),
        1,
    )
    .unwrap();
    assert_eq!(s.address(), cidr([10, 0, 0, 1], 24));
    assert_eq!(s.gateway(), Some(Ipv4Addr::new(10, 0, 0, 254)));
    let err = |c, mac| Stack::new(hub.port(mac), c, 1).unwrap_err();
    assert_eq!(err(cfg(None, None, false), sim::mac(2)), Error::NoAddress);
    assert_eq!(
        err(cfg(cidr([10, 0, 0, 1], 24), None, true), sim::mac(2)),
        Error::AddressAndDhcp
    );
    assert_eq!(
        err(
            cfg(None, Some(Ipv4Addr::new(10, 0, 0, 1)), true),
            sim::mac(2)
        ),
        Error::GatewayAndDhcp
    );
    assert_eq!(
        err(
            cfg(
                cidr([10, 0, 0, 1], 24),
                Some(Ipv4Addr::new(10, 0, 1, 1)),
                false
            ),
            sim::mac(2)
        ),
        Error::GatewayOffLink(Ipv4Addr::new(10, 0, 1, 1))
    );
    assert!(matches!(
        err(cfg(cidr([224, 0, 0, 1], 24), None, false), sim::mac(2)),
        Error::BadAddress(_)
    ));
    assert_eq!(
        err(
            cfg(cidr([10, 0, 0, 1], 24), None, false),
            [1, 0, 0, 0, 0, 1]
        ),
        Error::BadMac([1, 0, 0, 0, 0, 1])
    );
    assert_eq!(
        Error::NoAddress.to_string(),
        "the stack needs a static address or dhcp"
    );
    // The device stays reachable for the platform.
    assert_eq!(s.with_device(|d| d.mac()), sim::mac(1));
}

#[test]
fn a_burst_beyond_the_backlog_is_served_without_refusals() {
    // Far more simultaneous connects than a listener holds pending: SYNs beyond its limit
    // are dropped (the clients retransmit them), none is reset.
    let (_a, ta, _b, tb) = pair();
    const CONNECTIONS: usize = 300;
    const { assert!(CONNECTIONS > compose_netstack::MAX_PENDING + LISTEN_BACKLOG) };
    let tb: &'static Tcp<Port> = Box::leak(Box::new(tb));
    let done = Rc::new(Cell::new(0usize));
    let refused = Rc::new(Cell::new(0usize));
    let (done2, refused2) = (Rc::clone(&done), Rc::clone(&refused));
    run(async move {
        let listener = ta.listen(7).unwrap();
        // A slow application: one accept every 5 ms.
        spawn(async move {
            loop {
                let flow = listener.accept().await.expect("accept");
                spawn(serve(flow));
                sleep(Duration::from_millis(5)).await;
            }
        });
        for i in 0..CONNECTIONS {
            let (done, refused) = (Rc::clone(&done2), Rc::clone(&refused2));
            spawn(async move {
                let Ok(mut flow) = tb.connect(addr(1, 7)).await else {
                    refused.set(refused.get() + 1);
                    return;
                };
                let data = pattern(64, i as u8);
                flow.write_all(&data).await.unwrap();
                let mut back = vec![0u8; data.len()];
                read_exact(&mut flow, &mut back).await.unwrap();
                assert_eq!(back, data);
                done.set(done.get() + 1);
            });
        }
        while done2.get() + refused2.get() < CONNECTIONS {
            sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(refused.get(), 0, "connections refused");
    assert_eq!(done.get(), CONNECTIONS);
}
