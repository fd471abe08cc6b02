//! The echo example: a TCP server that sends every byte back.
//!
//! Each connection is served by a task of its own, until the peer closes its side; then
//! the server closes too. Errors end only the connection they happen on.
#![no_std]
extern crate alloc;

use alloc::format;
use core::time::Duration;

use compose_devices::console::Console;
use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};

/// How long to wait before accepting again after the stack refused (out of sockets).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Listens on `port` (0: any free port), logs `echo: listening on port {port}` with the
/// port actually bound, then serves connections forever. Returns only if it cannot listen.
pub async fn start<C: Console, T: Tcp>(
    console: &'static C,
    tcp: &'static T,
    port: u16,
) -> Result<(), NetError> {
    let listener = tcp.listen(port)?;
    console.log(&format!("echo: listening on port {}", listener.port()));
    loop {
        match listener.accept().await {
            Ok(flow) => compose_devices::spawn(serve(flow)),
            Err(e) => {
                console.log(&format!("echo: accept failed: {e}"));
                compose_devices::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Echoes until the peer closes (or the connection fails), then closes.
async fn serve<F: TcpFlow>(mut flow: F) {
    let mut buf = [0u8; 4096];
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
    // The connection may already be gone; dropping the flow releases it either way.
    let _ = flow.close().await;
}
