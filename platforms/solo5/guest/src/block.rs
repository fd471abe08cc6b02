//! Block devices of the manifest, attached by the tender with `--block:NAME=FILE`.

use core::marker::PhantomData;

use compose_devices::block::{BlockError, BlockInfo};
use solo5_abi::DeviceType;

use crate::{Bindings, Boot, Error, HostError, boot};

/// A block device of the manifest. Reads and writes go to the tender one block per call
/// and complete before the call returns.
pub struct Block<B> {
    name: &'static str,
    handle: u64,
    info: BlockInfo,
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> Block<B> {
    /// The manifest's block device `name`, whose sectors the spec says are `sector_size`
    /// bytes.
    ///
    /// Fails if the manifest has no such block device, the tender did not attach it, or its
    /// block size (`--block-sector-size:NAME=N`, 512 by default) is not `sector_size`.
    pub fn open(_boot: &Boot, name: &'static str, sector_size: u32) -> Result<Self, Error> {
        let (handle, entry) = boot::device(name, DeviceType::Block)?;
        let (capacity, block_size) = entry.block_info();
        let block_size = u32::from(block_size);
        if block_size != sector_size {
            return Err(Error::new(alloc::format!(
                "block device '{name}' has {block_size}-byte sectors, but the spec says \
                 {sector_size}: attach it with --block-sector-size:{name}={sector_size}"
            )));
        }
        if block_size == 0 || !capacity.is_multiple_of(u64::from(block_size)) {
            return Err(Error::new(alloc::format!(
                "block device '{name}': capacity {capacity} is not a whole number of \
                 {block_size}-byte sectors"
            )));
        }
        let info = BlockInfo::new(block_size, capacity / u64::from(block_size));
        Ok(Block {
            name,
            handle,
            info,
            _target: PhantomData,
        })
    }

    fn sector_bytes(&self) -> usize {
        self.info.sector_size as usize
    }
}

impl<B> core::fmt::Debug for Block<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Block")
            .field("name", &self.name)
            .field("handle", &self.handle)
            .field("info", &self.info)
            .finish()
    }
}

fn io(e: HostError) -> BlockError {
    match e {
        HostError::Invalid => BlockError::OutOfRange,
        HostError::Unspecified => BlockError::Io,
    }
}

impl<B: Bindings> compose_devices::block::Block for Block<B> {
    fn info(&self) -> BlockInfo {
        self.info
    }

    async fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        let size = u64::from(self.info.sector_size);
        for (i, block) in buf.chunks_exact_mut(self.sector_bytes()).enumerate() {
            B::block_read(self.handle, (sector + i as u64) * size, block).map_err(io)?;
        }
        Ok(())
    }

    async fn write(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.check_range(sector, buf.len())?;
        let size = u64::from(self.info.sector_size);
        for (i, block) in buf.chunks_exact(self.sector_bytes()).enumerate() {
            B::block_write(self.handle, (sector + i as u64) * size, block).map_err(io)?;
        }
        Ok(())
    }
}
