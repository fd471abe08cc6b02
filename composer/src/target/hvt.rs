//! Solo5 hvt: a KVM guest, started by compose's own memory-safe tender `compose-hvt`.

use super::{DeployFormat, HostDevice, Launcher, PlatformCrate, Target, solo5};
use std::collections::BTreeMap;

/// The hvt target.
#[derive(Debug, Clone, Copy)]
pub struct Hvt;

impl Target for Hvt {
    fn name(&self) -> &'static str {
        "hvt"
    }
    fn summary(&self) -> &'static str {
        "Solo5 hvt: a KVM guest run by the compose-hvt tender"
    }
    fn triple(&self) -> Option<&'static str> {
        Some("x86_64-unknown-none")
    }
    fn platform(&self) -> PlatformCrate {
        PlatformCrate {
            krate: "compose-hvt-guest",
            path: "platforms/hvt",
        }
    }
    fn template(&self) -> &'static str {
        "solo5"
    }
    fn image_file(&self, name: &str) -> String {
        format!("{name}.hvt")
    }
    fn reads_layered_images(&self) -> bool {
        true
    }
    fn attaches_net(&self) -> bool {
        true
    }
    fn glue_context(
        &self,
        host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
        solo5::glue_context(host, "compose-hvt.ld")
    }
    fn check_memory(&self, bytes: u64) -> Result<(), String> {
        use solo5_abi::hvt::{MEM_MAX, MEM_MIN};
        super::memory_within(bytes, MEM_MIN, MEM_MAX, "an hvt guest", "")
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        solo5::check_image(image, solo5_abi::AbiTarget::Hvt)
    }
    fn launcher(&self) -> Launcher {
        Launcher::Tender("compose-hvt")
    }
    fn deploy_formats(&self) -> &'static [DeployFormat] {
        solo5::DEPLOY_FORMATS
    }
}
