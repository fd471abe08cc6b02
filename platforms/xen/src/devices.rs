//! The manifest: the glue's Solo5 manifest note, copied at boot and completed by the
//! front ends from XenStore, so that solo5-guest's devices find their handles, MACs and
//! capacities as they do on a Solo5 tender.
//!
//! Network interfaces are the domain's vifs in manifest order (the first `net` entry is
//! `device/vif/0`, the next `device/vif/1`, ...); block devices are its vbds in manifest
//! order (`xvda`, `xvdb`, ...: `device/vbd/51712`, `51728`, ...). `compose deploy
//! --format xl` writes the `vif` and `disk` lists in that order.

use core::cell::UnsafeCell;

use solo5_abi::{DeviceType, MFT_MAX_ENTRIES, MftEntry, MftHeader};

/// Room for the largest manifest note (32 + 104 × 64 bytes).
const NOTE_MAX: usize = 32 + 104 * MFT_MAX_ENTRIES;
/// Where the manifest starts in the note (after the 20-byte note header and 4 pad bytes).
const MFT_OFFSET: usize = 24;

#[repr(C, align(8))]
struct NoteCopy(UnsafeCell<[u8; NOTE_MAX]>);

// SAFETY: written once by `init`, before anything reads it; read-only afterwards.
unsafe impl Sync for NoteCopy {}

static NOTE: NoteCopy = NoteCopy(UnsafeCell::new([0; NOTE_MAX]));

unsafe extern "C" {
    static __compose_xen_mft_note: u8;
    static __compose_xen_mft_note_end: u8;
}

/// Copies the manifest note, attaches each device it declares (taking the pages the
/// front ends need from `*free`, page-aligned, below `mem_top`), and returns the
/// manifest for solo5-guest.
pub(crate) fn init(free: &mut u64, mem_top: u64) -> *const MftHeader {
    let start = &raw const __compose_xen_mft_note as usize;
    let end = &raw const __compose_xen_mft_note_end as usize;
    let len = (end - start).min(NOTE_MAX);
    let note = NOTE.0.get().cast::<u8>();
    // SAFETY: the linker script brackets the note with these symbols; the copy fits.
    unsafe { core::ptr::copy_nonoverlapping(start as *const u8, note, len) };
    if len < MFT_OFFSET + 8 {
        return core::ptr::null();
    }
    // SAFETY: the copy holds the manifest at MFT_OFFSET (8-aligned), and nothing else
    // refers to it yet.
    let mft = unsafe { note.add(MFT_OFFSET) }.cast::<MftHeader>();
    // SAFETY: as above: a header, then its entries.
    let entries = unsafe {
        let n = ((*mft).entries as usize).min(MFT_MAX_ENTRIES);
        let n = n.min((len - MFT_OFFSET - 8) / core::mem::size_of::<MftEntry>());
        core::slice::from_raw_parts_mut(mft.add(1).cast::<MftEntry>(), n)
    };
    let mut pages = Pages {
        next: *free,
        end: mem_top.saturating_sub(8 << 20),
    };
    let (mut nets, mut blocks) = (0u32, 0u32);
    for (handle, e) in entries.iter_mut().enumerate().skip(1) {
        match e.device_type() {
            Some(DeviceType::Net) => {
                crate::netfront::attach(handle, nets, e, &mut pages);
                nets += 1;
            }
            Some(DeviceType::Block) => {
                crate::blkfront::attach(handle, blocks, e, &mut pages);
                blocks += 1;
            }
            None => {}
        }
    }
    *free = pages.next;
    mft
}

/// Pages for the front ends' rings and buffers, taken at boot from the RAM after the
/// image (before the heap is laid out).
pub(crate) struct Pages {
    next: u64,
    end: u64,
}

impl Pages {
    /// One zeroed page, or `None` when the front ends would leave too little memory.
    pub(crate) fn take(&mut self) -> Option<*mut u8> {
        if self.next + 4096 > self.end {
            return None;
        }
        let p = self.next as *mut u8;
        self.next += 4096;
        // SAFETY: the page is free RAM below the heap, ours from now on.
        unsafe { p.write_bytes(0, 4096) };
        Some(p)
    }
}
