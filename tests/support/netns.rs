//! A network namespace with a tap, for tests that run Solo5 unikernels on a network of
//! their own, and a child process that cannot outlive a failed assertion.
//!
//! The namespace `PREFIX-PID-SUBNET` holds `tap0` at `10.77.SUBNET.1/24`; the unikernel
//! takes `10.77.SUBNET.2` ([`Netns::guest`]). It is deleted when the handle drops.

use std::process::{Child, Command};

pub struct Netns {
    pub name: String,
    subnet: u8,
}

impl Netns {
    /// The namespace, or `None` where namespaces cannot be made (not root).
    pub fn new(prefix: &str, subnet: u8) -> Option<Netns> {
        let name = format!("{prefix}-{}-{subnet}", std::process::id());
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns { name, subnet };
        let addr = format!("10.77.{subnet}.1/24");
        let steps: [&[&str]; 4] = [
            &["-n", &ns.name, "link", "set", "lo", "up"],
            &[
                "-n", &ns.name, "tuntap", "add", "dev", "tap0", "mode", "tap",
            ],
            &["-n", &ns.name, "addr", "add", &addr, "dev", "tap0"],
            &["-n", &ns.name, "link", "set", "tap0", "up"],
        ];
        for s in steps {
            assert!(ip(s), "ip {s:?}");
        }
        Some(ns)
    }

    /// Adds a second tap, `tap` at `10.77.SUBNET.1/24`, for a unikernel with two network
    /// interfaces (it takes `10.77.SUBNET.2`).
    #[allow(dead_code)]
    pub fn add_tap(&self, tap: &str, subnet: u8) {
        let addr = format!("10.77.{subnet}.1/24");
        let steps: [&[&str]; 3] = [
            &["-n", &self.name, "tuntap", "add", "dev", tap, "mode", "tap"],
            &["-n", &self.name, "addr", "add", &addr, "dev", tap],
            &["-n", &self.name, "link", "set", tap, "up"],
        ];
        for s in steps {
            let ok = Command::new("ip")
                .args(s)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {s:?}");
        }
    }

    /// The unikernel's address on the tap's subnet.
    pub fn guest(&self) -> String {
        format!("10.77.{}.2", self.subnet)
    }

    /// Runs `f` on a thread that has entered the namespace (threads it starts are inside
    /// too); a panic in `f` is the caller's panic.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on a namespace file we hold open; it changes only this thread's
            // network namespace (and that of the threads it creates).
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process that is killed and reaped when dropped, so a failed assertion leaves no
/// server or tender behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
