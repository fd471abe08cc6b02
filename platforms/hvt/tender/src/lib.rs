//! `compose-hvt`: a memory-safe, drop-in replacement for Solo5's `solo5-hvt`
//! tender, on Linux KVM (x86_64).
//!
//! The start-up follows Solo5's (fact sheet §1.5): parse the command line,
//! load and check the kernel ([`solo5_tender`]), attach its devices, build
//! guest memory and the vCPU ([`vm`]), install the signal handlers and the
//! seccomp filter ([`seccomp`]), then run the guest until it halts.
//!
//! Layers, from the bottom: [`sys`] (raw x86 layout), [`memory`]
//! (bounds-checked guest memory), [`hypercall`] (exits decoded once into a
//! borrowing enum), [`vm`] (KVM set-up and the run loop).
//!
//! Exit codes: the guest's HALT status `& 0xff`; 1 for every tender-side
//! problem, a guest fault, `--help` and SIGINT/SIGTERM; 0 for `--version`.

#![deny(missing_docs, missing_debug_implementations)]

pub mod hypercall;
pub mod memory;
pub mod seccomp;
pub mod signals;
pub mod sys;
pub mod vm;

use std::ffi::OsString;

use solo5_abi::AbiTarget;
use solo5_abi::hvt::{DEFAULT_MEM_MIB, MEM_ALIGN, MEM_MAX, MEM_MIN};
use solo5_tender::cli;

/// The program name used in messages.
pub const PROGRAM: &str = "compose-hvt";

/// Rounds `--mem` (MiB) to a guest memory size: down to a multiple of 2 MiB,
/// 2 MiB to 4 GiB. Returns the size and whether it was adjusted.
pub fn mem_size(mib: u64) -> Result<(u64, bool), String> {
    let bytes = mib
        .checked_mul(1 << 20)
        .filter(|&b| b <= MEM_MAX)
        .ok_or_else(|| {
            format!(
                "Guest memory size {mib} MB exceeds the maximum of {} MB",
                MEM_MAX >> 20
            )
        })?;
    let rounded = bytes - bytes % MEM_ALIGN;
    if rounded < MEM_MIN {
        return Err(format!(
            "Guest memory size {mib} MB is below the minimum of {} MB",
            MEM_MIN >> 20
        ));
    }
    Ok((rounded, rounded != bytes))
}

fn usage() -> String {
    cli::usage(PROGRAM, "")
}

/// Runs the tender with `args` (without the program name) and returns the
/// process exit code. Once the guest has started, this does not return: the
/// process exits from the run loop, because dropping the VM would need
/// system calls the seccomp filter forbids.
pub fn main(args: &[OsString]) -> i32 {
    let inv = match cli::front(
        args,
        &[],
        PROGRAM,
        &usage(),
        ("hvt", solo5_abi::HVT_ABI_VERSION),
    ) {
        Ok(inv) => inv,
        Err(code) => return code,
    };
    match start(&inv) {
        Ok(never) => match never {},
        Err(msg) => {
            eprintln!("{PROGRAM}: {msg}");
            1
        }
    }
}

/// Everything from loading the kernel to running it; returns only on errors.
fn start(inv: &cli::Invocation) -> Result<std::convert::Infallible, String> {
    let (mem_size, adjusted) = mem_size(inv.mem_mib.unwrap_or(DEFAULT_MEM_MIB))?;
    if adjusted {
        eprintln!("{PROGRAM}: adjusting memory to {mem_size} bytes");
    }
    let kernel = inv.kernel.display();
    let bytes = std::fs::read(&inv.kernel).map_err(|e| format!("{kernel}: Could not open: {e}"))?;
    let mut k = solo5_tender::load_kernel(&bytes, AbiTarget::Hvt, mem_size)
        .map_err(|e| format!("{kernel}: {e}"))?;
    let cmdline = inv.guest_cmdline().map_err(|e| e.to_string())?;
    let devices = inv.devices(&k.manifest).map_err(|e| e.to_string())?;
    let attachments =
        solo5_tender::devices::attach(&devices, &mut k.manifest).map_err(|e| e.to_string())?;
    let mut vm = vm::Vm::new(vm::VmConfig {
        mem_size,
        plan: &k.plan,
        manifest: &k.manifest,
        cmdline: &cmdline,
        attachments,
    })
    .map_err(|e| e.to_string())?;
    drop(bytes);

    signals::install().map_err(|e| format!("Could not install signal handlers: {e}"))?;
    let filter = seccomp::build(&vm.fds()).map_err(|e| e.to_string())?;
    seccomp::install(&filter).map_err(|e| e.to_string())?;

    // From here on only the calls in `seccomp::POLICY` are possible.
    let code = match vm.run() {
        vm::Outcome::Halted(status) => solo5_abi::exit_code_for_status(status),
        vm::Outcome::Failed(msg) => {
            eprintln!("{PROGRAM}: {msg}");
            1
        }
    };
    exit_now(code)
}

/// Ends the process at once with `code`: `_exit(2)`, i.e. one `exit_group`.
///
/// `std::process::exit` would run the runtime's clean-up first (flushing
/// stdout, tearing down the signal stack with `sigaltstack`), which the
/// seccomp filter forbids. Nothing is buffered: console output and messages
/// are written unbuffered.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) only ends the process; it never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_rounding() {
        use super::mem_size;
        assert_eq!(mem_size(512), Ok((512 << 20, false)));
        assert_eq!(mem_size(3), Ok((2 << 20, true)));
        assert_eq!(mem_size(4096), Ok((4 << 30, false)));
        assert!(mem_size(1).is_err());
        assert!(mem_size(0).is_err());
        assert!(mem_size(4097).is_err());
        assert!(mem_size(u64::MAX).is_err());
    }
}
