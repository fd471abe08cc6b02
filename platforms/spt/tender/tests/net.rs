//! NET end to end: a guest on a tap in a private network namespace sends a frame, which
//! the test sees on the interface, then waits (epoll_pwait on the tender's epoll fd, read
//! on the tap) for the test's reply frame (see
//! `solo5_tender::fixtures::netns::frame_round_trip`). Needs the right to create a network
//! namespace (root); otherwise it prints SKIPPED and passes.

mod common;
mod guests;

use common::*;
use solo5_abi::MftDevice;
use solo5_tender::fixtures::netns;

#[test]
fn frame_round_trip_over_a_tap() {
    let dir = TempDir::new("net");
    let k = dir.file("net.spt", &guest(guests::NET, &[MftDevice::net("service")]));
    netns::frame_round_trip(tender(), &k, b"compose-spt");
}
