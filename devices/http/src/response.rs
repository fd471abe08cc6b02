//! The static-site logic: from a parsed request and a key-value store to a response plan.
//!
//! Nothing here does network I/O, so the whole protocol can be tested by feeding requests
//! through [`respond`] and looking at the [`Response`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use compose_devices::kv::{Encoding, Entry, Kv};

use crate::SiteConfig;
use crate::date::{format_http_date, parse_http_date};
use crate::request::{Request, parse_decimal, trim};

/// What to send after the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body<'k> {
    /// Nothing (HEAD, 304, ...).
    Empty,
    /// A short message of the server's own.
    Message(&'static str),
    /// Bytes of a stored value: `len` bytes from `offset` of `entry` in `encoding`.
    Value {
        /// The entry.
        entry: Entry<'k>,
        /// Which representation.
        encoding: Encoding,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
}

/// A response, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'k> {
    /// The status code.
    pub status: u16,
    /// Header fields, in order (names as sent).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Body<'k>,
    /// Whether to close the connection after this response.
    pub close: bool,
}

impl Response<'_> {
    /// The value of header `name` (case-insensitive), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends the status line, the header fields and the blank line to `out`.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        self.write_head_dated(out, None);
    }

    /// [`Response::write_head`], with a `Date` header first if `date` is given (an
    /// IMF-fixdate, see [`crate::date::format_http_date`]).
    pub fn write_head_dated(&self, out: &mut Vec<u8>, date: Option<&str>) {
        // Straight into `out`, without the formatting machinery: this runs per response.
        let len = 17
            + reason(self.status).len()
            + date.map_or(0, |d| d.len() + 8)
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        out.reserve(len);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(date) = date {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(date.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` in decimal, as a header value.
pub(crate) fn decimal(n: u64) -> String {
    let mut v = Vec::with_capacity(20);
    push_decimal(&mut v, n);
    // Only ASCII digits were pushed.
    String::from_utf8(v).unwrap_or_default()
}

/// The reason phrase for the statuses this server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A response with a short text body. `close` closes the connection after it;
/// `head_only` leaves the body out (for HEAD) but keeps its `Content-Length`.
pub fn message_response<'k>(
    status: u16,
    message: &'static str,
    close: bool,
    head_only: bool,
) -> Response<'k> {
    let mut headers = Vec::with_capacity(4);
    headers.push(("Content-Type", String::from("text/plain; charset=utf-8")));
    headers.push(("Content-Length", decimal(message.len() as u64)));
    if close {
        headers.push(("Connection", String::from("close")));
    }
    let body = if head_only {
        Body::Empty
    } else {
        Body::Message(message)
    };
    Response {
        status,
        headers,
        body,
        close,
    }
}

/// The response for an error status, with a one-line text body.
pub fn error_response<'k>(status: u16, close: bool, head_only: bool) -> Response<'k> {
    let message = match status {
        400 => "400 Bad Request\n",
        404 => "404 Not Found\n",
        405 => "405 Method Not Allowed\n",
        408 => "408 Request Timeout\n",
        411 => "411 Length Required\n",
        413 => "413 Content Too Large\n",
        414 => "414 URI Too Long\n",
        416 => "416 Range Not Satisfiable\n",
        431 => "431 Request Header Fields Too Large\n",
        503 => "503 Service Unavailable\n",
        505 => "505 HTTP Version Not Supported\n",
        _ => "500 Internal Server Error\n",
    };
    let mut response = message_response(status, message, close, head_only);
    if status == 405 {
        response.headers.push(("Allow", String::from("GET, HEAD")));
    }
    response
}

/// Decides the response to `req` from the site in `kv`.
///
/// GET and HEAD only (405 otherwise); targets are percent-decoded and normalized (`.` and
/// `..` resolved, 400 if `..` leaves the root); a directory is served by its `index.html`
/// (with a 301 to add the trailing slash when it is missing); unknown keys get 404, with
/// the site's own `404.html` if it has one. Found values get ETag (from their SHA-256),
/// Last-Modified (from the store), conditional requests (If-None-Match, If-Modified-Since
/// → 304), single byte ranges (→ 206 or 416; If-Range honoured) and the precompressed
/// variant the client prefers (zstd, then gzip, by Accept-Encoding q-values; never for
/// ranges).
pub async fn respond<'k, K: Kv>(req: &Request<'_>, kv: &'k K, config: &SiteConfig) -> Response<'k> {
    let head_only = req.method == "HEAD";
    let mut response = decide(req, kv, config, head_only).await;
    if head_only {
        response.body = Body::Empty;
    }
    if !req.keep_alive() {
        response.close = true;
    }
    let has_connection = response.headers.iter().any(|(n, _)| *n == "Connection");
    if response.close && !has_connection {
        response.headers.push(("Connection", String::from("close")));
    } else if !response.close && req.http10 {
        response
            .headers
            .push(("Connection", String::from("keep-alive")));
    }
    response
}

async fn decide<'k, K: Kv>(
    req: &Request<'_>,
    kv: &'k K,
    config: &SiteConfig,
    head_only: bool,
) -> Response<'k> {
    if req.method != "GET" && !head_only {
        // The connection stays open only if the body can be read past.
        let unreadable =
            req.transfer_encoding || req.content_length.is_some_and(|n| n > config.max_body);
        return error_response(405, unreadable, false);
    }
    if req.hosts > 1 || (!req.http10 && req.hosts == 0) {
        return error_response(400, true, head_only);
    }
    if req.transfer_encoding {
        return error_response(411, true, head_only);
    }
    if req.content_length.is_some_and(|n| n > config.max_body) {
        return error_response(413, true, head_only);
    }
    let Some(target) = Target::parse(req.target) else {
        return error_response(400, true, head_only);
    };
    match lookup(kv, &target).await {
        Found::Entry(entry) => serve(req, kv, entry),
        Found::Redirect => {
            let mut location = format!("/{}/", percent_encode(&target.key));
            if let Some(q) = target.query {
                location.push('?');
                location.push_str(q);
            }
            let mut r = message_response(301, "301 Moved Permanently\n", false, head_only);
            r.headers.push(("Location", location));
            r
        }
        Found::Nothing => match kv.get("404.html").await {
            Ok(Some(page)) => serve_not_found(req, page),
            _ => error_response(404, false, head_only),
        },
    }
}

/// A normalized request target.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    /// The decoded path without the leading `/`, segments joined by `/`.
    key: String,
    /// Whether the path names a directory (ends with `/`, or is the root).
    directory: bool,
    /// The query, if any and if it is plain visible ASCII.
    query: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(target: &'a str) -> Option<Target<'a>> {
        // Absolute form (`http://host/path`), which proxies send: keep the path.
        let mut path = target;
        for scheme in ["http://", "https://"] {
            let prefix = target.get(..scheme.len());
            if prefix.is_some_and(|p| p.eq_ignore_ascii_case(scheme)) {
                let rest = &target[scheme.len()..];
                path = rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
                if path.starts_with('?') {
                    return None;
                }
            }
        }
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path = path.split_once('#').map_or(path, |(p, _)| p);
        if !path.starts_with('/') {
            return None;
        }
        let decoded = percent_decode(path.as_bytes())?;
        let decoded = String::from_utf8(decoded).ok()?;
        if decoded.contains('\0') {
            return None;
        }
        let mut segments: Vec<&str> = Vec::new();
        let mut directory = true;
        for segment in decoded.split('/') {
            directory = matches!(segment, "" | "." | "..");
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop()?;
                }
                s => segments.push(s),
            }
        }
        let query = query.filter(|q| q.bytes().all(|b| b.is_ascii_graphic()));
        Some(Target {
            key: segments.join("/"),
            directory,
            query,
        })
    }
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

enum Found<'k> {
    Entry(Entry<'k>),
    /// The key is a directory with an index, named without its trailing slash.
    Redirect,
    Nothing,
}

async fn lookup<'k, K: Kv>(kv: &'k K, target: &Target<'_>) -> Found<'k> {
    if target.directory {
        let index = if target.key.is_empty() {
            String::from("index.html")
        } else {
            format!("{}/index.html", target.key)
        };
        return match kv.get(&index).await {
            Ok(Some(e)) => Found::Entry(e),
            _ => Found::Nothing,
        };
    }
    if let Ok(Some(e)) = kv.get(&target.key).await {
        return Found::Entry(e);
    }
    match kv.get(&format!("{}/index.html", target.key)).await {
        Ok(Some(_)) => Found::Redirect,
        _ => Found::Nothing,
    }
}

/// The entity tag of `entry` in `encoding`: the first 128 bits of its SHA-256 in hex,
/// with a suffix naming the encoding for the precompressed variants.
pub fn etag(entry: &Entry<'_>, encoding: Encoding) -> String {
    let mut s = String::with_capacity(40);
    s.push('"');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in &entry.sha256[..16] {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    match encoding {
        Encoding::Identity => {}
        Encoding::Gzip => s.push_str("-gz"),
        Encoding::Zstd => s.push_str("-zst"),
    }
    s.push('"');
    s
}

/// Whether an `If-None-Match` list matches `tag` (weak comparison; `*` matches).
fn none_match(values: &[&[u8]], tag: &str) -> bool {
    let tag = tag.as_bytes();
    values
        .iter()
        .any(|v| entity_tags(v).any(|t| t == b"*" || strip_weak(t) == tag))
}

fn strip_weak(t: &[u8]) -> &[u8] {
    t.strip_prefix(b"W/").unwrap_or(t)
}

/// The entity tags of a comma-separated list, each with its quotes (and `W/`), or `*`.
fn entity_tags(mut s: &[u8]) -> impl Iterator<Item = &[u8]> {
    core::iter::from_fn(move || {
        loop {
            s = trim(s);
            match s {
                [] => return None,
                [b',', rest @ ..] => s = rest,
                _ => break,
            }
        }
        if let [b'*', rest @ ..] = s {
            s = rest;
            return Some(&b"*"[..]);
        }
        let start = s;
        let weak = usize::from(s.starts_with(b"W/")) * 2;
        let end = if s.get(weak) == Some(&b'"') {
            s[weak + 1..]
                .iter()
                .position(|&b| b == b'"')
                .map(|i| weak + i + 2)
        } else {
            None
        };
        // Malformed: skip to the next comma.
        let end = end.unwrap_or_else(|| s.iter().position(|&b| b == b',').unwrap_or(s.len()));
        s = &s[end..];
        Some(&start[..end])
    })
}

/// Quality (0..=1000) of a content coding in `Accept-Encoding` values: its own q, or that
/// of `*`, or `None` if neither is listed.
fn coding_quality(values: &[&[u8]], coding: &str) -> Option<u16> {
    let mut own = None;
    let mut star = None;
    for item in values.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let mut params = item.split(|&b| b == b';');
        let name = trim(params.next().unwrap_or(&[]));
        if name.is_empty() {
            continue;
        }
        let mut q = 1000;
        for p in params {
            let p = trim(p);
            if p.len() >= 2 && p[0].eq_ignore_ascii_case(&b'q') && p[1] == b'=' {
                q = parse_qvalue(trim(&p[2..])).unwrap_or(0);
            }
        }
        let matches = name.eq_ignore_ascii_case(coding.as_bytes())
            || (coding == "gzip" && name.eq_ignore_ascii_case(b"x-gzip"));
        if matches {
            own = Some(q);
        } else if name == b"*" {
            star = Some(q);
        }
    }
    own.or(star)
}

/// `0`, `0.5`, `1.000`... as thousandths.
fn parse_qvalue(s: &[u8]) -> Option<u16> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The representation to send: the acceptable encoding with the highest quality, zstd
/// before gzip before identity on ties. Identity not named in the header ranks below any
/// coding that is; if nothing is acceptable, identity.
fn negotiate(values: &[&[u8]], entry: &Entry<'_>) -> Encoding {
    if values.is_empty() {
        return Encoding::Identity;
    }
    let mut best = (
        coding_quality(values, "identity").unwrap_or(1),
        Encoding::Identity,
    );
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        if entry.size_in(encoding).is_none() {
            continue;
        }
        let q = coding_quality(values, encoding.token()).unwrap_or(0);
        if q > 0 && q >= best.0 {
            best = (q, encoding);
        }
    }
    best.1
}

/// A single byte range, resolved against a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// Inclusive first and last byte.
    Satisfiable(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` value against `size`: `None` if it is to be ignored (not bytes,
/// malformed, or several ranges, which this server answers with the whole value).
fn parse_range(value: &[u8], size: u64) -> Option<ByteRange> {
    let value = trim(value);
    let (unit, spec) = value.split_at(value.iter().position(|&b| b == b'=')?);
    if !trim(unit).eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let spec = trim(&spec[1..]);
    if spec.contains(&b',') {
        return None;
    }
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    if first.is_empty() {
        let suffix = parse_decimal(last)?;
        if suffix == 0 || size == 0 {
            return Some(ByteRange::Unsatisfiable);
        }
        return Some(ByteRange::Satisfiable(size - suffix.min(size), size - 1));
    }
    let first = parse_decimal(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(parse_decimal(last)?)
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    if first >= size {
        return Some(ByteRange::Unsatisfiable);
    }
    Some(ByteRange::Satisfiable(
        first,
        last.map_or(size - 1, |l| l.min(size - 1)),
    ))
}

/// The value's time for `Last-Modified`: its own (the file's, from the archive), else
/// the store's.
fn modified<K: Kv>(kv: &K, entry: &Entry<'_>) -> Option<u64> {
    entry.modified.or_else(|| kv.modified())
}

/// Headers every representation of `entry` gets.
fn common_headers<K: Kv>(kv: &K, entry: &Entry<'_>, tag: String) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(9);
    headers.push(("Content-Type", String::from(entry.content_type)));
    headers.push(("ETag", tag));
    if let Some(secs) = modified(kv, entry) {
        headers.push(("Last-Modified", format_http_date(secs)));
    }
    if entry.has_variants() {
        headers.push(("Vary", String::from("Accept-Encoding")));
    }
    headers.push(("X-Content-Type-Options", String::from("nosniff")));
    headers
}

fn serve<'k, K: Kv>(req: &Request<'_>, kv: &'k K, entry: Entry<'k>) -> Response<'k> {
    let identity_tag = etag(&entry, Encoding::Identity);
    // If-Range: honour Range only if the client's copy is the current one.
    let range_allowed = match req.if_range {
        None => true,
        Some(v) => {
            let v = trim(v);
            v == identity_tag.as_bytes()
                || (parse_http_date(v).is_some() && parse_http_date(v) == modified(kv, &entry))
        }
    };
    let range = req
        .range
        .filter(|_| range_allowed)
        .and_then(|r| parse_range(r, entry.size));
    let encoding = if range.is_some() {
        Encoding::Identity
    } else {
        negotiate(&req.accept_encoding, &entry)
    };
    let tag = etag(&entry, encoding);

    let not_modified = if !req.if_none_match.is_empty() {
        none_match(&req.if_none_match, &tag)
    } else {
        match (
            req.if_modified_since.and_then(parse_http_date),
            modified(kv, &entry),
        ) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    };
    let mut headers = common_headers(kv, &entry, tag);
    if not_modified {
        headers.retain(|(n, _)| *n != "Content-Type");
        return Response {
            status: 304,
            headers,
            body: Body::Empty,
            close: false,
        };
    }
    headers.push(("Accept-Ranges", String::from("bytes")));
    let size = entry.size_in(encoding).unwrap_or(entry.size);
    match range {
        Some(ByteRange::Satisfiable(first, last)) => {
            let len = last - first + 1;
            headers.push(("Content-Range", format!("bytes {first}-{last}/{size}")));
            headers.push(("Content-Length", decimal(len)));
            Response {
                status: 206,
                headers,
                body: Body::Value {
                    entry,
                    encoding,
                    offset: first,
                    len,
                },
                close: false,
            }
        }
        Some(ByteRange::Unsatisfiable) => {
            let mut r = error_response(416, false, false);
            r.headers.push(("Content-Range", format!("bytes */{size}")));
            r
        }
        None => {
            if encoding != Encoding::Identity {
                headers.push(("Content-Encoding", String::from(encoding.token())));
            }
            headers.push(("Content-Length", decimal(size)));
            Response {
                status: 200,
                headers,
                body: Body::Value {
                    entry,
                    encoding,
                    offset: 0,
                    len: size,
                },
                close: false,
            }
        }
    }
}

/// The site's `404.html`, sent with status 404: negotiated, never ranged or conditional.
fn serve_not_found<'k>(req: &Request<'_>, page: Entry<'k>) -> Response<'k> {
    let encoding = negotiate(&req.accept_encoding, &page);
    let size = page.size_in(encoding).unwrap_or(page.size);
    let mut headers = Vec::with_capacity(5);
    headers.push(("Content-Type", String::from(page.content_type)));
    if page.has_variants() {
        headers.push(("Vary", String::from("Accept-Encoding")));
    }
    if encoding != Encoding::Identity {
        headers.push(("Content-Encoding", String::from(encoding.token())));
    }
    headers.push(("Content-Length", decimal(size)));
    Response {
        status: 404,
        headers,
        body: Body::Value {
            entry: page,
            encoding,
            offset: 0,
            len: size,
        },
        close: false,
    }
}

#[cfg(test)]
mod tests;
