//! NET end to end: a guest on a TAP in a private network namespace sends a
//! frame, which the test sees on the interface, then waits (POLL, NET_READ)
//! for the test's reply frame (see `solo5_tender::fixtures::netns::frame_round_trip`).
//! Needs /dev/kvm and the right to create a network namespace (root); otherwise it
//! prints SKIPPED and passes.

mod common;
mod guests;

use common::*;
use solo5_abi::MftDevice;
use solo5_tender::fixtures::netns;

#[test]
fn frame_round_trip_over_a_tap() {
    if !have_kvm("frame_round_trip_over_a_tap") {
        return;
    }
    let dir = TempDir::new("net");
    let k = dir.file("net.hvt", &guest(guests::NET, &[MftDevice::net("service")]));
    netns::frame_round_trip(tender(), &k, b"compose-hvt");
}
