//! unix: the unikernel is a host process, for development.

use super::{DeployFormat, HostDevice, Launcher, PlatformCrate, Target};
use std::collections::BTreeMap;

/// The unix target.
#[derive(Debug, Clone, Copy)]
pub struct Unix;

impl Target for Unix {
    fn name(&self) -> &'static str {
        "unix"
    }
    fn summary(&self) -> &'static str {
        "a host process, for development"
    }
    fn triple(&self) -> Option<&'static str> {
        None
    }
    fn platform(&self) -> PlatformCrate {
        PlatformCrate {
            krate: "compose-unix",
            path: "platforms/unix",
        }
    }
    fn template(&self) -> &'static str {
        "unix"
    }
    fn implements(&self) -> &'static [&'static str] {
        // The whole contract, and audio as a WAV file (`--audio:NAME=PATH`).
        &[
            "console",
            "clock",
            "wall-clock",
            "random",
            "netif",
            "ipv4",
            "tcp",
            "block",
            "secret",
            "audio",
        ]
    }
    fn image_file(&self, name: &str) -> String {
        name.to_string()
    }
    fn reads_layered_images(&self) -> bool {
        true
    }
    fn attaches_net(&self) -> bool {
        // A network interface is the host's networking.
        false
    }
    fn glue_context(
        &self,
        _host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
        Ok(BTreeMap::new())
    }
    fn check_memory(&self, _bytes: u64) -> Result<(), String> {
        // A host process allocates as it goes; `memory` is recorded, not enforced.
        Ok(())
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        if image.starts_with(b"\x7fELF") {
            Ok(())
        } else {
            Err("the image is not an ELF executable".into())
        }
    }
    fn launcher(&self) -> Launcher {
        Launcher::Exec
    }
    fn deploy_formats(&self) -> &'static [DeployFormat] {
        // A host program is run, not deployed to a monitor.
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_implements_the_contract_and_audio() {
        let kinds = Unix.implements();
        assert!(
            super::super::CONTRACT_KINDS
                .iter()
                .all(|k| kinds.contains(k))
        );
        assert!(kinds.contains(&"audio"));
        let solo5 = super::super::by_name("hvt").unwrap().implements();
        assert!(!solo5.contains(&"audio"));
    }
}
