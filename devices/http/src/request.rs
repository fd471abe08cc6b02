//! Request heads: parsing with `httparse`, within the configured limits.

use alloc::vec::Vec;

/// `httparse`'s header slot, the scratch space [`parse_request`] parses into.
pub use httparse::{EMPTY_HEADER, Header};

use crate::SiteConfig;

/// The parts of a request head the server acts on, borrowed from the receive buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request<'b> {
    /// The method, case-sensitive (`GET`).
    pub method: &'b str,
    /// The request target as sent (`/docs/?x=1`).
    pub target: &'b str,
    /// Whether the request is HTTP/1.0 (otherwise HTTP/1.1).
    pub http10: bool,
    /// The `Host` header fields.
    pub hosts: usize,
    /// Whether `Connection` has the `close` option.
    pub connection_close: bool,
    /// Whether `Connection` has the `keep-alive` option.
    pub connection_keep_alive: bool,
    /// The `Content-Length`, if given.
    pub content_length: Option<u64>,
    /// Whether a `Transfer-Encoding` was given.
    pub transfer_encoding: bool,
    /// `If-None-Match` field values, in order.
    pub if_none_match: Vec<&'b [u8]>,
    /// The `If-Modified-Since` field value.
    pub if_modified_since: Option<&'b [u8]>,
    /// The `Range` field value; `None` also if there were several (they are then ignored).
    pub range: Option<&'b [u8]>,
    /// The `If-Range` field value.
    pub if_range: Option<&'b [u8]>,
    /// `Accept-Encoding` field values, in order.
    pub accept_encoding: Vec<&'b [u8]>,
}

impl Request<'_> {
    /// Whether the connection should stay open after the response, as far as the client is
    /// concerned.
    pub fn keep_alive(&self) -> bool {
        if self.http10 {
            self.connection_keep_alive && !self.connection_close
        } else {
            !self.connection_close
        }
    }

    /// Whether the request has a body (which the server reads and discards, or refuses).
    pub fn has_body(&self) -> bool {
        self.transfer_encoding || self.content_length.is_some_and(|n| n > 0)
    }
}

/// A request that cannot be answered normally: the status to reject it with. The
/// connection is closed after the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject(pub u16);

/// Parses the request head at the start of `buf`.
///
/// Returns the request and the length of its head, `Ok(None)` if more bytes are needed
/// (and allowed), or the status to reject it with: 400 for malformed syntax, 414 if the
/// request line is longer than `config.max_request_line`, 431 if the header section is
/// larger than `config.max_header_bytes` or has more than `config.max_headers` fields,
/// 505 for an HTTP version other than 1.0 and 1.1.
///
/// `headers` is scratch space for `httparse`; its length is the header-count limit.
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &mut [httparse::Header<'b>],
    config: &SiteConfig,
) -> Result<Option<(Request<'b>, usize)>, Reject> {
    // The request line must fit in its limit, whether or not the head is complete.
    let line_end = buf.iter().position(|&b| b == b'\n');
    match line_end {
        Some(end) if end + 1 > config.max_request_line => return Err(Reject(414)),
        None if buf.len() > config.max_request_line => return Err(Reject(414)),
        _ => {}
    }
    let mut parsed = httparse::Request::new(headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len()
                >= config
                    .max_request_line
                    .saturating_add(config.max_header_bytes)
            {
                return Err(Reject(431));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject(431)),
        Err(httparse::Error::Version) => {
            let line = &buf[..line_end.unwrap_or(buf.len())];
            return Err(Reject(if other_version(line) { 505 } else { 400 }));
        }
        Err(_) => return Err(Reject(400)),
    };
    let line_len = line_end.map_or(head_len, |e| e + 1);
    if head_len.saturating_sub(line_len) > config.max_header_bytes {
        return Err(Reject(431));
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Reject(400));
    };
    let mut req = Request {
        method,
        target,
        http10: version == 0,
        ..Request::default()
    };
    let mut ranges = 0;
    for h in parsed.headers.iter() {
        let name = h.name;
        let value = trim(h.value);
        if name.eq_ignore_ascii_case("host") {
            req.hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                req.connection_close |= option.eq_ignore_ascii_case(b"close");
                req.connection_keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value).ok_or(Reject(400))?;
            if req.content_length.is_some_and(|m| m != n) {
                return Err(Reject(400));
            }
            req.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            req.if_none_match.push(value);
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            req.if_modified_since = Some(value);
        } else if name.eq_ignore_ascii_case("range") {
            ranges += 1;
            req.range = Some(value);
        } else if name.eq_ignore_ascii_case("if-range") {
            req.if_range = Some(value);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            req.accept_encoding.push(value);
        }
    }
    if ranges > 1 {
        req.range = None;
    }
    // Both framings at once is a request-smuggling vector (RFC 9112 §6.3).
    if req.transfer_encoding && req.content_length.is_some() {
        return Err(Reject(400));
    }
    Ok(Some((req, head_len)))
}

/// Whether `line` (a request line, without its line feed) is well formed except for its
/// version: exactly `METHOD SP TARGET SP HTTP/MAJOR.MINOR` (one to three digits each), with
/// single spaces. Only such a line
/// gets 505; anything else that `httparse` rejects at the version (a raw space inside the
/// target, `HTTP/1.1` followed by more text, a lower-case or truncated version such as
/// `HTTP/3`) is
/// malformed syntax, 400, as nginx answers.
fn other_version(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let number = |s: &[u8]| (1..=3).contains(&s.len()) && s.iter().all(u8::is_ascii_digit);
    !method.is_empty()
        && !target.is_empty()
        && version
            .strip_prefix(b"HTTP/")
            .and_then(|v| {
                let dot = v.iter().position(|&b| b == b'.')?;
                Some(number(&v[..dot]) && number(&v[dot + 1..]))
            })
            .unwrap_or(false)
}

/// `value` without leading and trailing spaces and tabs.
pub(crate) fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// A non-empty run of ASCII digits as a `u64`; `None` if anything else or too large.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::string::String;

    fn parse(bytes: &[u8]) -> Result<Option<(Request<'_>, usize)>, Reject> {
        let config = SiteConfig {
            max_request_line: 64,
            max_header_bytes: 128,
            max_headers: 4,
            ..SiteConfig::default()
        };
        let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
        // The scratch space only has to live as long as the call: copy the result out.
        parse_request(bytes, &mut headers, &config)
    }

    #[test]
    fn parses_a_request() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\nRange: bytes=1-2\r\n\r\nNEXT";
        let (req, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 4);
        assert_eq!(
            (req.method, req.target, req.http10, req.hosts),
            ("GET", "/a?b", false, 1)
        );
        assert!(req.connection_close && req.connection_keep_alive && !req.keep_alive());
        assert_eq!(req.range, Some(&b"bytes=1-2"[..]));
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(parse(b"GE"), Ok(None));
    }

    #[test]
    fn rejects_with_the_right_status() {
        let long_target = [b"GET /".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(parse(&long_target), Err(Reject(414)));
        let long_line = [b"GET /".as_slice(), &[b'a'; 70], b" HTTP/1.1\r\n"].concat();
        assert_eq!(parse(&long_line), Err(Reject(414)));
        let big_header = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(parse(&big_header), Err(Reject(431)));
        let big_complete = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; 120],
            b"\r\nY: b\r\n\r\n",
        ]
        .concat();
        assert_eq!(parse(&big_complete), Err(Reject(431)));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n"),
            Err(Reject(431))
        );
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(Reject(505)));
        assert_eq!(parse(b"GET / HTTP/1.2\r\n\r\n"), Err(Reject(505)));
        assert_eq!(parse(b"GET / HTTP/3.0\nHost: x\n\n"), Err(Reject(505)));
        assert_eq!(parse(b"GET / HTTP/11.10\r\n\r\n"), Err(Reject(505)));
        assert_eq!(parse(b"GET / FOO\r\n\r\n"), Err(Reject(400)));
        assert_eq!(parse(b"\x00\x01\x02\r\n\r\n"), Err(Reject(400)));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
            Err(Reject(400))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(Reject(400))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(Reject(400))
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Reject(400))
        );
    }

    /// Every malformed request line is 400, as nginx answers; 505 is only for a
    /// well-formed line with another version.
    #[test]
    fn malformed_request_lines_are_bad_requests() {
        for line in [
            &b"GET /a b HTTP/1.1"[..],
            b"GET /a b c HTTP/1.1",
            b"GET /a HTTP/1.1 HTTP/1.1",
            b"GET / HTTP/1.1 ",
            b"GET / HTTP/1.1x",
            b"GET / HTTP/1.",
            b"GET / HTTP/1",
            b"GET / HTTP/",
            b"GET / HTTP/3",
            b"GET / HTTP/1.1.1",
            b"GET / HTTP/1000.0",
            b"GET / HTTP/a.b",
            b"GET / http/1.1",
            b"GET / HTTPS/1.1",
            b"GET  / HTTP/1.1",
            b"GET /  HTTP/1.1",
            b" GET / HTTP/1.1",
            b"GET\t/ HTTP/1.1",
            b"GET /\tx HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"GET /\x7f HTTP/1.1",
            b"GET / HTTP/1.1\x00",
            b"G(T / HTTP/1.1",
            b"GET",
            b"GET /",
            b"GET / ",
            b"/ HTTP/1.1",
            b"HTTP/1.1",
        ] {
            let raw = [line, b"\r\nHost: x\r\n\r\n"].concat();
            assert_eq!(
                parse(&raw),
                Err(Reject(400)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // A request line of spaces only, or a bare carriage return inside it.
        assert_eq!(parse(b"   \r\n\r\n"), Err(Reject(400)));
        assert_eq!(parse(b"GET /\r HTTP/1.1\r\n\r\n"), Err(Reject(400)));
    }

    #[test]
    fn lenient_forms_that_nginx_accepts_are_accepted() {
        // Bare line feeds, an empty line before the request line (RFC 9112 §2.2), the
        // absolute form and percent-encoded spaces.
        for raw in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Ok(Some(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn http10_keep_alive_is_opt_in() {
        let (req, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(req.http10 && !req.keep_alive());
        let (req, _) = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(req.keep_alive());
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), None);
        assert_eq!(
            parse_decimal(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b"1 "), None);
    }
}
