//! The [`Spt`] bindings: solo5-guest's host calls as the Linux system calls the spt
//! tender's seccomp filter allows (fact sheet §4.5).
//!
//! Devices are reached directly on the host fds the tender opened: the manifest copy it
//! wrote into guest memory gives each attached device's `hostfd` (a tap for NET, the
//! image for BLOCK) with the MAC and MTU, or capacity and block size. The bindings check
//! every call against that entry before making it, so that a wrong handle, size or offset
//! is an error the device layer sees (`EINVAL`) rather than a call the filter punishes.
//!
//! Sleeping uses the tender's epoll fd, in which it registered its timerfd (tag
//! `0xFFFFFFFE`) and every tap (tagged with its handle): the guest arms the timer for the
//! absolute `CLOCK_MONOTONIC` deadline and waits on the epoll fd for the timer or a frame.

use core::sync::atomic::{AtomicI32, Ordering};

use solo5_abi::{DeviceType, MftEntry};
use solo5_guest::{Bindings, HostError};

use crate::sys::{self, EpollEvent, Itimerspec, Timespec};

/// The tender's epoll fd and timerfd, from the boot info (set once by `_start`).
static EPOLL_FD: AtomicI32 = AtomicI32::new(-1);
static TIMER_FD: AtomicI32 = AtomicI32::new(-1);

/// Records the boot info's epoll fd and timerfd for [`Spt::yield_until`].
#[cfg_attr(not(target_os = "none"), allow(dead_code))] // called by `_start`, guest only
pub(crate) fn set_yield_fds(epollfd: i32, timerfd: i32) {
    EPOLL_FD.store(epollfd, Ordering::Relaxed);
    TIMER_FD.store(timerfd, Ordering::Relaxed);
}

/// The spt target's [`Bindings`]: raw Linux system calls on the fds the spt tender left
/// open, within its seccomp policy.
#[derive(Debug)]
pub struct Spt;

/// The attached manifest entry `handle` of type `ty`.
fn device(handle: u64, ty: DeviceType) -> Option<&'static MftEntry> {
    let entry = solo5_guest::manifest().get(usize::try_from(handle).ok()?)?;
    (handle != 0 && entry.is_attached() && entry.device_type() == Some(ty)).then_some(entry)
}

/// The tap fd of network device `handle`.
fn net_fd(handle: u64) -> Result<i32, HostError> {
    device(handle, DeviceType::Net)
        .map(MftEntry::hostfd)
        .ok_or(HostError::Invalid)
}

/// The image fd of block device `handle`, once the transfer of `len` bytes at `offset` is
/// one the filter allows: exactly one block, block-aligned, inside the device.
fn block_fd(handle: u64, offset: u64, len: usize) -> Result<i32, HostError> {
    let entry = device(handle, DeviceType::Block).ok_or(HostError::Invalid)?;
    let (capacity, block_size) = entry.block_info();
    if one_block_inside(capacity, u64::from(block_size), offset, len as u64) {
        Ok(entry.hostfd())
    } else {
        Err(HostError::Invalid)
    }
}

/// Whether a transfer of `len` bytes at `offset` is exactly one block of `block_size`,
/// aligned, within `capacity`: what the tender's filter lets through (`count ==
/// block_size && offset <= capacity - block_size`), plus the alignment Solo5's bindings
/// require.
pub(crate) fn one_block_inside(capacity: u64, block_size: u64, offset: u64, len: u64) -> bool {
    block_size != 0
        && len == block_size
        && offset.is_multiple_of(block_size)
        && capacity
            .checked_sub(block_size)
            .is_some_and(|last| offset <= last)
}

/// Arms `timerfd` for the absolute `CLOCK_MONOTONIC` time `deadline_ns` and waits on
/// `epollfd` until it expires or a tap has a frame; returns the set of ready handles.
///
/// A deadline of zero would disarm an absolute timer, so the nanoseconds get their low
/// bit set, as in Solo5's bindings; a deadline already past fires at once.
pub(crate) fn wait(epollfd: i32, timerfd: i32, deadline_ns: u64) -> Result<u64, sys::Errno> {
    let mut value = Timespec::from_nanos(deadline_ns);
    value.nsec |= 1;
    let it = Itimerspec {
        interval: Timespec::default(),
        value,
    };
    sys::timerfd_settime(timerfd, sys::TFD_TIMER_ABSTIME, &it)?;
    // One slot per possible handle: the timer plus at most 63 taps.
    let mut events = [EpollEvent::default(); solo5_abi::MFT_MAX_ENTRIES];
    let n = loop {
        match sys::epoll_pwait(epollfd, &mut events, -1) {
            Err(sys::EINTR) => continue,
            other => break other?,
        }
    };
    Ok(events[..n]
        .iter()
        .map(|e| e.data)
        .filter(|&tag| tag < 64)
        .fold(0, |set, handle| set | 1 << handle))
}

/// Reports a host call that cannot fail unless the tender broke the ABI, and aborts.
fn fatal(what: &str, errno: sys::Errno) -> ! {
    use core::fmt::Write as _;
    struct Out;
    impl core::fmt::Write for Out {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            Spt::console_write(s.as_bytes());
            Ok(())
        }
    }
    let _ = writeln!(Out, "Solo5: ABORT: spt: {what} failed: errno {errno}");
    Spt::halt(solo5_abi::SOLO5_EXIT_ABORT as u8)
}

impl Bindings for Spt {
    const TARGET: &'static str = "spt";

    /// `write(1)`, repeated until everything is out or the host refuses.
    fn console_write(mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match sys::write(1, bytes) {
                Ok(0) => return,
                Ok(n) => bytes = &bytes[n.min(bytes.len())..],
                Err(sys::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// `clock_gettime(CLOCK_MONOTONIC)`: the clock the tender's timerfd runs on, so that
    /// yield deadlines need no conversion.
    fn monotonic_ns() -> u64 {
        solo5_guest::count_clock_read();
        match sys::clock_gettime(sys::CLOCK_MONOTONIC) {
            Ok(ts) => ts.as_nanos(),
            Err(e) => fatal("clock_gettime(CLOCK_MONOTONIC)", e),
        }
    }

    fn wall_clock_ns() -> u64 {
        match sys::clock_gettime(sys::CLOCK_REALTIME) {
            Ok(ts) => ts.as_nanos(),
            Err(e) => fatal("clock_gettime(CLOCK_REALTIME)", e),
        }
    }

    /// The deadline is absolute on the timerfd's clock: `_now_ns` is not needed.
    fn yield_until(deadline_ns: u64, _now_ns: u64) -> u64 {
        let epollfd = EPOLL_FD.load(Ordering::Relaxed);
        let timerfd = TIMER_FD.load(Ordering::Relaxed);
        match wait(epollfd, timerfd, deadline_ns) {
            Ok(ready) => ready,
            Err(e) => fatal("yield (timerfd_settime, epoll_pwait)", e),
        }
    }

    /// `write` on the tap: one whole frame, or an error.
    fn net_write(handle: u64, frame: &[u8]) -> Result<(), HostError> {
        let fd = net_fd(handle)?;
        match sys::write(fd, frame) {
            Ok(n) if n == frame.len() => Ok(()),
            _ => Err(HostError::Unspecified),
        }
    }

    /// `read` on the (non-blocking) tap: `EAGAIN` means no frame is pending.
    fn net_read(handle: u64, buf: &mut [u8]) -> Result<Option<usize>, HostError> {
        let fd = net_fd(handle)?;
        match sys::read(fd, buf) {
            Ok(n) => Ok(Some(n)),
            Err(sys::EAGAIN) => Ok(None),
            Err(_) => Err(HostError::Unspecified),
        }
    }

    fn block_write(handle: u64, offset: u64, buf: &[u8]) -> Result<(), HostError> {
        let fd = block_fd(handle, offset, buf.len())?;
        loop {
            match sys::pwrite64(fd, buf, offset) {
                Ok(n) if n == buf.len() => return Ok(()),
                Err(sys::EINTR) => {}
                _ => return Err(HostError::Unspecified),
            }
        }
    }

    fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        let fd = block_fd(handle, offset, buf.len())?;
        loop {
            match sys::pread64(fd, buf, offset) {
                Ok(n) if n == buf.len() => return Ok(()),
                Err(sys::EINTR) => {}
                _ => return Err(HostError::Unspecified),
            }
        }
    }

    /// `exit_group(status)`: the tender's exit status is the guest's.
    fn halt(status: u8) -> ! {
        sys::exit_group(i32::from(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_transfers_the_filter_allows() {
        let cap = 64 * 1024;
        assert!(one_block_inside(cap, 512, 0, 512));
        assert!(one_block_inside(cap, 512, cap - 512, 512));
        assert!(!one_block_inside(cap, 512, cap, 512), "past the end");
        assert!(!one_block_inside(cap, 512, 0, 1024), "two blocks");
        assert!(!one_block_inside(cap, 512, 0, 256), "half a block");
        assert!(!one_block_inside(cap, 512, 100, 512), "unaligned");
        assert!(!one_block_inside(cap, 512, u64::MAX - 511, 512), "wraps");
        assert!(!one_block_inside(256, 512, 0, 512), "smaller than a block");
        assert!(!one_block_inside(cap, 0, 0, 0), "no block size");
        assert!(one_block_inside(8192, 4096, 4096, 4096));
    }
}
