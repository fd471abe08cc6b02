//! The hvt hypercalls, and the [`Hvt`] bindings built on them.
//!
//! A hypercall is a 32-bit `out dx, eax`: `dx` is `0x500 + NR`, `eax` the guest-physical
//! address of the call's argument struct (the tender's page tables map every address to
//! itself, and guest memory is below 4 GiB, so the struct's address is its GPA). The
//! tender handles the call before the vCPU resumes, then the guest reads the struct's
//! output fields.

use core::mem::size_of;

use solo5_abi::hvt::{
    HcBlockRead, HcBlockWrite, HcHalt, HcNetRead, HcNetWrite, HcPoll, HcPuts, HcWalltime, Hypercall,
};
use solo5_abi::{SOLO5_R_AGAIN, SOLO5_R_EINVAL, SOLO5_R_OK};
use solo5_guest::{Bindings, HostError, TscClock};

// The argument structs as the tender reads them (solo5-abi pins the field offsets too).
const _: () = {
    assert!(size_of::<HcWalltime>() == 8);
    assert!(size_of::<HcPuts>() == 16);
    assert!(size_of::<HcPoll>() == 24);
    assert!(size_of::<HcBlockWrite>() == 40);
    assert!(size_of::<HcBlockRead>() == 40);
    assert!(size_of::<HcNetWrite>() == 32);
    assert!(size_of::<HcNetRead>() == 32);
    assert!(size_of::<HcHalt>() == 16);
};

/// Makes hypercall `call` with the argument struct at `arg`.
///
/// # Safety
///
/// `arg` must point at a live, initialised argument struct of `call`'s type, and every
/// address in it must be a guest buffer of the length it gives, valid for the access the
/// call makes (the tender reads or writes it).
#[cfg(target_arch = "x86_64")]
unsafe fn hypercall<T>(call: Hypercall, arg: *mut T) {
    debug_assert_eq!(size_of::<T>(), call.arg_size());
    // Guest RAM is below 4 GiB, so the low 32 bits are the whole address.
    let gpa = arg as usize as u32;
    // SAFETY: the caller promises a valid argument struct. The asm has no `nomem`, so the
    // compiler assumes it reads and writes memory: the struct (whose address escapes into
    // it) is written before and read after, as the tender requires.
    unsafe {
        core::arch::asm!(
            "out dx, eax",
            in("dx") call.port(),
            in("eax") gpa,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn hypercall<T>(_call: Hypercall, _arg: *mut T) {
    unreachable!("hvt hypercalls are x86_64 port I/O");
}

/// Reads a field the tender wrote, without letting the compiler assume it kept its value.
fn out<T: Copy>(field: &T) -> T {
    // SAFETY: `field` is a valid, aligned reference.
    unsafe { core::ptr::read_volatile(field) }
}

fn result(ret: i32) -> Result<(), HostError> {
    match ret {
        SOLO5_R_OK => Ok(()),
        SOLO5_R_EINVAL => Err(HostError::Invalid),
        _ => Err(HostError::Unspecified),
    }
}

/// The hvt target's [`Bindings`]: hypercalls to the hvt tender.
#[derive(Debug)]
pub struct Hvt;

impl Bindings for Hvt {
    const TARGET: &'static str = "hvt";

    fn console_write(bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut arg = HcPuts {
            data: bytes.as_ptr() as u64,
            len: bytes.len() as u64,
        };
        // SAFETY: `arg` describes `bytes`, which the tender only reads.
        unsafe { hypercall(Hypercall::Puts, &raw mut arg) };
    }

    /// The TSC, scaled with the frequency the tender reported: no exit needed.
    fn monotonic_ns() -> u64 {
        solo5_guest::count_clock_read();
        TscClock::now_ns()
    }

    fn wall_clock_ns() -> u64 {
        let mut arg = HcWalltime { nsecs: 0 };
        // SAFETY: WALLTIME only writes `nsecs`.
        unsafe { hypercall(Hypercall::Walltime, &raw mut arg) };
        out(&arg.nsecs)
    }

    /// POLL: the tender waits on every attached network device and a timer (relative:
    /// the deadline less the caller's recent reading of the TSC clock, which saves a read
    /// that software virtualization may emulate at 10-20 us).
    fn yield_until(deadline_ns: u64, now_ns: u64) -> u64 {
        let timeout = deadline_ns.saturating_sub(now_ns);
        let mut arg = HcPoll {
            timeout_nsecs: timeout,
            ready_set: 0,
            ret: 0,
            pad: 0,
        };
        // SAFETY: POLL only writes `ready_set` and `ret`.
        unsafe { hypercall(Hypercall::Poll, &raw mut arg) };
        out(&arg.ready_set)
    }

    fn net_write(handle: u64, frame: &[u8]) -> Result<(), HostError> {
        let mut arg = HcNetWrite {
            handle,
            data: frame.as_ptr() as u64,
            len: frame.len() as u64,
            ret: 0,
            pad: 0,
        };
        // SAFETY: `arg` describes `frame`, which the tender only reads.
        unsafe { hypercall(Hypercall::NetWrite, &raw mut arg) };
        result(out(&arg.ret))
    }

    fn net_read(handle: u64, buf: &mut [u8]) -> Result<Option<usize>, HostError> {
        let mut arg = HcNetRead {
            handle,
            data: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
            ret: 0,
            pad: 0,
        };
        // SAFETY: `arg` describes `buf`, which the tender writes at most `len` bytes of.
        unsafe { hypercall(Hypercall::NetRead, &raw mut arg) };
        match out(&arg.ret) {
            SOLO5_R_AGAIN => Ok(None),
            ret => result(ret).map(|()| Some((out(&arg.len) as usize).min(buf.len()))),
        }
    }

    fn block_write(handle: u64, offset: u64, buf: &[u8]) -> Result<(), HostError> {
        let mut arg = HcBlockWrite {
            handle,
            offset,
            data: buf.as_ptr() as u64,
            len: buf.len() as u64,
            ret: 0,
            pad: 0,
        };
        // SAFETY: `arg` describes `buf`, which the tender only reads.
        unsafe { hypercall(Hypercall::BlockWrite, &raw mut arg) };
        result(out(&arg.ret))
    }

    fn block_read(handle: u64, offset: u64, buf: &mut [u8]) -> Result<(), HostError> {
        let mut arg = HcBlockRead {
            handle,
            offset,
            data: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
            ret: 0,
            pad: 0,
        };
        // SAFETY: `arg` describes `buf`, which the tender fills with `len` bytes.
        unsafe { hypercall(Hypercall::BlockRead, &raw mut arg) };
        result(out(&arg.ret))
    }

    fn halt(status: u8) -> ! {
        let mut arg = HcHalt {
            cookie: 0,
            exit_status: i32::from(status),
            pad: 0,
        };
        // SAFETY: HALT reads the struct; a zero cookie points at nothing.
        unsafe { hypercall(Hypercall::Halt, &raw mut arg) };
        // The tender never resumes the vCPU after HALT.
        loop {
            core::hint::spin_loop();
        }
    }
}
