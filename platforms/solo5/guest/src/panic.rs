//! Ending the unikernel on a panic or a CPU fault, with a message on the console.
//!
//! A target crate's `#[panic_handler]` calls [`panic()`]; its exception handlers, if it has
//! any, call [`trap()`]. Both halt with status 255, Solo5's abort status (which also makes
//! `solo5-hvt-debug --dumpcore` write a core file). Neither allocates, so they work when
//! the heap is exhausted or corrupt.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{Bindings, RawConsole, program};

/// The exit status of a panic or a fault (`SOLO5_EXIT_ABORT`).
pub const ABORT: u8 = 255;

/// Set once a panic or trap started reporting, so that a second one halts at once.
static ENDING: AtomicBool = AtomicBool::new(false);

/// Prints `<program>: panicked at <file:line:col>: <message>` and halts with status 255.
pub fn panic<B: Bindings>(info: &core::panic::PanicInfo<'_>) -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        B::console_write(b"\npanicked while ending the unikernel\n");
        B::halt(ABORT);
    }
    let mut out = RawConsole::<B>::new();
    let _ = write!(out, "{}: panicked", program());
    if let Some(at) = info.location() {
        let _ = write!(out, " at {}:{}:{}", at.file(), at.line(), at.column());
    }
    let _ = writeln!(out, ": {}", info.message());
    B::halt(ABORT)
}

/// What a CPU exception handler knows about the fault.
#[derive(Clone, Copy, Debug)]
pub struct Trap {
    /// The exception vector (0 = divide error, 6 = invalid opcode, 13 = general protection,
    /// 14 = page fault, ...).
    pub vector: u64,
    /// The error code the CPU pushed (0 for vectors that have none).
    pub error_code: u64,
    /// Where the fault happened.
    pub rip: u64,
    /// The stack pointer at the fault.
    pub rsp: u64,
    /// The faulting address, for page faults.
    pub cr2: u64,
}

/// The name of exception `vector`.
fn vector_name(vector: u64) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point error",
        _ => "exception",
    }
}

/// Prints `Solo5: trap: <exception> ...` with the fault's registers and halts with status
/// 255.
pub fn trap<B: Bindings>(t: &Trap) -> ! {
    if ENDING.swap(true, Ordering::AcqRel) {
        B::console_write(b"\nCPU fault while ending the unikernel\n");
        B::halt(ABORT);
    }
    let _ = writeln!(
        RawConsole::<B>::new(),
        "Solo5: trap: {} (vector {}), error code {:#x}, rip {:#x}, rsp {:#x}, cr2 {:#x}",
        vector_name(t.vector),
        t.vector,
        t.error_code,
        t.rip,
        t.rsp,
        t.cr2
    );
    B::halt(ABORT)
}
