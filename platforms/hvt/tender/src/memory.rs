//! Guest memory: one anonymous, zero-filled host mapping that KVM uses as the
//! guest's RAM from GPA 0.
//!
//! All access from the tender goes through [`GuestMemory`], which checks every
//! guest-supplied address and length before making a slice: the range must
//! satisfy Solo5's strict `gpa < mem_size && gpa + len < mem_size`, and a
//! range the tender will *write* must not touch a segment the host mapped
//! read-only (a host store there would crash the tender).
//!
//! References into guest memory are only created while the vCPU is stopped
//! (the run loop is single-threaded and holds `&mut GuestMemory` while it
//! handles an exit), so nothing else changes the bytes while they are borrowed.

use std::io;
use std::ops::Range;
use std::ptr::NonNull;

/// A guest address or length the tender refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestAccessError {
    /// Outside guest memory (or overflowing).
    #[error("Invalid guest access: gpa={gpa:#x}, len={len:#x}")]
    OutOfBounds {
        /// Guest-physical address.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// The tender would have to write into a read-only segment.
    #[error("Invalid guest access: gpa={gpa:#x}, len={len:#x} is read-only")]
    ReadOnly {
        /// Guest-physical address.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

/// The guest's RAM, mapped in the tender.
#[derive(Debug)]
pub struct GuestMemory {
    ptr: NonNull<u8>,
    size: usize,
    /// Ranges mapped without PROT_WRITE on the host.
    read_only: Vec<Range<u64>>,
}

impl GuestMemory {
    /// Maps `size` bytes of zero-filled anonymous memory.
    pub fn new(size: u64) -> io::Result<Self> {
        let len =
            usize::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // does not alias any existing Rust object; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(GuestMemory {
            ptr,
            size: len,
            read_only: Vec::new(),
        })
    }

    /// Size in bytes (the guest's `mem_size`).
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// Host address of GPA 0, for the KVM memslot.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// The whole memory, for building the initial image. Fails once any
    /// range has been made read-only.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.read_only.is_empty() {
            return None;
        }
        // SAFETY: the mapping is `size` bytes, readable and writable (no range
        // is read-only yet), and `&mut self` guarantees exclusive access.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size) })
    }

    /// Applies host protection `prot` to `[start, end)` (page aligned,
    /// inside memory). Without PROT_WRITE, the range is remembered so the
    /// tender never writes there.
    pub fn protect(&mut self, start: u64, end: u64, prot: i32) -> io::Result<()> {
        if start > end
            || end > self.size()
            || !start.is_multiple_of(4096)
            || !end.is_multiple_of(4096)
        {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        if prot & libc::PROT_READ == 0 {
            // Every range stays readable: the tender reads guest buffers.
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: the range lies inside our own mapping (checked above), and
        // it stays readable, so existing shared slices remain valid; writes
        // into it are refused from now on by `check_writable`.
        let rc = unsafe {
            libc::mprotect(
                self.ptr.as_ptr().add(start as usize).cast(),
                (end - start) as usize,
                prot,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if prot & libc::PROT_WRITE == 0 {
            self.read_only.push(start..end);
        }
        Ok(())
    }

    /// Solo5's bounds check: `gpa < size && gpa + len < size`.
    fn check(&self, gpa: u64, len: u64) -> Result<Range<usize>, GuestAccessError> {
        let size = self.size();
        match gpa.checked_add(len) {
            Some(end) if gpa < size && end < size => Ok(gpa as usize..end as usize),
            _ => Err(GuestAccessError::OutOfBounds { gpa, len }),
        }
    }

    /// Checks that the tender may write `[gpa, gpa + len)`.
    pub fn check_writable(&self, gpa: u64, len: u64) -> Result<(), GuestAccessError> {
        let r = self.check(gpa, len)?;
        let (start, end) = (r.start as u64, r.end as u64);
        if self
            .read_only
            .iter()
            .any(|ro| start < ro.end && ro.start < end.max(start + 1))
        {
            return Err(GuestAccessError::ReadOnly { gpa, len });
        }
        Ok(())
    }

    /// A shared view of `[gpa, gpa + len)` after the bounds check.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], GuestAccessError> {
        let r = self.check(gpa, len)?;
        // SAFETY: `r` lies inside the mapping (checked), which is readable
        // everywhere; the vCPU is stopped while the borrow of `self` lasts.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(r.start), r.len()) })
    }

    /// An exclusive view of `[gpa, gpa + len)` after the bounds and
    /// read-only checks.
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], GuestAccessError> {
        self.check_writable(gpa, len)?;
        let r = self.check(gpa, len)?;
        // SAFETY: `r` lies inside the mapping and outside every read-only
        // range (checked), so it is writable; `&mut self` makes the slice
        // exclusive, and the vCPU is stopped while the borrow lasts.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(r.start), r.len()) })
    }

    /// Reads a little-endian `u64` at `gpa`.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, GuestAccessError> {
        let b = self.slice(gpa, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// Reads a little-endian `i32` at `gpa`.
    pub fn read_i32(&self, gpa: u64) -> Result<i32, GuestAccessError> {
        let b = self.slice(gpa, 4)?;
        Ok(i32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Writes `bytes` at `gpa`.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError> {
        self.slice_mut(gpa, bytes.len() as u64)?
            .copy_from_slice(bytes);
        Ok(())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` describe the mapping made in `new`, and no
        // slice can outlive `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_strict() {
        let mut m = GuestMemory::new(0x4000).unwrap();
        assert!(m.slice(0, 0x3fff).is_ok());
        // Solo5 refuses a range ending exactly at the end of memory.
        assert!(m.slice(0, 0x4000).is_err());
        assert!(m.slice(0x4000, 0).is_err());
        assert!(m.slice(u64::MAX, 2).is_err());
        assert!(m.slice(1, u64::MAX).is_err());
        m.write(0x100, b"abc").unwrap();
        assert_eq!(m.slice(0x100, 3).unwrap(), b"abc");
        assert!(
            m.as_mut_slice()
                .unwrap()
                .iter()
                .take(0x100)
                .all(|&b| b == 0)
        );
    }

    #[test]
    fn read_only_ranges_refuse_writes() {
        let mut m = GuestMemory::new(0x4000).unwrap();
        m.protect(0x1000, 0x2000, libc::PROT_READ).unwrap();
        assert_eq!(m.slice(0x1000, 4).unwrap(), &[0, 0, 0, 0]);
        assert!(matches!(
            m.write(0x1000, &[1]),
            Err(GuestAccessError::ReadOnly { .. })
        ));
        assert!(matches!(
            m.write(0xfff, &[1, 2]),
            Err(GuestAccessError::ReadOnly { .. })
        ));
        assert!(matches!(
            m.slice_mut(0x1fff, 0),
            Err(GuestAccessError::ReadOnly { .. })
        ));
        assert!(m.write(0xffc, &[1, 2, 3, 4]).is_ok());
        assert!(m.write(0x2000, &[1]).is_ok());
        assert!(m.as_mut_slice().is_none());
        assert!(m.protect(0x1000, 0x2000, libc::PROT_NONE).is_err());
        assert!(m.protect(0x1001, 0x2000, libc::PROT_READ).is_err());
    }
}
