//! The run loop's seccomp policy, as data.
//!
//! [`POLICY`] lists every system call the tender may make once the guest is
//! running, each with the argument constraint and the reason it is needed.
//! Anything else kills the process (SIGSYS). The fds differ from run to run,
//! so [`build`] compiles the table for the fds actually held ([`Fds`]) with
//! seccompiler when set-up is done, and [`install`] applies it to the only
//! thread.
//!
//! The table is exercised two ways: the KVM tests run every guest under it,
//! and `tests/seccomp.rs` shows that a forbidden call kills the process.

use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition, SeccompRule,
};

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xAE80;
/// `KVM_GET_REGS`: `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u64 = 0x8090_AE81;

/// Which values an argument-constrained rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// Any arguments.
    Any,
    /// arg0 is stdout or stderr, or a TAP fd.
    ConsoleOrNetFd,
    /// arg0 is a TAP fd.
    NetFd,
    /// arg0 is a block image fd.
    BlockFd,
    /// arg0 is the vCPU fd and arg1 one of these ioctl requests.
    VcpuIoctl(&'static [u64]),
    /// arg0 is one of these clock ids.
    Clocks(&'static [u64]),
    /// arg2 (`prot`) lacks every bit of this mask.
    ArgClear {
        /// Argument index.
        arg: u8,
        /// Bits that must be clear.
        mask: u64,
    },
}

/// One allowed system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Name, for reports.
    pub name: &'static str,
    /// x86_64 number.
    pub nr: i64,
    /// Argument constraint.
    pub allow: Allow,
    /// Who needs it.
    pub reason: &'static str,
}

/// The run-loop policy. Every syscall not listed here kills the tender.
pub const POLICY: &[Rule] = &[
    Rule {
        name: "ioctl",
        nr: libc::SYS_ioctl,
        allow: Allow::VcpuIoctl(&[KVM_RUN, KVM_GET_REGS]),
        reason: "KVM_RUN runs the guest; KVM_GET_REGS reports RIP when the guest faults",
    },
    Rule {
        name: "write",
        nr: libc::SYS_write,
        allow: Allow::ConsoleOrNetFd,
        reason: "PUTS to stdout, tender messages to stderr, NET_WRITE to a TAP",
    },
    Rule {
        name: "read",
        nr: libc::SYS_read,
        allow: Allow::NetFd,
        reason: "NET_READ from a TAP",
    },
    Rule {
        name: "pread64",
        nr: libc::SYS_pread64,
        allow: Allow::BlockFd,
        reason: "BLOCK_READ from an image",
    },
    Rule {
        name: "pwrite64",
        nr: libc::SYS_pwrite64,
        allow: Allow::BlockFd,
        reason: "BLOCK_WRITE to an image",
    },
    Rule {
        name: "ppoll",
        nr: libc::SYS_ppoll,
        allow: Allow::Any,
        reason: "POLL: sleep until a TAP is readable or the guest's deadline passes",
    },
    Rule {
        name: "clock_gettime",
        nr: libc::SYS_clock_gettime,
        allow: Allow::Clocks(&[libc::CLOCK_REALTIME as u64, libc::CLOCK_MONOTONIC as u64]),
        reason: "WALLTIME (normally served by the vDSO without a syscall)",
    },
    Rule {
        name: "exit_group",
        nr: libc::SYS_exit_group,
        allow: Allow::Any,
        reason: "HALT, a fault, or a signal ends the tender",
    },
    Rule {
        name: "brk",
        nr: libc::SYS_brk,
        allow: Allow::Any,
        reason: "the allocator, when an error message is formatted on the way out",
    },
    Rule {
        name: "mmap",
        nr: libc::SYS_mmap,
        allow: Allow::ArgClear {
            arg: 2,
            mask: libc::PROT_EXEC as u64,
        },
        reason: "the allocator (never executable mappings)",
    },
    Rule {
        name: "munmap",
        nr: libc::SYS_munmap,
        allow: Allow::Any,
        reason: "the allocator",
    },
];

/// The fds the run loop holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fds {
    /// The vCPU fd.
    pub vcpu: RawFd,
    /// TAP fds.
    pub net: Vec<RawFd>,
    /// Block image fds.
    pub block: Vec<RawFd>,
}

pub use solo5_tender::seccomp::{SeccompError, install};

fn cond(arg: u8, op: Op, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    let len = if arg == 0 { Len::Dword } else { Len::Qword };
    seccompiler::SeccompCondition::new(arg, len, op, value).map_err(seccompiler::Error::from)
}

fn fd_rules(fds: impl IntoIterator<Item = RawFd>) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    fds.into_iter()
        .map(|fd| Ok(SeccompRule::new(vec![cond(0, Op::Eq, fd as u64)?])?))
        .collect()
}

/// The seccomp rules for one policy entry, given the fds (empty = any args).
/// `None` means the call is not allowed at all here (e.g. `read` with no TAP).
fn rules_for(rule: &Rule, fds: &Fds) -> Result<Option<Vec<SeccompRule>>, seccompiler::Error> {
    let rules = match rule.allow {
        Allow::Any => return Ok(Some(Vec::new())),
        Allow::ConsoleOrNetFd => fd_rules([1, 2].into_iter().chain(fds.net.iter().copied()))?,
        Allow::NetFd => fd_rules(fds.net.iter().copied())?,
        Allow::BlockFd => fd_rules(fds.block.iter().copied())?,
        Allow::VcpuIoctl(requests) => requests
            .iter()
            .map(|&req| {
                Ok(SeccompRule::new(vec![
                    cond(0, Op::Eq, fds.vcpu as u64)?,
                    // The request is an unsigned long; compare all 64 bits.
                    cond(1, Op::Eq, req)?,
                ])?)
            })
            .collect::<Result<_, seccompiler::Error>>()?,
        Allow::Clocks(ids) => ids
            .iter()
            .map(|&id| Ok(SeccompRule::new(vec![cond(0, Op::Eq, id)?])?))
            .collect::<Result<_, seccompiler::Error>>()?,
        Allow::ArgClear { arg, mask } => {
            vec![SeccompRule::new(vec![cond(arg, Op::MaskedEq(mask), 0)?])?]
        }
    };
    Ok((!rules.is_empty()).then_some(rules))
}

/// Compiles [`POLICY`] for `fds` into a BPF program whose default action kills the
/// process.
pub fn build(fds: &Fds) -> Result<BpfProgram, SeccompError> {
    solo5_tender::seccomp::compile(POLICY, |r| r.nr, |r| rules_for(r, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_reason_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in POLICY {
            assert!(!r.reason.is_empty(), "{}", r.name);
            assert!(seen.insert(r.nr), "{} listed twice", r.name);
        }
    }

    #[test]
    fn builds_with_and_without_devices() {
        assert!(!build(&Fds::default()).unwrap().is_empty());
        let fds = Fds {
            vcpu: 9,
            net: vec![10, 11],
            block: vec![12],
        };
        assert!(!build(&fds).unwrap().is_empty());
    }
}
