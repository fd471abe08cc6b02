//! What the composer generates for the `hello` spec on the hvt target.
//!
//! Build it for the guest (see `tests/guest.rs` for the flags) and run it on the tender:
//! `compose-hvt --mem=32 hello_glue --name=Ada --times=2`.
#![no_std]
#![no_main]
// The glue keeps the application's status whatever its type, `()` included.
#![allow(clippy::let_unit_value)]

use compose_hvt_guest as platform;

include!("../../solo5/examples/hello_glue.rs");
