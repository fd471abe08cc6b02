//! SIGINT and SIGTERM end the tender with exit code 1 and
//! "Exiting on signal N", as solo5-hvt does.
//!
//! The handler only calls async-signal-safe functions (`write`, `_exit`)
//! and both are allowed by the seccomp policy, so it works while the guest
//! runs.

use std::io;

/// Formats "compose-hvt: Exiting on signal N\n" into `buf` without
/// allocating; returns the length.
fn format_message(sig: i32, buf: &mut [u8; 64]) -> usize {
    const PREFIX: &[u8] = b"compose-hvt: Exiting on signal ";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut n = PREFIX.len();
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = sig.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    buf[n] = b'\n';
    n + 1
}

extern "C" fn on_signal(sig: libc::c_int) {
    let mut buf = [0u8; 64];
    let len = format_message(sig, &mut buf);
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `buf` is valid
    // for `len` bytes.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::_exit(1);
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an all-zero sigaction is valid; we then set the handler
        // and an empty mask before passing it to the kernel.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        // SAFETY: `sa.sa_mask` is a valid sigset_t owned by us.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is fully initialised and `on_signal` only calls
        // async-signal-safe functions.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn message() {
        let mut buf = [0; 64];
        let n = super::format_message(15, &mut buf);
        assert_eq!(&buf[..n], b"compose-hvt: Exiting on signal 15\n");
        let n = super::format_message(2, &mut buf);
        assert_eq!(&buf[..n], b"compose-hvt: Exiting on signal 2\n");
    }
}
