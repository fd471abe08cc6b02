//! Asset archives: a directory packed at build time, served read-only at run time.
//!
//! The `assets` device of a spec takes a directory and serves it through the
//! [`Kv`](compose_devices::kv::Kv) interface. At build time the composer calls
//! [`pack`] (feature `pack`, host only) to turn the directory into one archive file; at
//! run time one of two backends reads it, chosen in the spec:
//!
//! - [`Embedded`] (`embed`): the archive is included in the image as bytes. Opening it
//!   checks the index and copies nothing; values are slices of the image.
//! - [`OnBlock`] (`block`): the archive is a separate block-device image next to the
//!   unikernel. Opening it reads the index into memory; values are read on demand through
//!   a bounded LRU cache, so a multi-gigabyte site costs only its index in memory.
//!
//! Both are `no_std` + `alloc`, and neither panics on a corrupt archive: every offset and
//! length read from it is checked, and opening verifies the index's SHA-256.
//!
//! # Archive format (version 2)
//!
//! All integers are little-endian. `align` is a power of two (512 by default, one sector).
//!
//! ```text
//! offset 0            header (128 bytes)
//!                     zero padding to `align`
//! HEADER_LEN..        data region: each value, then its gzip and zstd variants if
//!                     present, each starting at a multiple of `align`, zero-padded
//! index_offset        index (starts at a multiple of `align`):
//!                       entry_count records of 104 bytes (96 in version 1), sorted by key
//!                       string table (keys and content types, UTF-8, not terminated)
//!                     zero padding to `archive_len`, a multiple of `align` and of 512
//! ```
//!
//! Header:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! |      0 |    8 | magic `COMPOSKV`                                             |
//! |      8 |    4 | version (2; readers also take 1)                             |
//! |     12 |    4 | `align`                                                      |
//! |     16 |    8 | `entry_count`                                                |
//! |     24 |    8 | `index_offset`                                               |
//! |     32 |    8 | `index_len` (records and string table)                       |
//! |     40 |    8 | `archive_len`                                                |
//! |     48 |    8 | `source_date_epoch` (seconds; 0 if unknown)                  |
//! |     56 |   32 | SHA-256 of the index                                         |
//! |     88 |   40 | reserved, zero                                               |
//!
//! Index record:
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! |      0 |    8 | key: offset (u32) and length (u32) in the string table       |
//! |      8 |    8 | content type: offset (u32) and length (u32) in the table     |
//! |     16 |   16 | value: archive offset (u64) and length (u64)                 |
//! |     32 |   16 | gzip variant: offset and length, both 0 if absent            |
//! |     48 |   16 | zstd variant: offset and length, both 0 if absent            |
//! |     64 |   32 | SHA-256 of the value                                         |
//! |     96 |    8 | the file's time: `SOURCE_DATE_EPOCH` if set, else its mtime  |
//! |        |      | (seconds; 0 if unknown). Absent in version 1.                |
//!
//! Keys are `/`-separated paths relative to the packed directory (`docs/index.html`),
//! unique, and sorted by their bytes, so a lookup is a binary search on the records in
//! place. Variants are stored only when smaller than the value. Nothing in an archive
//! depends on when, where or by whom it was packed, except `source_date_epoch` when given
//! and, without it, each file's time (its mtime), which the HTTP server sends as
//! `Last-Modified`.
#![no_std]
extern crate alloc;
#[cfg(any(test, feature = "pack"))]
extern crate std;

mod block;
mod embedded;
pub mod format;
#[cfg(feature = "pack")]
pub mod keyscan;
#[cfg(feature = "pack")]
mod pack;

pub use block::{CacheStats, OnBlock};
pub use embedded::Embedded;
#[cfg(feature = "pack")]
pub use pack::{
    AssetFile, PACK_CACHE_DIR, PackCache, PackError, PackOptions, PackSummary, Selected,
    archive_digests, commit_stamps, is_compressible, pack, pack_cached, pack_incremental,
    pack_incremental_deferred, pack_incremental_deferred_selected, select,
    source_date_epoch_from_env, stamps_file,
};

use compose_devices::block::BlockError;
use core::fmt;

/// Why an archive could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    /// The bytes (or the block device) end before the archive does.
    Truncated,
    /// The bytes do not start with the archive magic: this is not an archive.
    BadMagic,
    /// The archive was written in a format version this crate does not read.
    UnsupportedVersion(u32),
    /// A header field is inconsistent.
    BadHeader(&'static str),
    /// The index does not match the checksum in the header.
    IndexChecksum,
    /// An index record is inconsistent.
    BadEntry {
        /// The record's position in the index.
        index: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The block device's sector size is not a power of two between 128 bytes and 128 KiB.
    UnsupportedSectorSize(u32),
    /// Reading the block device failed.
    Block(BlockError),
    /// The index does not fit in memory.
    OutOfMemory,
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::Truncated => f.write_str("asset archive is truncated"),
            ArchiveError::BadMagic => f.write_str("not an asset archive (bad magic)"),
            ArchiveError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "asset archive version {v} is not supported (expected {})",
                    format::VERSION
                )
            }
            ArchiveError::BadHeader(why) => write!(f, "asset archive header is corrupt: {why}"),
            ArchiveError::IndexChecksum => f.write_str("asset archive index fails its checksum"),
            ArchiveError::BadEntry { index, reason } => {
                write!(f, "asset archive entry {index} is corrupt: {reason}")
            }
            ArchiveError::UnsupportedSectorSize(s) => {
                write!(
                    f,
                    "block sector size {s} is not supported for asset archives"
                )
            }
            ArchiveError::Block(e) => write!(f, "reading the asset archive: {e}"),
            ArchiveError::OutOfMemory => f.write_str("asset archive index does not fit in memory"),
        }
    }
}

impl core::error::Error for ArchiveError {}

#[cfg(test)]
mod tests;
