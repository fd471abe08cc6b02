//! Exercises the spt devices the hello and echo examples do not: the wall clock, the
//! random device and a block device, plus a panic on request. It prints what it sees:
//!
//! `compose-spt --mem=32 --block:storage=disk.img devices_guest [--panic] [--fault]`
//!
//! Exit status 0 when every check passed, 1 otherwise, 255 after `--panic`. `--fault`
//! reads unmapped memory: the process dies of SIGSEGV, which `compose-spt` reports (exit
//! status 139).
#![no_std]
#![no_main]

use compose_spt_guest as platform;

include!("../../solo5/examples/devices_guest.rs");
