//! Raw x86_64 layout the hvt tender builds in guest low memory (fact sheet
//! §3.1–3.2): bootstrap GDT, identity page tables, and the control-register
//! and segment values the vCPU starts with.
//!
//! Nothing here touches KVM; [`write_page_tables`] and [`write_gdt`] only
//! fill a byte slice, so they are tested without `/dev/kvm`.

/// GPA of the bootstrap GDT (null, code 0x08, data 0x10).
pub const GDT_GPA: u64 = 0x1000;
/// GDT limit: three 8-byte descriptors, minus one.
pub const GDT_LIMIT: u16 = 3 * 8 - 1;
/// GPA of the PML4.
pub const PML4_GPA: u64 = 0x2000;
/// GPA of the PDPT (four entries used: 4 GiB at most).
pub const PDPT_GPA: u64 = 0x3000;
/// GPA of the first of four page directories (2 MiB pages).
pub const PD_GPA: u64 = 0x4000;
/// GPA of the page table for the first 2 MiB (4 KiB pages).
pub const PT_GPA: u64 = 0x8000;
/// Everything below this is not present in the guest (NULL faults).
pub const FIRST_MAPPED: u64 = 0x1_0000;

/// Code segment selector.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data segment selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// 64-bit code: base 0, limit 4G, type 9 (execute-only, accessed), S, P, L, G.
pub const GDT_CODE: u64 = 0x00af_9900_0000_ffff;
/// Data: base 0, limit 4G, type 3 (read/write, accessed), S, P, D/B, G.
pub const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;

/// CR0: PE | NE | WP | PG.
pub const CR0: u64 = 0x8001_0021;
/// CR4: PAE | OSFXSR | OSXMMEXCPT (no OSXSAVE, FSGSBASE, PGE, SMEP, SMAP).
pub const CR4: u64 = 0x620;
/// EFER: LME | LMA (no NXE, no SCE).
pub const EFER: u64 = 0x500;
/// RFLAGS at entry: only the reserved bit 1.
pub const RFLAGS: u64 = 0x2;

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// Large page (in a page directory entry: 2 MiB).
    pub const PS: u64 = 1 << 7;
}

const MIB2: u64 = 0x20_0000;

fn put_u64(mem: &mut [u8], gpa: u64, v: u64) {
    let at = gpa as usize;
    mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes the bootstrap GDT at [`GDT_GPA`].
pub fn write_gdt(mem: &mut [u8]) {
    put_u64(mem, GDT_GPA, 0);
    put_u64(mem, GDT_GPA + 8, GDT_CODE);
    put_u64(mem, GDT_GPA + 16, GDT_DATA);
}

/// Writes identity page tables for `mem_size` bytes (a multiple of 2 MiB,
/// at most 4 GiB): below 0x10000 not present; 0x10000–0xFFFFF read-only
/// (boot info, manifest, cmdline); 0x100000–0x1FFFFF read-write 4 KiB
/// pages; the rest read-write 2 MiB pages. Supervisor-only, no NX.
pub fn write_page_tables(mem: &mut [u8], mem_size: u64) {
    use pte::*;
    assert!(mem_size.is_multiple_of(MIB2) && (MIB2..=4 << 30).contains(&mem_size));
    mem[PML4_GPA as usize..PT_GPA as usize + 0x1000].fill(0);
    put_u64(mem, PML4_GPA, PDPT_GPA | P | RW);
    let gibs = mem_size.div_ceil(1 << 30);
    for i in 0..gibs {
        put_u64(mem, PDPT_GPA + i * 8, (PD_GPA + i * 0x1000) | P | RW);
    }
    // The first 2 MiB go through a page table of 4 KiB pages.
    put_u64(mem, PD_GPA, PT_GPA | P | RW);
    for page in 0..512u64 {
        let addr = page * 0x1000;
        let entry = if addr < FIRST_MAPPED {
            0
        } else if addr < solo5_abi::GUEST_MIN_BASE {
            addr | P
        } else {
            addr | P | RW
        };
        put_u64(mem, PT_GPA + page * 8, entry);
    }
    // The rest: 2 MiB pages; the PDs are contiguous, so index them as one array.
    let mut addr = MIB2;
    while addr < mem_size {
        put_u64(mem, PD_GPA + (addr / MIB2) * 8, addr | P | RW | PS);
        addr += MIB2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(mem: &[u8], gpa: u64) -> u64 {
        u64::from_le_bytes(mem[gpa as usize..gpa as usize + 8].try_into().unwrap())
    }

    /// Walks the tables like the MMU: returns (physical address, writable).
    fn translate(mem: &[u8], va: u64) -> Option<(u64, bool)> {
        let pml4e = get(mem, PML4_GPA + ((va >> 39) & 511) * 8);
        if pml4e & pte::P == 0 {
            return None;
        }
        let pdpte = get(mem, (pml4e & !0xfff) + ((va >> 30) & 511) * 8);
        if pdpte & pte::P == 0 {
            return None;
        }
        let pde = get(mem, (pdpte & !0xfff) + ((va >> 21) & 511) * 8);
        if pde & pte::P == 0 {
            return None;
        }
        let rw = pml4e & pdpte & pde & pte::RW != 0;
        if pde & pte::PS != 0 {
            return Some(((pde & !0x1f_ffff) | (va & 0x1f_ffff), rw));
        }
        let e = get(mem, (pde & !0xfff) + ((va >> 12) & 511) * 8);
        if e & pte::P == 0 {
            return None;
        }
        Some(((e & !0xfff) | (va & 0xfff), rw && e & pte::RW != 0))
    }

    #[test]
    fn identity_map_with_holes() {
        let size = 6 << 20;
        let mut mem = vec![0u8; size as usize];
        write_page_tables(&mut mem, size);
        write_gdt(&mut mem);
        assert_eq!(translate(&mem, 0), None);
        assert_eq!(translate(&mem, 0xfff8), None);
        assert_eq!(translate(&mem, 0x10000), Some((0x10000, false)));
        assert_eq!(translate(&mem, 0xf_ffff), Some((0xf_ffff, false)));
        assert_eq!(translate(&mem, 0x10_0000), Some((0x10_0000, true)));
        assert_eq!(translate(&mem, 0x20_1234), Some((0x20_1234, true)));
        assert_eq!(translate(&mem, size - 1), Some((size - 1, true)));
        assert_eq!(translate(&mem, size), None);
        assert_eq!(get(&mem, GDT_GPA + 8), GDT_CODE);
    }

    #[test]
    fn four_gib() {
        // Only the tables matter: use a sparse check on a small buffer by
        // building them in the first 64 KiB.
        let mut mem = vec![0u8; 0x10000];
        write_page_tables(&mut mem, 4 << 30);
        assert_eq!(translate(&mem, (4 << 30) - 1), Some(((4 << 30) - 1, true)));
        assert_eq!(translate(&mem, 3 << 30), Some((3 << 30, true)));
    }
}
