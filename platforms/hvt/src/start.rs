//! The unikernel's entry point, its ABI note and its panic handler (built for the guest
//! only: `target_os = "none"`).
//!
//! The tender starts the vCPU in 64-bit mode at `_start` with `rdi` = the boot info's
//! address (0x10000) and `rsp` = `mem_size - 8`. `_start` clears the frame pointer, aligns
//! the stack for the SysV ABI and calls [`hvt_start`], which installs the CPU tables (see
//! [`crate::cpu`]), hands the boot info to solo5-guest, and runs the glue's `main` (the
//! function named in [`crate::entry!`]). If `main` returns, the unikernel exits with 0.

use solo5_abi::hvt::HvtBootInfo;
use solo5_abi::{Abi1Note, AbiTarget, MftHeader};
use solo5_guest::{Bindings, StartInfo};

use crate::Hvt;

/// The ABI note: this image is for the hvt target, ABI version 2. The linker script puts
/// it in a PT_NOTE of its own.
#[used]
#[unsafe(link_section = ".note.solo5.abi")]
pub static SOLO5_ABI: Abi1Note = Abi1Note::new(AbiTarget::Hvt);

unsafe extern "C" {
    /// The end of the image, page-aligned (from the linker script).
    static _end: u8;
}

unsafe extern "Rust" {
    /// The glue's `main`, wrapped by [`crate::entry!`].
    fn __compose_hvt_main();
}

/// The entry point.
///
/// # Safety
///
/// Only the tender may jump here, once, in the state the hvt ABI describes.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.compose_hvt_start")]
pub unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        // rdi holds the boot info's address: leave it as the first argument.
        "xor ebp, ebp",  // the outermost frame, for debuggers
        "and rsp, -16",  // the SysV ABI wants rsp 16-aligned at each call
        "call {start}",
        "ud2",           // hvt_start never returns
        start = sym hvt_start,
    )
}

/// Sets up the runtime and runs the glue's `main`.
///
/// # Safety
///
/// Called once by `_start` with the tender's boot info.
unsafe extern "C" fn hvt_start(boot_info: *const HvtBootInfo) -> ! {
    // SAFETY: called once, first thing, as `cpu::init` requires.
    unsafe { crate::cpu::init() };
    // SAFETY: the tender put a valid boot info here (read-only, for the whole run).
    let bi = unsafe { boot_info.read() };
    // Keep the ABI note referenced from the entry point, so that no linker drops it.
    // SAFETY: a plain read of a static.
    let _ = unsafe { core::ptr::read_volatile(&raw const SOLO5_ABI) };
    let info = StartInfo {
        mem_size: bi.mem_size,
        kernel_end: bi.kernel_end,
        image_end: &raw const _end as u64,
        cmdline: bi.cmdline as usize as *const u8,
        mft: bi.mft as usize as *const MftHeader,
        tsc_hz: bi.cpu_cycle_freq,
    };
    // SAFETY: the tender owns this contract: memory above the image and below the stack
    // is free, and the command line and manifest copy stay in place, read-only.
    unsafe { solo5_guest::start::<Hvt>(&info) };
    // SAFETY: `entry!` defines this function in the glue with this signature.
    unsafe { __compose_hvt_main() };
    Hvt::halt(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    solo5_guest::panic::panic::<Hvt>(info)
}
