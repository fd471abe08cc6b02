//! What the Solo5 targets (hvt, spt) share: the manifest note the glue declares, the
//! devices a tender attaches, the image check and the deploy formats.

use super::{DeployFormat, HostDevice};
use solo5_abi::{AbiTarget, MftDevice};
use std::collections::BTreeMap;

/// Solo5 images are deployed with a Solo5 tender's command line or with albatross.
pub const DEPLOY_FORMATS: &[DeployFormat] = &[DeployFormat::Solo5, DeployFormat::Albatross];

/// The devices a Solo5 tender attaches, in manifest (handle) order: network interfaces
/// and block devices as the graph declares them, then, when the graph has secrets, the
/// one block device that carries them ([`crate::manifest::SECRETS_BLOCK`]). `true` marks
/// a network interface.
pub fn attached(host: &[HostDevice]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = host
        .iter()
        .filter_map(|h| match h {
            HostDevice::Net { name, .. } => Some((name.clone(), true)),
            HostDevice::Block { name, .. } => Some((name.clone(), false)),
            HostDevice::Secret { .. } => None,
        })
        .collect();
    if host.iter().any(|h| matches!(h, HostDevice::Secret { .. })) {
        out.push((crate::manifest::SECRETS_BLOCK.to_string(), false));
    }
    out
}

/// The template context of a Solo5 glue: the manifest note as a typed constructor call
/// (`solo5_abi::Mft1Note::new(&[MftDevice::net("service"), ...])`, checked here with the
/// same rules the constant evaluation applies), its entry count and one comment line per
/// handle, and the linker script.
pub fn glue_context(
    host: &[HostDevice],
    linker_script: &'static str,
) -> Result<BTreeMap<&'static str, minijinja::Value>, String> {
    let devices = attached(host);
    let typed: Vec<MftDevice<'_>> = devices
        .iter()
        .map(|(n, net)| {
            if *net {
                MftDevice::net(n)
            } else {
                MftDevice::block(n)
            }
        })
        .collect();
    // The encoder applies the rules `Mft1Note::new` asserts at compile time; checking
    // here turns a broken manifest into an error of compose rather than of rustc.
    let mut scratch = vec![0u8; solo5_abi::mft1_note_size(typed.len())];
    solo5_abi::encode_mft1_note(&typed, &mut scratch)
        .map_err(|e| format!("{e:?} (at most 63 devices with alphanumeric names)"))?;
    let mut comment = vec!["0: (reserved)".to_string()];
    let mut entries = Vec::new();
    for (i, (n, net)) in devices.iter().enumerate() {
        let what = if *net {
            "network interface"
        } else {
            "block device"
        };
        comment.push(format!("{}: {what} `{n}`", i + 1));
        entries.push(format!(
            "solo5_abi::MftDevice::{}({n:?})",
            if *net { "net" } else { "block" }
        ));
    }
    let mut ctx = BTreeMap::new();
    ctx.insert("manifest_entries", (devices.len() + 1).into());
    ctx.insert("manifest_devices", entries.into());
    ctx.insert("manifest_comment", comment.into());
    ctx.insert("linker_script", linker_script.into());
    Ok(ctx)
}

/// Checks that `image` is an ELF executable carrying the ABI note of `abi` and a
/// manifest note.
pub fn check_image(image: &[u8], abi: AbiTarget) -> Result<(), String> {
    if !image.starts_with(b"\x7fELF") {
        return Err("the image is not an ELF file".into());
    }
    let note = solo5_abi::abi1_note_bytes(abi);
    if !image.windows(note.len()).any(|w| w == note) {
        return Err(format!(
            "the image carries no Solo5 ABI note for {} (was it linked with the {} runtime?)",
            abi.name(),
            abi.name()
        ));
    }
    let mft = solo5_abi::NoteHeader::solo5(solo5_abi::NOTE_TYPE_MFT1, 0).to_bytes();
    // The header's name and type (its sizes vary with the manifest).
    let (name_sz, rest) = (&mft[..4], &mft[8..]);
    if !image
        .windows(mft.len())
        .any(|w| &w[..4] == name_sz && &w[8..] == rest)
    {
        return Err("the image carries no Solo5 manifest note".into());
    }
    Ok(())
}
