//! Randomness and time for rustls, from the unikernel's devices.
//!
//! rustls draws random bytes through [`rustls::crypto::SecureRandom`] (the handshake's
//! nonces) and the provider's keys through `rand_core`'s `OsRng`, that is getrandom 0.2. On
//! unix getrandom asks the host; on the targets without an OS (Solo5, xen, rpi4:
//! `target_os = "none"`) this crate registers getrandom's custom backend, once per image,
//! which reads the same `random` device.

use compose_devices::random::Random;
use compose_devices::time::WallClock;
use core::fmt;

/// The `random` device, as rustls and getrandom need it.
#[derive(Clone, Copy)]
struct Device(&'static dyn Random);

// SAFETY: a compose unikernel runs one thread (see compose_devices::executor): the device is
// only ever used from it, though rustls' traits ask for Send + Sync.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RandomDevice")
    }
}

impl rustls::crypto::SecureRandom for Device {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        self.0.fill(buf);
        Ok(())
    }
}

/// The device getrandom's custom backend reads (the first `tls` device's `random`).
static DEVICE: spin::Once<Device> = spin::Once::new();

/// Makes `random` the source of rustls' and getrandom's random bytes; returns rustls' view.
pub(crate) fn install<R: Random>(random: &'static R) -> &'static dyn rustls::crypto::SecureRandom {
    DEVICE.call_once(|| Device(random))
}

#[cfg(target_os = "none")]
fn custom_getrandom(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    match DEVICE.get() {
        Some(d) => {
            d.0.fill(buf);
            Ok(())
        }
        None => Err(getrandom::Error::UNSUPPORTED),
    }
}

#[cfg(target_os = "none")]
getrandom::register_custom_getrandom!(custom_getrandom);

/// The wall clock, as rustls' time provider (certificate validity is not checked by a
/// server without client authentication, but tickets and logs use it).
pub(crate) struct Clock<W: 'static>(pub &'static W);

// SAFETY: one thread, as for `Device`.
unsafe impl<W> Send for Clock<W> {}
// SAFETY: as above.
unsafe impl<W> Sync for Clock<W> {}

impl<W> fmt::Debug for Clock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}

impl<W: WallClock> rustls::time_provider::TimeProvider for Clock<W> {
    fn current_time(&self) -> Option<pki_types::UnixTime> {
        Some(pki_types::UnixTime::since_unix_epoch(self.0.now()))
    }
}
