//! The packer: turns a directory into an archive (host only, feature `pack`).
//!
//! Packing streams: each file is copied into the output as it is read (and read again
//! for each compressed variant), so memory holds the list of paths and the index, never
//! the files. The output is written to a temporary file next to it and renamed into place
//! once complete, so a reader never sees half an archive.

use std::borrow::ToOwned;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;
use std::{fmt, format};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};

use crate::format::{
    DEFAULT_ALIGN, HEADER_LEN, Header, MAX_ALIGN, MIN_IMAGE_GRANULE, RECORD_LEN, Record, Span,
    align_up,
};

/// How to pack a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// Globs of files to include; empty means every file.
    ///
    /// Patterns use [`globset`] syntax on `/`-separated paths relative to the directory:
    /// `*` does not cross `/`, `**` does. A pattern without `/` matches at any depth (like
    /// `.gitignore`: `*.html`), one with `/` is anchored at the directory (`docs/*.html`,
    /// `/robots.txt`). A pattern that matches a directory applies to everything in it.
    pub include: Vec<String>,
    /// Globs of files and directories to leave out, with the same syntax; exclusion wins
    /// over inclusion.
    pub exclude: Vec<String>,
    /// Whether to store gzip and zstd variants of compressible files.
    pub compress: bool,
    /// The time recorded in the archive (seconds since the Unix epoch), normally from
    /// `SOURCE_DATE_EPOCH` (see [`source_date_epoch_from_env`]). `None` records none.
    pub source_date_epoch: Option<u64>,
    /// Alignment of every value, a power of two up to 1 MiB; 512 (one sector) by default.
    pub align: u32,
    /// Files smaller than this are not compressed.
    pub min_compress_size: u64,
    /// Gzip level, 0..=9 (6 by default: within a few per cent of 9 at several times the speed).
    pub gzip_level: u32,
    /// Zstd level, 1..=19 (6 by default). Higher levels are not accepted: their windows
    /// exceed the 8 MiB that HTTP clients must support (RFC 9659).
    pub zstd_level: i32,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            compress: true,
            source_date_epoch: None,
            align: DEFAULT_ALIGN,
            min_compress_size: 256,
            gzip_level: 6,
            zstd_level: 6,
        }
    }
}

/// What [`pack`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackSummary {
    /// Files packed.
    pub files: u64,
    /// Their total size.
    pub input_bytes: u64,
    /// Size of the archive written.
    pub archive_bytes: u64,
    /// Files stored with a gzip variant.
    pub gzip_variants: u64,
    /// Files stored with a zstd variant.
    pub zstd_variants: u64,
}

/// Why packing failed.
#[derive(Debug)]
pub enum PackError {
    /// Reading a file or directory, or writing the archive, failed.
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// An include or exclude pattern is not a valid glob.
    Glob {
        /// The pattern.
        pattern: String,
        /// The error.
        source: globset::Error,
    },
    /// A path is not UTF-8 and so cannot be a key.
    NotUtf8(PathBuf),
    /// A path is neither a regular file nor a directory (a socket, a device, a FIFO).
    NotAFile(PathBuf),
    /// A file changed while it was being packed.
    Changed(PathBuf),
    /// The index would exceed the format's limits (4 GiB of keys and types).
    TooLarge,
    /// An option is out of range.
    InvalidOption(&'static str),
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PackError::Glob { pattern, source } => write!(f, "bad glob `{pattern}`: {source}"),
            PackError::NotUtf8(p) => write!(f, "{}: path is not UTF-8", p.display()),
            PackError::NotAFile(p) => {
                write!(f, "{}: not a regular file or directory", p.display())
            }
            PackError::Changed(p) => write!(f, "{}: file changed while being packed", p.display()),
            PackError::TooLarge => f.write_str("too many or too long paths for one archive"),
            PackError::InvalidOption(why) => write!(f, "invalid pack option: {why}"),
        }
    }
}

impl std::error::Error for PackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PackError::Io { source, .. } => Some(source),
            PackError::Glob { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `SOURCE_DATE_EPOCH` from the environment: `Ok(None)` if unset or empty.
pub fn source_date_epoch_from_env() -> Result<Option<u64>, PackError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                PackError::InvalidOption("SOURCE_DATE_EPOCH is not a number of seconds")
            })
        }
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(PackError::InvalidOption(
            "SOURCE_DATE_EPOCH is not a number of seconds",
        )),
    }
}

/// Whether files of media type `content_type` are worth compressing: text, scripts,
/// structured data, SVG, uncompressed fonts and icons. Images, audio, video, archives and
/// unknown types (`application/octet-stream`) are already compressed or may be.
pub fn is_compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+xml")
        || essence.ends_with("+json")
        || matches!(
            essence,
            "application/javascript"
                | "application/x-javascript"
                | "application/ecmascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "application/toml"
                | "application/yaml"
                | "application/x-yaml"
                | "application/x-sh"
                | "application/rtf"
                | "application/x-tar"
                | "application/vnd.ms-fontobject"
                | "font/ttf"
                | "font/otf"
                | "image/bmp"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
        )
}

/// Media types that get `; charset=utf-8` when the file is valid UTF-8.
fn is_textual(essence: &str) -> bool {
    essence.starts_with("text/") || essence == "application/javascript"
}

/// Packs the files of `dir` selected by `options` into an archive at `out`.
///
/// The archive depends only on the selected files' paths (relative to `dir`) and
/// contents, and on `options`: not on `dir` itself, file times, permissions, owners or the
/// order the file system lists entries in. Symbolic links are followed. `out` is replaced
/// atomically; on error it is left as it was.
pub fn pack(dir: &Path, options: &PackOptions, out: &Path) -> Result<PackSummary, PackError> {
    if !options.align.is_power_of_two() || options.align > MAX_ALIGN {
        return Err(PackError::InvalidOption(
            "align must be a power of two up to 1 MiB",
        ));
    }
    if options.gzip_level > 9 {
        return Err(PackError::InvalidOption("gzip level must be 0..=9"));
    }
    if !(1..=19).contains(&options.zstd_level) {
        return Err(PackError::InvalidOption("zstd level must be 1..=19"));
    }
    let files = collect(dir, options)?;

    let name = out
        .file_name()
        .ok_or(PackError::InvalidOption("output path has no file name"))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(io_at(parent))?;

    let summary = {
        let mut w = Out {
            file: BufWriter::new(tmp.as_file_mut()),
            pos: 0,
            path: out,
        };
        write_archive(&mut w, &files, options)?
    };

    let file = tmp.as_file();
    file.set_len(summary.archive_bytes).map_err(io_at(out))?;
    file.sync_all().map_err(io_at(out))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_at(out))?;
    }
    tmp.persist(out).map_err(|e| PackError::Io {
        path: out.to_owned(),
        source: e.error,
    })?;
    // Make the rename durable; not every platform can open a directory, so this is best effort.
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(summary)
}

/// A file to pack: its key and where it is.
struct Source {
    key: String,
    path: PathBuf,
}

/// Compiles `patterns` into one set; `None` if there are none.
fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>, PackError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let trimmed = pattern.trim_end_matches('/');
        let anchored = trimmed.contains('/');
        let body = trimmed.trim_start_matches('/');
        let glob = if anchored {
            body.to_string()
        } else {
            format!("**/{body}")
        };
        let glob = GlobBuilder::new(&glob)
            .literal_separator(true)
            .build()
            .map_err(|source| PackError::Glob {
                pattern: pattern.clone(),
                source,
            })?;
        set.add(glob);
    }
    set.build().map(Some).map_err(|source| PackError::Glob {
        pattern: patterns.join(", "),
        source,
    })
}

/// The `/`-separated key of `path` relative to `root`.
fn key_of(root: &Path, path: &Path) -> Result<String, PackError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut key = String::new();
    for part in rel.components() {
        let part = part
            .as_os_str()
            .to_str()
            .ok_or_else(|| PackError::NotUtf8(path.to_owned()))?;
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(part);
    }
    Ok(key)
}

/// Lists the files to pack, sorted by key.
fn collect(dir: &Path, options: &PackOptions) -> Result<Vec<Source>, PackError> {
    let include = glob_set(&options.include)?;
    let exclude = glob_set(&options.exclude)?;
    let meta = fs::metadata(dir).map_err(io_at(dir))?;
    if !meta.is_dir() {
        return Err(PackError::Io {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let excluded = |path: &Path| match (&exclude, path.strip_prefix(dir)) {
        (Some(set), Ok(rel)) => set.is_match(rel),
        _ => false,
    };
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(dir).follow_links(true).min_depth(1);
    for entry in walk.into_iter().filter_entry(|e| !excluded(e.path())) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_owned();
            PackError::Io {
                path,
                source: e.into(),
            }
        })?;
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(PackError::NotAFile(entry.path().to_owned()));
        }
        let key = key_of(dir, entry.path())?;
        let included = match &include {
            None => true,
            // The file, or a directory it is in, matches.
            Some(set) => {
                set.is_match(&key) || key.match_indices('/').any(|(i, _)| set.is_match(&key[..i]))
            }
        };
        if included {
            files.push(Source {
                key,
                path: entry.into_path(),
            });
        }
    }
    files.sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    Ok(files)
}

/// The output: a buffered file and the position in it.
struct Out<'a, W: Write + Seek> {
    file: BufWriter<W>,
    pos: u64,
    path: &'a Path,
}

impl<W: Write + Seek> Write for Out<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl<W: Write + Seek> Out<'_, W> {
    fn err(&self) -> impl FnOnce(io::Error) -> PackError + '_ {
        io_at(self.path)
    }

    /// Writes zeros up to the next multiple of `align`.
    fn pad_to(&mut self, align: u64) -> Result<(), PackError> {
        let target = align_up(self.pos, align).ok_or(PackError::TooLarge)?;
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.pos < target {
            let n = (target - self.pos).min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..n]).map_err(io_at(self.path))?;
        }
        Ok(())
    }

    /// Moves back to `pos`: what follows will overwrite what was written after it.
    fn rewind(&mut self, pos: u64) -> Result<(), PackError> {
        self.file
            .seek(SeekFrom::Start(pos))
            .map_err(io_at(self.path))?;
        self.pos = pos;
        Ok(())
    }
}

/// A reader that hashes and counts what passes through, and optionally checks UTF-8.
struct Tee<R> {
    inner: R,
    sha: Sha256,
    len: u64,
    utf8: Utf8Check,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.utf8.feed(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

impl<R> Tee<R> {
    fn new(inner: R) -> Self {
        Tee {
            inner,
            sha: Sha256::new(),
            len: 0,
            utf8: Utf8Check::default(),
        }
    }
}

/// Incremental UTF-8 validation across arbitrary chunk boundaries.
#[derive(Default)]
struct Utf8Check {
    invalid: bool,
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Check {
    fn feed(&mut self, mut data: &[u8]) {
        if self.invalid {
            return;
        }
        // Complete a character split by the previous chunk.
        while self.pending_len > 0 {
            let Some((&b, rest)) = data.split_first() else {
                return;
            };
            data = rest;
            self.pending[self.pending_len] = b;
            self.pending_len += 1;
            match core::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() || self.pending_len == 4 => {
                    self.invalid = true;
                    return;
                }
                Err(_) => {}
            }
        }
        if let Err(e) = core::str::from_utf8(data) {
            if e.error_len().is_some() {
                self.invalid = true;
            } else {
                let tail = &data[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
            }
        }
    }

    fn is_valid(&self) -> bool {
        !self.invalid && self.pending_len == 0
    }
}

#[derive(Clone, Copy)]
enum Codec {
    Gzip,
    Zstd,
}

/// Writes a compressed variant of `source` at the next aligned position; keeps it only if
/// it is smaller than the original, otherwise moves the output back to where it was.
fn write_variant<W: Write + Seek>(
    w: &mut Out<'_, W>,
    source: &Source,
    size: u64,
    sha256: &[u8; 32],
    codec: Codec,
    options: &PackOptions,
) -> Result<Option<Span>, PackError> {
    let before = w.pos;
    w.pad_to(options.align as u64)?;
    let start = w.pos;
    let path = source.path.as_path();
    let mut tee = Tee::new(File::open(path).map_err(io_at(path))?);
    match codec {
        Codec::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(&mut *w, flate2::Compression::new(options.gzip_level));
            io::copy(&mut tee, &mut enc).map_err(io_at(path))?;
            check_unchanged(&tee, size, sha256, path)?;
            enc.finish().map_err(io_at(path))?;
        }
        Codec::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut *w, options.zstd_level)
                .map_err(io_at(path))?;
            enc.include_checksum(false).map_err(io_at(path))?;
            enc.include_contentsize(true).map_err(io_at(path))?;
            enc.set_pledged_src_size(Some(size)).map_err(io_at(path))?;
            io::copy(&mut tee, &mut enc).map_err(io_at(path))?;
            check_unchanged(&tee, size, sha256, path)?;
            enc.finish().map_err(io_at(path))?;
        }
    }
    let len = w.pos - start;
    if len < size {
        Ok(Some(Span { offset: start, len }))
    } else {
        w.rewind(before)?;
        Ok(None)
    }
}

fn check_unchanged<R>(
    tee: &Tee<R>,
    size: u64,
    sha256: &[u8; 32],
    path: &Path,
) -> Result<(), PackError> {
    let digest: [u8; 32] = tee.sha.clone().finalize().into();
    if tee.len != size || &digest != sha256 {
        return Err(PackError::Changed(path.to_owned()));
    }
    Ok(())
}

/// An index record before its strings have offsets.
struct Pending {
    content_type: String,
    data: Span,
    gzip: Option<Span>,
    zstd: Option<Span>,
    sha256: [u8; 32],
}

fn write_archive<W: Write + Seek>(
    w: &mut Out<'_, W>,
    files: &[Source],
    options: &PackOptions,
) -> Result<PackSummary, PackError> {
    let align = options.align as u64;
    let mut summary = PackSummary::default();
    // Room for the header, written last.
    w.write_all(&[0; HEADER_LEN]).map_err(w.err())?;

    let mut pending = Vec::with_capacity(files.len());
    for source in files {
        w.pad_to(align)?;
        let start = w.pos;
        let path = source.path.as_path();
        let mut tee = Tee::new(File::open(path).map_err(io_at(path))?);
        io::copy(&mut tee, w).map_err(io_at(path))?;
        let size = tee.len;
        let sha256: [u8; 32] = tee.sha.clone().finalize().into();

        let guess = mime_guess::from_path(&source.key)
            .first_raw()
            .unwrap_or("application/octet-stream");
        let content_type = if is_textual(guess) && tee.utf8.is_valid() {
            format!("{guess}; charset=utf-8")
        } else {
            guess.to_string()
        };

        let (mut gzip, mut zstd) = (None, None);
        if options.compress && size >= options.min_compress_size && is_compressible(&content_type) {
            gzip = write_variant(w, source, size, &sha256, Codec::Gzip, options)?;
            zstd = write_variant(w, source, size, &sha256, Codec::Zstd, options)?;
        }
        summary.files += 1;
        summary.input_bytes += size;
        summary.gzip_variants += gzip.is_some() as u64;
        summary.zstd_variants += zstd.is_some() as u64;
        pending.push(Pending {
            content_type,
            data: Span {
                offset: start,
                len: size,
            },
            gzip,
            zstd,
            sha256,
        });
    }

    // The string table: every key, then each distinct content type once.
    let mut strings: Vec<u8> = Vec::new();
    let mut add = |s: &str| -> Result<(u32, u32), PackError> {
        let offset = u32::try_from(strings.len()).map_err(|_| PackError::TooLarge)?;
        let len = u32::try_from(s.len()).map_err(|_| PackError::TooLarge)?;
        strings.extend_from_slice(s.as_bytes());
        u32::try_from(strings.len()).map_err(|_| PackError::TooLarge)?;
        Ok((offset, len))
    };
    let mut key_refs = Vec::with_capacity(files.len());
    for source in files {
        key_refs.push(add(&source.key)?);
    }
    let mut types: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    let mut type_refs = Vec::with_capacity(files.len());
    for p in &pending {
        let r = match types.get(p.content_type.as_str()) {
            Some(r) => *r,
            None => {
                let r = add(&p.content_type)?;
                types.insert(&p.content_type, r);
                r
            }
        };
        type_refs.push(r);
    }

    w.pad_to(align)?;
    let index_offset = w.pos;
    let mut sha = Sha256::new();
    for ((p, key), ty) in pending.iter().zip(&key_refs).zip(&type_refs) {
        let record = Record::encode(*key, *ty, p.data, p.gzip, p.zstd, &p.sha256);
        sha.update(record);
        w.write_all(&record).map_err(w.err())?;
    }
    sha.update(&strings);
    w.write_all(&strings).map_err(w.err())?;
    let index_len = w.pos - index_offset;
    debug_assert_eq!(
        index_len,
        (pending.len() * RECORD_LEN + strings.len()) as u64
    );
    w.pad_to(align.max(MIN_IMAGE_GRANULE))?;
    let archive_len = w.pos;

    let header = Header {
        align: options.align,
        entry_count: pending.len() as u64,
        index_offset,
        index_len,
        archive_len,
        source_date_epoch: options.source_date_epoch.unwrap_or(0),
        index_sha256: sha.finalize().into(),
    };
    w.rewind(0)?;
    w.write_all(&header.encode()).map_err(w.err())?;
    w.flush().map_err(w.err())?;
    summary.archive_bytes = archive_len;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_check_across_chunks() {
        let text = "héllo wörld — ✓ 😀".as_bytes();
        for split in 0..text.len() {
            for split2 in split..text.len() {
                let mut c = Utf8Check::default();
                c.feed(&text[..split]);
                c.feed(&text[split..split2]);
                c.feed(&text[split2..]);
                assert!(c.is_valid(), "{split} {split2}");
            }
        }
        let mut c = Utf8Check::default();
        c.feed(&[0xe2, 0x82]);
        assert!(!c.is_valid(), "truncated character");
        let mut c = Utf8Check::default();
        c.feed(&[b'a', 0xff, b'b']);
        assert!(!c.is_valid());
        let mut c = Utf8Check::default();
        c.feed(&[0xf0]);
        c.feed(&[0x28]);
        assert!(!c.is_valid());
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/html; charset=utf-8",
            "application/javascript",
            "image/svg+xml",
            "application/json",
        ] {
            assert!(is_compressible(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "application/octet-stream",
            "font/woff2",
            "application/gzip",
        ] {
            assert!(!is_compressible(t), "{t}");
        }
    }

    #[test]
    fn globs_anchor_only_with_a_slash() {
        let set = glob_set(&["*.map".into(), "docs/*.tmp".into(), "/top.txt".into()])
            .unwrap()
            .unwrap();
        assert!(set.is_match("a.map"));
        assert!(set.is_match("deep/er/a.map"));
        assert!(set.is_match("docs/x.tmp"));
        assert!(!set.is_match("other/docs/x.tmp"));
        assert!(set.is_match("top.txt"));
        assert!(!set.is_match("sub/top.txt"));
    }
}
