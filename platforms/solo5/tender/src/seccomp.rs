//! What the hvt and spt tenders' seccomp filters share: turning a policy table into a BPF
//! program that kills the process on any other system call, and installing it. Each tender
//! keeps its own table (which calls, on which fds, with which arguments) and the reasons.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Building or installing a filter failed.
#[derive(Debug, thiserror::Error)]
#[error("Could not set up the seccomp filter: {0}")]
pub struct SeccompError(#[from] seccompiler::Error);

/// Compiles `policy` into a BPF program whose default action kills the process. For each
/// entry, `nr` gives its system call number and `rules` its argument rules: `None` leaves
/// the call out (e.g. no block device, so no pread), an empty list would allow it outright.
pub fn compile<R>(
    policy: &[R],
    nr: impl Fn(&R) -> i64,
    rules: impl FnMut(&R) -> Result<Option<Vec<SeccompRule>>, seccompiler::Error>,
) -> Result<BpfProgram, SeccompError> {
    compile_with(policy, nr, rules, SeccompAction::KillProcess)
}

/// [`compile`] with another action for the calls the policy does not allow: spt uses
/// `SeccompAction::Trap`, so that its own SIGSYS handler can say which call it was.
pub fn compile_with<R>(
    policy: &[R],
    nr: impl Fn(&R) -> i64,
    mut rules: impl FnMut(&R) -> Result<Option<Vec<SeccompRule>>, seccompiler::Error>,
    otherwise: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let mut map = BTreeMap::new();
    for entry in policy {
        if let Some(r) = rules(entry)? {
            map.insert(nr(entry), r);
        }
    }
    let filter = SeccompFilter::new(map, otherwise, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(seccompiler::Error::from)?;
    Ok(BpfProgram::try_from(filter).map_err(seccompiler::Error::from)?)
}

/// Applies `program` to the calling thread, after setting `no_new_privs`. Neither
/// allocates nor frees, so the caller can go straight on to the guest.
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter(program)?)
}
