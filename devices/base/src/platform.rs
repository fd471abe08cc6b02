//! The platform contract: every item the generated glue and the device descriptors may
//! name through `platform::` (the target's platform crate, imported as `platform` by the
//! glue). A platform crate provides all of it at its root; `platform_conformance!` checks
//! that at compile time, with each item's signature, and every platform crate invokes it
//! (`platforms/unix`, and `platforms/hvt` / `platforms/spt` through solo5-guest's
//! `facade!`). docs/platform.md is the prose version; keep the two in step.
//!
//! | item | signature | used by |
//! |------|-----------|---------|
//! | `boot` | `fn(&'static [bootargs::Spec]) -> Boot` | glue: first thing in `main` |
//! | `Boot` | a struct with `pub args: bootargs::BootArgs` | glue: `boot.args.get::<T>(name)` |
//! | `init` | `fn<T, E: Display>(&str, Result<T, E>) -> &'static T` | glue: every device |
//! | `run` | `fn<F: Future>(F) -> F::Output` | glue: the application; `assets` (block) |
//! | `exit` | `fn(u8) -> !` | glue: the application's status |
//! | `Console::new` | `fn() -> Result<impl console::Console, impl Display>` | `console` |
//! | `MonotonicClock::new` | `fn() -> Result<impl time::MonotonicClock, _>` | `clock` |
//! | `WallClock::new` | `fn() -> Result<impl time::WallClock, _>` | `wall-clock` |
//! | `Random::new` | `fn() -> Result<impl random::Random, _>` | `random` |
//! | `Netif::new` | `fn(&'static str) -> Result<impl net::Netif, _>` | `netif` |
//! | `Ipv4Config` | `{ address: Option<Ipv4Cidr>, gateway: Option<Ipv4Addr>, dhcp: bool }` | `ipv4` |
//! | `Ipv4::new` | `fn(&'static Netif, Ipv4Config) -> Result<impl net::Ipv4, _>` | `ipv4` |
//! | `Tcp::new` | `fn(&'static Ipv4) -> Result<impl net::Tcp, _>` | `tcp` |
//! | `Block::open` | `fn(&Boot, &'static str, u32) -> Result<impl block::Block, _>` | `block`, `assets` (block) |
//! | `Secret::open` | `fn(&Boot, &'static str) -> Result<impl secret::Secret, _>` | `secret` |
//! | the executor type | `impl executor::Platform` (argument of `platform_conformance!`) | `run` |
//!
//! Optional kinds: a platform may also implement these, and then names them after the
//! executor type (`platform_conformance!(Unix, audio)`), which checks them too; its
//! target lists them in `Target::implements`.
//!
//! | item | signature | used by |
//! |------|-----------|---------|
//! | `Audio::open` | `fn(&'static str, audio::PcmFormat, String) -> Result<impl audio::Audio, _>` | `audio` |
//!
//! A target may add items its own template uses (the Solo5 template calls
//! `platform::entry!(main)` and names `platform::solo5_abi`); those are the template's
//! business, not the contract's.

use core::fmt::Display;

/// Helpers of [`platform_conformance!`]: each accepts a constructor only if its signature
/// and the device it returns fit the contract.
#[doc(hidden)]
pub mod check {
    use super::Display;
    use crate::{audio, block, console, net, random, secret, time};

    /// `Console::new`.
    pub fn console<T: console::Console, E: Display>(_: fn() -> Result<T, E>) {}
    /// `MonotonicClock::new`.
    pub fn monotonic_clock<T: time::MonotonicClock, E: Display>(_: fn() -> Result<T, E>) {}
    /// `WallClock::new`.
    pub fn wall_clock<T: time::WallClock, E: Display>(_: fn() -> Result<T, E>) {}
    /// `Random::new`.
    pub fn random<T: random::Random, E: Display>(_: fn() -> Result<T, E>) {}
    /// `Netif::new`.
    pub fn netif<T: net::Netif, E: Display>(_: fn(&'static str) -> Result<T, E>) {}
    /// `Ipv4::new`, on the platform's `Netif`.
    pub fn ipv4<N: 'static, C, T: net::Ipv4, E: Display>(_: fn(&'static N, C) -> Result<T, E>) {}
    /// `Tcp::new`, on the platform's `Ipv4`.
    pub fn tcp<I: 'static, T: net::Tcp, E: Display>(_: fn(&'static I) -> Result<T, E>) {}
    /// `Block::open`.
    pub fn block<B, T: block::Block, E: Display>(_: fn(&B, &'static str, u32) -> Result<T, E>) {}
    /// `Secret::open`.
    pub fn secret<B, T: secret::Secret, E: Display>(_: fn(&B, &'static str) -> Result<T, E>) {}
    /// `Audio::open` (an optional kind).
    pub fn audio<T: audio::Audio, E: Display>(
        _: fn(&'static str, audio::PcmFormat, alloc::string::String) -> Result<T, E>,
    ) {
    }
    /// The executor type.
    pub fn executor<P: crate::executor::Platform>() {}
}

/// Checks, at compile time, that the crate it is invoked in (at its root) provides the
/// whole platform contract of [`crate::platform`]; the argument is the platform's executor
/// type, followed by the optional kinds it implements (`audio`). It generates no code that
/// runs.
#[macro_export]
macro_rules! platform_conformance {
    (@optional audio) => {
        const _: () = {
            #[allow(dead_code)]
            fn compose_platform_audio() {
                $crate::platform::check::audio::<Audio, _>(Audio::open);
            }
        };
    };
    ($executor:ty $(, $optional:ident)* $(,)?) => {
        $( $crate::platform_conformance!(@optional $optional); )*
        const _: () = {
            #[allow(dead_code)]
            fn compose_platform_contract() {
                use $crate::platform::check;
                let _: fn(&'static [$crate::bootargs::Spec]) -> Boot = boot;
                let _: fn(&Boot) -> &$crate::bootargs::BootArgs = |b| &b.args;
                let _: fn(&str, Result<u8, core::fmt::Error>) -> &'static u8 =
                    init::<u8, core::fmt::Error>;
                let _: fn(core::future::Ready<u8>) -> u8 = run::<core::future::Ready<u8>>;
                let _: fn(u8) -> ! = exit;
                check::console(Console::new);
                check::monotonic_clock(MonotonicClock::new);
                check::wall_clock(WallClock::new);
                check::random(Random::new);
                check::netif(Netif::new);
                let _ = Ipv4Config {
                    address: None::<$crate::net::Ipv4Cidr>,
                    gateway: None::<core::net::Ipv4Addr>,
                    dhcp: false,
                };
                check::ipv4::<Netif, Ipv4Config, Ipv4, _>(Ipv4::new);
                check::tcp::<Ipv4, Tcp, _>(Tcp::new);
                check::block::<Boot, Block, _>(Block::open);
                check::secret::<Boot, Secret, _>(Secret::open);
                check::executor::<$executor>();
            }
        };
    };
}
