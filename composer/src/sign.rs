//! ed25519 signing keys and detached signatures for bundles.
//!
//! * A private key is a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), mode 0600.
//!   [`keygen`] creates it with that mode from the start and never overwrites one;
//!   [`PrivateKey::load`] refuses a key file that group or others may read, as ssh does.
//! * A public key is one line: `compose-ed25519 <64 hex digits>`, optionally followed by
//!   a comment. [`keygen`] writes it next to the private key as `<path>.pub`.
//! * A signature is one line: `compose-ed25519-signature <public key hex> <signature
//!   hex>`. Naming the key lets [`verify`] say "signed by another key" rather than just
//!   "bad signature"; the key in a signature is never trusted by itself.
//! * A key's id is `compose:` followed by the first 16 hex digits of the sha256 of its 32
//!   raw bytes ([`PublicKey::id`]); `compose keygen` prints it and `compose verify` names
//!   the key it checked by it.
//! * Trusted keys ([`TrustedKeys`]) are the `--key` files given to `compose verify`, or else
//!   the trust file: `$COMPOSE_TRUSTED_KEYS` if set, else
//!   `$XDG_CONFIG_HOME/compose/trusted-keys`, else `~/.config/compose/trusted-keys`, one
//!   public key per line in the `.pub` form, `#` comments and blank lines ignored.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The first word of a public key line.
pub const PUBLIC_KEY_TAG: &str = "compose-ed25519";
/// The first word of a signature line.
pub const SIGNATURE_TAG: &str = "compose-ed25519-signature";
/// What a key id starts with.
pub const KEY_ID_PREFIX: &str = "compose:";
/// The environment variable naming the trust file.
pub const TRUST_ENV: &str = "COMPOSE_TRUSTED_KEYS";
/// What marks PEM private keys; bundles and store entries must never contain it.
pub const PRIVATE_KEY_MARKER: &[u8] = b"PRIVATE KEY-----";

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// [`keygen`] does not overwrite keys.
    #[error("{} already exists; compose keygen never overwrites a key (remove it first, or choose another path)", .0.display())]
    Exists(PathBuf),
    /// The file is not a key of the expected kind.
    #[error("{} is not a {what}: {why}", path.display())]
    Malformed {
        /// The file (or `-` for text not from a file).
        path: PathBuf,
        /// What kind of key was expected.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The private key file may be read by others.
    #[error("private key {} is readable by others (mode {mode:04o}); run chmod 600 on it", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No randomness was available to make a key.
    #[error("cannot generate a key: the operating system gave no randomness: {0}")]
    NoRandomness(String),
}

/// Why a signature does not verify. Each message says what is wrong in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature text cannot be parsed.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    /// It was made with another key than the one trusted.
    #[error("the signature was made with key {signed_by}, not with the trusted key {expected}")]
    WrongKey {
        /// Fingerprint of the key named in the signature.
        signed_by: String,
        /// Fingerprint of the trusted key.
        expected: String,
    },
    /// It does not match the signed bytes: they or the signature were altered.
    #[error(
        "the signature does not match the signed file: the file or the signature was altered after signing"
    )]
    Mismatch,
}

fn malformed(path: &Path, what: &'static str, why: impl Into<String>) -> KeyError {
    KeyError::Malformed {
        path: path.to_path_buf(),
        what,
        why: why.into(),
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key's id: `compose:` and the first 16 hex digits of the sha256 of its raw bytes.
    pub fn id(&self) -> String {
        format!(
            "{KEY_ID_PREFIX}{}",
            &crate::store::sha256_hex(self.0.as_bytes())[..16]
        )
    }

    /// The same as [`PublicKey::id`].
    pub fn fingerprint(&self) -> String {
        self.id()
    }

    /// The one-line text form, `compose-ed25519 <hex>`, without a newline.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_TAG} {}", hex::encode(self.0.as_bytes()))
    }

    /// Parses the text form; words after the key are a comment. Blank lines and lines
    /// starting with `#` are skipped; the first other line must be the key.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("it is empty")?;
        let mut words = line.split_whitespace();
        if words.next() != Some(PUBLIC_KEY_TAG) {
            return Err(format!("expected a line starting with `{PUBLIC_KEY_TAG}`"));
        }
        let bytes = words
            .next()
            .and_then(hex32)
            .ok_or("expected 64 hex digits after the tag")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "the key is not a valid ed25519 point".to_string())?;
        if key.is_weak() {
            return Err("the key is a weak (small-order) ed25519 key".into());
        }
        Ok(PublicKey(key))
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            what: "cannot read public key",
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::parse(&text).map_err(|why| malformed(path, "compose public key", why))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// An ed25519 private key. Its `Debug` shows only the public fingerprint, and the
/// secret is zeroed when dropped.
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// Reads a PKCS#8 PEM private key, refusing one that group or others may read.
    pub fn load(path: &Path) -> Result<PrivateKey, KeyError> {
        let io = |what| {
            move |source| KeyError::Io {
                what,
                path: path.to_path_buf(),
                source,
            }
        };
        let mode = fs::metadata(path)
            .map_err(io("cannot read private key"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let text = fs::read_to_string(path).map_err(io("cannot read private key"))?;
        PrivateKey::from_pem(&text)
            .map_err(|why| malformed(path, "PKCS#8 ed25519 private key", why))
    }

    /// Parses PKCS#8 PEM text.
    pub fn from_pem(text: &str) -> Result<PrivateKey, String> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(PrivateKey)
            .map_err(|e| e.to_string())
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// A detached signature over `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key: self.public(),
            sig: self.0.sign(bytes),
        }
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey(public {})", self.public().fingerprint())
    }
}

/// A detached signature, with the public key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key: PublicKey,
    sig: ed25519_dalek::Signature,
}

impl Signature {
    /// The key the signature claims to be made with (to be compared with a trusted key).
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The text form: one line ending in a newline.
    pub fn to_text(&self) -> String {
        format!(
            "{SIGNATURE_TAG} {} {}\n",
            hex::encode(self.key.0.as_bytes()),
            hex::encode(self.sig.to_bytes())
        )
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Signature, VerifyError> {
        let bad = |why: &str| VerifyError::Malformed(why.to_string());
        let mut words = text.split_whitespace();
        if words.next() != Some(SIGNATURE_TAG) {
            return Err(bad(&format!(
                "expected a line starting with `{SIGNATURE_TAG}`"
            )));
        }
        let key = words
            .next()
            .and_then(hex32)
            .ok_or_else(|| bad("expected the signing key's 64 hex digits after the tag"))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| bad("the signing key is not a valid ed25519 key"))?;
        let mut sig = [0u8; 64];
        words
            .next()
            .and_then(|w| hex::decode_to_slice(w, &mut sig).ok())
            .ok_or_else(|| bad("expected 128 hex digits of signature after the key"))?;
        if words.next().is_some() {
            return Err(bad("unexpected text after the signature"));
        }
        Ok(Signature {
            key: PublicKey(key),
            sig: ed25519_dalek::Signature::from_bytes(&sig),
        })
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature(by {})", self.key.fingerprint())
    }
}

/// Checks that `sig` is `trusted`'s signature over exactly `bytes` (strict ed25519
/// verification: no malleable or small-order forms).
pub fn verify(trusted: &PublicKey, bytes: &[u8], sig: &Signature) -> Result<(), VerifyError> {
    if sig.key != *trusted {
        return Err(VerifyError::WrongKey {
            signed_by: sig.key.fingerprint(),
            expected: trusted.fingerprint(),
        });
    }
    trusted
        .0
        .verify_strict(bytes, &sig.sig)
        .map_err(|_| VerifyError::Mismatch)
}

/// [`verify`] with the signature as text.
pub fn verify_text(trusted: &PublicKey, bytes: &[u8], sig: &str) -> Result<(), VerifyError> {
    verify(trusted, bytes, &Signature::parse(sig)?)
}

/// Where the trust file is, given a way to read the environment: `$COMPOSE_TRUSTED_KEYS`,
/// else `$XDG_CONFIG_HOME/compose/trusted-keys` (if absolute), else
/// `$HOME/.config/compose/trusted-keys`. The bool says whether the place was named
/// explicitly (then a missing file is an error, not an empty set).
pub fn trust_file(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<(PathBuf, bool)> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(f) = var(TRUST_ENV) {
        return Some((PathBuf::from(f), true));
    }
    let config = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((config.join("compose").join("trusted-keys"), false))
}

/// The keys a signature may be by for `compose verify` to accept it.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    /// Where they came from, for messages.
    pub source: String,
}

impl TrustedKeys {
    /// Exactly the keys in these `.pub` files.
    pub fn from_files(paths: &[PathBuf]) -> Result<TrustedKeys, KeyError> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        let source = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(TrustedKeys {
            keys,
            source: format!("--key {source}"),
        })
    }

    /// The keys of the trust file [`trust_file`] names; none if it is not named and absent.
    pub fn from_trust_file(
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<TrustedKeys, KeyError> {
        let Some((path, explicit)) = trust_file(env) else {
            return Ok(TrustedKeys {
                keys: Vec::new(),
                source: "no trust file (neither $COMPOSE_TRUSTED_KEYS nor $HOME is set)".into(),
            });
        };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
                return Ok(TrustedKeys {
                    keys: Vec::new(),
                    source: format!("the trust file {} (absent)", path.display()),
                });
            }
            Err(source) => {
                return Err(KeyError::Io {
                    what: "cannot read the trust file",
                    path,
                    source,
                });
            }
        };
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::parse(line).map_err(|why| KeyError::Malformed {
                path: PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                what: "compose public key",
                why,
            })?;
            keys.push(key);
        }
        Ok(TrustedKeys {
            keys,
            source: format!("the trust file {}", path.display()),
        })
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether `key` is one of them.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }
}

/// What a signature that is intact says about who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedBy {
    /// A valid signature by a trusted key.
    Trusted(PublicKey),
    /// A valid signature by a key that is not trusted.
    Untrusted(PublicKey),
}

/// Checks the signature text over `bytes`: a malformed or mismatching signature is an
/// error whoever made it; an intact one says whether its key is trusted.
pub fn check(trusted: &TrustedKeys, bytes: &[u8], sig: &str) -> Result<SignedBy, VerifyError> {
    let sig = Signature::parse(sig)?;
    let key = *sig.key();
    verify(&key, bytes, &sig)?;
    Ok(if trusted.contains(&key) {
        SignedBy::Trusted(key)
    } else {
        SignedBy::Untrusted(key)
    })
}

/// The public key file that goes with a private key file: `<path>.pub`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_os_string();
    s.push(".pub");
    PathBuf::from(s)
}

/// Whether `bytes` contain a PEM private key (of any algorithm): a block whose body is a
/// key structure, not just its BEGIN line ([`compose_assets::keyscan`]).
pub fn contains_private_key(bytes: &[u8]) -> bool {
    compose_assets::keyscan::find_private_key(bytes).is_some()
}

/// Makes a new key pair: the private key at `private` (PKCS#8 PEM, mode 0600 from its
/// creation on, never replacing an existing file) and the public key at `<private>.pub`.
/// The directory is created (mode 0700) if missing.
pub fn keygen(private: &Path) -> Result<PublicKey, KeyError> {
    let public = public_path(private);
    for p in [private, &public] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(KeyError::Exists(p.to_path_buf()));
        }
    }
    let dir = crate::store::parent_dir(private);
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io { what, path, source }
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("cannot create", dir))?;
    }
    let mut seed = [0u8; 32];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed)
        .map_err(|e| KeyError::NoRandomness(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| malformed(private, "private key", e.to_string()))?;
    // Written under a temporary name created 0600, then hard-linked to the real name:
    // link(2) fails if the name exists, so a key appearing meanwhile is never replaced.
    let tmp = crate::store::tmp_sibling(private);
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        fs::hard_link(&tmp, private)
    })();
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(KeyError::Exists(private.to_path_buf()));
        }
        Err(e) => {
            return Err(KeyError::Io {
                what: "cannot write private key",
                path: private.to_path_buf(),
                source: e,
            });
        }
    }
    let pk = PublicKey(key.verifying_key());
    crate::store::write_atomic(&public, format!("{}\n", pk.to_text()).as_bytes(), 0o644)
        .map_err(io("cannot write public key", &public))?;
    let _ = crate::store::sync_dir(dir);
    Ok(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_verify() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("keys/release.key");
        let pk = keygen(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let pem = fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        assert!(contains_private_key(pem.as_bytes()));
        let pub_text = fs::read_to_string(public_path(&path)).unwrap();
        assert_eq!(pub_text, format!("{}\n", pk.to_text()));
        assert!(!contains_private_key(pub_text.as_bytes()));
        // No temporary files remain.
        assert_eq!(fs::read_dir(d.path().join("keys")).unwrap().count(), 2);

        let sk = PrivateKey::load(&path).unwrap();
        assert_eq!(sk.public(), pk);
        assert_eq!(PublicKey::load(&public_path(&path)).unwrap(), pk);
        assert!(!format!("{sk:?}").contains(&pem[30..60]));

        let msg = b"{\"schema\": \"compose.manifest/v1\"}";
        let sig = sk.sign(msg);
        let text = sig.to_text();
        assert!(text.starts_with("compose-ed25519-signature ") && text.ends_with('\n'));
        assert_eq!(verify_text(&pk, msg, &text), Ok(()));
        assert_eq!(Signature::parse(&text).unwrap(), sig);

        // A changed message.
        assert_eq!(
            verify_text(&pk, b"{\"schema\": \"compose.manifest/v2\"}", &text),
            Err(VerifyError::Mismatch)
        );
        // A changed signature byte.
        let mut tampered = text.clone().into_bytes();
        let i = tampered.len() - 3;
        tampered[i] = if tampered[i] == b'0' { b'1' } else { b'0' };
        let err = verify_text(&pk, msg, std::str::from_utf8(&tampered).unwrap()).unwrap_err();
        assert_eq!(err, VerifyError::Mismatch);
        assert!(err.to_string().contains("altered"), "{err}");
        // Garbage.
        assert!(matches!(
            verify_text(&pk, msg, "hello"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify_text(&pk, msg, &text[..text.len() - 10]),
            Err(VerifyError::Malformed(_))
        ));
        // Another key.
        let other = keygen(&d.path().join("other.key")).unwrap();
        let err = verify_text(&other, msg, &text).unwrap_err();
        assert!(matches!(err, VerifyError::WrongKey { .. }));
        assert!(
            err.to_string().contains(&pk.fingerprint())
                && err.to_string().contains(&other.fingerprint()),
            "{err}"
        );
    }

    #[test]
    fn trust_file_place_and_contents() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            trust_file(env(&[("COMPOSE_TRUSTED_KEYS", "/t"), ("HOME", "/h")])),
            Some((PathBuf::from("/t"), true))
        );
        assert_eq!(
            trust_file(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])),
            Some((PathBuf::from("/x/compose/trusted-keys"), false))
        );
        assert_eq!(
            trust_file(env(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")])),
            Some((PathBuf::from("/h/.config/compose/trusted-keys"), false))
        );
        assert_eq!(trust_file(env(&[])), None);

        let d = tempfile::tempdir().unwrap();
        let a = keygen(&d.path().join("a")).unwrap();
        let b = keygen(&d.path().join("b")).unwrap();
        assert!(a.id().starts_with("compose:") && a.id().len() == 24);
        assert_ne!(a.id(), b.id());
        let file = d.path().join("trusted");
        fs::write(&file, format!("# ours\n\n  {} laptop\n", a.to_text())).unwrap();
        let f = file.to_str().unwrap().to_string();
        let t = TrustedKeys::from_trust_file(move |k| {
            (k == TRUST_ENV).then(|| std::ffi::OsString::from(&f))
        })
        .unwrap();
        assert!(t.contains(&a) && !t.contains(&b));
        // Absent in the default place: nothing trusted, no error.
        let home = d.path().to_str().unwrap().to_string();
        let t = TrustedKeys::from_trust_file(move |k| {
            (k == "HOME").then(|| std::ffi::OsString::from(&home))
        })
        .unwrap();
        assert!(t.keys().is_empty());

        let sk = PrivateKey::load(&d.path().join("b")).unwrap();
        let sig = sk.sign(b"m").to_text();
        let only_a = TrustedKeys::from_files(&[public_path(&d.path().join("a"))]).unwrap();
        assert_eq!(check(&only_a, b"m", &sig), Ok(SignedBy::Untrusted(b)));
        assert_eq!(check(&only_a, b"x", &sig), Err(VerifyError::Mismatch));
        let both = TrustedKeys::from_files(&[
            public_path(&d.path().join("a")),
            public_path(&d.path().join("b")),
        ])
        .unwrap();
        assert_eq!(check(&both, b"m", &sig), Ok(SignedBy::Trusted(b)));
    }

    #[test]
    fn keygen_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k");
        keygen(&path).unwrap();
        let before = fs::read(&path).unwrap();
        assert!(matches!(keygen(&path), Err(KeyError::Exists(p)) if p == path));
        assert_eq!(fs::read(&path).unwrap(), before);
        // An orphaned .pub also blocks, so a pair never mismatches.
        let path2 = d.path().join("k2");
        fs::write(public_path(&path2), "x").unwrap();
        assert!(matches!(keygen(&path2), Err(KeyError::Exists(_))));
        assert!(!path2.exists());
    }

    #[test]
    fn loading_refuses_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k");
        keygen(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = PrivateKey::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let junk = d.path().join("junk");
        fs::write(&junk, "not a key").unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            PrivateKey::load(&junk),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            PrivateKey::load(&d.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
        assert!(PublicKey::parse("ssh-ed25519 AAAA").is_err());
        assert!(PublicKey::parse("compose-ed25519 abcd").is_err());
        assert!(PublicKey::parse("").is_err());
        let pk = PublicKey::load(&public_path(&path)).unwrap();
        assert_eq!(
            PublicKey::parse(&format!("# release key\n\n{} ci@example\n", pk.to_text())).unwrap(),
            pk
        );
    }
}
