//! The spt (seccomp process) target, x86_64 Linux: boot info and layout.
//!
//! spt has no hypercalls: the guest makes a handful of Linux system calls
//! directly, on host fds the tender left open and wrote into the manifest
//! copy (`MftEntry::hostfd`).

use core::mem::{offset_of, size_of};

/// Lowest address of the guest region the tender maps at its own addresses.
pub const MEM_BASE: u64 = 0x1_0000;
/// Address of [`SptBootInfo`], also passed in RDI at entry.
pub const BOOT_INFO_ADDR: u64 = 0x1_1000;
/// Address of the tender's copy of the manifest, right after the boot info.
pub const MFT_ADDR: u64 = BOOT_INFO_ADDR + size_of::<SptBootInfo>() as u64;

/// The epoll tag of the tender's internal timer in `epoll_event.data`.
pub const TIMER_EPOLL_TAG: u64 = 0xFFFF_FFFE;

/// `struct spt_boot_info` at [`BOOT_INFO_ADDR`] (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SptBootInfo {
    /// End of the guest region (stack top).
    pub mem_size: u64,
    /// Highest page-rounded end of the loaded PT_LOADs.
    pub kernel_end: u64,
    /// Address of the NUL-terminated command line.
    pub cmdline: u64,
    /// Address of the tender's manifest copy.
    pub mft: u64,
    /// epoll fd for yield.
    pub epollfd: i32,
    /// CLOCK_MONOTONIC timerfd, registered in `epollfd`.
    pub timerfd: i32,
}

const _: () = {
    assert!(size_of::<SptBootInfo>() == 40);
    assert!(offset_of!(SptBootInfo, mft) == 24);
    assert!(offset_of!(SptBootInfo, epollfd) == 32);
    assert!(offset_of!(SptBootInfo, timerfd) == 36);
    assert!(MFT_ADDR == 0x11028);
};
