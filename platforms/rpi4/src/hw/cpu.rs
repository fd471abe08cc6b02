//! System registers and barriers.

use core::arch::asm;

macro_rules! sysreg {
    ($get:ident, $set:ident, $name:literal) => {
        #[allow(dead_code)]
        #[inline]
        pub fn $get() -> u64 {
            let v: u64;
            // SAFETY: reading this system register has no side effects at EL1.
            unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
            v
        }
        #[allow(dead_code)]
        #[inline]
        pub fn $set(v: u64) {
            // SAFETY: the callers write values the architecture defines for it.
            unsafe { asm!(concat!("msr ", $name, ", {}"), in(reg) v, options(nostack)) };
        }
    };
}

sysreg!(cntfrq, set_cntfrq, "cntfrq_el0");
sysreg!(cntp_ctl, set_cntp_ctl, "cntp_ctl_el0");
sysreg!(cntp_cval, set_cntp_cval, "cntp_cval_el0");
sysreg!(esr, set_esr, "esr_el1");
sysreg!(far, set_far, "far_el1");
sysreg!(sctlr, set_sctlr, "sctlr_el1");
sysreg!(mair, set_mair, "mair_el1");
sysreg!(tcr, set_tcr, "tcr_el1");
sysreg!(ttbr0, set_ttbr0, "ttbr0_el1");
sysreg!(midr, set_midr, "midr_el1");

/// The physical count (CNTPCT_EL0), read after an ISB so it is not speculated early.
#[inline]
pub fn cntpct() -> u64 {
    let v: u64;
    // SAFETY: EL1 may read the counter (CNTHCTL_EL2.EL1PCTEN, set at entry).
    unsafe { asm!("isb", "mrs {}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// An instruction barrier.
#[inline]
pub fn isb() {
    // SAFETY: a barrier.
    unsafe { asm!("isb", options(nostack)) };
}

/// A full-system data barrier.
#[inline]
pub fn dsb() {
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Waits for an interrupt (taken or not: a pending one wakes it even while masked).
#[inline]
pub fn wfi() {
    // SAFETY: WFI only waits.
    unsafe { asm!("wfi", options(nomem, nostack)) };
}

/// Unmasks IRQs for a moment, so a pending one is taken now, then masks them again.
#[inline]
pub fn take_irqs() {
    // SAFETY: the vectors are installed and the IRQ handler returns to the caller.
    unsafe {
        asm!(
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nostack)
        )
    };
}

/// Cleans and invalidates the data cache lines covering `[addr, addr + len)` to the point
/// of coherency, so another bus master (the VideoCore) sees what the CPU wrote and the CPU
/// then reads what it wrote back.
pub fn dcache_clean_invalidate(addr: usize, len: usize) {
    const LINE: usize = 64;
    let mut a = addr & !(LINE - 1);
    while a < addr + len {
        // SAFETY: a cache maintenance operation on memory the caller owns.
        unsafe { asm!("dc civac, {}", in(reg) a, options(nostack)) };
        a += LINE;
    }
    dsb();
}

/// Stops this core for good.
pub fn park() -> ! {
    loop {
        // SAFETY: WFE only waits.
        unsafe { asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}
