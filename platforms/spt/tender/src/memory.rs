//! Guest memory: one anonymous mapping in the tender's own address space, at the
//! guest's own addresses (fact sheet §4.1–4.2).
//!
//! ```text
//! 0x10000   unused
//! 0x11000   struct spt_boot_info (40 bytes)       read-only once built
//! 0x11028   the manifest copy, then the cmdline  read-only once built
//! 0x100000  the image's PT_LOADs                 exactly their p_flags
//! ...       heap and, at the top, the stack      read-write (+exec with --x-exec-heap)
//! mem_size
//! ```
//!
//! Guest address X is host address X: the guest is linked at 1 MiB and nothing is
//! relocated. The tender is position-independent and the kernel puts it, its heap, stack
//! and libraries far above any guest memory size, so the two never meet; the mapping is
//! made with `MAP_FIXED_NOREPLACE`, so should they meet anyway, the tender refuses to run
//! rather than replace its own pages.
//!
//! Solo5 leaves 0x10000–0xFFFFF writable on spt; here it is read-only once written, as on
//! hvt, where the guest's page tables map it read-only (Solo5's bindings only read it).

use std::io;

use solo5_abi::spt::{BOOT_INFO_ADDR, MEM_BASE, MFT_ADDR};
use solo5_abi::{CMDLINE_SIZE, GUEST_MIN_BASE};
use solo5_tender::LoadPlan;

/// Setting up guest memory failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The mapping could not be made.
    #[error("Could not map {size} bytes of guest memory at {MEM_BASE:#x}: {why}")]
    Map {
        /// Bytes asked for.
        size: u64,
        /// What went wrong, for the user.
        why: String,
    },
    /// `mprotect` failed.
    #[error("Could not protect guest memory {start:#x}-{end:#x}: {source}")]
    Protect {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// The host error.
        source: io::Error,
    },
}

/// What the tender writes into guest low memory besides the image.
#[derive(Clone, Copy, Debug)]
pub struct BootData<'a> {
    /// `kernel_end` of the load plan.
    pub kernel_end: u64,
    /// The tender's manifest copy (`Manifest::encode`), host fds filled in.
    pub manifest: &'a [u8],
    /// The guest command line, without its NUL (at most 8191 bytes).
    pub cmdline: &'a [u8],
    /// The epoll fd for yield.
    pub epollfd: i32,
    /// The deadline timerfd.
    pub timerfd: i32,
}

/// Guest memory `[MEM_BASE, mem_size)`, mapped at its own address. It is never unmapped
/// once the guest runs: the process ends with the guest.
#[derive(Debug)]
pub struct GuestMemory {
    mem_size: u64,
}

impl GuestMemory {
    /// Maps guest memory for `mem_size` bytes, loads `plan` into it, writes the boot info,
    /// manifest copy and command line, then protects it: each PT_LOAD exactly as its
    /// flags say, the boot area read-only, the rest read-write (and executable with
    /// `exec_heap`, spt's `--x-exec-heap`).
    pub fn build(
        mem_size: u64,
        exec_heap: bool,
        plan: &LoadPlan<'_>,
        boot: &BootData<'_>,
    ) -> Result<Self, MemoryError> {
        let mut mem = Self::map(mem_size, exec_heap)?;
        // SAFETY: the mapping was just made, read-write, and is referenced nowhere else.
        let bytes = unsafe { mem.bytes_mut() };
        plan.load_at(bytes, MEM_BASE);
        write_boot_area(bytes, mem_size, boot);
        for s in &plan.segments {
            mem.protect(s.start, s.end, s.perms.prot())?;
        }
        mem.protect(MEM_BASE, GUEST_MIN_BASE, libc::PROT_READ)?;
        Ok(mem)
    }

    fn map(mem_size: u64, exec_heap: bool) -> Result<Self, MemoryError> {
        let fail = |why: String| MemoryError::Map {
            size: mem_size,
            why,
        };
        let len = mem_size
            .checked_sub(MEM_BASE)
            .filter(|&l| l > 0)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| fail("no room".into()))?;
        let mut prot = libc::PROT_READ | libc::PROT_WRITE;
        if exec_heap {
            prot |= libc::PROT_EXEC;
        }
        // SAFETY: an anonymous mapping at a fixed address that must not replace anything
        // (MAP_FIXED_NOREPLACE): it cannot affect memory Rust code uses.
        let p = unsafe {
            libc::mmap(
                MEM_BASE as usize as *mut libc::c_void,
                len,
                prot,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_FIXED_NOREPLACE
                    | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(fail(match e.raw_os_error() {
                Some(libc::EEXIST) => format!(
                    "{e}: the range overlaps the tender's own mappings; use a smaller --mem"
                ),
                Some(libc::EPERM) | Some(libc::EACCES) => format!(
                    "{e}: the host does not allow mappings this low (is vm.mmap_min_addr above \
                     {MEM_BASE}?)"
                ),
                _ => e.to_string(),
            }));
        }
        if p as u64 != MEM_BASE {
            // A kernel older than 4.17 takes MAP_FIXED_NOREPLACE as a hint.
            // SAFETY: unmapping the mapping just made, which nothing references.
            unsafe { libc::munmap(p, len) };
            return Err(fail(format!(
                "the kernel placed it at {p:?} (Linux 4.17 or later is needed)"
            )));
        }
        Ok(GuestMemory { mem_size })
    }

    /// The whole of guest memory: `bytes[0]` is guest address [`MEM_BASE`].
    ///
    /// # Safety
    ///
    /// Every page must still be writable (that is, before [`GuestMemory::build`]
    /// protects it).
    unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping covers `mem_size - MEM_BASE` bytes from MEM_BASE and lives
        // as long as `self`, borrowed mutably here; the caller promises writability.
        unsafe {
            std::slice::from_raw_parts_mut(
                MEM_BASE as usize as *mut u8,
                (self.mem_size - MEM_BASE) as usize,
            )
        }
    }

    fn protect(&self, start: u64, end: u64, prot: i32) -> Result<(), MemoryError> {
        assert!(MEM_BASE <= start && start <= end && end <= self.mem_size);
        // SAFETY: the range lies inside our own mapping, which no Rust reference covers
        // any more (the loader's slice is gone); only the guest will use it.
        let rc = unsafe {
            libc::mprotect(
                start as usize as *mut libc::c_void,
                (end - start) as usize,
                prot,
            )
        };
        if rc != 0 {
            return Err(MemoryError::Protect {
                start,
                end,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The guest memory size: the end of the mapping, and the top of the guest's stack.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing references it once `self` goes.
        unsafe {
            libc::munmap(
                MEM_BASE as usize as *mut libc::c_void,
                (self.mem_size - MEM_BASE) as usize,
            )
        };
    }
}

/// Writes `struct spt_boot_info` at [`BOOT_INFO_ADDR`], the manifest copy right after it
/// ([`MFT_ADDR`]) and the NUL-terminated command line after the manifest. `mem[0]` is
/// guest address [`MEM_BASE`].
pub fn write_boot_area(mem: &mut [u8], mem_size: u64, boot: &BootData<'_>) {
    assert!(
        boot.cmdline.len() < CMDLINE_SIZE,
        "checked by the command line parser"
    );
    let cmdline_addr = MFT_ADDR + boot.manifest.len() as u64;
    assert!(cmdline_addr + CMDLINE_SIZE as u64 <= GUEST_MIN_BASE);
    let at = |addr: u64| (addr - MEM_BASE) as usize;

    let mut bi = Vec::with_capacity(40);
    bi.extend_from_slice(&mem_size.to_le_bytes());
    bi.extend_from_slice(&boot.kernel_end.to_le_bytes());
    bi.extend_from_slice(&cmdline_addr.to_le_bytes());
    bi.extend_from_slice(&MFT_ADDR.to_le_bytes());
    bi.extend_from_slice(&boot.epollfd.to_le_bytes());
    bi.extend_from_slice(&boot.timerfd.to_le_bytes());
    assert_eq!(bi.len(), std::mem::size_of::<solo5_abi::spt::SptBootInfo>());
    mem[at(BOOT_INFO_ADDR)..][..bi.len()].copy_from_slice(&bi);
    mem[at(MFT_ADDR)..][..boot.manifest.len()].copy_from_slice(boot.manifest);
    let c = &mut mem[at(cmdline_addr)..][..boot.cmdline.len() + 1];
    c[..boot.cmdline.len()].copy_from_slice(boot.cmdline);
    c[boot.cmdline.len()] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use solo5_abi::MftDevice;
    use solo5_tender::Manifest;

    #[test]
    fn boot_area_layout() {
        let m = Manifest::from_devices(&[MftDevice::net("service")])
            .unwrap()
            .encode();
        let mut mem = vec![0xEEu8; (GUEST_MIN_BASE - MEM_BASE) as usize];
        write_boot_area(
            &mut mem,
            64 << 20,
            &BootData {
                kernel_end: 0x10_9000,
                manifest: &m,
                cmdline: b"--port=7 x",
                epollfd: 5,
                timerfd: 6,
            },
        );
        let u64_at =
            |a: u64| u64::from_le_bytes(mem[(a - MEM_BASE) as usize..][..8].try_into().unwrap());
        assert_eq!(u64_at(0x11000), 64 << 20);
        assert_eq!(u64_at(0x11008), 0x10_9000);
        let cmdline = u64_at(0x11010);
        assert_eq!(cmdline, 0x11028 + 8 + 2 * 104);
        assert_eq!(u64_at(0x11018), 0x11028);
        assert_eq!(u64_at(0x11020), 5 | 6 << 32);
        let at = (0x11028 - MEM_BASE) as usize;
        assert_eq!(&mem[at..at + m.len()], &m[..]);
        let c = (cmdline - MEM_BASE) as usize;
        assert_eq!(&mem[c..c + 11], b"--port=7 x\0");
        assert_eq!(mem[c + 11], 0xEE);
    }
}
