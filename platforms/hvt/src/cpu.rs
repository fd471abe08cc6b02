//! CPU tables: a GDT of our own and an IDT that reports faults (guest only).
//!
//! The tender leaves the GDT in memory the guest's page tables do not map, and no IDT, so
//! any exception would triple-fault and the tender would exit with status 1 and no clue.
//! [`init`] loads a GDT in the image (null, 64-bit code 0x08, data 0x10, like the tender's
//! and Solo5's own), reloads the segment registers from it, and loads an IDT whose vectors
//! 0-31 print the fault (vector, error code, `rip`, `rsp`, `cr2`) and halt with status 255
//! (see [`solo5_guest::panic::trap`]). Exceptions run on the faulting stack (no IST): a
//! fault caused by an exhausted stack still ends in a triple fault.

use core::cell::UnsafeCell;

use solo5_guest::panic::Trap;

use crate::Hvt;

/// The code selector.
const CODE: u16 = 0x08;
/// The data selector.
const DATA: u16 = 0x10;

/// Null, code (64-bit, present, DPL 0, readable, accessed), data (present, writable,
/// accessed). The accessed bits are preset so the CPU never writes to the table, which
/// sits in read-only memory.
static GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// The operand of `lgdt`/`lidt`.
#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// One 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    /// Present, DPL 0, 64-bit interrupt gate: 0x8e.
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);
const _: () = assert!(core::mem::size_of::<TablePointer>() == 10);

const VECTORS: usize = 32;

/// The IDT, filled in by [`init`] (the stubs' addresses are only known at link time).
struct Idt(UnsafeCell<[Gate; VECTORS]>);

// SAFETY: only `init` writes it, once, before anything else runs; the CPU reads it after.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new(
    [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    }; VECTORS],
));

unsafe extern "C" {
    /// The addresses of the 32 exception stubs (defined below in assembly).
    static compose_hvt_trap_stubs: [u64; VECTORS];
}

// One stub per vector: those for which the CPU pushes no error code push a 0 so that every
// frame looks alike; all push their vector, then share `compose_hvt_trap_common`, which
// passes the frame (vector, error code, rip, cs, rflags, rsp, ss) to `trap_entry`.
core::arch::global_asm!(
    ".macro COMPOSE_TRAP_NOERR n",
    "compose_hvt_trap_\\n:",
    "    push 0",
    "    push \\n",
    "    jmp compose_hvt_trap_common",
    ".endm",
    ".macro COMPOSE_TRAP_ERR n",
    "compose_hvt_trap_\\n:",
    "    push \\n",
    "    jmp compose_hvt_trap_common",
    ".endm",
    ".pushsection .text.compose_hvt_traps, \"ax\"",
    "COMPOSE_TRAP_NOERR 0",
    "COMPOSE_TRAP_NOERR 1",
    "COMPOSE_TRAP_NOERR 2",
    "COMPOSE_TRAP_NOERR 3",
    "COMPOSE_TRAP_NOERR 4",
    "COMPOSE_TRAP_NOERR 5",
    "COMPOSE_TRAP_NOERR 6",
    "COMPOSE_TRAP_NOERR 7",
    "COMPOSE_TRAP_ERR 8",
    "COMPOSE_TRAP_NOERR 9",
    "COMPOSE_TRAP_ERR 10",
    "COMPOSE_TRAP_ERR 11",
    "COMPOSE_TRAP_ERR 12",
    "COMPOSE_TRAP_ERR 13",
    "COMPOSE_TRAP_ERR 14",
    "COMPOSE_TRAP_NOERR 15",
    "COMPOSE_TRAP_NOERR 16",
    "COMPOSE_TRAP_ERR 17",
    "COMPOSE_TRAP_NOERR 18",
    "COMPOSE_TRAP_NOERR 19",
    "COMPOSE_TRAP_NOERR 20",
    "COMPOSE_TRAP_ERR 21",
    "COMPOSE_TRAP_NOERR 22",
    "COMPOSE_TRAP_NOERR 23",
    "COMPOSE_TRAP_NOERR 24",
    "COMPOSE_TRAP_NOERR 25",
    "COMPOSE_TRAP_NOERR 26",
    "COMPOSE_TRAP_NOERR 27",
    "COMPOSE_TRAP_NOERR 28",
    "COMPOSE_TRAP_ERR 29",
    "COMPOSE_TRAP_ERR 30",
    "COMPOSE_TRAP_NOERR 31",
    "compose_hvt_trap_common:",
    "    mov rdi, rsp",
    "    and rsp, -16",
    "    call {entry}",
    "    ud2",
    ".popsection",
    ".pushsection .rodata.compose_hvt_trap_stubs, \"a\"",
    ".balign 8",
    ".global compose_hvt_trap_stubs",
    "compose_hvt_trap_stubs:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad compose_hvt_trap_\\n",
    ".endr",
    ".popsection",
    entry = sym trap_entry,
);

/// Where every exception ends: reports it and halts.
///
/// # Safety
///
/// Called only by the stubs, with `frame` pointing at the 7 words they and the CPU pushed.
unsafe extern "C" fn trap_entry(frame: *const u64) -> ! {
    // SAFETY: the stub passes the frame it built: vector, error code, then the CPU's
    // rip, cs, rflags, rsp, ss.
    let word = |i: usize| unsafe { frame.add(i).read() };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects (the guest runs at CPL 0).
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags))
    };
    solo5_guest::panic::trap::<Hvt>(&Trap {
        vector: word(0),
        error_code: word(1),
        rip: word(2),
        rsp: word(5),
        cr2,
    })
}

/// Loads the GDT and the IDT.
///
/// # Safety
///
/// Call it once, at entry, before anything relies on the segment registers or could fault.
pub(crate) unsafe fn init() {
    let gdt = TablePointer {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u64,
    };
    // SAFETY: the GDT is a valid, static table whose code and data descriptors match the
    // tender's (flat, 64-bit), so reloading CS (by a far return) and the data segments
    // keeps every address meaning the same.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "mov fs, {data:x}",
            "mov gs, {data:x}",
            gdt = in(reg) &raw const gdt,
            code = const CODE as u64,
            data = in(reg) u64::from(DATA),
            tmp = out(reg) _,
        );
    }
    // SAFETY: nothing else touches the IDT yet: the CPU uses it only after `lidt` below.
    let idt = unsafe { &mut *IDT.0.get() };
    for (v, gate) in idt.iter_mut().enumerate() {
        // SAFETY: the stub table is static data from the assembly above.
        let stub = unsafe { compose_hvt_trap_stubs[v] };
        *gate = Gate {
            offset_low: stub as u16,
            selector: CODE,
            ist: 0,
            attributes: 0x8e,
            offset_mid: (stub >> 16) as u16,
            offset_high: (stub >> 32) as u32,
            reserved: 0,
        };
    }
    let idtr = TablePointer {
        limit: (core::mem::size_of::<[Gate; VECTORS]>() - 1) as u16,
        base: idt.as_ptr() as u64,
    };
    // SAFETY: the IDT is filled with gates to the stubs, in the code segment just loaded.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &raw const idtr, options(readonly, nostack, preserves_flags))
    };
}
