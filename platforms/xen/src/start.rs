//! The PVH entry point, long mode, and the start of the runtime (guest only).
//!
//! Xen starts a PVH guest at the address of its `XEN_ELFNOTE_PHYS32_ENTRY` note in
//! 32-bit protected mode, paging off, flat segments, interrupts off, no stack, with
//! `ebx` = the physical address of `struct hvm_start_info`
//! (xen/include/public/arch-x86/hvm/start_info.h). `_start32` loads a GDT with a 64-bit
//! code segment, turns on PAE, points CR3 at static page tables that identity-map the
//! first 4 GiB with 2 MiB pages (RAM, the console and XenStore rings Xen places just
//! below 4 GiB), sets EFER.LME and paging, far-jumps into 64-bit code, and calls
//! [`xen_start`] on a boot stack in `.bss`.
//!
//! [`xen_start`] sets up the hypercall page, finds the top of RAM in the start info's
//! memory map, moves the stack there (the layout solo5-guest expects: the stack at the
//! top of memory, the heap below it) and runs [`xen_main`]: the shared info page, the
//! console, the manifest (the glue's Solo5 manifest note, completed from XenStore by the
//! front ends, see [`crate::devices`]), solo5-guest's start, and the glue's `main`.

use solo5_abi::{Abi1Note, AbiTarget, MftHeader};
use solo5_guest::{Bindings, StartInfo};

use crate::Xen;

/// Solo5's ABI note for a xen image (target 6), so that Solo5 tooling recognises it.
#[used]
#[unsafe(link_section = ".note.solo5.abi")]
pub static SOLO5_ABI: Abi1Note = Abi1Note::new(AbiTarget::Xen);

unsafe extern "C" {
    /// The 32-bit entry (assembly below).
    fn _start32();
    /// The end of the image, page-aligned (from the linker script).
    static _end: u8;
    static compose_xen_boot_stack_top: u8;
}

core::arch::global_asm!(
    ".pushsection .note.xen, \"a\", @note",
    ".balign 4",
    ".long 4",             // namesz
    ".long 4",             // descsz
    ".long 18",            // XEN_ELFNOTE_PHYS32_ENTRY
    ".asciz \"Xen\"",
    ".long _start32",
    ".popsection",

    ".pushsection .text.compose_xen_start, \"ax\"",
    ".code32",
    ".globl _start32",
    "_start32:",
    "    cli",
    "    cld",
    "    movl %ebx, %esi",                 // the start info, kept for xen_start
    "    lgdt compose_xen_gdt_ptr",
    "    movl %cr4, %eax",
    "    orl $0x620, %eax",                // PAE | OSFXSR | OSXMMEXCPT
    "    movl %eax, %cr4",
    "    movl $compose_xen_pml4, %eax",
    "    movl %eax, %cr3",
    "    movl $0xc0000080, %ecx",          // EFER
    "    rdmsr",
    "    orl $0x100, %eax",                // LME
    "    wrmsr",
    "    movl %cr0, %eax",
    "    andl $0x9fffffff, %eax",          // caches on (CD, NW off)
    "    orl $0x80000001, %eax",           // PG | PE
    "    movl %eax, %cr0",
    "    ljmp $0x08, $compose_xen_start64",
    ".code64",
    "compose_xen_start64:",
    "    movl $0x10, %eax",
    "    movl %eax, %ds",
    "    movl %eax, %es",
    "    movl %eax, %ss",
    "    movl %eax, %fs",
    "    movl %eax, %gs",
    "    leaq compose_xen_boot_stack_top(%rip), %rsp",
    "    movl %esi, %edi",
    "    xorl %ebp, %ebp",
    "    call {start}",
    "    ud2",
    ".popsection",

    ".pushsection .data.compose_xen_tables, \"aw\"",
    ".balign 4096",
    "compose_xen_pml4:",
    "    .quad compose_xen_pdpt + 0x3",
    "    .fill 511, 8, 0",
    "compose_xen_pdpt:",
    "    .quad compose_xen_pd + 0x3",
    "    .quad compose_xen_pd + 0x1003",
    "    .quad compose_xen_pd + 0x2003",
    "    .quad compose_xen_pd + 0x3003",
    "    .fill 508, 8, 0",
    "compose_xen_pd:",
    "    .set compose_xen_i, 0",
    "    .rept 2048",
    "    .quad (compose_xen_i << 21) | 0x83", // present, writable, 2 MiB
    "    .set compose_xen_i, compose_xen_i + 1",
    "    .endr",
    ".balign 8",
    "compose_xen_gdt:",
    "    .quad 0",
    "    .quad 0x00af9b000000ffff",        // 0x08: 64-bit code, accessed
    "    .quad 0x00cf93000000ffff",        // 0x10: data, accessed
    "compose_xen_gdt_ptr:",
    "    .word 23",
    "    .long compose_xen_gdt",
    ".popsection",

    ".pushsection .bss.compose_xen_boot_stack, \"aw\", @nobits",
    ".balign 16",
    "    .skip 65536",
    ".globl compose_xen_boot_stack_top",
    "compose_xen_boot_stack_top:",
    ".popsection",
    start = sym xen_start,
    options(att_syntax),
);

/// The fields of `struct hvm_start_info` the runtime reads.
#[derive(Clone, Copy)]
struct HvmStartInfo {
    cmdline: u64,
    memmap: u64,
    memmap_entries: u32,
}

const HVM_START_MAGIC: u32 = 0x336e_c578;

/// Reads the start info at `p`.
///
/// # Safety
///
/// `p` must be the address Xen passed in `ebx`.
unsafe fn read_start_info(p: u64) -> Option<HvmStartInfo> {
    let at = |off: u64| p + off;
    // SAFETY: the caller passes Xen's start info, identity-mapped, at least 56 bytes.
    unsafe {
        let r32 = |off| (at(off) as *const u32).read_volatile();
        let r64 = |off| (at(off) as *const u64).read_volatile();
        if r32(0) != HVM_START_MAGIC {
            return None;
        }
        let version = r32(4);
        Some(HvmStartInfo {
            cmdline: r64(24),
            memmap: if version >= 1 { r64(40) } else { 0 },
            memmap_entries: if version >= 1 { r32(48) } else { 0 },
        })
    }
}

/// The end of the RAM region of the memory map that holds the image (at 1 MiB).
fn ram_top(si: &HvmStartInfo) -> Option<u64> {
    for i in 0..u64::from(si.memmap_entries) {
        let e = si.memmap + i * 24;
        // SAFETY: the memory map has `memmap_entries` entries of 24 bytes (addr, size,
        // type, reserved), identity-mapped.
        let (addr, size, ty) = unsafe {
            (
                (e as *const u64).read_volatile(),
                ((e + 8) as *const u64).read_volatile(),
                ((e + 16) as *const u32).read_volatile(),
            )
        };
        if ty == 1 && addr <= 0x10_0000 && addr + size > 0x10_0000 {
            // The identity map covers 4 GiB.
            return Some((addr + size).min(1 << 32) & !0xfff);
        }
    }
    None
}

/// The end of a NUL-terminated string at `p` (at most 8 KiB long).
fn c_string_end(p: u64) -> u64 {
    if p == 0 {
        return 0;
    }
    let mut n = 0;
    // SAFETY: Xen's command line is NUL-terminated and identity-mapped.
    while n < 8192 && unsafe { ((p + n) as *const u8).read_volatile() } != 0 {
        n += 1;
    }
    p + n + 1
}

/// Early failure: say why on the console if there is one, then crash the domain.
fn die(msg: &str) -> ! {
    crate::console::write(msg.as_bytes());
    crate::console::flush(1_000_000_000);
    crate::hypercall::shutdown(crate::hypercall::Shutdown::Crash)
}

/// 64-bit entry, on the boot stack.
///
/// # Safety
///
/// Called once by `_start32`, with Xen's start info address.
unsafe extern "C" fn xen_start(start_info: u32) -> ! {
    // SAFETY: first thing, once.
    if unsafe { crate::hypercall::init() }.is_err() {
        // No Xen, no console: nothing to say it with.
        crate::hypercall::shutdown(crate::hypercall::Shutdown::Crash);
    }
    let _ = crate::shared::init();
    let _ = crate::console::init();
    // SAFETY: `start_info` is what Xen passed in ebx.
    let Some(si) = (unsafe { read_start_info(u64::from(start_info)) }) else {
        die("xen: no PVH start info (is this a PVH domain?)\n")
    };
    let Some(top) = ram_top(&si) else {
        die("xen: the start info has no memory map with RAM at 1 MiB\n")
    };
    let si_ptr = u64::from(start_info);
    // SAFETY: `top` is the end of RAM, page-aligned and free (nothing Xen puts in RAM for
    // a PVH guest is above the image's end and the start info); the stack grows down from
    // it, as solo5-guest expects, and `xen_main` never returns.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {main}",
            "ud2",
            top = in(reg) top,
            main = sym xen_main,
            in("rdi") si_ptr,
            in("rsi") top,
            options(noreturn),
        )
    }
}

unsafe extern "Rust" {
    /// The glue's `main`, wrapped by [`crate::entry!`].
    fn __compose_xen_main();
}

/// The rest of the start, on the final stack.
///
/// # Safety
///
/// Called once by [`xen_start`].
unsafe extern "C" fn xen_main(start_info: u64, mem_top: u64) -> ! {
    // SAFETY: as in xen_start.
    let si = unsafe { read_start_info(start_info) }.unwrap_or_else(|| die("xen: start info\n"));
    // Everything Xen placed after the image (the start info, the command line, the memory
    // map) stays below the heap.
    let image_end = &raw const _end as u64;
    let mut used = image_end
        .max(start_info + 56)
        .max(c_string_end(si.cmdline))
        .max(si.memmap + u64::from(si.memmap_entries) * 24);
    used = used.next_multiple_of(4096);
    // Keep the notes referenced from the entry path.
    // SAFETY: plain reads of statics.
    let _ = unsafe { core::ptr::read_volatile(&raw const SOLO5_ABI) };
    let _ = (&raw const compose_xen_boot_stack_top, _start32 as *const ());
    let mft: *const MftHeader = crate::devices::init(&mut used, mem_top);
    let info = StartInfo {
        mem_size: mem_top,
        kernel_end: used,
        image_end,
        cmdline: if si.cmdline == 0 {
            c"".as_ptr().cast::<u8>()
        } else {
            si.cmdline as *const u8
        },
        mft,
        tsc_hz: 0,
    };
    // SAFETY: memory from `used` to the stack at `mem_top` is free RAM; the command line
    // and the manifest copy stay in place, read-only, for the whole run.
    unsafe { solo5_guest::start::<Xen>(&info) };
    // SAFETY: `entry!` defines this function in the glue with this signature.
    unsafe { __compose_xen_main() };
    Xen::halt(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    solo5_guest::panic::panic::<Xen>(info)
}
