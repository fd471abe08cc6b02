//! The runtime on the board (built for `aarch64-unknown-none` only).

pub mod cpu;
pub mod mmu;

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::mmio::{self, GICC, GICD, GPIO, MAILBOX, RNG200, UART0};
use crate::property::{self, clock, tag};
use crate::start::Frame;

// ---------------------------------------------------------------------------------------
// Start.

/// The baud rate of the console.
pub const BAUD: u32 = 115_200;

/// Where a host may leave a seed for the random device when the board has no RNG200
/// (QEMU): `compose run` loads one there with `-device loader`. See [`crate::Random`].
pub const SEED_ADDR: usize = 0x07F0_0000;
/// The seed's 16-byte header; 32 seed bytes follow it.
pub const SEED_MAGIC: &[u8; 16] = b"compose-rpi4-rng";

/// The command line, copied out of the device tree or ATAG list before the heap (which
/// may cover them) is claimed.
static mut CMDLINE: [u8; 4096] = [0; 4096];
static CMDLINE_LEN: AtomicU64 = AtomicU64::new(0);
static DEBUG: AtomicBool = AtomicBool::new(false);
static SEED: spin::Once<[u8; 32]> = spin::Once::new();
static PROGRAM: spin::Once<&'static str> = spin::Once::new();

unsafe extern "C" {
    static __stack_top: u8;
    static __image_start: u8;
    static __image_end: u8;
}

unsafe extern "Rust" {
    /// The glue's `main`, wrapped by [`crate::entry!`].
    fn __compose_rpi4_main();
}

/// The first Rust code, at EL1 with FP/SIMD on, the MMU off and interrupts masked;
/// `x0` is what the firmware or QEMU passed (a device tree, an ATAG list or 0).
pub extern "C" fn rpi4_start(x0: u64) -> ! {
    let entered = cpu::cntpct();
    // SAFETY: once, first, at EL1 with the MMU off.
    unsafe { mmu::init() };
    let uart_hz = mailbox_u32(tag::CLOCK_RATE, &[clock::UART], 2)
        .and_then(|v| v.get(1).copied())
        .unwrap_or(48_000_000);
    uart_init(uart_hz);
    read_cmdline(x0 as usize);
    read_seed();
    let (mem_base, mem_size) = match mailbox_u32(tag::ARM_MEMORY, &[], 2) {
        Some(v) if v.len() >= 2 => (v[0] as u64, v[1] as u64),
        _ => (0, 0x3c00_0000),
    };
    let heap_start = (&raw const __stack_top) as usize;
    let heap_end = (mem_base + mem_size) as usize;
    if heap_end <= heap_start + (1 << 20) {
        let _ = writeln!(
            Uart,
            "rpi4: not enough memory: the firmware reports {mem_size:#x} bytes at {mem_base:#x}"
        );
        exit(255);
    }
    // SAFETY: the RAM from the stack's top to the end of the ARM's memory is unused: the
    // device tree and the seed were copied out above.
    unsafe { crate::heap::claim(heap_start, heap_end) };
    gic_init();
    timer_init();
    if debug() {
        let us = |ticks: u64| ticks * 1_000_000 / cpu::cntfrq().max(1);
        let _ = writeln!(
            Uart,
            "rpi4: entered at counter {} us, ready at {} us",
            us(entered),
            us(cpu::cntpct())
        );
        report_board(heap_start, heap_end, uart_hz);
    }
    // SAFETY: `entry!` defines this function in the glue with this signature.
    unsafe { __compose_rpi4_main() };
    exit(0)
}

/// Whether `--rpi4:debug` was on the command line.
pub fn debug() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

fn read_cmdline(x0: usize) {
    let mut found: &[u8] = &[];
    // A device tree: big-endian magic 0xd00dfeed.
    if x0 != 0 && x0.is_multiple_of(8) && x0 < 0x4000_0000 && mmio_be32(x0) == 0xd00d_feed {
        // SAFETY: a device tree the firmware or QEMU placed in RAM, intact until the heap
        // is claimed (after this copy).
        if let Ok(fdt) = unsafe { fdt::Fdt::from_ptr(x0 as *const u8) }
            && let Some(args) = fdt
                .find_node("/chosen")
                .and_then(|n| n.property("bootargs"))
                .and_then(|p| p.as_str())
        {
            found = args.as_bytes();
        }
    } else if x0 != 0 && x0.is_multiple_of(4) && x0 < 0x10_0000 {
        // SAFETY: an ATAG list below 1 MiB: at most the 4 KiB up to the image's load
        // address, which is RAM.
        let words =
            unsafe { core::slice::from_raw_parts(x0 as *const u32, 1024.min((0x80000 - x0) / 4)) };
        if let Some(c) = crate::cmdline::atag_cmdline(words) {
            found = c;
        }
    }
    // SAFETY: written once here, before anything reads it.
    #[allow(clippy::deref_addrof)]
    let buf = unsafe { &mut *(&raw mut CMDLINE) };
    let n = found.len().min(buf.len());
    buf[..n].copy_from_slice(&found[..n]);
    CMDLINE_LEN.store(n as u64, Ordering::Release);
    let (_, debug) = crate::cmdline::unikernel_args(cmdline());
    DEBUG.store(debug, Ordering::Relaxed);
}

fn mmio_be32(addr: usize) -> u32 {
    u32::from_be(mmio::read(addr))
}

/// The boot command line (empty if it was not UTF-8).
pub fn cmdline() -> &'static str {
    let n = CMDLINE_LEN.load(Ordering::Acquire) as usize;
    // SAFETY: written once by `read_cmdline` before this is called.
    #[allow(clippy::deref_addrof)]
    let bytes = unsafe { &(&*(&raw const CMDLINE))[..n] };
    core::str::from_utf8(bytes).unwrap_or("")
}

fn read_seed() {
    let p = SEED_ADDR as *mut u8;
    // SAFETY: RAM below the end of the ARM's memory, not yet handed to the heap.
    let region = unsafe { core::slice::from_raw_parts_mut(p, 48) };
    if &region[..16] == SEED_MAGIC {
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&region[16..48]);
        // Used once: a later boot over the same RAM must not reuse it.
        region.fill(0);
        SEED.call_once(|| seed);
    }
}

/// The host-supplied seed, if one was there at start.
pub fn host_seed() -> Option<[u8; 32]> {
    SEED.get().copied()
}

fn report_board(heap_start: usize, heap_end: usize, uart_hz: u32) {
    let revision = mailbox_u32(tag::BOARD_REVISION, &[], 1).map(|v| v[0]);
    let _ = write!(Uart, "rpi4: board revision ");
    match revision {
        Some(r) => {
            let name = property::Revision::decode(r).map_or("an old-style board", |d| d.name());
            let _ = writeln!(Uart, "{r:#x} ({name})");
        }
        None => {
            let _ = writeln!(Uart, "unknown (the mailbox did not answer)");
        }
    }
    let fw = mailbox_u32(tag::FIRMWARE_REVISION, &[], 1).map_or(0, |v| v[0]);
    let serial = mailbox_u32(tag::BOARD_SERIAL, &[], 2)
        .filter(|v| v.len() >= 2)
        .map_or(0, |v| (u64::from(v[1]) << 32) | u64::from(v[0]));
    let _ = writeln!(Uart, "rpi4: firmware {fw:#x}, serial {serial:#018x}");
    if let Some(mac) = mac_address() {
        let _ = writeln!(
            Uart,
            "rpi4: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
        );
    }
    let rate = |id| {
        mailbox_u32(tag::CLOCK_RATE, &[id], 2)
            .and_then(|v| v.get(1).copied())
            .unwrap_or(0)
    };
    let _ = writeln!(
        Uart,
        "rpi4: clocks: ARM {} Hz, core {} Hz, UART {uart_hz} Hz, EMMC {} Hz, PWM {} Hz",
        rate(clock::ARM),
        rate(clock::CORE),
        rate(clock::EMMC),
        rate(clock::PWM)
    );
    let _ = writeln!(
        Uart,
        "rpi4: memory: heap {heap_start:#x}-{heap_end:#x} ({} MiB), image {:#x}-{:#x}",
        (heap_end - heap_start) >> 20,
        (&raw const __image_start) as usize,
        (&raw const __image_end) as usize
    );
    let _ = writeln!(
        Uart,
        "rpi4: generic timer {} Hz, MIDR {:#x}, RNG200 {}",
        cpu::cntfrq(),
        cpu::midr(),
        if rng200_present() {
            "present"
        } else {
            "absent"
        }
    );
}

/// The board's MAC address, from the firmware.
pub fn mac_address() -> Option<[u8; 6]> {
    let v = mailbox_u32(tag::MAC_ADDRESS, &[], 2)?;
    if v.len() < 2 {
        return None;
    }
    let mut mac = [0u8; 6];
    mac[..4].copy_from_slice(&v[0].to_le_bytes());
    mac[4..].copy_from_slice(&v[1].to_le_bytes()[..2]);
    Some(mac)
}

/// Sets the name the runtime's messages start with (the glue's package name).
pub fn set_program(name: &'static str) {
    PROGRAM.call_once(|| name);
}

/// The name the runtime's messages start with.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("unikernel")
}

// ---------------------------------------------------------------------------------------
// Exit.

static EXITING: AtomicBool = AtomicBool::new(false);

/// Prints the exit status, then ends: under QEMU with `-semihosting`, QEMU exits with the
/// status (SYS_EXIT with ADP_Stopped_ApplicationExit); on a board (where the semihosting call is an undefined
/// instruction, which the vectors swallow once exiting) the core stops.
pub fn exit(status: u8) -> ! {
    EXITING.store(true, Ordering::SeqCst);
    let _ = writeln!(Uart, "rpi4: exit status {status}");
    uart_flush();
    let block: [u64; 2] = [0x20026, u64::from(status)];
    // SAFETY: the semihosting call reads the two-word block and does not return under
    // QEMU; elsewhere the HLT traps and the vectors park the core.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            in("x0") 0x18u64,
            in("x1") block.as_ptr(),
            options(nostack)
        )
    };
    cpu::park()
}

// ---------------------------------------------------------------------------------------
// Exceptions.

/// Set while [`probe_read`] reads a register that may not exist.
static PROBING: AtomicBool = AtomicBool::new(false);
static PROBE_FAULTED: AtomicBool = AtomicBool::new(false);
static REPORTING: AtomicBool = AtomicBool::new(false);
static TIMER_IRQS: AtomicU64 = AtomicU64::new(0);

/// Reads a register that may be absent (QEMU has no RNG200: any access is a synchronous
/// external abort); `None` if the read aborted.
pub fn probe_read(addr: usize) -> Option<u32> {
    PROBE_FAULTED.store(false, Ordering::SeqCst);
    PROBING.store(true, Ordering::SeqCst);
    let v = mmio::read(addr);
    cpu::dsb();
    PROBING.store(false, Ordering::SeqCst);
    (!PROBE_FAULTED.load(Ordering::SeqCst)).then_some(v)
}

/// The vectors' Rust half: `kind` is the vector's number (4 = synchronous, 5 = IRQ at
/// EL1 with SP_EL1). Returns to the interrupted code when the event was handled.
pub extern "C" fn exception(kind: u64, frame: &mut Frame) {
    if kind == 5 || kind == 1 {
        irq();
        return;
    }
    let esr = cpu::esr();
    let ec = esr >> 26;
    if EXITING.load(Ordering::SeqCst) {
        cpu::park();
    }
    // A probe's data abort (EC 0x25, same EL): skip the load and report it.
    if (kind == 4 || kind == 0) && ec == 0x25 && PROBING.load(Ordering::SeqCst) {
        PROBE_FAULTED.store(true, Ordering::SeqCst);
        frame.elr += 4;
        return;
    }
    if REPORTING.swap(true, Ordering::SeqCst) {
        let _ = writeln!(Uart, "\nrpi4: fault while reporting a fault");
        exit(255);
    }
    let what = match kind % 4 {
        0 => exception_class(ec),
        1 => "unexpected IRQ",
        2 => "FIQ",
        _ => "SError (asynchronous abort)",
    };
    let _ = writeln!(
        Uart,
        "{}: trap: {what} (ESR {esr:#010x}), pc {:#x}, far {:#x}, sp {:#x}, spsr {:#x}, lr {:#x}",
        program(),
        frame.elr,
        cpu::far(),
        (frame as *const Frame as usize) + 272,
        frame.spsr,
        frame.x[30]
    );
    exit(255)
}

fn exception_class(ec: u64) -> &'static str {
    match ec {
        0x00 => "undefined instruction",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x18 => "system register access trapped",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2c => "floating-point exception",
        0x2f => "SError",
        0x30..=0x35 => "debug event",
        0x3c => "breakpoint (BRK)",
        _ => "synchronous exception",
    }
}

// ---------------------------------------------------------------------------------------
// The PL011 console.

const DR: usize = 0x00;
const FR: usize = 0x18;
const IBRD: usize = 0x24;
const FBRD: usize = 0x28;
const LCRH: usize = 0x2c;
const CR: usize = 0x30;
const IMSC: usize = 0x38;
const ICR: usize = 0x44;
const FR_BUSY: u32 = 1 << 3;
const FR_TXFF: u32 = 1 << 5;

static UART_READY: AtomicBool = AtomicBool::new(false);

/// Routes GPIO 14/15 to the PL011 (ALT0, no pulls: on a Pi 4 they otherwise carry the
/// mini UART, the PL011 going to Bluetooth) and sets it to 8N1 at [`BAUD`] from its
/// reference clock `hz` (the mailbox's UART clock: 48 MHz on a board, 3 MHz in QEMU).
fn uart_init(hz: u32) {
    let cr = mmio::read(UART0 + CR);
    mmio::write(UART0 + CR, cr & !1);
    while mmio::read(UART0 + FR) & FR_BUSY != 0 {}
    // GPFSEL1: GPIO 14 in bits 14:12, 15 in bits 17:15; ALT0 = 0b100.
    let sel = mmio::read(GPIO + 0x04) & !(0b111_111 << 12);
    mmio::write(GPIO + 0x04, sel | (0b100 << 12) | (0b100 << 15));
    // GPIO_PUP_PDN_CNTRL_REG0: GPIO 14 in bits 29:28, 15 in bits 31:30; 0 = no pull.
    let pulls = mmio::read(GPIO + 0xe4) & !(0b1111 << 28);
    mmio::write(GPIO + 0xe4, pulls);
    let (ibrd, fbrd) = crate::uart_divisors(hz, BAUD);
    mmio::write(UART0 + ICR, 0x7ff);
    mmio::write(UART0 + IBRD, ibrd);
    mmio::write(UART0 + FBRD, fbrd);
    mmio::write(UART0 + LCRH, 0b11 << 5 | 1 << 4); // 8 bits, FIFOs on
    mmio::write(UART0 + IMSC, 0);
    mmio::write(UART0 + CR, 1 | 1 << 8 | 1 << 9); // UARTEN, TXE, RXE
    UART_READY.store(true, Ordering::Release);
}

fn uart_byte(b: u8) {
    while mmio::read(UART0 + FR) & FR_TXFF != 0 {}
    mmio::write(UART0 + DR, u32::from(b));
}

/// Writes `bytes` to the UART, `\n` as `\r\n` (serial terminals want both).
pub fn uart_write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            uart_byte(b'\r');
        }
        uart_byte(b);
    }
}

fn uart_flush() {
    while mmio::read(UART0 + FR) & FR_BUSY != 0 {}
}

/// The UART as a `fmt::Write`, for the runtime's own messages (never allocates).
pub struct Uart;

impl fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart_write(s.as_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The mailbox.

#[repr(C, align(64))]
struct MailboxBuffer([u32; property::WORDS]);

static MAILBOX_LOCK: spin::Mutex<MailboxBuffer> =
    spin::Mutex::new(MailboxBuffer([0; property::WORDS]));

const MBOX0_READ: usize = MAILBOX;
const MBOX0_STATUS: usize = MAILBOX + 0x18;
const MBOX1_WRITE: usize = MAILBOX + 0x20;
const MBOX1_STATUS: usize = MAILBOX + 0x38;
const EMPTY: u32 = 1 << 30;
const FULL: u32 = 1 << 31;
const PROPERTY_CHANNEL: u32 = 8;

/// Asks the firmware for property `tag` with `request` values; the answer's values
/// (`response_words` of room), or `None` if it did not answer.
pub fn mailbox_u32(
    tag: u32,
    request: &[u32],
    response_words: usize,
) -> Option<heapless_words::Words> {
    let mut buf = MAILBOX_LOCK.lock();
    property::encode(&mut buf.0, tag, request, response_words)?;
    let addr = buf.0.as_ptr() as usize;
    // The VideoCore reads and writes RAM behind the ARM's caches.
    cpu::dcache_clean_invalidate(addr, core::mem::size_of::<MailboxBuffer>());
    // Bus address: the 0xC0000000 alias of RAM is uncached from the VideoCore's side.
    let message = (addr as u32 | 0xC000_0000) & !0xf | PROPERTY_CHANNEL;
    while mmio::read(MBOX1_STATUS) & FULL != 0 {}
    mmio::write(MBOX1_WRITE, message);
    let mut tries = 0u32;
    loop {
        while mmio::read(MBOX0_STATUS) & EMPTY != 0 {
            tries += 1;
            if tries > 50_000_000 {
                return None;
            }
        }
        if mmio::read(MBOX0_READ) == message {
            break;
        }
    }
    cpu::dcache_clean_invalidate(addr, core::mem::size_of::<MailboxBuffer>());
    property::decode(&buf.0, tag).map(heapless_words::Words::from)
}

/// A few words, copied out of the mailbox buffer (no allocation: the console comes up
/// before the heap).
pub mod heapless_words {
    use crate::property::MAX_VALUES;

    /// Up to [`MAX_VALUES`] words.
    #[derive(Clone, Copy, Debug)]
    pub struct Words {
        len: usize,
        words: [u32; MAX_VALUES],
    }

    impl From<&[u32]> for Words {
        fn from(v: &[u32]) -> Words {
            let mut words = [0; MAX_VALUES];
            let len = v.len().min(MAX_VALUES);
            words[..len].copy_from_slice(&v[..len]);
            Words { len, words }
        }
    }

    impl core::ops::Deref for Words {
        type Target = [u32];
        fn deref(&self) -> &[u32] {
            &self.words[..self.len]
        }
    }
}

// ---------------------------------------------------------------------------------------
// The GIC-400 and the generic timer.

/// The EL1 physical timer's interrupt (a PPI).
const TIMER_INTID: u32 = 30;

fn gic_init() {
    let lines = ((mmio::read(GICD + 0x004) & 0x1f) + 1) * 32;
    mmio::write(GICD, 0);
    for i in 0..lines / 32 {
        mmio::write(GICD + 0x180 + 4 * i as usize, !0); // ICENABLER
        mmio::write(GICD + 0x280 + 4 * i as usize, !0); // ICPENDR
    }
    for i in 0..lines / 4 {
        mmio::write(GICD + 0x400 + 4 * i as usize, 0xa0a0_a0a0); // IPRIORITYR
        if i >= 8 {
            mmio::write(GICD + 0x800 + 4 * i as usize, 0x0101_0101); // ITARGETSR: core 0
        }
    }
    for i in 2..lines / 16 {
        mmio::write(GICD + 0xc00 + 4 * i as usize, 0); // ICFGR: level
    }
    mmio::write(GICD, 1);
    mmio::write(GICC + 0x004, 0xf0); // PMR
    mmio::write(GICC, 1);
    mmio::write(GICD + 0x100, 1 << TIMER_INTID); // ISENABLER0
}

static EPOCH: AtomicU64 = AtomicU64::new(0);
static FREQ: AtomicU64 = AtomicU64::new(0);

fn timer_init() {
    cpu::set_cntp_ctl(0);
    // Read at run time: 54 MHz on a board, 62.5 MHz under QEMU.
    FREQ.store(cpu::cntfrq().max(1), Ordering::Relaxed);
    EPOCH.store(cpu::cntpct(), Ordering::Relaxed);
}

/// Nanoseconds since start, from the generic timer.
pub fn now_ns() -> u64 {
    let ticks = cpu::cntpct().wrapping_sub(EPOCH.load(Ordering::Relaxed));
    ((u128::from(ticks) * 1_000_000_000) / u128::from(FREQ.load(Ordering::Relaxed))) as u64
}

fn ns_to_counter(ns: u64) -> u64 {
    let ticks = (u128::from(ns) * u128::from(FREQ.load(Ordering::Relaxed))).div_ceil(1_000_000_000);
    EPOCH.load(Ordering::Relaxed).wrapping_add(ticks as u64)
}

fn irq() {
    let iar = mmio::read(GICC + 0x00c);
    let id = iar & 0x3ff;
    if id == TIMER_INTID {
        // Mask the timer until the next sleep arms it again.
        cpu::set_cntp_ctl(0b10);
        TIMER_IRQS.fetch_add(1, Ordering::Relaxed);
    }
    if id < 1020 {
        mmio::write(GICC + 0x010, iar);
    }
}

/// The longest single wait: an hour (the executor parks again after it).
const MAX_WAIT_NS: u64 = 3600 * 1_000_000_000;

/// Sleeps until `deadline` (ns since start) with the timer interrupt and WFI: the core
/// waits with IRQs masked (a pending interrupt still wakes WFI), then takes it.
pub fn sleep_until(deadline: u64) {
    let start = now_ns();
    let deadline = deadline.min(start.saturating_add(MAX_WAIT_NS));
    let irqs = TIMER_IRQS.load(Ordering::Relaxed);
    while now_ns() < deadline {
        cpu::set_cntp_cval(ns_to_counter(deadline));
        cpu::set_cntp_ctl(1);
        cpu::isb();
        cpu::wfi();
        cpu::take_irqs();
    }
    cpu::set_cntp_ctl(0);
    if debug() {
        let woke = now_ns();
        let _ = writeln!(
            Uart,
            "rpi4: slept {} us for {} us ({} timer interrupts)",
            (woke - start) / 1000,
            deadline.saturating_sub(start) / 1000,
            TIMER_IRQS.load(Ordering::Relaxed) - irqs
        );
    }
}

// ---------------------------------------------------------------------------------------
// RNG200.

static RNG200_STATE: spin::Once<bool> = spin::Once::new();

/// Whether the board has an RNG200 (probed once; QEMU's raspi4b has none), started.
pub fn rng200_present() -> bool {
    *RNG200_STATE.call_once(|| {
        if probe_read(RNG200).is_none() {
            return false;
        }
        // Discard the first bits, FIFO threshold 2, enable with the divider at 3.
        mmio::write(RNG200 + 0x10, 0x40000);
        mmio::write(RNG200 + 0x24, 2 << 8);
        mmio::write(RNG200, (3 << 13) | 0x1fff);
        let t0 = now_ns();
        while mmio::read(RNG200 + 0x0c) <= 16 {
            if now_ns() - t0 > 1_000_000_000 {
                return false;
            }
        }
        true
    })
}

/// One 32-bit word from RNG200 (which [`rng200_present`] found).
pub fn rng200_word() -> u32 {
    loop {
        if mmio::read(RNG200 + 0x18) & (1 << 31 | 1 << 5) != 0 {
            // Failed a health test: restart it, as Linux does.
            mmio::write(RNG200, 0);
            mmio::write(RNG200 + 0x18, !0);
            mmio::write(RNG200 + 0x08, 1);
            mmio::write(RNG200 + 0x08, 0);
            mmio::write(RNG200 + 0x04, 1);
            mmio::write(RNG200 + 0x04, 0);
            mmio::write(RNG200, (3 << 13) | 0x1fff);
        }
        if mmio::read(RNG200 + 0x24) & 0xff != 0 {
            return mmio::read(RNG200 + 0x20);
        }
        core::hint::spin_loop();
    }
}
