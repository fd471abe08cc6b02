//! Exercises the xen devices the hello and echo examples do not: the wall clock, the
//! random device and a block device (blkfront), plus a panic on request (tests/xen.rs):
//!
//! `disk = [ 'format=raw,vdev=xvda,access=rw,target=disk.img' ]`, `cmdline = "--panic"`
//!
//! Exit status 0 when every check passed, 1 otherwise; a panic crashes the domain.
#![no_std]
#![no_main]

use compose_xen_guest as platform;
use platform::solo5_abi;

include!("../../solo5/examples/devices_guest.rs");
