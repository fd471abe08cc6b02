//! The device on the unix platform's real TCP: the refusals at start (their messages), and
//! the record path end to end against a rustls client (large writes over many records, the
//! reads, close_notify both ways), with certificates openssl makes in a temporary directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use compose_devices::leak;
use compose_devices::net::{Tcp as _, TcpFlow as _, TcpListener as _};
use compose_tls::{Config, KeyError, Tls};
use compose_unix::{Ipv4, Ipv4Config, Netif, Tcp};

struct Pem(Vec<u8>);
impl compose_devices::secret::Secret for Pem {
    fn value(&self) -> &[u8] {
        &self.0
    }
}

fn openssl(dir: &Path) {
    let script = "
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=ca 2>/dev/null
        printf 'subjectAltName=DNS:localhost\\n' > ext
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key
        openssl ecparam -name prime256v1 -genkey -noout -out sec1.key
        openssl genpkey -algorithm ed25519 -out ed.key
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out p384.key
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa.key 2>/dev/null
        for k in p256 sec1 ed p384 rsa; do
          openssl req -new -key $k.key -out $k.csr -subj /CN=localhost
          openssl x509 -req -in $k.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $k.crt -days 2 -extfile ext 2>/dev/null
        done";
    let o = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn read(dir: &Path, names: &[&str]) -> Vec<u8> {
    names
        .iter()
        .flat_map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect()
}

#[test]
fn refusals_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path());
    let d = dir.path();
    let provider = rustls_rustcrypto_provider();
    let check = |pem: Vec<u8>| compose_tls::keys::certified_key(&pem, &provider).map(|_| ());
    // Accepted: P-256 as PKCS#8 and SEC1, Ed25519; the key may come first.
    check(read(d, &["p256.crt", "p256.key"])).unwrap();
    check(read(d, &["sec1.crt", "sec1.key"])).unwrap();
    check(read(d, &["ed.key", "ed.crt", "ca.pem"])).unwrap();
    // Refused.
    assert_eq!(
        check(read(d, &["ed.crt", "p256.key"])),
        Err(KeyError::Mismatch)
    );
    assert_eq!(
        check(read(d, &["p256.crt", "sec1.key"])),
        Err(KeyError::Mismatch)
    );
    assert_eq!(check(read(d, &["p256.crt"])), Err(KeyError::NoKey));
    assert_eq!(check(read(d, &["p256.key"])), Err(KeyError::NoCertificate));
    assert_eq!(check(b"not PEM at all".to_vec()), Err(KeyError::NoKey));
    assert_eq!(
        check(read(d, &["p256.crt", "p256.key", "ed.key"])),
        Err(KeyError::TwoKeys)
    );
    assert!(matches!(
        check(read(d, &["rsa.crt", "rsa.key"])),
        Err(KeyError::UnsupportedKey(k)) if k.contains("RSA")
    ));
    assert!(matches!(
        check(read(d, &["p384.crt", "p384.key"])),
        Err(KeyError::UnsupportedKey(k)) if k.contains("P-256")
    ));
    // The device's message names the secret.
    let err = compose_tls::Error::Secret {
        name: "tls",
        error: KeyError::Mismatch,
    };
    assert_eq!(
        err.to_string(),
        "secret `tls`: its private key does not match its first certificate (the key of another certificate?)"
    );
    assert!(
        compose_tls::Error::Secret {
            name: "site",
            error: KeyError::NoKey
        }
        .to_string()
        .starts_with("secret `site`: it holds no private key")
    );
}

fn rustls_rustcrypto_provider() -> rustls::crypto::CryptoProvider {
    compose_tls::provider()
}

/// Starts echo servers over the device on 127.0.0.1, one per PEM (one thread, the unix
/// executor: one per process); returns their ports.
fn echo_servers(pems: Vec<Vec<u8>>) -> Vec<u16> {
    let (tx, rx) = mpsc::channel();
    let count = pems.len();
    std::thread::spawn(move || {
        compose_unix::run(async move {
            let netif = leak(Netif::new("service").unwrap());
            let config = Ipv4Config {
                address: Some("127.0.0.1/8".parse().unwrap()),
                gateway: None,
                dhcp: false,
            };
            let stack = leak(Ipv4::new(netif, config).unwrap());
            let tcp = leak(Tcp::new(stack).unwrap());
            let console = leak(compose_unix::Console::new().unwrap());
            let random = leak(compose_unix::Random::new().unwrap());
            let clock = leak(compose_unix::WallClock::new().unwrap());
            for pem in pems {
                let secret = leak(Pem(pem));
                let tls = leak(
                    Tls::new(
                        console,
                        tcp,
                        secret,
                        "tls",
                        random,
                        clock,
                        Config::default(),
                    )
                    .unwrap(),
                );
                let listener = tls.listen(0).unwrap();
                tx.send(listener.port()).unwrap();
                compose_devices::spawn(echo(listener));
            }
            core::future::pending::<()>().await;
        })
    });
    (0..count)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
        .collect()
}

async fn echo<L: compose_devices::net::TcpListener + 'static>(listener: L) {
    loop {
        let mut flow = listener.accept().await.unwrap();
        compose_devices::spawn(async move {
            let mut buf = vec![0u8; 50_000];
            loop {
                match flow.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if flow.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = flow.close().await;
        });
    }
}

#[test]
fn records_both_ways_and_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path());
    let ports = echo_servers(vec![
        read(dir.path(), &["p256.crt", "p256.key"]),
        read(dir.path(), &["ed.crt", "ed.key"]),
    ]);
    for (versions, key, port) in [
        (&[&rustls::version::TLS13][..], "p256", ports[0]),
        (&[&rustls::version::TLS12][..], "p256", ports[0]),
        (&[&rustls::version::TLS13][..], "ed", ports[1]),
        (&[&rustls::version::TLS12][..], "ed", ports[1]),
    ] {
        let mut roots = rustls::RootCertStore::empty();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        use rustls::pki_types::pem::PemObject as _;
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(compose_tls::provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        // 200 KB in uneven pieces: many records each way, some split across reads.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut back = Vec::new();
        for piece in data.chunks(37_123) {
            tls.write_all(piece).unwrap();
            tls.flush().unwrap();
            let want = back.len() + piece.len();
            let mut buf = vec![0u8; 65536];
            while back.len() < want {
                let n = tls.read(&mut buf).unwrap();
                assert!(n > 0, "server closed early");
                back.extend_from_slice(&buf[..n]);
            }
        }
        assert!(back == data, "echo differs ({versions:?}, {key})");
        // close_notify from the client: the server's read sees the end, it closes with its
        // own close_notify, which the client reads as a clean end (not an unexpected EOF).
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest)
            .expect("a clean close_notify from the server");
        assert!(rest.is_empty());
    }
}
