//! The application manifest: decoding, validation (§1.4) and the tender's copy.
//!
//! The tender keeps a [`Manifest`] decoded from the guest's MFT1 note, fills in
//! the attached devices' fields (capacity, block size, MAC, MTU, host fd,
//! `attached`), and writes [`Manifest::encode`] into guest memory for the
//! guest to read its devices from.

use solo5_abi::{
    DeviceType, MFT_ENTRY_SIZE, MFT_MAX_ENTRIES, MFT_NAME_SIZE, MFT_RESERVED_FIRST, MFT_VERSION,
    ManifestEncodeError, MftDevice, MftEntry, MftHeader, mft_size,
};

/// Why a manifest is invalid (the tender says "Solo5 manifest is invalid").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The descriptor is too short to hold the header, or its size (pad
    /// removed) is not exactly `8 + 104 × entries`.
    #[error("descriptor size {size} does not match the entry count")]
    Size {
        /// Descriptor size with the pad removed.
        size: usize,
    },
    /// `version != 1`.
    #[error("unsupported manifest version {0}")]
    Version(u32),
    /// `entries` is 0 or over 64.
    #[error("{0} entries (must be 1 to 64)")]
    EntryCount(u32),
    /// Entry 0 is not the reserved entry.
    #[error("entry 0 is not the reserved entry")]
    FirstNotReserved,
    /// An entry's name has no NUL in its last byte.
    #[error("entry {0}: name is not NUL-terminated")]
    NameNotTerminated(usize),
    /// An entry is marked attached in the file.
    #[error("entry {0}: marked as attached in the executable")]
    AttachedInFile(usize),
}

/// A validated manifest: the reserved entry 0 followed by the devices. A
/// device's handle is its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<MftEntry>,
}

impl Manifest {
    /// Decodes and validates `struct mft` (the note descriptor without its pad).
    pub fn decode(mft: &[u8]) -> Result<Self, ManifestError> {
        let size = mft.len();
        if size < size_of::<MftHeader>() {
            return Err(ManifestError::Size { size });
        }
        let version = u32::from_le_bytes(mft[0..4].try_into().expect("4 bytes"));
        let count = u32::from_le_bytes(mft[4..8].try_into().expect("4 bytes"));
        if size != 8 + MFT_ENTRY_SIZE * count as usize {
            return Err(ManifestError::Size { size });
        }
        if version != MFT_VERSION {
            return Err(ManifestError::Version(version));
        }
        if count == 0 || count as usize > MFT_MAX_ENTRIES {
            return Err(ManifestError::EntryCount(count));
        }
        let entries: Vec<MftEntry> = mft[8..]
            .chunks_exact(MFT_ENTRY_SIZE)
            .map(|c| MftEntry::decode(c).expect("104-byte chunk"))
            .collect();
        if entries[0].entry_type != MFT_RESERVED_FIRST || entries[0].name[0] != 0 {
            return Err(ManifestError::FirstNotReserved);
        }
        for (i, e) in entries.iter().enumerate() {
            if e.name[MFT_NAME_SIZE - 1] != 0 {
                return Err(ManifestError::NameNotTerminated(i));
            }
            if e.attached != 0 {
                return Err(ManifestError::AttachedInFile(i));
            }
        }
        Ok(Manifest { entries })
    }

    /// The manifest a guest declaring `devices` carries (for tests and tools).
    pub fn from_devices(devices: &[MftDevice<'_>]) -> Result<Self, ManifestEncodeError> {
        solo5_abi::check_devices(devices)?;
        let mut entries = vec![MftEntry::RESERVED];
        entries.extend(devices.iter().map(|d| MftEntry::device(d.name, d.ty)));
        Ok(Manifest { entries })
    }

    /// All entries, the reserved entry 0 included.
    pub fn entries(&self) -> &[MftEntry] {
        &self.entries
    }

    /// The entry with this handle (entry 0 included).
    pub fn entry(&self, handle: u64) -> Option<&MftEntry> {
        self.entries.get(usize::try_from(handle).ok()?)
    }

    /// The entry with this handle, to fill in.
    pub fn entry_mut(&mut self, handle: u64) -> Option<&mut MftEntry> {
        self.entries.get_mut(usize::try_from(handle).ok()?)
    }

    /// The first device (handle ≥ 1) called `name`, with its handle.
    pub fn lookup(&self, name: &str) -> Option<(u64, &MftEntry)> {
        self.devices()
            .find(|(_, e)| e.name_bytes() == name.as_bytes())
    }

    /// The devices (handles ≥ 1) with their handles.
    pub fn devices(&self) -> impl Iterator<Item = (u64, &MftEntry)> {
        self.entries
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, e)| (i as u64, e))
    }

    /// Whether any device is of type `ty`.
    pub fn has_device_type(&self, ty: DeviceType) -> bool {
        self.devices().any(|(_, e)| e.device_type() == Some(ty))
    }

    /// Size of [`Manifest::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        mft_size(self.entries.len())
    }

    /// The bytes of `struct mft` as the tender places it in guest memory.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MFT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.to_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(devices: &[MftDevice<'_>]) -> Vec<u8> {
        Manifest::from_devices(devices).unwrap().encode()
    }

    #[test]
    fn round_trip() {
        let bytes = raw(&[MftDevice::net("service"), MftDevice::block("storage")]);
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.entries().len(), 3);
        assert_eq!(m.lookup("storage").unwrap().0, 2);
        assert_eq!(m.lookup("service").unwrap().0, 1);
        assert!(m.lookup("").is_none());
        assert!(m.has_device_type(DeviceType::Net));
        assert_eq!(m.encode(), bytes);
        assert_eq!(m.encoded_len(), bytes.len());
    }

    #[test]
    fn rejects_each_rule() {
        let good = raw(&[MftDevice::block("storage")]);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Manifest::decode(&b)
        };
        assert_eq!(with(&|b| b[0] = 2), Err(ManifestError::Version(2)));
        assert_eq!(
            with(&|b| b.truncate(b.len() - 1)),
            Err(ManifestError::Size {
                size: good.len() - 1
            })
        );
        assert_eq!(
            with(&|b| b.push(0)),
            Err(ManifestError::Size {
                size: good.len() + 1
            })
        );
        assert_eq!(
            with(&|b| b[8 + 68] = 1),
            Err(ManifestError::FirstNotReserved)
        );
        assert_eq!(with(&|b| b[8] = b'x'), Err(ManifestError::FirstNotReserved));
        assert_eq!(
            with(&|b| b[8 + 104 + 67] = b'x'),
            Err(ManifestError::NameNotTerminated(1))
        );
        assert_eq!(
            with(&|b| b[8 + 104 + 96] = 1),
            Err(ManifestError::AttachedInFile(1))
        );
        assert_eq!(
            Manifest::decode(&[1, 0, 0, 0]),
            Err(ManifestError::Size { size: 4 })
        );
        // Zero entries, and more than 64 (with a matching size).
        assert_eq!(
            Manifest::decode(&[1, 0, 0, 0, 0, 0, 0, 0]),
            Err(ManifestError::EntryCount(0))
        );
        let mut big = vec![0u8; 8 + 65 * 104];
        big[0] = 1;
        big[4] = 65;
        assert_eq!(Manifest::decode(&big), Err(ManifestError::EntryCount(65)));
    }
}
