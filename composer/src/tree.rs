//! The compose source tree an installed compose builds from.
//!
//! A unikernel's glue depends on compose's device and platform crates, is built with
//! compose's lock file and toolchain file, and Solo5 targets need compose's tenders: all of
//! them sources that live in the compose repository. `composer/build.rs` packs them into a
//! deterministic archive carried in the binary; the first compose that needs them unpacks
//! it into `$XDG_CACHE_HOME/compose/src/<sha256 prefix>/` (else `~/.cache/compose/...`),
//! atomically (into a temporary directory, then renamed), so that concurrent compose
//! processes never see half a tree and never need a lock.
//!
//! [`root`] picks the tree: `$COMPOSE_ROOT` if set; the checkout itself when the running
//! compose is the checkout's own build (so a developer's edits are seen); else the
//! carried tree.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why compose has no source tree to build from.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum TreeError {
    /// Neither `$XDG_CACHE_HOME` nor `$HOME` is set.
    #[error("neither $XDG_CACHE_HOME nor $HOME is set: compose has no cache directory")]
    #[diagnostic(
        code("compose::tree::no-cache"),
        help("set $HOME, or set $COMPOSE_ROOT to a compose source tree")
    )]
    NoCache,
    /// Unpacking the carried tree failed.
    #[error("cannot {what} {}: {source}", path.display())]
    #[diagnostic(code(compose::tree::unpack))]
    Unpack {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: Arc<std::io::Error>,
    },
}

fn unpack_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TreeError {
    let path = path.to_path_buf();
    move |e| TreeError::Unpack {
        what,
        path,
        source: Arc::new(e),
    }
}

include!(concat!(env!("OUT_DIR"), "/tree.rs"));

/// The carried tree: a zstd-compressed tar.
static TREE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tree.tar.zst"));

/// The first hex digits of the tree's hash: its directory name in the cache.
pub fn tree_id() -> &'static str {
    &TREE_SHA256[..16]
}

/// compose's cache directory: `$XDG_CACHE_HOME/compose`, else `~/.cache/compose`.
pub fn cache_dir() -> Result<PathBuf, TreeError> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("compose"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("compose")),
        None => Err(TreeError::NoCache),
    }
}

/// The checkout this compose was built from, when the running binary is that checkout's own
/// build (it lies in the checkout's `target/`) and the checkout is still there.
pub fn checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let target = root.join("target").canonicalize().ok()?;
    (exe.starts_with(&target) && root.join("Cargo.toml").is_file()).then_some(root)
}

/// Unpacks the carried tree into `cache` (if it is not there yet) and returns its directory.
pub fn unpack_into(cache: &Path) -> Result<PathBuf, TreeError> {
    let base = cache.join("src");
    let dir = base.join(tree_id());
    if dir.join("Cargo.toml").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&base).map_err(unpack_error("create", &base))?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&base)
        .map_err(unpack_error("create a directory in", &base))?;
    let decoder =
        zstd::Decoder::new(TREE).map_err(unpack_error("decompress the tree for", &base))?;
    let mut archive = tar::Archive::new(decoder);
    archive.set_preserve_mtime(false);
    archive
        .unpack(tmp.path())
        .map_err(unpack_error("unpack compose's source tree into", &base))?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another compose unpacked the same tree first: use that one.
        Err(_) if dir.join("Cargo.toml").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(unpack_error("move compose's source tree into", &dir)(e))
        }
    }
}

fn find_root() -> Result<PathBuf, TreeError> {
    if let Some(root) = std::env::var_os("COMPOSE_ROOT").filter(|r| !r.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    if let Some(root) = checkout() {
        return Ok(root);
    }
    unpack_into(&cache_dir()?)
}

/// The compose source tree (see the module documentation), found or unpacked once per
/// process.
pub fn root() -> Result<PathBuf, TreeError> {
    static ROOT: OnceLock<Result<PathBuf, TreeError>> = OnceLock::new();
    ROOT.get_or_init(find_root).clone()
}

/// Whether `root` is the carried tree (rather than a checkout or `$COMPOSE_ROOT`).
pub fn is_carried(root: &Path) -> bool {
    root.parent().and_then(Path::file_name) == Some("src".as_ref())
        && root.file_name() == Some(tree_id().as_ref())
}

/// A stable name for the tree `root`, for caches of things built from it (tenders): the
/// carried tree's hash, else a hash of the tree's path.
pub fn tree_key(root: &Path) -> String {
    if is_carried(root) {
        return tree_id().to_string();
    }
    use sha2::Digest as _;
    let abs = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    hex::encode(&sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_once_and_completely() {
        let cache = tempfile::tempdir().unwrap();
        let a = unpack_into(cache.path()).unwrap();
        let b = unpack_into(cache.path()).unwrap();
        assert_eq!(a, b);
        assert!(is_carried(&a));
        let n = walkdir::WalkDir::new(&a)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(n, TREE_FILES);
        for f in [
            "Cargo.toml",
            "Cargo.lock",
            "rust-toolchain.toml",
            "devices/base/Cargo.toml",
            "platforms/spt/tender/Cargo.toml",
            "specs/hello/Cargo.toml",
        ] {
            assert!(a.join(f).is_file(), "{f} missing");
        }
        let manifest = std::fs::read_to_string(a.join("Cargo.toml")).unwrap();
        assert!(!manifest.contains("\"composer\""));
        // No temporary directory is left behind.
        let left: Vec<_> = std::fs::read_dir(cache.path().join("src"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn concurrent_unpacks_agree() {
        let cache = tempfile::tempdir().unwrap();
        let dirs: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| unpack_into(cache.path())))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(
            std::fs::read_dir(cache.path().join("src")).unwrap().count(),
            1
        );
    }
}
