//! Xen: a PVH domain (`platforms/xen`), deployed with an `xl` file; `compose run` starts
//! it with `xl create -c` where `xl` exists, else in the local Xen-under-QEMU sandbox
//! ([`crate::xen_sandbox`]).
//!
//! The glue is the Solo5 template's: the image carries the Solo5 manifest note (the
//! runtime completes it from XenStore: the vifs and vbds in manifest order) and Solo5's
//! ABI note for xen, and its entry is the `XEN_ELFNOTE_PHYS32_ENTRY` note.

use super::{DeployFormat, HostDevice, Launcher, PlatformCrate, Target, solo5};
use std::collections::BTreeMap;

/// The xen target.
#[derive(Debug, Clone, Copy)]
pub struct Xen;

/// The least memory of a xen guest: the runtime, its front ends' rings and buffers, and
/// 8 MiB kept for the heap and the stack.
pub const MEM_MIN: u64 = 16 << 20;
/// The most: the runtime identity-maps the first 4 GiB.
pub const MEM_MAX: u64 = 3 << 30;

/// `XEN_ELFNOTE_PHYS32_ENTRY` as the runtime emits it: namesz 4, descsz 4, type 18, "Xen".
const PVH_NOTE: [u8; 16] = [4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, b'X', b'e', b'n', 0];

impl Target for Xen {
    fn name(&self) -> &'static str {
        "xen"
    }
    fn summary(&self) -> &'static str {
        "Xen: a PVH domain, started with xl (or the local Xen-under-QEMU sandbox)"
    }
    fn triple(&self) -> Option<&'static str> {
        Some("x86_64-unknown-none")
    }
    fn platform(&self) -> PlatformCrate {
        PlatformCrate {
            krate: "compose-xen-guest",
            path: "platforms/xen",
        }
    }
    fn template(&self) -> &'static str {
        "solo5"
    }
    fn image_file(&self, name: &str) -> String {
        format!("{name}.xen")
    }
    fn attaches_net(&self) -> bool {
        true
    }
    fn glue_context(
        &self,
        host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
        solo5::glue_context(host, "compose-xen.ld")
    }
    fn check_memory(&self, bytes: u64) -> Result<(), String> {
        super::memory_within(bytes, MEM_MIN, MEM_MAX, "a xen guest", "")
    }
    fn check_image(&self, image: &[u8]) -> Result<(), String> {
        solo5::check_image(image, solo5_abi::AbiTarget::Xen)?;
        if !image.windows(PVH_NOTE.len()).any(|w| w == PVH_NOTE) {
            return Err(
                "the image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): was it linked with compose-xen-guest?"
                    .into(),
            );
        }
        Ok(())
    }
    fn launcher(&self) -> Launcher {
        Launcher::Xl
    }
    fn deploy_formats(&self) -> &'static [DeployFormat] {
        &[DeployFormat::Xl]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_xen_image_carries_the_pvh_note_and_solo5_s_xen_notes() {
        let mft = solo5_abi::Mft1Note::<1>::new(&[]);
        let image = |pvh: bool, abi: solo5_abi::AbiTarget| {
            let mut v = b"\x7fELF\x02\x01\x01".to_vec();
            v.resize(64, 0);
            if pvh {
                v.extend_from_slice(&PVH_NOTE);
                v.extend_from_slice(&0x10_0000u32.to_le_bytes());
            }
            v.extend_from_slice(&solo5_abi::abi1_note_bytes(abi));
            v.extend_from_slice(&mft.header.to_bytes());
            v.resize(v.len() + 64, 0);
            v
        };
        use solo5_abi::AbiTarget::{Hvt as H, Xen as X};
        assert_eq!(Xen.check_image(&image(true, X)), Ok(()));
        assert!(
            Xen.check_image(&image(false, X))
                .unwrap_err()
                .contains("PVH entry note")
        );
        assert!(
            Xen.check_image(&image(true, H))
                .unwrap_err()
                .contains("ABI note")
        );
        assert_eq!(Xen.image_file("site"), "site.xen");
        assert!(Xen.check_memory(32 << 20).is_ok());
        assert!(Xen.check_memory(8 << 20).unwrap_err().contains("16 MiB"));
        assert_eq!(Xen.deploy_formats(), &[DeployFormat::Xl]);
    }
}
