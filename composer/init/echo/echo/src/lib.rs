//! A TCP echo service: every connection gets its bytes back until it closes.
#![no_std]
extern crate alloc;

use alloc::format;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};

/// Listens on `port`, says so on the console, then serves each connection in a task of its
/// own. Returns (and the unikernel exits) only if it cannot listen.
pub async fn start<C: Console, T: Tcp>(
    console: &'static C,
    tcp: &'static T,
    port: u16,
) -> Result<(), NetError> {
    let listener = tcp.listen(port)?;
    console.log(&format!("echo: listening on port {}", listener.port()));
    loop {
        match listener.accept().await {
            Ok(flow) => compose_devices::spawn(echo(flow)),
            Err(e) => {
                console.log(&format!("echo: accept failed: {e}"));
                // Out of sockets, most likely: give the stack a moment.
                compose_devices::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends back what it reads until the peer closes or the connection fails.
async fn echo<F: TcpFlow>(mut flow: F) {
    let mut buf = [0u8; 2048];
    while let Ok(n) = flow.read(&mut buf).await {
        if n == 0 || flow.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = flow.close().await;
}
