//! The grant table (version 1): entries through which this domain lets a backend map or
//! copy its pages (ring pages, network and disk buffers).
//!
//! The table's frames are Xen's; the runtime maps them over pages of its own with
//! `XENMEM_add_to_physmap` (space `XENMAPSPACE_grant_table`). An entry is
//! `{ u16 flags; u16 domid; u32 frame }`; writing `frame` and `domid`, then `flags =
//! GTF_permit_access` (| `GTF_readonly`) grants the page. Entries 0-7 are reserved
//! (the toolstack's console and XenStore grants). Grants are made at boot and kept.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering, fence};

use crate::hypercall;

const FRAMES: usize = 4;
const ENTRIES: u32 = (FRAMES * 4096 / 8) as u32;
const RESERVED: u32 = 8;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u8; FRAMES * 4096]>);

// SAFETY: entries are written through atomics, one owner each (the front end that took it).
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([0; FRAMES * 4096]));
static NEXT: AtomicU32 = AtomicU32::new(RESERVED);
static MAPPED: AtomicU32 = AtomicU32::new(0);

fn map() -> bool {
    if MAPPED.load(Ordering::Acquire) == 1 {
        return true;
    }
    let base = TABLE.0.get() as u64;
    for i in 0..FRAMES as u64 {
        if hypercall::add_to_physmap(1, i, (base >> 12) + i).is_err() {
            return false;
        }
    }
    MAPPED.store(1, Ordering::Release);
    true
}

/// Grants domain `domid` access to the page at `addr` (read-only if `readonly`);
/// returns the grant reference.
pub(crate) fn grant(domid: u16, addr: *const u8, readonly: bool) -> Option<u32> {
    if !map() {
        return None;
    }
    let r = NEXT.fetch_add(1, Ordering::Relaxed);
    if r >= ENTRIES {
        return None;
    }
    let e = TABLE.0.get() as usize + r as usize * 8;
    // SAFETY: entry `r` is within the mapped table and owned by this call alone.
    unsafe {
        (*((e + 2) as *const AtomicU16)).store(domid, Ordering::Relaxed);
        (*((e + 4) as *const AtomicU32)).store((addr as u64 >> 12) as u32, Ordering::Relaxed);
        fence(Ordering::Release);
        let flags = 1 | if readonly { 4 } else { 0 }; // GTF_permit_access | GTF_readonly
        (*(e as *const AtomicU16)).store(flags, Ordering::Release);
    }
    Some(r)
}
