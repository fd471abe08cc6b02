//! Secrets: values supplied when the unikernel is launched, never built into the image.
//!
//! On Solo5 the launcher (`compose run --secret NAME=@FILE`) encodes every secret into one
//! block device image and attaches it as the block device `secrets`, which the manifest
//! declares whenever the spec has a secret. The format (the composer's
//! `secrets_block_image`), all little-endian, in 512-byte sectors:
//!
//! * sector 0, the header: magic `CMPSECR1` (8 bytes), version `u32` = 1, count `u32`,
//!   total size in sectors `u64`, zeros;
//! * from sector 1, the table: `count` entries of 128 bytes, sorted by name: the name
//!   (64 bytes, NUL-padded, at most 63), the value's byte offset from the start of the
//!   image `u64` (a multiple of 512, after the table), its length `u64`, zeros; padded to
//!   a whole sector;
//! * then each value, starting on a sector boundary, zero-padded to a whole sector.
//!
//! [`Secret::open`] reads the image, checks all of it ([`find`]: every bound is checked, a
//! corrupt or hostile image is an error, never a panic), keeps a copy of the one value it
//! was asked for and wipes the rest.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

use compose_devices::block::Block as _;

use crate::{Bindings, Block, Boot, Error, boot};

/// The name of the block device that carries the secrets.
pub const SECRETS_DEVICE: &str = "secrets";

/// The sector size of a secrets image (and of the `secrets` block device).
const SECTOR: usize = 512;
/// The first eight bytes of a secrets image.
const MAGIC: &[u8; 8] = b"CMPSECR1";
/// The only format version.
const VERSION: u32 = 1;
/// Bytes per table entry.
const ENTRY: usize = 128;
/// Bytes of an entry's NUL-padded name.
const NAME_FIELD: usize = 64;

/// A secret's value, read at start from the `secrets` block device the launcher attached.
///
/// The value stays in memory for the rest of the run; it is wiped when the `Secret` is
/// dropped. `Debug` shows the name only.
pub struct Secret<B> {
    name: &'static str,
    value: Vec<u8>,
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> Secret<B> {
    /// Reads the secret `name` from the `secrets` block device.
    ///
    /// Call it before [`run`](crate::run) (the glue constructs devices first): the read is
    /// driven to completion on the executor. Fails, with a message naming the secret, if no
    /// secrets device is attached, the image is not a valid secrets image, or it has no
    /// value for `name`.
    pub fn open(boot: &Boot, name: &'static str) -> Result<Self, Error> {
        let value = read_value::<B>(boot, name)?;
        Ok(Secret {
            name,
            value,
            _target: PhantomData,
        })
    }

    /// The secret's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl<B> compose_devices::secret::Secret for Secret<B> {
    fn value(&self) -> &[u8] {
        &self.value
    }
}

impl<B> fmt::Debug for Secret<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &format_args!("<redacted>"))
            .finish()
    }
}

impl<B> Drop for Secret<B> {
    fn drop(&mut self) {
        wipe(&mut self.value);
    }
}

/// Opens the `secrets` device and returns a copy of `name`'s value.
fn read_value<B: Bindings>(boot: &Boot, name: &'static str) -> Result<Vec<u8>, Error> {
    let not_supplied = || {
        Error::new(format!(
            "secret '{name}' was not supplied: launch with --secret {name}=@FILE"
        ))
    };
    let entry = boot::manifest()
        .iter()
        .skip(1)
        .find(|e| e.name_str() == Some(SECRETS_DEVICE));
    match entry {
        None => {
            return Err(Error::new(format!(
                "secret '{name}': the unikernel's manifest has no '{SECRETS_DEVICE}' block \
                 device (the glue declares it when the spec has secrets): rebuild with compose"
            )));
        }
        Some(e) if !e.is_attached() => {
            return Err(Error::new(format!(
                "secret '{name}' was not supplied: no secrets device attached (block device \
                 '{SECRETS_DEVICE}'): launch with --secret {name}=@FILE"
            )));
        }
        Some(_) => {}
    }
    let block = Block::<B>::open(boot, SECRETS_DEVICE, SECTOR as u32)
        .map_err(|e| Error::new(format!("secret '{name}': {e}")))?;
    let corrupt = |e: FormatError| {
        Error::new(format!(
            "secret '{name}': the '{SECRETS_DEVICE}' block device is not a valid secrets \
             image: {e}"
        ))
    };
    let io = |e: compose_devices::block::BlockError| {
        Error::new(format!(
            "secret '{name}': cannot read the '{SECRETS_DEVICE}' block device: {e}"
        ))
    };

    // The header first, so that a wrong file attached as `secrets` is refused without
    // reading all of it.
    let mut head = [0u8; SECTOR];
    crate::block_on_io::<B, _>(block.read(0, &mut head))?.map_err(io)?;
    let header = header(&head).map_err(corrupt)?;
    if header.sectors != block.info().sectors {
        return Err(corrupt(FormatError::SizeMismatch));
    }
    let len =
        usize::try_from(block.info().capacity()).map_err(|_| corrupt(FormatError::SizeMismatch))?;
    let mut image = Vec::new();
    image.try_reserve_exact(len).map_err(|_| {
        Error::new(format!(
            "secret '{name}': the '{SECRETS_DEVICE}' block device ({len} bytes) does not fit \
             in memory"
        ))
    })?;
    image.resize(len, 0);
    let read = crate::block_on_io::<B, _>(block.read(0, &mut image));
    let found = match read {
        Ok(Ok(())) => find(&image, name).map_err(corrupt),
        Ok(Err(e)) => Err(io(e)),
        Err(e) => Err(e),
    };
    let value = found.and_then(|range| {
        let range = range.ok_or_else(not_supplied)?;
        let mut value = Vec::new();
        value.try_reserve_exact(range.len()).map_err(|_| {
            Error::new(format!(
                "secret '{name}': its value ({} bytes) does not fit in memory",
                range.len()
            ))
        })?;
        value.extend_from_slice(&image[range]);
        Ok(value)
    });
    // The other secrets' values are not kept.
    wipe(&mut image);
    wipe(&mut head);
    value
}

/// Overwrites `bytes` with zeros, in a way the compiler does not remove.
fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to one byte.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// Why a secrets image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// Shorter than the header sector.
    Truncated,
    /// The first eight bytes are not `CMPSECR1`.
    BadMagic,
    /// A version other than 1.
    BadVersion(u32),
    /// The header's size in sectors is not the image's.
    SizeMismatch,
    /// The table (`count` entries) does not fit in the image.
    TableOutOfRange,
    /// Entry `n`'s name is empty, not NUL-terminated within 64 bytes, or not UTF-8.
    BadName(usize),
    /// Entry `n`'s name is not after the previous one (unsorted or repeated).
    Unsorted(usize),
    /// Entry `n`'s value does not start on a sector boundary after the table.
    Misplaced(usize),
    /// Entry `n`'s value ends past the end of the image.
    ValueOutOfRange(usize),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Truncated => f.write_str("shorter than its header"),
            FormatError::BadMagic => f.write_str("bad magic (expected CMPSECR1)"),
            FormatError::BadVersion(v) => write!(f, "unknown version {v} (expected {VERSION})"),
            FormatError::SizeMismatch => f.write_str("its size does not match the header"),
            FormatError::TableOutOfRange => f.write_str("the table does not fit in the image"),
            FormatError::BadName(i) => write!(f, "entry {i}: malformed name"),
            FormatError::Unsorted(i) => write!(f, "entry {i}: names not sorted or repeated"),
            FormatError::Misplaced(i) => {
                write!(
                    f,
                    "entry {i}: value not on a sector boundary after the table"
                )
            }
            FormatError::ValueOutOfRange(i) => write!(f, "entry {i}: value past the end"),
        }
    }
}

/// What the header sector says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    /// Table entries.
    count: usize,
    /// The image's size in sectors.
    sectors: u64,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Reads the header from the image's first sector (or more).
fn header(image: &[u8]) -> Result<Header, FormatError> {
    if image.len() < SECTOR {
        return Err(FormatError::Truncated);
    }
    if image.get(..8) != Some(MAGIC.as_slice()) {
        return Err(FormatError::BadMagic);
    }
    let version = u32_at(image, 8).ok_or(FormatError::Truncated)?;
    if version != VERSION {
        return Err(FormatError::BadVersion(version));
    }
    let count = u32_at(image, 12).ok_or(FormatError::Truncated)?;
    let sectors = u64_at(image, 16).ok_or(FormatError::Truncated)?;
    let count = usize::try_from(count).map_err(|_| FormatError::TableOutOfRange)?;
    Ok(Header { count, sectors })
}

/// Checks a whole secrets image and returns where `name`'s value is in it (`None` if the
/// table has no such name). Every entry is checked, not only the one asked for.
pub(crate) fn find(image: &[u8], name: &str) -> Result<Option<Range<usize>>, FormatError> {
    let Header { count, sectors } = header(image)?;
    if sectors.checked_mul(SECTOR as u64) != Some(image.len() as u64) {
        return Err(FormatError::SizeMismatch);
    }
    let table_end = count
        .checked_mul(ENTRY)
        .and_then(|t| t.checked_next_multiple_of(SECTOR))
        .and_then(|t| t.checked_add(SECTOR))
        .filter(|end| *end <= image.len())
        .ok_or(FormatError::TableOutOfRange)?;
    let mut found = None;
    let mut previous: &[u8] = &[];
    for (i, entry) in image[SECTOR..table_end]
        .chunks_exact(ENTRY)
        .take(count)
        .enumerate()
    {
        let field = &entry[..NAME_FIELD];
        let entry_name = match field.iter().position(|b| *b == 0) {
            Some(len) if len > 0 => &field[..len],
            _ => return Err(FormatError::BadName(i)),
        };
        if core::str::from_utf8(entry_name).is_err() {
            return Err(FormatError::BadName(i));
        }
        if i > 0 && entry_name <= previous {
            return Err(FormatError::Unsorted(i));
        }
        previous = entry_name;
        let offset = u64_at(entry, NAME_FIELD).ok_or(FormatError::BadName(i))?;
        let length = u64_at(entry, NAME_FIELD + 8).ok_or(FormatError::BadName(i))?;
        let start = usize::try_from(offset)
            .ok()
            .filter(|s| s.is_multiple_of(SECTOR) && *s >= table_end)
            .ok_or(FormatError::Misplaced(i))?;
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= image.len())
            .ok_or(FormatError::ValueOutOfRange(i))?;
        if entry_name == name.as_bytes() {
            found = Some(start..end);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    /// An image as the launcher writes it, built by hand.
    fn image(secrets: &[(&str, &[u8])]) -> Vec<u8> {
        let table = (secrets.len() * ENTRY).next_multiple_of(SECTOR);
        let mut out = vec![0u8; SECTOR + table];
        for (i, (name, value)) in secrets.iter().enumerate() {
            let e = SECTOR + i * ENTRY;
            let offset = out.len() as u64;
            out[e..e + name.len()].copy_from_slice(name.as_bytes());
            out[e + 64..e + 72].copy_from_slice(&offset.to_le_bytes());
            out[e + 72..e + 80].copy_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
            out.resize(out.len().next_multiple_of(SECTOR), 0);
        }
        out[..8].copy_from_slice(b"CMPSECR1");
        out[8..12].copy_from_slice(&1u32.to_le_bytes());
        out[12..16].copy_from_slice(&(secrets.len() as u32).to_le_bytes());
        let sectors = (out.len() / SECTOR) as u64;
        out[16..24].copy_from_slice(&sectors.to_le_bytes());
        out
    }

    fn sample() -> Vec<u8> {
        image(&[
            ("api-token", b"t0k3n"),
            ("empty", b""),
            ("tls-key", &[b'k'; 700]),
        ])
    }

    fn value<'a>(img: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, FormatError> {
        Ok(find(img, name)?.map(|r| &img[r]))
    }

    fn set_u64(img: &mut [u8], at: usize, v: u64) {
        img[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Byte offset of entry `i`'s value offset field.
    fn offset_field(i: usize) -> usize {
        SECTOR + i * ENTRY + NAME_FIELD
    }

    #[test]
    fn valid_image() {
        let img = sample();
        // Header, one table sector, then 1 + 0 + 2 value sectors.
        assert_eq!(img.len(), 5 * SECTOR);
        assert_eq!(value(&img, "api-token"), Ok(Some(&b"t0k3n"[..])));
        assert_eq!(value(&img, "empty"), Ok(Some(&b""[..])));
        assert_eq!(value(&img, "tls-key"), Ok(Some(&[b'k'; 700][..])));
        // No secrets at all: a header and nothing else.
        let none = image(&[]);
        assert_eq!(none.len(), SECTOR);
        assert_eq!(find(&none, "token"), Ok(None));
        // A full table sector (4 entries) and one more.
        let many: Vec<(alloc::string::String, [u8; 1])> = (0..5)
            .map(|i| (format!("s{i}"), [b'0' + i as u8]))
            .collect();
        let refs: Vec<(&str, &[u8])> = many.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        let img = image(&refs);
        assert_eq!(img.len(), (1 + 2 + 5) * SECTOR);
        assert_eq!(value(&img, "s4"), Ok(Some(&b"4"[..])));
    }

    #[test]
    fn missing_name() {
        let img = sample();
        assert_eq!(find(&img, "token"), Ok(None));
        assert_eq!(find(&img, ""), Ok(None));
        assert_eq!(find(&img, "api-token\0"), Ok(None));
        assert_eq!(find(&img, "api"), Ok(None));
    }

    #[test]
    fn truncated() {
        let img = sample();
        assert_eq!(find(&[], "api-token"), Err(FormatError::Truncated));
        assert_eq!(find(&img[..24], "api-token"), Err(FormatError::Truncated));
        assert_eq!(
            find(&img[..SECTOR - 1], "api-token"),
            Err(FormatError::Truncated)
        );
        for cut in [SECTOR, 2 * SECTOR, img.len() - SECTOR, img.len() - 1] {
            assert_eq!(
                find(&img[..cut], "api-token"),
                Err(FormatError::SizeMismatch)
            );
        }
        // Truncated to whole sectors with a header that agrees: the values are cut off.
        let mut img = sample();
        img.truncate(4 * SECTOR);
        set_u64(&mut img, 16, 4);
        assert_eq!(
            find(&img, "api-token"),
            Err(FormatError::ValueOutOfRange(2))
        );
        // The header says more sectors than there are, or an absurd number.
        let mut img = sample();
        set_u64(&mut img, 16, 6);
        assert_eq!(find(&img, "api-token"), Err(FormatError::SizeMismatch));
        set_u64(&mut img, 16, u64::MAX);
        assert_eq!(find(&img, "api-token"), Err(FormatError::SizeMismatch));
    }

    #[test]
    fn table_out_of_range() {
        let mut img = sample();
        img[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find(&img, "api-token"), Err(FormatError::TableOutOfRange));
        // Enough entries to need a second table sector, which overlaps the values.
        img[12..16].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(find(&img, "api-token"), Err(FormatError::Misplaced(0)));
        // A table that runs past the end.
        let mut img = image(&[]);
        img[12..16].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(find(&img, "x"), Err(FormatError::TableOutOfRange));
    }

    #[test]
    fn offsets_out_of_range() {
        let img = sample();
        let check = |i: usize, offset: u64, want: FormatError| {
            let mut bad = img.clone();
            set_u64(&mut bad, offset_field(i), offset);
            assert_eq!(find(&bad, "api-token"), Err(want), "offset {offset:#x}");
        };
        check(0, 0, FormatError::Misplaced(0)); // the header
        check(0, SECTOR as u64, FormatError::Misplaced(0)); // the table
        check(0, 2 * SECTOR as u64 + 1, FormatError::Misplaced(0)); // unaligned
        check(2, 5 * SECTOR as u64, FormatError::ValueOutOfRange(2)); // past the end
        check(2, 4 * SECTOR as u64, FormatError::ValueOutOfRange(2)); // runs past the end
        check(1, 1 << 40, FormatError::ValueOutOfRange(1));
        check(1, u64::MAX, FormatError::Misplaced(1));
        check(1, u64::MAX - 511, FormatError::ValueOutOfRange(1));
        check(1, 5 * SECTOR as u64 + 512, FormatError::ValueOutOfRange(1));
        // An empty value may start right at the end.
        let mut bad = img.clone();
        set_u64(&mut bad, offset_field(1), 5 * SECTOR as u64);
        set_u64(&mut bad, offset_field(1) + 8, 0);
        assert_eq!(value(&bad, "empty"), Ok(Some(&b""[..])));
    }

    #[test]
    fn overlong_lengths() {
        let img = sample();
        for (i, length) in [
            (0, 3 * SECTOR as u64 + 1),
            (2, 2 * SECTOR as u64 + 1),
            (0, u64::MAX),
            (2, u64::MAX - 3 * SECTOR as u64 + 1),
            (1, 1 << 63),
        ] {
            let mut bad = img.clone();
            set_u64(&mut bad, offset_field(i) + 8, length);
            assert_eq!(
                find(&bad, "api-token"),
                Err(FormatError::ValueOutOfRange(i)),
                "entry {i}, length {length:#x}"
            );
        }
        // Up to the end of the image is still inside.
        let mut ok = img.clone();
        set_u64(&mut ok, offset_field(0) + 8, 3 * SECTOR as u64 - 1);
        assert_eq!(find(&ok, "api-token"), Ok(Some(2 * SECTOR..5 * SECTOR - 1)));
    }

    #[test]
    fn bad_magic_and_version() {
        let mut img = sample();
        img[0] = b'X';
        assert_eq!(find(&img, "api-token"), Err(FormatError::BadMagic));
        let mut img = sample();
        img[..8].copy_from_slice(b"CMPSECR2");
        assert_eq!(find(&img, "api-token"), Err(FormatError::BadMagic));
        let zeros = vec![0u8; 4 * SECTOR];
        assert_eq!(find(&zeros, "api-token"), Err(FormatError::BadMagic));
        let mut img = sample();
        img[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(find(&img, "api-token"), Err(FormatError::BadVersion(2)));
        img[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(find(&img, "api-token"), Err(FormatError::BadVersion(0)));
    }

    #[test]
    fn bad_names() {
        let img = sample();
        // Not NUL-terminated within the 64-byte field.
        let mut bad = img.clone();
        bad[SECTOR..SECTOR + NAME_FIELD].fill(b'a');
        assert_eq!(find(&bad, "api-token"), Err(FormatError::BadName(0)));
        // Empty.
        let mut bad = img.clone();
        bad[SECTOR + ENTRY..SECTOR + ENTRY + NAME_FIELD].fill(0);
        assert_eq!(find(&bad, "api-token"), Err(FormatError::BadName(1)));
        // Not UTF-8.
        let mut bad = img.clone();
        bad[SECTOR] = 0xff;
        assert_eq!(find(&bad, "api-token"), Err(FormatError::BadName(0)));
        // Repeated and unsorted.
        let dup = image(&[("a", b"1"), ("a", b"2")]);
        assert_eq!(find(&dup, "a"), Err(FormatError::Unsorted(1)));
        let unsorted = image(&[("b", b"1"), ("a", b"2")]);
        assert_eq!(find(&unsorted, "a"), Err(FormatError::Unsorted(1)));
        // Every entry is checked, not only up to the one asked for.
        let mut bad = img.clone();
        set_u64(&mut bad, offset_field(2), 1);
        assert_eq!(find(&bad, "api-token"), Err(FormatError::Misplaced(2)));
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        // Flip every byte of the header and the table in turn: an error or a value inside
        // the image, never a panic.
        let img = sample();
        for at in 0..2 * SECTOR {
            for v in [0x00, 0x01, 0x80, 0xff] {
                let mut bad = img.clone();
                bad[at] = v;
                if let Ok(Some(r)) = find(&bad, "api-token") {
                    assert!(r.end <= bad.len());
                }
            }
        }
    }

    #[test]
    fn debug_is_redacted() {
        struct NoTarget;
        let s: Secret<NoTarget> = Secret {
            name: "token",
            value: b"hunter2".to_vec(),
            _target: PhantomData,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("token") && shown.contains("redacted"),
            "{shown}"
        );
        assert_eq!(compose_devices::secret::Secret::value(&s), b"hunter2");
        assert!(compose_devices::secret::Secret::matches(&s, b"hunter2"));
    }
}
