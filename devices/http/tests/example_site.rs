//! The example site of `specs/site.kdl` packs, and every link, stylesheet and image it
//! references is served with 200 (or a 301 to a page that is).

use std::path::Path;

use compose_assets::{Embedded, PackOptions, pack};
use compose_devices::kv::Kv;
use compose_http::SiteConfig;
use compose_http::request::parse_request;
use compose_http::response::{Response, respond};

/// Polls a future that never waits on anything external to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn get<'k>(kv: &'k Embedded, path: &str) -> Response<'k> {
    let config = SiteConfig::default();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut headers = vec![compose_http::request::EMPTY_HEADER; 64];
    let (req, _) = parse_request(raw.as_bytes(), &mut headers, &config)
        .unwrap()
        .unwrap();
    ready(respond(&req, kv, &config))
}

/// Values of `href="..."` and `src="..."` attributes.
fn references(html: &str) -> Vec<String> {
    let mut refs = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap();
            refs.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    refs
}

/// `reference` resolved against the page at `base` (an absolute path).
fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with('/') {
        return reference.to_string();
    }
    let dir = &base[..=base.rfind('/').unwrap()];
    format!("{dir}{reference}")
}

#[test]
fn every_reference_in_the_example_site_resolves() {
    let public = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/site/public");
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("site.kv");
    let summary = pack(&public, &PackOptions::default(), &archive).unwrap();
    assert!(summary.files >= 5);
    let kv = Embedded::new(Vec::leak(std::fs::read(&archive).unwrap())).unwrap();

    let keys = ready(kv.list("", None, 1000)).unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with(".png")),
        "the site has an image"
    );
    assert!(
        keys.iter().any(|k| k.contains('/')),
        "the site has a nested directory"
    );
    let mut checked = 0;
    for key in keys.iter().filter(|k| k.ends_with(".html")) {
        let html = std::fs::read_to_string(public.join(key)).unwrap();
        let page = format!("/{key}");
        for reference in references(&html) {
            if reference.starts_with("http://") || reference.starts_with("https://") {
                continue;
            }
            let target = resolve(&page, &reference);
            let mut response = get(&kv, &target);
            if response.status == 301 {
                response = get(&kv, response.header("location").unwrap());
            }
            assert_eq!(response.status, 200, "{reference} in {key} (as {target})");
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} references");
    let png = get(&kv, "/logo.png");
    assert_eq!(png.header("content-type"), Some("image/png"));
}
