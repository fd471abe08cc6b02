//! Hypercalls: the hypercall page Xen fills in, and the few calls the runtime makes.
//!
//! An HVM/PVH guest finds Xen through CPUID (leaves from 0x4000_0000, signature
//! "XenVMMXenVMM"); leaf base+2 names the MSR to which the guest writes the physical
//! address of a page of its own, and Xen writes a 32-byte stub per hypercall into that
//! page (`vmmcall` on AMD, `vmcall` on Intel). A call is `call page + 32 * NR` with the
//! arguments in rdi, rsi, rdx, r10, r8 and the result in rax (negative: `-errno`).

use core::sync::atomic::{AtomicBool, Ordering};

/// Hypercall numbers (xen/include/public/xen.h).
pub(crate) mod nr {
    pub const MEMORY_OP: usize = 12;
    pub const SCHED_OP: usize = 29;
    pub const EVENT_CHANNEL_OP: usize = 32;
    pub const HVM_OP: usize = 34;
}

/// `DOMID_SELF`.
pub(crate) const DOMID_SELF: u16 = 0x7ff0;

core::arch::global_asm!(
    ".pushsection .text.compose_xen_hypercall_page, \"ax\"",
    ".balign 4096",
    ".globl compose_xen_hypercall_page",
    "compose_xen_hypercall_page:",
    // int3 until Xen writes the stubs: a call before `init` traps rather than runs on.
    ".fill 4096, 1, 0xcc",
    ".popsection",
);

unsafe extern "C" {
    static compose_xen_hypercall_page: [u8; 4096];
}

static READY: AtomicBool = AtomicBool::new(false);

/// Why the runtime cannot run: not under Xen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotXen;

/// Finds Xen's CPUID leaves and has Xen fill in the hypercall page.
///
/// # Safety
///
/// Call once, at boot, before any other hypercall.
pub(crate) unsafe fn init() -> Result<(), NotXen> {
    use core::arch::x86_64::__cpuid;
    let mut base = 0x4000_0000u32;
    let found = loop {
        let r = __cpuid(base);
        let mut sig = [0u8; 12];
        sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..].copy_from_slice(&r.edx.to_le_bytes());
        if &sig == b"XenVMMXenVMM" && r.eax >= base + 2 {
            break Some(base);
        }
        if base >= 0x4001_0000 {
            break None;
        }
        base += 0x100;
    };
    let base = found.ok_or(NotXen)?;
    let msr = __cpuid(base + 2).ebx;
    let page = (&raw const compose_xen_hypercall_page) as u64;
    // SAFETY: the MSR is the one Xen named for this; writing the page's physical address
    // (identity-mapped) makes Xen fill the page, which is ours and executable.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") page as u32,
            in("edx") (page >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
    READY.store(true, Ordering::Release);
    Ok(())
}

/// Whether [`init`] succeeded (hypercalls may be made).
pub(crate) fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Makes hypercall `nr` with up to three arguments.
///
/// # Safety
///
/// The arguments must be what hypercall `nr` expects; pointers among them must point at
/// live structures of the call's types, valid for what Xen reads and writes.
pub(crate) unsafe fn call(nr: usize, a1: u64, a2: u64, a3: u64) -> i64 {
    let entry = (&raw const compose_xen_hypercall_page) as usize + nr * 32;
    let ret: i64;
    // SAFETY: the caller promises valid arguments; the stub is Xen's, written by `init`.
    // Memory is not `nomem`: Xen reads and writes the argument structures.
    unsafe {
        core::arch::asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            lateout("rax") ret,
            lateout("r10") _,
            lateout("r8") _,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// `HYPERVISOR_hvm_op(HVMOP_get_param, ...)`: an HVM parameter of this domain.
pub(crate) fn hvm_param(index: u32) -> Result<u64, i64> {
    #[repr(C)]
    struct XenHvmParam {
        domid: u16,
        _pad: u16,
        index: u32,
        value: u64,
    }
    const HVMOP_GET_PARAM: u64 = 1;
    let mut p = XenHvmParam {
        domid: DOMID_SELF,
        _pad: 0,
        index,
        value: 0,
    };
    // SAFETY: HVMOP_get_param takes a xen_hvm_param_t, which `p` is.
    let r = unsafe { call(nr::HVM_OP, HVMOP_GET_PARAM, (&raw mut p) as u64, 0) };
    if r < 0 { Err(r) } else { Ok(p.value) }
}

/// HVM parameter numbers (xen/include/public/hvm/params.h).
pub(crate) mod param {
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
}

/// `XENMEM_add_to_physmap`: maps a Xen-owned frame (`space`: 0 shared info, 1 grant
/// table frame `idx`) at guest frame `gpfn`.
pub(crate) fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<(), i64> {
    #[repr(C)]
    struct AddToPhysmap {
        domid: u16,
        size: u16,
        space: u32,
        idx: u64,
        gpfn: u64,
    }
    const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
    let mut a = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    // SAFETY: XENMEM_add_to_physmap takes a xen_add_to_physmap, which `a` is.
    let r = unsafe { call(nr::MEMORY_OP, XENMEM_ADD_TO_PHYSMAP, (&raw mut a) as u64, 0) };
    if r < 0 { Err(r) } else { Ok(()) }
}

/// `EVTCHNOP_send`: notifies the other end of event channel `port`.
pub(crate) fn evtchn_send(port: u32) {
    const EVTCHNOP_SEND: u64 = 4;
    let mut p = port;
    // SAFETY: EVTCHNOP_send takes an evtchn_send (one port number).
    unsafe { call(nr::EVENT_CHANNEL_OP, EVTCHNOP_SEND, (&raw mut p) as u64, 0) };
}

/// `EVTCHNOP_alloc_unbound`: a new port of this domain that domain `remote` may bind.
pub(crate) fn evtchn_alloc_unbound(remote: u16) -> Result<u32, i64> {
    #[repr(C)]
    struct AllocUnbound {
        dom: u16,
        remote_dom: u16,
        port: u32,
    }
    const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
    let mut a = AllocUnbound {
        dom: DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: EVTCHNOP_alloc_unbound takes an evtchn_alloc_unbound, which `a` is.
    let r = unsafe {
        call(
            nr::EVENT_CHANNEL_OP,
            EVTCHNOP_ALLOC_UNBOUND,
            (&raw mut a) as u64,
            0,
        )
    };
    if r < 0 { Err(r) } else { Ok(a.port) }
}

/// `SCHEDOP_poll`: blocks the vCPU until one of `ports` is pending or Xen's system time
/// reaches `timeout_ns` (0: no timeout). An empty `ports` with a timeout is a sleep.
pub(crate) fn sched_poll(ports: &[u32], timeout_ns: u64) {
    #[repr(C)]
    struct SchedPoll {
        ports: u64,
        nr_ports: u32,
        _pad: u32,
        timeout: u64,
    }
    const SCHEDOP_POLL: u64 = 3;
    let mut p = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        _pad: 0,
        timeout: timeout_ns,
    };
    // SAFETY: SCHEDOP_poll takes a sched_poll whose port list is `ports`, live here.
    unsafe { call(nr::SCHED_OP, SCHEDOP_POLL, (&raw mut p) as u64, 0) };
}

/// Shutdown reasons of `SCHEDOP_shutdown`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shutdown {
    Poweroff = 0,
    Crash = 3,
}

/// `SCHEDOP_shutdown`: ends the domain.
pub(crate) fn shutdown(reason: Shutdown) -> ! {
    const SCHEDOP_SHUTDOWN: u64 = 2;
    let mut r = reason as u32;
    loop {
        if ready() {
            // SAFETY: SCHEDOP_shutdown takes a sched_shutdown (one reason).
            unsafe { call(nr::SCHED_OP, SCHEDOP_SHUTDOWN, (&raw mut r) as u64, 0) };
        }
        // Not reached under Xen; without it, stop the CPU.
        // SAFETY: halting with interrupts off stops this vCPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
