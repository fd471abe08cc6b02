//! The executable's own file, as a source for sendfile(2).
//!
//! An embedded asset archive is part of the image: its bytes are a slice of a read-only
//! segment that the loader mapped from the executable. [`span`] finds where a slice of such
//! a segment lies in the executable's file, so that a socket sends it from the page cache
//! (sendfile) instead of copying it out of the process's memory.
//!
//! The segments come from `dl_iterate_phdr` (the main program's `PT_LOAD` headers): only
//! those without `PF_W`, whose bytes the loader never changes (no relocation is applied to a
//! segment it maps read-only), and only their file-backed part (`p_filesz`). The file is
//! `/proc/self/exe`, opened once; before it is trusted, the first bytes of every segment
//! are compared with the file, so that an image that does not map its file as is (a
//! packed executable) is sent from memory as before.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::LazyLock;

use compose_devices::kv::FileSpan;

/// A read-only segment of the executable: `len` bytes at address `start` are the file's
/// bytes at `file_offset`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: usize,
    len: usize,
    file_offset: u64,
}

struct Image {
    file: File,
    segments: Vec<Segment>,
}

static IMAGE: LazyLock<Option<Image>> = LazyLock::new(load);

/// Where the bytes of `bytes` lie in the executable's file, if they are part of one of its
/// read-only segments.
pub(crate) fn span(bytes: &[u8]) -> Option<FileSpan> {
    let image = IMAGE.as_ref()?;
    let addr = bytes.as_ptr() as usize;
    let end = addr.checked_add(bytes.len())?;
    let seg = image
        .segments
        .iter()
        .find(|s| addr >= s.start && end <= s.start + s.len)?;
    Some(FileSpan {
        fd: image.file.as_raw_fd(),
        offset: seg.file_offset + (addr - seg.start) as u64,
        len: bytes.len() as u64,
    })
}

fn load() -> Option<Image> {
    let mut segments: Vec<Segment> = Vec::new();
    // SAFETY: the callback only reads the headers dl_iterate_phdr hands it, for the
    // duration of the call, and writes to the Vec that `data` points to, which outlives it.
    unsafe {
        libc::dl_iterate_phdr(Some(collect), (&raw mut segments).cast());
    }
    if segments.is_empty() {
        return None;
    }
    let file = File::open("/proc/self/exe").ok()?;
    // The file must hold what the segments show (it does unless the image was unpacked or
    // changed in memory): compare the start of each.
    let mut buf = vec![0u8; 4096];
    for s in &segments {
        let n = s.len.min(buf.len());
        file.read_exact_at(&mut buf[..n], s.file_offset).ok()?;
        // SAFETY: the segment is mapped readable for the life of the process, and `n` is
        // within its file-backed length.
        let mapped = unsafe { std::slice::from_raw_parts(s.start as *const u8, n) };
        if mapped != &buf[..n] {
            return None;
        }
    }
    Some(Image { file, segments })
}

/// dl_iterate_phdr's callback: records the main program's read-only `PT_LOAD` segments and
/// stops (the main program comes first).
unsafe extern "C" fn collect(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid `info` for the call, and `data` is the Vec
    // that `load` passed.
    let (info, segments) = unsafe { (&*info, &mut *data.cast::<Vec<Segment>>()) };
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum.into()) };
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0 && h.p_filesz > 0 {
            let (Ok(start), Ok(len)) = (
                usize::try_from(info.dlpi_addr.wrapping_add(h.p_vaddr)),
                usize::try_from(h.p_filesz),
            ) else {
                continue;
            };
            segments.push(Segment {
                start,
                len,
                file_offset: h.p_offset,
            });
        }
    }
    1
}
