//! The archive format: header, index records and the string table.
//!
//! See the [crate documentation](crate) for the layout. Everything here works on byte
//! slices and never panics: every offset read from an archive is checked before use.

use compose_devices::kv::{Encoding, Entry, KvError};
use sha2::{Digest, Sha256};

use crate::ArchiveError;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The first eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"COMPOSKV";
/// The format version this crate writes. It also reads version 1, whose records lack the
/// time ([`RECORD_LEN_V1`] bytes).
pub const VERSION: u32 = 2;
/// Size of the header at the start of the archive.
pub const HEADER_LEN: usize = 128;
/// Size of one index record.
pub const RECORD_LEN: usize = 104;
/// Size of one index record in version 1 archives (no time).
pub const RECORD_LEN_V1: usize = 96;
/// The alignment the packer uses unless told otherwise: one 512-byte sector.
pub const DEFAULT_ALIGN: u32 = 512;
/// The largest alignment an archive may declare (1 MiB).
pub const MAX_ALIGN: u32 = 1 << 20;
/// Archives are padded to a multiple of this many bytes (and of their alignment), so that
/// an archive is always a valid block-device image.
pub const MIN_IMAGE_GRANULE: u64 = 512;

/// The archive header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version: 1 or 2 (what [`Header::encode`] writes is always [`VERSION`]).
    pub version: u32,
    /// Alignment of every value (and of the index), in bytes: a power of two.
    pub align: u32,
    /// Number of entries (index records).
    pub entry_count: u64,
    /// Offset of the index (records, then the string table) from the start of the archive.
    pub index_offset: u64,
    /// Length of the index: `entry_count * RECORD_LEN` plus the string table.
    pub index_len: u64,
    /// Length of the whole archive, padding included.
    pub archive_len: u64,
    /// `SOURCE_DATE_EPOCH` at packing time (seconds since the Unix epoch), 0 if unknown.
    pub source_date_epoch: u64,
    /// SHA-256 of the index bytes.
    pub index_sha256: [u8; 32],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn array32_at(b: &[u8], at: usize) -> Option<[u8; 32]> {
    b.get(at..at.checked_add(32)?)?.try_into().ok()
}

impl Header {
    /// Parses and checks the header at the start of `bytes`.
    ///
    /// Only the header's own consistency is checked here; whether the archive is as long as
    /// the header says is up to the caller, which knows how many bytes it has.
    pub fn parse(bytes: &[u8]) -> Result<Header, ArchiveError> {
        let b = bytes.get(..HEADER_LEN).ok_or(ArchiveError::Truncated)?;
        if b[..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        let field = |at| u64_at(b, at).ok_or(ArchiveError::Truncated);
        let version = u32_at(b, 8).ok_or(ArchiveError::Truncated)?;
        if version != VERSION && version != 1 {
            return Err(ArchiveError::UnsupportedVersion(version));
        }
        let header = Header {
            version,
            align: u32_at(b, 12).ok_or(ArchiveError::Truncated)?,
            entry_count: field(16)?,
            index_offset: field(24)?,
            index_len: field(32)?,
            archive_len: field(40)?,
            source_date_epoch: field(48)?,
            index_sha256: array32_at(b, 56).ok_or(ArchiveError::Truncated)?,
        };
        if !header.align.is_power_of_two() || header.align > MAX_ALIGN {
            return Err(ArchiveError::BadHeader(
                "alignment is not a power of two up to 1 MiB",
            ));
        }
        if header.index_offset < HEADER_LEN as u64 {
            return Err(ArchiveError::BadHeader("index overlaps the header"));
        }
        let index_end = header
            .index_offset
            .checked_add(header.index_len)
            .ok_or(ArchiveError::BadHeader("index range overflows"))?;
        if index_end > header.archive_len {
            return Err(ArchiveError::BadHeader(
                "index extends past the end of the archive",
            ));
        }
        let records_len = header
            .entry_count
            .checked_mul(record_len(version) as u64)
            .ok_or(ArchiveError::BadHeader("entry count overflows"))?;
        if records_len > header.index_len {
            return Err(ArchiveError::BadHeader(
                "entry count does not fit in the index",
            ));
        }
        // Entries are addressed with `usize` and string offsets with `u32`.
        if usize::try_from(header.index_len).is_err() {
            return Err(ArchiveError::BadHeader("index too large for this machine"));
        }
        Ok(header)
    }

    /// The header's bytes (of its `version`: the packer writes [`VERSION`]).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.align.to_le_bytes());
        b[16..24].copy_from_slice(&self.entry_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.archive_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.source_date_epoch.to_le_bytes());
        b[56..88].copy_from_slice(&self.index_sha256);
        b
    }

    /// Length of the record table at the start of the index.
    fn records_len(&self) -> usize {
        // `parse` checked that this fits in `index_len`, which fits in `usize`.
        (self.entry_count as usize).saturating_mul(self.record_len())
    }

    /// Size of one index record in this archive's version.
    pub fn record_len(&self) -> usize {
        record_len(self.version)
    }
}

fn record_len(version: u32) -> usize {
    if version == 1 {
        RECORD_LEN_V1
    } else {
        RECORD_LEN
    }
}

/// A byte range of the archive holding one representation of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Offset from the start of the archive.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Span {
    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }
}

/// One index record, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The key (a relative path).
    pub key: &'a str,
    /// The media type.
    pub content_type: &'a str,
    /// The original bytes.
    pub data: Span,
    /// The gzip variant, if any.
    pub gzip: Option<Span>,
    /// The zstd variant, if any.
    pub zstd: Option<Span>,
    /// SHA-256 of the original bytes.
    pub sha256: [u8; 32],
    /// When the file was last modified (seconds since the Unix epoch), 0 if unknown
    /// (always in version 1).
    pub modified: u64,
}

impl<'a> Record<'a> {
    /// Encodes a record whose strings sit at the given offsets of the string table.
    pub fn encode(
        key: (u32, u32),
        content_type: (u32, u32),
        data: Span,
        gzip: Option<Span>,
        zstd: Option<Span>,
        sha256: &[u8; 32],
        modified: u64,
    ) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&key.0.to_le_bytes());
        b[4..8].copy_from_slice(&key.1.to_le_bytes());
        b[8..12].copy_from_slice(&content_type.0.to_le_bytes());
        b[12..16].copy_from_slice(&content_type.1.to_le_bytes());
        b[16..24].copy_from_slice(&data.offset.to_le_bytes());
        b[24..32].copy_from_slice(&data.len.to_le_bytes());
        let gzip = gzip.unwrap_or(Span { offset: 0, len: 0 });
        b[32..40].copy_from_slice(&gzip.offset.to_le_bytes());
        b[40..48].copy_from_slice(&gzip.len.to_le_bytes());
        let zstd = zstd.unwrap_or(Span { offset: 0, len: 0 });
        b[48..56].copy_from_slice(&zstd.offset.to_le_bytes());
        b[56..64].copy_from_slice(&zstd.len.to_le_bytes());
        b[64..96].copy_from_slice(sha256);
        b[96..104].copy_from_slice(&modified.to_le_bytes());
        b
    }

    /// The span of the representation in `encoding`.
    pub fn span(&self, encoding: Encoding) -> Option<Span> {
        match encoding {
            Encoding::Identity => Some(self.data),
            Encoding::Gzip => self.gzip,
            Encoding::Zstd => self.zstd,
        }
    }

    /// The record as a [`Entry`] with the given handle.
    pub fn entry(&self, handle: u64) -> Entry<'a> {
        Entry {
            key: self.key,
            handle,
            size: self.data.len,
            sha256: self.sha256,
            content_type: self.content_type,
            gzip_size: self.gzip.map(|s| s.len),
            zstd_size: self.zstd.map(|s| s.len),
            modified: (self.modified != 0).then_some(self.modified),
        }
    }
}

/// A view of an archive's index: the record table and the string table.
///
/// Built by [`Index::parse`], which validates every record; accessors are still checked,
/// so a view over bytes that were not validated returns errors rather than panicking.
#[derive(Clone, Copy, Debug)]
pub struct Index<'a> {
    records: &'a [u8],
    strings: &'a [u8],
    count: usize,
    record_len: usize,
}

impl<'a> Index<'a> {
    /// Splits `index` (the bytes at `header.index_offset`, `header.index_len` long) into
    /// records and strings without checking the records.
    pub fn view(index: &'a [u8], header: &Header) -> Index<'a> {
        let split = header.records_len().min(index.len());
        let (records, strings) = index.split_at(split);
        Index {
            records,
            strings,
            count: records.len() / header.record_len(),
            record_len: header.record_len(),
        }
    }

    /// Checks the index against the header: its SHA-256, and for every record that its
    /// strings are in the string table and are UTF-8, that its spans lie in the data region,
    /// and that keys are non-empty and strictly ascending.
    pub fn parse(index: &'a [u8], header: &Header) -> Result<Index<'a>, ArchiveError> {
        if index.len() as u64 != header.index_len {
            return Err(ArchiveError::Truncated);
        }
        let digest: [u8; 32] = Sha256::digest(index).into();
        if digest != header.index_sha256 {
            return Err(ArchiveError::IndexChecksum);
        }
        let view = Index::view(index, header);
        if view.count as u64 != header.entry_count {
            return Err(ArchiveError::Truncated);
        }
        let data_start = HEADER_LEN as u64;
        let data_end = header.index_offset;
        let mut previous: Option<&[u8]> = None;
        for i in 0..view.count {
            let bad = |reason| ArchiveError::BadEntry {
                index: i as u64,
                reason,
            };
            let record = view.record(i).ok_or_else(|| bad("record is malformed"))?;
            if record.key.is_empty() {
                return Err(bad("empty key"));
            }
            if let Some(prev) = previous
                && prev >= record.key.as_bytes()
            {
                return Err(bad("keys are not sorted and unique"));
            }
            previous = Some(record.key.as_bytes());
            for span in [Some(record.data), record.gzip, record.zstd]
                .into_iter()
                .flatten()
            {
                let end = span.end().ok_or_else(|| bad("span overflows"))?;
                if span.len > 0 && (span.offset < data_start || end > data_end) {
                    return Err(bad("span outside the data region"));
                }
                if span.offset > header.archive_len {
                    return Err(bad("span outside the archive"));
                }
            }
        }
        Ok(view)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn raw(&self, i: usize) -> Option<&'a [u8]> {
        let start = i.checked_mul(self.record_len)?;
        self.records.get(start..start.checked_add(self.record_len)?)
    }

    fn string(&self, raw: &'a [u8], at: usize) -> Option<&'a [u8]> {
        let offset = u32_at(raw, at)? as usize;
        let len = u32_at(raw, at + 4)? as usize;
        self.strings.get(offset..offset.checked_add(len)?)
    }

    /// The key of record `i`, as bytes.
    pub fn key(&self, i: usize) -> Option<&'a [u8]> {
        self.string(self.raw(i)?, 0)
    }

    /// Record `i`, or `None` if it is out of range or malformed.
    pub fn record(&self, i: usize) -> Option<Record<'a>> {
        let raw = self.raw(i)?;
        let key = core::str::from_utf8(self.string(raw, 0)?).ok()?;
        let content_type = core::str::from_utf8(self.string(raw, 8)?).ok()?;
        let span = |at| -> Option<Span> {
            Some(Span {
                offset: u64_at(raw, at)?,
                len: u64_at(raw, at + 8)?,
            })
        };
        let variant = |at| -> Option<Option<Span>> {
            let s = span(at)?;
            Some(if s.len == 0 { None } else { Some(s) })
        };
        Some(Record {
            key,
            content_type,
            data: span(16)?,
            gzip: variant(32)?,
            zstd: variant(48)?,
            sha256: array32_at(raw, 64)?,
            modified: if self.record_len >= RECORD_LEN {
                u64_at(raw, 96)?
            } else {
                0
            },
        })
    }

    /// The first record whose key is not less than `key` (`len()` if there is none).
    ///
    /// Keys are sorted in a validated index; on an unvalidated one the answer is merely
    /// wrong, never a panic. Malformed records compare as greater than every key.
    pub fn lower_bound(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid) {
                Some(k) if k < key => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// The index of the record with exactly `key`.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let i = self.lower_bound(key);
        (self.key(i)? == key).then_some(i)
    }

    /// The entry for `key`, with its record number as the handle.
    pub fn get(&self, key: &str) -> Result<Option<Entry<'a>>, KvError> {
        self.entry_at(self.find(key.as_bytes()))
    }

    /// The entry for `key`, found through `table` (built over this index).
    pub fn get_with(&self, table: &KeyTable, key: &str) -> Result<Option<Entry<'a>>, KvError> {
        self.entry_at(table.find(self, key.as_bytes()))
    }

    fn entry_at(&self, i: Option<usize>) -> Result<Option<Entry<'a>>, KvError> {
        match i {
            Some(i) => {
                let record = self.record(i).ok_or(KvError::Corrupt)?;
                Ok(Some(record.entry(i as u64)))
            }
            None => Ok(None),
        }
    }

    /// The span of `entry`'s value in `encoding`, from the record its handle names.
    pub fn span(&self, entry: &Entry<'_>, encoding: Encoding) -> Result<Span, KvError> {
        let i = usize::try_from(entry.handle).map_err(|_| KvError::NotFound)?;
        let record = self.record(i).ok_or(KvError::NotFound)?;
        record.span(encoding).ok_or(KvError::NotFound)
    }

    /// Keys for [`compose_devices::kv::Kv::list`].
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let mut i = self.lower_bound(prefix.as_bytes());
        if let Some(after) = after {
            let past = self.lower_bound(after.as_bytes());
            let past = match self.key(past) {
                Some(k) if k == after.as_bytes() => past + 1,
                _ => past,
            };
            i = i.max(past);
        }
        let mut keys = Vec::new();
        while keys.len() < limit {
            let Some(key) = self.key(i) else { break };
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            match core::str::from_utf8(key) {
                Ok(k) => keys.push(k.to_string()),
                Err(_) => break,
            }
            i += 1;
        }
        keys
    }
}

/// A hash table over an index's keys, built once when an archive is opened: a lookup
/// hashes the key and compares it with one record's key (rarely more), where a binary
/// search of the sorted records compares about log2(n) keys scattered over the index.
///
/// Open addressing with linear probing, at most half full: each slot is a `u32` holding the
/// record number plus one (0: empty) in its low [`KeyTable::RECORD_BITS`] bits and eight
/// bits of the key's hash above, which settle most mismatches without touching the key.
/// 4 bytes a slot, so 8 to 16 bytes per entry (512 KiB for 52,000 files). An index of
/// more records than the slots can number, or a table that cannot be allocated, gives an
/// empty table, and lookups fall back to the binary search.
#[derive(Clone, Debug, Default)]
pub struct KeyTable {
    slots: Vec<u32>,
}

impl KeyTable {
    /// Bits of a slot that hold the record number plus one.
    pub const RECORD_BITS: u32 = 24;
    const RECORD_MASK: u32 = (1 << Self::RECORD_BITS) - 1;

    /// The table over every record of `index` (whose keys are unique, as
    /// [`Index::parse`] checked).
    pub fn build(index: &Index<'_>) -> KeyTable {
        let n = index.len();
        if n == 0 || n >= Self::RECORD_MASK as usize {
            return KeyTable::default();
        }
        let Some(size) = n.checked_mul(2).and_then(usize::checked_next_power_of_two) else {
            return KeyTable::default();
        };
        let size = size.max(16);
        let mut slots = Vec::new();
        if slots.try_reserve_exact(size).is_err() {
            return KeyTable::default();
        }
        slots.resize(size, 0);
        let mask = size - 1;
        for i in 0..n {
            let Some(key) = index.key(i) else {
                return KeyTable::default();
            };
            let h = hash(key);
            let mut at = (h as usize) & mask;
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = tag(h) | (i as u32 + 1);
        }
        KeyTable { slots }
    }

    /// The record of `index` whose key is `key`: through the table if it has one, else by
    /// binary search.
    pub fn find(&self, index: &Index<'_>, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return index.find(key);
        }
        let mask = self.slots.len() - 1;
        let h = hash(key);
        let want = tag(h);
        let mut at = (h as usize) & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot & !Self::RECORD_MASK == want {
                let i = (slot & Self::RECORD_MASK) as usize - 1;
                if index.key(i) == Some(key) {
                    return Some(i);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Bytes the table holds.
    pub fn memory(&self) -> usize {
        self.slots.capacity() * core::mem::size_of::<u32>()
    }
}

/// The tag bits of a slot for hash `h`: its top eight bits.
fn tag(h: u64) -> u32 {
    ((h >> 56) as u32) << KeyTable::RECORD_BITS
}

/// FNV-1a over the key's bytes, then a final mix so that both the low bits (the slot) and
/// the high bits (the tag) depend on every byte.
fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Rounds `n` up to a multiple of `align` (a power of two), `None` on overflow.
pub fn align_up(n: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(n.checked_add(mask)? & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            version: VERSION,
            align: 512,
            entry_count: 2,
            index_offset: 1024,
            index_len: 250,
            archive_len: 1536,
            source_date_epoch: 1_700_000_000,
            index_sha256: [7; 32],
        };
        assert_eq!(Header::parse(&h.encode()), Ok(h));
    }

    #[test]
    fn header_rejects_nonsense() {
        let good = Header {
            version: VERSION,
            align: 512,
            entry_count: 1,
            index_offset: 512,
            index_len: 100,
            archive_len: 1024,
            source_date_epoch: 0,
            index_sha256: [0; 32],
        };
        assert_eq!(
            Header::parse(&good.encode()[..100]),
            Err(ArchiveError::Truncated)
        );
        let mut bytes = good.encode();
        bytes[0] = b'X';
        assert_eq!(Header::parse(&bytes), Err(ArchiveError::BadMagic));
        let mut bytes = good.encode();
        bytes[8] = 9;
        assert_eq!(
            Header::parse(&bytes),
            Err(ArchiveError::UnsupportedVersion(9))
        );
        for bad in [
            Header { align: 3, ..good },
            Header {
                align: 1 << 21,
                ..good
            },
            Header {
                index_offset: 64,
                ..good
            },
            Header {
                index_offset: u64::MAX,
                ..good
            },
            Header {
                archive_len: 600,
                ..good
            },
            Header {
                entry_count: 2,
                ..good
            },
            Header {
                entry_count: u64::MAX,
                ..good
            },
        ] {
            assert!(
                matches!(
                    Header::parse(&bad.encode()),
                    Err(ArchiveError::BadHeader(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_table_finds_every_key_and_nothing_else() {
        // An index of generated keys, built as the packer lays it out.
        let keys: Vec<String> = (0..3000)
            .map(|i| alloc::format!("dir{}/file{i}.html", i % 17))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        let mut records = Vec::new();
        let mut strings = Vec::new();
        for k in &sorted {
            let mut r = [0u8; RECORD_LEN];
            r[0..4].copy_from_slice(&(strings.len() as u32).to_le_bytes());
            r[4..8].copy_from_slice(&(k.len() as u32).to_le_bytes());
            strings.extend_from_slice(k.as_bytes());
            records.extend_from_slice(&r);
        }
        let records_len = records.len() as u64;
        records.extend_from_slice(&strings);
        let header = Header {
            version: VERSION,
            align: 512,
            entry_count: sorted.len() as u64,
            index_offset: 512,
            index_len: records.len() as u64,
            archive_len: align_up(512 + records.len() as u64, 512).unwrap(),
            source_date_epoch: 0,
            index_sha256: [0; 32],
        };
        assert_eq!(header.records_len() as u64, records_len);
        let index = Index::view(&records, &header);
        let table = KeyTable::build(&index);
        assert!(table.memory() >= 2 * sorted.len() * 4);
        for (i, k) in sorted.iter().enumerate() {
            assert_eq!(table.find(&index, k.as_bytes()), Some(i), "{k}");
            assert_eq!(index.find(k.as_bytes()), Some(i));
        }
        for missing in ["", "dir1", "dir1/file1.htm", "dir1/file1.html/", "zzz"] {
            assert_eq!(table.find(&index, missing.as_bytes()), None, "{missing}");
        }
        // No table: the same answers by binary search.
        let empty = KeyTable::default();
        assert_eq!(empty.find(&index, sorted[42].as_bytes()), Some(42));
        assert_eq!(empty.find(&index, b"nope"), None);
    }

    #[test]
    fn align_up_works() {
        assert_eq!(align_up(0, 512), Some(0));
        assert_eq!(align_up(1, 512), Some(512));
        assert_eq!(align_up(512, 512), Some(512));
        assert_eq!(align_up(513, 1), Some(513));
        assert_eq!(align_up(u64::MAX, 512), None);
    }
}
