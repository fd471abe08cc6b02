//! The console: the tender's standard output.

use core::marker::PhantomData;

use crate::{Bindings, Error};

/// The tender's console. Every write goes straight to the host (nothing is buffered).
pub struct Console<B> {
    _target: PhantomData<fn() -> B>,
}

impl<B: Bindings> Console<B> {
    /// The console.
    pub fn new() -> Result<Self, Error> {
        Ok(Console {
            _target: PhantomData,
        })
    }
}

impl<B> core::fmt::Debug for Console<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Console")
    }
}

impl<B: Bindings> compose_devices::console::Console for Console<B> {
    fn write(&self, bytes: &[u8]) {
        B::console_write(bytes);
    }
}
