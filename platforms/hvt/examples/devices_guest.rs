//! Exercises the hvt devices the hello and echo examples do not: the wall clock, the
//! random device and a block device, plus a panic on request. It prints what it sees:
//!
//! `compose-hvt --mem=32 --block:storage=disk.img devices_guest [--panic] [--fault]`
//!
//! Exit status 0 when every check passed, 1 otherwise, 255 after `--panic` or `--fault`
//! (a page fault, which the runtime's exception handlers report).
#![no_std]
#![no_main]

use compose_hvt_guest as platform;

include!("../../solo5/examples/devices_guest.rs");
