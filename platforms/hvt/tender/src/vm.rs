//! The KVM virtual machine: one memslot at GPA 0, one vCPU in long mode, and
//! the run loop that turns exits into hypercalls.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use solo5_abi::hvt::{self, HvtBootInfo};
use solo5_abi::{SOLO5_R_AGAIN, SOLO5_R_EINVAL, SOLO5_R_EUNSPEC, SOLO5_R_OK};
use solo5_tender::devices::{Attachment, BlockDevice, BlockIoError, TapDevice};
use solo5_tender::{LoadPlan, Manifest};

use crate::hypercall::{self, Hypercall, Reply};
use crate::memory::{GuestAccessError, GuestMemory};
use crate::seccomp::Fds;
use crate::sys;

/// Why the VM could not be built. Every variant ends the tender with exit 1.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Guest memory could not be mapped or protected.
    #[error("Could not allocate guest memory: {0}")]
    Memory(io::Error),
    /// A KVM ioctl failed.
    #[error("KVM: {what} failed: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The host error.
        source: kvm_ioctls::Error,
    },
    /// The host TSC is not invariant, so the guest's clock would drift.
    #[error("Host TSC is not invariant, cannot continue")]
    TscNotInvariant,
    /// Writing boot data into guest memory failed (a layout bug).
    #[error("Could not write boot data: {0}")]
    Boot(#[from] GuestAccessError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError::Kvm { what, source }
}

/// How the guest ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HALT with this status.
    Halted(i32),
    /// The guest or the host failed; the tender exits 1 with this message.
    Failed(String),
}

/// A device as the run loop holds it, indexed by handle.
#[derive(Debug)]
enum Device {
    Net(TapDevice),
    Block(BlockDevice),
}

/// A built VM, ready to run.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory they map.
    vcpu: VcpuFd,
    _vm: VmFd,
    mem: GuestMemory,
    devices: Vec<Option<Device>>,
    block_enabled: bool,
    net_enabled: bool,
}

/// What [`Vm::new`] needs.
#[derive(Debug)]
pub struct VmConfig<'a> {
    /// Guest memory size (a multiple of 2 MiB, 2 MiB to 4 GiB).
    pub mem_size: u64,
    /// The checked segments.
    pub plan: &'a LoadPlan<'a>,
    /// The manifest copy, attached devices filled in.
    pub manifest: &'a Manifest,
    /// The guest command line, without NUL (at most 8191 bytes).
    pub cmdline: &'a [u8],
    /// The attached devices.
    pub attachments: Vec<Attachment>,
}

impl Vm {
    /// Builds guest memory (page tables, GDT, image, boot info, manifest
    /// copy, cmdline), the VM and its vCPU.
    pub fn new(cfg: VmConfig<'_>) -> Result<Self, SetupError> {
        let mut mem = GuestMemory::new(cfg.mem_size).map_err(SetupError::Memory)?;
        {
            let raw = mem.as_mut_slice().expect("fresh memory is writable");
            sys::write_gdt(raw);
            sys::write_page_tables(raw, cfg.mem_size);
            cfg.plan.load_into(raw);
        }
        let mft = cfg.manifest.encode();
        let cmdline_gpa = hvt::cmdline_gpa(cfg.manifest.entries().len());
        mem.write(hvt::MFT_GPA, &mft)?;
        mem.write(cmdline_gpa, cfg.cmdline)?;
        mem.write(cmdline_gpa + cfg.cmdline.len() as u64, &[0])?;
        for seg in &cfg.plan.segments {
            mem.protect(seg.start, seg.end, seg.perms.host_prot())
                .map_err(SetupError::Memory)?;
        }

        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size(),
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: the region is our own mapping of exactly `memory_size`
        // bytes, which lives in `Vm` alongside the VM fd and is dropped after it.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let invariant_tsc = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == 0x8000_0007 && e.edx & (1 << 8) != 0);
        if !invariant_tsc {
            return Err(SetupError::TscNotInvariant);
        }
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let tsc_khz = vcpu.get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;

        let boot = HvtBootInfo {
            mem_size: cfg.mem_size,
            kernel_end: cfg.plan.kernel_end,
            cpu_cycle_freq: u64::from(tsc_khz) * 1000,
            cmdline: cmdline_gpa,
            mft: hvt::MFT_GPA,
            host_features: 0,
            guest_features: 0,
            net_ring: 0,
        };
        mem.write(hvt::BOOT_INFO_GPA, &boot.to_bytes())?;
        set_cpu_state(&vcpu, cfg.plan.entry, cfg.mem_size)?;

        let mut devices: Vec<Option<Device>> = Vec::new();
        devices.resize_with(cfg.manifest.entries().len(), || None);
        for a in cfg.attachments {
            let (handle, dev) = match a {
                Attachment::Net { handle, dev } => (handle, Device::Net(dev)),
                Attachment::Block { handle, dev } => (handle, Device::Block(dev)),
            };
            if let Some(slot) = devices.get_mut(handle as usize) {
                *slot = Some(dev);
            }
        }
        Ok(Vm {
            vcpu,
            _vm: vm,
            mem,
            devices,
            block_enabled: cfg.manifest.has_device_type(solo5_abi::DeviceType::Block),
            net_enabled: cfg.manifest.has_device_type(solo5_abi::DeviceType::Net),
        })
    }

    /// The fds the run loop uses, for the seccomp filter.
    pub fn fds(&self) -> Fds {
        let mut fds = Fds {
            vcpu: self.vcpu.as_raw_fd(),
            ..Fds::default()
        };
        for d in self.devices.iter().flatten() {
            match d {
                Device::Net(t) => fds.net.push(t.as_raw_fd()),
                Device::Block(b) => fds.block.extend(b.read_fds()),
            }
        }
        fds
    }

    /// Runs the guest until it halts or fails.
    pub fn run(&mut self) -> Outcome {
        loop {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) if e.errno() == libc::EFAULT => {
                    return self.fail("KVM: host/guest translation fault".into());
                }
                Err(e) => return self.fail(format!("KVM: KVM_RUN failed: {e}")),
            };
            // Copy what we need out of the kvm_run area, ending its borrow.
            let pio = match exit {
                VcpuExit::IoOut(port, data) => hypercall::from_pio(port, data).ok_or(port),
                VcpuExit::IoIn(port, _) => Err(port),
                other => {
                    let msg = describe_exit(&other);
                    return self.fail(msg);
                }
            };
            let (nr, arg) = match pio {
                Ok(call) => call,
                Err(port) => {
                    return self.fail(format!("Invalid guest port access: port={port:#x}"));
                }
            };
            match self.handle(nr, arg) {
                Ok(None) => {}
                Ok(Some(status)) => return Outcome::Halted(status),
                Err(msg) => return self.fail(msg),
            }
        }
    }

    fn fail(&self, msg: String) -> Outcome {
        match self.vcpu.get_regs() {
            Ok(regs) => Outcome::Failed(format!("{msg} (rip={:#x})", regs.rip)),
            Err(_) => Outcome::Failed(msg),
        }
    }

    /// Handles one hypercall; `Some(status)` on HALT.
    fn handle(&mut self, nr: hvt::Hypercall, arg: u64) -> Result<Option<i32>, String> {
        use hvt::Hypercall as Nr;
        let enabled = match nr {
            Nr::BlockRead | Nr::BlockWrite => self.block_enabled,
            Nr::NetRead | Nr::NetWrite => self.net_enabled,
            _ => true,
        };
        if !enabled {
            return Err(format!(
                "Invalid guest port access: port={:#x} (no such device module)",
                nr.port()
            ));
        }
        let call = hypercall::decode(nr, arg, &mut self.mem).map_err(|e| e.to_string())?;
        let reply = match call {
            Hypercall::Halt { status } => return Ok(Some(status)),
            call => execute(call, &self.devices)?,
        };
        hypercall::write_reply(nr, arg, reply, &mut self.mem).map_err(|e| e.to_string())?;
        Ok(None)
    }
}

/// Sets the registers and segment state of §3.2.
fn set_cpu_state(vcpu: &VcpuFd, entry: u64, mem_size: u64) -> Result<(), SetupError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sys::CODE_SELECTOR,
        type_: 9,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: sys::DATA_SELECTOR,
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0,
        selector: 0,
        type_: 11, // 64-bit busy TSS
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = sys::GDT_GPA;
    sregs.gdt.limit = sys::GDT_LIMIT;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = sys::CR0;
    sregs.cr3 = sys::PML4_GPA;
    sregs.cr4 = sys::CR4;
    sregs.efer = sys::EFER;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    let regs = kvm_regs {
        rip: entry,
        rsp: mem_size - 8,
        rdi: hvt::BOOT_INFO_GPA,
        rflags: sys::RFLAGS,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    Ok(())
}

/// The message for an exit the tender does not handle.
fn describe_exit(exit: &VcpuExit<'_>) -> String {
    match exit {
        VcpuExit::Shutdown => {
            "KVM: unhandled exit: exit_reason=0x8 (shutdown: triple fault)".into()
        }
        VcpuExit::Hlt => "KVM: unhandled exit: exit_reason=0x5 (hlt)".into(),
        VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => format!(
            "KVM: unhandled exit: exit_reason=0x6 (MMIO at gpa={addr:#x}: outside guest memory \
             or a write to a read-only page)"
        ),
        VcpuExit::InternalError => "KVM: internal error exit".into(),
        VcpuExit::FailEntry(reason, _) => {
            format!("KVM: entry failure: hardware_entry_failure_reason={reason:#x}")
        }
        other => format!("KVM: unhandled exit: {other:?}"),
    }
}

fn device(devices: &[Option<Device>], handle: u64) -> Option<&Device> {
    devices.get(usize::try_from(handle).ok()?)?.as_ref()
}

/// Carries out a hypercall other than HALT. `Err` ends the tender.
fn execute(call: Hypercall<'_>, devices: &[Option<Device>]) -> Result<Reply, String> {
    Ok(match call {
        Hypercall::Walltime => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO);
            Reply::Walltime(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
        }
        Hypercall::Puts(bytes) => {
            // Best effort, unbuffered, straight to fd 1.
            let _ = RawFdWriter(1).write_all(bytes);
            Reply::None
        }
        Hypercall::Poll { timeout_ns } => poll(devices, timeout_ns)?,
        Hypercall::BlockWrite {
            handle,
            offset,
            data,
        } => match device(devices, handle) {
            Some(Device::Block(b)) => match b.write_at(offset, data) {
                Ok(()) => Reply::Ret(SOLO5_R_OK),
                Err(BlockIoError::OutOfRange) => Reply::Ret(SOLO5_R_EINVAL),
                // Attached read-only (`--block-ro:`): Solo5 has no read-only flag to
                // report, so the write fails as an unspecified error.
                Err(BlockIoError::ReadOnly) => Reply::Ret(SOLO5_R_EUNSPEC),
                Err(BlockIoError::Io(e)) => return Err(format!("block write failed: {e}")),
            },
            _ => Reply::Ret(SOLO5_R_EINVAL),
        },
        Hypercall::BlockRead {
            handle,
            offset,
            buf,
        } => match device(devices, handle) {
            Some(Device::Block(b)) => match b.read_at(offset, buf) {
                Ok(()) => Reply::Ret(SOLO5_R_OK),
                Err(BlockIoError::OutOfRange) => Reply::Ret(SOLO5_R_EINVAL),
                Err(BlockIoError::ReadOnly) => Reply::Ret(SOLO5_R_EUNSPEC),
                Err(BlockIoError::Io(e)) => return Err(format!("block read failed: {e}")),
            },
            _ => Reply::Ret(SOLO5_R_EINVAL),
        },
        Hypercall::NetWrite { handle, data } => match device(devices, handle) {
            Some(Device::Net(t)) => match t.write(data) {
                Ok(n) if n == data.len() => Reply::Ret(SOLO5_R_OK),
                Ok(n) => return Err(format!("net write short: {n} of {} bytes", data.len())),
                Err(e) => return Err(format!("net write failed: {e}")),
            },
            _ => Reply::Ret(SOLO5_R_EINVAL),
        },
        Hypercall::NetRead { handle, buf } => match device(devices, handle) {
            Some(Device::Net(t)) => match t.read(buf) {
                Ok(Some(n)) => Reply::NetRead {
                    ret: SOLO5_R_OK,
                    len: Some(n as u64),
                },
                Ok(None) => Reply::NetRead {
                    ret: SOLO5_R_AGAIN,
                    len: None,
                },
                Err(e) => return Err(format!("net read failed: {e}")),
            },
            _ => Reply::NetRead {
                ret: SOLO5_R_EINVAL,
                len: None,
            },
        },
        Hypercall::Halt { .. } => unreachable!("HALT is handled by the run loop"),
    })
}

/// POLL: sleeps in the host (ppoll) until a TAP is readable or the timeout
/// passes, so an idle guest costs no CPU.
fn poll(devices: &[Option<Device>], timeout_ns: u64) -> Result<Reply, String> {
    let mut handles = Vec::new();
    let mut pfds = Vec::new();
    for (h, d) in devices.iter().enumerate() {
        if let Some(Device::Net(t)) = d {
            handles.push(h);
            pfds.push(libc::pollfd {
                fd: t.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds and `ts` a valid
    // timespec, both alive for the call; no signal mask is passed.
    let n = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            pfds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(Reply::Poll {
                ready_set: 0,
                ret: 0,
            });
        }
        return Err(format!("poll failed: {e}"));
    }
    let mut ready_set = 0u64;
    for (h, p) in handles.iter().zip(&pfds) {
        if p.revents & libc::POLLIN != 0 {
            ready_set |= 1 << h;
        }
    }
    Ok(Reply::Poll {
        ready_set,
        ret: ready_set.count_ones() as i32,
    })
}

/// Unbuffered writes to a raw fd the process does not own (stdout).
struct RawFdWriter(RawFd);

impl Write for RawFdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes; writing to a
        // closed or invalid fd only returns an error.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
