//! Deterministic `.tar.zst` bundles.
//!
//! The same entries give the same bytes whatever order they were added in, whenever,
//! wherever and by whom: entries are sorted by name; every header is a plain ustar
//! header with uid and gid 0, empty user and group names, mode 0644 (0755 for
//! executables), the given mtime ([`source_date_epoch`], else 0) and no extension
//! headers; directories are implied, never stored. The tar stream is cut into chunks at
//! points its own bytes choose (content-defined chunking: a gear rolling hash over the
//! last 64 bytes, chunks of [`FRAME_MIN`] to [`FRAME_MAX`] bytes, about 2 MiB on
//! average), and each chunk becomes one zstd frame (level [`ZSTD_LEVEL`], with its size
//! and a checksum); a `.tar.zst` of several frames is an ordinary zstd stream to every
//! decoder. The frames depend on nothing but the stream, so short reads of input files
//! cannot change the output, and a frame can be taken from a cache of frames by the
//! chunk's content ([`FrameCache`]: the store's `.cache/bundle-v1/`): a bundle whose
//! large block image changed in one place compresses the few chunks around the change,
//! not the whole image. The bytes are the same with or without the cache. The file is
//! written atomically.
//!
//! Entry names are 1 to 100 bytes of `A-Z a-z 0-9 . _ + -` in `/`-separated components,
//! none empty, `.` or `..`. The reader ([`read`]) applies the same rule and refuses
//! anything but regular files, and duplicate names.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The zstd compression level of bundles.
pub const ZSTD_LEVEL: i32 = 3;
/// The longest entry name: what a ustar header's name field holds without a prefix.
pub const MAX_NAME: usize = 100;
/// Bytes handed to the compressor per call (the tests' unit of a long stream).
#[cfg(test)]
const CHUNK: usize = 128 * 1024;
/// The shortest chunk (one zstd frame) of the tar stream, but the last.
pub const FRAME_MIN: usize = 512 * 1024;
/// The longest chunk.
pub const FRAME_MAX: usize = 8 << 20;
/// A cut where the gear hash has these bits clear: one chance in 2^21 per byte past
/// [`FRAME_MIN`], so chunks are about 2.5 MiB on average.
const FRAME_MASK: u64 = ((1 << 21) - 1) << 43;

/// Why a bundle could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An entry name breaks the naming rule.
    #[error("bundle entry name {name:?} is not allowed: {why}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// Two entries have the same name.
    #[error("the bundle has two entries named {0:?}")]
    Duplicate(String),
    /// An entry is not a regular file.
    #[error("bundle entry {name:?} is a {kind}; bundles hold only regular files")]
    NotAFile {
        /// The entry's name.
        name: String,
        /// What it is instead.
        kind: String,
    },
    /// An input file changed size while it was being bundled.
    #[error("{} changed while it was being bundled", .0.display())]
    Changed(PathBuf),
    /// An entry holds a PEM private key.
    #[error("bundle entry {0:?} contains a private key; private keys never go into a bundle")]
    PrivateKey(String),
    /// `SOURCE_DATE_EPOCH` is set but is not a number of seconds.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a whole number of seconds since 1970")]
    BadEpoch(String),
    /// The bundle is not a valid zstd-compressed tar archive.
    #[error("{} is not a valid bundle (a zstd-compressed tar archive): {source}", path.display())]
    Corrupt {
        /// The bundle.
        path: PathBuf,
        /// What the decoder said.
        source: io::Error,
    },
}

type Result<T, E = BundleError> = std::result::Result<T, E>;

/// The bundle's file name: `<name>-<target>.tar.zst`.
pub fn file_name(name: &str, target: &str) -> String {
    format!("{name}-{target}.tar.zst")
}

/// The mtime of bundle entries: `$SOURCE_DATE_EPOCH` if set, else 0.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v.trim().parse().map_err(|_| BundleError::BadEpoch(v)),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(BundleError::BadEpoch(v.to_string_lossy().into_owned()))
        }
    }
}

/// Checks an entry name against the naming rule.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why| {
        Err(BundleError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME {
        return bad("it is longer than 100 bytes");
    }
    if name.starts_with('/') {
        return bad("it is an absolute path");
    }
    for part in name.split('/') {
        match part {
            "" => return bad("it has an empty path component"),
            "." | ".." => return bad("it has a `.` or `..` component"),
            _ => {}
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        {
            return bad("only letters, digits, `.`, `_`, `+`, `-` and `/` are allowed");
        }
    }
    Ok(())
}

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// A block image, plain or layered (`compose_blockfile`): the entry holds its bytes.
    Image(PathBuf),
}

/// Collects entries, then writes them as a deterministic bundle.
#[derive(Debug, Clone)]
pub struct BundleWriter {
    mtime: u64,
    entries: BTreeMap<String, (Source, bool)>,
    keys_allowed: std::collections::BTreeSet<String>,
    cache: Option<FrameCache>,
    /// The SHA-256 of entries whose hash the caller gave.
    known: BTreeMap<String, String>,
}

impl BundleWriter {
    /// An empty bundle whose entries will carry `mtime` (seconds since 1970).
    pub fn new(mtime: u64) -> BundleWriter {
        BundleWriter {
            mtime,
            entries: BTreeMap::new(),
            keys_allowed: Default::default(),
            cache: None,
            known: BTreeMap::new(),
        }
    }

    /// Takes frames from `cache` (and adds new ones to it): the bundle's bytes are the
    /// same, only faster to make when most of its chunks were compressed before.
    pub fn with_frame_cache(mut self, cache: FrameCache) -> BundleWriter {
        self.cache = Some(cache);
        self
    }

    /// Lets the entry `name` hold a private key: for an image or block image made from
    /// an assets device that says `allow-private-keys=#true` (every other entry is
    /// scanned and refused if it holds one).
    pub fn allow_private_keys(&mut self, name: &str) {
        self.keys_allowed.insert(name.to_string());
    }

    fn add(&mut self, name: &str, source: Source, executable: bool) -> Result<()> {
        check_name(name)?;
        if self.entries.contains_key(name) {
            return Err(BundleError::Duplicate(name.to_string()));
        }
        self.entries.insert(name.to_string(), (source, executable));
        Ok(())
    }

    /// Adds an entry from memory.
    pub fn add_bytes(
        &mut self,
        name: &str,
        bytes: impl Into<Vec<u8>>,
        executable: bool,
    ) -> Result<()> {
        self.add(name, Source::Bytes(bytes.into()), executable)
    }

    /// Adds a file (read when the bundle is written); executable if its owner may
    /// execute it. Only that bit of its mode is kept, so the umask does not matter.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<()> {
        let meta = fs::metadata(path).map_err(|source| BundleError::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(BundleError::NotAFile {
                name: name.to_string(),
                kind: "directory or special file".into(),
            });
        }
        self.add(
            name,
            Source::File(path.to_path_buf()),
            meta.permissions().mode() & 0o100 != 0,
        )
    }

    /// Adds a file whose SHA-256 (hex) the caller has just computed: the bundle does not
    /// hash it again (its size is still checked, and it is still scanned for keys).
    pub fn add_file_hashed(&mut self, name: &str, path: &Path, sha256: &str) -> Result<()> {
        self.add_file(name, path)?;
        self.known.insert(name.to_string(), sha256.to_string());
        Ok(())
    }

    /// Adds a block image, plain or layered (`compose_blockfile`): the entry holds the
    /// image's bytes.
    pub fn add_image(&mut self, name: &str, path: &Path) -> Result<()> {
        self.add(name, Source::Image(path.to_path_buf()), false)
    }

    /// Adds a block image, plain or layered (`compose_blockfile`), whose SHA-256 (hex, of
    /// the image's bytes) the caller has computed: the entry holds the image's bytes.
    pub fn add_image_hashed(&mut self, name: &str, path: &Path, sha256: &str) -> Result<()> {
        self.add(name, Source::Image(path.to_path_buf()), false)?;
        self.known.insert(name.to_string(), sha256.to_string());
        Ok(())
    }

    /// The entry names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Writes the bundle to `out` atomically (a temporary file in the same directory,
    /// fsync'd and renamed). Returns each entry's sha256 (hex), by name.
    pub fn write(&self, out: &Path) -> Result<BTreeMap<String, String>> {
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { what, path, source }
        };
        let dir = crate::store::parent_dir(out);
        fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        let tmp = crate::store::tmp_sibling(out);
        let result = (|| {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io("cannot create", &tmp))?;
            let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
            let (file, hashes) = self.write_to(file)?;
            file.sync_all().map_err(io("cannot write", &tmp))?;
            fs::rename(&tmp, out).map_err(io("cannot write", out))?;
            let _ = crate::store::sync_dir(dir);
            Ok(hashes)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Writes the compressed bundle to `w` and returns it, with each entry's sha256.
    pub fn write_to<W: Write>(&self, w: W) -> Result<(W, BTreeMap<String, String>)> {
        let wio = |source| BundleError::Io {
            what: "cannot write",
            path: PathBuf::from("bundle"),
            source,
        };
        let frames = Frames::new(w, self.cache.as_ref()).map_err(wio)?;
        let mut tar = tar::Builder::new(frames);
        let mut hashes = BTreeMap::new();
        for (name, (source, executable)) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(self.mtime);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_username("").map_err(wio)?;
            header.set_groupname("").map_err(wio)?;
            header.set_device_major(0).map_err(wio)?;
            header.set_device_minor(0).map_err(wio)?;
            let digest = match source {
                Source::Bytes(bytes) => {
                    header.set_size(bytes.len() as u64);
                    let mut r = Scanned::new(&bytes[..], !self.keys_allowed.contains(name));
                    tar.append_data(&mut header, name, &mut r).map_err(wio)?;
                    r.finish(name)?
                }
                Source::File(path) | Source::Image(path) => {
                    let rio = |source| BundleError::Io {
                        what: "cannot read",
                        path: path.clone(),
                        source,
                    };
                    let image;
                    let (reader, size): (Box<dyn Read>, u64) = match source {
                        Source::Image(_) => {
                            image = compose_blockfile::BlockFile::open(path).map_err(rio)?;
                            (Box::new(image.reader()), image.size())
                        }
                        _ => {
                            let file = fs::File::open(path).map_err(rio)?;
                            let size = file.metadata().map_err(rio)?.len();
                            (Box::new(file), size)
                        }
                    };
                    header.set_size(size);
                    // Exactly `size` bytes go into the archive; a file that grew or
                    // shrank meanwhile is an error, not a corrupt entry.
                    let mut r = Scanned::new(reader.take(size), !self.keys_allowed.contains(name));
                    r.hash = !self.known.contains_key(name);
                    tar.append_data(&mut header, name, &mut r).map_err(rio)?;
                    let mut probe = [0u8; 1];
                    let grew = r.inner.get_mut().read(&mut probe).map_err(rio)? != 0;
                    if r.len != size || grew {
                        return Err(BundleError::Changed(path.clone()));
                    }
                    match self.known.get(name) {
                        Some(known) => {
                            r.finish(name)?;
                            known.clone()
                        }
                        None => r.finish(name)?,
                    }
                }
            };
            hashes.insert(name.clone(), digest);
        }
        let frames = tar.into_inner().map_err(wio)?;
        let (w, stats) = frames.finish().map_err(wio)?;
        crate::timings::count("bundle-frames-compressed", stats.0);
        crate::timings::count("bundle-frames-cached", stats.1);
        Ok((w, hashes))
    }
}

/// A reader that hashes what passes through it, counts it and looks for a private key
/// (a PEM block that decodes to a key structure: see [`compose_assets::keyscan`]), also
/// across read boundaries.
struct Scanned<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
    keys: Option<compose_assets::keyscan::KeyScan>,
    /// Whether to hash (off when the caller knows the hash).
    hash: bool,
}

impl<R: Read> Scanned<R> {
    fn new(inner: R, scan: bool) -> Self {
        Scanned {
            inner,
            hasher: Sha256::new(),
            len: 0,
            keys: scan.then(compose_assets::keyscan::KeyScan::new),
            hash: true,
        }
    }

    fn found_key(&mut self) -> bool {
        self.keys.as_mut().and_then(|k| k.finish()).is_some()
    }

    fn finish(mut self, name: &str) -> Result<String> {
        if self.found_key() {
            return Err(BundleError::PrivateKey(name.to_string()));
        }
        Ok(hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Scanned<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        if self.hash {
            self.hasher.update(data);
        }
        self.len += n as u64;
        if let Some(k) = &mut self.keys {
            k.feed(data);
        }
        Ok(n)
    }
}

/// The gear table of the chunker: 256 fixed pseudo-random words (splitmix64 from 0).
const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut x: u64 = 0;
    let mut i = 0;
    while i < 256 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// Cuts the stream written to it into content-defined chunks and writes each as one zstd
/// frame (see the module documentation).
struct Frames<'a, W: Write> {
    out: W,
    buf: Vec<u8>,
    /// Where the hash scan of `buf` resumes, and the hash there.
    scan: usize,
    hash: u64,
    zstd: zstd::bulk::Compressor<'static>,
    cache: Option<&'a FrameCache>,
    /// Frames compressed, frames taken from the cache.
    stats: (u64, u64),
}

impl<'a, W: Write> Frames<'a, W> {
    fn new(out: W, cache: Option<&'a FrameCache>) -> io::Result<Self> {
        let mut zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
        zstd.include_checksum(true)?;
        zstd.include_contentsize(true)?;
        Ok(Frames {
            out,
            buf: Vec::with_capacity(FRAME_MAX),
            scan: 0,
            hash: 0,
            zstd,
            cache,
            stats: (0, 0),
        })
    }

    /// The end of the next chunk of `buf`, if `buf` holds all of it.
    fn cut(&mut self) -> Option<usize> {
        // The hash covers the last 64 bytes only (each step shifts one bit out), so the
        // scan can start 64 bytes before the shortest cut.
        let from = self.scan.max(FRAME_MIN - 64);
        let end = self.buf.len().min(FRAME_MAX);
        let mut h = self.hash;
        for (i, b) in self.buf[from.min(end)..end].iter().enumerate() {
            h = (h << 1).wrapping_add(GEAR[*b as usize]);
            let at = from + i + 1;
            if at >= FRAME_MIN && h & FRAME_MASK == 0 {
                return Some(at);
            }
        }
        if end == FRAME_MAX {
            return Some(FRAME_MAX);
        }
        self.scan = end.max(from);
        self.hash = h;
        None
    }

    fn emit(&mut self, len: usize) -> io::Result<()> {
        let chunk = &self.buf[..len];
        let frame = match self.cache {
            Some(cache) => {
                let sha: [u8; 32] = Sha256::digest(chunk).into();
                match cache.get(&sha) {
                    Some(frame) => {
                        self.stats.1 += 1;
                        frame
                    }
                    None => {
                        let frame = self.zstd.compress(chunk)?;
                        self.stats.0 += 1;
                        cache.put(&sha, &frame);
                        frame
                    }
                }
            }
            None => {
                self.stats.0 += 1;
                self.zstd.compress(chunk)?
            }
        };
        self.out.write_all(&frame)?;
        self.buf.drain(..len);
        self.scan = 0;
        self.hash = 0;
        Ok(())
    }

    fn finish(mut self) -> io::Result<(W, (u64, u64))> {
        while let Some(at) = self.cut() {
            self.emit(at)?;
        }
        if !self.buf.is_empty() {
            self.emit(self.buf.len())?;
        }
        Ok((self.out, self.stats))
    }
}

impl<W: Write> Write for Frames<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(at) = self.cut() {
            self.emit(at)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Deliberately not passed on: frames end where the content says.
        Ok(())
    }
}

/// A cache of compressed bundle frames by the content of their chunk: a directory (the
/// store's `.cache/bundle-v1/`) of one file per chunk,
/// `<first two hex digits>/<sha256 of the chunk>-<settings fingerprint>`, holding a
/// 72-byte header (magic, the chunk's SHA-256, the SHA-256 of the frame) and the frame.
/// Entries are written to a temporary file and renamed into place; a damaged entry
/// (wrong magic, hash or length) is never used, but compressed again and replaced.
/// Removing any entry, or the whole directory, at any time is safe (`compose gc` empties it).
#[derive(Debug, Clone)]
pub struct FrameCache {
    dir: PathBuf,
}

const FRAME_MAGIC: [u8; 8] = *b"CBNDFRM1";
const FRAME_HEADER_LEN: usize = 72;
/// The cache directory's name under a store's `.cache/`.
pub const FRAME_CACHE_DIR: &str = "bundle-v1";

impl FrameCache {
    /// The cache in `dir` (created when first written).
    pub fn new(dir: &Path) -> FrameCache {
        FrameCache {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, sha: &[u8; 32]) -> PathBuf {
        let fingerprint = {
            let d = Sha256::digest(
                format!(
                    "zstd {} level {ZSTD_LEVEL} checksum contentsize",
                    zstd::zstd_safe::version_number()
                )
                .as_bytes(),
            );
            hex::encode(&d[..8])
        };
        self.dir
            .join(hex::encode(&sha[..1]))
            .join(format!("{}-{fingerprint}", hex::encode(sha)))
    }

    fn get(&self, sha: &[u8; 32]) -> Option<Vec<u8>> {
        let bytes = fs::read(self.path(sha)).ok()?;
        let (head, frame) = bytes.split_at_checked(FRAME_HEADER_LEN)?;
        if head[..8] != FRAME_MAGIC || head[8..40] != sha[..] {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(frame).into();
        (head[40..72] == digest[..]).then(|| frame.to_vec())
    }

    /// Best effort: a frame that cannot be cached is compressed again next time.
    fn put(&self, sha: &[u8; 32], frame: &[u8]) {
        let path = self.path(sha);
        let Some(dir) = path.parent() else { return };
        if fs::create_dir_all(dir).is_err() {
            return;
        }
        let mut bytes = Vec::with_capacity(FRAME_HEADER_LEN + frame.len());
        bytes.extend_from_slice(&FRAME_MAGIC);
        bytes.extend_from_slice(sha);
        bytes.extend_from_slice(&Sha256::digest(frame));
        bytes.extend_from_slice(frame);
        // No fsync: an entry a crash left short fails its own hash and is made again.
        let tmp = crate::store::tmp_sibling(&path);
        if fs::write(&tmp, &bytes).is_err() || fs::rename(&tmp, &path).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// Reads a bundle: its entries in archive order, as (name, bytes).
pub fn read(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = fs::File::open(path).map_err(|source| BundleError::Io {
        what: "cannot open",
        path: path.to_path_buf(),
        source,
    })?;
    read_from(io::BufReader::new(file)).map_err(|e| match e {
        BundleError::Corrupt { source, .. } => BundleError::Corrupt {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Reads a bundle from a stream; see [`read`].
pub fn read_from(r: impl Read) -> Result<Vec<(String, Vec<u8>)>> {
    let corrupt = |source| BundleError::Corrupt {
        path: PathBuf::from("bundle"),
        source,
    };
    let decoder = zstd::stream::read::Decoder::new(r).map_err(corrupt)?;
    let mut archive = tar::Archive::new(decoder);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| BundleError::BadName {
            name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            why: "it is not UTF-8",
        })?;
        check_name(&name)?;
        let ty = entry.header().entry_type();
        if !matches!(ty, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(BundleError::NotAFile {
                name,
                kind: entry_kind(ty).to_string(),
            });
        }
        if !seen.insert(name.clone()) {
            return Err(BundleError::Duplicate(name));
        }
        // No preallocation from the header's size: a forged size must not allocate.
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        out.push((name, bytes));
    }
    Ok(out)
}

fn entry_kind(ty: tar::EntryType) -> &'static str {
    match ty {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::XGlobalHeader => "global extension header",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn sample(dir: &Path, order: &[usize], umask_like: u32, mtime_days: u64) -> BundleWriter {
        let image = dir.join("hello.hvt");
        fs::write(&image, vec![0x7fu8; 300_000]).unwrap();
        fs::set_permissions(&image, fs::Permissions::from_mode(0o777 & !umask_like)).unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_days * 86_400);
        fs::File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(t))
            .unwrap();
        let mut w = BundleWriter::new(1_700_000_000);
        for i in order {
            match i {
                0 => w.add_file("hello.hvt", &image).unwrap(),
                1 => w
                    .add_bytes("manifest.json", b"{}\n".to_vec(), false)
                    .unwrap(),
                2 => w
                    .add_bytes(
                        "sbom/spdx.json",
                        b"{\"spdxVersion\":\"SPDX-2.3\"}".to_vec(),
                        false,
                    )
                    .unwrap(),
                _ => w
                    .add_bytes(
                        "manifest.json.sig",
                        b"compose-ed25519-signature x y\n".to_vec(),
                        false,
                    )
                    .unwrap(),
            }
        }
        w
    }

    #[test]
    fn deterministic_across_order_time_umask_and_place() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out_a = a.path().join("out/hello-hvt.tar.zst");
        let out_b = b.path().join("deep/er/hello-hvt.tar.zst");
        let ha = sample(a.path(), &[0, 1, 2, 3], 0o022, 1)
            .write(&out_a)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let hb = sample(b.path(), &[3, 2, 1, 0], 0o077, 9000)
            .write(&out_b)
            .unwrap();
        assert_eq!(fs::read(&out_a).unwrap(), fs::read(&out_b).unwrap());
        assert_eq!(ha, hb);
        assert_eq!(ha["manifest.json"], crate::store::sha256_hex(b"{}\n"));
        // Only the bundle itself is left: no temporary files.
        assert_eq!(fs::read_dir(a.path().join("out")).unwrap().count(), 1);

        let entries = read(&out_a).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "hello.hvt",
                "manifest.json",
                "manifest.json.sig",
                "sbom/spdx.json"
            ]
        );
        assert_eq!(entries[0].1.len(), 300_000);

        // The headers are as documented.
        let bytes = zstd::decode_all(&fs::read(&out_a).unwrap()[..]).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 1_700_000_000)
            );
            assert_eq!(h.username().unwrap(), Some(""));
            let exec = e.path().unwrap().to_str() == Some("hello.hvt");
            assert_eq!(h.mode().unwrap(), if exec { 0o755 } else { 0o644 });
            assert!(h.as_ustar().is_some());
        }
    }

    #[test]
    fn mtime_changes_bytes() {
        let d = tempfile::tempdir().unwrap();
        let mut w1 = BundleWriter::new(0);
        w1.add_bytes("a", b"x".to_vec(), false).unwrap();
        let mut w2 = BundleWriter::new(1);
        w2.add_bytes("a", b"x".to_vec(), false).unwrap();
        w1.write(&d.path().join("1")).unwrap();
        w2.write(&d.path().join("2")).unwrap();
        assert_ne!(
            fs::read(d.path().join("1")).unwrap(),
            fs::read(d.path().join("2")).unwrap()
        );
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a b",
            "é",
            &"x".repeat(101),
            "a/",
        ] {
            assert!(
                matches!(check_name(bad), Err(BundleError::BadName { .. })),
                "{bad:?}"
            );
        }
        for good in [
            "hello.hvt",
            "sbom/cyclonedx.json",
            "build-info.json",
            "a+b_c-1.2",
        ] {
            check_name(good).unwrap();
        }
        let mut w = BundleWriter::new(0);
        w.add_bytes("a", b"1".to_vec(), false).unwrap();
        assert!(matches!(
            w.add_bytes("a", b"2".to_vec(), false),
            Err(BundleError::Duplicate(_))
        ));
    }

    #[test]
    fn frames_follow_the_content_and_the_cache_changes_no_byte() {
        let d = tempfile::tempdir().unwrap();
        // 24 MiB that compress a little and are not periodic.
        let mut x: u64 = 1;
        let mut big: Vec<u8> = (0..24 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefgh"[(x % 8) as usize] ^ ((x >> 60) as u8 & 1)
            })
            .collect();
        let image = d.path().join("public.img");
        fs::write(&image, &big).unwrap();
        let bundle = |cache: Option<&FrameCache>, out: &str| {
            let mut w = BundleWriter::new(0);
            if let Some(c) = cache {
                w = w.with_frame_cache(c.clone());
            }
            w.add_file("public.img", &image).unwrap();
            w.add_bytes("manifest.json", b"{}\n".to_vec(), false)
                .unwrap();
            let path = d.path().join(out);
            w.write(&path).unwrap();
            fs::read(path).unwrap()
        };
        let plain = bundle(None, "plain.tar.zst");
        let cache = FrameCache::new(&d.path().join("frames"));
        assert_eq!(bundle(Some(&cache), "cold.tar.zst"), plain);
        let frames = |c: &FrameCache| {
            walkdir::WalkDir::new(&c.dir)
                .into_iter()
                .filter(|e| e.as_ref().unwrap().file_type().is_file())
                .count()
        };
        let n = frames(&cache);
        assert!((3..=48).contains(&n), "{n} frames for 24 MiB");
        // Several frames, one ordinary zstd stream.
        let entries = read(&d.path().join("cold.tar.zst")).unwrap();
        assert_eq!(entries[1].0, "public.img");
        assert!(entries[1].1 == big);
        // One byte inserted in the middle: the frames resynchronise after it, so only the
        // one or two around it are new, with the first (the entry's header, which holds
        // its size) and the last (the padding after it); the bytes are still those of a
        // bundle made without a cache.
        big.insert(12 << 20, b'!');
        fs::write(&image, &big).unwrap();
        let plain = bundle(None, "plain2.tar.zst");
        assert_eq!(bundle(Some(&cache), "warm.tar.zst"), plain);
        let new = frames(&cache) - n;
        assert!(new <= 4, "{new} new frames for a one-byte change");
        assert!(read(&d.path().join("warm.tar.zst")).unwrap()[1].1 == big);
        // A damaged frame in the cache is not used.
        for e in walkdir::WalkDir::new(&cache.dir) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let mut b = fs::read(e.path()).unwrap();
                let last = b.len() - 1;
                b[last] ^= 1;
                fs::write(e.path(), b).unwrap();
            }
        }
        assert_eq!(bundle(Some(&cache), "damaged.tar.zst"), plain);
    }

    #[test]
    fn private_keys_never_enter() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("k");
        crate::sign::keygen(&key).unwrap();
        let out = d.path().join("b.tar.zst");
        let mut w = BundleWriter::new(0);
        w.add_file("key.pem", &key).unwrap();
        assert!(matches!(w.write(&out), Err(BundleError::PrivateKey(n)) if n == "key.pem"));
        assert!(!out.exists());
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
        // Split across read boundaries.
        let pem = fs::read(&key).unwrap();
        let mut big = vec![b'a'; CHUNK * 2 - 5];
        big.extend_from_slice(&pem);
        let mut w = BundleWriter::new(0);
        w.add_bytes("blob", big.clone(), false).unwrap();
        assert!(matches!(w.write(&out), Err(BundleError::PrivateKey(_))));
        let mut joined = b"xx".to_vec();
        joined.extend_from_slice(&pem);
        let mut r = Scanned::new(OneByte(&joined), true);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert!(r.found_key());
        // An entry allowed to hold one (an image of an assets device that publishes keys).
        let mut w = BundleWriter::new(0);
        w.add_bytes("blob", big, false).unwrap();
        w.allow_private_keys("blob");
        w.write(&out).unwrap();
        // A page that shows an example header, with no key behind it.
        let mut w = BundleWriter::new(0);
        let page =
            b"<pre>-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg...\n-----END PRIVATE KEY-----</pre>";
        w.add_bytes("page.html", page.to_vec(), false).unwrap();
        w.write(&out).unwrap();
    }

    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    /// A tar stream with one raw header whose name and type are set byte by byte.
    fn raw_tar(entries: &[(&[u8], tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, ty, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        zstd::encode_all(&out[..], 3).unwrap()
    }

    #[test]
    fn reader_rejects_odd_archives() {
        let ok = raw_tar(&[
            (b"a", tar::EntryType::Regular, b"1"),
            (b"b/c", tar::EntryType::Regular, b"22"),
        ]);
        assert_eq!(
            read_from(&ok[..]).unwrap(),
            vec![
                ("a".to_string(), b"1".to_vec()),
                ("b/c".to_string(), b"22".to_vec())
            ]
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                raw_tar(&[(b"/etc/passwd", tar::EntryType::Regular, b"x")]),
                "absolute",
            ),
            (raw_tar(&[(b"../x", tar::EntryType::Regular, b"x")]), "`..`"),
            (
                raw_tar(&[
                    (b"a", tar::EntryType::Regular, b"1"),
                    (b"a", tar::EntryType::Regular, b"2"),
                ]),
                "two entries",
            ),
            (
                raw_tar(&[(b"l", tar::EntryType::Symlink, b"")]),
                "symbolic link",
            ),
            (raw_tar(&[(b"h", tar::EntryType::Link, b"")]), "hard link"),
            (
                raw_tar(&[(b"d", tar::EntryType::Directory, b"")]),
                "directory",
            ),
            (raw_tar(&[(b"f", tar::EntryType::Fifo, b"")]), "fifo"),
            (raw_tar(&[(b"\xff", tar::EntryType::Regular, b"")]), "UTF-8"),
        ];
        for (bytes, expect) in cases {
            let err = read_from(&bytes[..]).unwrap_err().to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
        // Not zstd at all, truncated, and a bit flip in the compressed data.
        assert!(matches!(
            read_from(&b"plain text"[..]),
            Err(BundleError::Corrupt { .. })
        ));
        assert!(read_from(&ok[..ok.len() / 2]).is_err());
        let mut flipped = ok.clone();
        let i = flipped.len() / 2;
        flipped[i] ^= 0x40;
        assert!(read_from(&flipped[..]).is_err());
        let d = tempfile::tempdir().unwrap();
        let err = read(&d.path().join("missing.tar.zst")).unwrap_err();
        assert!(err.to_string().contains("missing.tar.zst"), "{err}");
    }
}
