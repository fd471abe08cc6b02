//! The unikernel's entry point, its ABI note and its panic handler (built for the guest
//! only: `target_os = "none"`).
//!
//! Once its seccomp filter is in place, the spt tender sets `rsp` = `mem_size - 8` and
//! `rdi` = the boot info's address (0x11000) and jumps to `_start`, in user mode on the
//! tender's only thread (fact sheet §4.3). `_start` clears the frame pointer, aligns the
//! stack for the SysV ABI and calls [`spt_start`], which points FS at nothing, hands the
//! boot info to solo5-guest and runs the glue's `main` (the function named in
//! [`crate::entry!`]). If `main` returns, the unikernel exits with 0.
//!
//! There are no exception handlers to install: a CPU fault is a signal for which nothing
//! is installed, so the kernel ends the process (SIGSEGV, SIGILL...) and the tender
//! reports it.

use solo5_abi::spt::SptBootInfo;
use solo5_abi::{Abi1Note, AbiTarget, MftHeader};
use solo5_guest::{Bindings, StartInfo};

use crate::{Spt, bindings, sys};

/// The ABI note: this image is for the spt target, ABI version 2. The linker script puts
/// it in a PT_NOTE of its own.
#[used]
#[unsafe(link_section = ".note.solo5.abi")]
pub static SOLO5_ABI: Abi1Note = Abi1Note::new(AbiTarget::Spt);

unsafe extern "C" {
    /// The end of the image, page-aligned (from the linker script).
    static _end: u8;
}

unsafe extern "Rust" {
    /// The glue's `main`, wrapped by [`crate::entry!`].
    fn __compose_spt_main();
}

/// The entry point.
///
/// # Safety
///
/// Only the tender may jump here, once, in the state the spt ABI describes.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.compose_spt_start")]
pub unsafe extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        // rdi holds the boot info's address: leave it as the first argument.
        "xor ebp, ebp",  // the outermost frame, for debuggers
        "and rsp, -16",  // the SysV ABI wants rsp 16-aligned at each call
        "call {start}",
        "ud2",           // spt_start never returns
        start = sym spt_start,
    )
}

/// Sets up the runtime and runs the glue's `main`.
///
/// # Safety
///
/// Called once by `_start` with the tender's boot info.
unsafe extern "C" fn spt_start(boot_info: *const SptBootInfo) -> ! {
    // FS still points at the tender's thread-local storage. Nothing here uses TLS; point
    // it at nothing, as Solo5's bindings do, so that a stray TLS access faults instead of
    // reading the tender's data.
    // SAFETY: no code in the guest uses thread-local storage.
    let _ = unsafe { sys::arch_prctl_set_fs(0) };
    // SAFETY: the tender put a valid boot info here, unchanged for the whole run.
    let bi = unsafe { boot_info.read() };
    bindings::set_yield_fds(bi.epollfd, bi.timerfd);
    // Keep the ABI note referenced from the entry point, so that no linker drops it.
    // SAFETY: a plain read of a static.
    let _ = unsafe { core::ptr::read_volatile(&raw const SOLO5_ABI) };
    let info = StartInfo {
        mem_size: bi.mem_size,
        kernel_end: bi.kernel_end,
        image_end: &raw const _end as u64,
        cmdline: bi.cmdline as usize as *const u8,
        mft: bi.mft as usize as *const MftHeader,
        // The monotonic clock is CLOCK_MONOTONIC, not the TSC.
        tsc_hz: 0,
    };
    // SAFETY: the tender owns this contract: memory above the image and below the stack
    // is free, and the command line and manifest copy stay in place, read-only.
    unsafe { solo5_guest::start::<Spt>(&info) };
    // SAFETY: `entry!` defines this function in the glue with this signature.
    unsafe { __compose_spt_main() };
    Spt::halt(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    solo5_guest::panic::panic::<Spt>(info)
}
