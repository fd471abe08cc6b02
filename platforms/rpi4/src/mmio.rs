//! Peripheral addresses (low-peripheral mode: the VideoCore's 0x7E... bus window seen by
//! the ARM at 0xFE...) and volatile register access.

/// The peripheral window.
pub const PERIPHERALS: usize = 0xFE00_0000;
/// GPIO.
pub const GPIO: usize = PERIPHERALS + 0x20_0000;
/// The PL011 UART (UART0).
pub const UART0: usize = PERIPHERALS + 0x20_1000;
/// The VideoCore mailbox.
pub const MAILBOX: usize = PERIPHERALS + 0xB880;
/// RNG200 (absent under QEMU: any access aborts).
pub const RNG200: usize = PERIPHERALS + 0x10_4000;
/// The GIC-400 distributor.
pub const GICD: usize = 0xFF84_1000;
/// The GIC-400 CPU interface.
pub const GICC: usize = 0xFF84_2000;

/// Reads the 32-bit register at `addr`.
#[inline]
pub fn read(addr: usize) -> u32 {
    // SAFETY: every caller passes the address of a register of a peripheral the board
    // has, mapped as device memory by `mmu::init` (or by the MMU being off).
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes the 32-bit register at `addr`.
#[inline]
pub fn write(addr: usize, value: u32) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}
