//! `echo` served in-process on the unix platform, with clients of every kind: well
//! behaved, resetting, abandoning, and many at once.

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use compose_devices::console::Console;
use compose_devices::executor::{sleep, timeout};
use compose_devices::net::{NetError, Tcp as _, TcpFlow as _};
use compose_unix::{Ipv4, Ipv4Config, Netif, Tcp, TcpFlow, run};

/// Keeps what the server logs.
struct Log(RefCell<String>);

impl Console for Log {
    fn write(&self, bytes: &[u8]) {
        self.0
            .borrow_mut()
            .push_str(&String::from_utf8_lossy(bytes));
    }
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

/// Starts the server as a task; returns the port it logged.
async fn serve(log: &'static Log, tcp: &'static Tcp) -> u16 {
    compose_devices::spawn(async move {
        let r = echo::start(log, tcp, 0).await;
        panic!("echo returned {r:?}");
    });
    loop {
        if let Some(port) = log
            .0
            .borrow()
            .lines()
            .find_map(|l| l.strip_prefix("echo: listening on port "))
        {
            return port.parse().unwrap();
        }
        compose_devices::yield_now().await;
    }
}

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

/// Makes dropping `flow` send a reset (SO_LINGER with a zero timeout) instead of a FIN.
fn reset_on_drop(flow: &TcpFlow) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the flow's socket is open; setsockopt only reads the live `linger` of the
    // length passed.
    let r = unsafe {
        libc::setsockopt(
            flow.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of_val(&linger) as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

#[test]
fn echoes_and_survives_bad_clients() {
    let log: &'static Log = compose_devices::leak(Log(RefCell::new(String::new())));
    let tcp = loopback_tcp();
    let ok = run(async {
        timeout(Duration::from_secs(20), async {
            let port = serve(log, tcp).await;
            let server = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);

            // Abandoned: connects, sends half a message and never reads nor closes.
            let mut abandoned = tcp.connect(server).await.unwrap();
            abandoned.write_all(b"half a mess").await.unwrap();

            // Reset in the middle of a conversation.
            let mut rude = tcp.connect(server).await.unwrap();
            reset_on_drop(&rude);
            rude.write_all(&[7u8; 100_000]).await.unwrap();
            drop(rude);

            // Many clients at once.
            let done = Rc::new(Cell::new(0usize));
            for i in 0..50usize {
                let done = done.clone();
                compose_devices::spawn(async move {
                    let mut flow = tcp.connect(server).await.unwrap();
                    let msg = format!("line {i}\n").repeat(1000);
                    flow.write_all(msg.as_bytes()).await.unwrap();
                    flow.close().await.unwrap();
                    assert_eq!(read_to_end(&mut flow).await.unwrap(), msg.as_bytes());
                    done.set(done.get() + 1);
                });
            }
            while done.get() < 50 {
                sleep(Duration::from_millis(5)).await;
            }
            drop(abandoned);
            true
        })
        .await
    });
    assert_eq!(ok, Some(true), "clients were not all served in time");
    assert_eq!(
        log.0.borrow().lines().count(),
        1,
        "unexpected log: {}",
        log.0.borrow()
    );
}
