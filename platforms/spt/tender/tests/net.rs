//! NET end to end: a guest on a tap in a private network namespace sends a frame, which
//! the test sees on the interface, then waits (epoll_pwait on the tender's epoll fd, read
//! on the tap) for the test's reply frame. Needs the right to create a network namespace
//! (root); otherwise it prints SKIPPED and passes.

mod common;
mod guests;

use common::*;
use solo5_abi::MftDevice;
use solo5_tender::fixtures::netns;
use std::time::{Duration, Instant};

#[test]
fn frame_round_trip_over_a_tap() {
    // Everything runs on a thread of its own, inside its own namespace.
    std::thread::spawn(|| {
        if let Err(e) = netns::enter_private().and_then(|()| netns::create_tap("tap0", true)) {
            println!("SKIPPED: cannot make a private netns with a TAP: {e}");
            eprintln!("SKIPPED: cannot make a private netns with a TAP: {e}");
            return;
        }
        let sock = netns::packet_socket("tap0", 200).unwrap();
        let dir = TempDir::new("net");
        let k = dir.file("net.spt", &guest(guests::NET, &[MftDevice::net("service")]));
        let mut child = tender()
            .args([
                "--mem=8",
                "--net:service=tap0",
                "--net-mac:service=02:00:00:00:00:01",
                path_str(&k),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();

        // Wait for the guest's frame.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 2048];
        let seen = loop {
            assert!(Instant::now() < deadline, "no frame from the guest");
            if let Ok(Some(_)) = child.try_wait() {
                break None;
            }
            match netns::recv(&sock, &mut buf) {
                Ok(n) if buf[12..14] == [0x88, 0xb5] => break Some(n),
                _ => continue,
            }
        };
        let Some(n) = seen else {
            let out = child.wait_with_output().unwrap();
            panic!("tender exited early: {out:?}");
        };
        assert_eq!(n, 60);
        assert_eq!(&buf[6..12], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&buf[14..25], b"compose-spt");

        // Reply with a 64-byte frame; the guest exits with its length.
        let mut reply = [0u8; 64];
        reply[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        reply[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        reply[12..14].copy_from_slice(&[0x88, 0xb6]);
        netns::send(&sock, &reply).unwrap();

        let limit = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > limit {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{out:?}");
    })
    .join()
    .unwrap();
}
