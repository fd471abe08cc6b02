//! The `compose-spt` binary: see the library for what it does.
//!
//! `main` is the C entry point, without Rust's runtime start-up (see the library's docs):
//! a boot is a few hundred microseconds of CPU, and that start-up was a fifth of it.
#![no_main]

use std::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    compose_spt::std_fds();
    // glibc hands std the arguments before `main` runs, so args_os works as usual.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    compose_spt::main(&args)
}
