//! A plain-HTTP port that sends every request to HTTPS: `301 Moved Permanently` to
//! `https://HOST[:PORT]/path`, HOST from the request's `Host` header (its port dropped),
//! `:PORT` unless the HTTPS port is 443.
//!
//! The `https-redirect` device starts it ([`start_https_redirect`]). Each connection gets one
//! answer and is closed; a client that sends no complete request head within 10 s, or one
//! larger than 8 KiB, is closed without one. At most 64 connections are served at once;
//! more wait in the TCP stack's backlog.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use core::cell::Cell;
use core::fmt;
use core::task::Poll;
use core::time::Duration;

use compose_devices::net::{NetError, Tcp, TcpFlow, TcpListener};

/// The longest request head read.
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: u32 = 64;

/// A running redirect listener (the device's value).
#[derive(Debug)]
pub struct HttpsRedirect {
    /// The plain-HTTP port it listens on.
    pub port: u16,
    /// The HTTPS port it points to.
    pub https_port: u16,
}

/// Why the redirect cannot start.
#[derive(Debug)]
pub struct RedirectError {
    port: u16,
    error: NetError,
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on port {}: {}", self.port, self.error)
    }
}

impl core::error::Error for RedirectError {}

/// Listens on `port` of `tcp` and answers every request there with a redirect to the same
/// host and path on HTTPS port `https_port`.
pub fn start_https_redirect<T: Tcp>(
    tcp: &'static T,
    port: u16,
    https_port: u16,
) -> Result<HttpsRedirect, RedirectError>
where
    T::Listener: 'static,
    T::Flow: 'static,
{
    let listener = tcp
        .listen(port)
        .map_err(|error| RedirectError { port, error })?;
    let port = listener.port();
    compose_devices::spawn(serve(listener, https_port));
    Ok(HttpsRedirect { port, https_port })
}

async fn serve<L: TcpListener + 'static>(listener: L, https_port: u16)
where
    L::Flow: 'static,
{
    let open = Rc::new(Cell::new(0u32));
    let waiter: Rc<Cell<Option<core::task::Waker>>> = Rc::new(Cell::new(None));
    loop {
        core::future::poll_fn(|cx| {
            if open.get() < MAX_CONNECTIONS {
                Poll::Ready(())
            } else {
                waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        let flow = match listener.accept().await {
            Ok(flow) => flow,
            Err(_) => {
                compose_devices::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        open.set(open.get() + 1);
        let (open, waiter) = (open.clone(), waiter.clone());
        compose_devices::spawn(async move {
            let mut flow = flow;
            let _ = compose_devices::executor::timeout(HEAD_TIMEOUT, answer(&mut flow, https_port))
                .await;
            drop(flow);
            open.set(open.get() - 1);
            if let Some(w) = waiter.take() {
                w.wake();
            }
        });
    }
}

/// Reads one request head and writes the redirect.
async fn answer<F: TcpFlow>(flow: &mut F, https_port: u16) -> Result<(), NetError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let response = loop {
        if len == buf.len() {
            return Ok(());
        }
        let n = flow.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        match redirect_response(&buf[..len], https_port) {
            Some(r) => break r,
            None => continue,
        }
    };
    flow.write_all(response.as_bytes()).await?;
    flow.close().await
}

/// The whole response to the request head at the start of `head`, or `None` while the head
/// is incomplete. A request that is not HTTP gets `400 Bad Request`.
pub fn redirect_response(head: &[u8], https_port: u16) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let bad = || {
        Some(String::from(
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ))
    };
    match req.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => bad(),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("/");
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| core::str::from_utf8(h.value).ok())
                .map(str::trim);
            let Some(host) = host.and_then(host_name) else {
                return bad();
            };
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return bad();
            }
            let location = if https_port == 443 {
                format!("https://{host}{path}")
            } else {
                format!("https://{host}:{https_port}{path}")
            };
            Some(format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ))
        }
    }
}

/// The host of a `Host` header value without its port, if it is a plausible host name or
/// address (nothing that could break out of the `Location` header).
fn host_name(value: &str) -> Option<&str> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        // [IPv6]:port
        let end = rest.find(']')?;
        &value[..end + 2]
    } else {
        value.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
        });
    ok.then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_to_the_same_host_and_path() {
        let r = redirect_response(
            b"GET /a/b?c=1 HTTP/1.1\r\nHost: example.org:8080\r\n\r\n",
            8443,
        )
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 301 Moved Permanently\r\n"), "{r}");
        assert!(
            r.contains("\r\nLocation: https://example.org:8443/a/b?c=1\r\n"),
            "{r}"
        );
        let r = redirect_response(b"HEAD / HTTP/1.1\r\nhost: example.org\r\n\r\n", 443).unwrap();
        assert!(r.contains("\r\nLocation: https://example.org/\r\n"), "{r}");
    }

    #[test]
    fn waits_for_a_whole_head_and_refuses_junk() {
        assert_eq!(redirect_response(b"GET / HTTP/1.1\r\nHost: a", 443), None);
        for junk in [
            &b"\x16\x03\x01\x00\x05hello\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let r = redirect_response(junk, 443).unwrap();
            assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        }
    }
}
