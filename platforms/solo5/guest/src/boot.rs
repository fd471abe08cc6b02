//! Start-up: what the tender handed over, and the boot arguments on its command line.

use core::fmt::Write as _;

use compose_devices::bootargs::{self, BootArgs, Spec};
use solo5_abi::{DeviceType, MFT_MAX_ENTRIES, MftEntry, MftHeader};

use crate::{Bindings, Error, MIN_MEMORY, RawConsole, STACK_SIZE, heap, time};

/// What a target's entry point hands to [`start`], taken from the tender's boot info and the
/// image's linker symbols.
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    /// Guest memory size: the guest owns everything below it; the stack starts at its top.
    pub mem_size: u64,
    /// The end of the loaded image as the tender computed it (it may leave out `.bss`).
    pub kernel_end: u64,
    /// The end of the image as linked: the address of the linker script's `_end`.
    pub image_end: u64,
    /// The command line: the tender's arguments after the unikernel, NUL-terminated.
    pub cmdline: *const u8,
    /// The tender's copy of the manifest, with the devices' handles and details filled in.
    pub mft: *const MftHeader,
    /// TSC frequency in Hz, for targets whose monotonic clock is the TSC; 0 otherwise.
    pub tsc_hz: u64,
}

/// The Solo5 log level, from a leading `--solo5:LEVEL` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `--solo5:quiet`
    Quiet,
    /// `--solo5:error`
    Error,
    /// `--solo5:warn`
    Warn,
    /// `--solo5:info` (the default)
    Info,
    /// `--solo5:debug`: the runtime reports its memory layout at start.
    Debug,
}

impl LogLevel {
    fn from_arg(arg: &str) -> Option<Self> {
        Some(match arg.strip_prefix("--solo5:")? {
            "quiet" => LogLevel::Quiet,
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// The memory layout and clock [`start`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// Guest memory size in bytes.
    pub mem_size: u64,
    /// The end of the loaded image, as the tender computed it.
    pub kernel_end: u64,
    /// The end of the image as linked (`_end`).
    pub image_end: u64,
    /// The heap: `[start, end)`.
    pub heap: (u64, u64),
    /// Bytes left for the stack at the top of memory.
    pub stack_size: u64,
    /// TSC frequency in Hz (0 on targets that do not use the TSC).
    pub tsc_hz: u64,
}

/// What [`start`] keeps for the rest of the run.
struct Saved {
    info: BootInfo,
    /// The command line without its leading `--solo5:` tokens, or `None` if not UTF-8.
    cmdline: Option<&'static str>,
    log_level: LogLevel,
    manifest: &'static [MftEntry],
}

static SAVED: spin::Once<Saved> = spin::Once::new();
static PROGRAM: spin::Once<&'static str> = spin::Once::new();

/// The longest command line a tender passes, NUL included (`HVT_CMDLINE_SIZE`).
const CMDLINE_MAX: usize = 8192;

/// Sets up the runtime from the tender's boot information: the heap, the clock, the command
/// line and the manifest. A target's entry point calls it once, before any Rust code that
/// allocates. Halts with status 255 if memory is too small to run.
///
/// # Safety
///
/// Call it exactly once, first thing after entry. `info` must describe this guest as the
/// tender set it up: the memory from the end of the image (`kernel_end`, `image_end`) to
/// `mem_size` must be RAM that nothing else uses, except the stack at its top (within the
/// reservation described in the crate docs); `cmdline` must point at a NUL-terminated
/// string and `mft` at the tender's manifest copy, both valid and unchanged for the rest
/// of the run.
pub unsafe fn start<B: Bindings>(info: &StartInfo) {
    const PAGE: u64 = 4096;
    let heap_start = info.kernel_end.max(info.image_end).next_multiple_of(PAGE);
    let free = info.mem_size.saturating_sub(heap_start);
    let stack = STACK_SIZE.min(free / 4).next_multiple_of(PAGE);
    let heap_end = info.mem_size.saturating_sub(stack) & !(PAGE - 1);
    if stack < MIN_MEMORY || heap_end < heap_start.saturating_add(MIN_MEMORY) {
        let _ = writeln!(
            RawConsole::<B>::new(),
            "Solo5: not enough memory: {} KiB of guest memory, the image ends at {:#x}, \
             and the stack and the heap need {} KiB each",
            info.mem_size / 1024,
            heap_start,
            MIN_MEMORY / 1024
        );
        B::halt(255);
    }
    // SAFETY: the caller promises that this range is unused RAM for the rest of the run,
    // and this is the only call (so the heap is claimed once).
    unsafe { heap::claim(heap_start, heap_end) };
    time::TscClock::init(info.tsc_hz);
    time::set_epoch::<B>();

    // SAFETY: the caller promises a NUL-terminated command line, valid for the whole run.
    let cmdline = unsafe { c_string(info.cmdline, CMDLINE_MAX) };
    let (cmdline, log_level) = match core::str::from_utf8(cmdline) {
        Ok(s) => {
            let (rest, level) = strip_solo5_args(s);
            (Some(rest), level)
        }
        Err(_) => (None, LogLevel::Info),
    };
    // SAFETY: the caller promises `mft` points at the tender's manifest copy, which holds a
    // header and `entries` entries and stays valid and unchanged.
    let manifest = unsafe { manifest_entries(info.mft) };
    let info = BootInfo {
        mem_size: info.mem_size,
        kernel_end: info.kernel_end,
        image_end: info.image_end,
        heap: (heap_start, heap_end),
        stack_size: stack,
        tsc_hz: info.tsc_hz,
    };
    SAVED.call_once(|| Saved {
        info,
        cmdline,
        log_level,
        manifest,
    });

    if log_level >= LogLevel::Debug {
        let _ = writeln!(
            RawConsole::<B>::new(),
            "Solo5: {}: memory {} MiB, image end {:#x}, heap {:#x}-{:#x}, stack {} KiB, \
             TSC {} Hz, {} manifest entries",
            B::TARGET,
            info.mem_size >> 20,
            info.image_end,
            info.heap.0,
            info.heap.1,
            info.stack_size / 1024,
            info.tsc_hz,
            manifest.len()
        );
    }
}

/// The bytes of a NUL-terminated string, at most `max` long.
///
/// # Safety
///
/// `p` must be null or point at readable memory holding a NUL within `max` bytes, valid and
/// unchanged for the rest of the run.
unsafe fn c_string(p: *const u8, max: usize) -> &'static [u8] {
    if p.is_null() {
        return &[];
    }
    let mut len = 0;
    // SAFETY: the caller promises the bytes up to the NUL (within `max`) are readable.
    while len < max && unsafe { p.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just read are readable, and stay valid and unchanged.
    unsafe { core::slice::from_raw_parts(p, len) }
}

/// The manifest's entries (entry 0, the reserved one, included).
///
/// # Safety
///
/// `mft` must be null or point at a manifest header followed by its entries, 8-aligned,
/// valid and unchanged for the rest of the run.
unsafe fn manifest_entries(mft: *const MftHeader) -> &'static [MftEntry] {
    if mft.is_null() {
        return &[];
    }
    // SAFETY: the caller promises a readable header.
    let header = unsafe { mft.read() };
    let n = (header.entries as usize).min(MFT_MAX_ENTRIES);
    // SAFETY: the entries follow the 8-byte header, 8-aligned (MftEntry's alignment), and
    // the caller promises that all `entries` of them are there; MftEntry is plain data for
    // which any bytes are valid.
    unsafe { core::slice::from_raw_parts(mft.add(1).cast::<MftEntry>(), n) }
}

/// Removes the leading `--solo5:LEVEL` arguments (the log level, as Solo5's own bindings
/// do); returns the rest and the last level given.
fn strip_solo5_args(mut cmdline: &str) -> (&str, LogLevel) {
    let mut level = LogLevel::Info;
    loop {
        let trimmed = cmdline.trim_start_matches(' ');
        let (first, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        match LogLevel::from_arg(first) {
            Some(l) => {
                level = l;
                cmdline = rest;
            }
            None => return (trimmed, level),
        }
    }
}

fn saved() -> &'static Saved {
    SAVED.get().expect("solo5-guest: `start` was not called")
}

/// The memory layout and TSC frequency found at start.
pub fn boot_info() -> BootInfo {
    saved().info
}

/// The command line after the `--solo5:` arguments, or `None` if it is not UTF-8.
pub fn cmdline() -> Option<&'static str> {
    saved().cmdline
}

/// The log level given with `--solo5:LEVEL`.
pub fn log_level() -> LogLevel {
    saved().log_level
}

/// The tender's manifest copy: entry 0 is reserved, device handle *n* is entry *n*.
pub fn manifest() -> &'static [MftEntry] {
    saved().manifest
}

/// Sets the name the runtime's messages start with (the glue's package name).
pub fn set_program(name: &'static str) {
    PROGRAM.call_once(|| name);
}

/// The name the runtime's messages start with.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("unikernel")
}

/// Looks up the attached manifest device `name` of type `ty`: its handle and entry.
pub(crate) fn device(name: &str, ty: DeviceType) -> Result<(u64, &'static MftEntry), Error> {
    let entries = manifest();
    let Some((handle, entry)) = entries
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, e)| e.name_str() == Some(name))
    else {
        return Err(Error::new(alloc::format!(
            "no {} device '{name}' in the unikernel's manifest",
            ty.name()
        )));
    };
    if entry.device_type() != Some(ty) {
        return Err(Error::new(alloc::format!(
            "manifest device '{name}' is not a {} device",
            ty.name()
        )));
    }
    if !entry.is_attached() {
        return Err(Error::new(alloc::format!(
            "{} device '{name}' is not attached by the tender",
            ty.name()
        )));
    }
    Ok((handle as u64, entry))
}

/// What the unikernel was started with.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The checked boot arguments.
    pub args: BootArgs,
}

/// Reads the boot arguments from the tender's command line. Prints the usage and halts
/// with status 0 on `--help`; prints the error and halts with status 64 (`EX_USAGE`)
/// when the command line does not fit `specs`.
pub fn boot<B: Bindings>(specs: &'static [Spec]) -> Boot {
    let program = program();
    let mut console = RawConsole::<B>::new();
    let Some(cmdline) = cmdline() else {
        let _ = writeln!(console, "{program}: the command line is not UTF-8");
        B::halt(64);
    };
    match BootArgs::parse(specs, cmdline.split_ascii_whitespace()) {
        Ok(args) => Boot { args },
        Err(bootargs::Error::Help(usage)) => {
            let _ = write!(console, "usage: {program} [--NAME=VALUE]...\n{usage}");
            B::halt(0)
        }
        Err(e) => {
            let _ = writeln!(console, "{program}: {e}");
            let _ = writeln!(
                console,
                "{program}: try '{program} --help' for the boot arguments"
            );
            B::halt(64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo5_args_are_stripped() {
        assert_eq!(strip_solo5_args(""), ("", LogLevel::Info));
        assert_eq!(strip_solo5_args("--port=1"), ("--port=1", LogLevel::Info));
        assert_eq!(
            strip_solo5_args("--solo5:quiet --port=1"),
            ("--port=1", LogLevel::Quiet)
        );
        assert_eq!(
            strip_solo5_args("--solo5:debug --solo5:warn --a --solo5:info"),
            ("--a --solo5:info", LogLevel::Warn)
        );
        assert_eq!(strip_solo5_args("--solo5:debug"), ("", LogLevel::Debug));
        // Unknown levels are left for the boot arguments to reject.
        assert_eq!(
            strip_solo5_args("--solo5:loud x"),
            ("--solo5:loud x", LogLevel::Info)
        );
    }
}
