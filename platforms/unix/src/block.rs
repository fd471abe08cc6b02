//! Block devices backed by host files, attached with `--block:NAME=PATH` (read-write if
//! the host allows) or `--block-ro:NAME=PATH` (read-only: opened `O_RDONLY`, and every
//! write fails with [`BlockError::ReadOnly`]). A layered image (`compose_blockfile`: what
//! the store keeps of a large block image a rebuild changed) is read through its parts,
//! and is always read-only.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use compose_blockfile::BlockFile;
use compose_devices::block::{BlockError, BlockInfo};
use compose_devices::kv::FileSpan;

use crate::{Boot, Error};

/// A host file (or host block device) used as a block device. Reads and writes are
/// positioned (pread/pwrite) and complete before the call returns.
#[derive(Debug)]
pub struct Block {
    file: File,
    /// The image, when `file` is a layered image's descriptor.
    layered: Option<BlockFile>,
    info: BlockInfo,
}

impl Block {
    /// Opens the file attached as `name`: read-only if it was attached with `--block-ro:`,
    /// else read-write if the host allows, else read-only.
    ///
    /// Fails if nothing is attached as `name`, if `sector_size` is not a power of two of
    /// at least 512, or if the file's size is not a whole number of sectors.
    pub fn open(boot: &Boot, name: &'static str, sector_size: u32) -> Result<Self, Error> {
        if sector_size < 512 || !sector_size.is_power_of_two() {
            return Err(Error::new(format!(
                "sector size {sector_size} is not a power of two of at least 512"
            )));
        }
        let path = boot.block(name).ok_or_else(|| {
            Error::new(format!(
                "block device '{name}' is not attached: pass --block:{name}=PATH"
            ))
        })?;
        let fail = |e: io::Error| Error::new(format!("{}: {e}", path.display()));
        let (mut file, read_only) = match OpenOptions::new()
            .read(true)
            .write(!boot.block_read_only(name))
            .open(path)
        {
            Ok(f) => (f, boot.block_read_only(name)),
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    || e.raw_os_error() == Some(libc::EROFS) =>
            {
                (File::open(path).map_err(fail)?, true)
            }
            Err(e) => return Err(fail(e)),
        };
        let (layered, read_only) = if compose_blockfile::is_layered(path).unwrap_or(false) {
            (Some(BlockFile::open(path).map_err(fail)?), true)
        } else {
            (None, read_only)
        };
        // Seeking to the end measures host block devices too, whose metadata length is 0.
        let size = match &layered {
            Some(image) => image.size(),
            None => file.seek(SeekFrom::End(0)).map_err(fail)?,
        };
        if size % u64::from(sector_size) != 0 {
            return Err(Error::new(format!(
                "{}: size {size} is not a multiple of the sector size {sector_size}",
                path.display()
            )));
        }
        let mut info = BlockInfo::new(sector_size, size / u64::from(sector_size));
        info.read_only = read_only;
        Ok(Block {
            file,
            layered,
            info,
        })
    }

    fn offset(&self, sector: u64) -> u64 {
        sector * u64::from(self.info.sector_size)
    }
}

impl compose_devices::block::Block for Block {
    fn info(&self) -> BlockInfo {
        self.info
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        match &self.layered {
            Some(image) => image.read_exact_at(buf, self.offset(sector)),
            None => self.file.read_exact_at(buf, self.offset(sector)),
        }
        .map_err(|_| BlockError::Io)
    }

    /// The span of the attached file itself: a server sends from it with sendfile(2).
    fn file_span(&self, offset: u64, len: u64) -> Option<FileSpan> {
        if offset.checked_add(len)? > self.info.capacity() {
            return None;
        }
        let (file, offset) = match &self.layered {
            // A value is always inside one part: the packer lays them out so.
            Some(image) => image.span(offset, len)?,
            None => (&self.file, offset),
        };
        Some(FileSpan {
            fd: file.as_raw_fd(),
            offset,
            len,
        })
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.info.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.check_range(sector, buf.len())?;
        self.file
            .write_all_at(buf, self.offset(sector))
            .map_err(|_| BlockError::Io)
    }
}
