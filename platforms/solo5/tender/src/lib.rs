//! What every Solo5 tender shares: loading and checking the unikernel ELF,
//! validating its manifest, parsing the command line, and the host devices.
//!
//! The hvt tender (`compose-hvt`) and the spt tender (`compose-spt`) use it.
//! A tender's start-up reads as (§1.5 of the fact sheet):
//!
//! 1. [`cli::parse`] the arguments (`--help` exits 1, `--version` 0);
//! 2. read KERNEL and [`load_kernel`] it: header, ABI note, manifest and
//!    segment checks, giving a [`elf::LoadPlan`];
//! 3. [`cli::Invocation::devices`] checks the device options against the
//!    manifest, and [`devices::attach`] opens them and fills in the
//!    manifest copy;
//! 4. the tender allocates guest memory, runs [`elf::LoadPlan::load_into`]
//!    (or [`elf::LoadPlan::load_at`] when guest memory does not start at 0),
//!    writes its boot info, [`manifest::Manifest::encode`] and
//!    [`cli::Invocation::guest_cmdline`], then starts the guest.

#![deny(missing_docs, missing_debug_implementations)]

pub mod cli;
pub mod devices;
pub mod elf;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod manifest;
pub mod seccomp;

pub use elf::{ElfError, Kernel, LoadPlan, load_kernel};
pub use manifest::{Manifest, ManifestError};

#[cfg(test)]
mod elf_tests;
