//! The Solo5 hvt/spt ABI, shared by guests and tenders.
//!
//! Everything a Solo5 guest and a Solo5 tender must agree on lives here, as
//! constants and `#[repr(C)]` structs whose sizes and field offsets are pinned
//! by compile-time assertions:
//!
//! * the ELF notes a guest carries ([`Abi1Note`], [`Mft1Note`]) and their
//!   byte encoders ([`abi1_note_bytes`], [`encode_mft1_note`]);
//! * the application manifest ([`MftHeader`], [`MftEntry`]);
//! * the boot information the tenders hand over ([`hvt::HvtBootInfo`],
//!   [`spt::SptBootInfo`]);
//! * the hvt hypercall numbers, I/O ports and argument structs ([`hvt`]);
//! * the result and exit codes.
//!
//! The values follow Solo5 at `HVT_ABI_VERSION` = `SPT_ABI_VERSION` = 2 and
//! `MFT_VERSION` = 1 (Solo5 v0.12). All integers are little-endian; C `int`
//! and enums are 4 bytes, `size_t` and pointers 8.
//!
//! The crate is `no_std`, has no dependencies and contains no `unsafe`, so the
//! guest runtime can use it as is.
//!
//! # Declaring the notes in a guest
//!
//! ```
//! use solo5_abi::{Abi1Note, AbiTarget, Mft1Note, MftDevice};
//!
//! // Each note must end up in its own PT_NOTE (see the Solo5 fact sheet).
//! #[used]
//! #[unsafe(link_section = ".note.solo5.abi")]
//! static ABI: Abi1Note = Abi1Note::new(AbiTarget::Hvt);
//!
//! // Two entries: the reserved entry 0 and one block device.
//! #[used]
//! #[unsafe(link_section = ".note.solo5.manifest")]
//! static MANIFEST: Mft1Note<2> = Mft1Note::new(&[MftDevice::block("storage")]);
//! # assert_eq!(core::mem::size_of_val(&MANIFEST), 32 + 104 * 2);
//! ```
#![no_std]
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

use core::mem::{align_of, offset_of, size_of};

pub mod hvt;
pub mod spt;

// ---------------------------------------------------------------------------
// ELF notes
// ---------------------------------------------------------------------------

/// The `n_name` of every Solo5 note, padded to its 8-byte field.
pub const NOTE_NAME: [u8; 8] = *b"Solo5\0\0\0";
/// The `n_namesz` of every Solo5 note (`"Solo5\0"`).
pub const NOTE_NAMESZ: u32 = 6;
/// Size of the note header the tenders read: `namesz, descsz, type, name[8]`.
pub const NOTE_HEADER_SIZE: usize = 20;

/// Note type of the ABI note, ASCII `"ABI1"` read little-endian.
pub const NOTE_TYPE_ABI1: u32 = 0x3149_4241;
/// Note type of the manifest note, ASCII `"MFT1"` read little-endian.
pub const NOTE_TYPE_MFT1: u32 = 0x3154_464d;

/// Internal descriptor alignment of the ABI note (no pad after the header).
pub const ABI1_NOTE_ALIGN: usize = 4;
/// The largest ABI descriptor a tender accepts.
pub const ABI1_NOTE_MAX_DESCSZ: u32 = 32;
/// Internal descriptor alignment of the manifest note (alignment of `struct mft`).
pub const MFT1_NOTE_ALIGN: usize = 8;
/// Pad bytes between the 20-byte note header and the manifest.
pub const MFT1_NOTE_PAD: usize = 4;
/// The largest manifest descriptor a tender accepts: pad + header + 64 entries.
pub const MFT1_NOTE_MAX_DESCSZ: u32 =
    (MFT1_NOTE_PAD + size_of::<MftHeader>() + MFT_MAX_ENTRIES * size_of::<MftEntry>()) as u32;

/// Rounds `n` up to a multiple of `align` (a power of two).
const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// The note header as it appears in the file (20 bytes, 4-aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteHeader {
    /// Length of the name including its NUL: always [`NOTE_NAMESZ`].
    pub namesz: u32,
    /// Length of the descriptor, including Solo5's internal alignment pad.
    pub descsz: u32,
    /// [`NOTE_TYPE_ABI1`] or [`NOTE_TYPE_MFT1`].
    pub note_type: u32,
    /// [`NOTE_NAME`].
    pub name: [u8; 8],
}

impl NoteHeader {
    /// A Solo5 note header of the given type and descriptor size.
    pub const fn solo5(note_type: u32, descsz: u32) -> Self {
        NoteHeader {
            namesz: NOTE_NAMESZ,
            descsz,
            note_type,
            name: NOTE_NAME,
        }
    }

    /// Decodes the first 20 bytes of `bytes`, or `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < NOTE_HEADER_SIZE {
            return None;
        }
        let mut name = [0; 8];
        name.copy_from_slice(&bytes[12..20]);
        Some(NoteHeader {
            namesz: le_u32(bytes, 0),
            descsz: le_u32(bytes, 4),
            note_type: le_u32(bytes, 8),
            name,
        })
    }

    /// The 20 bytes of this header.
    pub const fn to_bytes(&self) -> [u8; NOTE_HEADER_SIZE] {
        let mut out = [0u8; NOTE_HEADER_SIZE];
        put_u32(&mut out, 0, self.namesz);
        put_u32(&mut out, 4, self.descsz);
        put_u32(&mut out, 8, self.note_type);
        let mut i = 0;
        while i < 8 {
            out[12 + i] = self.name[i];
            i += 1;
        }
        out
    }

    /// True when this is a Solo5 note (`namesz` 6 and name `"Solo5\0"`).
    pub fn is_solo5(&self) -> bool {
        self.namesz == NOTE_NAMESZ && self.name[..6] == NOTE_NAME[..6]
    }
}

// ---------------------------------------------------------------------------
// ABI note
// ---------------------------------------------------------------------------

/// The ABI targets Solo5 knows (`abi1_info.abi_target`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbiTarget {
    /// `solo5-hvt`: hardware virtualization (KVM, bhyve, OpenBSD vmm).
    Hvt = 1,
    /// `solo5-spt`: a seccomp-sandboxed Linux process.
    Spt = 2,
    /// virtio (not a tender).
    Virtio = 3,
    /// Muen SK.
    Muen = 4,
    /// Genode.
    Genode = 5,
    /// Xen PVH.
    Xen = 6,
}

impl AbiTarget {
    /// The target with this raw value, if Solo5 defines one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => AbiTarget::Hvt,
            2 => AbiTarget::Spt,
            3 => AbiTarget::Virtio,
            4 => AbiTarget::Muen,
            5 => AbiTarget::Genode,
            6 => AbiTarget::Xen,
            _ => return None,
        })
    }

    /// The raw value stored in the note.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The ABI version a guest of this target declares and a tender requires,
    /// where Solo5 defines one (hvt and spt: 2).
    pub const fn abi_version(self) -> Option<u32> {
        match self {
            AbiTarget::Hvt => Some(HVT_ABI_VERSION),
            AbiTarget::Spt => Some(SPT_ABI_VERSION),
            _ => None,
        }
    }

    /// Solo5's name for the target, as used in tender messages (`solo5-hvt`).
    pub const fn name(self) -> &'static str {
        match self {
            AbiTarget::Hvt => "solo5-hvt",
            AbiTarget::Spt => "solo5-spt",
            AbiTarget::Virtio => "solo5-virtio",
            AbiTarget::Muen => "solo5-muen",
            AbiTarget::Genode => "solo5-genode",
            AbiTarget::Xen => "solo5-xen",
        }
    }
}

/// ABI version of the hvt target.
pub const HVT_ABI_VERSION: u32 = 2;
/// ABI version of the spt target.
pub const SPT_ABI_VERSION: u32 = 2;

/// The ABI note's descriptor, `struct abi1_info` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abi1Info {
    /// An [`AbiTarget`] value.
    pub abi_target: u32,
    /// Must equal the tender's ABI version exactly.
    pub abi_version: u32,
    /// Zero.
    pub reserved0: u32,
    /// Zero.
    pub reserved1: u32,
}

impl Abi1Info {
    /// The info a guest of `target` declares (its current ABI version, or 0
    /// for targets without a tender here).
    pub const fn new(target: AbiTarget) -> Self {
        let abi_version = match target.abi_version() {
            Some(v) => v,
            None => 0,
        };
        Abi1Info {
            abi_target: target.raw(),
            abi_version,
            reserved0: 0,
            reserved1: 0,
        }
    }

    /// Decodes the first 16 bytes of `bytes`, or `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Abi1Info>() {
            return None;
        }
        Some(Abi1Info {
            abi_target: le_u32(bytes, 0),
            abi_version: le_u32(bytes, 4),
            reserved0: le_u32(bytes, 8),
            reserved1: le_u32(bytes, 12),
        })
    }
}

/// The whole ABI note as placed in `.note.solo5.abi` (36 bytes, 4-aligned).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abi1Note {
    /// Solo5 note header, type [`NOTE_TYPE_ABI1`], descsz 16.
    pub header: NoteHeader,
    /// The descriptor (no pad: the internal alignment is 4).
    pub info: Abi1Info,
}

impl Abi1Note {
    /// The ABI note for `target`.
    pub const fn new(target: AbiTarget) -> Self {
        Abi1Note {
            header: NoteHeader::solo5(NOTE_TYPE_ABI1, size_of::<Abi1Info>() as u32),
            info: Abi1Info::new(target),
        }
    }
}

/// Size in bytes of the ABI note.
pub const ABI1_NOTE_SIZE: usize = size_of::<Abi1Note>();

/// The exact bytes of the ABI note for `target` (36 bytes).
pub const fn abi1_note_bytes(target: AbiTarget) -> [u8; ABI1_NOTE_SIZE] {
    let note = Abi1Note::new(target);
    let mut out = [0u8; ABI1_NOTE_SIZE];
    let header = note.header.to_bytes();
    let mut i = 0;
    while i < NOTE_HEADER_SIZE {
        out[i] = header[i];
        i += 1;
    }
    put_u32(&mut out, 20, note.info.abi_target);
    put_u32(&mut out, 24, note.info.abi_version);
    put_u32(&mut out, 28, note.info.reserved0);
    put_u32(&mut out, 32, note.info.reserved1);
    out
}

// ---------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------

/// The manifest format version (`MFT_VERSION`).
pub const MFT_VERSION: u32 = 1;
/// Most entries a manifest may have, the reserved entry 0 included.
pub const MFT_MAX_ENTRIES: usize = 64;
/// Size of an entry's name field, NUL included.
pub const MFT_NAME_SIZE: usize = 68;
/// Longest device name (the last byte of the field must be NUL).
pub const MFT_NAME_MAX: usize = MFT_NAME_SIZE - 1;

/// Entry type of a block device (`MFT_DEV_BLOCK_BASIC`).
pub const MFT_DEV_BLOCK_BASIC: u32 = 1;
/// Entry type of a network device (`MFT_DEV_NET_BASIC`).
pub const MFT_DEV_NET_BASIC: u32 = 2;
/// Entry type of the reserved entry 0 (`MFT_RESERVED_FIRST`).
pub const MFT_RESERVED_FIRST: u32 = 1 << 30;

/// The two kinds of device a manifest can declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// `BLOCK_BASIC`: a block device.
    Block,
    /// `NET_BASIC`: an Ethernet interface.
    Net,
}

impl DeviceType {
    /// The raw `mft_entry.type` value.
    pub const fn raw(self) -> u32 {
        match self {
            DeviceType::Block => MFT_DEV_BLOCK_BASIC,
            DeviceType::Net => MFT_DEV_NET_BASIC,
        }
    }

    /// The device type with this raw value, if it is one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            MFT_DEV_BLOCK_BASIC => Some(DeviceType::Block),
            MFT_DEV_NET_BASIC => Some(DeviceType::Net),
            _ => None,
        }
    }

    /// Solo5's name for the type (`BLOCK_BASIC`, `NET_BASIC`).
    pub const fn name(self) -> &'static str {
        match self {
            DeviceType::Block => "BLOCK_BASIC",
            DeviceType::Net => "NET_BASIC",
        }
    }
}

/// `struct mft` without its entries: the 8 bytes before `e[0]`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MftHeader {
    /// [`MFT_VERSION`].
    pub version: u32,
    /// Number of entries, the reserved entry 0 included.
    pub entries: u32,
}

/// `struct mft_entry`: one manifest entry (104 bytes, align 8).
///
/// The C unions are kept as raw bytes so that every bit pattern is a valid
/// value; use the accessors to read and write them.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MftEntry {
    /// NUL-terminated name, 1..=67 ASCII alphanumeric characters.
    pub name: [u8; MFT_NAME_SIZE],
    /// [`MFT_DEV_BLOCK_BASIC`], [`MFT_DEV_NET_BASIC`] or [`MFT_RESERVED_FIRST`].
    pub entry_type: u32,
    /// Union `u`: block `capacity u64 @0, block_size u16 @8`; net
    /// `mac[6] @0, mtu u16 @6`. Filled in by the tender.
    pub u: [u8; 16],
    /// Union `b`: the host fd (C `int`, low 4 bytes) or a tender-private
    /// pointer. Filled in by the tender.
    pub b: u64,
    /// C `bool`: set to 1 by the tender once the device is attached.
    pub attached: u8,
    /// Padding to 104 bytes.
    pub reserved: [u8; 7],
}

/// Size of an encoded [`MftEntry`].
pub const MFT_ENTRY_SIZE: usize = size_of::<MftEntry>();

impl MftEntry {
    /// An all-zero entry.
    pub const ZERO: MftEntry = MftEntry {
        name: [0; MFT_NAME_SIZE],
        entry_type: 0,
        u: [0; 16],
        b: 0,
        attached: 0,
        reserved: [0; 7],
    };

    /// The reserved entry 0 every manifest starts with.
    pub const RESERVED: MftEntry = MftEntry {
        entry_type: MFT_RESERVED_FIRST,
        ..MftEntry::ZERO
    };

    /// A device entry, as it appears in the guest's note (not attached).
    ///
    /// Panics (a compile error in const context) if the name is invalid; see
    /// [`check_device_name`].
    pub const fn device(name: &str, ty: DeviceType) -> Self {
        if let Err(e) = check_device_name(name) {
            panic!("{}", e.message());
        }
        let mut entry = MftEntry {
            entry_type: ty.raw(),
            ..MftEntry::ZERO
        };
        let bytes = name.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            entry.name[i] = bytes[i];
            i += 1;
        }
        entry
    }

    /// The name up to its first NUL (the whole field if there is none).
    pub fn name_bytes(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MFT_NAME_SIZE);
        &self.name[..end]
    }

    /// The name as a string, if it is UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        core::str::from_utf8(self.name_bytes()).ok()
    }

    /// The device type, if the entry is a block or network device.
    pub fn device_type(&self) -> Option<DeviceType> {
        DeviceType::from_raw(self.entry_type)
    }

    /// Whether the tender attached the device.
    pub fn is_attached(&self) -> bool {
        self.attached != 0
    }

    /// Block device info `(capacity, block_size)` from the `u` union.
    pub fn block_info(&self) -> (u64, u16) {
        (le_u64(&self.u, 0), le_u16(&self.u, 8))
    }

    /// Stores block device info into the `u` union.
    pub fn set_block_info(&mut self, capacity: u64, block_size: u16) {
        self.u = [0; 16];
        self.u[0..8].copy_from_slice(&capacity.to_le_bytes());
        self.u[8..10].copy_from_slice(&block_size.to_le_bytes());
    }

    /// Network device info `(mac, mtu)` from the `u` union.
    pub fn net_info(&self) -> ([u8; 6], u16) {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.u[0..6]);
        (mac, le_u16(&self.u, 6))
    }

    /// Stores network device info into the `u` union.
    pub fn set_net_info(&mut self, mac: [u8; 6], mtu: u16) {
        self.u = [0; 16];
        self.u[0..6].copy_from_slice(&mac);
        self.u[6..8].copy_from_slice(&mtu.to_le_bytes());
    }

    /// The host fd stored in the `b` union (spt uses it directly).
    pub fn hostfd(&self) -> i32 {
        self.b as u32 as i32
    }

    /// Stores a host fd into the `b` union.
    pub fn set_hostfd(&mut self, fd: i32) {
        self.b = u64::from(fd as u32);
    }

    /// Decodes an entry from the first 104 bytes of `bytes`, or `None` if there are fewer.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < MFT_ENTRY_SIZE {
            return None;
        }
        let mut e = MftEntry::ZERO;
        e.name.copy_from_slice(&bytes[0..68]);
        e.entry_type = le_u32(bytes, 68);
        e.u.copy_from_slice(&bytes[72..88]);
        e.b = le_u64(bytes, 88);
        e.attached = bytes[96];
        e.reserved.copy_from_slice(&bytes[97..104]);
        Some(e)
    }

    /// The 104 bytes of this entry.
    pub const fn to_bytes(&self) -> [u8; MFT_ENTRY_SIZE] {
        let mut out = [0u8; MFT_ENTRY_SIZE];
        let mut i = 0;
        while i < MFT_NAME_SIZE {
            out[i] = self.name[i];
            i += 1;
        }
        put_u32(&mut out, 68, self.entry_type);
        let mut i = 0;
        while i < 16 {
            out[72 + i] = self.u[i];
            i += 1;
        }
        let b = self.b.to_le_bytes();
        let mut i = 0;
        while i < 8 {
            out[88 + i] = b[i];
            i += 1;
        }
        out[96] = self.attached;
        let mut i = 0;
        while i < 7 {
            out[97 + i] = self.reserved[i];
            i += 1;
        }
        out
    }
}

/// One user device for the manifest encoders: a name and a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MftDevice<'a> {
    /// Device name: 1..=67 ASCII alphanumeric characters.
    pub name: &'a str,
    /// Block or network.
    pub ty: DeviceType,
}

impl<'a> MftDevice<'a> {
    /// A `BLOCK_BASIC` device.
    pub const fn block(name: &'a str) -> Self {
        MftDevice {
            name,
            ty: DeviceType::Block,
        }
    }

    /// A `NET_BASIC` device.
    pub const fn net(name: &'a str) -> Self {
        MftDevice {
            name,
            ty: DeviceType::Net,
        }
    }
}

/// The manifest proper, `struct mft`, with a fixed number of entries `N`
/// (the reserved entry 0 included).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mft<const N: usize> {
    /// Version and entry count.
    pub header: MftHeader,
    /// `e[0]` is [`MftEntry::RESERVED`]; device handle = index.
    pub entries: [MftEntry; N],
}

/// The whole manifest note as placed in `.note.solo5.manifest`, for a
/// manifest of `N` entries (the reserved entry 0 included): `32 + 104 × N` bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mft1Note<const N: usize> {
    /// Solo5 note header, type [`NOTE_TYPE_MFT1`].
    pub header: NoteHeader,
    /// The 4 pad bytes Solo5's internal 8-byte alignment puts before the manifest.
    pub pad: [u8; MFT1_NOTE_PAD],
    /// The manifest.
    pub mft: Mft<N>,
}

impl<const N: usize> Mft1Note<N> {
    /// The manifest note declaring `devices`, in order (handles 1, 2, ...).
    ///
    /// `N` must be `devices.len() + 1`; the reserved entry 0 is added here.
    /// Panics (a compile error in const context) if a name is invalid, a name
    /// repeats, or the counts do not fit.
    pub const fn new(devices: &[MftDevice<'_>]) -> Self {
        assert!(
            N == devices.len() + 1,
            "Mft1Note<N>: N must be the number of devices plus one"
        );
        if let Err(e) = check_devices(devices) {
            panic!("{}", e.message());
        }
        let mut entries = [MftEntry::ZERO; N];
        entries[0] = MftEntry::RESERVED;
        let mut i = 0;
        while i < devices.len() {
            entries[i + 1] = MftEntry::device(devices[i].name, devices[i].ty);
            i += 1;
        }
        Mft1Note {
            header: NoteHeader::solo5(NOTE_TYPE_MFT1, mft1_descsz(N) as u32),
            pad: [0; MFT1_NOTE_PAD],
            mft: Mft {
                header: MftHeader {
                    version: MFT_VERSION,
                    entries: N as u32,
                },
                entries,
            },
        }
    }
}

/// `n_descsz` of a manifest note with `entries` entries (pad included).
pub const fn mft1_descsz(entries: usize) -> usize {
    MFT1_NOTE_PAD + size_of::<MftHeader>() + entries * MFT_ENTRY_SIZE
}

/// Size in bytes of `struct mft` with `entries` entries.
pub const fn mft_size(entries: usize) -> usize {
    size_of::<MftHeader>() + entries * MFT_ENTRY_SIZE
}

/// Size in bytes of the manifest note declaring `devices` user devices
/// (`32 + 104 × (devices + 1)`).
pub const fn mft1_note_size(devices: usize) -> usize {
    NOTE_HEADER_SIZE + mft1_descsz(devices + 1)
}

/// Why a device list cannot be encoded as a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestEncodeError {
    /// A name is empty.
    EmptyName,
    /// A name is longer than 67 bytes.
    NameTooLong,
    /// A name has a character other than ASCII letters and digits.
    NameNotAlphanumeric,
    /// Two devices have the same name.
    DuplicateName,
    /// More than 63 user devices.
    TooManyDevices,
    /// The output buffer is smaller than [`mft1_note_size`].
    BufferTooSmall,
}

impl ManifestEncodeError {
    /// A human-readable description.
    pub const fn message(self) -> &'static str {
        match self {
            ManifestEncodeError::EmptyName => "device name is empty",
            ManifestEncodeError::NameTooLong => "device name is longer than 67 characters",
            ManifestEncodeError::NameNotAlphanumeric => {
                "device name must be ASCII letters and digits only"
            }
            ManifestEncodeError::DuplicateName => "device name declared twice",
            ManifestEncodeError::TooManyDevices => "a manifest holds at most 63 devices",
            ManifestEncodeError::BufferTooSmall => "output buffer too small for the manifest note",
        }
    }
}

impl core::fmt::Display for ManifestEncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for ManifestEncodeError {}

/// Checks a device name the way `solo5-elftool` does: `[A-Za-z0-9]{1,67}`.
pub const fn check_device_name(name: &str) -> Result<(), ManifestEncodeError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(ManifestEncodeError::EmptyName);
    }
    if bytes.len() > MFT_NAME_MAX {
        return Err(ManifestEncodeError::NameTooLong);
    }
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            return Err(ManifestEncodeError::NameNotAlphanumeric);
        }
        i += 1;
    }
    Ok(())
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks a whole device list: valid, distinct names, at most 63 devices.
pub const fn check_devices(devices: &[MftDevice<'_>]) -> Result<(), ManifestEncodeError> {
    if devices.len() > MFT_MAX_ENTRIES - 1 {
        return Err(ManifestEncodeError::TooManyDevices);
    }
    let mut i = 0;
    while i < devices.len() {
        if let Err(e) = check_device_name(devices[i].name) {
            return Err(e);
        }
        let mut j = 0;
        while j < i {
            if str_eq(devices[i].name, devices[j].name) {
                return Err(ManifestEncodeError::DuplicateName);
            }
            j += 1;
        }
        i += 1;
    }
    Ok(())
}

/// Writes the exact bytes of the MFT1 note declaring `devices` (handles 1, 2,
/// ... in order) into `out`, and returns how many bytes were written
/// ([`mft1_note_size`]`(devices.len())`).
///
/// The bytes are: the 20-byte header, 4 zero pad bytes, the `struct mft`
/// header, the reserved entry 0, then one entry per device with all tender
/// fields zero. Place them 8-aligned in a section of their own PT_NOTE.
pub fn encode_mft1_note(
    devices: &[MftDevice<'_>],
    out: &mut [u8],
) -> Result<usize, ManifestEncodeError> {
    check_devices(devices)?;
    let entries = devices.len() + 1;
    let size = mft1_note_size(devices.len());
    let out = out
        .get_mut(..size)
        .ok_or(ManifestEncodeError::BufferTooSmall)?;
    out.fill(0);
    out[..NOTE_HEADER_SIZE].copy_from_slice(
        &NoteHeader::solo5(NOTE_TYPE_MFT1, mft1_descsz(entries) as u32).to_bytes(),
    );
    let mft = NOTE_HEADER_SIZE + MFT1_NOTE_PAD;
    out[mft..mft + 4].copy_from_slice(&MFT_VERSION.to_le_bytes());
    out[mft + 4..mft + 8].copy_from_slice(&(entries as u32).to_le_bytes());
    let first = mft + size_of::<MftHeader>();
    let chunks = out[first..].chunks_exact_mut(MFT_ENTRY_SIZE);
    for (i, chunk) in chunks.enumerate() {
        let entry = match i {
            0 => MftEntry::RESERVED,
            _ => MftEntry::device(devices[i - 1].name, devices[i - 1].ty),
        };
        chunk.copy_from_slice(&entry.to_bytes());
    }
    Ok(size)
}

// ---------------------------------------------------------------------------
// Results and exit codes
// ---------------------------------------------------------------------------

/// `SOLO5_R_OK`: the call succeeded.
pub const SOLO5_R_OK: i32 = 0;
/// `SOLO5_R_AGAIN`: nothing to do right now (e.g. no frame pending).
pub const SOLO5_R_AGAIN: i32 = 1;
/// `SOLO5_R_EINVAL`: invalid argument.
pub const SOLO5_R_EINVAL: i32 = 2;
/// `SOLO5_R_EUNSPEC`: unspecified error.
pub const SOLO5_R_EUNSPEC: i32 = 3;

/// `SOLO5_EXIT_SUCCESS`.
pub const SOLO5_EXIT_SUCCESS: i32 = 0;
/// `SOLO5_EXIT_FAILURE`.
pub const SOLO5_EXIT_FAILURE: i32 = 1;
/// `SOLO5_EXIT_ABORT`: what `solo5_abort()` reports.
pub const SOLO5_EXIT_ABORT: i32 = 255;

/// Tender process exit code for a problem of the tender's own (bad ELF,
/// manifest, option, device, host I/O error, guest fault, signal).
pub const TENDER_EXIT_ERROR: i32 = 1;
/// Tender exit code for `--help`.
pub const TENDER_EXIT_HELP: i32 = 1;
/// Tender exit code for `--version`.
pub const TENDER_EXIT_VERSION: i32 = 0;

/// The tender's exit code for a guest exit status: `status & 0xff`.
pub const fn exit_code_for_status(status: i32) -> i32 {
    status & 0xff
}

// ---------------------------------------------------------------------------
// Shared sizes
// ---------------------------------------------------------------------------

/// Lowest address a PT_LOAD may occupy (`HVT_GUEST_MIN_BASE`, `SPT_GUEST_MIN_BASE`).
pub const GUEST_MIN_BASE: u64 = 0x10_0000;
/// Size of the cmdline buffer, NUL included (`HVT_CMDLINE_SIZE`, `SPT_CMDLINE_SIZE`).
pub const CMDLINE_SIZE: usize = 8192;
/// `SOLO5_NET_ALEN`: bytes in a MAC address.
pub const NET_ALEN: usize = 6;
/// `SOLO5_NET_HLEN`: bytes in an Ethernet header.
pub const NET_HLEN: usize = 14;
/// The OpenBSD note some Solo5 binaries carry first (namesz 8, descsz 4, type 1).
pub const OPENBSD_NOTE_BYTES: [u8; 24] = [
    8, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, b'O', b'p', b'e', b'n', b'B', b'S', b'D', 0, 0, 0, 0, 0,
];

// ---------------------------------------------------------------------------
// Little-endian helpers (const-friendly)
// ---------------------------------------------------------------------------

const fn put_u32(out: &mut [u8], at: usize, v: u32) {
    let b = v.to_le_bytes();
    out[at] = b[0];
    out[at + 1] = b[1];
    out[at + 2] = b[2];
    out[at + 3] = b[3];
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

// ---------------------------------------------------------------------------
// Layout assertions
// ---------------------------------------------------------------------------

const _: () = {
    assert!(size_of::<NoteHeader>() == NOTE_HEADER_SIZE);
    assert!(size_of::<Abi1Info>() == 16);
    assert!(size_of::<Abi1Note>() == 36);
    assert!(align_of::<Abi1Note>() == ABI1_NOTE_ALIGN);
    assert!(offset_of!(Abi1Note, info) == 20);

    assert!(size_of::<MftHeader>() == 8);
    assert!(size_of::<MftEntry>() == 104);
    assert!(align_of::<MftEntry>() == 8);
    assert!(offset_of!(MftEntry, name) == 0);
    assert!(offset_of!(MftEntry, entry_type) == 68);
    assert!(offset_of!(MftEntry, u) == 72);
    assert!(offset_of!(MftEntry, b) == 88);
    assert!(offset_of!(MftEntry, attached) == 96);
    assert!(offset_of!(MftEntry, reserved) == 97);

    assert!(size_of::<Mft<3>>() == 8 + 3 * 104);
    assert!(offset_of!(Mft<3>, entries) == 8);
    assert!(size_of::<Mft1Note<1>>() == 32 + 104);
    assert!(size_of::<Mft1Note<64>>() == 32 + 64 * 104);
    assert!(align_of::<Mft1Note<1>>() == MFT1_NOTE_ALIGN);
    assert!(offset_of!(Mft1Note<1>, pad) == 20);
    assert!(offset_of!(Mft1Note<1>, mft) == 24);
    assert!(align_up(NOTE_HEADER_SIZE, MFT1_NOTE_ALIGN) - NOTE_HEADER_SIZE == MFT1_NOTE_PAD);
    assert!(align_up(NOTE_HEADER_SIZE, ABI1_NOTE_ALIGN) == NOTE_HEADER_SIZE);
    assert!(MFT1_NOTE_MAX_DESCSZ == 6668);
};

#[cfg(test)]
mod tests;
