//! Targets as types. A target is one file here (it implements [`Target`]) and one folder
//! under `platforms/` (its platform crate, which provides the platform contract of
//! `compose_devices::platform`). Nothing else in the composer matches target names:
//! the spec stage asks [`is_known`], the glue asks the target for its crate, template and
//! extra template context, the build for its triple and image checks, `compose run` for
//! its [`Launcher`] and `compose deploy` for its [`DeployFormat`]s.
//!
//! Devices reach the host through capabilities their descriptors declare (`host net`,
//! `host block`, `host secret`); [`host_devices`] reads them from a graph, and each target
//! decides what they become (a Solo5 manifest entry, a launcher flag, nothing).
//!
//! See docs/targets.md for what adding a target takes.

use crate::graph::{Graph, PropValue};
use crate::manifest::{Manifest, Mapping, MappingErrors};
use std::collections::BTreeMap;
use std::path::Path;

mod hvt;
mod rpi4;
mod solo5;
mod spt;
mod unix;
mod xen;

pub use hvt::Hvt;
pub use rpi4::Rpi4;
pub use spt::Spt;
pub use unix::Unix;
pub use xen::Xen;

/// A platform crate: the guest runtime a target's glue links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformCrate {
    /// The cargo package name.
    pub krate: &'static str,
    /// Its directory, relative to the compose root.
    pub path: &'static str,
}

/// How `compose run` starts an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// The image is a host program: exec it with `--block:NAME=FILE`, `--secret:NAME=PATH`
    /// and the boot arguments.
    Exec,
    /// Exec the named tender (a binary of the compose workspace) with Solo5's command line
    /// ([`crate::manifest::solo5_args`]).
    Tender(&'static str),
    /// A Xen domain: `xl create -c` with the image's .xl where `xl` exists, otherwise
    /// the local Xen-under-QEMU sandbox (`crate::xen_sandbox`).
    Xl,
    /// Boot the image in QEMU (`qemu-system-aarch64 -M raspi4b`) with the UART on the
    /// terminal (see [`qemu_args`]).
    Qemu,
}

/// What `compose deploy` renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeployFormat {
    /// The solo5-hvt / solo5-spt command line.
    Solo5,
    /// An albatross-client create command.
    Albatross,
    /// A Xen .xl file.
    Xl,
}

impl DeployFormat {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DeployFormat::Solo5 => "solo5",
            DeployFormat::Albatross => "albatross",
            DeployFormat::Xl => "xl",
        }
    }
}

/// Why `compose deploy` cannot render.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The format does not apply to the manifest's target.
    #[error(
        "--format {format}: a {target} image cannot be deployed that way (formats for {target}: {supported})"
    )]
    Format {
        /// The format asked for.
        format: &'static str,
        /// The target.
        target: String,
        /// What it supports, comma-separated (or "none").
        supported: String,
    },
    /// The manifest names a target this compose has no platform for.
    #[error("the manifest's target {0} is not a target this compose can deploy")]
    Target(String),
    /// The host mapping does not fit the manifest.
    #[error("{0}")]
    Mapping(#[from] MappingErrors),
}

/// What [`Target::extra_outputs`] adds to a store entry.
#[derive(Debug, Default)]
pub struct ExtraOutputs {
    /// Files (name, contents), stored and bundled next to the image.
    pub files: Vec<(String, Vec<u8>)>,
    /// CycloneDX components for what they carry that is not a crate (firmware).
    pub sbom_components: Vec<serde_json::Value>,
    /// A note for the user (printed on stderr), e.g. why a file was not made.
    pub note: Option<String>,
}

/// A device the host provides, read from a descriptor's `host` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDevice {
    /// A network interface.
    Net {
        /// Its name (the manifest's and the launcher's `--net:NAME=`).
        name: String,
        /// A MAC address the spec fixes.
        mac: Option<String>,
    },
    /// A block device.
    Block {
        /// Its name.
        name: String,
        /// Bytes per sector, if fixed at build time.
        sector_size: Option<u32>,
        /// Its size in bytes, if fixed at build time.
        size: Option<u64>,
        /// Whether the image may write to it (otherwise it is attached read-only).
        writable: bool,
    },
    /// A secret supplied at launch.
    Secret {
        /// Its name.
        name: String,
    },
}

impl HostDevice {
    /// The device's name.
    pub fn name(&self) -> &str {
        match self {
            HostDevice::Net { name, .. }
            | HostDevice::Block { name, .. }
            | HostDevice::Secret { name } => name,
        }
    }
}

/// The device kinds of the whole platform contract (`compose_devices::platform`): a
/// platform that provides the contract implements every one of them.
pub const CONTRACT_KINDS: &[&str] = &[
    "console",
    "clock",
    "wall-clock",
    "random",
    "netif",
    "ipv4",
    "tcp",
    "block",
    "secret",
];

/// A target: everything compose needs to know to build, check, run and deploy for it.
pub trait Target: Sync {
    /// Its name in specs and on `--target`.
    fn name(&self) -> &'static str;
    /// One line for docs and errors.
    fn summary(&self) -> &'static str;
    /// The rustc target triple; `None` builds for the host.
    fn triple(&self) -> Option<&'static str>;
    /// The platform crate the glue links.
    fn platform(&self) -> PlatformCrate;
    /// The template directory: `templates/<dir>/main.rs.j2` (and `config.toml.j2` if any).
    fn template(&self) -> &'static str;
    /// The device kinds the platform implements (descriptors' `impl platform` lines apply
    /// to these).
    fn implements(&self) -> &'static [&'static str] {
        CONTRACT_KINDS
    }
    /// The image's file name in the store entry and the bundle.
    fn image_file(&self, name: &str) -> String;
    /// Whether network interfaces are attached by the launcher (`--net NAME=TAP`); when
    /// not, they are the host's networking and `--net` is refused.
    fn attaches_net(&self) -> bool;
    /// Whether what launches its images reads *layered* block images
    /// (`compose_blockfile`): compose's own launchers do, so a rebuild that changed a few
    /// files of a large block image stores only those. A target whose block images go to
    /// another program (a Xen disk, an SD card) gets plain images.
    fn reads_layered_images(&self) -> bool {
        false
    }
    /// Extra template context for the glue (e.g. the Solo5 manifest note), from the host
    /// devices of the graph in order.
    fn glue_context(
        &self,
        host: &[HostDevice],
    ) -> Result<BTreeMap<&'static str, minijinja::Value>, String>;
    /// Checks the guest memory size; the error says what the target accepts.
    fn check_memory(&self, bytes: u64) -> Result<(), String>;
    /// Checks a built image before it goes into the store.
    fn check_image(&self, image: &[u8]) -> Result<(), String>;
    /// Files from outside the compose tree and the spec that go into the build's outputs
    /// (rpi4: the Pi's firmware, from the directory `$COMPOSE_RPI4_FIRMWARE` names), as
    /// (label, path): part of the store key, hence of the build information. An error
    /// (the directory lacks a file) stops the build before it starts.
    fn input_files(&self) -> Result<Vec<(String, std::path::PathBuf)>, String> {
        Ok(Vec::new())
    }
    /// Files the store entry holds besides the image, made from it and the
    /// [`Target::input_files`] (rpi4: the SD card image).
    fn extra_outputs(
        &self,
        _graph: &Graph,
        _image: &[u8],
        _inputs: &[(String, std::path::PathBuf)],
    ) -> Result<ExtraOutputs, String> {
        Ok(ExtraOutputs::default())
    }
    /// The image to store, made from cargo's output (after [`Target::check_image`]);
    /// `None` stores the output as it is.
    fn finish_image(&self, _artifact: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
    /// How `compose run` starts the image.
    fn launcher(&self) -> Launcher;
    /// The prefix of the runtime's own command-line flags (rpi4: `--rpi4:debug`), which
    /// `compose run` passes on without checking them against the image's boot arguments.
    fn runtime_flags(&self) -> Option<&'static str> {
        None
    }
    /// The `compose deploy` formats that apply.
    fn deploy_formats(&self) -> &'static [DeployFormat];

    /// Renders a deployment of `manifest` in `format`, refusing a format that does not
    /// apply to this target.
    fn deploy(
        &self,
        format: DeployFormat,
        manifest: &Manifest,
        mapping: &Mapping,
        image: &Path,
        boot_args: &[String],
    ) -> Result<String, DeployError> {
        if !self.deploy_formats().contains(&format) {
            let supported: Vec<&str> = self.deploy_formats().iter().map(|f| f.name()).collect();
            return Err(DeployError::Format {
                format: format.name(),
                target: self.name().to_string(),
                supported: if supported.is_empty() {
                    "none".into()
                } else {
                    supported.join(", ")
                },
            });
        }
        Ok(match format {
            DeployFormat::Solo5 => {
                crate::manifest::solo5_args(manifest, mapping, image, boot_args)?
                    .iter()
                    .map(|s| crate::manifest::shell_quote(s))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            DeployFormat::Albatross => {
                crate::manifest::albatross_create(manifest, mapping, image, boot_args)?
            }
            DeployFormat::Xl => crate::manifest::xen_xl(manifest, mapping, image, boot_args)?,
        })
    }
}

/// [`Target::check_memory`] for a target whose guests take `min..=max` bytes: `what` names
/// the guest ("an hvt guest"), `why` (if not empty) says where the bounds come from.
pub(crate) fn memory_within(
    bytes: u64,
    min: u64,
    max: u64,
    what: &str,
    why: &str,
) -> Result<(), String> {
    if (min..=max).contains(&bytes) {
        return Ok(());
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    Err(format!(
        "{what} has {} MiB to {} MiB of memory{why}",
        min >> 20,
        max >> 20
    ))
}

/// Every target compose builds for, in the order docs list them.
pub fn all() -> &'static [&'static dyn Target] {
    &[&Unix, &Hvt, &Spt, &Xen, &Rpi4]
}

/// The target named `name`, if compose has a platform for it.
pub fn by_name(name: &str) -> Option<&'static dyn Target> {
    all().iter().copied().find(|t| t.name() == name)
}

/// Targets a spec may name that have no platform yet: checking a spec for one reports
/// which devices it lacks, building refuses.
pub const PLANNED: &[&str] = &[];

/// Every name a spec may give as its target: [`all`], then [`PLANNED`].
pub fn names() -> impl Iterator<Item = &'static str> + Clone {
    all()
        .iter()
        .map(|t| t.name())
        .chain(PLANNED.iter().copied())
}

/// Whether `name` is a target a spec may name.
pub fn is_known(name: &str) -> bool {
    names().any(|n| n == name)
}

/// The message for a target with no platform (yet).
pub fn no_platform(name: &str) -> String {
    let have: Vec<&str> = all().iter().map(|t| t.name()).collect();
    format!(
        "compose has no platform for target {name} yet (it builds for: {})",
        have.join(", ")
    )
}

/// The QEMU command line that boots an rpi4 `image` (`compose run`): the `raspi4b`
/// machine, the image as `-kernel`, the UART on stdio, semihosting (so the unikernel's
/// exit status is QEMU's), no display or monitor, the boot arguments as `-append`, and
/// `seed` (a file holding the random device's seed, see platforms/rpi4) loaded into RAM.
/// A boot argument with white space cannot cross `-append`: refused.
pub fn qemu_args(
    image: &Path,
    boot_args: &[String],
    seed: Option<&Path>,
) -> Result<Vec<String>, String> {
    if let Some(a) = boot_args
        .iter()
        .find(|a| a.chars().any(char::is_whitespace))
    {
        return Err(format!(
            "boot argument {a:?}: an rpi4 command line is split at white space (cmdline.txt, -append)"
        ));
    }
    let mut v: Vec<String> = [
        "-M",
        "raspi4b",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-semihosting",
        "-no-reboot",
        "-kernel",
    ]
    .map(String::from)
    .to_vec();
    v.push(image.display().to_string());
    if !boot_args.is_empty() {
        v.push("-append".into());
        v.push(boot_args.join(" "));
    }
    if let Some(seed) = seed {
        v.push("-device".into());
        v.push(format!(
            "loader,file={},addr=0x07f00000,force-raw=on",
            seed.display()
        ));
    }
    Ok(v)
}

/// The value of property `key` of a device, as resolved at build time.
fn prop(d: &crate::graph::Device, key: &str) -> Option<crate::types::Value> {
    d.props
        .iter()
        .find(|(k, _, _)| k == key)
        .and_then(|(_, _, v)| match v {
            PropValue::Given(v) | PropValue::Default(v) | PropValue::Param(_, v) => Some(v.clone()),
            PropValue::Absent | PropValue::BootArg(_) => None,
        })
}

/// Whether a descriptor condition (`when="PROPERTY=VALUE"`) holds for a device.
pub fn condition_holds(d: &crate::graph::Device, cond: &crate::descriptor::Condition) -> bool {
    prop(d, &cond.property).is_some_and(|v| v.text() == cond.value)
}

/// The host devices of a graph, in device order, from the descriptors' `host` capabilities.
pub fn host_devices(graph: &Graph) -> Vec<HostDevice> {
    use crate::descriptor::HostCap;
    let int = |d: &crate::graph::Device, p: &Option<crate::descriptor::IntSource>| match p {
        Some(crate::descriptor::IntSource::Fixed(n)) => Some(*n),
        Some(crate::descriptor::IntSource::Property(k)) => match prop(d, k) {
            Some(crate::types::Value::Int(n)) => u64::try_from(n).ok(),
            _ => None,
        },
        None => None,
    };
    let mut out = Vec::new();
    for d in &graph.devices {
        let Some(host) = &d.descriptor.host else {
            continue;
        };
        if host.when.as_ref().is_some_and(|c| !condition_holds(d, c)) {
            continue;
        }
        let name = d.name.clone();
        out.push(match &host.cap {
            HostCap::Net { mac } => HostDevice::Net {
                name,
                mac: mac.as_ref().and_then(|k| prop(d, k)).map(|v| v.text()),
            },
            HostCap::Block {
                sector_size,
                size,
                writable,
            } => HostDevice::Block {
                name,
                sector_size: int(d, sector_size).and_then(|n| u32::try_from(n).ok()),
                size: int(d, size),
                writable: writable
                    .as_ref()
                    .is_some_and(|k| matches!(prop(d, k), Some(crate::types::Value::Bool(true)))),
            },
            HostCap::Secret => HostDevice::Secret { name },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_names_each_target_once() {
        let mut names: Vec<&str> = names().collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(by_name("hvt").is_some());
        assert!(by_name("xen").is_some());
        assert!(by_name("rpi4").is_some());
        assert!(is_known("xen") && is_known("rpi4") && !is_known("vmx"));
    }

    #[test]
    fn solo5_images_are_named_as_solo5_names_them() {
        assert_eq!(by_name("unix").unwrap().image_file("site"), "site");
        assert_eq!(by_name("hvt").unwrap().image_file("site"), "site.hvt");
        assert_eq!(by_name("spt").unwrap().image_file("site"), "site.spt");
    }

    #[test]
    fn a_format_that_does_not_apply_is_refused() {
        let m = Manifest {
            schema: crate::manifest::SCHEMA.into(),
            name: "x".into(),
            target: "hvt".into(),
            memory: 1 << 25,
            image: "x.hvt".into(),
            bootargs: vec![],
            devices: vec![],
            files: BTreeMap::new(),
        };
        let mapping = Mapping::default();
        let hvt = by_name("hvt").unwrap();
        let e = hvt
            .deploy(DeployFormat::Xl, &m, &mapping, Path::new("x.hvt"), &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--format xl: a hvt image cannot be deployed that way (formats for hvt: solo5, albatross)"
        );
        assert!(
            hvt.deploy(DeployFormat::Solo5, &m, &mapping, Path::new("x.hvt"), &[])
                .unwrap()
                .ends_with("-- x.hvt")
        );
        let unix = by_name("unix").unwrap();
        assert!(matches!(
            unix.deploy(DeployFormat::Solo5, &m, &mapping, Path::new("x"), &[]),
            Err(DeployError::Format { .. })
        ));
    }

    #[test]
    fn solo5_images_must_carry_their_own_abi_note_and_a_manifest() {
        let mft = solo5_abi::Mft1Note::<2>::new(&[solo5_abi::MftDevice::net("service")]);
        let mft_header = mft.header.to_bytes();
        let image = |abi: Option<solo5_abi::AbiTarget>, with_mft: bool| {
            let mut v = b"\x7fELF\x02\x01\x01".to_vec();
            v.resize(64, 0);
            if let Some(abi) = abi {
                v.extend_from_slice(&solo5_abi::abi1_note_bytes(abi));
            }
            if with_mft {
                v.extend_from_slice(&mft_header);
            }
            v.resize(v.len() + 64, 0);
            v
        };
        let (hvt, spt) = (by_name("hvt").unwrap(), by_name("spt").unwrap());
        use solo5_abi::AbiTarget::{Hvt as H, Spt as S};
        assert_eq!(hvt.check_image(&image(Some(H), true)), Ok(()));
        assert_eq!(spt.check_image(&image(Some(S), true)), Ok(()));
        assert!(
            hvt.check_image(&image(Some(S), true))
                .unwrap_err()
                .contains("ABI note for solo5-hvt")
        );
        assert!(
            hvt.check_image(&image(Some(H), false))
                .unwrap_err()
                .contains("manifest")
        );
        assert!(
            spt.check_image(b"#!/bin/sh\n")
                .unwrap_err()
                .contains("not an ELF")
        );
        assert!(
            by_name("unix")
                .unwrap()
                .check_image(&image(None, false))
                .is_ok()
        );
    }

    #[test]
    fn memory_checks_follow_the_target() {
        let hvt = by_name("hvt").unwrap();
        assert!(hvt.check_memory(64 << 20).is_ok());
        assert!(hvt.check_memory(8 << 30).is_err());
        assert!(by_name("unix").unwrap().check_memory(8 << 30).is_ok());
    }
}
