//! What the composer generates for an `echo` spec on the spt target whose stack has a
//! private address (`ipv4 stack net=service address="10.77.0.2/24"`).
//!
//! Run it on the tender with a tap that is up:
//! `compose-spt --mem=64 --net:service=tap0 echo_private_glue --port=7`.
#![no_std]
#![no_main]

use compose_spt_guest as platform;

/// The stack's address: a private one, 10.77.0.2/24.
const ADDRESS: devices::net::Ipv4Cidr = devices::net::Ipv4Cidr {
    address: core::net::Ipv4Addr::new(10, 77, 0, 2),
    prefix: 24,
};

include!("../../solo5/examples/echo_glue.rs");
