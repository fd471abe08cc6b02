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

use compose_blockfile::{BlockFile, LayoutBuilder};
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
    /// Whether a file may hold a private key (see [`crate::keyscan`]); by default packing
    /// refuses one, naming the file.
    pub allow_private_keys: bool,
    /// Zstd level, 1..=19 (6 by default). Higher levels are not accepted: their windows
    /// exceed the 8 MiB that HTTP clients must support (RFC 9659).
    pub zstd_level: i32,
    /// Write a *layered image* (see [`compose_blockfile`]) instead of a new archive when
    /// an incremental pack ([`pack_incremental`]) finds a previous archive of at least
    /// this many bytes: the bytes the previous archive already holds are referenced, not
    /// copied, and only the changed files, the index and the header are written. The
    /// image's bytes are the same as the plain archive's. `None` (the default): always a
    /// plain archive. Only for readers that open images with
    /// [`compose_blockfile::BlockFile`] (compose's own launchers).
    pub layered_from: Option<u64>,
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
            allow_private_keys: false,
            layered_from: None,
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
    /// Files whose bytes (and variants) were copied from the previous archive at the
    /// output path, unread (see [`pack_cached`]).
    pub reused_files: u64,
    /// Whether the archive was written: `false` when the previous archive at the output
    /// path was already the archive these files make, and was kept as it is.
    pub written: bool,
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
    /// A path is neither a regular file nor a directory: what it is (`a FIFO`, `a socket`,
    /// `a character device`, ...).
    NotAFile(PathBuf, &'static str),
    /// A symbolic link whose target is outside the packed directory (or leads nowhere,
    /// or into a loop); the link's text is given, nothing behind it is read.
    Escapes {
        /// The link.
        path: PathBuf,
        /// What the link says (its text, as `readlink` gives it).
        target: PathBuf,
        /// Why it is refused.
        why: &'static str,
    },
    /// A file name that cannot be part of a URL path (a control character such as a newline).
    BadName(PathBuf, &'static str),
    /// A file changed while it was being packed.
    Changed(PathBuf),
    /// The index would exceed the format's limits (4 GiB of keys and types).
    TooLarge,
    /// An option is out of range.
    InvalidOption(&'static str),
    /// A file holds a private key, and the options do not allow one.
    PrivateKey {
        /// The file's key in the archive (its path in the directory).
        key: String,
        /// What was found (`a PKCS#8 private key`).
        kind: &'static str,
    },
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PackError::Glob { pattern, source } => write!(f, "bad glob `{pattern}`: {source}"),
            PackError::NotUtf8(p) => write!(f, "{}: path is not UTF-8", p.display()),
            PackError::NotAFile(p, what) => write!(
                f,
                "{}: is {what}; an assets directory may hold only regular files and directories",
                p.display()
            ),
            PackError::Escapes { path, target, why } => write!(
                f,
                "{}: a symbolic link to {}, {why}; refusing to pack it",
                path.display(),
                target.display()
            ),
            PackError::BadName(p, why) => write!(f, "{:?}: {why}", p.as_os_str()),
            PackError::Changed(p) => write!(f, "{}: file changed while being packed", p.display()),
            PackError::TooLarge => f.write_str("too many or too long paths for one archive"),
            PackError::InvalidOption(why) => write!(f, "invalid pack option: {why}"),
            PackError::PrivateKey { key, kind } => write!(
                f,
                "{key} holds {kind}; private keys are not packed unless the assets device says allow-private-keys=#true"
            ),
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
/// contents, and on `options`, and, when `options.source_date_epoch` is `None`, on the
/// files' modification times (each record's time): not on `dir` itself, permissions,
/// owners or the order the file system lists entries in. The files are those [`select`] lists (see there
/// for symbolic links and what is refused). `out` is replaced atomically; on error it is
/// left as it was.
pub fn pack(dir: &Path, options: &PackOptions, out: &Path) -> Result<PackSummary, PackError> {
    pack_cached(dir, options, out, None)
}

/// [`pack`], taking each file's compressed variants from `cache` when it has them for the
/// file's contents (and storing them there when it has not): packing a tree of which
/// only a few files changed then costs one read of each file and one write of the
/// archive. The archive is the same byte for byte as without a cache.
pub fn pack_cached(
    dir: &Path,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
) -> Result<PackSummary, PackError> {
    pack_with(dir, options, out, cache, false, true)
}

/// [`pack_cached`], reusing the archive that is already at `out` (what the previous
/// pack to the same path wrote): the archive is the same byte for byte as without it.
///
/// Reuse: next to the archive, `.<name>.stamps` records, for each entry, the file it was
/// packed from and that file's identity and times (device, inode, size, modification and
/// change times, in nanoseconds) as they were before it was read, with the packer's
/// settings and the archive's identity. A file whose path and stamp are unchanged is not
/// read again: its bytes and variants are copied from the previous archive (in the
/// kernel, `copy_file_range`; runs of such files in one copy), and its hash, media type
/// and key scan come from the previous index. A file modified within two seconds of being
/// packed is never trusted this way ("racily clean", as git's index: by its modification
/// time; a later change still changes the change time, which the stamp holds). If every file is
/// unchanged and the list is the same, the previous archive is kept as it is (not
/// rewritten). Packing a tree of which one file changed then costs a `stat` of each
/// file, a read of the changed one and an in-kernel copy of the rest. A missing, damaged
/// or foreign stamps file, or an archive that is not the one it describes, means a full
/// pack.
pub fn pack_incremental(
    dir: &Path,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
) -> Result<PackSummary, PackError> {
    pack_with(dir, options, out, cache, true, true)
}

/// [`pack_incremental`] for a caller that makes the archive durable itself (a store that
/// fsyncs what it commits): the archive is not fsync'd here, only its writeback started
/// (`sync_file_range`), so that the disk works while the caller does; its stamps are
/// written aside and trusted by the next pack only once [`commit_stamps`] has fsync'd
/// the archive. A crash before that leaves no stamps, so the next pack reads every file:
/// an archive that a crash may have damaged is never copied from.
pub fn pack_incremental_deferred(
    dir: &Path,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
) -> Result<PackSummary, PackError> {
    pack_with(dir, options, out, cache, true, false)
}

/// After [`pack_incremental_deferred`]: fsyncs the archive at `out` (nothing to do when
/// the caller already has: it is then quick) and makes its stamps trusted.
pub fn commit_stamps(out: &Path) -> io::Result<()> {
    let pending = pending_stamps(out);
    if !pending.exists() {
        return Ok(());
    }
    File::open(out)?.sync_all()?;
    if let Some(layout) = compose_blockfile::read_layout(out)? {
        let parts = compose_blockfile::parts_dir(out);
        for (name, _) in &layout.parts {
            File::open(parts.join(name))?.sync_all()?;
        }
    }
    fs::rename(&pending, stamps_file(out))
}

/// The files an incremental pack packs, as the caller already found and `stat`ed them
/// ([`select`], then `fs::metadata` of each file's path, in order), and when it started
/// doing so: [`pack_incremental_deferred_selected`] then neither walks the tree nor
/// `stat`s a file again.
#[derive(Clone, Debug)]
pub struct Selected {
    /// What [`select`] gave.
    pub files: Vec<AssetFile>,
    /// Each file's metadata, taken before it was read (`None`: it could not be had).
    pub metadata: Vec<Option<fs::Metadata>>,
    /// When the first `stat` was made: a file modified in the two seconds before is
    /// never trusted by its stamp.
    pub stated_at: std::time::SystemTime,
}

/// [`pack_incremental_deferred`] of files the caller has selected and `stat`ed
/// (see [`Selected`]). The archive is the same.
pub fn pack_incremental_deferred_selected(
    selected: Selected,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
) -> Result<PackSummary, PackError> {
    check_options(options)?;
    if selected.files.len() != selected.metadata.len() {
        return Err(PackError::InvalidOption("one metadata per selected file"));
    }
    let stamps = selected
        .metadata
        .iter()
        .map(|m| m.as_ref().map(Stamp::of))
        .collect();
    pack_files(
        selected.files,
        stamps,
        selected.stated_at,
        options,
        out,
        cache,
        true,
        false,
    )
}

fn pending_stamps(out: &Path) -> PathBuf {
    let mut p = stamps_file(out).into_os_string();
    p.push(".pending");
    PathBuf::from(p)
}

fn pack_with(
    dir: &Path,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
    reuse_previous: bool,
    durable: bool,
) -> Result<PackSummary, PackError> {
    check_options(options)?;
    let files = select(dir, options)?;
    let started = std::time::SystemTime::now();
    let stamps: Vec<Option<Stamp>> = files
        .iter()
        .map(|f| fs::metadata(&f.path).ok().map(|m| Stamp::of(&m)))
        .collect();
    pack_files(
        files,
        stamps,
        started,
        options,
        out,
        cache,
        reuse_previous,
        durable,
    )
}

fn check_options(options: &PackOptions) -> Result<(), PackError> {
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
    Ok(())
}

/// The pack itself, of files already selected and `stat`ed, with options already checked
/// ([`check_options`]: its callers do, before walking any tree).
#[allow(clippy::too_many_arguments)]
fn pack_files(
    files: Vec<AssetFile>,
    stamps: Vec<Option<Stamp>>,
    started: std::time::SystemTime,
    options: &PackOptions,
    out: &Path,
    cache: Option<&PackCache>,
    reuse_previous: bool,
    durable: bool,
) -> Result<PackSummary, PackError> {
    let previous = reuse_previous
        .then(|| Previous::load(out, options))
        .flatten();
    let reuse: Vec<Option<usize>> = match &previous {
        Some(p) => files
            .iter()
            .zip(&stamps)
            .map(|(f, st)| p.reusable(f, st.as_ref()?))
            .collect(),
        None => std::vec![None; files.len()],
    };
    if let Some(p) = &previous
        && p.count == files.len()
        && reuse.iter().enumerate().all(|(i, r)| *r == Some(i))
        && p.source_date_epoch == options.source_date_epoch.unwrap_or(0)
        && p.modified_unchanged(options)
    {
        // Every file as it was: the archive at `out` is the one they make.
        return Ok(PackSummary {
            files: files.len() as u64,
            input_bytes: p.input_bytes,
            archive_bytes: p.archive_len,
            gzip_variants: p.gzip_variants,
            zstd_variants: p.zstd_variants,
            reused_files: files.len() as u64,
            written: false,
        });
    }

    let name = out
        .file_name()
        .ok_or(PackError::InvalidOption("output path has no file name"))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let layered = previous
        .as_ref()
        .filter(|p| layered_output(p, options))
        .map(|p| Layered {
            layout: LayoutBuilder::new(),
            delta: 0,
            dpos: 0,
            end: None,
            prev_names: if p.image.is_layered() {
                p.image
                    .layout()
                    .parts
                    .iter()
                    .map(|(n, _)| n.clone())
                    .collect()
            } else {
                // The plain archive becomes the first part (by a hard link).
                std::vec![format!("a-{}", hex(&p.header.index_sha256[..12]))]
            },
        });
    let parts = compose_blockfile::parts_dir(out);
    let tmp_dir = if layered.is_some() {
        fs::create_dir_all(&parts).map_err(io_at(&parts))?;
        parts.as_path()
    } else {
        parent
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(tmp_dir)
        .map_err(io_at(tmp_dir))?;

    let (summary, layered) = {
        let mut w = Out {
            file: BufWriter::new(tmp.as_file_mut()),
            pos: 0,
            path: out,
            layered,
        };
        if let Some(l) = &mut w.layered {
            l.delta = l.layout.part("delta", 0);
        }
        let summary = write_archive(&mut w, &files, options, cache, previous.as_ref(), &reuse)?;
        (summary, w.layered.take())
    };

    let file = tmp.as_file();
    let delta_len = match &layered {
        Some(l) => l.end.unwrap_or(l.dpos),
        None => summary.archive_bytes,
    };
    file.set_len(delta_len).map_err(io_at(out))?;
    if durable {
        file.sync_all().map_err(io_at(out))?;
    } else {
        use std::os::unix::io::AsRawFd;
        // SAFETY: an open file; the call only starts writeback.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_at(out))?;
    }
    // The stamps go first (and are removed while the archive is replaced): stamps never
    // describe an archive they were not written for.
    let stamps_path = stamps_file(out);
    if reuse_previous {
        let _ = fs::remove_file(&stamps_path);
        let _ = fs::remove_file(pending_stamps(out));
    }
    match layered {
        None => {
            tmp.persist(out).map_err(|e| PackError::Io {
                path: out.to_owned(),
                source: e.error,
            })?;
            // A layered image this archive replaces: its parts are the store's now.
            if parts.is_dir() {
                let _ = fs::remove_dir_all(&parts);
            }
        }
        Some(l) => {
            let prev = previous
                .as_ref()
                .expect("a layered output has a previous image");
            finish_layered(out, &parts, tmp, l, delta_len, prev, durable)?;
        }
    }
    let written = fs::metadata(out).map_err(io_at(out))?;
    // Make the rename durable; not every platform can open a directory, so this is best effort.
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    // Best effort: without stamps the next pack reads every file.
    if reuse_previous {
        let _ = write_stamps(
            &if durable {
                stamps_path
            } else {
                pending_stamps(out)
            },
            options,
            &written,
            &summary,
            &files,
            &stamps,
            started,
        );
    }
    let mut summary = summary;
    summary.written = true;
    Ok(summary)
}

/// The most parts a layered image may have before the next pack writes a plain archive.
pub const MAX_LAYERS: usize = 32;

/// Whether packing over `prev` writes a layered image: when the options ask for one at
/// the previous image's size, and the previous image's parts hold no more than twice
/// what it uses, in fewer than [`MAX_LAYERS`] parts (else a plain archive starts over,
/// and what the old parts held that no image uses any more is left to the store's gc).
fn layered_output(prev: &Previous, options: &PackOptions) -> bool {
    let Some(min) = options.layered_from else {
        return false;
    };
    let layout = prev.image.layout();
    prev.archive_len >= min
        && (!prev.image.is_layered()
            || (layout.parts.len() < MAX_LAYERS && layout.parts_len() <= 2 * layout.size))
}

/// Puts a layered output in place: the delta under its content's name, the previous
/// plain archive (if it was one) linked in as a part, the descriptor renamed over `out`,
/// and the parts no longer used removed from `<out>.parts/` (an image in the store keeps
/// its own links to them).
fn finish_layered(
    out: &Path,
    parts: &Path,
    delta: tempfile::NamedTempFile,
    l: Layered,
    delta_len: u64,
    prev: &Previous,
    durable: bool,
) -> Result<(), PackError> {
    let mut layout = l.layout;
    layout.set_part_len(l.delta, delta_len);
    let mut sha = Sha256::new();
    let mut f = delta.as_file();
    f.seek(SeekFrom::Start(0)).map_err(io_at(out))?;
    io::copy(&mut f.take(delta_len), &mut ShaSink(&mut sha)).map_err(io_at(out))?;
    let delta_name = format!("d-{}", hex(&sha.finalize()[..12]));
    let mut layout = layout.finish();
    for (name, _) in &mut layout.parts {
        if name == "delta" {
            *name = delta_name.clone();
        }
    }
    // A delta that no extent uses (nothing new was written) was dropped by `finish`.
    if layout.parts.iter().any(|(n, _)| *n == delta_name) {
        let at = parts.join(&delta_name);
        delta.persist(&at).map_err(|e| PackError::Io {
            path: at.clone(),
            source: e.error,
        })?;
    }
    if !prev.image.is_layered() && layout.parts.iter().any(|(n, _)| *n == l.prev_names[0]) {
        let at = parts.join(&l.prev_names[0]);
        if !at.exists() {
            fs::hard_link(out, &at).map_err(io_at(&at))?;
        }
    }
    let text = layout.encode();
    let tmp = parts.join(format!(".descriptor.{}.tmp", std::process::id()));
    fs::write(&tmp, &text).map_err(io_at(&tmp))?;
    if durable {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&tmp))?;
        if let Ok(d) = File::open(parts) {
            let _ = d.sync_all();
        }
    }
    fs::rename(&tmp, out).map_err(io_at(out))?;
    if let Ok(entries) = fs::read_dir(parts) {
        for e in entries.flatten() {
            let name = e.file_name();
            let keep = name
                .to_str()
                .is_some_and(|n| layout.parts.iter().any(|(p, _)| p == n));
            if !keep {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Where [`pack_incremental`] keeps the stamps of the archive at `out`
/// (`.<name>.stamps` next to it).
pub fn stamps_file(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{}.stamps", name.unwrap_or_default()))
}

const STAMPS_MAGIC: &str = "compose-assets-stamps v1";
/// A file modified this recently before it was packed is not trusted by its stamp.
const RACY: std::time::Duration = std::time::Duration::from_secs(2);

/// What identifies a file's contents without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

/// The settings the bytes of an archive depend on, besides the files.
fn settings_fingerprint(options: &PackOptions) -> String {
    format!(
        "{:016x} align={} compress={} min={} keys={} epoch={:?}",
        cache_fingerprint(options),
        options.align,
        options.compress,
        options.min_compress_size,
        options.allow_private_keys,
        options.source_date_epoch,
    )
}

/// The archive's own identity: which file the stamps were written for.
fn archive_identity(m: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{} {} {}", m.dev(), m.ino(), m.size())
}

fn write_stamps(
    path: &Path,
    options: &PackOptions,
    archive: &fs::Metadata,
    summary: &PackSummary,
    files: &[Source],
    stamps: &[Option<Stamp>],
    started: std::time::SystemTime,
) -> io::Result<()> {
    let racy_from = started
        .checked_sub(RACY)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    let mut text = format!(
        "{STAMPS_MAGIC}\n{}\n{}\n{} {} {} {}\n",
        settings_fingerprint(options),
        archive_identity(archive),
        summary.input_bytes,
        summary.gzip_variants,
        summary.zstd_variants,
        files.len()
    );
    for (f, st) in files.iter().zip(stamps) {
        let Some(path) = f.path.to_str().filter(|p| !p.contains('\n')) else {
            return Ok(());
        };
        match st {
            Some(s) if s.mtime_ns < racy_from => text.push_str(&format!(
                "{} {} {} {} {} {path}\n",
                s.dev, s.ino, s.size, s.mtime_ns, s.ctime_ns
            )),
            _ => text.push_str(&format!("- {path}\n")),
        }
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)
}

/// The previous archive at the output path, with its stamps.
struct Previous {
    /// The archive: a plain file, or a layered image.
    image: BlockFile,
    index: Vec<u8>,
    header: Header,
    /// Per entry: the file it came from and its stamp (`None`: not to be trusted).
    sources: Vec<(PathBuf, Option<Stamp>)>,
    by_key: std::collections::HashMap<String, usize>,
    count: usize,
    archive_len: u64,
    source_date_epoch: u64,
    input_bytes: u64,
    gzip_variants: u64,
    zstd_variants: u64,
}

impl Previous {
    fn load(out: &Path, options: &PackOptions) -> Option<Previous> {
        let text = fs::read_to_string(stamps_file(out)).ok()?;
        let mut lines = text.split('\n');
        if lines.next()? != STAMPS_MAGIC || lines.next()? != settings_fingerprint(options) {
            return None;
        }
        let meta = fs::metadata(out).ok()?;
        if lines.next()? != archive_identity(&meta) {
            return None;
        }
        let image = BlockFile::open(out).ok()?;
        let mut totals = lines.next()?.split(' ').map(|n| n.parse::<u64>().ok());
        let (input_bytes, gzip_variants, zstd_variants, count) = (
            totals.next()??,
            totals.next()??,
            totals.next()??,
            totals.next()?? as usize,
        );
        let mut head = [0u8; HEADER_LEN];
        image.read_exact_at(&mut head, 0).ok()?;
        let header = Header::parse(&head).ok()?;
        if header.archive_len != image.size() || header.entry_count != count as u64 {
            return None;
        }
        let mut index = std::vec![0u8; usize::try_from(header.index_len).ok()?];
        image.read_exact_at(&mut index, header.index_offset).ok()?;
        let ix = crate::format::Index::parse(&index, &header).ok()?;
        let mut sources = Vec::with_capacity(count);
        let mut by_key = std::collections::HashMap::with_capacity(count);
        for i in 0..count {
            let line = lines.next()?;
            let (stamp, path) = if let Some(path) = line.strip_prefix("- ") {
                (None, path)
            } else {
                let mut parts = line.splitn(6, ' ');
                let mut n = || parts.next();
                let stamp = Stamp {
                    dev: n()?.parse().ok()?,
                    ino: n()?.parse().ok()?,
                    size: n()?.parse().ok()?,
                    mtime_ns: n()?.parse().ok()?,
                    ctime_ns: n()?.parse().ok()?,
                };
                (Some(stamp), n()?)
            };
            sources.push((PathBuf::from(path), stamp));
            by_key.insert(ix.record(i)?.key.to_string(), i);
        }
        Some(Previous {
            archive_len: image.size(),
            image,
            index,
            header,
            sources,
            by_key,
            count,
            source_date_epoch: header.source_date_epoch,
            input_bytes,
            gzip_variants,
            zstd_variants,
        })
    }

    fn index(&self) -> crate::format::Index<'_> {
        crate::format::Index::view(&self.index, &self.header)
    }

    /// The previous entry `file` can be copied from: same key, same file, same stamp.
    fn reusable(&self, file: &Source, stamp: &Stamp) -> Option<usize> {
        let i = *self.by_key.get(&file.key)?;
        let (path, old) = &self.sources[i];
        (path == &file.path && old.as_ref() == Some(stamp)).then_some(i)
    }

    /// Whether every entry's recorded time is what packing now would record.
    fn modified_unchanged(&self, options: &PackOptions) -> bool {
        let ix = self.index();
        (0..self.count).all(|i| {
            let Some(r) = ix.record(i) else { return false };
            let now = match options.source_date_epoch {
                Some(t) => t,
                None => self.sources[i]
                    .1
                    .map_or(0, |s| (s.mtime_ns / 1_000_000_000).max(0) as u64),
            };
            r.modified == now
        })
    }
}

/// A file [`select`] chose: its key in the archive and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetFile {
    /// The `/`-separated path relative to the packed directory: the archive key (for a
    /// symbolic link, the link's own path).
    pub key: String,
    /// The regular file to read: the file itself, or where a link inside the tree leads
    /// (canonical, inside the tree).
    pub path: PathBuf,
}

type Source = AssetFile;

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

/// What a file type is, for messages.
fn describe(kind: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
    }
    if kind.is_symlink() {
        return "a symbolic link";
    }
    "not a regular file or directory"
}

/// Checks that a file name can be a URL path component and returns it as UTF-8.
fn check_name<'a>(path: &Path, name: &'a std::ffi::OsStr) -> Result<&'a str, PackError> {
    let name = name
        .to_str()
        .ok_or_else(|| PackError::NotUtf8(path.to_owned()))?;
    if name.chars().any(char::is_control) {
        return Err(PackError::BadName(
            path.to_owned(),
            "the file name contains a control character (such as a newline), which cannot be part of a URL path",
        ));
    }
    Ok(name)
}

/// Lists the files of `dir` that [`pack`] packs with `options`, sorted by key: the one
/// definition of "the files of an assets directory", used by the packer and by anything
/// that must hash exactly what is packed.
///
/// The directory is read as a tree of regular files and directories, checked with
/// `symlink_metadata` before anything is opened (a FIFO is never opened):
///
/// - a symbolic link whose target resolves inside `dir` is followed: a link to a file is
///   packed under the link's own path with the target's contents, a link to a directory
///   is walked as if the directory were there;
/// - a symbolic link that resolves outside `dir`, leads nowhere or into a loop is an
///   error naming the link and its text ([`PackError::Escapes`]); nothing behind it is read;
/// - a FIFO, a socket or a device is an error ([`PackError::NotAFile`]);
/// - a name that is not UTF-8 or holds a control character (a newline, a tab) is an error
///   ([`PackError::NotUtf8`], [`PackError::BadName`]).
///
/// Excluded paths are skipped before they are examined, so an `exclude` pattern also
/// removes an unpackable entry from consideration. `include` selects among the rest.
pub fn select(dir: &Path, options: &PackOptions) -> Result<Vec<AssetFile>, PackError> {
    let include = glob_set(&options.include)?;
    let exclude = glob_set(&options.exclude)?;
    let meta = fs::metadata(dir).map_err(io_at(dir))?;
    if !meta.is_dir() {
        return Err(PackError::Io {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let root = fs::canonicalize(dir).map_err(io_at(dir))?;
    let mut walk = Walk {
        root: &root,
        include: include.as_ref(),
        exclude: exclude.as_ref(),
        files: Vec::new(),
        active: Vec::new(),
    };
    walk.dir(dir, &root, "")?;
    let mut files = walk.files;
    files.sort_unstable_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    Ok(files)
}

/// The state of one [`select`] walk.
struct Walk<'a> {
    /// The tree's canonical root: links must resolve inside it.
    root: &'a Path,
    include: Option<&'a GlobSet>,
    exclude: Option<&'a GlobSet>,
    files: Vec<AssetFile>,
    /// Canonical directories being walked (to refuse a link back into one: a loop).
    active: Vec<PathBuf>,
}

impl Walk<'_> {
    /// Walks the directory shown at `shown` (the path to name in errors), whose canonical
    /// path is `real`, at key prefix `prefix` (empty or ending in `/`).
    fn dir(&mut self, shown: &Path, real: &Path, prefix: &str) -> Result<(), PackError> {
        self.active.push(real.to_owned());
        // The type from the directory listing itself where the file system gives it (no
        // `stat` per file: this walk runs for every build's key).
        let mut entries = Vec::new();
        for entry in fs::read_dir(real).map_err(io_at(shown))? {
            let entry = entry.map_err(io_at(shown))?;
            entries.push((entry.file_name(), entry.file_type().ok()));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, listed) in entries {
            let path = shown.join(&name);
            // Exclusion first: an excluded entry is not examined at all.
            let lossy_key = format!("{prefix}{}", name.to_string_lossy());
            if self.exclude.is_some_and(|set| set.is_match(&lossy_key)) {
                continue;
            }
            let name = check_name(&path, &name)?;
            let key = format!("{prefix}{name}");
            let entry_real = real.join(name);
            let kind = match listed {
                Some(kind) => kind,
                None => fs::symlink_metadata(&entry_real)
                    .map_err(io_at(&path))?
                    .file_type(),
            };
            if kind.is_dir() {
                self.dir(&path, &entry_real, &format!("{key}/"))?;
            } else if kind.is_file() {
                self.file(key, entry_real);
            } else if kind.is_symlink() {
                self.link(&path, &entry_real, key)?;
            } else {
                return Err(PackError::NotAFile(path, describe(kind)));
            }
        }
        self.active.pop();
        Ok(())
    }

    fn file(&mut self, key: String, path: PathBuf) {
        let included = match self.include {
            None => true,
            // The file, or a directory it is in, matches.
            Some(set) => {
                set.is_match(&key) || key.match_indices('/').any(|(i, _)| set.is_match(&key[..i]))
            }
        };
        if included {
            self.files.push(AssetFile { key, path });
        }
    }

    /// A symbolic link at `real` (shown as `shown`): followed only if it resolves inside
    /// the tree. Resolving reads links, never the contents of what they point to.
    fn link(&mut self, shown: &Path, real: &Path, key: String) -> Result<(), PackError> {
        let text = fs::read_link(real).map_err(io_at(shown))?;
        let escapes = |why| PackError::Escapes {
            path: shown.to_owned(),
            target: text.clone(),
            why,
        };
        let target = match fs::canonicalize(real) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(escapes("which loops (ELOOP)"));
            }
            Err(_) => return Err(escapes("which leads nowhere")),
        };
        if !target.starts_with(self.root) {
            return Err(escapes("which leads outside the assets directory"));
        }
        // Canonical: no link left in the path, so this is the target's own type.
        let kind = fs::symlink_metadata(&target)
            .map_err(io_at(shown))?
            .file_type();
        if kind.is_dir() {
            if self.active.contains(&target) {
                return Err(escapes("a directory it is itself inside (a loop)"));
            }
            self.dir(shown, &target, &format!("{key}/"))
        } else if kind.is_file() {
            self.file(key, target);
            Ok(())
        } else {
            Err(PackError::NotAFile(shown.to_owned(), describe(kind)))
        }
    }
}

/// Opens a file [`select`] chose, for reading: without following a link in its last
/// component and without blocking (should it have been replaced by a FIFO since), and
/// only if it is still a regular file.
fn open_regular(path: &Path) -> Result<File, PackError> {
    let mut opts = fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(io_at(path))?;
    let kind = file.metadata().map_err(io_at(path))?.file_type();
    if !kind.is_file() {
        return Err(PackError::NotAFile(path.to_owned(), describe(kind)));
    }
    Ok(file)
}

/// The output: a buffered file and the position in it.
///
/// When `layered` is set the output is a layered image: `file` is its new part (the
/// *delta*), what is written goes there, and [`Out::copy_from`] references the previous
/// image's bytes instead of copying them. `pos` is always the position in the image.
struct Out<'a, W: Write + Seek> {
    file: BufWriter<W>,
    pos: u64,
    path: &'a Path,
    layered: Option<Layered>,
}

/// The layout of a layered output being written.
struct Layered {
    layout: LayoutBuilder,
    /// The delta's index in `layout`.
    delta: usize,
    /// The position in the delta.
    dpos: u64,
    /// The delta's length once the header rewind happened (the header overwrites its
    /// first bytes, adding nothing).
    end: Option<u64>,
    /// The names the previous image's parts have in the new layout.
    prev_names: Vec<String>,
}

impl<W: Write + Seek> Write for Out<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        if let Some(l) = &mut self.layered
            && l.end.is_none()
        {
            l.layout.push(l.delta, l.dpos, n as u64);
            l.dpos += n as u64;
        }
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
    ///
    /// In a layered output, moving back to 0 is for the header (at the delta's start,
    /// since the output begins with it); any other `pos` must be inside what was last
    /// written to the delta, which is then cut back.
    fn rewind(&mut self, pos: u64) -> Result<(), PackError> {
        let at = match &mut self.layered {
            None => pos,
            Some(l) if pos == 0 => {
                l.end = Some(l.dpos);
                0
            }
            Some(l) => {
                let back = self.pos - pos;
                l.layout.truncate(pos);
                l.dpos -= back;
                l.dpos
            }
        };
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(io_at(self.path))?;
        self.pos = pos;
        Ok(())
    }
}

impl Out<'_, &mut File> {
    /// Appends `len` bytes of the previous image `src` from `offset`: a reference to
    /// them in a layered output, else a copy, in the kernel where it can
    /// (`copy_file_range`), else through a buffer.
    fn copy_from(&mut self, src: &BlockFile, offset: u64, len: u64) -> Result<(), PackError> {
        if let Some(l) = &mut self.layered {
            let pieces = src.layout().pieces(offset, len);
            if pieces.iter().map(|p| p.2).sum::<u64>() != len {
                return Err(self.short_previous());
            }
            for (part, off, n) in pieces {
                let i = l
                    .layout
                    .part(&l.prev_names[part], src.layout().parts[part].1);
                l.layout.push(i, off, n);
            }
            self.pos += len;
            return Ok(());
        }
        self.file.flush().map_err(io_at(self.path))?;
        let dst: &mut File = self.file.get_mut();
        src.copy_range_to(offset, len, dst).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.short_previous()
            } else {
                io_at(self.path)(e)
            }
        })?;
        self.pos += len;
        Ok(())
    }

    fn short_previous(&self) -> PackError {
        PackError::Io {
            path: self.path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the previous archive is shorter than its index says",
            ),
        }
    }
}

/// A reader that hashes and counts what passes through, and optionally checks UTF-8.
struct Tee<R> {
    inner: R,
    sha: Sha256,
    len: u64,
    utf8: Utf8Check,
    keys: Option<crate::keyscan::KeyScan>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.utf8.feed(&buf[..n]);
        if let Some(k) = &mut self.keys {
            k.feed(&buf[..n]);
        }
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
            keys: None,
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

/// Compresses `source` with `codec` into `to`.
fn compress_into(
    to: &mut File,
    source: &Source,
    size: u64,
    sha256: &[u8; 32],
    codec: Codec,
    options: &PackOptions,
) -> Result<(), PackError> {
    let path = source.path.as_path();
    let mut tee = Tee::new(open_regular(path)?);
    let out = BufWriter::new(to);
    match codec {
        Codec::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(out, flate2::Compression::new(options.gzip_level));
            io::copy(&mut tee, &mut enc).map_err(io_at(path))?;
            check_unchanged(&tee, size, sha256, path)?;
            let mut out = enc.finish().map_err(io_at(path))?;
            out.flush().map_err(io_at(path))?;
        }
        Codec::Zstd => {
            let mut enc =
                zstd::stream::write::Encoder::new(out, options.zstd_level).map_err(io_at(path))?;
            enc.include_checksum(false).map_err(io_at(path))?;
            enc.include_contentsize(true).map_err(io_at(path))?;
            enc.set_pledged_src_size(Some(size)).map_err(io_at(path))?;
            io::copy(&mut tee, &mut enc).map_err(io_at(path))?;
            check_unchanged(&tee, size, sha256, path)?;
            let mut out = enc.finish().map_err(io_at(path))?;
            out.flush().map_err(io_at(path))?;
        }
    }
    Ok(())
}

/// Writes the variants of `source` (from `cache`, or compressed now and then cached) at
/// the next aligned positions; keeps each only if it is smaller than the original.
fn write_variants<W: Write + Seek>(
    w: &mut Out<'_, W>,
    source: &Source,
    size: u64,
    sha256: &[u8; 32],
    options: &PackOptions,
    cache: Option<&PackCache>,
) -> Result<Variants, PackError> {
    let fingerprint = cache_fingerprint(options);
    if let Some(cache) = cache
        && let Some(mut entry) = cache.open(sha256, fingerprint)
    {
        let before = w.pos;
        match copy_variants(w, &mut entry, size, sha256, fingerprint, options) {
            Ok(Some(spans)) => {
                cache.hits.set(cache.hits.get() + 1);
                return Ok(spans);
            }
            // A damaged entry: written over below.
            Ok(None) => w.rewind(before)?,
            Err(e) => return Err(e),
        }
    }
    // Compress into a fresh entry (in the cache, or a temporary file), then copy it.
    let tmp_dir = match cache {
        Some(c) => {
            let d = c.shard(sha256);
            fs::create_dir_all(&d).map_err(io_at(&d))?;
            d
        }
        None => w
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".pack-")
        .suffix(".tmp")
        .tempfile_in(&tmp_dir)
        .map_err(io_at(&tmp_dir))?;
    let path = tmp.path().to_path_buf();
    {
        let f = tmp.as_file_mut();
        f.write_all(&[0; CACHE_HEADER_LEN]).map_err(io_at(&path))?;
        compress_into(f, source, size, sha256, Codec::Gzip, options)?;
        let gzip_len = f.stream_position().map_err(io_at(&path))? - CACHE_HEADER_LEN as u64;
        compress_into(f, source, size, sha256, Codec::Zstd, options)?;
        let zstd_len =
            f.stream_position().map_err(io_at(&path))? - CACHE_HEADER_LEN as u64 - gzip_len;
        // The body's hash, so that a damaged entry is never served.
        f.seek(SeekFrom::Start(CACHE_HEADER_LEN as u64))
            .map_err(io_at(&path))?;
        let mut sha = Sha256::new();
        io::copy(&mut f.take(gzip_len + zstd_len), &mut ShaSink(&mut sha)).map_err(io_at(&path))?;
        let header = CacheHeader {
            content: *sha256,
            fingerprint,
            gzip_len,
            zstd_len,
            body_sha256: sha.finalize().into(),
        };
        f.seek(SeekFrom::Start(0)).map_err(io_at(&path))?;
        f.write_all(&header.encode()).map_err(io_at(&path))?;
    }
    let mut file = match cache {
        Some(c) => {
            let dest = c.entry_path(sha256, fingerprint);
            c.misses.set(c.misses.get() + 1);
            // No fsync: an entry that a crash left short or empty fails its own hash
            // check and is compressed again, never served.
            tmp.persist(&dest).map_err(|e| PackError::Io {
                path: dest.clone(),
                source: e.error,
            })?;
            File::open(&dest).map_err(io_at(&dest))?
        }
        None => tmp.into_file(),
    };
    file.seek(SeekFrom::Start(0)).map_err(io_at(&path))?;
    match copy_variants(w, &mut file, size, sha256, fingerprint, options)? {
        Some(spans) => Ok(spans),
        None => Err(PackError::Io {
            path,
            source: io::Error::other("the compressed variants changed while being packed"),
        }),
    }
}

/// Feeds what is written to a hasher.
struct ShaSink<'a>(&'a mut Sha256);
impl Write for ShaSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies the variants of a cache entry (positioned at its start) into the archive,
/// checking its header and the body's hash; `None` if the entry is damaged (the output
/// is then past garbage: the caller rewinds).
fn copy_variants<W: Write + Seek>(
    w: &mut Out<'_, W>,
    entry: &mut File,
    size: u64,
    sha256: &[u8; 32],
    fingerprint: u64,
    options: &PackOptions,
) -> Result<Option<Variants>, PackError> {
    let mut head = [0u8; CACHE_HEADER_LEN];
    if entry.read_exact(&mut head).is_err() {
        return Ok(None);
    }
    let Some(header) =
        CacheHeader::parse(&head).filter(|h| &h.content == sha256 && h.fingerprint == fingerprint)
    else {
        return Ok(None);
    };
    let mut sha = Sha256::new();
    let mut spans = [None, None];
    for (slot, len) in spans.iter_mut().zip([header.gzip_len, header.zstd_len]) {
        let before = w.pos;
        w.pad_to(options.align as u64)?;
        let start = w.pos;
        let mut body = HashRead {
            inner: (&mut *entry).take(len),
            sha: &mut sha,
        };
        let copied = io::copy(&mut body, w).map_err(w.err())?;
        if copied != len {
            return Ok(None);
        }
        if len < size {
            *slot = Some(Span { offset: start, len });
        } else {
            w.rewind(before)?;
        }
    }
    let digest: [u8; 32] = sha.finalize().into();
    if digest != header.body_sha256 {
        return Ok(None);
    }
    Ok(Some((spans[0], spans[1])))
}

/// Where a value's gzip and zstd variants went (`None`: not stored, not smaller).
type Variants = (Option<Span>, Option<Span>);

/// Hashes what is read through it.
struct HashRead<'a, R> {
    inner: R,
    sha: &'a mut Sha256,
}
impl<R: Read> Read for HashRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
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
    modified: u64,
}

/// A cache of compressed variants, by content: a directory (the store's
/// `.cache/pack-v1/`) of one file per file contents and packer settings,
/// `<first two hex digits>/<sha256 of the contents>-<settings fingerprint>`.
///
/// An entry is a 96-byte header (magic, the contents' SHA-256, the fingerprint, the two
/// variants' lengths and the SHA-256 of both) followed by the gzip and the zstd variant.
/// It is written to a temporary file in its directory and renamed into place, so a crash
/// leaves a whole entry or none; a damaged entry (wrong magic, hash or length) is never
/// used, but compressed again and replaced. The fingerprint covers the compression levels,
/// this crate's version and libzstd's, so no setting reuses another's output.
/// Removing any entry, or the whole directory, at any time is safe.
#[derive(Debug)]
pub struct PackCache {
    dir: PathBuf,
    hits: std::cell::Cell<u64>,
    misses: std::cell::Cell<u64>,
}

/// The cache directory's name under a store's `.cache/`.
pub const PACK_CACHE_DIR: &str = "pack-v1";
const CACHE_MAGIC: [u8; 8] = *b"CPKCACH1";
const CACHE_HEADER_LEN: usize = 96;

impl PackCache {
    /// The cache in `dir` (created when first written).
    pub fn new(dir: &Path) -> PackCache {
        PackCache {
            dir: dir.to_owned(),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// Files whose variants came from the cache, and files compressed (and cached), so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    fn shard(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{:02x}", sha256[0]))
    }

    fn entry_path(&self, sha256: &[u8; 32], fingerprint: u64) -> PathBuf {
        self.shard(sha256)
            .join(format!("{}-{fingerprint:016x}", hex(sha256)))
    }

    fn open(&self, sha256: &[u8; 32], fingerprint: u64) -> Option<File> {
        let f = File::open(self.entry_path(sha256, fingerprint)).ok()?;
        f.metadata().ok().filter(|m| m.is_file())?;
        Some(f)
    }

    /// The SHA-256 of the contents each entry is for, with the entry's path.
    pub fn entries(&self) -> io::Result<Vec<([u8; 32], PathBuf)>> {
        let mut out = Vec::new();
        let shards = match fs::read_dir(&self.dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for shard in shards {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for e in fs::read_dir(&shard)? {
                let path = e?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let sha = name.get(..64).and_then(unhex);
                match sha {
                    Some(sha) => out.push((sha, path)),
                    // A temporary file of an interrupted pack, or a stranger.
                    None => out.push(([0; 32], path)),
                }
            }
        }
        Ok(out)
    }
}

/// The SHA-256 of every value of every archive inside the file `path` (a block image, or
/// an image that embeds archives): what a [`PackCache`] entry may be kept for. An archive
/// is recognised by its header and its index's checksum, so other bytes that happen to
/// spell the magic are skipped.
pub fn archive_digests(path: &Path) -> io::Result<Vec<[u8; 32]>> {
    use std::os::unix::fs::FileExt;
    if compose_blockfile::is_layered(path)? {
        // A layered image is one archive, from its first byte.
        let image = BlockFile::open(path)?;
        let mut head = [0u8; HEADER_LEN];
        image.read_exact_at(&mut head, 0)?;
        let bad = |_| io::Error::new(io::ErrorKind::InvalidData, "not an archive");
        let h = Header::parse(&head).map_err(bad)?;
        let mut index = std::vec![0u8; usize::try_from(h.index_len).map_err(|_| bad(crate::ArchiveError::Truncated))?];
        image.read_exact_at(&mut index, h.index_offset)?;
        let ix = crate::format::Index::parse(&index, &h).map_err(bad)?;
        return Ok((0..ix.len())
            .filter_map(|i| ix.record(i).map(|r| r.sha256))
            .collect());
    }
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    const CHUNK: usize = 4 << 20;
    let magic = crate::format::MAGIC;
    let mut buf = std::vec![0u8; CHUNK + magic.len()];
    let mut at = 0u64;
    while at < len {
        let want = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..want], at)?;
        for i in memchr::memmem::find_iter(&buf[..want], &magic) {
            let start = at + i as u64;
            let mut head = [0u8; HEADER_LEN];
            if file.read_exact_at(&mut head, start).is_err() {
                continue;
            }
            let Ok(h) = Header::parse(&head) else {
                continue;
            };
            let Some(index_at) = start.checked_add(h.index_offset) else {
                continue;
            };
            if index_at.saturating_add(h.index_len) > len {
                continue;
            }
            let mut index = std::vec![0u8; h.index_len as usize];
            if file.read_exact_at(&mut index, index_at).is_err() {
                continue;
            }
            let Ok(ix) = crate::format::Index::parse(&index, &h) else {
                continue;
            };
            out.extend((0..ix.len()).filter_map(|i| ix.record(i).map(|r| r.sha256)));
        }
        if at + want as u64 >= len {
            break;
        }
        // Overlap by the magic's length less one, so a split magic is found.
        at += (want - (magic.len() - 1)) as u64;
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What a cache entry's variants depend on besides the contents.
fn cache_fingerprint(options: &PackOptions) -> u64 {
    let mut sha = Sha256::new();
    sha.update(
        format!(
            "compose-assets {} zstd {} gzip {} zstd-level {} flate2-rust-backend",
            env!("CARGO_PKG_VERSION"),
            zstd::zstd_safe::version_number(),
            options.gzip_level,
            options.zstd_level
        )
        .as_bytes(),
    );
    let d = sha.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

struct CacheHeader {
    content: [u8; 32],
    fingerprint: u64,
    gzip_len: u64,
    zstd_len: u64,
    body_sha256: [u8; 32],
}

impl CacheHeader {
    fn encode(&self) -> [u8; CACHE_HEADER_LEN] {
        let mut b = [0u8; CACHE_HEADER_LEN];
        b[..8].copy_from_slice(&CACHE_MAGIC);
        b[8..40].copy_from_slice(&self.content);
        b[40..48].copy_from_slice(&self.fingerprint.to_le_bytes());
        b[48..56].copy_from_slice(&self.gzip_len.to_le_bytes());
        b[56..64].copy_from_slice(&self.zstd_len.to_le_bytes());
        b[64..96].copy_from_slice(&self.body_sha256);
        b
    }

    fn parse(b: &[u8; CACHE_HEADER_LEN]) -> Option<CacheHeader> {
        if b[..8] != CACHE_MAGIC {
            return None;
        }
        let u64_at = |at: usize| Some(u64::from_le_bytes(b[at..at + 8].try_into().ok()?));
        Some(CacheHeader {
            content: b[8..40].try_into().ok()?,
            fingerprint: u64_at(40)?,
            gzip_len: u64_at(48)?,
            zstd_len: u64_at(56)?,
            body_sha256: b[64..96].try_into().ok()?,
        })
    }
}

fn write_archive(
    w: &mut Out<'_, &mut File>,
    files: &[Source],
    options: &PackOptions,
    cache: Option<&PackCache>,
    previous: Option<&Previous>,
    reuse: &[Option<usize>],
) -> Result<PackSummary, PackError> {
    let align = options.align as u64;
    let mut summary = PackSummary::default();
    // Room for the header, written last.
    w.write_all(&[0; HEADER_LEN]).map_err(w.err())?;

    let mut pending = Vec::with_capacity(files.len());
    // Entries copied from the previous archive, not yet copied: (old start, new start, len).
    let mut run: Option<(u64, u64, u64)> = None;
    for (source, reuse) in files.iter().zip(reuse) {
        if let (Some(prev), Some(i)) = (previous, *reuse)
            && let Some(r) = prev.index().record(i)
        {
            let old_start = r.data.offset;
            let old_end = [Some(r.data), r.gzip, r.zstd]
                .into_iter()
                .flatten()
                .map(|s| s.offset + s.len)
                .max()
                .unwrap_or(old_start);
            let here = match run {
                Some((_, new, len)) => new + len,
                None => w.pos,
            };
            let new_start = align_up(here, align).ok_or(PackError::TooLarge)?;
            match &mut run {
                // Laid out alike in both: one copy.
                Some((old, new, len)) if old_start.checked_sub(*old) == Some(new_start - *new) => {
                    *len = old_end - *old;
                }
                _ => {
                    if let Some((old, _, len)) = run.take() {
                        w.copy_from(&prev.image, old, len)?;
                    }
                    w.pad_to(align)?;
                    run = Some((old_start, w.pos, old_end - old_start));
                }
            }
            let moved = |s: Span| Span {
                offset: s.offset - old_start + new_start,
                len: s.len,
            };
            let modified = match options.source_date_epoch {
                Some(t) => t,
                None => prev.sources[i]
                    .1
                    .map_or(0, |s| (s.mtime_ns / 1_000_000_000).max(0) as u64),
            };
            summary.files += 1;
            summary.input_bytes += r.data.len;
            summary.gzip_variants += r.gzip.is_some() as u64;
            summary.zstd_variants += r.zstd.is_some() as u64;
            summary.reused_files += 1;
            pending.push(Pending {
                content_type: r.content_type.to_string(),
                data: moved(r.data),
                gzip: r.gzip.map(moved),
                zstd: r.zstd.map(moved),
                sha256: r.sha256,
                modified,
            });
            continue;
        }
        if let (Some(prev), Some((old, _, len))) = (previous, run.take()) {
            w.copy_from(&prev.image, old, len)?;
        }
        w.pad_to(align)?;
        let start = w.pos;
        let path = source.path.as_path();
        let file = open_regular(path)?;
        // The file's time: SOURCE_DATE_EPOCH when given, else its mtime (0 if before 1970).
        let modified = match options.source_date_epoch {
            Some(t) => t,
            None => file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        };
        let mut tee = Tee::new(file);
        if !options.allow_private_keys {
            tee.keys = Some(crate::keyscan::KeyScan::new());
        }
        io::copy(&mut tee, w).map_err(io_at(path))?;
        if let Some(kind) = tee.keys.as_mut().and_then(|k| k.finish()) {
            return Err(PackError::PrivateKey {
                key: source.key.clone(),
                kind,
            });
        }
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
            (gzip, zstd) = write_variants(w, source, size, &sha256, options, cache)?;
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
            modified,
        });
    }

    if let (Some(prev), Some((old, _, len))) = (previous, run.take()) {
        w.copy_from(&prev.image, old, len)?;
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
        let record = Record::encode(*key, *ty, p.data, p.gzip, p.zstd, &p.sha256, p.modified);
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
        version: crate::format::VERSION,
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
    use std::vec;

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

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        fs::create_dir_all(t.join("docs/deep")).unwrap();
        fs::write(t.join("index.html"), "<p>home</p>").unwrap();
        fs::write(t.join("docs/a.html"), "<p>a</p>").unwrap();
        fs::write(t.join("docs/deep/b.txt"), "b").unwrap();
        fs::write(d.path().join("outside.txt"), "SECRET-OUTSIDE").unwrap();
        d
    }

    fn keys(files: &[AssetFile]) -> Vec<&str> {
        files.iter().map(|f| f.key.as_str()).collect()
    }

    fn link(target: impl AsRef<Path>, at: impl AsRef<Path>) {
        std::os::unix::fs::symlink(target, at).unwrap();
    }

    #[test]
    fn links_inside_the_tree_are_followed() {
        let d = tree();
        let t = d.path().join("t");
        link("index.html", t.join("home.html"));
        link("docs/deep", t.join("alias"));
        // A relative link that climbs out and back in is still inside.
        link("../t/docs/a.html", t.join("again.html"));
        let files = select(&t, &PackOptions::default()).unwrap();
        assert_eq!(
            keys(&files),
            [
                "again.html",
                "alias/b.txt",
                "docs/a.html",
                "docs/deep/b.txt",
                "home.html",
                "index.html"
            ]
        );
        let home = files.iter().find(|f| f.key == "home.html").unwrap();
        assert_eq!(home.path, fs::canonicalize(t.join("index.html")).unwrap());
        // The tree given through a link of its own is the same tree.
        link(&t, d.path().join("via"));
        assert_eq!(
            select(&d.path().join("via"), &PackOptions::default()).unwrap(),
            files
        );
        let out = d.path().join("a.kv");
        let summary = pack(&t, &PackOptions::default(), &out).unwrap();
        assert_eq!(summary.files, 6);
    }

    #[test]
    fn links_out_of_the_tree_are_refused_and_not_read() {
        for (name, target) in [
            ("passwd", PathBuf::new()),
            ("etc", PathBuf::from("/etc")),
            ("dangling", PathBuf::from("/nonexistent/compose-test")),
        ] {
            let d = tree();
            let t = d.path().join("t");
            let target = if name == "passwd" {
                d.path().join("outside.txt")
            } else {
                target
            };
            link(&target, t.join("docs").join(name));
            let err = select(&t, &PackOptions::default()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, PackError::Escapes { .. }), "{msg}");
            assert!(msg.contains(&format!("docs/{name}")), "{msg}");
            assert!(msg.contains(&target.display().to_string()), "{msg}");
            let out = d.path().join("a.kv");
            assert!(pack(&t, &PackOptions::default(), &out).is_err());
            assert!(!out.exists(), "nothing half-written");
            assert_eq!(
                fs::read_dir(d.path()).unwrap().count(),
                2,
                "no temporary file left"
            );
        }
        // A relative link that climbs out.
        let d = tree();
        let t = d.path().join("t");
        link("../../outside.txt", t.join("docs/up.txt"));
        assert!(matches!(
            select(&t, &PackOptions::default()),
            Err(PackError::Escapes { .. })
        ));
        // An excluded link is not examined.
        let opts = PackOptions {
            exclude: vec!["up.txt".into()],
            ..Default::default()
        };
        assert_eq!(select(&t, &opts).unwrap().len(), 3);
    }

    #[test]
    fn link_loops_are_refused() {
        let d = tree();
        let t = d.path().join("t");
        link("..", t.join("docs/deep/parent"));
        let err = select(&t, &PackOptions::default()).unwrap_err();
        assert!(err.to_string().contains("loop"), "{err}");
        let d = tree();
        let t = d.path().join("t");
        link("self", t.join("self"));
        let err = select(&t, &PackOptions::default()).unwrap_err();
        assert!(matches!(err, PackError::Escapes { .. }), "{err}");
    }

    #[test]
    fn fifos_sockets_and_odd_names_are_refused_without_blocking() {
        let d = tree();
        let t = d.path().join("t");
        let fifo = t.join("docs/pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = select(&t, &PackOptions::default()).unwrap_err();
        assert!(matches!(err, PackError::NotAFile(..)), "{err}");
        assert!(
            err.to_string().contains("docs/pipe") && err.to_string().contains("FIFO"),
            "{err}"
        );
        // A link to it, inside the tree, is refused the same way.
        fs::remove_file(&fifo).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let opts = PackOptions {
            exclude: vec!["docs/pipe".into()],
            ..Default::default()
        };
        assert_eq!(
            select(&t, &opts).unwrap().len(),
            3,
            "an excluded FIFO is skipped"
        );
        link("docs/pipe", t.join("p"));
        let err = select(&t, &opts).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        fs::remove_file(t.join("p")).unwrap();

        let sock = t.join("docs/sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = select(&t, &opts).unwrap_err();
        assert!(err.to_string().contains("socket"), "{err}");
        fs::remove_file(&sock).unwrap();

        fs::write(t.join("docs/two\nlines.html"), "x").unwrap();
        let err = select(&t, &opts).unwrap_err();
        assert!(matches!(err, PackError::BadName(..)), "{err}");
        assert!(err.to_string().contains("two\\nlines"), "{err}");
        fs::remove_file(t.join("docs/two\nlines.html")).unwrap();

        use std::os::unix::ffi::OsStrExt;
        let bad = t.join(std::ffi::OsStr::from_bytes(b"caf\xe9.html"));
        fs::write(&bad, "x").unwrap();
        let err = select(&t, &opts).unwrap_err();
        assert!(matches!(err, PackError::NotUtf8(_)), "{err}");
        fs::remove_file(&bad).unwrap();
        assert_eq!(select(&t, &opts).unwrap().len(), 3);
    }

    #[test]
    fn select_is_what_pack_packs() {
        let d = tree();
        let t = d.path().join("t");
        let opts = PackOptions {
            include: vec!["docs".into(), "*.html".into()],
            exclude: vec!["deep".into()],
            ..Default::default()
        };
        let files = select(&t, &opts).unwrap();
        assert_eq!(keys(&files), ["docs/a.html", "index.html"]);
        let summary = pack(&t, &opts, &d.path().join("a.kv")).unwrap();
        assert_eq!(summary.files, 2);
    }

    #[test]
    fn the_cache_gives_the_same_archive_and_survives_damage() {
        let d = tree();
        let t = d.path().join("t");
        let page = "<p>a page that compresses well</p>\n".repeat(200);
        fs::write(t.join("big.html"), &page).unwrap();
        fs::write(t.join("docs/same.html"), &page).unwrap();
        fs::write(t.join("other.css"), "p { color: red }\n".repeat(100)).unwrap();
        let opts = PackOptions::default();
        let plain = d.path().join("plain.kv");
        pack(&t, &opts, &plain).unwrap();
        let cache = PackCache::new(&d.path().join("cache"));
        let cached = d.path().join("cached.kv");
        pack_cached(&t, &opts, &cached, Some(&cache)).unwrap();
        assert_eq!(fs::read(&plain).unwrap(), fs::read(&cached).unwrap());
        // Two files have the same contents: one entry, hit once already.
        assert_eq!(cache.stats(), (1, 2));
        assert_eq!(cache.entries().unwrap().len(), 2);
        let again = PackCache::new(&d.path().join("cache"));
        pack_cached(&t, &opts, &cached, Some(&again)).unwrap();
        assert_eq!(
            again.stats(),
            (3, 0),
            "an unchanged tree compresses nothing"
        );
        assert_eq!(fs::read(&plain).unwrap(), fs::read(&cached).unwrap());
        // Other levels never reuse these entries.
        let faster = PackOptions {
            zstd_level: 1,
            ..PackOptions::default()
        };
        let c3 = PackCache::new(&d.path().join("cache"));
        pack_cached(&t, &faster, &cached, Some(&c3)).unwrap();
        assert_eq!(c3.stats(), (1, 2));
        // A damaged entry (a flipped byte, a truncation, garbage) is not served.
        for (i, (_, path)) in cache.entries().unwrap().into_iter().enumerate() {
            let mut bytes = fs::read(&path).unwrap();
            match i % 3 {
                0 => *bytes.last_mut().unwrap() ^= 1,
                1 => bytes.truncate(bytes.len() / 2),
                _ => bytes = b"garbage".to_vec(),
            }
            fs::write(&path, bytes).unwrap();
        }
        let c4 = PackCache::new(&d.path().join("cache"));
        pack_cached(&t, &opts, &cached, Some(&c4)).unwrap();
        assert_eq!(fs::read(&plain).unwrap(), fs::read(&cached).unwrap());
        // One changed file: only it is compressed.
        fs::write(t.join("big.html"), page.replace("page", "leaf")).unwrap();
        pack(&t, &opts, &plain).unwrap();
        let c5 = PackCache::new(&d.path().join("cache"));
        pack_cached(&t, &opts, &cached, Some(&c5)).unwrap();
        assert_eq!(c5.stats(), (2, 1));
        assert_eq!(fs::read(&plain).unwrap(), fs::read(&cached).unwrap());
        // No temporary file is left anywhere.
        for (_, p) in c5.entries().unwrap() {
            assert!(!p.to_string_lossy().ends_with(".tmp"), "{}", p.display());
        }
    }

    #[test]
    fn the_previous_archive_is_reused_and_the_result_is_the_same_bytes() {
        use std::os::unix::fs::MetadataExt;
        let d = tree();
        let t = d.path().join("t");
        let page = "<p>a page that compresses well</p>\n".repeat(200);
        fs::write(t.join("big.html"), &page).unwrap();
        fs::write(t.join("docs/z.css"), "p { color: red }\n".repeat(100)).unwrap();
        fs::write(
            t.join("raw.bin"),
            (0..5000u32)
                .map(|i| (i * 7919 % 251) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        // Files last modified long ago: not racily clean.
        let age = |p: &Path| {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))
                .unwrap()
        };
        for f in [
            "index.html",
            "docs/a.html",
            "docs/deep/b.txt",
            "big.html",
            "docs/z.css",
            "raw.bin",
        ] {
            age(&t.join(f));
        }
        let opts = PackOptions::default();
        let out = d.path().join("out/site.kv");
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let first = pack_incremental(&t, &opts, &out, None).unwrap();
        assert!(first.written);
        assert_eq!(first.reused_files, 0);
        let inode = fs::metadata(&out).unwrap().ino();
        // Nothing changed: the archive is kept as it is.
        let again = pack_incremental(&t, &opts, &out, None).unwrap();
        assert_eq!((again.written, again.reused_files), (false, 6));
        assert_eq!(fs::metadata(&out).unwrap().ino(), inode);
        assert_eq!(again.archive_bytes, first.archive_bytes);
        // One file changed (and grew): only it is read; the rest is copied, and the
        // archive is what a fresh pack makes, byte for byte.
        fs::write(t.join("docs/a.html"), "<p>a, longer now</p>".repeat(50)).unwrap();
        age(&t.join("docs/a.html"));
        let changed = pack_incremental(&t, &opts, &out, None).unwrap();
        assert_eq!((changed.written, changed.reused_files), (true, 5));
        let fresh = d.path().join("fresh.kv");
        pack(&t, &opts, &fresh).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
        // A file added and one removed.
        fs::write(t.join("docs/new.txt"), "new").unwrap();
        fs::remove_file(t.join("big.html")).unwrap();
        let moved = pack_incremental(&t, &opts, &out, None).unwrap();
        assert_eq!((moved.written, moved.reused_files), (true, 5));
        pack(&t, &opts, &fresh).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
        // A file rewritten with its old size and time: its change time tells.
        let b = t.join("docs/deep/b.txt");
        fs::write(&b, "c").unwrap();
        age(&b);
        let same_size = pack_incremental(&t, &opts, &out, None).unwrap();
        // (new.txt was written just before the last pack: racily clean, read again.)
        assert_eq!(same_size.reused_files, 4);
        pack(&t, &opts, &fresh).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
        // Other settings, a damaged archive or stamps: a full pack, still right.
        let other = PackOptions {
            compress: false,
            ..PackOptions::default()
        };
        assert_eq!(
            pack_incremental(&t, &other, &out, None)
                .unwrap()
                .reused_files,
            0
        );
        pack_incremental(&t, &opts, &out, None).unwrap();
        let stamps = stamps_file(&out);
        fs::write(
            &stamps,
            fs::read_to_string(&stamps).unwrap().replace("v1", "v0"),
        )
        .unwrap();
        assert_eq!(
            pack_incremental(&t, &opts, &out, None)
                .unwrap()
                .reused_files,
            0
        );
        let mut bytes = fs::read(&out).unwrap();
        let n = bytes.len();
        bytes[n - 600] ^= 0xff; // in the index
        // In place: the same file, as its stamps say.
        fs::write(&out, &bytes).unwrap();
        let repaired = pack_incremental(&t, &opts, &out, None).unwrap();
        assert_eq!(
            repaired.reused_files, 0,
            "stamps of another archive were trusted"
        );
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
        // Deferred durability: the stamps are trusted only once committed.
        age(&t.join("docs/new.txt"));
        let deferred = d.path().join("deferred.kv");
        pack_incremental_deferred(&t, &opts, &deferred, None).unwrap();
        let s = pack_incremental_deferred(&t, &opts, &deferred, None).unwrap();
        assert_eq!(
            (s.written, s.reused_files),
            (true, 0),
            "uncommitted stamps were trusted"
        );
        commit_stamps(&deferred).unwrap();
        let s = pack_incremental_deferred(&t, &opts, &deferred, None).unwrap();
        assert_eq!((s.written, s.reused_files), (false, 6));
        pack(&t, &opts, &fresh).unwrap();
        assert_eq!(fs::read(&deferred).unwrap(), fs::read(&fresh).unwrap());
    }

    /// The bytes of the image at `path`, plain or layered.
    fn image_bytes(path: &Path) -> Vec<u8> {
        let mut v = Vec::new();
        BlockFile::open(path)
            .unwrap()
            .reader()
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    /// A copy of the image at `path` as the store keeps one: hard links to the
    /// descriptor (or plain archive) and to its parts.
    fn link_copy(path: &Path, to: &Path) {
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::hard_link(path, to).unwrap();
        if let Some(layout) = compose_blockfile::read_layout(path).unwrap() {
            let (from, into) = (
                compose_blockfile::parts_dir(path),
                compose_blockfile::parts_dir(to),
            );
            fs::create_dir_all(&into).unwrap();
            for (name, _) in &layout.parts {
                fs::hard_link(from.join(name), into.join(name)).unwrap();
            }
        }
    }

    #[test]
    fn layered_output_is_the_fresh_archive_and_leaves_old_images_intact() {
        let d = tree();
        let t = d.path().join("t");
        let age = |p: &Path| {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000))
                .unwrap()
        };
        for i in 0..40 {
            let f = t.join(format!("docs/p{i:02}.html"));
            fs::write(&f, format!("<p>page {i}</p>\n").repeat(40 + i)).unwrap();
            age(&f);
        }
        for f in ["index.html", "docs/a.html", "docs/deep/b.txt"] {
            age(&t.join(f));
        }
        let opts = PackOptions {
            layered_from: Some(0),
            ..PackOptions::default()
        };
        let out = d.path().join("out/site.kv");
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        let fresh = d.path().join("fresh.kv");
        let first = pack_incremental(&t, &opts, &out, None).unwrap();
        assert_eq!(first.reused_files, 0);
        // A cold pack is plain.
        assert!(!compose_blockfile::is_layered(&out).unwrap());
        let mut kept: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let keep = |kept: &mut Vec<(PathBuf, Vec<u8>)>, n: usize| {
            let to = d.path().join(format!("store/{n}/site.kv"));
            link_copy(&out, &to);
            kept.push((to, image_bytes(&out)));
        };
        keep(&mut kept, 0);
        for round in 1..=(MAX_LAYERS + 2) {
            let f = t.join(format!("docs/p{:02}.html", round % 40));
            fs::write(&f, format!("<p>round {round}</p>\n").repeat(30 + round)).unwrap();
            age(&f);
            let s = pack_incremental(&t, &opts, &out, None).unwrap();
            assert_eq!((s.written, s.reused_files), (true, 42), "round {round}");
            pack(&t, &PackOptions::default(), &fresh).unwrap();
            assert_eq!(
                image_bytes(&out),
                fs::read(&fresh).unwrap(),
                "round {round}"
            );
            assert_eq!(s.archive_bytes, fs::metadata(&fresh).unwrap().len());
            let layout = compose_blockfile::read_layout(&out).unwrap();
            match &layout {
                Some(l) => {
                    assert!(
                        l.parts.len() <= MAX_LAYERS,
                        "round {round}: {} parts",
                        l.parts.len()
                    );
                    // The parts directory holds exactly the parts in use.
                    let mut names: Vec<String> = fs::read_dir(compose_blockfile::parts_dir(&out))
                        .unwrap()
                        .map(|e| e.unwrap().file_name().into_string().unwrap())
                        .collect();
                    names.sort();
                    let mut want: Vec<String> = l.parts.iter().map(|p| p.0.clone()).collect();
                    want.sort();
                    assert_eq!(names, want, "round {round}");
                }
                None => assert!(
                    !compose_blockfile::parts_dir(&out).exists(),
                    "round {round}: a plain archive left its old parts"
                ),
            }
            if round == 1 {
                assert!(layout.is_some(), "the first rebuild is layered");
            }
            keep(&mut kept, round);
            // A no-op keeps the image as it is.
            let again = pack_incremental(&t, &opts, &out, None).unwrap();
            assert!(!again.written);
        }
        // Some rebuild started over with a plain archive (the parts' garbage bound).
        assert!(
            kept.iter()
                .skip(1)
                .any(|(p, _)| !compose_blockfile::is_layered(p).unwrap()),
            "never flattened"
        );
        // Every image kept along the way still reads as it did.
        for (path, bytes) in &kept {
            assert_eq!(&image_bytes(path), bytes, "{}", path.display());
            assert!(!archive_digests(path).unwrap().is_empty());
        }
        // A plain (non-incremental) pack over a layered image replaces it and its parts.
        let f = t.join("docs/p05.html");
        fs::write(&f, "last").unwrap();
        age(&f);
        pack_incremental(&t, &opts, &out, None).unwrap();
        pack(&t, &opts, &out).unwrap();
        assert!(!compose_blockfile::is_layered(&out).unwrap());
        assert!(!compose_blockfile::parts_dir(&out).exists());
        pack(&t, &PackOptions::default(), &fresh).unwrap();
        assert_eq!(fs::read(&out).unwrap(), fs::read(&fresh).unwrap());
    }

    #[test]
    fn files_modified_just_before_packing_are_read_again() {
        let d = tree();
        let t = d.path().join("t");
        let out = d.path().join("site.kv");
        pack_incremental(&t, &PackOptions::default(), &out, None).unwrap();
        // Just written: within the racy window, so never trusted by their stamps.
        let s = pack_incremental(&t, &PackOptions::default(), &out, None).unwrap();
        assert_eq!((s.written, s.reused_files), (true, 0));
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
