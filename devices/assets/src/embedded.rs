//! The `embed` backend: an archive included in the image as bytes.

use alloc::string::String;
use alloc::vec::Vec;

use compose_devices::kv::{Encoding, Entry, Kv, KvError};

use crate::ArchiveError;
use crate::format::{Header, Index, KeyTable, Span};

/// An archive held in memory for the whole run, typically `include_bytes!` in the image.
///
/// Opening it checks the header and the index and copies nothing; values are sub-slices
/// of the archive ([`Kv::slice`] hands them out directly). Lookups go through a hash
/// table of the keys built at opening ([`KeyTable`]: 8 to 16 bytes per entry).
#[derive(Clone, Debug)]
pub struct Embedded {
    bytes: &'static [u8],
    header: Header,
    index: Index<'static>,
    table: KeyTable,
}

impl Embedded {
    /// Checks the archive in `bytes` (header, index checksum, every index record) and
    /// returns a store reading from it.
    pub fn new(bytes: &'static [u8]) -> Result<Embedded, ArchiveError> {
        let header = Header::parse(bytes)?;
        if (bytes.len() as u64) < header.archive_len {
            return Err(ArchiveError::Truncated);
        }
        let index = slice(
            bytes,
            Span {
                offset: header.index_offset,
                len: header.index_len,
            },
        )
        .ok_or(ArchiveError::Truncated)?;
        let index = Index::parse(index, &header)?;
        Ok(Embedded {
            bytes,
            header,
            index,
            table: KeyTable::build(&index),
        })
    }

    /// The archive's header.
    pub fn header(&self) -> &Header {
        &self.header
    }
}

fn slice(bytes: &[u8], span: Span) -> Option<&[u8]> {
    let start = usize::try_from(span.offset).ok()?;
    let len = usize::try_from(span.len).ok()?;
    bytes.get(start..start.checked_add(len)?)
}

impl Kv for Embedded {
    async fn get(&self, key: &str) -> Result<Option<Entry<'_>>, KvError> {
        self.index.get_with(&self.table, key)
    }

    async fn read(
        &self,
        entry: &Entry<'_>,
        encoding: Encoding,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, KvError> {
        let value = self.slice(entry, encoding).ok_or(KvError::NotFound)?;
        let Some(rest) = usize::try_from(offset).ok().and_then(|o| value.get(o..)) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    fn slice(&self, entry: &Entry<'_>, encoding: Encoding) -> Option<&[u8]> {
        let span = self.index.span(entry, encoding).ok()?;
        slice(self.bytes, span)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        Ok(self.index.list(prefix, after, limit))
    }

    fn len(&self) -> u64 {
        self.index.len() as u64
    }

    fn modified(&self) -> Option<u64> {
        (self.header.source_date_epoch != 0).then_some(self.header.source_date_epoch)
    }
}
