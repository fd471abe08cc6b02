//! The console: text output to whoever runs the unikernel.

/// A byte sink for diagnostics and application output.
pub trait Console {
    /// Writes all of `bytes`. Console output is never lost silently: a platform that cannot
    /// write drops the bytes only when the host end is gone.
    fn write(&self, bytes: &[u8]);

    /// Writes a string followed by a newline.
    fn log(&self, line: &str) {
        self.write(line.as_bytes());
        self.write(b"\n");
    }
}

/// Adapts a [`Console`] to [`core::fmt::Write`], so `write!`/`writeln!` work on it.
pub struct Writer<'a, C: Console + ?Sized>(pub &'a C);

impl<C: Console + ?Sized> core::fmt::Write for Writer<'_, C> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}
