//! The `block` backend: an archive on a block device, read on demand through a bounded
//! LRU cache.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use compose_devices::block::{Block, BlockError};
use compose_devices::kv::{Encoding, Entry, FileSpan, Kv, KvError};

use crate::ArchiveError;
use crate::format::{HEADER_LEN, Header, Index, KeyTable};

/// The unit the cache keeps: at least one sector, at least 4 KiB.
const MIN_PAGE: usize = 4096;
/// The most bytes asked of the device in one request.
const MAX_REQUEST: usize = 128 * 1024;

/// An archive read from a block device (the image the packer wrote, starting at sector 0).
///
/// Opening it reads and checks the header and the index, which then stay in memory, with
/// a hash table of the keys ([`KeyTable`]: 8 to 16 bytes per entry) for lookups.
/// Values are read on demand: small ones through an LRU cache of whole pages (bounded by
/// the `cache_bytes` given to [`OnBlock::open`]), large ones (over an eighth of the
/// cache) straight from the device into the caller's buffer, so that streaming a big
/// file does not evict the small, hot ones.
///
/// Reads from several tasks may interleave; the cache is never borrowed across an await.
pub struct OnBlock<B: Block + 'static> {
    block: &'static B,
    header: Header,
    index: Vec<u8>,
    table: KeyTable,
    sector_size: usize,
    page_size: usize,
    direct_threshold: u64,
    cache: RefCell<Lru>,
}

/// Cache counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Page lookups served from the cache.
    pub hits: u64,
    /// Page lookups that read the device.
    pub misses: u64,
    /// Pages held now.
    pub pages: usize,
    /// The most pages the cache holds.
    pub capacity: usize,
    /// Bytes per page.
    pub page_size: usize,
}

impl<B: Block + 'static> OnBlock<B> {
    /// Reads and checks the archive's header and index from `block`, keeping at most
    /// `cache_bytes` of values in memory afterwards (0 disables the cache).
    pub async fn open(block: &'static B, cache_bytes: usize) -> Result<Self, ArchiveError> {
        let info = block.info();
        let sector_size = info.sector_size as usize;
        if !sector_size.is_power_of_two() || !(HEADER_LEN..=MAX_REQUEST).contains(&sector_size) {
            return Err(ArchiveError::UnsupportedSectorSize(info.sector_size));
        }
        if info.sectors == 0 {
            return Err(ArchiveError::Truncated);
        }
        let mut first = alloc_zeroed(sector_size).ok_or(ArchiveError::OutOfMemory)?;
        block
            .read(0, &mut first)
            .await
            .map_err(ArchiveError::Block)?;
        let header = Header::parse(&first)?;
        if header.archive_len > info.capacity() {
            return Err(ArchiveError::Truncated);
        }
        // The header guarantees that `index_len` fits in `usize` and that the index lies
        // within the archive, which lies within the device.
        let mut index = alloc_zeroed(header.index_len as usize).ok_or(ArchiveError::OutOfMemory)?;
        read_bytes(block, sector_size, header.index_offset, &mut index)
            .await
            .map_err(ArchiveError::Block)?;
        let table = KeyTable::build(&Index::parse(&index, &header)?);

        let page_size = sector_size.max(MIN_PAGE);
        let capacity = cache_bytes / page_size;
        Ok(OnBlock {
            block,
            header,
            index,
            table,
            sector_size,
            page_size,
            direct_threshold: (capacity * page_size / 8) as u64,
            cache: RefCell::new(Lru::new(capacity)),
        })
    }

    /// The archive's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.cache.borrow();
        CacheStats {
            hits: cache.hits,
            misses: cache.misses,
            pages: cache.pages.len(),
            capacity: cache.capacity,
            page_size: self.page_size,
        }
    }

    fn index(&self) -> Index<'_> {
        Index::view(&self.index, &self.header)
    }

    /// Copies archive bytes at `offset` into `buf` through the page cache.
    async fn read_cached(&self, mut offset: u64, buf: &mut [u8]) -> Result<(), KvError> {
        let page_size = self.page_size as u64;
        let mut done = 0;
        while done < buf.len() {
            let page = offset / page_size;
            let within = (offset % page_size) as usize;
            let want = (buf.len() - done).min(self.page_size - within);
            let dest = &mut buf[done..done + want];
            let hit = self.cache.borrow_mut().copy_from(page, within, dest);
            if !hit {
                let data = self.read_page(page).await?;
                let src = data.get(within..within + want).ok_or(KvError::Corrupt)?;
                dest.copy_from_slice(src);
                self.cache.borrow_mut().insert(page, data);
            }
            done += want;
            offset += want as u64;
        }
        Ok(())
    }

    /// Reads cache page `page` from the device (shorter than a page at the device's end).
    async fn read_page(&self, page: u64) -> Result<Vec<u8>, KvError> {
        let sectors_per_page = (self.page_size / self.sector_size) as u64;
        let first = page.checked_mul(sectors_per_page).ok_or(KvError::Corrupt)?;
        let available = self.block.info().sectors.saturating_sub(first);
        let count = sectors_per_page.min(available) as usize;
        let mut data = alloc_zeroed(count * self.sector_size).ok_or(KvError::OutOfMemory)?;
        self.block
            .read(first, &mut data)
            .await
            .map_err(block_error)?;
        Ok(data)
    }
}

fn block_error(e: BlockError) -> KvError {
    match e {
        BlockError::OutOfRange => KvError::Corrupt,
        BlockError::ReadOnly | BlockError::Io => KvError::Io,
    }
}

/// A zeroed buffer of `len` bytes, or `None` if the allocation fails.
fn alloc_zeroed(len: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, 0);
    Some(v)
}

/// Reads `buf.len()` bytes at byte `offset` of `block`: whole, aligned sectors straight into
/// `buf`, the partial sectors at either end through a one-sector bounce buffer.
async fn read_bytes<B: Block>(
    block: &B,
    sector_size: usize,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), BlockError> {
    let ss = sector_size as u64;
    let mut pos = offset;
    let mut done = 0;
    let mut bounce: Vec<u8> = Vec::new();
    while done < buf.len() {
        let sector = pos / ss;
        let within = (pos % ss) as usize;
        let remaining = buf.len() - done;
        if within == 0 && remaining >= sector_size {
            let n = (remaining.min(MAX_REQUEST) / sector_size) * sector_size;
            block.read(sector, &mut buf[done..done + n]).await?;
            done += n;
            pos += n as u64;
        } else {
            if bounce.is_empty() {
                bounce = alloc_zeroed(sector_size).ok_or(BlockError::Io)?;
            }
            block.read(sector, &mut bounce).await?;
            let n = remaining.min(sector_size - within);
            buf[done..done + n].copy_from_slice(&bounce[within..within + n]);
            done += n;
            pos += n as u64;
        }
    }
    Ok(())
}

impl<B: Block + 'static> Kv for OnBlock<B> {
    async fn get(&self, key: &str) -> Result<Option<Entry<'_>>, KvError> {
        self.index().get_with(&self.table, key)
    }

    async fn read(
        &self,
        entry: &Entry<'_>,
        encoding: Encoding,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, KvError> {
        let span = self.index().span(entry, encoding)?;
        if offset >= span.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(span.len - offset) as usize;
        let start = span.offset.checked_add(offset).ok_or(KvError::Corrupt)?;
        let buf = &mut buf[..n];
        if span.len > self.direct_threshold {
            read_bytes(self.block, self.sector_size, start, buf)
                .await
                .map_err(block_error)?;
        } else {
            self.read_cached(start, buf).await?;
        }
        Ok(n)
    }

    fn file_span(&self, entry: &Entry<'_>, encoding: Encoding) -> Option<FileSpan> {
        let span = self.index().span(entry, encoding).ok()?;
        self.block.file_span(span.offset, span.len)
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        Ok(self.index().list(prefix, after, limit))
    }

    fn len(&self) -> u64 {
        self.index().len() as u64
    }

    fn modified(&self) -> Option<u64> {
        (self.header.source_date_epoch != 0).then_some(self.header.source_date_epoch)
    }
}

/// A least-recently-used map from page number to page bytes, holding at most `capacity`
/// pages.
struct Lru {
    capacity: usize,
    tick: u64,
    /// Page number → (last use, bytes).
    pages: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Last use → page number; the first entry is the least recently used page.
    order: BTreeMap<u64, u64>,
    hits: u64,
    misses: u64,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            tick: 0,
            pages: BTreeMap::new(),
            order: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Copies page bytes from `within` into `dest` if the page is cached and long enough.
    fn copy_from(&mut self, page: u64, within: usize, dest: &mut [u8]) -> bool {
        self.tick += 1;
        let tick = self.tick;
        let Some((used, data)) = self.pages.get_mut(&page) else {
            self.misses += 1;
            return false;
        };
        let Some(src) = data.get(within..within + dest.len()) else {
            self.misses += 1;
            return false;
        };
        dest.copy_from_slice(src);
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, page);
        self.hits += 1;
        true
    }

    fn insert(&mut self, page: u64, data: Vec<u8>) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if let Some((used, _)) = self.pages.remove(&page) {
            self.order.remove(&used);
        }
        while self.pages.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.pages.remove(&oldest);
        }
        self.pages.insert(page, (self.tick, data));
        self.order.insert(self.tick, page);
    }
}
