//! Block devices: fixed-size sectors read and written by index.

use core::fmt;

/// Geometry of a block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockInfo {
    /// Bytes per sector (a power of two, at least 512).
    pub sector_size: u32,
    /// Number of sectors.
    pub sectors: u64,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl BlockInfo {
    /// Geometry with the given sector size and count, writable.
    pub const fn new(sector_size: u32, sectors: u64) -> Self {
        Self {
            sector_size,
            sectors,
            read_only: false,
        }
    }

    /// Capacity in bytes.
    pub const fn capacity(&self) -> u64 {
        self.sectors * self.sector_size as u64
    }
}

/// Why a block operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The range is past the end of the device, or the buffer is not a whole number of sectors.
    OutOfRange,
    /// The device is read-only.
    ReadOnly,
    /// The host reported an I/O error.
    Io,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "block range out of bounds or not sector-aligned",
            BlockError::ReadOnly => "block device is read-only",
            BlockError::Io => "block device I/O error",
        })
    }
}

/// A block device. Buffers are whole sectors; `sector` is the index of the first one.
pub trait Block {
    /// The device's geometry.
    fn info(&self) -> BlockInfo;
    /// Reads `buf.len() / sector_size` sectors starting at `sector`.
    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf.len() / sector_size` sectors starting at `sector`.
    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;

    /// Where `len` bytes at byte `offset` of the device lie in a host file, if the device is
    /// one (a file attached on unix) and the range is inside it; `None` otherwise (the
    /// default, and every guest target).
    fn file_span(&self, offset: u64, len: u64) -> Option<crate::kv::FileSpan> {
        let _ = (offset, len);
        None
    }

    /// Checks that `len` bytes at `sector` are whole sectors inside the device.
    fn check_range(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        let info = self.info();
        let ss = info.sector_size as usize;
        if ss == 0 || !len.is_multiple_of(ss) {
            return Err(BlockError::OutOfRange);
        }
        let count = (len / ss) as u64;
        match sector.checked_add(count) {
            Some(end) if end <= info.sectors => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

/// A window of `sectors` sectors of another block device, starting at `start`.
#[derive(Debug)]
pub struct Partition<B: Block + 'static> {
    disk: &'static B,
    start: u64,
    sectors: u64,
}

impl<B: Block + 'static> Partition<B> {
    /// The window `[start, start + sectors)` of `disk`; fails if it does not fit.
    pub fn new(disk: &'static B, start: u64, sectors: u64) -> Result<Self, BlockError> {
        match start.checked_add(sectors) {
            Some(end) if end <= disk.info().sectors && sectors > 0 => Ok(Partition {
                disk,
                start,
                sectors,
            }),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

impl<B: Block + 'static> Block for Partition<B> {
    fn info(&self) -> BlockInfo {
        BlockInfo {
            sectors: self.sectors,
            ..self.disk.info()
        }
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        self.disk.read(self.start + sector, buf).await
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        self.disk.write(self.start + sector, buf).await
    }

    fn file_span(&self, offset: u64, len: u64) -> Option<crate::kv::FileSpan> {
        let size = self.info().capacity();
        if offset.checked_add(len)? > size {
            return None;
        }
        let start = self
            .start
            .checked_mul(u64::from(self.disk.info().sector_size))?;
        self.disk.file_span(start.checked_add(offset)?, len)
    }
}
