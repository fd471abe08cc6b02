//! Solo5 spt: a process behind a strict seccomp filter, started by compose's tender `compose-spt`.

use super::{DeployFormat, HostDevice, Launcher, PlatformCrate, Target, solo5};
use std::collections::BTreeMap;

/// The spt target.
#[derive(Debug, Clone, Copy)]
pub struct Spt;

impl Target for Spt {
    fn name(&self) -> &'static str {
        "spt"
    }
    fn summary(&self) -> &'static str {
        "Solo5 spt: a seccomp-confined process run by the compose-spt tender"
    }
    fn triple(&self) -> Option<&'static str> {
        Some("x86_64-unknown-none")
    }
    fn platform(&self) -> PlatformCrate {
        PlatformCrate {
            krate: "compose-spt-guest",
            path: "platforms/spt",
        }
    }
    fn template(&self) -> &'static str {
        "solo5"
    }
    fn image_file(&self, name: &str) -> String {
        format!("{name}.spt")
    }
    fn attaches_net(&self) -> bool {
        true
    }
    fn glue_context(
        &self,
        host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
        solo5::glue_context(host, "compose-spt.ld")
    }
    fn check_memory(&self, bytes: u64) -> Result<(), String> {
        // The spt tender takes the size as given (no rounding) and needs room for the
        // image above 1 MiB; its upper bound is far beyond any host (64 TiB).
        if bytes >= 2 << 20 {
            Ok(())
        } else {
            Err("an spt guest needs at least 2 MiB of memory".into())
        }
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        solo5::check_image(image, solo5_abi::AbiTarget::Spt)
    }
    fn launcher(&self) -> Launcher {
        Launcher::Tender("compose-spt")
    }
    fn deploy_formats(&self) -> &'static [DeployFormat] {
        solo5::DEPLOY_FORMATS
    }
}
