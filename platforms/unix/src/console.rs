//! The console: the process's standard output.

use std::io::Write;

use crate::Error;

/// Standard output, written through on every call (never held in a buffer).
#[derive(Debug)]
pub struct Console {
    _private: (),
}

impl Console {
    /// The process's stdout.
    pub fn new() -> Result<Self, Error> {
        Ok(Console { _private: () })
    }
}

impl compose_devices::console::Console for Console {
    fn write(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        // The only failure left after retries on EINTR is the reader being gone (EPIPE):
        // then there is nobody to tell.
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }
}
