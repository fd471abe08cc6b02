//! The host file behind a block device: a plain file, or a *layered image*.
//!
//! A layered image is how compose stores a large block image that a rebuild changed only
//! a little: instead of a new copy of every byte, a small text file (the *descriptor*)
//! says which byte ranges of which *parts* make up the image, in order. The parts are
//! files in the directory `<image>.parts/` next to the descriptor; they are never
//! modified once written, so an old image and a new one share the parts they have in
//! common (the store keeps them by hard link). What the guest sees is the same either
//! way: a block device whose bytes are the concatenation of the extents.
//!
//! The descriptor (UTF-8, one item per line):
//!
//! ```text
//! compose-layered-image v1
//! size 945766912
//! part b-2f0c7e41a9d35b60 945766912
//! part d-81aa0e7f3b2c9d14 7340032
//! extent 131072 1 0
//! extent 410320896 0 131072
//! ...
//! ```
//!
//! `size` is the image's length; each `part NAME SIZE` names a file in `<image>.parts/`
//! and its exact length; each `extent LEN PART OFFSET` appends `LEN` bytes of part number
//! `PART` (counting from 0, in the order listed) from `OFFSET`. The extents cover the
//! image exactly, in order. Part names are 1 to 80 characters of `0-9 a-z -`; parts are
//! opened without following symbolic links, so a descriptor reaches nothing outside its
//! own `.parts` directory.
//!
//! Layered images are read-only. [`BlockFile`] opens either kind (the first line tells
//! them apart) and reads, measures and locates bytes in them; [`LayoutBuilder`] is what a
//! writer (the assets packer) builds a layout with; [`copy_flat`] writes any image as one
//! plain file (for a consumer that needs one: Solo5's own tenders, a Xen disk, a bundle).

#![deny(missing_docs)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The first line of every descriptor.
pub const MAGIC: &str = "compose-layered-image v1";
/// A descriptor larger than this is refused (it would describe millions of extents).
pub const MAX_DESCRIPTOR: u64 = 16 << 20;
/// The most parts a descriptor may name.
pub const MAX_PARTS: usize = 4096;

/// `LEN` bytes of part `part` from `offset`, placed at `start` in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Where the extent begins in the image.
    pub start: u64,
    /// Its length (never 0).
    pub len: u64,
    /// The part it comes from (an index into [`Layout::parts`]).
    pub part: usize,
    /// Where in that part it begins.
    pub offset: u64,
}

/// What a descriptor says: the image's size, its parts and its extents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The image's length in bytes.
    pub size: u64,
    /// The parts, by name, with their lengths.
    pub parts: Vec<(String, u64)>,
    /// The extents, in image order, covering `0..size` exactly.
    pub extents: Vec<Extent>,
}

/// Whether `name` may name a part.
pub fn valid_part_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("layered image: {}", why.into()),
    )
}

impl Layout {
    /// Parses and checks a descriptor.
    pub fn parse(text: &str) -> io::Result<Layout> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad(format!("the first line is not `{MAGIC}`")));
        }
        let size = match lines.next().and_then(|l| l.strip_prefix("size ")) {
            Some(n) => n.parse::<u64>().map_err(|_| bad("bad size line"))?,
            None => return Err(bad("the second line is not `size N`")),
        };
        let mut layout = Layout {
            size,
            ..Layout::default()
        };
        let mut at = 0u64;
        for (n, line) in lines.enumerate() {
            let line_no = n + 3;
            let fields: Vec<&str> = line.split(' ').collect();
            let num = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| bad(format!("line {line_no}: `{s}` is not a number")))
            };
            match fields.as_slice() {
                ["part", name, len] => {
                    if !layout.extents.is_empty() {
                        return Err(bad(format!("line {line_no}: a part after an extent")));
                    }
                    if !valid_part_name(name) || layout.parts.iter().any(|(p, _)| p == name) {
                        return Err(bad(format!("line {line_no}: bad or repeated part name")));
                    }
                    if layout.parts.len() == MAX_PARTS {
                        return Err(bad("too many parts"));
                    }
                    layout.parts.push((name.to_string(), num(len)?));
                }
                ["extent", len, part, offset] => {
                    let (len, offset) = (num(len)?, num(offset)?);
                    let part = num(part)? as usize;
                    let part_len = layout
                        .parts
                        .get(part)
                        .map(|p| p.1)
                        .ok_or_else(|| bad(format!("line {line_no}: no part {part}")))?;
                    let end = offset.checked_add(len);
                    if len == 0 || end.is_none_or(|e| e > part_len) {
                        return Err(bad(format!(
                            "line {line_no}: the extent is empty or outside its part"
                        )));
                    }
                    layout.extents.push(Extent {
                        start: at,
                        len,
                        part,
                        offset,
                    });
                    at = at
                        .checked_add(len)
                        .filter(|e| *e <= size)
                        .ok_or_else(|| bad("the extents are longer than the size"))?;
                }
                [""] => {}
                _ => return Err(bad(format!("line {line_no}: not `part` or `extent`"))),
            }
        }
        if at != size {
            return Err(bad("the extents do not cover the image"));
        }
        Ok(layout)
    }

    /// The descriptor's text.
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\nsize {}\n", self.size);
        for (name, len) in &self.parts {
            s.push_str(&format!("part {name} {len}\n"));
        }
        for e in &self.extents {
            s.push_str(&format!("extent {} {} {}\n", e.len, e.part, e.offset));
        }
        s
    }

    /// The index of the extent holding byte `offset` (`None` past the end).
    pub fn extent_at(&self, offset: u64) -> Option<usize> {
        if offset >= self.size {
            return None;
        }
        Some(self.extents.partition_point(|e| e.start + e.len <= offset))
    }

    /// The pieces of `offset..offset + len`: (part, offset in the part, length), in order.
    /// Empty if the range is not inside the image.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        let Some(end) = offset.checked_add(len).filter(|e| *e <= self.size) else {
            return out;
        };
        let (mut at, Some(mut i)) = (offset, self.extent_at(offset)) else {
            return out;
        };
        while at < end {
            let e = self.extents[i];
            let skip = at - e.start;
            let n = (e.len - skip).min(end - at);
            out.push((e.part, e.offset + skip, n));
            at += n;
            i += 1;
        }
        out
    }

    /// The total length of the parts: what the image costs on disk, with what other
    /// images' extents use of the same parts.
    pub fn parts_len(&self) -> u64 {
        self.parts.iter().map(|p| p.1).sum()
    }
}

/// Builds a [`Layout`] piece by piece, in image order; adjacent pieces of one part that
/// follow each other are merged into one extent.
#[derive(Debug, Default)]
pub struct LayoutBuilder {
    layout: Layout,
}

impl LayoutBuilder {
    /// An empty layout.
    pub fn new() -> LayoutBuilder {
        LayoutBuilder::default()
    }

    /// The index of the part `name`, adding it (with length `len`) if it is new.
    pub fn part(&mut self, name: &str, len: u64) -> usize {
        match self.layout.parts.iter().position(|(p, _)| p == name) {
            Some(i) => i,
            None => {
                self.layout.parts.push((name.to_string(), len));
                self.layout.parts.len() - 1
            }
        }
    }

    /// Sets the length of part `part` (for a part still being written).
    pub fn set_part_len(&mut self, part: usize, len: u64) {
        self.layout.parts[part].1 = len;
    }

    /// Appends `len` bytes of `part` from `offset`.
    pub fn push(&mut self, part: usize, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.layout.extents.last_mut()
            && last.part == part
            && last.offset + last.len == offset
        {
            last.len += len;
        } else {
            self.layout.extents.push(Extent {
                start: self.layout.size,
                len,
                part,
                offset,
            });
        }
        self.layout.size += len;
    }

    /// Cuts the image back to `size` bytes (dropping or shortening the last extents).
    pub fn truncate(&mut self, size: u64) {
        while let Some(last) = self.layout.extents.last_mut() {
            if last.start >= size {
                self.layout.extents.pop();
            } else {
                last.len = last.len.min(size - last.start);
                break;
            }
        }
        self.layout.size = self.layout.size.min(size);
    }

    /// The image's length so far.
    pub fn size(&self) -> u64 {
        self.layout.size
    }

    /// The layout, without parts no extent uses (the others renumbered).
    pub fn finish(self) -> Layout {
        let mut layout = self.layout;
        let mut used = vec![false; layout.parts.len()];
        for e in &layout.extents {
            used[e.part] = true;
        }
        let mut map = vec![usize::MAX; layout.parts.len()];
        let mut parts = Vec::new();
        for (i, p) in layout.parts.into_iter().enumerate() {
            if used[i] {
                map[i] = parts.len();
                parts.push(p);
            }
        }
        for e in &mut layout.extents {
            e.part = map[e.part];
        }
        layout.parts = parts;
        layout
    }
}

/// `<image>.parts`: where a layered image's parts are.
pub fn parts_dir(image: &Path) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(".parts");
    PathBuf::from(p)
}

/// Whether the file at `path` is a layered image's descriptor.
pub fn is_layered(path: &Path) -> io::Result<bool> {
    let f = File::open(path)?;
    is_descriptor(&f)
}

fn is_descriptor(f: &File) -> io::Result<bool> {
    let mut head = [0u8; MAGIC.len() + 1];
    match f.read_exact_at(&mut head, 0) {
        Ok(()) => Ok(&head[..MAGIC.len()] == MAGIC.as_bytes() && head[MAGIC.len()] == b'\n'),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads the descriptor at `path` (`None`: the file is a plain one).
pub fn read_layout(path: &Path) -> io::Result<Option<Layout>> {
    let f = File::open(path)?;
    if !is_descriptor(&f)? {
        return Ok(None);
    }
    if f.metadata()?.len() > MAX_DESCRIPTOR {
        return Err(bad("the descriptor is too large"));
    }
    let mut text = String::new();
    (&f).read_to_string(&mut text)
        .map_err(|_| bad("the descriptor is not UTF-8"))?;
    Layout::parse(&text).map(Some)
}

/// An open block image: a plain file, or a layered image's parts.
#[derive(Debug)]
pub struct BlockFile {
    parts: Vec<File>,
    layout: Layout,
    layered: bool,
}

impl BlockFile {
    /// Opens the image at `path` for reading. A layered image's parts are opened from
    /// `<path>.parts/` (never through a symbolic link) and must have the lengths the
    /// descriptor gives.
    pub fn open(path: &Path) -> io::Result<BlockFile> {
        let f = File::open(path)?;
        if is_descriptor(&f)? {
            Self::open_layered(path)
        } else {
            let size = file_len(&f)?;
            Ok(BlockFile::plain(f, size))
        }
    }

    /// A plain file of `size` bytes as an image.
    pub fn plain(file: File, size: u64) -> BlockFile {
        let mut b = LayoutBuilder::new();
        let p = b.part("plain", size);
        b.push(p, 0, size);
        BlockFile {
            parts: vec![file],
            layout: b.finish(),
            layered: false,
        }
    }

    fn open_layered(path: &Path) -> io::Result<BlockFile> {
        let layout = read_layout(path)?.ok_or_else(|| bad("not a descriptor"))?;
        let dir = parts_dir(path);
        let mut parts = Vec::with_capacity(layout.parts.len());
        for (name, len) in &layout.parts {
            let at = dir.join(name);
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&at)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", at.display())))?;
            let m = f.metadata()?;
            if !m.is_file() || m.len() != *len {
                return Err(bad(format!(
                    "{} is not a file of {len} bytes",
                    at.display()
                )));
            }
            parts.push(f);
        }
        Ok(BlockFile {
            parts,
            layout,
            layered: true,
        })
    }

    /// The image's length in bytes.
    pub fn size(&self) -> u64 {
        self.layout.size
    }

    /// Whether it is a layered image.
    pub fn is_layered(&self) -> bool {
        self.layered
    }

    /// Its layout (a plain file: one part, one extent).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The open parts, in the layout's order.
    pub fn parts(&self) -> &[File] {
        &self.parts
    }

    /// Fills `buf` with the image's bytes from `offset`; an error if that runs past the end.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let pieces = self.layout.pieces(offset, buf.len() as u64);
        if pieces.is_empty() && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the image",
            ));
        }
        let mut at = 0usize;
        for (part, off, len) in pieces {
            let len = len as usize;
            self.parts[part].read_exact_at(&mut buf[at..at + len], off)?;
            at += len;
        }
        Ok(())
    }

    /// Where `offset..offset + len` is, if one part holds all of it: the part and the
    /// offset in it (a server sends from there with sendfile(2)).
    pub fn span(&self, offset: u64, len: u64) -> Option<(&File, u64)> {
        match self.layout.pieces(offset, len).as_slice() {
            [(part, off, _)] => Some((&self.parts[*part], *off)),
            [] if len == 0 && offset <= self.size() => {
                let i = self.layout.extent_at(offset.saturating_sub(1))?;
                let e = self.layout.extents[i];
                Some((&self.parts[e.part], e.offset + (offset - e.start)))
            }
            _ => None,
        }
    }

    /// A reader of the whole image, from the start.
    pub fn reader(&self) -> Reader<'_> {
        Reader { image: self, at: 0 }
    }

    /// Appends bytes `offset..offset + len` of the image to `out` (at its current
    /// position): in the kernel with copy_file_range(2) where it can, else through a
    /// buffer.
    pub fn copy_range_to(&self, offset: u64, len: u64, out: &mut File) -> io::Result<()> {
        let pieces = self.layout.pieces(offset, len);
        if pieces.is_empty() && len > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "copy past the end of the image",
            ));
        }
        for (part, off, n) in pieces {
            copy_file(&self.parts[part], off, n, out)?;
        }
        Ok(())
    }
}

/// A sequential reader of a [`BlockFile`].
#[derive(Debug)]
pub struct Reader<'a> {
    image: &'a BlockFile,
    at: u64,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.image.size() - self.at;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let i = self.image.layout.extent_at(self.at).unwrap_or(0);
        let e = self.image.layout.extents[i];
        let skip = self.at - e.start;
        let n = ((e.len - skip) as usize).min(buf.len());
        let got = self.image.parts[e.part].read_at(&mut buf[..n], e.offset + skip)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a part is shorter than its descriptor says",
            ));
        }
        self.at += got as u64;
        Ok(got)
    }
}

/// A file's length; for a host block device (whose metadata length is 0), its size.
fn file_len(f: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let m = f.metadata()?;
    if m.is_file() {
        return Ok(m.len());
    }
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

/// Appends `len` bytes of `src` from `offset` to `out`: copy_file_range(2), else a buffer.
pub fn copy_file(src: &File, offset: u64, len: u64, out: &mut File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut off_in = offset as libc::loff_t;
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(1 << 30);
        // SAFETY: both descriptors are open files and the offset pointer is valid; a
        // null output offset means the output's own position, which the call advances.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source is shorter than expected",
            ));
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // Not supported between these files: through a buffer.
        let mut buf = vec![0u8; 1 << 20];
        while done < len {
            let n = ((len - done) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], offset + done)?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
    }
    Ok(())
}

/// Writes the image at `src` (plain or layered) to `dest` as one plain file, atomically
/// (a temporary file next to it, renamed into place). Returns its length.
pub fn copy_flat(src: &Path, dest: &Path) -> io::Result<u64> {
    let image = BlockFile::open(src)?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other("the destination has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        image.copy_range_to(0, image.size(), &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| image.size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    /// A layered image of two parts at `dir/img`: "HEAD" + b"0123456789"[2..8] + "TAIL".
    fn sample(dir: &Path) -> PathBuf {
        let img = dir.join("img");
        let parts = parts_dir(&img);
        std::fs::create_dir(&parts).unwrap();
        write(&parts.join("a"), b"0123456789");
        write(&parts.join("b-1"), b"HEADTAIL");
        let mut b = LayoutBuilder::new();
        let pb = b.part("b-1", 8);
        let pa = b.part("a", 10);
        b.push(pb, 0, 4);
        b.push(pa, 2, 3);
        b.push(pa, 5, 3); // merged with the previous piece
        b.push(pb, 4, 4);
        let unused = b.part("c", 1);
        let _ = unused;
        let layout = b.finish();
        assert_eq!(layout.extents.len(), 3);
        assert_eq!(layout.parts.len(), 2);
        write(&img, layout.encode().as_bytes());
        img
    }

    #[test]
    fn a_layered_image_reads_as_its_extents() {
        let dir = tempfile::tempdir().unwrap();
        let img = sample(dir.path());
        let f = BlockFile::open(&img).unwrap();
        assert!(f.is_layered());
        assert_eq!(f.size(), 14);
        let mut all = Vec::new();
        f.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"HEAD234567TAIL");
        let mut mid = [0u8; 6];
        f.read_exact_at(&mut mid, 3).unwrap();
        assert_eq!(&mid, b"D23456");
        assert!(f.read_exact_at(&mut mid, 10).is_err());
        // One part holds 4..10, not 3..5.
        let (_, off) = f.span(4, 6).unwrap();
        assert_eq!(off, 2);
        assert!(f.span(3, 2).is_none());
        let flat = dir.path().join("flat");
        assert_eq!(copy_flat(&img, &flat).unwrap(), 14);
        assert_eq!(std::fs::read(&flat).unwrap(), b"HEAD234567TAIL");
        // A plain file is an image too.
        let p = BlockFile::open(&flat).unwrap();
        assert!(!p.is_layered());
        assert_eq!(p.size(), 14);
        assert_eq!(
            Layout::parse(&std::fs::read_to_string(&img).unwrap())
                .unwrap()
                .encode(),
            std::fs::read_to_string(&img).unwrap()
        );
    }

    #[test]
    fn truncate_cuts_back() {
        let mut b = LayoutBuilder::new();
        let p = b.part("x", 100);
        b.push(p, 0, 10);
        let q = b.part("y", 100);
        b.push(q, 0, 10);
        b.truncate(15);
        assert_eq!(b.size(), 15);
        b.truncate(5);
        let l = b.finish();
        assert_eq!(l.size, 5);
        assert_eq!(l.parts.len(), 1);
        assert_eq!(l.pieces(0, 5), vec![(0, 0, 5)]);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let ok = "compose-layered-image v1\nsize 4\npart a 4\nextent 4 0 0\n";
        assert!(Layout::parse(ok).is_ok());
        for text in [
            "compose-layered-image v2\nsize 4\npart a 4\nextent 4 0 0\n",
            "compose-layered-image v1\nsize 5\npart a 4\nextent 4 0 0\n",
            "compose-layered-image v1\nsize 4\npart a 4\nextent 4 1 0\n",
            "compose-layered-image v1\nsize 4\npart a 4\nextent 4 0 1\n",
            "compose-layered-image v1\nsize 4\npart ../a 4\nextent 4 0 0\n",
            "compose-layered-image v1\nsize 4\npart a 4\npart a 4\nextent 4 0 0\n",
            "compose-layered-image v1\nsize 4\npart a 4\nextent 0 0 0\nextent 4 0 0\n",
            "compose-layered-image v1\nsize 4\npart a 18446744073709551615\nextent 18446744073709551615 0 1\n",
            "compose-layered-image v1\nsize 4\nextent 4 0 0\npart a 4\n",
        ] {
            assert!(Layout::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn parts_are_checked_and_links_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let img = sample(dir.path());
        let parts = parts_dir(&img);
        // A part of the wrong length.
        write(&parts.join("a"), b"012345678");
        assert!(BlockFile::open(&img).is_err());
        // A part that is a link to a file outside.
        let outside = dir.path().join("outside");
        write(&outside, b"0123456789");
        std::fs::remove_file(parts.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, parts.join("a")).unwrap();
        assert!(BlockFile::open(&img).is_err());
        // Missing.
        std::fs::remove_file(parts.join("a")).unwrap();
        assert!(BlockFile::open(&img).is_err());
    }
}
