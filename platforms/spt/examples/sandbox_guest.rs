//! Probes the spt tender's seccomp filter from inside a unikernel: `--call=NAME` makes one
//! system call the filter must refuse, which kills the unikernel with SIGSYS (`compose-spt`
//! reports it and exits with 159). Without `--call` (or with `--call=none`) it makes
//! every allowed call, at the edges of what is allowed, and exits 0.
//!
//! `compose-spt --mem=32 --block:storage=disk.img sandbox_guest [--call=NAME]`
//!
//! NAME is one of the keys of [`FORBIDDEN`]. It prints `sandbox: NAME` before the call; if
//! the call comes back, it prints what it returned and exits 3.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use compose_devices as devices;
use compose_spt_guest as platform;
use compose_spt_guest::sys::{self, nr, syscall};
use devices::console::Console as _;

static BOOT_ARGS: &[devices::bootargs::Spec] = &[devices::bootargs::Spec {
    name: "call",
    kind: devices::bootargs::Kind::Str,
    default: Some("none"),
    doc: "the forbidden system call to make (none: only allowed ones)",
}];

/// The manifest: the reserved entry, then the block device `storage` (handle 1).
#[used]
#[unsafe(link_section = ".note.solo5.manifest")]
static SOLO5_MANIFEST: solo5_abi::Mft1Note<2> =
    solo5_abi::Mft1Note::new(&[solo5_abi::MftDevice::block("storage")]);

/// The block device's host fd, capacity and block size, from the tender's manifest copy.
fn storage() -> (usize, u64, u64) {
    let entry = &solo5_guest::manifest()[1];
    let (capacity, block_size) = entry.block_info();
    (entry.hostfd() as usize, capacity, u64::from(block_size))
}

/// Each forbidden call by name: number and arguments. `fd`, `cap` and `bs` are the block
/// device's fd, capacity and block size; `buf` a buffer of 4 blocks.
fn forbidden(name: &str, fd: usize, cap: u64, bs: u64, buf: usize) -> Option<(usize, [usize; 6])> {
    let (cap, bs) = (cap as usize, bs as usize);
    Some(match name {
        // Not in the policy at all.
        "getpid" => (39, [0; 6]),
        "open" => (2, [c"/etc/passwd".as_ptr() as usize, 0, 0, 0, 0, 0]),
        "openat" => (
            257,
            [
                -100isize as usize,
                c"/etc/passwd".as_ptr() as usize,
                0,
                0,
                0,
                0,
            ],
        ),
        "exit" => (60, [0; 6]),
        "mmap" => (9, [0, 4096, 3, 0x22, usize::MAX, 0]),
        "getrandom" => (318, [buf, 16, 0, 0, 0, 0]),
        "epoll-wait" => (232, [3, buf, 1, 0, 0, 0]),
        "sched-yield" => (24, [0; 6]),
        // Allowed calls with arguments outside the policy.
        "write-stderr" => (nr::WRITE, [2, buf, 1, 0, 0, 0]),
        "write-block-fd" => (nr::WRITE, [fd, buf, 1, 0, 0, 0]),
        "read-stdin" => (nr::READ, [0, buf, 1, 0, 0, 0]),
        "pread-two-blocks" => (nr::PREAD64, [fd, buf, 2 * bs, 0, 0, 0]),
        "pread-half-block" => (nr::PREAD64, [fd, buf, bs / 2, 0, 0, 0]),
        "pread-past-end" => (nr::PREAD64, [fd, buf, bs, cap - bs + 1, 0, 0]),
        "pread-negative" => (nr::PREAD64, [fd, buf, bs, usize::MAX - bs + 1, 0, 0]),
        "pwrite-two-blocks" => (nr::PWRITE64, [fd, buf, 2 * bs, 0, 0, 0]),
        "pwrite-past-end" => (nr::PWRITE64, [fd, buf, bs, cap, 0, 0]),
        "pread-stdout" => (nr::PREAD64, [1, buf, bs, 0, 0, 0]),
        "clock-cputime" => (nr::CLOCK_GETTIME, [2, buf, 0, 0, 0, 0]),
        "clock-boottime" => (nr::CLOCK_GETTIME, [7, buf, 0, 0, 0, 0]),
        "arch-get-fs" => (nr::ARCH_PRCTL, [0x1003, buf, 0, 0, 0, 0]),
        "timerfd-other-fd" => (nr::TIMERFD_SETTIME, [fd, 0, buf, 0, 0, 0]),
        "epoll-other-fd" => (nr::EPOLL_PWAIT, [fd, buf, 1, 0, 0, 0]),
        _ => return None,
    })
}

/// Every call the policy allows, at the edge of what it allows.
fn allowed(console: &platform::Console, fd: usize, cap: u64, bs: u64) -> bool {
    let mut ok = true;
    let mut check = |what: &str, passed: bool| {
        console.log(&format!("{what}: {}", if passed { "ok" } else { "FAILED" }));
        ok &= passed;
    };
    let fd = fd as i32;
    let mut block = alloc::vec![0x5au8; bs as usize];
    check(
        "pwrite64 of the last block",
        sys::pwrite64(fd, &block, cap - bs) == Ok(bs as usize),
    );
    block.fill(0);
    check(
        "pread64 of the last block",
        sys::pread64(fd, &mut block, cap - bs) == Ok(bs as usize)
            && block.iter().all(|&b| b == 0x5a),
    );
    check(
        "pread64 of the first block",
        sys::pread64(fd, &mut block, 0) == Ok(bs as usize),
    );
    check(
        "clock_gettime(MONOTONIC, REALTIME)",
        sys::clock_gettime(sys::CLOCK_MONOTONIC).is_ok()
            && sys::clock_gettime(sys::CLOCK_REALTIME).is_ok_and(|t| t.sec > 1_577_836_800),
    );
    // SAFETY: nothing in the guest uses TLS.
    check("arch_prctl(ARCH_SET_FS)", unsafe {
        sys::arch_prctl_set_fs(0).is_ok()
    });
    ok
}

fn main() {
    let boot = platform::boot(BOOT_ARGS);
    let console = platform::init("console", platform::Console::new());
    let call = boot.args.get::<String>("call");
    let (fd, cap, bs) = storage();
    if call == "none" {
        let ok = allowed(console, fd, cap, bs);
        platform::exit(if ok { 0 } else { 1 });
    }
    let mut buf = alloc::vec![0u8; 4 * bs as usize];
    let Some((number, args)) = forbidden(&call, fd, cap, bs, buf.as_mut_ptr() as usize) else {
        console.log(&format!("sandbox: unknown call {call}"));
        platform::exit(2);
    };
    console.log(&format!("sandbox: {call}"));
    // SAFETY: every pointer argument above points into `buf` (4 blocks) or at a static C
    // string, and the call either kills the process or fails without side effects on
    // guest memory beyond `buf`.
    let ret = unsafe { syscall(number, args) };
    console.log(&format!("sandbox: {call} returned {ret}"));
    platform::exit(3);
}

platform::entry!(main);
