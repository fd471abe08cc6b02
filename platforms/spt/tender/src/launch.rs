//! The guest process: from the command line to the jump into the guest (fact sheet
//! §1.5, §4).
//!
//! [`start`] loads and checks the kernel and attaches its devices (solo5-tender), creates
//! the epoll fd and timerfd the guest sleeps on, builds guest memory ([`GuestMemory`]),
//! compiles the seccomp filter for this run's fds ([`seccomp`]), gives the process the
//! signal state the guest runs with ([`crate::report`]), installs the filter and jumps
//! (`enter`). From the jump on, the process is the guest: no tender code runs again but
//! the report of how it ended, and the process ends when the guest calls `exit_group` or
//! a signal ends it.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use solo5_abi::AbiTarget;
use solo5_abi::spt::{BOOT_INFO_ADDR, TIMER_EPOLL_TAG};
use solo5_tender::cli::Invocation;
use solo5_tender::devices::{self, Attachment};

use crate::memory::{BootData, GuestMemory};
use crate::seccomp::{self, BlockFd, Fds};
use crate::{DEFAULT_MEM_MIB, EXEC_HEAP_FLAG, mem_size};

/// Sets everything up and becomes the guest; returns only if set-up fails, with the
/// message to print.
pub fn start(inv: &Invocation) -> Result<Infallible, String> {
    let mem_size = mem_size(inv.mem_mib.unwrap_or(DEFAULT_MEM_MIB))?;
    let exec_heap = inv.flags.contains(&EXEC_HEAP_FLAG);
    let kernel = inv.kernel.display();
    let bytes = std::fs::read(&inv.kernel).map_err(|e| format!("{kernel}: Could not open: {e}"))?;
    let mut k = solo5_tender::load_kernel(&bytes, AbiTarget::Spt, mem_size)
        .map_err(|e| format!("{kernel}: {e}"))?;
    let cmdline = inv.guest_cmdline().map_err(|e| e.to_string())?;
    let args = inv.devices(&k.manifest).map_err(|e| e.to_string())?;
    let attachments = devices::attach(&args, &mut k.manifest).map_err(|e| e.to_string())?;

    let timer = timerfd().map_err(|e| format!("Could not create the timerfd: {e}"))?;
    let epoll = epoll().map_err(|e| format!("Could not create the epoll fd: {e}"))?;
    let mut fds = Fds {
        epoll: epoll.as_raw_fd(),
        timer: timer.as_raw_fd(),
        ..Fds::default()
    };
    epoll_add(&epoll, fds.timer, TIMER_EPOLL_TAG)
        .map_err(|e| format!("Could not add the timerfd to the epoll fd: {e}"))?;
    for a in &attachments {
        match a {
            Attachment::Net { handle, dev } => {
                epoll_add(&epoll, dev.as_raw_fd(), *handle)
                    .map_err(|e| format!("Could not add {} to the epoll fd: {e}", dev.iface()))?;
                fds.net.push(dev.as_raw_fd());
            }
            Attachment::Block { dev, .. } if dev.is_layered() => {
                // The spt guest reads its images itself, one fd each, under seccomp.
                return Err(format!(
                    "{}: a layered image cannot be attached on spt: write a plain copy (`compose build --out DIR`)",
                    dev.path().display()
                ));
            }
            Attachment::Block { dev, .. } => fds.block.push(BlockFd {
                fd: dev.as_raw_fd(),
                capacity: dev.capacity(),
                block_size: u64::from(dev.block_size()),
            }),
        }
    }

    let manifest = k.manifest.encode();
    let mem = GuestMemory::build(
        mem_size,
        exec_heap,
        &k.plan,
        &BootData {
            kernel_end: k.plan.kernel_end,
            manifest: &manifest,
            cmdline: &cmdline,
            epollfd: fds.epoll,
            timerfd: fds.timer,
        },
    )
    .map_err(|e| e.to_string())?;
    let entry = k.plan.entry;
    let filter = seccomp::build(&fds).map_err(|e| e.to_string())?;
    name_process(&inv.kernel);
    // Free what the guest does not need while freeing is still allowed.
    drop(k);
    drop(bytes);
    drop((manifest, cmdline, args, fds));
    crate::report::install().map_err(|e| format!("Could not set up signal handling: {e}"))?;

    // The guest owns these for the rest of the process's life.
    std::mem::forget((attachments, timer, epoll));
    let mem_size = mem.mem_size();
    std::mem::forget(mem);
    seccomp::install(&filter).map_err(|e| e.to_string())?;
    // From here on only the calls in `seccomp::POLICY` are possible: no allocation, no
    // message, nothing but the jump.
    // SAFETY: `entry` is the entry point of the image loaded and protected in guest
    // memory, which ends at `mem_size`; the boot info is at BOOT_INFO_ADDR; nothing of
    // the tender is used after the jump.
    unsafe { enter(entry, mem_size) }
}

/// Jumps to the guest's entry point in the state the spt ABI describes (§4.3): `rsp` =
/// `mem_size - 8` (the top of guest memory, 16-aligned minus 8 as after a `call`), `rdi`
/// = the boot info's address. The other general-purpose registers are cleared, so that
/// the guest learns no tender address from them, and the direction flag is clear, as the
/// SysV ABI requires at a function's entry.
///
/// # Safety
///
/// `entry` must be the entry point of a guest loaded in executable memory, `mem_size` the
/// end of writable guest memory with its boot info in place; the caller's stack and
/// everything else of the tender are abandoned.
unsafe fn enter(entry: u64, mem_size: u64) -> ! {
    // SAFETY: the caller vouches for the guest. The asm never returns, so clobbering
    // registers the compiler normally reserves (rbx, rbp, rsp) has no effect on Rust code.
    unsafe {
        core::arch::asm!(
            "mov rsp, rsi",
            "xor esi, esi",
            "xor edx, edx",
            "xor ecx, ecx",
            "xor ebx, ebx",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "xor r15d, r15d",
            "cld",
            "jmp rax",
            in("rax") entry,
            in("rsi") mem_size - 8,
            in("rdi") BOOT_INFO_ADDR,
            options(noreturn),
        )
    }
}

/// A `CLOCK_MONOTONIC`, non-blocking timerfd: the guest arms it for its deadlines.
fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create(2) takes no pointers; the result is checked.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    owned(fd)
}

/// The epoll fd the guest waits on.
fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1(2) takes no pointers; the result is checked.
    owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to `epoll`, level-triggered for input, with `tag` as its event data.
fn epoll_add(epoll: &OwnedFd, fd: RawFd, tag: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: tag,
    };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Names the process `spt:` and the kernel's file name (15 bytes at most), so that `ps`
/// and `top` show which unikernel runs.
fn name_process(kernel: &std::path::Path) {
    let file = kernel
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: Vec<u8> = format!("spt:{file}").into_bytes();
    name.truncate(15);
    name.retain(|&b| b != 0);
    name.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}
