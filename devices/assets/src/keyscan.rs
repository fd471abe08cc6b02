//! Finding private keys in a byte stream (host only, feature `pack`).
//!
//! A file holds a private key when it has a PEM block whose label ends in `PRIVATE KEY`
//! (`-----BEGIN PRIVATE KEY-----`, `RSA`, `EC`, `DSA`, `ENCRYPTED`, `OPENSSH`) and whose
//! base64 body decodes to a private-key structure: a DER `SEQUENCE` spanning the whole
//! body shaped like PKCS#8 (`INTEGER` version, `SEQUENCE` algorithm with an `OBJECT
//! IDENTIFIER`, `OCTET STRING` key), encrypted PKCS#8 (algorithm, `OCTET STRING`), PKCS#1
//! RSA or DSA (a version and at least five more `INTEGER`s), or SEC1 EC (`INTEGER` 1,
//! `OCTET STRING`); or OpenSSH's `openssh-key-v1` format; or a legacy encrypted PEM key
//! (`Proc-Type: 4,ENCRYPTED` headers). A page that shows an example header with a
//! placeholder body (`MIIE...`, an HTML-escaped or elided text) holds no key.
//!
//! [`KeyScan`] is fed a stream in pieces of any size: only the text after a `PRIVATE
//! KEY-----` marker is kept (up to [`MAX_BODY`] bytes), so scanning costs no memory.

use std::vec::Vec;

const MARKER: &[u8] = b"PRIVATE KEY-----";
/// The most body bytes examined after a marker: an RSA-16384 key's PEM is about 13 KB.
pub const MAX_BODY: usize = 32 * 1024;

/// What kind of private key was found.
pub type KeyKind = &'static str;

/// A streaming private-key finder.
#[derive(Default)]
pub struct KeyScan {
    /// The last `MARKER.len() - 1` bytes seen outside a body, to find a split marker.
    tail: Vec<u8>,
    /// The body after a marker, while one is being read.
    body: Option<Vec<u8>>,
    found: Option<KeyKind>,
}

impl KeyScan {
    /// A scanner that has seen nothing.
    pub fn new() -> KeyScan {
        KeyScan::default()
    }

    /// The key found so far, if any.
    pub fn found(&self) -> Option<KeyKind> {
        self.found
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.found.is_none() {
            if let Some(body) = &mut self.body {
                // The body ends at the END line's dashes.
                let end = memchr::memchr(b'-', data);
                let take = end.unwrap_or(data.len());
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&data[..take.min(room)]);
                if end.is_some() || body.len() >= MAX_BODY {
                    let body = self.body.take().unwrap_or_default();
                    self.found = classify(&body);
                    data = &data[take.min(data.len())..];
                    // The dashes that ended it are not the start of a marker.
                    data = &data[data.iter().take_while(|&&b| b == b'-').count()..];
                } else {
                    data = &[];
                }
                continue;
            }
            // Look for the marker in the tail and the new data together.
            let keep = MARKER.len() - 1;
            let mut window = core::mem::take(&mut self.tail);
            let head_len = window.len();
            window.extend_from_slice(&data[..data.len().min(MAX_BODY)]);
            let consumed = window.len() - head_len;
            match find(&window, MARKER) {
                Some(at) => {
                    let after = at + MARKER.len();
                    // `after` is past the tail: within this call's data.
                    let skip = after - head_len;
                    self.body = Some(Vec::new());
                    data = &data[skip..];
                }
                None => {
                    let start = window.len().saturating_sub(keep);
                    self.tail = window[start..].to_vec();
                    data = &data[consumed..];
                }
            }
        }
    }

    /// Ends the stream: a body still open at the end is examined too.
    pub fn finish(&mut self) -> Option<KeyKind> {
        if self.found.is_none()
            && let Some(body) = self.body.take()
        {
            self.found = classify(&body);
        }
        self.found
    }
}

/// Scans a whole buffer.
pub fn find_private_key(bytes: &[u8]) -> Option<KeyKind> {
    let mut s = KeyScan::new();
    s.feed(bytes);
    s.finish()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// What the text between a BEGIN line's end and the next `-` is.
fn classify(body: &[u8]) -> Option<KeyKind> {
    let text = core::str::from_utf8(body).ok()?;
    // RFC 1421 headers: a legacy encrypted key.
    if text.contains("Proc-Type:") && text.contains("ENCRYPTED") && text.contains("DEK-Info:") {
        return Some("a legacy encrypted PEM private key");
    }
    let der = decode_base64(text)?;
    if der.starts_with(b"openssh-key-v1\0") {
        return Some("an OpenSSH private key");
    }
    der_shape(&der)
}

/// Standard base64 with optional padding, whitespace ignored; `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits, mut pad) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        if pad > 0 {
            return None;
        }
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (pad <= 2 && !out.is_empty()).then_some(out)
}

/// One DER element: tag, contents, and the rest after it.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &rest[..n] {
            len = (len << 8) | x as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;

/// The kind of private-key structure `der` is, if it is one.
fn der_shape(der: &[u8]) -> Option<KeyKind> {
    let (tag, body, rest) = tlv(der)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut items = Vec::new();
    let mut b = body;
    while !b.is_empty() {
        let (t, c, r) = tlv(b)?;
        items.push((t, c));
        b = r;
    }
    let is_alg = |c: &[u8]| tlv(c).is_some_and(|(t, _, _)| t == OID);
    let small_int = |c: &[u8]| c.len() == 1 && c[0] <= 1;
    match items.as_slice() {
        [(INTEGER, v), (SEQUENCE, alg), (OCTET_STRING, _), ..] if small_int(v) && is_alg(alg) => {
            Some("a PKCS#8 private key")
        }
        [(SEQUENCE, alg), (OCTET_STRING, _)] if is_alg(alg) => {
            Some("an encrypted PKCS#8 private key")
        }
        [
            (INTEGER, v),
            (INTEGER, _),
            (INTEGER, _),
            (INTEGER, _),
            (INTEGER, _),
            (INTEGER, _),
            ..,
        ] if v.len() == 1 && v[0] <= 1 && items.iter().all(|(t, _)| *t == INTEGER) => {
            Some("an RSA or DSA private key")
        }
        [(INTEGER, v), (OCTET_STRING, _), ..] if v == &[1] => Some("an EC private key"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    // A PKCS#8 ed25519 key (RFC 8410's example).
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";

    #[test]
    fn real_keys_are_found_split_anywhere() {
        let text = format!("<pre>some text\n{PKCS8}</pre>");
        assert_eq!(
            find_private_key(text.as_bytes()),
            Some("a PKCS#8 private key")
        );
        for split in 0..text.len() {
            let mut s = KeyScan::new();
            s.feed(&text.as_bytes()[..split]);
            s.feed(&text.as_bytes()[split..]);
            assert_eq!(s.finish(), Some("a PKCS#8 private key"), "{split}");
        }
        let mut s = KeyScan::new();
        for b in text.as_bytes() {
            s.feed(core::slice::from_ref(b));
        }
        assert!(s.finish().is_some());
    }

    #[test]
    fn examples_and_placeholders_are_not_keys() {
        for text in [
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC...\n-----END PRIVATE KEY-----",
            "<code>-----BEGIN RSA PRIVATE KEY-----</code> starts a key file",
            "-----BEGIN PRIVATE KEY-----\n&lt;your key here&gt;\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----",
        ] {
            assert_eq!(find_private_key(text.as_bytes()), None, "{text}");
        }
        // A placeholder first, a real key after it.
        let text = format!("-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n{PKCS8}");
        assert!(find_private_key(text.as_bytes()).is_some());
    }

    #[test]
    fn der_shapes() {
        assert_eq!(der_shape(&[0x30, 0x00]), None);
        // SEC1: SEQUENCE { INTEGER 1, OCTET STRING 2 bytes }
        assert_eq!(
            der_shape(&[0x30, 0x07, 0x02, 0x01, 0x01, 0x04, 0x02, 0xaa, 0xbb]),
            Some("an EC private key")
        );
        // Trailing bytes after the outer SEQUENCE: not a key.
        assert_eq!(
            der_shape(&[0x30, 0x07, 0x02, 0x01, 0x01, 0x04, 0x02, 0xaa, 0xbb, 0]),
            None
        );
        let mut rsa = std::vec![0x30, 18];
        for _ in 0..6 {
            rsa.extend_from_slice(&[0x02, 0x01, 0x00]);
        }
        assert_eq!(der_shape(&rsa), Some("an RSA or DSA private key"));
        assert_eq!(der_shape(&rsa[..rsa.len() - 3]), None);
    }
}
