//! The hvt (KVM) target, x86_64: boot info, low-memory layout, hypercalls.
//!
//! A guest makes a hypercall with a 32-bit `out dx, eax`, where
//! `dx = `[`HYPERCALL_PIO_BASE`]` + nr` and `eax` is the guest-physical
//! address of the call's argument struct. The tender handles it before the
//! vCPU resumes, then the guest reads the `/* out */` fields.

use core::mem::{offset_of, size_of};

use crate::MftHeader;

/// GPA of [`HvtBootInfo`], also passed in RDI at entry.
pub const BOOT_INFO_GPA: u64 = 0x1_0000;
/// GPA of the tender's copy of the manifest, right after the boot info.
pub const MFT_GPA: u64 = BOOT_INFO_GPA + size_of::<HvtBootInfo>() as u64;
/// The guest-visible low-memory area holding boot info, manifest and cmdline
/// ends here (mapped read-only in the guest).
pub const BOOT_AREA_END: u64 = crate::GUEST_MIN_BASE;
/// GPA of the cmdline buffer for a manifest of `entries` entries.
pub const fn cmdline_gpa(entries: usize) -> u64 {
    MFT_GPA + crate::mft_size(entries) as u64
}

/// Guest memory is a multiple of this (2 MiB, the large page size).
pub const MEM_ALIGN: u64 = 0x20_0000;
/// Smallest guest memory (2 MiB).
pub const MEM_MIN: u64 = MEM_ALIGN;
/// Largest guest memory (4 GiB: four page directories of 2 MiB pages).
pub const MEM_MAX: u64 = 0x1_0000_0000;
/// Default `--mem`, in MiB.
pub const DEFAULT_MEM_MIB: u64 = 512;

/// `host_features` bit: the tender offers a shared net ring.
pub const FEATURE_RING_IO: u32 = 1;

/// `struct hvt_boot_info` at [`BOOT_INFO_GPA`] (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvtBootInfo {
    /// Usable guest RAM in bytes; the initial stack is at its top. Excludes
    /// the net ring area.
    pub mem_size: u64,
    /// Highest page-rounded end of the loaded PT_LOADs.
    pub kernel_end: u64,
    /// TSC frequency in Hz.
    pub cpu_cycle_freq: u64,
    /// GPA of the NUL-terminated command line.
    pub cmdline: u64,
    /// GPA of the tender's updated copy of `struct mft`.
    pub mft: u64,
    /// Bit 0: [`FEATURE_RING_IO`].
    pub host_features: u32,
    /// Reserved for the guest; tenders never read it.
    pub guest_features: u32,
    /// GPA of `struct hvt_ring`, or 0.
    pub net_ring: u64,
}

impl HvtBootInfo {
    /// The 56 bytes of this struct.
    pub fn to_bytes(&self) -> [u8; size_of::<HvtBootInfo>()] {
        let mut out = [0; size_of::<HvtBootInfo>()];
        out[0..8].copy_from_slice(&self.mem_size.to_le_bytes());
        out[8..16].copy_from_slice(&self.kernel_end.to_le_bytes());
        out[16..24].copy_from_slice(&self.cpu_cycle_freq.to_le_bytes());
        out[24..32].copy_from_slice(&self.cmdline.to_le_bytes());
        out[32..40].copy_from_slice(&self.mft.to_le_bytes());
        out[40..44].copy_from_slice(&self.host_features.to_le_bytes());
        out[44..48].copy_from_slice(&self.guest_features.to_le_bytes());
        out[48..56].copy_from_slice(&self.net_ring.to_le_bytes());
        out
    }
}

/// First hypercall port; hypercall `nr` uses port `HYPERCALL_PIO_BASE + nr`.
pub const HYPERCALL_PIO_BASE: u16 = 0x500;
/// Port of the shared net ring's kick (an ioeventfd; no VM exit).
pub const RING_KICK_PIO: u16 = 0x600;
/// Bytes a non-zero HALT cookie must point at.
pub const HALT_COOKIE_MAX: u64 = 512;

/// The hvt hypercall numbers (`HVT_HYPERCALL_*`).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hypercall {
    /// [`HcWalltime`]
    Walltime = 1,
    /// [`HcPuts`]
    Puts = 2,
    /// [`HcPoll`]
    Poll = 3,
    /// [`HcBlockWrite`]
    BlockWrite = 4,
    /// [`HcBlockRead`]
    BlockRead = 5,
    /// [`HcNetWrite`]
    NetWrite = 6,
    /// [`HcNetRead`]
    NetRead = 7,
    /// [`HcHalt`]
    Halt = 8,
}

impl Hypercall {
    /// Every hypercall, in number order.
    pub const ALL: [Hypercall; 8] = [
        Hypercall::Walltime,
        Hypercall::Puts,
        Hypercall::Poll,
        Hypercall::BlockWrite,
        Hypercall::BlockRead,
        Hypercall::NetWrite,
        Hypercall::NetRead,
        Hypercall::Halt,
    ];

    /// The hypercall with this number (1..=8).
    pub const fn from_nr(nr: u16) -> Option<Self> {
        Some(match nr {
            1 => Hypercall::Walltime,
            2 => Hypercall::Puts,
            3 => Hypercall::Poll,
            4 => Hypercall::BlockWrite,
            5 => Hypercall::BlockRead,
            6 => Hypercall::NetWrite,
            7 => Hypercall::NetRead,
            8 => Hypercall::Halt,
            _ => return None,
        })
    }

    /// The hypercall whose port this is.
    pub const fn from_port(port: u16) -> Option<Self> {
        match port.checked_sub(HYPERCALL_PIO_BASE) {
            Some(nr) => Self::from_nr(nr),
            None => None,
        }
    }

    /// The hypercall number.
    pub const fn nr(self) -> u16 {
        self as u16
    }

    /// The I/O port the guest writes the argument GPA to.
    pub const fn port(self) -> u16 {
        HYPERCALL_PIO_BASE + self as u16
    }

    /// Size of the argument struct.
    pub const fn arg_size(self) -> usize {
        match self {
            Hypercall::Walltime => size_of::<HcWalltime>(),
            Hypercall::Puts => size_of::<HcPuts>(),
            Hypercall::Poll => size_of::<HcPoll>(),
            Hypercall::BlockWrite => size_of::<HcBlockWrite>(),
            Hypercall::BlockRead => size_of::<HcBlockRead>(),
            Hypercall::NetWrite => size_of::<HcNetWrite>(),
            Hypercall::NetRead => size_of::<HcNetRead>(),
            Hypercall::Halt => size_of::<HcHalt>(),
        }
    }
}

/// `HVT_HYPERCALL_WALLTIME` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcWalltime {
    /// Out: host `CLOCK_REALTIME` in ns since the epoch.
    pub nsecs: u64,
}

/// `HVT_HYPERCALL_PUTS` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcPuts {
    /// In: GPA of the bytes to write to the console.
    pub data: u64,
    /// In: number of bytes.
    pub len: u64,
}

/// `HVT_HYPERCALL_POLL` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcPoll {
    /// In: relative timeout in ns.
    pub timeout_nsecs: u64,
    /// Out: bit *h* set for each readable NET handle *h*.
    pub ready_set: u64,
    /// Out: number of bits set in `ready_set`.
    pub ret: i32,
    /// Padding.
    pub pad: u32,
}

/// `HVT_HYPERCALL_BLOCK_WRITE` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcBlockWrite {
    /// In: manifest index of a BLOCK device.
    pub handle: u64,
    /// In: byte offset on the device.
    pub offset: u64,
    /// In: GPA of the data.
    pub data: u64,
    /// In: number of bytes.
    pub len: u64,
    /// Out: a `SOLO5_R_*` code.
    pub ret: i32,
    /// Padding.
    pub pad: u32,
}

/// `HVT_HYPERCALL_BLOCK_READ` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcBlockRead {
    /// In: manifest index of a BLOCK device.
    pub handle: u64,
    /// In: byte offset on the device.
    pub offset: u64,
    /// In: GPA of the buffer.
    pub data: u64,
    /// In: number of bytes (not written back).
    pub len: u64,
    /// Out: a `SOLO5_R_*` code.
    pub ret: i32,
    /// Padding.
    pub pad: u32,
}

/// `HVT_HYPERCALL_NET_WRITE` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcNetWrite {
    /// In: manifest index of a NET device.
    pub handle: u64,
    /// In: GPA of the frame (Ethernet header included).
    pub data: u64,
    /// In: frame length.
    pub len: u64,
    /// Out: a `SOLO5_R_*` code.
    pub ret: i32,
    /// Padding.
    pub pad: u32,
}

/// `HVT_HYPERCALL_NET_READ` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcNetRead {
    /// In: manifest index of a NET device.
    pub handle: u64,
    /// In: GPA of the buffer.
    pub data: u64,
    /// In: buffer size; out: frame size (Ethernet header included).
    pub len: u64,
    /// Out: `SOLO5_R_OK`, or `SOLO5_R_AGAIN` when no frame is pending.
    pub ret: i32,
    /// Padding.
    pub pad: u32,
}

/// `HVT_HYPERCALL_HALT` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HcHalt {
    /// In: GPA of ≥ [`HALT_COOKIE_MAX`] bytes (a trap frame), or 0.
    pub cookie: u64,
    /// In: the exit status; the tender exits with `exit_status & 0xff`.
    pub exit_status: i32,
    /// Padding.
    pub pad: u32,
}

/// Offsets of the hypercall struct fields, for tenders that decode guest
/// memory byte-wise.
pub mod offsets {
    use super::*;

    /// [`HcWalltime::nsecs`]
    pub const WALLTIME_NSECS: usize = offset_of!(HcWalltime, nsecs);
    /// [`HcPuts::data`]
    pub const PUTS_DATA: usize = offset_of!(HcPuts, data);
    /// [`HcPuts::len`]
    pub const PUTS_LEN: usize = offset_of!(HcPuts, len);
    /// [`HcPoll::timeout_nsecs`]
    pub const POLL_TIMEOUT: usize = offset_of!(HcPoll, timeout_nsecs);
    /// [`HcPoll::ready_set`]
    pub const POLL_READY_SET: usize = offset_of!(HcPoll, ready_set);
    /// [`HcPoll::ret`]
    pub const POLL_RET: usize = offset_of!(HcPoll, ret);
    /// [`HcBlockWrite::handle`] (same in [`HcBlockRead`])
    pub const BLOCK_HANDLE: usize = offset_of!(HcBlockWrite, handle);
    /// [`HcBlockWrite::offset`] (same in [`HcBlockRead`])
    pub const BLOCK_OFFSET: usize = offset_of!(HcBlockWrite, offset);
    /// [`HcBlockWrite::data`] (same in [`HcBlockRead`])
    pub const BLOCK_DATA: usize = offset_of!(HcBlockWrite, data);
    /// [`HcBlockWrite::len`] (same in [`HcBlockRead`])
    pub const BLOCK_LEN: usize = offset_of!(HcBlockWrite, len);
    /// [`HcBlockWrite::ret`] (same in [`HcBlockRead`])
    pub const BLOCK_RET: usize = offset_of!(HcBlockWrite, ret);
    /// [`HcNetWrite::handle`] (same in [`HcNetRead`])
    pub const NET_HANDLE: usize = offset_of!(HcNetWrite, handle);
    /// [`HcNetWrite::data`] (same in [`HcNetRead`])
    pub const NET_DATA: usize = offset_of!(HcNetWrite, data);
    /// [`HcNetWrite::len`] (same in [`HcNetRead`])
    pub const NET_LEN: usize = offset_of!(HcNetWrite, len);
    /// [`HcNetWrite::ret`] (same in [`HcNetRead`])
    pub const NET_RET: usize = offset_of!(HcNetWrite, ret);
    /// [`HcHalt::cookie`]
    pub const HALT_COOKIE: usize = offset_of!(HcHalt, cookie);
    /// [`HcHalt::exit_status`]
    pub const HALT_STATUS: usize = offset_of!(HcHalt, exit_status);
}

/// Size in bytes of `struct hvt_ring` (the optional shared net ring).
pub const RING_SIZE: usize = 49_280;
/// Entries in each ring array.
pub const RING_ENTRIES: usize = 1024;

const _: () = {
    assert!(size_of::<HvtBootInfo>() == 56);
    assert!(offset_of!(HvtBootInfo, mem_size) == 0);
    assert!(offset_of!(HvtBootInfo, kernel_end) == 8);
    assert!(offset_of!(HvtBootInfo, cpu_cycle_freq) == 16);
    assert!(offset_of!(HvtBootInfo, cmdline) == 24);
    assert!(offset_of!(HvtBootInfo, mft) == 32);
    assert!(offset_of!(HvtBootInfo, host_features) == 40);
    assert!(offset_of!(HvtBootInfo, guest_features) == 44);
    assert!(offset_of!(HvtBootInfo, net_ring) == 48);
    assert!(MFT_GPA == 0x10038);
    assert!(MFT_GPA.is_multiple_of(core::mem::align_of::<MftHeader>() as u64));
    // Boot info, the largest manifest and the cmdline fit below the image.
    assert!(cmdline_gpa(crate::MFT_MAX_ENTRIES) + crate::CMDLINE_SIZE as u64 <= BOOT_AREA_END);

    assert!(size_of::<HcWalltime>() == 8);
    assert!(size_of::<HcPuts>() == 16);
    assert!(size_of::<HcPoll>() == 24);
    assert!(offset_of!(HcPoll, ready_set) == 8);
    assert!(offset_of!(HcPoll, ret) == 16);
    assert!(size_of::<HcBlockWrite>() == 40);
    assert!(size_of::<HcBlockRead>() == 40);
    assert!(offset_of!(HcBlockRead, handle) == offset_of!(HcBlockWrite, handle));
    assert!(offset_of!(HcBlockRead, offset) == offset_of!(HcBlockWrite, offset));
    assert!(offset_of!(HcBlockRead, data) == offset_of!(HcBlockWrite, data));
    assert!(offset_of!(HcBlockRead, len) == offset_of!(HcBlockWrite, len));
    assert!(offset_of!(HcBlockRead, ret) == offset_of!(HcBlockWrite, ret));
    assert!(offset_of!(HcBlockWrite, ret) == 32);
    assert!(size_of::<HcNetWrite>() == 32);
    assert!(size_of::<HcNetRead>() == 32);
    assert!(offset_of!(HcNetRead, handle) == offset_of!(HcNetWrite, handle));
    assert!(offset_of!(HcNetRead, data) == offset_of!(HcNetWrite, data));
    assert!(offset_of!(HcNetRead, len) == offset_of!(HcNetWrite, len));
    assert!(offset_of!(HcNetRead, ret) == offset_of!(HcNetWrite, ret));
    assert!(offset_of!(HcNetWrite, ret) == 24);
    assert!(size_of::<HcHalt>() == 16);
    assert!(offset_of!(HcHalt, exit_status) == 8);
};
