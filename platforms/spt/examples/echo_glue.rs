//! What the composer generates for `specs/echo.kdl` on the spt target, unchanged: the
//! stack has the spec's static address 127.0.0.1/8.
//!
//! Run it on the tender with a tap that is up: `compose-spt --mem=64 --net:service=tap0
//! echo_glue`. A host reaches 127.0.0.1 through a tap only from a network namespace whose
//! `lo` is down, with 127.0.0.2/8 on the tap and `net.ipv4.conf.all.route_localnet=1`
//! (see `tests/guest.rs`); `echo_private_glue` shows the usual setup.
#![no_std]
#![no_main]

use compose_spt_guest as platform;

/// The stack's address: the spec's own, 127.0.0.1/8.
const ADDRESS: devices::net::Ipv4Cidr = devices::net::Ipv4Cidr {
    address: core::net::Ipv4Addr::new(127, 0, 0, 1),
    prefix: 8,
};

include!("../../solo5/examples/echo_glue.rs");
