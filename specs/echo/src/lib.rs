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
use compose_devices::secret::Secret;

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

/// Like [`start`], but a client must first send the token held in `token` on a line of its
/// own: it is answered `ok` and echoed, or `denied` and disconnected.
pub async fn start_with_token<C: Console, T: Tcp, S: Secret>(
    console: &'static C,
    tcp: &'static T,
    port: u16,
    token: &'static S,
) -> Result<(), NetError> {
    let listener = tcp.listen(port)?;
    console.log(&format!(
        "echo: listening on port {} (token required)",
        listener.port()
    ));
    loop {
        match listener.accept().await {
            Ok(flow) => compose_devices::spawn(authenticate(flow, token)),
            Err(e) => {
                console.log(&format!("echo: accept failed: {e}"));
                compose_devices::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Reads the first line (at most 256 bytes) and compares it with the token.
async fn authenticate<F: TcpFlow, S: Secret>(mut flow: F, token: &'static S) {
    let mut line = [0u8; 256];
    let mut len = 0;
    let newline = loop {
        match flow.read(&mut line[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        if let Some(i) = line[..len].iter().position(|b| *b == b'\n') {
            break i;
        }
        if len == line.len() {
            break len;
        }
    };
    let given = line[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&line[..newline]);
    if !token.matches(given) {
        let _ = flow.write_all(b"denied\n").await;
        let _ = flow.close().await;
        return;
    }
    if flow.write_all(b"ok\n").await.is_err() {
        return;
    }
    // Whatever followed the token on the first read is echoed too.
    let rest = line.get(newline + 1..len).unwrap_or_default();
    if !rest.is_empty() && flow.write_all(rest).await.is_err() {
        return;
    }
    serve(flow).await;
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
