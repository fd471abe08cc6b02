//! The guest's seccomp policy, as data.
//!
//! Once the guest runs, the process it runs in may make only the system calls in
//! [`POLICY`], each with the argument constraint listed and the reason it is needed
//! (fact sheet §4.4, the same policy as solo5-spt's). Anything else ends the process
//! with SIGSYS: the call traps (`SECCOMP_RET_TRAP`) and the tender's handler, which runs
//! under the same filter, reports it and exits with 159 ([`crate::report`]). The fds, block sizes and capacities differ
//! from run to run, so [`build`] compiles the table for those of this run ([`Fds`]) with
//! seccompiler, and [`install`] applies it to the only thread, just before the jump into
//! the guest. After that only the guest runs, and the tender's signal handler when the
//! process ends ([`crate::report`]).
//!
//! | call | allowed when |
//! |---|---|
//! | `write` | fd is 1 (the console) or a tap |
//! | `read` | fd is a tap |
//! | `pread64`, `pwrite64` | fd is a block image, count its block size, offset ≤ capacity − block size |
//! | `clock_gettime` | clock is `CLOCK_REALTIME` or `CLOCK_MONOTONIC` |
//! | `epoll_pwait` | fd is the tender's epoll fd |
//! | `timerfd_settime` | fd is the tender's timerfd |
//! | `exit_group` | always |
//! | `arch_prctl` | code is `ARCH_SET_FS` |
//!
//! The table is exercised three ways: `tests/policy.rs` installs it in forked children
//! and makes each call inside and outside its constraint; the tender tests run
//! hand-assembled guests under the real binary; and compose-spt-guest's tests probe it
//! from a Rust unikernel (`sandbox_guest`).

use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompRule, sock_filter,
};

/// `ARCH_SET_FS`, the one `arch_prctl` code the guest may use.
pub const ARCH_SET_FS: u64 = 0x1002;

/// Which arguments a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// Any arguments.
    Any,
    /// arg0 (fd) is 1, the console, or a tap.
    ConsoleOrNetFd,
    /// arg0 (fd) is a tap.
    NetFd,
    /// arg0 (fd) is a block image, arg2 (count) its block size, and arg3 (offset) at most
    /// its capacity minus one block: one block, inside the image.
    OneBlock,
    /// arg0 (fd) is the epoll fd.
    EpollFd,
    /// arg0 (fd) is the timerfd.
    TimerFd,
    /// arg0 is one of these values (a clock id, an `arch_prctl` code).
    Arg0(&'static [u64]),
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

/// The guest's policy. Every system call not listed here kills the guest.
pub const POLICY: &[Rule] = &[
    Rule {
        name: "write",
        nr: libc::SYS_write,
        allow: Allow::ConsoleOrNetFd,
        reason: "console output to stdout; net_write sends a frame on a tap",
    },
    Rule {
        name: "read",
        nr: libc::SYS_read,
        allow: Allow::NetFd,
        reason: "net_read takes a frame from a tap",
    },
    Rule {
        name: "pread64",
        nr: libc::SYS_pread64,
        allow: Allow::OneBlock,
        reason: "block_read: one block of an image",
    },
    Rule {
        name: "pwrite64",
        nr: libc::SYS_pwrite64,
        allow: Allow::OneBlock,
        reason: "block_write: one block of an image",
    },
    Rule {
        name: "clock_gettime",
        nr: libc::SYS_clock_gettime,
        allow: Allow::Arg0(&[libc::CLOCK_REALTIME as u64, libc::CLOCK_MONOTONIC as u64]),
        reason: "the monotonic clock (which yield deadlines use) and the wall clock; \
                 the guest has no vDSO",
    },
    Rule {
        name: "epoll_pwait",
        nr: libc::SYS_epoll_pwait,
        allow: Allow::EpollFd,
        reason: "yield: sleep until the deadline timer fires or a tap has a frame",
    },
    Rule {
        name: "timerfd_settime",
        nr: libc::SYS_timerfd_settime,
        allow: Allow::TimerFd,
        reason: "yield: arm the deadline timer",
    },
    Rule {
        name: "exit_group",
        nr: libc::SYS_exit_group,
        allow: Allow::Any,
        reason: "the guest's exit, with its status (also on panic and abort)",
    },
    Rule {
        name: "arch_prctl",
        nr: libc::SYS_arch_prctl,
        allow: Allow::Arg0(&[ARCH_SET_FS]),
        reason: "set the TLS base (the guest clears the tender's at start)",
    },
];

/// A block image as the filter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockFd {
    /// The image's fd.
    pub fd: RawFd,
    /// Its size in bytes (a non-zero multiple of `block_size`).
    pub capacity: u64,
    /// Its block size.
    pub block_size: u64,
}

/// The fds the guest uses, and the block geometry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fds {
    /// The epoll fd for yield.
    pub epoll: RawFd,
    /// The deadline timerfd.
    pub timer: RawFd,
    /// Tap fds.
    pub net: Vec<RawFd>,
    /// Block images.
    pub block: Vec<BlockFd>,
}

pub use solo5_tender::seccomp::{SeccompError, install};

/// A condition on argument `arg`. Fds, clock ids and `arch_prctl` codes are C `int`s,
/// compared on their 32 bits as the kernel reads them; sizes and offsets on 64.
fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    SeccompCondition::new(arg, len, op, value).map_err(seccompiler::Error::from)
}

fn arg0_in(values: impl IntoIterator<Item = u64>) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    values
        .into_iter()
        .map(|v| Ok(SeccompRule::new(vec![cond(0, Len::Dword, Op::Eq, v)?])?))
        .collect()
}

fn fds(fds: impl IntoIterator<Item = RawFd>) -> Result<Vec<SeccompRule>, seccompiler::Error> {
    arg0_in(fds.into_iter().map(|fd| u64::from(fd as u32)))
}

/// The seccomp rules for one policy entry (empty = any arguments). `None` means the
/// call is not allowed at all in this run (`read` with no tap, `pread64` with no image).
fn rules_for(rule: &Rule, f: &Fds) -> Result<Option<Vec<SeccompRule>>, seccompiler::Error> {
    let rules = match rule.allow {
        Allow::Any => return Ok(Some(Vec::new())),
        Allow::ConsoleOrNetFd => fds(std::iter::once(1).chain(f.net.iter().copied()))?,
        Allow::NetFd => fds(f.net.iter().copied())?,
        Allow::EpollFd => fds([f.epoll])?,
        Allow::TimerFd => fds([f.timer])?,
        Allow::Arg0(values) => arg0_in(values.iter().copied())?,
        Allow::OneBlock => f
            .block
            .iter()
            // An image smaller than a block (which attaching refuses) allows nothing.
            .filter_map(|b| Some((b, b.capacity.checked_sub(b.block_size)?)))
            .map(|(b, last)| {
                Ok(SeccompRule::new(vec![
                    cond(0, Len::Dword, Op::Eq, u64::from(b.fd as u32))?,
                    cond(2, Len::Qword, Op::Eq, b.block_size)?,
                    cond(3, Len::Qword, Op::Le, last)?,
                ])?)
            })
            .collect::<Result<_, seccompiler::Error>>()?,
    };
    Ok((!rules.is_empty()).then_some(rules))
}

/// Compiles [`POLICY`] for `fds` into a BPF program whose default action traps: the call
/// does not run and the process gets SIGSYS, which [`crate::report`]'s handler reports
/// (with the call's number) before it exits with 159.
///
/// Ahead of the policy, one exception for that handler: `write` on fd 2 from the
/// `syscall` instruction of its stderr routine ([`crate::report::stderr_write_ip`]), which
/// loads fd 2 itself. Any other write on fd 2 still traps.
pub fn build(fds: &Fds) -> Result<BpfProgram, SeccompError> {
    let policy = solo5_tender::seccomp::compile_with(
        POLICY,
        |r| r.nr,
        |r| rules_for(r, fds),
        SeccompAction::Trap,
    )?;
    let mut program = report_exception(crate::report::stderr_write_ip());
    program.extend(policy);
    Ok(program)
}

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// BPF instructions that allow `write(2, ...)` made from instruction pointer `ip` (as the
/// kernel reports it: the address after the `syscall`) and fall through to the next
/// instruction for everything else. Offsets are `struct seccomp_data`'s: `nr` 0, `arch`
/// 4, `instruction_pointer` 8, `args[0]` 16 (little-endian: low word first).
fn report_exception(ip: u64) -> Vec<sock_filter> {
    const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let ld = |k| sock_filter {
        code: LD_ABS_W,
        jt: 0,
        jf: 0,
        k,
    };
    // A comparison that goes on with the next instruction if equal, and otherwise jumps
    // past the exception (its length is 11; instruction `at` is its index).
    let jeq = |at: u8, k| sock_filter {
        code: JEQ_K,
        jt: 0,
        jf: 11 - (at + 1),
        k,
    };
    vec![
        ld(4),
        jeq(1, AUDIT_ARCH_X86_64),
        ld(0),
        jeq(3, libc::SYS_write as u32),
        ld(16),
        jeq(5, 2),
        ld(8),
        jeq(7, ip as u32),
        ld(12),
        jeq(9, (ip >> 32) as u32),
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ]
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
        assert_eq!(POLICY.len(), 9);
    }

    #[test]
    fn builds_with_and_without_devices() {
        let none = build(&Fds {
            epoll: 3,
            timer: 4,
            ..Fds::default()
        })
        .unwrap();
        let fds = Fds {
            epoll: 3,
            timer: 4,
            net: vec![5, 6],
            block: vec![
                BlockFd {
                    fd: 7,
                    capacity: 1 << 20,
                    block_size: 512,
                },
                BlockFd {
                    fd: 8,
                    capacity: 4096,
                    block_size: 4096,
                },
            ],
        };
        let some = build(&fds).unwrap();
        assert!(!none.is_empty() && some.len() > none.len());
    }
}
