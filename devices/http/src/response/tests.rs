//! The protocol logic, from request bytes to response plans, without sockets.

use super::*;
use crate::request::parse_request;
use crate::testing::{MemKv, poll_ready};
use alloc::string::ToString;
use alloc::vec;

const INDEX: &[u8] = b"<!doctype html><title>home</title><p>Hello from compose.</p>";

fn site() -> MemKv {
    MemKv::new(&[
        ("index.html", INDEX),
        ("style.css", b"body { margin: 0 auto; max-width: 40em; }"),
        ("logo.bin", b"0123456789"),
        ("docs/index.html", b"<h1>docs</h1> and more text here"),
        ("docs/guide.html", b"<h1>guide</h1> and more text here"),
        ("a b.txt", b"spaced"),
        ("empty", b""),
    ])
}

/// Parses `raw` and plans the response from `kv`.
fn ask<'k>(kv: &'k MemKv, raw: &str) -> Response<'k> {
    let config = SiteConfig::default();
    let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
    let (req, _) = parse_request(raw.as_bytes(), &mut headers, &config)
        .unwrap()
        .unwrap();
    poll_ready(respond(&req, kv, &config))
}

fn get<'k>(kv: &'k MemKv, target: &str, extra: &str) -> Response<'k> {
    ask(
        kv,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
    )
}

fn value<'k>(r: &Response<'k>) -> (&'k str, Encoding, u64, u64) {
    match &r.body {
        Body::Value {
            entry,
            encoding,
            offset,
            len,
        } => (entry.key, *encoding, *offset, *len),
        other => panic!("not a value: {other:?}"),
    }
}

#[test]
fn serves_files_with_metadata() {
    let kv = site();
    let r = get(&kv, "/", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        value(&r),
        ("index.html", Encoding::Identity, 0, INDEX.len() as u64)
    );
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        r.header("content-length"),
        Some(format!("{}", INDEX.len()).as_str())
    );
    assert_eq!(
        r.header("last-modified"),
        Some("Tue, 14 Nov 2023 22:13:20 GMT")
    );
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let tag = r.header("etag").unwrap();
    assert!(
        tag.len() == 34 && tag.starts_with('"') && tag.ends_with('"'),
        "{tag}"
    );
    assert!(!r.close);
    assert_eq!(r.header("connection"), None);

    let r = get(&kv, "/logo.bin", "");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("vary"), None, "no variants, nothing varies");

    let r = get(&kv, "/empty", "");
    assert_eq!((r.status, value(&r).3), (200, 0));

    let mut out = Vec::new();
    get(&kv, "/style.css", "").write_head(&mut out);
    let head = String::from_utf8(out).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/css; charset=utf-8\r\n"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"));
}

#[test]
fn head_has_the_headers_but_no_body() {
    let kv = site();
    let r = ask(&kv, "HEAD /docs/guide.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Body::Empty);
    assert_eq!(r.header("content-length"), Some("33"));
    let r = ask(&kv, "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, &r.body), (404, &Body::Empty));
    assert_eq!(r.header("content-length"), Some("14"));
}

#[test]
fn directories_and_redirects() {
    let kv = site();
    assert_eq!(value(&get(&kv, "/docs/", "")).0, "docs/index.html");
    let r = get(&kv, "/docs", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    assert_eq!(
        get(&kv, "/docs?v=1&w=2", "").header("location"),
        Some("/docs/?v=1&w=2")
    );
    assert_eq!(get(&kv, "/docs/guide.html/", "").status, 404);
    assert_eq!(get(&kv, "/style.css/", "").status, 404);
}

#[test]
fn targets_are_decoded_and_normalized() {
    let kv = site();
    for (target, key) in [
        ("/a%20b.txt", "a b.txt"),
        ("/docs/../index.html", "index.html"),
        ("/docs/./guide.html", "docs/guide.html"),
        ("//docs//guide.html", "docs/guide.html"),
        ("/docs/guide.html?x=%zz", "docs/guide.html"),
        ("/%64ocs/guide.html", "docs/guide.html"),
        ("/docs/guide.html/..", "docs/index.html"),
        ("http://example.com/style.css", "style.css"),
        ("HTTPS://example.com", "index.html"),
    ] {
        let r = get(&kv, target, "");
        assert_eq!((r.status, value(&r).0), (200, key), "{target}");
    }
    for target in [
        "/..",
        "/../index.html",
        "/%2e%2e/index.html",
        "/%zz",
        "/%0",
        "/%00",
        "/%ff",
        "*",
        "index.html",
        "http://x?y",
    ] {
        let r = get(&kv, target, "");
        assert_eq!(r.status, 400, "{target}");
        assert!(r.close);
    }
}

#[test]
fn not_found_and_custom_404_page() {
    let kv = site();
    let r = get(&kv, "/missing.html", "");
    assert_eq!(
        (r.status, &r.body),
        (404, &Body::Message("404 Not Found\n"))
    );
    assert!(!r.close, "a 404 keeps the connection");

    let with_page = MemKv::new(&[
        ("index.html", INDEX),
        ("404.html", b"<h1>lost?</h1> try the home page"),
    ]);
    let r = get(&with_page, "/missing.html", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(value(&r).0, "404.html");
    assert_eq!(value(&r).1, Encoding::Gzip);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

#[test]
fn methods_other_than_get_and_head() {
    let kv = site();
    let r = ask(&kv, "POST / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r.status, r.header("allow"), r.close),
        (405, Some("GET, HEAD"), false)
    );
    let r = ask(
        &kv,
        "DELETE / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.close),
        (405, false),
        "a small body is read past"
    );
    let r = ask(
        &kv,
        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!((r.status, r.close), (405, true));
    let r = ask(&kv, "get / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405, "methods are case-sensitive");
}

#[test]
fn host_and_body_rules() {
    let kv = site();
    let r = ask(&kv, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!((r.status, r.close), (400, true));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(
        ask(&kv, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status,
        400
    );
    assert_eq!(
        ask(&kv, "GET / HTTP/1.0\r\n\r\n").status,
        200,
        "HTTP/1.0 needs no Host"
    );
    let r = ask(
        &kv,
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_eq!((r.status, r.close), (413, true));
    let r = ask(
        &kv,
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
    );
    assert_eq!((r.status, r.close), (200, false));
    let r = ask(
        &kv,
        "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!((r.status, r.close), (411, true));
}

#[test]
fn connection_persistence() {
    let kv = site();
    let r = ask(&kv, "GET / HTTP/1.0\r\n\r\n");
    assert!(r.close);
    assert_eq!(r.header("connection"), Some("close"));
    let r = ask(&kv, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(!r.close);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let r = ask(
        &kv,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.close);
    assert_eq!(r.header("connection"), Some("close"));
    let r = ask(
        &kv,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        r.headers.iter().filter(|(n, _)| *n == "Connection").count(),
        1
    );
}

#[test]
fn conditional_requests() {
    let kv = site();
    let tag = get(&kv, "/", "").header("etag").unwrap().to_string();
    let r = get(&kv, "/", &format!("If-None-Match: {tag}\r\n"));
    assert_eq!((r.status, &r.body), (304, &Body::Empty));
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    assert_eq!(r.header("content-type"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    for inm in [
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".into(),
        format!("\"a,b\",W/{tag}"),
    ] {
        assert_eq!(
            get(&kv, "/", &format!("If-None-Match: {inm}\r\n")).status,
            304,
            "{inm}"
        );
    }
    for inm in ["\"nope\"", "", "garbage", "W/", &tag[..10]] {
        assert_eq!(
            get(&kv, "/", &format!("If-None-Match: {inm}\r\n")).status,
            200,
            "{inm}"
        );
    }
    // The tag names the representation: a gzip tag does not validate the identity one.
    let gz = get(&kv, "/", "Accept-Encoding: gzip\r\n");
    let gz_tag = gz.header("etag").unwrap();
    assert_ne!(gz_tag, tag);
    assert_eq!(
        get(&kv, "/", &format!("If-None-Match: {gz_tag}\r\n")).status,
        200
    );
    assert_eq!(
        get(
            &kv,
            "/",
            &format!("If-None-Match: {gz_tag}\r\nAccept-Encoding: gzip\r\n")
        )
        .status,
        304
    );

    let r = get(
        &kv,
        "/",
        "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT\r\n",
    );
    assert_eq!(r.status, 304);
    assert_eq!(
        get(
            &kv,
            "/",
            "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT\r\n"
        )
        .status,
        304
    );
    assert_eq!(
        get(
            &kv,
            "/",
            "If-Modified-Since: Mon, 13 Nov 2023 00:00:00 GMT\r\n"
        )
        .status,
        200
    );
    assert_eq!(
        get(&kv, "/", "If-Modified-Since: yesterday\r\n").status,
        200
    );
    // If-None-Match wins over If-Modified-Since.
    let both = "If-None-Match: \"other\"\r\nIf-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT\r\n";
    assert_eq!(get(&kv, "/", both).status, 200);
    let mut no_time = site();
    no_time.modified = None;
    let r = get(
        &no_time,
        "/",
        "If-Modified-Since: Wed, 15 Nov 2023 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("last-modified"), None);
    // A value with its own time (the file's, from the archive) is dated by it.
    let mut own = site();
    own.modified = None;
    for e in &mut own.entries {
        e.modified = Some(1_600_000_000);
    }
    let r = get(&own, "/", "");
    assert_eq!(
        r.header("last-modified"),
        Some("Sun, 13 Sep 2020 12:26:40 GMT")
    );
    let since = |d: &str| get(&own, "/", &format!("If-Modified-Since: {d}\r\n")).status;
    assert_eq!(since("Sun, 13 Sep 2020 12:26:40 GMT"), 304);
    assert_eq!(since("Sat, 12 Sep 2020 00:00:00 GMT"), 200);
}

#[test]
fn byte_ranges() {
    let kv = site();
    let cases = [
        ("bytes=0-3", 0, 4, "bytes 0-3/10"),
        ("bytes=2-", 2, 8, "bytes 2-9/10"),
        ("bytes=-3", 7, 3, "bytes 7-9/10"),
        ("bytes=-30", 0, 10, "bytes 0-9/10"),
        ("bytes=5-100", 5, 5, "bytes 5-9/10"),
        ("bytes=9-9", 9, 1, "bytes 9-9/10"),
        ("BYTES = 1-1", 1, 1, "bytes 1-1/10"),
    ];
    for (range, offset, len, content_range) in cases {
        let r = get(&kv, "/logo.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            value(&r),
            ("logo.bin", Encoding::Identity, offset, len),
            "{range}"
        );
        assert_eq!(r.header("content-range"), Some(content_range));
        assert_eq!(r.header("content-length"), Some(format!("{len}").as_str()));
    }
    for range in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
        let r = get(&kv, "/logo.bin", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */10"));
        assert!(!r.close);
    }
    assert_eq!(get(&kv, "/empty", "Range: bytes=0-\r\n").status, 416);
    assert_eq!(get(&kv, "/empty", "Range: bytes=-1\r\n").status, 416);
    // Ignored: several ranges, other units, nonsense.
    for range in [
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=5-2",
        "bytes=x-",
        "bytes=",
        "bytes",
        "bytes=--1",
        "bytes=99999999999999999999-",
    ] {
        let r = get(&kv, "/logo.bin", &format!("Range: {range}\r\n"));
        assert_eq!((r.status, value(&r).3), (200, 10), "{range}");
    }
    let two = get(&kv, "/logo.bin", "Range: bytes=0-1\r\nRange: bytes=2-3\r\n");
    assert_eq!(two.status, 200);
}

#[test]
fn if_range() {
    let kv = site();
    let tag = get(&kv, "/logo.bin", "")
        .header("etag")
        .unwrap()
        .to_string();
    let r = get(
        &kv,
        "/logo.bin",
        &format!("Range: bytes=0-1\r\nIf-Range: {tag}\r\n"),
    );
    assert_eq!(r.status, 206);
    let r = get(
        &kv,
        "/logo.bin",
        "Range: bytes=0-1\r\nIf-Range: \"old\"\r\n",
    );
    assert_eq!(r.status, 200);
    let r = get(
        &kv,
        "/logo.bin",
        &format!("Range: bytes=0-1\r\nIf-Range: W/{tag}\r\n"),
    );
    assert_eq!(r.status, 200, "If-Range needs a strong match");
    let r = get(
        &kv,
        "/logo.bin",
        "Range: bytes=0-1\r\nIf-Range: Tue, 14 Nov 2023 22:13:20 GMT\r\n",
    );
    assert_eq!(r.status, 206);
    let r = get(
        &kv,
        "/logo.bin",
        "Range: bytes=0-1\r\nIf-Range: Tue, 14 Nov 2023 22:13:21 GMT\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn content_negotiation() {
    let kv = site();
    let cases = [
        ("gzip, deflate, br, zstd", Encoding::Zstd),
        ("gzip", Encoding::Gzip),
        ("x-gzip", Encoding::Gzip),
        ("GZIP", Encoding::Gzip),
        ("zstd;q=0.5, gzip", Encoding::Gzip),
        ("zstd;q=0.5, gzip;q=0.5", Encoding::Zstd),
        ("zstd; q=1.0, gzip;q=0.9", Encoding::Zstd),
        ("zstd;q=0, gzip;q=0.001", Encoding::Gzip),
        ("*", Encoding::Zstd),
        ("*;q=0.2, zstd;q=0.1", Encoding::Gzip),
        ("identity", Encoding::Identity),
        ("gzip;q=0.5, identity", Encoding::Identity),
        ("gzip;q=0.5, identity;q=0.5", Encoding::Gzip),
        ("gzip;q=0", Encoding::Identity),
        ("gzip;q=2", Encoding::Identity),
        ("gzip;q=abc", Encoding::Identity),
        ("br", Encoding::Identity),
        ("", Encoding::Identity),
        (",,;;,", Encoding::Identity),
    ];
    for (accept, expected) in cases {
        let r = get(&kv, "/", &format!("Accept-Encoding: {accept}\r\n"));
        let (_, encoding, _, len) = value(&r);
        assert_eq!(encoding, expected, "{accept}");
        let entry_len = match expected {
            Encoding::Identity => INDEX.len(),
            Encoding::Gzip => INDEX.len() / 3,
            Encoding::Zstd => INDEX.len() / 4,
        };
        assert_eq!(len, entry_len as u64);
        assert_eq!(r.header("content-length"), Some(format!("{len}").as_str()));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let ce = r.header("content-encoding");
        assert_eq!(
            ce,
            (expected != Encoding::Identity).then(|| expected.token()),
            "{accept}"
        );
    }
    // Split over several fields.
    let r = get(
        &kv,
        "/",
        "Accept-Encoding: gzip\r\nAccept-Encoding: zstd\r\n",
    );
    assert_eq!(value(&r).1, Encoding::Zstd);
    // A value without variants is sent as is.
    let r = get(&kv, "/logo.bin", "Accept-Encoding: zstd, gzip\r\n");
    assert_eq!(
        (value(&r).1, r.header("content-encoding")),
        (Encoding::Identity, None)
    );
    // Ranges are always of the original bytes.
    let r = get(
        &kv,
        "/",
        "Accept-Encoding: zstd, gzip\r\nRange: bytes=0-9\r\n",
    );
    assert_eq!(
        (r.status, value(&r).1, r.header("content-encoding")),
        (206, Encoding::Identity, None)
    );
}

#[test]
fn qvalues() {
    assert_eq!(parse_qvalue(b"1"), Some(1000));
    assert_eq!(parse_qvalue(b"1.000"), Some(1000));
    assert_eq!(parse_qvalue(b"0.5"), Some(500));
    assert_eq!(parse_qvalue(b"0.25"), Some(250));
    assert_eq!(parse_qvalue(b"0"), Some(0));
    assert_eq!(parse_qvalue(b"0."), Some(0));
    assert_eq!(parse_qvalue(b"1.5"), None);
    assert_eq!(parse_qvalue(b"0.1234"), None);
    assert_eq!(parse_qvalue(b""), None);
}

#[test]
fn entity_tag_lists() {
    let tags: Vec<&[u8]> = entity_tags(b" \"a\" , W/\"b\",*,junk, \"c,d\" ,").collect();
    assert_eq!(tags, [&b"\"a\""[..], b"W/\"b\"", b"*", b"junk", b"\"c,d\""]);
    assert_eq!(entity_tags(b"\"unterminated").count(), 1);
    assert_eq!(entity_tags(b"").count(), 0);
}

#[test]
fn percent_encoding_of_locations() {
    assert_eq!(percent_encode("a b/ü?#%"), "a%20b/%C3%BC%3F%23%25");
    let kv = MemKv::new(&[("a b/index.html", b"x")]);
    assert_eq!(get(&kv, "/a%20b", "").header("location"), Some("/a%20b/"));
}

#[test]
fn non_ascii_targets() {
    let kv = MemKv::new(&[("é.html", b"accent")]);
    assert_eq!(value(&get(&kv, "/é.html", "")).0, "é.html");
    assert_eq!(value(&get(&kv, "/%C3%A9.html", "")).0, "é.html");
    assert_eq!(get(&kv, "ééééééé", "").status, 400);
    assert_eq!(get(&kv, "httpééé://x/", "").status, 400);
    assert_eq!(get(&kv, "/ü", "").status, 404);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any target and any values of the headers the server interprets: a response,
        /// never a panic, and a body consistent with its Content-Length.
        #[test]
        fn any_request_gets_a_consistent_response(
            method in prop_oneof![Just("GET".to_string()), Just("HEAD".to_string()), "[A-Z]{1,8}"],
            target in "[^ \\x00-\\x20\\x7f]{0,40}",
            values in proptest::collection::vec(("(?i)range|accept-encoding|if-none-match|if-range|if-modified-since|connection|content-length|host", "[ -~]{0,40}"), 0..6),
        ) {
            let kv = site();
            let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n");
            for (name, value) in &values {
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("\r\n");
            let config = SiteConfig::default();
            let mut headers = vec![httparse::EMPTY_HEADER; config.max_headers];
            let Ok(Some((req, _))) = parse_request(raw.as_bytes(), &mut headers, &config) else {
                return Ok(());
            };
            let r = poll_ready(respond(&req, &kv, &config));
            let length: u64 = r.header("content-length").map_or(0, |v| v.parse().unwrap());
            match &r.body {
                Body::Empty => prop_assert!(method == "HEAD" || r.status == 304),
                Body::Message(m) => prop_assert_eq!(m.len() as u64, length),
                Body::Value { entry, encoding, offset, len } => {
                    prop_assert_eq!(*len, length);
                    let size = entry.size_in(*encoding).unwrap();
                    prop_assert!(offset + len <= size);
                }
            }
        }
    }
}
