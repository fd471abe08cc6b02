//! The stack's own counters (`compose_devices::metrics`): connections opened, open and
//! released, and payload bytes each way, counted exactly. One test in a binary of its own,
//! since the counters are the process's.

mod sim;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use compose_devices::metrics::{
    TCP_BYTES_IN, TCP_BYTES_OUT, TCP_CLOSED, TCP_ESTABLISHED, TCP_OPENED,
};
use compose_devices::net::{Tcp as _, TcpFlow as _, TcpListener as _};
use compose_devices::{sleep, spawn};
use compose_netstack::Tcp;
use sim::{Hub, add_hub, run, static_stack};

#[test]
fn connections_and_bytes_are_counted() {
    let hub = Hub::new();
    add_hub(&hub);
    let a = static_stack(&hub, 1);
    let b = static_stack(&hub, 2);
    let ta = Tcp::new(&a).unwrap();
    let tb = Tcp::new(&b).unwrap();
    let (opened, closed, bytes_in, bytes_out) = (
        TCP_OPENED.get(),
        TCP_CLOSED.get(),
        TCP_BYTES_IN.get(),
        TCP_BYTES_OUT.get(),
    );
    run(async move {
        let listener = ta.listen(7).unwrap();
        spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            let mut buf = [0u8; 1500];
            loop {
                match flow.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => flow.write_all(&buf[..n]).await.unwrap(),
                }
            }
            let _ = flow.close().await;
        });
        let mut flow = tb
            .connect(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7))
            .await
            .unwrap();
        let data = vec![7u8; 10_000];
        flow.write_all(&data).await.unwrap();
        let mut back = 0;
        let mut buf = [0u8; 4096];
        while back < data.len() {
            back += flow.read(&mut buf).await.unwrap();
        }
        assert_eq!(TCP_ESTABLISHED.get(), 2, "both ends are open");
        flow.close().await.unwrap();
        drop(flow);
        sleep(Duration::from_millis(50)).await;
    });
    assert_eq!(TCP_OPENED.get() - opened, 2);
    assert_eq!(TCP_CLOSED.get() - closed, 2);
    assert_eq!(TCP_ESTABLISHED.get(), 0);
    assert_eq!(TCP_BYTES_IN.get() - bytes_in, 20_000);
    assert_eq!(TCP_BYTES_OUT.get() - bytes_out, 20_000);
}
