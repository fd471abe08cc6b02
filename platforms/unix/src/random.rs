//! Random bytes from the host kernel, through getrandom(2).

use std::io;

use crate::Error;

/// The kernel's cryptographically secure random number generator.
#[derive(Debug)]
pub struct Random {
    _private: (),
}

impl Random {
    /// Checks that getrandom(2) works on this host.
    pub fn new() -> Result<Self, Error> {
        getrandom(&mut [0u8; 1]).map_err(|e| Error::new(format!("getrandom(2): {e}")))?;
        Ok(Random { _private: () })
    }
}

impl compose_devices::random::Random for Random {
    fn fill(&self, buf: &mut [u8]) {
        // `new` checked that the syscall works; with valid arguments it cannot fail after.
        if let Err(e) = getrandom(buf) {
            panic!("compose-unix: getrandom(2) failed: {e}");
        }
    }
}

/// Fills `buf` from the kernel's pool, blocking only until the pool is first initialized.
fn getrandom(mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &mut buf[n.unsigned_abs()..];
    }
    Ok(())
}
