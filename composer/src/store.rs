//! The content-addressed store, as in Nix.
//!
//! A build's [`Key`] is a sha256 over every labelled input that can change its output
//! (see [`KeyBuilder`]). Its output lives in `<root>/<hash>-<name>-<target>/`, where
//! `<hash>` is the first 32 hex digits of the key. Entries are complete or absent: they
//! are filled under `<root>/.tmp/`, sealed (fsync'd, read-only, mtime 1) and renamed into
//! place. The root also holds:
//!
//! * `.cache/hashes-v1`: the file-hash cache ([`HashCache`]), so that re-keying unchanged
//!   inputs costs one `stat` per file;
//! * `.cache/pack-v1/`: the packer's compressed variants by content
//!   ([`compose_assets::PackCache`]); [`Store::gc`] keeps only those of files that a live
//!   entry's archive holds;
//! * `.cache/bundle-v1/`: bundles' compressed zstd frames by the content of their chunk
//!   ([`crate::bundle::FrameCache`]); [`Store::gc`] empties it;
//! * `gcroots/<sha256 of a link's path>`: a symlink to each `result` link made by
//!   [`Store::link_result`]; an entry that such a link still points to is live;
//! * `pins/<name>`: a symlink to a pinned entry, live until unpinned;
//! * `launches/<pid>`: a running unikernel's entry, written by `compose run` just before
//!   it execs the unikernel (same pid), with the process's start time so that a recycled
//!   pid does not keep the entry alive ([`Store::record_launch`]); live while that process
//!   runs;
//! * `.lock`: builds hold it shared ([`Store::lock`], and [`Store::commit`] and
//!   [`Store::link_result`] take it themselves), [`Store::gc`] exclusively.
//!
//! The root is chosen by [`Store::open`]: an explicit directory (`--store DIR`), else
//! `$COMPOSE_STORE`, else `$XDG_CACHE_HOME/compose/store`, else `~/.cache/compose/store`.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The environment variable naming the store root.
pub const STORE_ENV: &str = "COMPOSE_STORE";

/// Directories skipped at the top level of a crate tree given to [`KeyBuilder::add_tree`]:
/// the crate's own build output (cargo's `target`, compose's `_build`).
pub const CRATE_BUILD_DIRS: &[&str] = &["target", "_build"];

/// Names skipped at every depth of a tree: version-control metadata.
const EXCLUDED_EVERYWHERE: &[&str] = &[".git", ".hg", ".svn", ".jj"];

const TMP_DIR: &str = ".tmp";
const CACHE_DIR: &str = ".cache";
const CACHE_FILE: &str = "hashes-v1";
const CACHE_HEADER: &str = "compose-hash-cache v1";
const GCROOTS_DIR: &str = "gcroots";
const PINS_DIR: &str = "pins";
const LAUNCHES_DIR: &str = "launches";
const LOCK_FILE: &str = ".lock";
/// Hex digits of the key in an entry's directory name.
const HASH_LEN: usize = 32;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Neither an explicit store, `$COMPOSE_STORE`, `$XDG_CACHE_HOME` nor `$HOME` is set.
    #[error(
        "cannot find a place for the store: set $HOME, $XDG_CACHE_HOME or $COMPOSE_STORE, or pass --store DIR"
    )]
    NoHome,
    /// A name or target cannot be part of an entry's directory name.
    #[error("{what} {value:?} cannot be used in a store path: {why}")]
    BadName {
        /// What the value is (`name`, `target`, `pin name`).
        what: &'static str,
        /// The value.
        value: String,
        /// Why not.
        why: &'static str,
    },
    /// Two inputs of a key have the same label.
    #[error("two inputs are both labelled {0:?}")]
    DuplicateInput(String),
    /// An input label is unusable.
    #[error("bad input label {0:?}: labels are non-empty and contain no newline or NUL")]
    BadLabel(String),
    /// A file inside a tree input has a name that is not UTF-8.
    #[error("{}: file names in inputs must be UTF-8", .0.display())]
    NonUtf8Path(PathBuf),
    /// A path given as an entry is not an entry of this store.
    #[error("{} is not an entry of the store {}", path.display(), root.display())]
    NotAnEntry {
        /// The path.
        path: PathBuf,
        /// The store root.
        root: PathBuf,
    },
    /// The `result` link's place is taken by something that is not a symlink.
    #[error("{} exists and is not a symlink; remove it or choose another --out-link", .0.display())]
    LinkOccupied(PathBuf),
    /// Another process holds the store lock.
    #[error("the store {} is in use by another compose process; try again when it has finished", .0.display())]
    Busy(PathBuf),
    /// The function filling a new entry failed.
    #[error("{0}")]
    Fill(Box<dyn std::error::Error + Send + Sync>),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// Small helpers shared by the store, bundle and sign modules.

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The lowercase hex sha256 of a file's contents and its length, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let (digest, len) = hash_reader(fs::File::open(path)?)?;
    Ok((hex::encode(digest), len))
}

/// The lowercase hex sha256 of a block image's bytes and its length: a plain file's
/// contents, or what a layered image's extents make (`compose_blockfile`).
pub fn sha256_image(path: &Path) -> io::Result<(String, u64)> {
    let image = compose_blockfile::BlockFile::open(path)?;
    let (digest, len) = hash_reader(image.reader())?;
    Ok((hex::encode(digest), len))
}

fn hash_reader(mut r: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().into(), len))
}

/// 16 random hex digits, for temporary names. Falls back to the pid, the time and a
/// counter if the OS has no randomness to give.
pub(crate) fn random_suffix() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 8];
    if rand_core::OsRng.try_fill_bytes(&mut bytes).is_ok() {
        return hex::encode(bytes);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}{:x}{n:x}", std::process::id(), t)
}

/// A temporary sibling of `path`: `.<file name>.tmp-<random>` in the same directory.
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.tmp-{}", random_suffix()))
}

/// `path`'s directory; `.` for a bare file name.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Fsyncs a directory, so that renames into it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically (unique temporary file, fsync, rename, fsync of
/// the directory), with permission bits `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = parent_dir(path);
    fs::create_dir_all(dir)?;
    let tmp = tmp_sibling(path);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates a symlink at `link` pointing to `target`, replacing whatever symlink was
/// there atomically (a temporary symlink renamed over it).
fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = tmp_sibling(link);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(link))
}

// ---------------------------------------------------------------------------------------
// Keys.

/// A build key: the sha256 of all of a build's labelled inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl Key {
    /// The raw digest.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The 32 hex digits (128 bits) that name the key in store paths.
    pub fn short(&self) -> String {
        self.hex()[..HASH_LEN].to_string()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Key> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Key(out))
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.hex())
    }
}

/// What kind of thing an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// Bytes given directly (the normalized spec, a version string).
    Bytes,
    /// A regular file's contents.
    File,
    /// A symlink that leads nowhere, hashed as its target's text.
    Symlink,
    /// A directory: its hash covers the sorted list of its entries' paths and hashes; the
    /// entries are listed as inputs of their own, labelled `TREE/RELATIVE/PATH`.
    Tree,
}

impl InputKind {
    fn tag(self) -> u8 {
        match self {
            InputKind::Bytes => b'b',
            InputKind::File => b'f',
            InputKind::Symlink => b'l',
            InputKind::Tree => b't',
        }
    }
}

/// One input of a key, as recorded in build information.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputHash {
    /// Its label; files in a tree are `TREE-LABEL/relative/path`.
    pub label: String,
    /// What it is.
    pub kind: InputKind,
    /// Hex sha256 of its contents (for a tree: of its listing).
    pub sha256: String,
    /// Its size in bytes (for a tree: the number of files in it).
    pub size: u64,
}

/// Counters of the work a [`HashCache`] did and saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files opened and read.
    pub hashed_files: u64,
    /// Bytes read from them.
    pub hashed_bytes: u64,
    /// Files whose hash came from the cache without opening them.
    pub cache_hits: u64,
}

/// What a finished [`KeyBuilder`] gives.
#[derive(Debug, Clone)]
pub struct KeyOutcome {
    /// The key.
    pub key: Key,
    /// Every input, sorted by label: the build information's input list.
    pub inputs: Vec<InputHash>,
    /// What hashing cost.
    pub stats: HashStats,
}

/// Builds a [`Key`] from labelled inputs. The order in which inputs are added does not
/// matter: the key is computed over the inputs sorted by label, each as its label, kind,
/// size and sha256, all length-prefixed so that no two input lists hash alike.
///
/// Version `v1` of the format: sha256 of `compose-store-key-v1\n` followed, for each input
/// in label order, by `u64le(len(label)) label kind-byte u64le(size) sha256[32]`.
pub struct KeyBuilder {
    inputs: BTreeMap<String, (InputKind, [u8; 32], u64)>,
    cache: HashCache,
}

impl KeyBuilder {
    /// A builder hashing files through `cache`.
    pub fn new(cache: HashCache) -> KeyBuilder {
        KeyBuilder {
            inputs: BTreeMap::new(),
            cache,
        }
    }

    fn insert(
        &mut self,
        label: String,
        kind: InputKind,
        digest: [u8; 32],
        size: u64,
    ) -> Result<()> {
        if label.is_empty() || label.contains(['\n', '\0']) {
            return Err(StoreError::BadLabel(label));
        }
        if self.inputs.contains_key(&label) {
            return Err(StoreError::DuplicateInput(label));
        }
        self.inputs.insert(label, (kind, digest, size));
        Ok(())
    }

    /// Adds bytes: the normalized spec, the composer's version, the toolchain's.
    pub fn add_bytes(&mut self, label: &str, bytes: &[u8]) -> Result<()> {
        self.insert(
            label.to_string(),
            InputKind::Bytes,
            Sha256::digest(bytes).into(),
            bytes.len() as u64,
        )
    }

    /// Adds a file's contents (following symlinks).
    pub fn add_file(&mut self, label: &str, path: &Path) -> Result<()> {
        let abs = std::path::absolute(path).map_err(io_err("cannot find", path))?;
        let (digest, size) = self
            .cache
            .hash(&abs)
            .map_err(io_err("cannot hash input file", path))?;
        self.insert(label.to_string(), InputKind::File, digest, size)
    }

    /// Adds every file of the crate (or other source tree) under `dir`, walked in sorted
    /// order, following symlinks (a build reads through them) and hashing dangling ones as
    /// their target's text. Empty directories do not count. Skipped: the crate's own build
    /// output ([`CRATE_BUILD_DIRS`]) and `result*` symlinks at the top level, VCS
    /// directories (`.git`, `.hg`, `.svn`, `.jj`) everywhere, nested packages (a
    /// subdirectory with a `Cargo.toml` of its own: a crate of its own, as cargo packages
    /// it), and each of `excludes`: a path relative to `dir` (`assets/tmp`), with an
    /// optional trailing `*` matching any suffix of its last component.
    ///
    /// Asset trees are not added this way but with [`KeyBuilder::add_files`], over exactly
    /// the files the packer packs.
    ///
    /// Each file becomes an input labelled `LABEL/relative/path`; `LABEL` itself is an
    /// input of kind [`InputKind::Tree`] whose hash covers the listing.
    pub fn add_tree(&mut self, label: &str, dir: &Path, excludes: &[&str]) -> Result<()> {
        let root = fs::canonicalize(dir).map_err(io_err("cannot read input directory", dir))?;
        let mut listing = Sha256::new();
        let mut count = 0u64;
        let walker = walkdir::WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        let walker = walker.filter_entry(|e| {
            let rel = e.path().strip_prefix(&root).unwrap_or(e.path());
            e.depth() == 0
                || !(excluded(rel, excludes)
                    || (e.depth() == 1 && e.path_is_symlink() && is_result_link(rel))
                    || (e.file_type().is_dir() && e.path().join("Cargo.toml").is_file()))
        });
        for entry in walker {
            let (path, kind, digest, size) = match entry {
                Ok(e) if e.file_type().is_dir() => continue,
                Ok(e) => {
                    let path = e.path().to_path_buf();
                    let (digest, size) = self
                        .cache
                        .hash(&path)
                        .map_err(io_err("cannot hash input file", &path))?;
                    (path, InputKind::File, digest, size)
                }
                Err(e) => {
                    // A dangling symlink: walkdir cannot follow it. Anything else is an error.
                    let Some(path) = e.path().map(Path::to_path_buf) else {
                        return Err(StoreError::Io {
                            what: "cannot walk",
                            path: dir.to_path_buf(),
                            source: e.into(),
                        });
                    };
                    // Errors bypass filter_entry: apply the exclusions here too.
                    let rel = path.strip_prefix(&root).unwrap_or(&path);
                    if excluded(rel, excludes) || is_result_link(rel) {
                        continue;
                    }
                    match fs::read_link(&path) {
                        Ok(target) if fs::metadata(&path).is_err() => {
                            let text = target.as_os_str().as_bytes();
                            (
                                path,
                                InputKind::Symlink,
                                Sha256::digest(text).into(),
                                text.len() as u64,
                            )
                        }
                        _ => {
                            return Err(StoreError::Io {
                                what: "cannot walk",
                                path,
                                source: e.into(),
                            });
                        }
                    }
                }
            };
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let rel = rel
                .to_str()
                .ok_or_else(|| StoreError::NonUtf8Path(path.clone()))?;
            listing.update((rel.len() as u64).to_le_bytes());
            listing.update(rel.as_bytes());
            listing.update([kind.tag()]);
            listing.update(digest);
            self.insert(format!("{label}/{rel}"), kind, digest, size)?;
            count += 1;
        }
        self.insert(
            label.to_string(),
            InputKind::Tree,
            listing.finalize().into(),
            count,
        )
    }

    /// Adds exactly `files`, each `(relative key, regular file)`, as the tree `label`: each
    /// becomes an input `LABEL/key`, and `LABEL` one of kind [`InputKind::Tree`] over the
    /// listing. For asset directories, with the list [`compose_assets::select`] gives, so
    /// that the key covers what is packed and nothing else.
    pub fn add_files(&mut self, label: &str, files: &[(String, PathBuf)]) -> Result<()> {
        self.add_files_mtimes(label, files).map(|_| ())
    }

    /// [`KeyBuilder::add_files`], returning each file's modification time (whole seconds
    /// since 1970, 0 before), in the order of `files`, from the `stat` that the hash
    /// cache made anyway.
    pub fn add_files_mtimes(
        &mut self,
        label: &str,
        files: &[(String, PathBuf)],
    ) -> Result<Vec<u64>> {
        Ok(self
            .add_files_meta(label, files)?
            .iter()
            .map(mtime_secs)
            .collect())
    }

    /// [`KeyBuilder::add_files`], returning each file's metadata, in the order of
    /// `files`, from the `stat` that the hash cache made anyway.
    pub fn add_files_meta(
        &mut self,
        label: &str,
        files: &[(String, PathBuf)],
    ) -> Result<Vec<fs::Metadata>> {
        let mut listing = Sha256::new();
        let mut sorted: Vec<(usize, &(String, PathBuf))> = files.iter().enumerate().collect();
        sorted.sort_by(|a, b| a.1.0.as_bytes().cmp(b.1.0.as_bytes()));
        let mut metas: Vec<Option<fs::Metadata>> = vec![None; files.len()];
        for (i, (rel, path)) in &sorted {
            let abs = std::path::absolute(path).map_err(io_err("cannot find", path))?;
            let (digest, size, meta) = self
                .cache
                .hash_meta(&abs)
                .map_err(io_err("cannot hash input file", path))?;
            metas[*i] = Some(meta);
            listing.update((rel.len() as u64).to_le_bytes());
            listing.update(rel.as_bytes());
            listing.update([InputKind::File.tag()]);
            listing.update(digest);
            self.insert(format!("{label}/{rel}"), InputKind::File, digest, size)?;
        }
        self.insert(
            label.to_string(),
            InputKind::Tree,
            listing.finalize().into(),
            sorted.len() as u64,
        )?;
        Ok(metas.into_iter().flatten().collect())
    }

    /// The key, the sorted input list and the hashing counters. Saves the hash cache (a
    /// failure to save only costs time later, so it is ignored).
    pub fn finish(mut self) -> KeyOutcome {
        let mut h = Sha256::new();
        h.update(b"compose-store-key-v1\n");
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (label, (kind, digest, size)) in &self.inputs {
            h.update((label.len() as u64).to_le_bytes());
            h.update(label.as_bytes());
            h.update([kind.tag()]);
            h.update(size.to_le_bytes());
            h.update(digest);
            inputs.push(InputHash {
                label: label.clone(),
                kind: *kind,
                sha256: hex::encode(digest),
                size: *size,
            });
        }
        let _ = self.cache.save();
        KeyOutcome {
            key: Key(h.finalize().into()),
            inputs,
            stats: self.cache.stats(),
        }
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A `result*` name at the top level; callers apply it to symlinks only (compose's
/// result links, which lead into the store and are no source).
fn is_result_link(rel: &Path) -> bool {
    rel.components().count() == 1 && rel.to_str().is_some_and(|n| n.starts_with("result"))
}

fn excluded(rel: &Path, excludes: &[&str]) -> bool {
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let top = rel.components().count() == 1;
    if EXCLUDED_EVERYWHERE.contains(&name) || (top && CRATE_BUILD_DIRS.contains(&name)) {
        return true;
    }
    excludes.iter().any(|pat| {
        let pat = Path::new(pat.trim_end_matches('/'));
        let (Some(pdir), Some(pname)) = (pat.parent(), pat.file_name().and_then(|n| n.to_str()))
        else {
            return false;
        };
        rel.parent() == Some(pdir) && name_matches(pname, name)
    })
}

// ---------------------------------------------------------------------------------------
// The hash cache.

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// The later of the modification and change times.
    fn newest(&self) -> SystemTime {
        let t = |s: i64, ns: i64| {
            let d = Duration::from_secs(s.max(0) as u64)
                + Duration::from_nanos(ns.clamp(0, 999_999_999) as u64);
            SystemTime::UNIX_EPOCH + d
        };
        t(self.mtime, self.mtime_nsec).max(t(self.ctime, self.ctime_nsec))
    }
}

/// A file's modification time in whole seconds since 1970 (0 before).
fn mtime_secs(m: &fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// A persistent map from (absolute path, size, mtime, ctime, device, inode) to the file's
/// sha256, so that unchanged inputs, however large, cost one `stat` each.
///
/// The cache lives in `<store>/.cache/hashes-v1`, one line per path:
/// `SHA256 SIZE MTIME MTIME_NSEC CTIME CTIME_NSEC DEV INO PATH`. A file is hashed again when
/// any of its stamp's fields changes (an edit changes mtime and ctime; a copy or a
/// checkout changes the inode; `touch -d` to an old date still changes ctime). A file
/// modified in the last two seconds before it was hashed is not cached ("racily clean",
/// as git calls it), because a second edit within the file system's timestamp
/// granularity would leave its stamp unchanged; nor is one that changed while it was read.
/// Saving appends the new lines to the file (one `write` with `O_APPEND`, so that
/// processes saving at once lose nothing; a later line for a path wins); when the file
/// holds more than twice as many lines as paths, it is rewritten, merged with what is on
/// disk, and replaced atomically. A corrupt or missing cache file is an empty cache.
#[derive(Debug)]
pub struct HashCache {
    file: Option<PathBuf>,
    /// The lines the file held when loaded.
    lines: usize,
    entries: HashMap<PathBuf, (Stamp, [u8; 32])>,
    updates: HashMap<PathBuf, (Stamp, [u8; 32])>,
    racy_window: Duration,
    stats: HashStats,
}

impl HashCache {
    /// A cache that is never saved.
    pub fn in_memory() -> HashCache {
        HashCache {
            file: None,
            lines: 0,
            entries: HashMap::new(),
            updates: HashMap::new(),
            racy_window: Duration::from_secs(2),
            stats: HashStats::default(),
        }
    }

    /// The cache saved in `file` (empty if it is missing or unreadable).
    pub fn load(file: &Path) -> HashCache {
        let mut cache = HashCache::in_memory();
        (cache.entries, cache.lines) = read_cache_lines(file);
        cache.file = Some(file.to_path_buf());
        cache
    }

    /// How recently modified a file may be and still be cached; two seconds by default.
    pub fn set_racy_window(&mut self, window: Duration) {
        self.racy_window = window;
    }

    /// The counters so far.
    pub fn stats(&self) -> HashStats {
        self.stats
    }

    /// How many files the cache knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache knows no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sha256 and length of the file at `path` (absolute, following symlinks): from
    /// the cache after a single `stat` if its stamp is unchanged, else by reading it.
    pub fn hash(&mut self, path: &Path) -> io::Result<([u8; 32], u64)> {
        self.hash_mtime(path).map(|(d, size, _)| (d, size))
    }

    /// [`HashCache::hash`], with the file's modification time (whole seconds since 1970,
    /// 0 before) as the `stat` before the hash saw it.
    pub fn hash_mtime(&mut self, path: &Path) -> io::Result<([u8; 32], u64, u64)> {
        self.hash_meta(path)
            .map(|(d, size, m)| (d, size, mtime_secs(&m)))
    }

    /// [`HashCache::hash`], with the file's metadata as the `stat` before the hash saw it.
    pub fn hash_meta(&mut self, path: &Path) -> io::Result<([u8; 32], u64, fs::Metadata)> {
        let before = fs::metadata(path)?;
        if !before.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let stamp = Stamp::of(&before);
        if let Some((s, digest)) = self.entries.get(path)
            && *s == stamp
        {
            self.stats.cache_hits += 1;
            return Ok((*digest, stamp.size, before));
        }
        let file = fs::File::open(path)?;
        let (digest, len) = hash_reader(&file)?;
        self.stats.hashed_files += 1;
        self.stats.hashed_bytes += len;
        let after = Stamp::of(&file.metadata()?);
        let settled = SystemTime::now()
            .duration_since(stamp.newest())
            .is_ok_and(|age| age >= self.racy_window);
        if after == stamp
            && len == stamp.size
            && settled
            && path.is_absolute()
            && !path.as_os_str().as_bytes().contains(&b'\n')
        {
            self.entries.insert(path.to_path_buf(), (stamp, digest));
            self.updates.insert(path.to_path_buf(), (stamp, digest));
        }
        Ok((digest, len, before))
    }

    /// Writes new entries to the cache file, merged with what other processes saved
    /// meanwhile. Does nothing for an in-memory cache or when nothing is new.
    pub fn save(&mut self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.updates.is_empty() {
            return Ok(());
        }
        let compact = self.lines + self.updates.len() > 2 * self.entries.len() + 1024;
        if !compact && self.lines > 0 && append_cache_lines(file, &self.updates).is_ok() {
            self.lines += self.updates.len();
            self.updates.clear();
            return Ok(());
        }
        let mut merged = read_cache_file(file);
        merged.extend(self.updates.drain());
        self.lines = merged.len();
        write_cache_file(file, &merged)
    }

    /// Drops the entries of paths that no longer exist and saves; returns how many were
    /// dropped. `compose gc` calls it.
    pub fn prune(&mut self) -> io::Result<usize> {
        let before = self.entries.len();
        self.entries.retain(|p, _| fs::symlink_metadata(p).is_ok());
        let dropped = before - self.entries.len();
        if let Some(file) = &self.file
            && dropped > 0
        {
            write_cache_file(file, &self.entries)?;
        }
        self.updates.clear();
        Ok(dropped)
    }
}

fn read_cache_file(file: &Path) -> HashMap<PathBuf, (Stamp, [u8; 32])> {
    read_cache_lines(file).0
}

/// The entries of the cache file, and how many lines it has (0: missing or foreign).
fn read_cache_lines(file: &Path) -> (HashMap<PathBuf, (Stamp, [u8; 32])>, usize) {
    let mut out = HashMap::new();
    let Ok(bytes) = fs::read(file) else {
        return (out, 0);
    };
    let mut lines = bytes.split(|b| *b == b'\n');
    if lines.next() != Some(CACHE_HEADER.as_bytes()) {
        return (out, 0);
    }
    let mut n = 1;
    for line in lines {
        n += 1;
        if let Some((path, entry)) = parse_cache_line(line) {
            out.insert(path, entry);
        }
    }
    (out, n)
}

fn cache_line(out: &mut Vec<u8>, path: &Path, s: &Stamp, digest: &[u8; 32]) {
    let _ = write!(
        out,
        "{} {} {} {} {} {} {} {} ",
        hex::encode(digest),
        s.size,
        s.mtime,
        s.mtime_nsec,
        s.ctime,
        s.ctime_nsec,
        s.dev,
        s.ino
    );
    out.extend_from_slice(path.as_os_str().as_bytes());
    out.push(b'\n');
}

/// Appends lines for `entries` to the cache file (which has its header) in one write;
/// after a line a crash left unfinished, the first new line starts on a line of its own.
fn append_cache_lines(
    file: &Path,
    entries: &HashMap<PathBuf, (Stamp, [u8; 32])>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().append(true).read(true).open(file)?;
    let len = f.metadata()?.len();
    let mut last = [0u8; 1];
    f.read_exact_at(
        &mut last,
        len.checked_sub(1).ok_or(io::ErrorKind::InvalidData)?,
    )?;
    let mut out = Vec::with_capacity(1 + entries.len() * 200);
    if last[0] != b'\n' {
        out.push(b'\n');
    }
    for (path, (s, digest)) in entries {
        cache_line(&mut out, path, s, digest);
    }
    (&f).write_all(&out)
}

fn parse_cache_line(line: &[u8]) -> Option<(PathBuf, (Stamp, [u8; 32]))> {
    let mut fields = line.splitn(9, |b| *b == b' ');
    let mut text = || fields.next().and_then(|f| std::str::from_utf8(f).ok());
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text()?, &mut digest).ok()?;
    let stamp = Stamp {
        size: text()?.parse().ok()?,
        mtime: text()?.parse().ok()?,
        mtime_nsec: text()?.parse().ok()?,
        ctime: text()?.parse().ok()?,
        ctime_nsec: text()?.parse().ok()?,
        dev: text()?.parse().ok()?,
        ino: text()?.parse().ok()?,
    };
    let path = fields.next().filter(|p| p.first() == Some(&b'/'))?;
    Some((
        PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        (stamp, digest),
    ))
}

fn write_cache_file(file: &Path, entries: &HashMap<PathBuf, (Stamp, [u8; 32])>) -> io::Result<()> {
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
    let mut out = Vec::with_capacity(64 + sorted.len() * 160);
    out.extend_from_slice(CACHE_HEADER.as_bytes());
    out.push(b'\n');
    for (path, (s, digest)) in sorted {
        cache_line(&mut out, path, s, digest);
    }
    write_atomic(file, &out, 0o644)
}

// ---------------------------------------------------------------------------------------
// The store.

/// A content-addressed store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A shared hold on the store lock: while any is held, [`Store::gc`] refuses to run.
/// Hold one from the [`Store::lookup`] of a build until its [`Store::link_result`].
#[derive(Debug)]
pub struct StoreLock {
    _file: Option<fs::File>,
}

/// A committed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The entry's directory.
    pub path: PathBuf,
    /// False when the entry already existed (the fill function was not called, or its
    /// result was discarded because another process committed the same key first).
    pub fresh: bool,
}

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Directory names of the entries removed, sorted.
    pub removed: Vec<String>,
    /// Bytes freed: the removed entries' files, plus leftovers of interrupted builds.
    pub bytes: u64,
    /// Directory names of the entries kept, sorted.
    pub live: Vec<String>,
    /// The `result` links whose roots were dropped because they no longer exist or no
    /// longer point into the store.
    pub stale_roots: Vec<PathBuf>,
    /// Leftovers of interrupted builds removed from `.tmp`.
    pub tmp_removed: usize,
    /// Entries of the pack cache (`.cache/pack-v1/`) removed: those whose contents no live
    /// entry's archive holds (their bytes are in `bytes`).
    pub pack_cache_removed: u64,
    /// Entries kept because a unikernel launched from them is still running: (pid, entry
    /// directory name).
    pub running: Vec<(u32, String)>,
    /// Whether nothing was removed (`compose gc --dry-run`): the lists say what would go.
    pub dry_run: bool,
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot),
/// if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields
    // from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Where the store is when nothing says otherwise, given a way to read the environment:
/// `$COMPOSE_STORE`, else `$XDG_CACHE_HOME/compose/store` (if absolute), else
/// `$HOME/.cache/compose/store`.
pub fn default_root(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(STORE_ENV) {
        return Some(PathBuf::from(dir));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Some(xdg.join("compose").join("store"));
    }
    var("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache")
            .join("compose")
            .join("store")
    })
}

fn check_component(what: &'static str, value: &str) -> Result<()> {
    let bad = |why| {
        Err(StoreError::BadName {
            what,
            value: value.to_string(),
            why,
        })
    };
    if value.is_empty() {
        return bad("it is empty");
    }
    if value.starts_with('.') {
        return bad("it starts with a dot");
    }
    if value.len() > 150 {
        return bad("it is longer than 150 bytes");
    }
    if value.chars().any(|c| c == '/' || c.is_control()) {
        return bad("it contains a slash or a control character");
    }
    Ok(())
}

fn is_entry_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > HASH_LEN + 1
        && b[HASH_LEN] == b'-'
        && b[..HASH_LEN]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    /// Opens (creating if needed) the store at `explicit`, or else where [`default_root`]
    /// says from the process environment. A relative path is taken from the current
    /// directory.
    pub fn open(explicit: Option<PathBuf>) -> Result<Store> {
        let root = explicit
            .or_else(|| default_root(|k| std::env::var_os(k)))
            .ok_or(StoreError::NoHome)?;
        Store::at(&root)
    }

    /// Opens (creating if needed) the store rooted at `root`.
    pub fn at(root: &Path) -> Result<Store> {
        let root = std::path::absolute(root).map_err(io_err("cannot find the store", root))?;
        for sub in ["", TMP_DIR, CACHE_DIR, GCROOTS_DIR, PINS_DIR] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("cannot create the store directory", &dir))?;
        }
        // Resolve symlinks once, so that paths handed out and compared are canonical.
        let root = fs::canonicalize(&root).map_err(io_err("cannot find the store", &root))?;
        Ok(Store { root })
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The packer's cache of compressed variants (`.cache/pack-v1/`).
    pub fn pack_cache(&self) -> compose_assets::PackCache {
        compose_assets::PackCache::new(
            &self
                .root
                .join(CACHE_DIR)
                .join(compose_assets::PACK_CACHE_DIR),
        )
    }

    /// The bundles' cache of compressed frames (`.cache/bundle-v1/`).
    pub fn frame_cache(&self) -> crate::bundle::FrameCache {
        crate::bundle::FrameCache::new(
            &self
                .root
                .join(CACHE_DIR)
                .join(crate::bundle::FRAME_CACHE_DIR),
        )
    }

    /// The frame cache of the store that holds the entry at `entry` (a store entry or a
    /// link to one), if it is in a store.
    pub fn frame_cache_of_entry(entry: &Path) -> Option<crate::bundle::FrameCache> {
        let root = entry.canonicalize().ok()?.parent()?.to_path_buf();
        (root.join(CACHE_DIR).is_dir() && root.join(TMP_DIR).is_dir()).then(|| {
            crate::bundle::FrameCache::new(
                &root.join(CACHE_DIR).join(crate::bundle::FRAME_CACHE_DIR),
            )
        })
    }

    /// The file-hash cache of this store.
    pub fn hash_cache(&self) -> HashCache {
        HashCache::load(&self.root.join(CACHE_DIR).join(CACHE_FILE))
    }

    /// A [`KeyBuilder`] using this store's hash cache.
    pub fn key_builder(&self) -> KeyBuilder {
        KeyBuilder::new(self.hash_cache())
    }

    /// The directory name of an entry: `<32 hex digits of key>-<name>-<target>`.
    pub fn entry_name(key: &Key, name: &str, target: &str) -> Result<String> {
        check_component("name", name)?;
        check_component("target", target)?;
        Ok(format!("{}-{name}-{target}", key.short()))
    }

    /// Where the entry for `key` is (or would be).
    pub fn entry_path(&self, key: &Key, name: &str, target: &str) -> Result<PathBuf> {
        Ok(self.root.join(Store::entry_name(key, name, target)?))
    }

    /// The entry for `key`, if it is in the store. Entries appear only complete, so one
    /// that exists is whole.
    pub fn lookup(&self, key: &Key, name: &str, target: &str) -> Result<Option<PathBuf>> {
        let path = self.entry_path(key, name, target)?;
        Ok(fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_dir())
            .then_some(path))
    }

    /// Takes the store lock shared; see [`StoreLock`]. A store this process may not write
    /// (a read-only mount, another user's store) is locked through a read-only descriptor,
    /// or not at all if it has no lock file: nothing here can change it then.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(LOCK_FILE);
        let file = match self.lock_file() {
            Ok(f) => f,
            Err(StoreError::Io { source, .. }) if read_only_error(&source) => {
                match fs::File::open(&path) {
                    Ok(f) => f,
                    Err(_) => return Ok(StoreLock { _file: None }),
                }
            }
            Err(e) => return Err(e),
        };
        file.lock_shared().map_err(io_err("cannot lock", &path))?;
        Ok(StoreLock { _file: Some(file) })
    }

    fn lock_file(&self) -> Result<fs::File> {
        let path = self.root.join(LOCK_FILE);
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("cannot open", &path))
    }

    /// Records that process `pid` (started at `start_time`, see [`process_start_time`])
    /// runs the unikernel of `entry`, so that [`Store::gc`] keeps it while it runs.
    pub fn record_launch(&self, entry: &Path, pid: u32, start_time: u64) -> Result<PathBuf> {
        let entry = self.require_entry(entry)?;
        let dir = self.root.join(LAUNCHES_DIR);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let file = dir.join(pid.to_string());
        let text = format!("{start_time} {}\n", entry.display());
        write_atomic(&file, text.as_bytes(), 0o644)
            .map_err(io_err("cannot record the launch in", &file))?;
        Ok(file)
    }

    /// The recorded launches: (pid, entry, whether that process still runs).
    pub fn launches(&self) -> Result<Vec<(u32, PathBuf, bool)>> {
        let dir = self.root.join(LAUNCHES_DIR);
        let mut out = Vec::new();
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("cannot read", &dir)(e)),
        };
        for e in read {
            let e = e.map_err(io_err("cannot read", &dir))?;
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let (start, entry) = text
                .trim_end_matches('\n')
                .split_once(' ')
                .unwrap_or(("", ""));
            let live = start
                .parse::<u64>()
                .is_ok_and(|s| process_start_time(pid) == Some(s));
            out.push((pid, PathBuf::from(entry), live));
        }
        out.sort();
        Ok(out)
    }

    /// Adds the entry for `key` unless it exists: `fill` writes the output into an empty
    /// temporary directory, which is then sealed (every file fsync'd, mtimes set to 1,
    /// files made read-only: 0444, or 0555 if executable; directories 0555) and renamed
    /// into place in one step. If `fill` fails the temporary directory is removed; if the
    /// process dies, it is left under `.tmp/` for [`Store::gc`]. If another process
    /// committed the same key meanwhile, ours is discarded and theirs returned.
    pub fn commit<F, E>(&self, key: &Key, name: &str, target: &str, fill: F) -> Result<Committed>
    where
        F: FnOnce(&Path) -> std::result::Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let dest = self.entry_path(key, name, target)?;
        let _lock = self.lock()?;
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Ok(Committed {
                path: dest,
                fresh: false,
            });
        }
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}-{}", key.short(), random_suffix()));
        fs::create_dir(&tmp).map_err(io_err("cannot create", &tmp))?;
        let discard = |tmp: &Path| {
            let _ = remove_tree(tmp);
        };
        if let Err(e) = fill(&tmp) {
            discard(&tmp);
            return Err(StoreError::Fill(e.into()));
        }
        if let Err(e) = crate::timings::time("seal", || seal(&tmp)) {
            discard(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => {
                // Read-only only now: moving a directory to a new parent needs write
                // permission on it (to update its `..`).
                let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(0o555));
                sync_dir(&self.root).map_err(io_err("cannot sync", &self.root))?;
                Ok(Committed {
                    path: dest,
                    fresh: true,
                })
            }
            Err(_) if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) => {
                discard(&tmp);
                Ok(Committed {
                    path: dest,
                    fresh: false,
                })
            }
            Err(e) => {
                discard(&tmp);
                Err(StoreError::Io {
                    what: "cannot move into place",
                    path: dest,
                    source: e,
                })
            }
        }
    }

    /// The entry that `path` is or is inside of (after resolving symlinks: `path` may be
    /// a `result` link).
    pub fn entry_of(&self, path: &Path) -> Option<PathBuf> {
        let real = fs::canonicalize(path).ok()?;
        let rel = real.strip_prefix(&self.root).ok()?;
        let first = rel.components().next()?;
        let Component::Normal(name) = first else {
            return None;
        };
        let name = name.to_str()?;
        is_entry_name(name).then(|| self.root.join(name))
    }

    fn require_entry(&self, entry: &Path) -> Result<PathBuf> {
        self.entry_of(entry)
            .filter(|e| fs::symlink_metadata(e).is_ok_and(|m| m.is_dir()))
            .ok_or_else(|| StoreError::NotAnEntry {
                path: entry.to_path_buf(),
                root: self.root.clone(),
            })
    }

    /// Points the symlink `link` (e.g. `./result`) at `entry`, replacing an older symlink
    /// atomically, and registers it as a GC root. Refuses to replace anything but a
    /// symlink. The root is registered first, so no moment exists at which the link
    /// points to an entry that a concurrent GC could take for garbage.
    pub fn link_result(&self, entry: &Path, link: &Path) -> Result<PathBuf> {
        let entry = self.require_entry(entry)?;
        let abs = std::path::absolute(link).map_err(io_err("cannot find", link))?;
        let parent = fs::canonicalize(parent_dir(&abs))
            .map_err(io_err("cannot find the directory of", &abs))?;
        let link = match abs.file_name() {
            Some(name) => parent.join(name),
            None => return Err(StoreError::LinkOccupied(abs)),
        };
        if let Ok(m) = fs::symlink_metadata(&link)
            && !m.file_type().is_symlink()
        {
            return Err(StoreError::LinkOccupied(link));
        }
        let _lock = self.lock()?;
        let root = self
            .root
            .join(GCROOTS_DIR)
            .join(sha256_hex(link.as_os_str().as_bytes()));
        symlink_atomic(&link, &root).map_err(io_err("cannot register the GC root", &root))?;
        symlink_atomic(&entry, &link).map_err(io_err("cannot create the link", &link))?;
        Ok(link)
    }

    /// Keeps `entry` alive under the pin `name` (replacing an older pin of that name).
    pub fn pin(&self, name: &str, entry: &Path) -> Result<()> {
        check_component("pin name", name)?;
        let entry = self.require_entry(entry)?;
        let _lock = self.lock()?;
        let pin = self.root.join(PINS_DIR).join(name);
        symlink_atomic(&entry, &pin).map_err(io_err("cannot create the pin", &pin))
    }

    /// Removes the pin `name`; false if there was none.
    pub fn unpin(&self, name: &str) -> Result<bool> {
        check_component("pin name", name)?;
        let pin = self.root.join(PINS_DIR).join(name);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io {
                what: "cannot remove the pin",
                path: pin,
                source: e,
            }),
        }
    }

    /// The pins: (name, entry it points to), sorted by name.
    pub fn pins(&self) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.root.join(PINS_DIR);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("cannot read", &dir))? {
            let e = e.map_err(io_err("cannot read", &dir))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Ok(target) = fs::read_link(e.path()) {
                out.push((name, target));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The registered `result` links: (link, entry it points to now, if it is one of ours).
    pub fn roots(&self) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
        let dir = self.root.join(GCROOTS_DIR);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("cannot read", &dir))? {
            let e = e.map_err(io_err("cannot read", &dir))?;
            if e.file_name().as_bytes().starts_with(b".") {
                continue;
            }
            let Ok(link) = fs::read_link(e.path()) else {
                continue;
            };
            let live = fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink());
            let entry = if live {
                self.entry_of(&link).filter(|p| p.is_dir())
            } else {
                None
            };
            out.push((link, entry));
        }
        out.sort();
        Ok(out)
    }

    /// Directory names of every entry, sorted.
    pub fn entries(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).map_err(io_err("cannot read", &self.root))? {
            let e = e.map_err(io_err("cannot read", &self.root))?;
            if let Some(name) = e.file_name().to_str()
                && is_entry_name(name)
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes every entry that no registered `result` link (still a symlink, still
    /// pointing to it) and no pin refers to, the roots of links that are gone or point
    /// elsewhere, and the leftovers of interrupted builds; prunes the hash cache. Each
    /// entry is first renamed into `.tmp/`, so an interrupted GC never leaves a partial
    /// entry. Refuses to run while any [`StoreLock`] is held ([`StoreError::Busy`]).
    /// Entries of running unikernels ([`Store::record_launch`]) are live too.
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_with(false)
    }

    /// [`Store::gc`], or with `dry_run` only the report of what it would remove.
    pub fn gc_with(&self, dry_run: bool) -> Result<GcReport> {
        let lock = self.lock_file()?;
        let locked = if dry_run {
            lock.try_lock_shared()
        } else {
            lock.try_lock()
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Busy(self.root.clone())),
            Err(fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io {
                    what: "cannot lock",
                    path: self.root.join(LOCK_FILE),
                    source: e,
                });
            }
        }
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };
        let mut live = std::collections::BTreeSet::new();
        for (pid, entry, running) in self.launches()? {
            let entry = self.entry_of(&entry).filter(|p| p.is_dir());
            match (running, entry) {
                (true, Some(entry)) => {
                    if let Some(name) = entry.file_name().and_then(|n| n.to_str()) {
                        report.running.push((pid, name.to_string()));
                    }
                    live.insert(entry);
                }
                _ if !dry_run => {
                    let file = self.root.join(LAUNCHES_DIR).join(pid.to_string());
                    let _ = fs::remove_file(&file);
                }
                _ => {}
            }
        }
        let gcroots = self.root.join(GCROOTS_DIR);
        for e in fs::read_dir(&gcroots).map_err(io_err("cannot read", &gcroots))? {
            let e = e.map_err(io_err("cannot read", &gcroots))?;
            let link = fs::read_link(e.path()).ok();
            let is_link = link
                .as_ref()
                .is_some_and(|l| fs::symlink_metadata(l).is_ok_and(|m| m.file_type().is_symlink()));
            let entry = link
                .as_ref()
                .filter(|_| is_link)
                .and_then(|l| self.entry_of(l))
                .filter(|p| p.is_dir());
            match entry {
                Some(entry) => {
                    live.insert(entry);
                }
                None => {
                    if !dry_run {
                        fs::remove_file(e.path())
                            .map_err(io_err("cannot remove the stale root", &e.path()))?;
                    }
                    report.stale_roots.push(link.unwrap_or_else(|| e.path()));
                }
            }
        }
        for (_, target) in self.pins()? {
            if let Some(entry) = self.entry_of(&target) {
                live.insert(entry);
            }
        }
        let tmp_dir = self.root.join(TMP_DIR);
        for name in self.entries()? {
            let path = self.root.join(&name);
            if live.contains(&path) {
                report.live.push(name);
                continue;
            }
            report.bytes += tree_size(&path);
            if dry_run {
                report.removed.push(name);
                continue;
            }
            // Renaming a directory to a new parent needs write permission on it.
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o755));
            let doomed = tmp_dir.join(format!("gc-{}", random_suffix()));
            fs::rename(&path, &doomed).map_err(io_err("cannot remove", &path))?;
            remove_tree(&doomed).map_err(io_err("cannot remove", &doomed))?;
            report.removed.push(name);
        }
        for e in fs::read_dir(&tmp_dir).map_err(io_err("cannot read", &tmp_dir))? {
            let e = e.map_err(io_err("cannot read", &tmp_dir))?;
            report.bytes += tree_size(&e.path());
            if !dry_run {
                remove_tree(&e.path()).map_err(io_err("cannot remove", &e.path()))?;
            }
            report.tmp_removed += 1;
        }
        report.stale_roots.sort();
        self.prune_pack_cache(&mut report, dry_run)?;
        if !dry_run {
            let _ = self.hash_cache().prune();
            // The bundles' frames: made again, once, by the next build that needs them.
            let frames = self
                .root
                .join(CACHE_DIR)
                .join(crate::bundle::FRAME_CACHE_DIR);
            let _ = remove_tree(&frames);
        }
        Ok(report)
    }

    /// Removes the pack cache's entries that no live entry's archive holds the contents
    /// of (and leftovers of interrupted packs), adding them to `report`.
    fn prune_pack_cache(&self, report: &mut GcReport, dry_run: bool) -> Result<()> {
        let cache = self.pack_cache();
        let dir = self
            .root
            .join(CACHE_DIR)
            .join(compose_assets::PACK_CACHE_DIR);
        let entries = cache.entries().map_err(io_err("cannot read", &dir))?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut keep = std::collections::HashSet::new();
        for name in &report.live {
            let entry = self.root.join(name);
            for e in fs::read_dir(&entry).map_err(io_err("cannot read", &entry))? {
                let path = e.map_err(io_err("cannot read", &entry))?.path();
                let is_bundle = path.to_string_lossy().ends_with(".tar.zst");
                if path.is_file() && !is_bundle {
                    let digests = compose_assets::archive_digests(&path)
                        .map_err(io_err("cannot read", &path))?;
                    keep.extend(digests);
                }
            }
        }
        for (sha, path) in entries {
            if keep.contains(&sha) {
                continue;
            }
            report.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            report.pack_cache_removed += 1;
            if !dry_run {
                fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
            }
        }
        Ok(())
    }
}

/// Whether `e` says the file system or the file may not be written.
fn read_only_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
        || e.kind() == io::ErrorKind::ReadOnlyFilesystem
        || e.raw_os_error() == Some(libc::EROFS)
}

/// The bytes of the regular files under `path`.
fn tree_size(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Removes a tree that may have been made read-only.
fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    for e in walkdir::WalkDir::new(path)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
        }
    }
    fs::remove_dir_all(path)
}

/// Makes a filled directory a store entry's contents: fsyncs every file and directory,
/// sets mtimes to one second after the epoch and makes everything read-only, deepest
/// first (the top directory stays writable until it has been moved into place).
fn seal(dir: &Path) -> Result<()> {
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    let times = fs::FileTimes::new().set_modified(epoch).set_accessed(epoch);
    for e in walkdir::WalkDir::new(dir).contents_first(true) {
        let e = e.map_err(|e| StoreError::Io {
            what: "cannot seal",
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        let path = e.path();
        let ty = e.file_type();
        if ty.is_symlink() {
            continue;
        }
        let meta = e.metadata().map_err(|err| StoreError::Io {
            what: "cannot seal",
            path: path.to_path_buf(),
            source: err.into(),
        })?;
        let executable = ty.is_file() && meta.permissions().mode() & 0o111 != 0;
        let mode = if ty.is_dir() || executable {
            0o555
        } else {
            0o444
        };
        // Permissions first: they make every file readable, so it can be opened to sync.
        if e.depth() > 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(io_err("cannot make read-only", path))?;
        }
        if ty.is_file() || ty.is_dir() {
            let f = fs::File::open(path).map_err(io_err("cannot seal", path))?;
            f.set_times(times)
                .map_err(io_err("cannot set the times of", path))?;
            f.sync_all().map_err(io_err("cannot sync", path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn key_of(f: impl FnOnce(&mut KeyBuilder)) -> KeyOutcome {
        let mut b = KeyBuilder::new(HashCache::in_memory());
        f(&mut b);
        b.finish()
    }

    #[test]
    fn default_root_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            default_root(env(&[
                ("COMPOSE_STORE", "/s"),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/s"))
        );
        assert_eq!(
            default_root(env(&[
                ("COMPOSE_STORE", ""),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ])),
            Some(PathBuf::from("/x/compose/store"))
        );
        assert_eq!(
            default_root(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/compose/store"))
        );
        assert_eq!(default_root(env(&[])), None);
        let d = tmp();
        let explicit = d.path().join("mine");
        let s = Store::open(Some(explicit.clone())).unwrap();
        assert_eq!(s.root(), fs::canonicalize(&explicit).unwrap());
        for sub in [TMP_DIR, CACHE_DIR, GCROOTS_DIR, PINS_DIR] {
            assert!(explicit.join(sub).is_dir(), "{sub}");
        }
    }

    #[test]
    fn key_is_order_independent_and_sensitive() {
        let d = tmp();
        write(&d.path().join("a.txt"), b"alpha");
        let a = key_of(|b| {
            b.add_bytes("spec", b"unikernel x").unwrap();
            b.add_file("lock", &d.path().join("a.txt")).unwrap();
        });
        let b = key_of(|b| {
            b.add_file("lock", &d.path().join("a.txt")).unwrap();
            b.add_bytes("spec", b"unikernel x").unwrap();
        });
        assert_eq!(a.key, b.key);
        let c = key_of(|b| {
            b.add_file("lock", &d.path().join("a.txt")).unwrap();
            b.add_bytes("spec", b"unikernel y").unwrap();
        });
        assert_ne!(a.key, c.key);
        // A label is part of the key.
        let e = key_of(|b| {
            b.add_file("lock2", &d.path().join("a.txt")).unwrap();
            b.add_bytes("spec", b"unikernel x").unwrap();
        });
        assert_ne!(a.key, e.key);
        assert_eq!(a.inputs[0].label, "lock");
        assert_eq!(a.inputs[0].sha256, sha256_hex(b"alpha"));
        assert_eq!(a.inputs[1].kind, InputKind::Bytes);
    }

    #[test]
    fn duplicate_and_bad_labels() {
        let mut b = KeyBuilder::new(HashCache::in_memory());
        b.add_bytes("x", b"1").unwrap();
        assert!(matches!(b.add_bytes("x", b"2"), Err(StoreError::DuplicateInput(l)) if l == "x"));
        assert!(matches!(
            b.add_bytes("", b"2"),
            Err(StoreError::BadLabel(_))
        ));
        assert!(matches!(
            b.add_bytes("a\nb", b"2"),
            Err(StoreError::BadLabel(_))
        ));
        let err = b
            .add_file("missing", Path::new("/nonexistent/compose-x"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/compose-x"), "{err}");
    }

    #[test]
    fn tree_walk_sorted_with_excludes() {
        let d = tmp();
        let app = d.path().join("app");
        write(&app.join("src/main.rs"), b"fn main() {}");
        write(&app.join("Cargo.toml"), b"[package]");
        write(&app.join("target/debug/x"), b"junk");
        write(&app.join("_build/y"), b"junk");
        // `dist` is source like any other name: only build output is skipped.
        write(&app.join("dist/z"), b"kept");
        // A nested package is a crate of its own.
        write(&app.join("tender/Cargo.toml"), b"[package]");
        write(&app.join("tender/src/main.rs"), b"fn main() {}");
        write(&app.join("src/.hg/x"), b"junk");
        write(&app.join(".git/HEAD"), b"junk");
        write(&app.join("src/.git/HEAD"), b"junk");
        write(&app.join("assets/tmp/scratch"), b"junk");
        write(&app.join("assets/logo.png"), b"png");
        // Below the top level, `dist` and `target` are ordinary names.
        write(&app.join("assets/dist/keep"), b"kept");
        std::os::unix::fs::symlink(d.path().join("nowhere"), app.join("dangling")).unwrap();
        std::os::unix::fs::symlink(d.path(), app.join("result")).unwrap();
        std::os::unix::fs::symlink(d.path(), app.join("result-2")).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), app.join("result-old")).unwrap();
        let out = key_of(|b| b.add_tree("app", &app, &["assets/tmp"]).unwrap());
        let labels: Vec<&str> = out.inputs.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "app",
                "app/Cargo.toml",
                "app/assets/dist/keep",
                "app/assets/logo.png",
                "app/dangling",
                "app/dist/z",
                "app/src/main.rs"
            ]
        );
        assert_eq!(out.inputs[0].kind, InputKind::Tree);
        assert_eq!(out.inputs[0].size, 6);
        assert_eq!(out.inputs[4].kind, InputKind::Symlink);
        // Excluded files do not change the key; included ones do.
        write(&app.join("target/debug/x"), b"other junk");
        assert_eq!(
            key_of(|b| b.add_tree("app", &app, &["assets/tmp"]).unwrap()).key,
            out.key
        );
        write(&app.join("assets/logo.png"), b"png2");
        assert_ne!(
            key_of(|b| b.add_tree("app", &app, &["assets/tmp"]).unwrap()).key,
            out.key
        );
        // A renamed file changes the key even with the same contents.
        let a = key_of(|b| b.add_tree("app", &app, &["assets/tmp"]).unwrap()).key;
        fs::rename(app.join("assets/logo.png"), app.join("assets/logo2.png")).unwrap();
        assert_ne!(
            key_of(|b| b.add_tree("app", &app, &["assets/tmp"]).unwrap()).key,
            a
        );
        // An empty tree still counts as an input.
        fs::create_dir(d.path().join("empty")).unwrap();
        let e = key_of(|b| b.add_tree("assets", &d.path().join("empty"), &[]).unwrap());
        assert_eq!(e.inputs.len(), 1);
        assert_ne!(e.key, key_of(|_| {}).key);
    }

    #[test]
    fn listed_files_are_a_tree_of_exactly_them() {
        let d = tmp();
        write(&d.path().join("a.html"), b"a");
        write(&d.path().join("sub/b.css"), b"b");
        let files = vec![
            ("sub/b.css".to_string(), d.path().join("sub/b.css")),
            ("a.html".to_string(), d.path().join("a.html")),
        ];
        let out = key_of(|b| b.add_files("assets/public", &files).unwrap());
        let labels: Vec<&str> = out.inputs.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "assets/public",
                "assets/public/a.html",
                "assets/public/sub/b.css"
            ]
        );
        assert_eq!(out.inputs[0].size, 2);
        // The order given does not matter; a file left out changes the key.
        let rev: Vec<_> = files.iter().rev().cloned().collect();
        assert_eq!(
            key_of(|b| b.add_files("assets/public", &rev).unwrap()).key,
            out.key
        );
        assert_ne!(
            key_of(|b| b.add_files("assets/public", &files[..1]).unwrap()).key,
            out.key
        );
        // A file's key (its path in the archive) is part of the key.
        let renamed = vec![
            ("c.html".to_string(), d.path().join("a.html")),
            files[0].clone(),
        ];
        assert_ne!(
            key_of(|b| b.add_files("assets/public", &renamed).unwrap()).key,
            out.key
        );
    }

    #[test]
    fn hash_cache_hit_does_not_read_the_file() {
        let d = tmp();
        let assets = d.path().join("assets");
        for i in 0..5 {
            write(&assets.join(format!("f{i}.bin")), &vec![i as u8; 100_000]);
        }
        let cache_file = d.path().join("cache/hashes");
        let keyed = |racy: Duration| {
            let mut cache = HashCache::load(&cache_file);
            cache.set_racy_window(racy);
            let mut b = KeyBuilder::new(cache);
            b.add_tree("assets", &assets, &[]).unwrap();
            b.finish()
        };
        // Just written: too fresh to cache with the default window.
        let first = keyed(Duration::from_secs(2));
        assert_eq!(first.stats.hashed_files, 5);
        let second = keyed(Duration::ZERO);
        assert_eq!(second.stats.hashed_files, 5, "nothing was cached yet");
        assert_eq!(second.key, first.key);
        // Now cached and persisted: a fresh process reads nothing.
        let third = keyed(Duration::ZERO);
        assert_eq!(
            third.stats,
            HashStats {
                hashed_files: 0,
                hashed_bytes: 0,
                cache_hits: 5
            }
        );
        assert_eq!(third.key, first.key);
        // Proof that a hit does not read the file: forge the cached digest of f0 (its stamp
        // unchanged) and the forged digest is what comes back, with nothing read.
        let text = fs::read_to_string(&cache_file).unwrap();
        let f0 = fs::canonicalize(assets.join("f0.bin")).unwrap();
        let forged: String = text
            .lines()
            .map(|l| {
                if l.ends_with(&*f0.to_string_lossy()) {
                    format!("{}{}", "0".repeat(64), &l[64..])
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&cache_file, forged + "\n").unwrap();
        let mut cache = HashCache::load(&cache_file);
        assert_eq!(cache.hash(&f0).unwrap().0, [0u8; 32]);
        assert_eq!(cache.stats().hashed_files, 0);
        // Any change of the stamp rehashes just that file.
        write(&assets.join("f1.bin"), &[9u8; 100_000]);
        let fourth = keyed(Duration::ZERO);
        assert_eq!(fourth.stats.hashed_files, 1);
        assert_eq!(fourth.stats.cache_hits, 4);
        assert_ne!(fourth.key, first.key);
    }

    #[test]
    fn corrupt_cache_is_empty() {
        let d = tmp();
        let f = d.path().join("hashes");
        fs::write(&f, b"garbage\nmore").unwrap();
        assert!(HashCache::load(&f).is_empty());
        fs::write(
            &f,
            format!(
                "{CACHE_HEADER}\nzz 1 2 3 4 5 6 7 /x\n{} 1 2 3 4 5 6 7 relative\n",
                "a".repeat(64)
            ),
        )
        .unwrap();
        assert!(HashCache::load(&f).is_empty());
    }

    #[test]
    fn saves_append_merge_across_processes_and_survive_a_torn_line() {
        let d = tmp();
        let f = d.path().join("hashes");
        let old = SystemTime::now() - Duration::from_secs(10);
        let file = |name: &str, body: &[u8]| {
            let p = d.path().join(name);
            fs::write(&p, body).unwrap();
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(old)
                .unwrap();
            p
        };
        let (a, b, c) = (file("a", b"a"), file("b", b"b"), file("c", b"c"));
        let mut first = HashCache::load(&f);
        first.set_racy_window(Duration::ZERO);
        first.hash(&a).unwrap();
        first.save().unwrap();
        // Two caches loaded from the same file save different files: both are kept.
        let mut one = HashCache::load(&f);
        one.set_racy_window(Duration::ZERO);
        let mut two = HashCache::load(&f);
        two.set_racy_window(Duration::ZERO);
        one.hash(&b).unwrap();
        two.hash(&c).unwrap();
        one.save().unwrap();
        two.save().unwrap();
        let lines = fs::read_to_string(&f).unwrap().lines().count();
        assert_eq!(lines, 4, "saves appended");
        let mut all = HashCache::load(&f);
        all.set_racy_window(Duration::ZERO);
        assert_eq!(all.len(), 3);
        for p in [&a, &b, &c] {
            all.hash(p).unwrap();
        }
        assert_eq!(all.stats().hashed_files, 0);
        // A line a crash cut short is skipped, and the next save starts a line of its own.
        let mut text = fs::read(&f).unwrap();
        text.extend_from_slice(b"0123abcd 5 6");
        fs::write(&f, &text).unwrap();
        let d2 = file("d", b"d");
        let mut next = HashCache::load(&f);
        next.set_racy_window(Duration::ZERO);
        assert_eq!(next.len(), 3);
        next.hash(&d2).unwrap();
        next.save().unwrap();
        let mut again = HashCache::load(&f);
        again.set_racy_window(Duration::ZERO);
        assert_eq!(again.len(), 4);
        again.hash(&d2).unwrap();
        assert_eq!(again.stats().hashed_files, 0);
        // A changed file's new line wins over its old one.
        fs::write(&a, b"changed").unwrap();
        fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut changed = HashCache::load(&f);
        changed.set_racy_window(Duration::ZERO);
        let (digest, _) = changed.hash(&a).unwrap();
        changed.save().unwrap();
        let mut reloaded = HashCache::load(&f);
        reloaded.set_racy_window(Duration::ZERO);
        assert_eq!(reloaded.hash(&a).unwrap().0, digest);
        assert_eq!(reloaded.stats().hashed_files, 0);
    }

    fn fill_hello(dir: &Path) -> io::Result<()> {
        fs::write(dir.join("hello.txt"), b"hi")?;
        fs::create_dir(dir.join("bin"))?;
        fs::write(dir.join("bin/run"), b"#!/bin/sh\n")?;
        fs::set_permissions(dir.join("bin/run"), fs::Permissions::from_mode(0o700))
    }

    fn key(s: &str) -> Key {
        key_of(|b| b.add_bytes("k", s.as_bytes()).unwrap()).key
    }

    #[test]
    fn gc_keeps_the_pack_cache_of_live_archives_only() {
        let d = tmp();
        let store = Store::at(&d.path().join("store")).unwrap();
        let cache = store.pack_cache();
        let page = |word: &str| format!("<p>{word}</p>\n").repeat(100);
        let (live_dir, dead_dir) = (d.path().join("live"), d.path().join("dead"));
        write(&live_dir.join("index.html"), page("kept").as_bytes());
        write(&dead_dir.join("index.html"), page("gone").as_bytes());
        let opts = compose_assets::PackOptions::default();
        let live_archive = d.path().join("live.kv");
        compose_assets::pack_cached(&live_dir, &opts, &live_archive, Some(&cache)).unwrap();
        compose_assets::pack_cached(&dead_dir, &opts, &d.path().join("dead.kv"), Some(&cache))
            .unwrap();
        assert_eq!(cache.entries().unwrap().len(), 2);
        // A live entry holding the first archive inside an "image" (at an odd offset).
        let entry = store
            .commit(
                &key("site"),
                "site",
                "unix",
                |dir: &Path| -> io::Result<()> {
                    let mut image = b"ELF-ish".to_vec();
                    image.extend(fs::read(&live_archive)?);
                    fs::write(dir.join("site"), image)
                },
            )
            .unwrap()
            .path;
        store.link_result(&entry, &d.path().join("result")).unwrap();
        let dry = store.gc_with(true).unwrap();
        assert_eq!(dry.pack_cache_removed, 1);
        assert_eq!(
            cache.entries().unwrap().len(),
            2,
            "a dry run removes nothing"
        );
        let report = store.gc().unwrap();
        assert_eq!(report.pack_cache_removed, 1);
        let left = cache.entries().unwrap();
        assert_eq!(left.len(), 1);
        let kept = compose_assets::archive_digests(&entry.join("site")).unwrap();
        assert_eq!(kept, [left[0].0]);
        // Once no result refers to it, its cache goes too.
        fs::remove_file(d.path().join("result")).unwrap();
        store.gc().unwrap();
        assert!(cache.entries().unwrap().is_empty());
    }

    #[test]
    fn commit_lookup_and_reuse() {
        let d = tmp();
        let store = Store::at(&d.path().join("store")).unwrap();
        let k = key("one");
        assert_eq!(store.lookup(&k, "hello", "unix").unwrap(), None);
        let c = store.commit(&k, "hello", "unix", fill_hello).unwrap();
        assert!(c.fresh);
        assert_eq!(
            c.path.file_name().unwrap().to_str().unwrap(),
            format!("{}-hello-unix", k.short())
        );
        assert_eq!(
            store.lookup(&k, "hello", "unix").unwrap(),
            Some(c.path.clone())
        );
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&c.path), 0o555);
        assert_eq!(mode(&c.path.join("hello.txt")), 0o444);
        assert_eq!(mode(&c.path.join("bin/run")), 0o555);
        assert_eq!(fs::metadata(c.path.join("hello.txt")).unwrap().mtime(), 1);
        // A second commit does not run fill.
        let again = store
            .commit(&k, "hello", "unix", |_| -> io::Result<()> {
                panic!("fill ran for an existing entry")
            })
            .unwrap();
        assert_eq!(
            again,
            Committed {
                path: c.path.clone(),
                fresh: false
            }
        );
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let d = tmp();
        let store = Store::at(d.path()).unwrap();
        let k = key("two");
        let err = store
            .commit(&k, "hello", "unix", |dir| {
                fs::write(dir.join("partial"), b"x").unwrap();
                fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
                Err(io::Error::other("cargo failed"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "cargo failed");
        assert_eq!(store.lookup(&k, "hello", "unix").unwrap(), None);
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
        assert!(store.entries().unwrap().is_empty());
    }

    #[test]
    fn racing_commit_keeps_the_first() {
        let d = tmp();
        let store = Store::at(d.path()).unwrap();
        let k = key("race");
        let other = store.clone();
        let c = store
            .commit(&k, "hello", "unix", |dir| {
                // Another process finishes the same key while we are filling.
                other
                    .commit(&k, "hello", "unix", |d2| fs::write(d2.join("who"), b"them"))
                    .unwrap();
                fs::write(dir.join("who"), b"us")
            })
            .unwrap();
        assert!(!c.fresh);
        assert_eq!(fs::read(c.path.join("who")).unwrap(), b"them");
        assert_eq!(fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[test]
    fn bad_names_refused() {
        let d = tmp();
        let store = Store::at(d.path()).unwrap();
        let k = key("x");
        for (name, target) in [
            ("", "unix"),
            ("a/b", "unix"),
            (".hidden", "unix"),
            ("ok", "../x"),
            ("ok", "a\nb"),
        ] {
            assert!(
                matches!(
                    store.entry_path(&k, name, target),
                    Err(StoreError::BadName { .. })
                ),
                "{name:?} {target:?}"
            );
        }
    }

    #[test]
    fn result_links_pins_and_gc() {
        let d = tmp();
        let store = Store::at(&d.path().join("store")).unwrap();
        let work = d.path().join("work");
        fs::create_dir(&work).unwrap();
        let a = store
            .commit(&key("a"), "hello", "unix", fill_hello)
            .unwrap()
            .path;
        let b = store
            .commit(&key("b"), "hello", "unix", fill_hello)
            .unwrap()
            .path;
        let c = store
            .commit(&key("c"), "hello", "hvt", fill_hello)
            .unwrap()
            .path;
        let e = store
            .commit(&key("e"), "hello", "hvt", fill_hello)
            .unwrap()
            .path;
        let result = work.join("result");
        store.link_result(&a, &result).unwrap();
        assert_eq!(fs::read_link(&result).unwrap(), a);
        // Relinking replaces the symlink: `a` is now unreferenced.
        store.link_result(&b, &result).unwrap();
        assert_eq!(fs::read_link(&result).unwrap(), b);
        store.pin("keep", &c).unwrap();
        // A link that is later removed, and one pointing into an entry's subdirectory.
        let gone = work.join("result-gone");
        store.link_result(&e, &gone).unwrap();
        fs::remove_file(&gone).unwrap();
        // A leftover of an interrupted build.
        fs::create_dir_all(store.root().join(TMP_DIR).join("dead/sub")).unwrap();
        fs::write(store.root().join(TMP_DIR).join("dead/sub/f"), b"12345").unwrap();
        // Something that is not a symlink is never replaced.
        fs::write(work.join("file"), b"mine").unwrap();
        assert!(matches!(
            store.link_result(&a, &work.join("file")),
            Err(StoreError::LinkOccupied(_))
        ));
        assert!(matches!(
            store.link_result(&work, &work.join("x")),
            Err(StoreError::NotAnEntry { .. })
        ));

        // gc refuses while a build holds the lock.
        let held = store.lock().unwrap();
        assert!(matches!(store.gc(), Err(StoreError::Busy(_))));
        drop(held);

        let report = store.gc().unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
        let mut removed = vec![name(&a), name(&e)];
        removed.sort();
        assert_eq!(report.removed, removed);
        let mut live = vec![name(&b), name(&c)];
        live.sort();
        assert_eq!(report.live, live);
        assert_eq!(report.bytes, 2 * (2 + 10) + 5);
        assert_eq!(report.tmp_removed, 1);
        assert_eq!(report.stale_roots.len(), 1);
        assert_eq!(report.stale_roots[0].file_name().unwrap(), "result-gone");
        assert!(!a.exists() && !e.exists() && b.exists() && c.exists());
        assert_eq!(
            fs::read_dir(store.root().join(GCROOTS_DIR))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(fs::read(result.join("hello.txt")).unwrap(), b"hi");

        // Unpinning and unlinking make the rest garbage.
        assert!(store.unpin("keep").unwrap());
        assert!(!store.unpin("keep").unwrap());
        fs::remove_file(&result).unwrap();
        let report = store.gc().unwrap();
        assert_eq!(report.removed.len(), 2);
        assert!(store.entries().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(store.root().join(GCROOTS_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn entry_of_resolves_links_and_subpaths() {
        let d = tmp();
        let store = Store::at(d.path()).unwrap();
        let a = store
            .commit(&key("a"), "hello", "unix", fill_hello)
            .unwrap()
            .path;
        let link = d.path().join("result");
        store.link_result(&a, &link).unwrap();
        assert_eq!(store.entry_of(&link), Some(a.clone()));
        assert_eq!(store.entry_of(&link.join("bin/run")), Some(a.clone()));
        assert_eq!(store.entry_of(d.path()), None);
        assert_eq!(store.entry_of(&store.root().join(TMP_DIR)), None);
    }
}
