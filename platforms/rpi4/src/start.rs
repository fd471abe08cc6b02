//! The entry point and the exception vectors (assembly), and the first Rust code.
//!
//! The firmware (its built-in armstub) and QEMU's `-kernel` both enter `_start`, the first
//! byte of kernel8.img at 0x80000, at EL2 on core 0 with x0 = the device tree (or, under
//! QEMU without `-dtb`, an ATAG list at 0x100); QEMU given the ELF enters at EL3 on every
//! core. `_start`:
//!
//! 1. parks every core but core 0 (`wfe` forever: the spin table is never written);
//! 2. at EL3, drops to EL2 (SCR_EL3: AArch64 below, HVC on, non-secure);
//! 3. at EL2, opens the timers and FP/SIMD to EL1 (CNTHCTL_EL2, CPTR_EL2), makes EL1
//!    AArch64 (HCR_EL2.RW), resets SCTLR_EL1 (MMU and caches off) and `eret`s to EL1h
//!    with every interrupt masked;
//! 4. at EL1: enables FP/SIMD (CPACR_EL1.FPEN; rustc emits NEON in plain integer code on
//!    `aarch64-unknown-none`), sets the stack (1 MiB above the image, see the linker
//!    script), zeroes .bss, installs the vectors and calls [`rpi4_start`] with x0.
//!
//! Every vector saves the whole register file in a [`Frame`] on the stack and calls
//! [`crate::hw::exception`], which either handles the event (the timer interrupt, a probe's
//! expected abort) and returns to the interrupted code, or reports the fault and halts.

use core::arch::global_asm;

global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    mrs x1, mpidr_el1",
    "    and x1, x1, #0xff",
    "    cbnz x1, 9f",
    "    mov x19, x0",
    "    mrs x1, CurrentEL",
    "    lsr x1, x1, #2",
    "    cmp x1, #3",
    "    b.ne 2f",
    // EL3 (QEMU given the ELF): to EL2h, AArch64, non-secure, HVC enabled, SMC disabled.
    "    msr cptr_el3, xzr",
    "    mov x1, #0x5b1",
    "    msr scr_el3, x1",
    "    mov x1, #0x3c9",
    "    msr spsr_el3, x1",
    "    adr x1, 2f",
    "    msr elr_el3, x1",
    "    eret",
    "2:",
    "    mrs x1, CurrentEL",
    "    lsr x1, x1, #2",
    "    cmp x1, #2",
    "    b.ne 3f",
    // EL2: timers and FP to EL1, EL1 is AArch64, then to EL1h with DAIF masked.
    "    mrs x1, cnthctl_el2",
    "    orr x1, x1, #3",
    "    msr cnthctl_el2, x1",
    "    msr cntvoff_el2, xzr",
    "    mov x1, #(1 << 31)",
    "    msr hcr_el2, x1",
    "    mov x1, #0x33ff",
    "    msr cptr_el2, x1",
    "    msr hstr_el2, xzr",
    "    mrs x1, midr_el1",
    "    msr vpidr_el2, x1",
    "    mrs x1, mpidr_el1",
    "    msr vmpidr_el2, x1",
    "    mov x1, #(3 << 20)",
    "    msr cpacr_el1, x1",
    "    ldr x1, =0x30d00800",
    "    msr sctlr_el1, x1",
    "    mov x1, #0x3c5",
    "    msr spsr_el2, x1",
    "    adr x1, 3f",
    "    msr elr_el2, x1",
    "    eret",
    "3:",
    // EL1: FP/SIMD on before any Rust code.
    "    mov x1, #(3 << 20)",
    "    msr cpacr_el1, x1",
    "    isb",
    "    ldr x1, =__stack_top",
    "    mov sp, x1",
    "    ldr x1, =__bss_start",
    "    ldr x2, =__bss_end",
    "4:  cmp x1, x2",
    "    b.hs 5f",
    "    stp xzr, xzr, [x1], #16",
    "    b 4b",
    "5:  ldr x1, =compose_rpi4_vectors",
    "    msr vbar_el1, x1",
    "    isb",
    "    mov x0, x19",
    "    mov x29, xzr",
    "    mov x30, xzr",
    "    bl {start}",
    "9:  wfe",
    "    b 9b",
    ".ltorg",
    start = sym crate::hw::rpi4_start,
);

/// The registers of the interrupted code, as the vectors save them.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// x0 to x30.
    pub x: [u64; 31],
    /// Where the exception was taken (ELR_EL1); the vector returns there.
    pub elr: u64,
    /// The interrupted PSTATE (SPSR_EL1).
    pub spsr: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == 264);

// 16 vectors of 0x80 bytes (current EL with SP0, with SPx, lower EL AArch64, AArch32;
// each sync, IRQ, FIQ, SError): each saves x0/x1, puts its number in x0 and joins the
// common path, which saves the rest, calls `exception(kind, frame)` and restores.
global_asm!(
    ".section .text.vectors, \"ax\"",
    ".balign 0x800",
    ".global compose_rpi4_vectors",
    "compose_rpi4_vectors:",
    ".irp kind, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    ".balign 0x80",
    "    sub sp, sp, #272",
    "    stp x0, x1, [sp, #0]",
    "    mov x0, #\\kind",
    "    b compose_rpi4_exception_common",
    ".endr",
    "compose_rpi4_exception_common:",
    "    stp x2, x3, [sp, #16]",
    "    stp x4, x5, [sp, #32]",
    "    stp x6, x7, [sp, #48]",
    "    stp x8, x9, [sp, #64]",
    "    stp x10, x11, [sp, #80]",
    "    stp x12, x13, [sp, #96]",
    "    stp x14, x15, [sp, #112]",
    "    stp x16, x17, [sp, #128]",
    "    stp x18, x19, [sp, #144]",
    "    stp x20, x21, [sp, #160]",
    "    stp x22, x23, [sp, #176]",
    "    stp x24, x25, [sp, #192]",
    "    stp x26, x27, [sp, #208]",
    "    stp x28, x29, [sp, #224]",
    "    mrs x1, elr_el1",
    "    stp x30, x1, [sp, #240]",
    "    mrs x1, spsr_el1",
    "    str x1, [sp, #256]",
    "    mov x1, sp",
    "    bl {handler}",
    "    ldr x1, [sp, #256]",
    "    msr spsr_el1, x1",
    "    ldp x30, x1, [sp, #240]",
    "    msr elr_el1, x1",
    "    ldp x28, x29, [sp, #224]",
    "    ldp x26, x27, [sp, #208]",
    "    ldp x24, x25, [sp, #192]",
    "    ldp x22, x23, [sp, #176]",
    "    ldp x20, x21, [sp, #160]",
    "    ldp x18, x19, [sp, #144]",
    "    ldp x16, x17, [sp, #128]",
    "    ldp x14, x15, [sp, #112]",
    "    ldp x12, x13, [sp, #96]",
    "    ldp x10, x11, [sp, #80]",
    "    ldp x8, x9, [sp, #64]",
    "    ldp x6, x7, [sp, #48]",
    "    ldp x4, x5, [sp, #32]",
    "    ldp x2, x3, [sp, #16]",
    "    ldp x0, x1, [sp, #0]",
    "    add sp, sp, #272",
    "    eret",
    handler = sym crate::hw::exception,
);
