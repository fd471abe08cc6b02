//! The MMU: an identity map with 1 GiB blocks, so that RAM is normal write-back
//! cacheable memory (exclusive loads and stores, hence atomics and spin locks, need it on
//! a real Pi 4) and the peripherals are device memory.
//!
//! 4 KiB granule, T0SZ = 25 (a 39-bit address space whose walk starts at level 1, one
//! entry per GiB): 0-3 GiB normal (MAIR attribute 0 = 0xFF, inner shareable), 3-4 GiB
//! device nGnRE (attribute 1 = 0x04, never executable), which covers the peripherals at
//! 0xFC000000-0xFFFFFFFF including the GIC. Addresses above 4 GiB are not mapped: a
//! touch there is a translation fault, reported like any other.

use crate::hw::cpu;

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The level-1 table (in .bss: zero, hence invalid, but for the entries [`init`] sets).
static mut LEVEL1: Table = Table([0; 512]);

const VALID_BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 3 << 8;
const UXN: u64 = 1 << 54;
const PXN: u64 = 1 << 53;
const NORMAL: u64 = 0 << 2;
const DEVICE: u64 = 1 << 2;

/// Builds the map and turns on the MMU and both caches.
///
/// # Safety
///
/// Once, at EL1, with the MMU off, before anything relies on atomics.
pub unsafe fn init() {
    // SAFETY: nothing else touches the table; the MMU is off, so it is not in use yet.
    #[allow(clippy::deref_addrof)]
    let table = unsafe { &mut *(&raw mut LEVEL1) };
    for gib in 0..3u64 {
        table.0[gib as usize] = (gib << 30) | VALID_BLOCK | AF | INNER_SHAREABLE | NORMAL;
    }
    table.0[3] = (3 << 30) | VALID_BLOCK | AF | DEVICE | UXN | PXN;
    cpu::dsb();
    // Attribute 0: normal write-back; 1: device nGnRE; 2 (0x00): device nGnRnE.
    cpu::set_mair(0xFF | (0x04 << 8));
    // T0SZ 25; IRGN0 = ORGN0 = write-back write-allocate; SH0 inner; TG0 4 KiB;
    // EPD1 (no walks through TTBR1); IPS 36 bits.
    let tcr = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (1 << 32);
    cpu::set_tcr(tcr);
    cpu::set_ttbr0(table.0.as_ptr() as u64);
    cpu::isb();
    // SAFETY: invalidating the TLBs and the instruction cache only drops cached state.
    unsafe {
        core::arch::asm!(
            "tlbi vmalle1",
            "dsb ish",
            "ic iallu",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
    // M (MMU), C (data cache), I (instruction cache).
    cpu::set_sctlr(cpu::sctlr() | 1 | (1 << 2) | (1 << 12));
    cpu::isb();
}
