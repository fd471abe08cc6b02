//! Read-only key-value stores: named byte strings with their metadata.
//!
//! The `assets` device serves a directory packed at build time through this interface,
//! whether the archive is embedded in the image or read on demand from a block device.
//! Keys are `/`-separated relative paths (`index.html`, `docs/guide.html`), compared as
//! bytes; values carry their size, SHA-256, content type and, optionally, precompressed
//! variants (gzip, zstd) that a server may send instead of the original.
//!
//! Lookups and reads are `async` because a backend may have to do I/O for them; the
//! [`Kv::slice`] fast path lets a backend whose values are already in memory hand them out
//! without copying.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The form in which a value is read: the original bytes or a precompressed variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// The original bytes.
    Identity,
    /// Gzip (RFC 1952), as named by HTTP's `Content-Encoding: gzip`.
    Gzip,
    /// Zstandard (RFC 8878), as named by HTTP's `Content-Encoding: zstd`.
    Zstd,
}

impl Encoding {
    /// Every encoding, in the order variants are stored.
    pub const ALL: [Encoding; 3] = [Encoding::Identity, Encoding::Gzip, Encoding::Zstd];

    /// The HTTP content-coding token (`identity`, `gzip`, `zstd`).
    pub const fn token(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// A span of a file on the host that holds a value's bytes: what a host network stack sends
/// without copying them through the unikernel's memory (`sendfile(2)` on unix, see
/// [`crate::net::TcpFlow::write_file`]). Only the unix target has host files; on every
/// other target [`Kv::file_span`] is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// The host's file descriptor, open for reading for the whole run.
    pub fd: i32,
    /// Byte offset of the first byte in the file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl FileSpan {
    /// The part of the span from `offset` (relative to its start), `len` bytes long, or
    /// `None` if that is not inside the span.
    pub fn part(&self, offset: u64, len: u64) -> Option<FileSpan> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then_some(FileSpan {
            fd: self.fd,
            offset: self.offset.checked_add(offset)?,
            len,
        })
    }
}

/// A value's metadata, borrowed from the store that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a str,
    /// The store's handle for the value, passed back to [`Kv::read`] and [`Kv::slice`].
    /// Opaque: only meaningful to the store that returned the entry.
    pub handle: u64,
    /// Size of the original bytes.
    pub size: u64,
    /// SHA-256 of the original bytes.
    pub sha256: [u8; 32],
    /// The media type, as sent in `Content-Type` (`text/html; charset=utf-8`).
    pub content_type: &'a str,
    /// Size of the gzip variant, if the store has one.
    pub gzip_size: Option<u64>,
    /// Size of the zstd variant, if the store has one.
    pub zstd_size: Option<u64>,
    /// When the value was last modified (seconds since the Unix epoch), if the store
    /// knows: for an asset archive, `SOURCE_DATE_EPOCH` at packing time when it was set,
    /// else the file's mtime. [`Kv::modified`] is the store's own time.
    pub modified: Option<u64>,
}

impl Entry<'_> {
    /// The size of the value in `encoding`, or `None` if the store has no such variant.
    pub const fn size_in(&self, encoding: Encoding) -> Option<u64> {
        match encoding {
            Encoding::Identity => Some(self.size),
            Encoding::Gzip => self.gzip_size,
            Encoding::Zstd => self.zstd_size,
        }
    }

    /// Whether the store has any precompressed variant of the value.
    pub const fn has_variants(&self) -> bool {
        self.gzip_size.is_some() || self.zstd_size.is_some()
    }
}

/// Why a key-value operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The entry's handle or the requested encoding does not exist in this store.
    NotFound,
    /// The store's backing data is inconsistent.
    Corrupt,
    /// The backing device reported an I/O error.
    Io,
    /// Memory for a buffer or cache could not be allocated.
    OutOfMemory,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvError::NotFound => "no such entry or encoding in this store",
            KvError::Corrupt => "store data is corrupt",
            KvError::Io => "store I/O error",
            KvError::OutOfMemory => "out of memory",
        })
    }
}

/// A read-only key-value store.
pub trait Kv {
    /// Looks `key` up; `Ok(None)` if there is no such key.
    async fn get(&self, key: &str) -> Result<Option<Entry<'_>>, KvError>;

    /// Copies bytes of `entry`'s value in `encoding`, starting `offset` bytes in, into `buf`.
    ///
    /// Fills `buf` up to the end of the value and returns how many bytes it wrote, which is
    /// less than `buf.len()` only at the end (and 0 when `offset` is at or past the end).
    async fn read(
        &self,
        entry: &Entry<'_>,
        encoding: Encoding,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, KvError>;

    /// The whole of `entry`'s value in `encoding`, if the store holds it in memory.
    ///
    /// A server writes such a slice straight to the network, without copying it.
    fn slice(&self, entry: &Entry<'_>, encoding: Encoding) -> Option<&[u8]> {
        let _ = (entry, encoding);
        None
    }

    /// Where the whole of `entry`'s value in `encoding` lies in a host file, if the store
    /// reads it from one that stays unchanged while the unikernel runs (an archive on a
    /// unix block device). A server on a stack that sends from files
    /// ([`crate::net::TcpFlow::sends_files`]) sends such a value without copying it.
    fn file_span(&self, entry: &Entry<'_>, encoding: Encoding) -> Option<FileSpan> {
        let _ = (entry, encoding);
        None
    }

    /// Up to `limit` keys that start with `prefix`, in ascending byte order, beginning after
    /// the key `after` (exclusive) if given. Call again with the last key returned to
    /// continue.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;

    /// The number of entries.
    fn len(&self) -> u64;

    /// Whether the store has no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The modification time every value shares, in seconds since the Unix epoch, if the
    /// store records one (a packed archive records `SOURCE_DATE_EPOCH`).
    fn modified(&self) -> Option<u64> {
        None
    }
}
