//! Device interfaces for compose unikernels.
//!
//! Every target (`unix`, `hvt`, `spt`, ...) implements these traits; applications are
//! written against them and never name a platform. The crate is `no_std` with `alloc`
//! so that the same application code builds for a host process and for a guest.
//!
//! Devices are constructed once by the generated glue, in the order the device graph
//! gives, and handed to the application as `&'static` references (see [`leak`]), so
//! that a device shared by several users is one instance and spawned tasks may hold it.
//!
//! The descriptors that tell the composer how to construct each device live next to
//! this crate, in `*.device.kdl` files.
#![no_std]
#![allow(async_fn_in_trait)] // single-threaded unikernels: no `Send` bounds wanted
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod bootargs;
pub mod executor;

pub mod audio;
pub mod block;
pub mod console;
pub mod kv;
pub mod logs;
pub mod metrics;
pub mod net;
pub mod platform;
pub mod random;
pub mod secret;
pub mod time;

pub use executor::{block_on, sleep, spawn, yield_now};

/// Moves a constructed device to the heap for the rest of the run.
///
/// Devices live as long as the unikernel; the glue leaks each one once so that it can be
/// shared by reference between the application, other devices and spawned tasks.
pub fn leak<T>(device: T) -> &'static T {
    alloc::boxed::Box::leak(alloc::boxed::Box::new(device))
}

/// What an application's entry function may return; it becomes the unikernel's exit status.
pub trait Termination {
    /// The exit status: 0 for success.
    fn exit_code(self) -> u8;
}

impl Termination for () {
    fn exit_code(self) -> u8 {
        0
    }
}

impl Termination for u8 {
    fn exit_code(self) -> u8 {
        self
    }
}

impl Termination for i32 {
    fn exit_code(self) -> u8 {
        (self & 0xff) as u8
    }
}

impl<E: core::fmt::Display> Termination for Result<(), E> {
    fn exit_code(self) -> u8 {
        match self {
            Ok(()) => 0,
            Err(_) => 1,
        }
    }
}
