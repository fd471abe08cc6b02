//! The certificate chain and private key, read from the PEM text of a `secret`.
//!
//! The secret holds the chain (leaf first) and one private key, ECDSA P-256 (PKCS#8 or
//! SEC1, `BEGIN PRIVATE KEY` / `BEGIN EC PRIVATE KEY`) or Ed25519 (PKCS#8). The key's public
//! half is derived here and compared with the leaf certificate's, byte for byte: the crypto
//! provider's keys do not report their public key, so rustls alone would accept a key that
//! does not match and fail every handshake later.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use pki_types::pem::PemObject as _;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

/// Why the secret cannot serve as a certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// No `BEGIN CERTIFICATE` block.
    NoCertificate,
    /// No private key block.
    NoKey,
    /// More than one private key block.
    TwoKeys,
    /// A PEM block that cannot be read.
    Pem(String),
    /// The leaf certificate is not a valid X.509 certificate.
    BadCertificate(String),
    /// A key of a kind the device does not serve (RSA, P-384, ...).
    UnsupportedKey(&'static str),
    /// The key is malformed.
    BadKey(String),
    /// The key is not the certificate's.
    Mismatch,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NoCertificate => f.write_str(
                "it holds no certificate (expected a PEM `BEGIN CERTIFICATE` block, the server's certificate first)",
            ),
            KeyError::NoKey => f.write_str(
                "it holds no private key (expected a PEM `BEGIN PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block)",
            ),
            KeyError::TwoKeys => f.write_str("it holds more than one private key"),
            KeyError::Pem(e) => write!(f, "it is not valid PEM: {e}"),
            KeyError::BadCertificate(e) => write!(f, "its first certificate is not valid: {e}"),
            KeyError::UnsupportedKey(kind) => write!(
                f,
                "its private key is {kind}; the tls device serves ECDSA P-256 and Ed25519 keys"
            ),
            KeyError::BadKey(e) => write!(f, "its private key cannot be read: {e}"),
            KeyError::Mismatch => f.write_str(
                "its private key does not match its first certificate (the key of another certificate?)",
            ),
        }
    }
}

/// The chain and key read from `pem`.
pub struct Parsed {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

/// Reads every certificate and the one private key of `pem`.
pub fn parse(pem: &[u8]) -> Result<Parsed, KeyError> {
    let mut chain = Vec::new();
    let mut key = None;
    use pki_types::pem::SectionKind as K;
    for item in <(K, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = item.map_err(|e| KeyError::Pem(alloc::format!("{e}")))?;
        let found = match kind {
            K::Certificate => {
                chain.push(CertificateDer::from(der));
                continue;
            }
            K::PrivateKey => PrivateKeyDer::Pkcs8(der.into()),
            K::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
            K::RsaPrivateKey => return Err(KeyError::UnsupportedKey("an RSA key")),
            _ => continue,
        };
        if key.replace(found).is_some() {
            return Err(KeyError::TwoKeys);
        }
    }
    let key = key.ok_or(KeyError::NoKey)?;
    if chain.is_empty() {
        return Err(KeyError::NoCertificate);
    }
    Ok(Parsed { chain, key })
}

/// The DER SubjectPublicKeyInfo of `key`'s public half.
fn public_key_info(key: &PrivateKeyDer<'_>) -> Result<Vec<u8>, KeyError> {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
    let bad = |e: &dyn fmt::Display| KeyError::BadKey(alloc::format!("{e}"));
    match key {
        PrivateKeyDer::Sec1(der) => {
            let secret = p256::SecretKey::from_sec1_der(der.secret_sec1_der()).map_err(|_| {
                KeyError::UnsupportedKey("an EC key not on the P-256 curve, or malformed")
            })?;
            let spki = secret
                .public_key()
                .to_public_key_der()
                .map_err(|e| bad(&e))?;
            Ok(spki.as_bytes().to_vec())
        }
        PrivateKeyDer::Pkcs8(der) => {
            let der = der.secret_pkcs8_der();
            let info = p256::pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| bad(&e))?;
            let oid = info.algorithm.oid;
            if oid == p256::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1") {
                let secret = p256::SecretKey::from_pkcs8_der(der).map_err(|_| {
                    KeyError::UnsupportedKey("an EC key not on the P-256 curve (P-384? P-521?)")
                })?;
                let spki = secret
                    .public_key()
                    .to_public_key_der()
                    .map_err(|e| bad(&e))?;
                Ok(spki.as_bytes().to_vec())
            } else if oid == p256::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112") {
                let secret = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| bad(&e))?;
                let spki = secret
                    .verifying_key()
                    .to_public_key_der()
                    .map_err(|e| bad(&e))?;
                Ok(spki.as_bytes().to_vec())
            } else if oid == p256::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1") {
                Err(KeyError::UnsupportedKey("an RSA key"))
            } else if oid == p256::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.113") {
                Err(KeyError::UnsupportedKey("an Ed448 key"))
            } else {
                Err(KeyError::UnsupportedKey("of an unknown algorithm"))
            }
        }
        _ => Err(KeyError::UnsupportedKey("an RSA key")),
    }
}

/// The certified key for `pem`: parsed, checked that the key is the leaf certificate's,
/// and loaded into `provider`.
pub fn certified_key(pem: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, KeyError> {
    let Parsed { chain, key } = parse(pem)?;
    let leaf = rustls::server::ParsedCertificate::try_from(&chain[0])
        .map_err(|e| KeyError::BadCertificate(alloc::format!("{e}")))?;
    let spki = public_key_info(&key)?;
    if leaf.subject_public_key_info().as_ref() != spki.as_slice() {
        return Err(KeyError::Mismatch);
    }
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| KeyError::BadKey(alloc::format!("{e}")))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The one certificate the server presents, whatever the client asks for.
#[derive(Debug)]
pub(crate) struct OneCert(pub Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
