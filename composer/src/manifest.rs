//! The deployment manifest: what an image needs from the host that runs it, and the
//! hashes of every file shipped with it.
//!
//! One manifest per image, schema `compose.manifest/v1`, in JSON ([`Manifest::to_json`],
//! the form that is signed) and KDL ([`Manifest::to_kdl`], for people; it parses back to
//! the same manifest). It names the image's name, target, memory, boot arguments (declared
//! only: values are given at deploy time), devices (network interfaces, block devices,
//! secrets by name only), and in `files` the sha256 of every bundle file but the manifest
//! itself and its signature.
//!
//! The host side is a [`Mapping`] (`--net service=tap0 --block storage=disk.img --secret
//! token=@FILE`), checked against the manifest by [`Mapping::validate`] before anything
//! starts. The renderers turn manifest and mapping into a Solo5 tender command line
//! ([`solo5_args`]), an albatross `create` command ([`albatross_create`]) and a Xen `.xl`
//! file ([`xen_xl`]); which of them applies to an image is its target's choice
//! ([`crate::target::Target::deploy`]). Secret values never pass through any of them.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The schema this module reads and writes.
pub const SCHEMA: &str = "compose.manifest/v1";
/// The manifest's file name in a bundle (the signed form).
pub const JSON_FILE: &str = "manifest.json";
/// The KDL rendering's file name in a bundle (not in `files`: it parses back to the same
/// manifest as [`JSON_FILE`], which a verifier can check).
pub const KDL_FILE: &str = "manifest.kdl";
/// The detached signature of [`JSON_FILE`] in a bundle.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";
/// The name of the block device that carries secrets to a Solo5 guest.
pub const SECRETS_BLOCK: &str = "secrets";

const MIB: u64 = 1 << 20;

/// A boot argument the image accepts (`--NAME=VALUE` at boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootArg {
    /// Its name.
    pub name: String,
    /// Its type, as written in specs (`u16`, `string`, `ipv4-cidr`...).
    #[serde(rename = "type")]
    pub ty: String,
    /// Its default, as text; `None` makes it required at boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// One line of documentation.
    #[serde(default)]
    pub doc: String,
}

/// What a device needs from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeviceKind {
    /// A network interface, attached to a host tap (Solo5) or bridge (albatross, Xen).
    Net {
        /// A MAC address fixed by the spec; the launcher picks one when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// A block device, attached to a host file or volume.
    Block {
        /// The size in bytes the image expects, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// Bytes per sector, if fixed at build time.
        #[serde(
            default,
            rename = "sector-size",
            skip_serializing_if = "Option::is_none"
        )]
        sector_size: Option<u32>,
        /// Whether the image may write to it (the spec's `writable=#true`). A launcher
        /// attaches a device that is not writable read-only; absent in JSON when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        writable: bool,
    },
    /// A secret, by name only: its value is supplied at run or deploy time.
    Secret,
}

impl DeviceKind {
    /// `net`, `block` or `secret`.
    pub fn word(&self) -> &'static str {
        match self {
            DeviceKind::Net { .. } => "net",
            DeviceKind::Block { .. } => "block",
            DeviceKind::Secret => "secret",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            DeviceKind::Net { .. } => "network interface",
            DeviceKind::Block { .. } => "block device",
            DeviceKind::Secret => "secret",
        }
    }
}

/// A device the host provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its name in the spec (and in `--net:NAME=` / `--block:NAME=`).
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: DeviceKind,
}

/// The deployment manifest of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The unikernel's name.
    pub name: String,
    /// Its target (`unix`, `hvt`, `spt`, `xen`...).
    pub target: String,
    /// Guest memory in bytes.
    pub memory: u64,
    /// The image's file name in the bundle (a key of `files`).
    pub image: String,
    /// Boot arguments, declared.
    #[serde(default)]
    pub bootargs: Vec<BootArg>,
    /// Devices, in declaration order.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Bundle file name → hex sha256, for every file but the manifest and its signature.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// Why a manifest is unreadable or invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the right shape.
    #[error("the manifest is not valid JSON of schema {SCHEMA}: {0}")]
    Json(String),
    /// Not KDL of the right shape.
    #[error("the KDL manifest is invalid: {0}")]
    Kdl(String),
    /// Well-formed, but wrong.
    #[error("the manifest is invalid: {0}")]
    Invalid(String),
}

/// A disagreement between a manifest's `files` and the files present.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// The file's hash is not the recorded one.
    #[error(
        "{name} has been modified: the manifest records sha256 {expected}, the file has {actual}"
    )]
    Modified {
        /// The file.
        name: String,
        /// The recorded hash.
        expected: String,
        /// The hash found.
        actual: String,
    },
    /// A recorded file is absent.
    #[error("{0} is listed in the manifest but missing")]
    Missing(String),
    /// A file is present that the manifest does not record.
    #[error("{0} is not listed in the manifest")]
    Unlisted(String),
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

impl Manifest {
    /// A manifest for `graph`'s image, stored in the bundle as `image`, with no files yet:
    /// one device per `host` capability of the graph's devices
    /// ([`crate::target::host_devices`]), in device order.
    pub fn from_graph(graph: &crate::graph::Graph, image: &str) -> Manifest {
        use crate::target::HostDevice;
        let devices = crate::target::host_devices(graph)
            .into_iter()
            .map(|h| match h {
                HostDevice::Net { name, mac } => Device {
                    name,
                    kind: DeviceKind::Net { mac },
                },
                HostDevice::Block {
                    name,
                    sector_size,
                    size,
                    writable,
                } => Device {
                    name,
                    kind: DeviceKind::Block {
                        size,
                        sector_size,
                        writable,
                    },
                },
                HostDevice::Secret { name } => Device {
                    name,
                    kind: DeviceKind::Secret,
                },
            })
            .collect();
        Manifest {
            schema: SCHEMA.to_string(),
            name: graph.name.clone(),
            target: graph.target.clone(),
            memory: graph.memory,
            image: image.to_string(),
            bootargs: graph
                .bootargs
                .iter()
                .map(|b| BootArg {
                    name: b.name.clone(),
                    ty: b.ty.to_string(),
                    default: b.default.as_ref().map(|v| v.text()),
                    doc: b.doc.clone(),
                })
                .collect(),
            devices,
            files: BTreeMap::new(),
        }
    }

    /// The image's sha256, if recorded.
    pub fn image_sha256(&self) -> Option<&str> {
        self.files.get(&self.image).map(String::as_str)
    }

    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Devices of one kind (`net`, `block`, `secret`), in order.
    pub fn devices_of<'a>(&'a self, word: &'a str) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices.iter().filter(move |d| d.kind.word() == word)
    }

    /// Checks what the types cannot: the schema, names, hashes, the image being listed.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.schema != SCHEMA {
            return Err(invalid(format!(
                "schema is {:?}; this compose reads {SCHEMA}",
                self.schema
            )));
        }
        if !crate::spec::valid_name(&self.name) {
            return Err(invalid(format!(
                "name {:?} is not a valid unikernel name",
                self.name
            )));
        }
        if self.target.is_empty()
            || !self
                .target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(format!(
                "target {:?} is not a target name",
                self.target
            )));
        }
        if self.memory == 0 {
            return Err(invalid("memory is 0"));
        }
        for (name, sha) in &self.files {
            crate::bundle::check_name(name).map_err(|e| invalid(e.to_string()))?;
            if [JSON_FILE, KDL_FILE, SIGNATURE_FILE].contains(&name.as_str()) {
                return Err(invalid(format!(
                    "files lists {name}, which cannot record its own hash"
                )));
            }
            if !is_sha256_hex(sha) {
                return Err(invalid(format!(
                    "the sha256 of {name} is not 64 lowercase hex digits"
                )));
            }
        }
        if !self.files.contains_key(&self.image) {
            return Err(invalid(format!(
                "the image {:?} is not listed in files",
                self.image
            )));
        }
        let mut seen = BTreeSet::new();
        for d in &self.devices {
            if !crate::spec::valid_name(&d.name) {
                return Err(invalid(format!(
                    "device name {:?} is not a valid name",
                    d.name
                )));
            }
            if !matches!(d.kind, DeviceKind::Secret)
                && !d.name.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(invalid(format!(
                    "{} {:?} must be named with letters and digits only",
                    d.kind.what(),
                    d.name
                )));
            }
            if !seen.insert(d.name.as_str()) {
                return Err(invalid(format!("two devices are named {:?}", d.name)));
            }
        }
        if self.devices_of("secret").next().is_some()
            && self
                .device(SECRETS_BLOCK)
                .is_some_and(|d| !matches!(d.kind, DeviceKind::Secret))
        {
            return Err(invalid(format!(
                "a device is named {SECRETS_BLOCK:?}, the name reserved for the block device carrying secrets"
            )));
        }
        let mut seen = BTreeSet::new();
        for b in &self.bootargs {
            if !crate::spec::valid_name(&b.name) || !seen.insert(b.name.as_str()) {
                return Err(invalid(format!(
                    "boot argument {:?} is invalid or repeated",
                    b.name
                )));
            }
        }
        Ok(())
    }

    /// Compares `files` with the files present (name → hex sha256, excluding the
    /// manifest and its signature). Every problem is reported, sorted by file name.
    pub fn verify_files(&self, actual: &BTreeMap<String, String>) -> Result<(), Vec<FileProblem>> {
        let mut problems = Vec::new();
        for (name, expected) in &self.files {
            match actual.get(name) {
                None => problems.push(FileProblem::Missing(name.clone())),
                Some(a) if a != expected => problems.push(FileProblem::Modified {
                    name: name.clone(),
                    expected: expected.clone(),
                    actual: a.clone(),
                }),
                Some(_) => {}
            }
        }
        for name in actual.keys().filter(|n| !self.files.contains_key(*n)) {
            problems.push(FileProblem::Unlisted(name.clone()));
        }
        problems.sort_by(|a, b| problem_name(a).cmp(problem_name(b)));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Pretty JSON with a trailing newline; key order is fixed (declaration order of the
    /// fields, files sorted), so the same manifest always gives the same bytes.
    pub fn to_json(&self) -> String {
        // Serializing plain data to a string cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses and validates the JSON form.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The KDL form: one node per field, device and file, in JSON order.
    pub fn to_kdl(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "// Deployment manifest of {}: what it needs from the host that runs it.",
            self.name
        );
        let _ = writeln!(s, "schema {}", kdl_str(&self.schema));
        let _ = writeln!(s, "name {}", kdl_str(&self.name));
        let _ = writeln!(s, "target {}", kdl_str(&self.target));
        let _ = writeln!(s, "memory {} // {}", self.memory, human_size(self.memory));
        let _ = writeln!(s, "image {}", kdl_str(&self.image));
        if !self.bootargs.is_empty() {
            let _ = writeln!(
                s,
                "\n// Boot arguments, given as --NAME=VALUE when the image starts."
            );
        }
        for b in &self.bootargs {
            let _ = write!(s, "bootarg {} type={}", kdl_str(&b.name), kdl_str(&b.ty));
            if let Some(d) = &b.default {
                let _ = write!(s, " default={}", kdl_str(d));
            }
            let _ = writeln!(s, " doc={}", kdl_str(&b.doc));
        }
        if !self.devices.is_empty() {
            let _ = writeln!(s, "\n// Devices the host provides.");
        }
        for d in &self.devices {
            let _ = write!(s, "{} {}", d.kind.word(), kdl_str(&d.name));
            match &d.kind {
                DeviceKind::Net { mac } => {
                    if let Some(mac) = mac {
                        let _ = write!(s, " mac={}", kdl_str(mac));
                    }
                }
                DeviceKind::Block {
                    size,
                    sector_size,
                    writable,
                } => {
                    if let Some(size) = size {
                        let _ = write!(s, " size={size}");
                    }
                    if let Some(ss) = sector_size {
                        let _ = write!(s, " sector-size={ss}");
                    }
                    if *writable {
                        s.push_str(" writable=#true");
                    }
                }
                DeviceKind::Secret => {}
            }
            s.push('\n');
        }
        if !self.files.is_empty() {
            let _ = writeln!(s, "\n// Files of the bundle, with their sha256.");
        }
        for (name, sha) in &self.files {
            let _ = writeln!(s, "file {} sha256={}", kdl_str(name), kdl_str(sha));
        }
        s
    }

    /// Parses and validates the KDL form written by [`Manifest::to_kdl`].
    pub fn from_kdl(text: &str) -> Result<Manifest, ManifestError> {
        let doc = kdl::KdlDocument::parse(text).map_err(|e| ManifestError::Kdl(e.to_string()))?;
        let err = |msg: String| ManifestError::Kdl(msg);
        let mut schema = None;
        let mut name = None;
        let mut target = None;
        let mut memory = None;
        let mut image = None;
        let mut m = Manifest {
            schema: String::new(),
            name: String::new(),
            target: String::new(),
            memory: 0,
            image: String::new(),
            bootargs: Vec::new(),
            devices: Vec::new(),
            files: BTreeMap::new(),
        };
        for node in doc.nodes() {
            let n = KdlNode(node);
            let word = node.name().value();
            match word {
                "schema" => schema = Some(n.arg_str()?),
                "name" => name = Some(n.arg_str()?),
                "target" => target = Some(n.arg_str()?),
                "image" => image = Some(n.arg_str()?),
                "memory" => memory = Some(n.arg_int::<u64>()?),
                "bootarg" => m.bootargs.push(BootArg {
                    name: n.arg_str()?,
                    ty: n
                        .prop_str("type")?
                        .ok_or_else(|| err("bootarg without type=".into()))?,
                    default: n.prop_str("default")?,
                    doc: n.prop_str("doc")?.unwrap_or_default(),
                }),
                "net" => m.devices.push(Device {
                    name: n.arg_str()?,
                    kind: DeviceKind::Net {
                        mac: n.prop_str("mac")?,
                    },
                }),
                "block" => m.devices.push(Device {
                    name: n.arg_str()?,
                    kind: DeviceKind::Block {
                        size: n.prop_int("size")?,
                        sector_size: n.prop_int("sector-size")?,
                        writable: n.prop_bool("writable")?.unwrap_or(false),
                    },
                }),
                "secret" => m.devices.push(Device {
                    name: n.arg_str()?,
                    kind: DeviceKind::Secret,
                }),
                "file" => {
                    let file = n.arg_str()?;
                    let sha = n
                        .prop_str("sha256")?
                        .ok_or_else(|| err(format!("file {file:?} without sha256=")))?;
                    if m.files.insert(file.clone(), sha).is_some() {
                        return Err(err(format!("file {file:?} is listed twice")));
                    }
                }
                // Nodes added later within v1 are ignored, as JSON ignores unknown fields.
                _ => {}
            }
        }
        let need =
            |v: Option<String>, what: &str| v.ok_or_else(|| err(format!("no `{what}` node")));
        m.schema = need(schema, "schema")?;
        m.name = need(name, "name")?;
        m.target = need(target, "target")?;
        m.image = need(image, "image")?;
        m.memory = memory.ok_or_else(|| err("no `memory` node".into()))?;
        m.validate()?;
        Ok(m)
    }
}

fn problem_name(p: &FileProblem) -> &str {
    match p {
        FileProblem::Modified { name, .. }
        | FileProblem::Missing(name)
        | FileProblem::Unlisted(name) => name,
    }
}

/// Reads a node's single argument and named properties.
struct KdlNode<'a>(&'a kdl::KdlNode);

impl KdlNode<'_> {
    fn what(&self) -> String {
        format!("`{}`", self.0.name().value())
    }

    fn arg(&self) -> Result<&kdl::KdlValue, ManifestError> {
        let args: Vec<_> = self
            .0
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        match args.as_slice() {
            [one] => Ok(one.value()),
            _ => Err(ManifestError::Kdl(format!(
                "{} takes exactly one argument",
                self.what()
            ))),
        }
    }

    fn arg_str(&self) -> Result<String, ManifestError> {
        match self.arg()? {
            kdl::KdlValue::String(s) => Ok(s.clone()),
            _ => Err(ManifestError::Kdl(format!(
                "{} takes a string",
                self.what()
            ))),
        }
    }

    fn arg_int<T: TryFrom<i128>>(&self) -> Result<T, ManifestError> {
        match self.arg()? {
            kdl::KdlValue::Integer(i) => T::try_from(*i)
                .map_err(|_| ManifestError::Kdl(format!("{} is out of range", self.what()))),
            _ => Err(ManifestError::Kdl(format!(
                "{} takes an integer",
                self.what()
            ))),
        }
    }

    fn prop(&self, key: &str) -> Option<&kdl::KdlValue> {
        self.0
            .entries()
            .iter()
            .rev()
            .find(|e| e.name().is_some_and(|n| n.value() == key))
            .map(|e| e.value())
    }

    fn prop_str(&self, key: &str) -> Result<Option<String>, ManifestError> {
        match self.prop(key) {
            None => Ok(None),
            Some(kdl::KdlValue::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ManifestError::Kdl(format!(
                "{key}= on {} takes a string",
                self.what()
            ))),
        }
    }

    fn prop_bool(&self, key: &str) -> Result<Option<bool>, ManifestError> {
        match self.prop(key) {
            None => Ok(None),
            Some(kdl::KdlValue::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ManifestError::Kdl(format!(
                "{key}= on {} takes #true or #false",
                self.what()
            ))),
        }
    }

    fn prop_int<T: TryFrom<i128>>(&self, key: &str) -> Result<Option<T>, ManifestError> {
        match self.prop(key) {
            None => Ok(None),
            Some(kdl::KdlValue::Integer(i)) => T::try_from(*i).map(Some).map_err(|_| {
                ManifestError::Kdl(format!("{key}= on {} is out of range", self.what()))
            }),
            Some(_) => Err(ManifestError::Kdl(format!(
                "{key}= on {} takes an integer",
                self.what()
            ))),
        }
    }
}

/// A KDL string literal for any text.
fn kdl_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters, KDL's other newlines and the code points KDL forbids.
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200E}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b >> 20),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Memory in MiB, rounded up (the unit of `--mem`, albatross and Xen).
pub fn memory_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).max(1)
}

// ---------------------------------------------------------------------------------------
// The host mapping.

/// Where a secret's value comes from at launch. A value itself is never accepted on a
/// command line (it would show in the process list and shell history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from a file (`--secret NAME=@FILE`).
    File(PathBuf),
    /// Read from an environment variable (`--secret NAME=env:VAR`).
    Env(String),
}

/// How the host provides an image's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Network interface name → host tap (Solo5) or bridge (albatross, Xen).
    pub net: BTreeMap<String, String>,
    /// Block device name → host file (Solo5, Xen) or albatross volume name.
    pub block: BTreeMap<String, PathBuf>,
    /// Secret name → where its value comes from.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Overrides the manifest's memory (bytes).
    pub memory: Option<u64>,
    /// For Solo5 targets: the block image holding the secrets' values (see
    /// [`secrets_block_image`]), attached as `--block:secrets=FILE`.
    pub secrets_image: Option<PathBuf>,
    /// Block devices (and [`SECRETS_BLOCK`]) to attach read-only: `--block-ro:NAME=FILE`
    /// for compose's tenders and the unix platform. `compose run` fills it (see
    /// [`Mapping::set_read_only`]); `compose deploy` leaves it empty, as Solo5's own
    /// tenders have no such option.
    pub read_only: BTreeSet<String>,
}

/// One thing wrong with a [`Mapping`]. Each message names the device and the flag to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// A flag's value is not `NAME=VALUE` of the right form.
    #[error("{flag} {value:?}: expected {expected}")]
    Malformed {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// The same name was mapped twice.
    #[error("{flag} {name}=... is given twice")]
    Repeated {
        /// The flag.
        flag: &'static str,
        /// The name.
        name: String,
    },
    /// The image declares no device of that name.
    #[error("{flag} {name}=...: the image declares no {what} named `{name}`{}", declared_list(.declared))]
    Undeclared {
        /// The flag.
        flag: &'static str,
        /// The name.
        name: String,
        /// What kind of device the flag attaches.
        what: &'static str,
        /// The devices of that kind the image declares.
        declared: Vec<String>,
    },
    /// The name is declared, as another kind of device.
    #[error(
        "{flag} {name}=...: `{name}` is a {is}, not a {what}; use {use_flag} {name}={placeholder}"
    )]
    WrongKind {
        /// The flag.
        flag: &'static str,
        /// The name.
        name: String,
        /// What the flag attaches.
        what: &'static str,
        /// What the device is.
        is: &'static str,
        /// The right flag.
        use_flag: &'static str,
        /// Its value's placeholder.
        placeholder: &'static str,
    },
    /// A declared device is not mapped.
    #[error("the image needs {what} `{name}`: add {flag} {name}={placeholder}")]
    Missing {
        /// What the device is.
        what: &'static str,
        /// Its name.
        name: String,
        /// The flag that provides it.
        flag: &'static str,
        /// Its value's placeholder.
        placeholder: &'static str,
    },
    /// The memory override is unusable.
    #[error("--mem: {0}")]
    Memory(String),
    /// A value cannot be written in the output format.
    #[error("{0}")]
    Unrepresentable(String),
}

fn declared_list(declared: &[String]) -> String {
    if declared.is_empty() {
        " (it declares none)".into()
    } else {
        format!(" (it declares: {})", declared.join(", "))
    }
}

/// Every problem found with a mapping, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingErrors(pub Vec<MappingError>);

impl std::fmt::Display for MappingErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for MappingErrors {}

impl From<MappingError> for MappingErrors {
    fn from(e: MappingError) -> Self {
        MappingErrors(vec![e])
    }
}

fn flag_of(kind: &DeviceKind) -> (&'static str, &'static str) {
    match kind {
        DeviceKind::Net { .. } => ("--net", "TAP"),
        DeviceKind::Block { .. } => ("--block", "FILE"),
        DeviceKind::Secret => ("--secret", "@FILE"),
    }
}

fn split_flag(
    flag: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<(String, String), MappingError> {
    match value.split_once('=') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(MappingError::Malformed {
            flag,
            value: value.to_string(),
            expected,
        }),
    }
}

impl Mapping {
    /// Adds `--net NAME=TAP`.
    pub fn add_net(&mut self, value: &str) -> Result<(), MappingError> {
        let (name, tap) = split_flag("--net", value, "NAME=TAP")?;
        if self.net.insert(name.clone(), tap).is_some() {
            return Err(MappingError::Repeated {
                flag: "--net",
                name,
            });
        }
        Ok(())
    }

    /// Decides which block devices are attached read-only, as `compose run` does: an image
    /// from the sealed store always (`from_store`: the devices whose file the build made and
    /// the user did not map), a file the user mapped unless the manifest says the device
    /// is `writable`, and the secrets device always. Returns the writable devices whose
    /// image comes from the store (attached read-only all the same), for a note.
    pub fn set_read_only(&mut self, manifest: &Manifest, from_store: &[String]) -> Vec<String> {
        let mut notes = Vec::new();
        for d in &manifest.devices {
            if let DeviceKind::Block { writable, .. } = d.kind {
                let stored = from_store.contains(&d.name);
                if stored && writable {
                    notes.push(d.name.clone());
                }
                if stored || !writable {
                    self.read_only.insert(d.name.clone());
                }
            }
        }
        self.read_only.insert(SECRETS_BLOCK.to_string());
        notes
    }

    /// `--block:` or, for a device attached read-only, `--block-ro:`.
    pub fn block_flag(&self, name: &str) -> &'static str {
        if self.read_only.contains(name) {
            "--block-ro:"
        } else {
            "--block:"
        }
    }

    /// Adds `--block NAME=FILE`.
    pub fn add_block(&mut self, value: &str) -> Result<(), MappingError> {
        let (name, file) = split_flag("--block", value, "NAME=FILE")?;
        if self
            .block
            .insert(name.clone(), PathBuf::from(file))
            .is_some()
        {
            return Err(MappingError::Repeated {
                flag: "--block",
                name,
            });
        }
        Ok(())
    }

    /// Adds `--secret NAME=@FILE` or `--secret NAME=env:VAR`.
    pub fn add_secret(&mut self, value: &str) -> Result<(), MappingError> {
        const EXPECTED: &str = "NAME=@FILE or NAME=env:VARIABLE (a value itself is never accepted on the command line)";
        let malformed = || MappingError::Malformed {
            flag: "--secret",
            value: value.split_once('=').map_or(value, |(n, _)| n).to_string() + "=...",
            expected: EXPECTED,
        };
        let (name, source) = split_flag("--secret", value, EXPECTED).map_err(|_| malformed())?;
        let source = if let Some(file) = source.strip_prefix('@').filter(|f| !f.is_empty()) {
            SecretSource::File(PathBuf::from(file))
        } else if let Some(var) = source
            .strip_prefix("env:")
            .filter(|v| !v.is_empty() && !v.contains('='))
        {
            SecretSource::Env(var.to_string())
        } else {
            // Not echoed: it may be the secret itself.
            return Err(malformed());
        };
        if self.secrets.insert(name.clone(), source).is_some() {
            return Err(MappingError::Repeated {
                flag: "--secret",
                name,
            });
        }
        Ok(())
    }

    /// Checks the network interfaces and block devices against `manifest`: every name
    /// mapped is declared with that kind, every declared one is mapped. Secrets are not
    /// checked (they travel apart from command lines); see [`Mapping::validate`].
    pub fn validate_attachments(&self, manifest: &Manifest) -> Result<(), MappingErrors> {
        let mut errors = Vec::new();
        self.check_kind(
            manifest,
            "--net",
            "network interface",
            self.net.keys(),
            |k| matches!(k, DeviceKind::Net { .. }),
            &mut errors,
        );
        self.check_kind(
            manifest,
            "--block",
            "block device",
            self.block.keys(),
            |k| matches!(k, DeviceKind::Block { .. }),
            &mut errors,
        );
        for d in &manifest.devices {
            let mapped = match d.kind {
                DeviceKind::Net { .. } => self.net.contains_key(&d.name),
                DeviceKind::Block { .. } => self.block.contains_key(&d.name),
                DeviceKind::Secret => true,
            };
            if !mapped {
                let (flag, placeholder) = flag_of(&d.kind);
                errors.push(MappingError::Missing {
                    what: d.kind.what(),
                    name: d.name.clone(),
                    flag,
                    placeholder,
                });
            }
        }
        if self.memory == Some(0) {
            errors.push(MappingError::Memory("guest memory cannot be 0".into()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MappingErrors(errors))
        }
    }

    /// [`Mapping::validate_attachments`], and also every declared secret has a source
    /// and every secret named is declared. `compose run` calls this before starting.
    pub fn validate(&self, manifest: &Manifest) -> Result<(), MappingErrors> {
        let mut errors = self
            .validate_attachments(manifest)
            .err()
            .map_or_else(Vec::new, |e| e.0);
        self.check_kind(
            manifest,
            "--secret",
            "secret",
            self.secrets.keys(),
            |k| matches!(k, DeviceKind::Secret),
            &mut errors,
        );
        for d in manifest.devices_of("secret") {
            if !self.secrets.contains_key(&d.name) {
                errors.push(MappingError::Missing {
                    what: "secret",
                    name: d.name.clone(),
                    flag: "--secret",
                    placeholder: "@FILE",
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MappingErrors(errors))
        }
    }

    fn check_kind<'a>(
        &self,
        manifest: &Manifest,
        flag: &'static str,
        what: &'static str,
        names: impl Iterator<Item = &'a String>,
        is: impl Fn(&DeviceKind) -> bool,
        errors: &mut Vec<MappingError>,
    ) {
        for name in names {
            match manifest.device(name) {
                Some(d) if is(&d.kind) => {}
                Some(d) => {
                    let (use_flag, placeholder) = flag_of(&d.kind);
                    errors.push(MappingError::WrongKind {
                        flag,
                        name: name.clone(),
                        what,
                        is: d.kind.what(),
                        use_flag,
                        placeholder,
                    });
                }
                None => {
                    let declared = manifest
                        .devices
                        .iter()
                        .filter(|d| is(&d.kind))
                        .map(|d| d.name.clone())
                        .collect();
                    errors.push(MappingError::Undeclared {
                        flag,
                        name: name.clone(),
                        what,
                        declared,
                    });
                }
            }
        }
    }

    fn memory_of(&self, m: &Manifest) -> u64 {
        self.memory.unwrap_or(m.memory)
    }
}

fn utf8_path(p: &Path) -> Result<&str, MappingError> {
    p.to_str().ok_or_else(|| {
        MappingError::Unrepresentable(format!("{}: paths must be UTF-8 here", p.display()))
    })
}

// ---------------------------------------------------------------------------------------
// Renderers.

/// The arguments of `solo5-hvt` / `solo5-spt` (after the program name), as those tenders
/// take them: `--mem=MiB` (rounded up), `--net:NAME=TAP` (and `--net-mac:NAME=MAC` for a
/// fixed MAC) and `--block:NAME=FILE` in device order, `--block:secrets=FILE` when the
/// mapping has a secrets image and the manifest declares secrets, then `--`, the image
/// and the boot arguments. Refuses a mapping that does not fit the manifest.
pub fn solo5_args(
    manifest: &Manifest,
    mapping: &Mapping,
    image: &Path,
    boot_args: &[String],
) -> Result<Vec<String>, MappingErrors> {
    mapping.validate_attachments(manifest)?;
    let mut out = vec![format!("--mem={}", memory_mib(mapping.memory_of(manifest)))];
    for d in &manifest.devices {
        match &d.kind {
            DeviceKind::Net { mac } => {
                out.push(format!("--net:{}={}", d.name, mapping.net[&d.name]));
                if let Some(mac) = mac {
                    out.push(format!("--net-mac:{}={mac}", d.name));
                }
            }
            DeviceKind::Block { .. } => out.push(format!(
                "{}{}={}",
                mapping.block_flag(&d.name),
                d.name,
                utf8_path(&mapping.block[&d.name])?
            )),
            DeviceKind::Secret => {}
        }
    }
    if let Some(secrets) = mapping
        .secrets_image
        .as_deref()
        .filter(|_| manifest.devices_of("secret").next().is_some())
    {
        out.push(format!(
            "{}{SECRETS_BLOCK}={}",
            mapping.block_flag(SECRETS_BLOCK),
            utf8_path(secrets)?
        ));
    }
    out.push("--".into());
    out.push(utf8_path(image)?.to_string());
    out.extend(boot_args.iter().cloned());
    Ok(out)
}

/// Checks boot arguments against the ones the image declares, exactly as the image will
/// parse them (`--NAME=VALUE`, each declared, each value of its declared type, every
/// required one given), so that a launch line is refused before it reaches a host.
pub fn check_boot_args(manifest: &Manifest, args: &[String]) -> Result<(), String> {
    use compose_devices::bootargs::{BootArgs, Error, Kind, Spec};
    const KINDS: &[Kind] = &[
        Kind::Str,
        Kind::Bool,
        Kind::U16,
        Kind::U32,
        Kind::U64,
        Kind::I64,
        Kind::Ipv4,
        Kind::Ipv4Cidr,
    ];
    // The parser takes static specs; a CLI process checks once, so leaking them is fine.
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let mut specs = Vec::new();
    for b in &manifest.bootargs {
        // As in the glue: other types (paths, choices) are read as strings.
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| k.name() == b.ty)
            .unwrap_or(Kind::Str);
        specs.push(Spec {
            name: leak(&b.name),
            kind,
            default: b.default.as_deref().map(leak),
            doc: leak(&b.doc),
        });
    }
    match BootArgs::parse(&specs, args.iter().map(String::as_str)) {
        Ok(_) => Ok(()),
        // `--help` is the image's to answer.
        Err(Error::Help(_)) => Ok(()),
        Err(e) => {
            let declared: Vec<String> = manifest
                .bootargs
                .iter()
                .map(|b| format!("--{}=<{}>", b.name, b.ty))
                .collect();
            Err(if declared.is_empty() {
                format!("{e} (the image declares no boot arguments)")
            } else {
                format!("{e} (the image declares {})", declared.join(" "))
            })
        }
    }
}

/// Quotes a word for a POSIX shell (unchanged when it needs no quoting).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// An `albatross-client create` command line (shell-quoted, one line):
/// `albatross-client create --mem=MiB --net=NAME:BRIDGE... --block=NAME:VOLUME... NAME IMAGE
/// --arg=ARG...`.
///
/// Assumptions: albatross creates the tap itself and attaches it to the bridge, so the
/// mapping's `--net` value is taken as a bridge name; albatross manages block devices as
/// named volumes (`albatross-client create-block`), so the mapping's `--block` value is
/// used verbatim as the volume name. A fixed MAC is not passed (albatross assigns MACs).
/// Secrets are not part of the command; albatross has no channel for them.
pub fn albatross_create(
    manifest: &Manifest,
    mapping: &Mapping,
    image: &Path,
    boot_args: &[String],
) -> Result<String, MappingErrors> {
    mapping.validate_attachments(manifest)?;
    let mut words = vec![
        "albatross-client".to_string(),
        "create".into(),
        format!("--mem={}", memory_mib(mapping.memory_of(manifest))),
    ];
    for d in &manifest.devices {
        match d.kind {
            DeviceKind::Net { .. } => {
                words.push(format!("--net={}:{}", d.name, mapping.net[&d.name]))
            }
            DeviceKind::Block { .. } => words.push(format!(
                "--block={}:{}",
                d.name,
                utf8_path(&mapping.block[&d.name])?
            )),
            DeviceKind::Secret => {}
        }
    }
    words.push(manifest.name.clone());
    words.push(utf8_path(image)?.to_string());
    words.extend(boot_args.iter().map(|a| format!("--arg={a}")));
    Ok(words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" "))
}

/// An xl string literal, refusing what xl cannot hold.
fn xl_str(s: &str, quote: char) -> Result<String, MappingError> {
    if s.chars().any(|c| c.is_control() || c == quote || c == '\\') {
        return Err(MappingError::Unrepresentable(format!(
            "{s:?} cannot be written in an xl file: it contains a quote, a backslash or a control character"
        )));
    }
    Ok(format!("{quote}{s}{quote}"))
}

/// A Xen `xl` domain configuration for the image as a PVH guest: `name`, `type = "pvh"`,
/// `kernel`, `memory` (MiB, rounded up), one `vif` per network interface in device order
/// (`bridge=` the mapped value, `mac=` when fixed), one raw `disk` per block device
/// (`xvda`, `xvdb`... in device order; `target=` last, as xl requires), then the secrets
/// disk (read-only) when the mapping has a secrets image and the manifest declares
/// secrets, and `cmdline` = the boot arguments joined by spaces (the PVH start info's
/// command line). Comments say which device is which.
pub fn xen_xl(
    manifest: &Manifest,
    mapping: &Mapping,
    image: &Path,
    boot_args: &[String],
) -> Result<String, MappingErrors> {
    mapping.validate_attachments(manifest)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Xen domain of {} ({}), generated by compose from its deployment manifest.",
        manifest.name, manifest.target
    );
    let _ = writeln!(s, "name = {}", xl_str(&manifest.name, '"')?);
    let _ = writeln!(s, "type = \"pvh\"");
    let _ = writeln!(s, "kernel = {}", xl_str(utf8_path(image)?, '"')?);
    let _ = writeln!(s, "memory = {}", memory_mib(mapping.memory_of(manifest)));
    let mut vifs = Vec::new();
    let mut disks = Vec::new();
    for d in &manifest.devices {
        match &d.kind {
            DeviceKind::Net { mac } => {
                let bridge = &mapping.net[&d.name];
                if bridge.contains([',', '=']) {
                    return Err(MappingError::Unrepresentable(format!(
                        "--net {}={bridge}: a bridge name cannot contain `,` or `=`",
                        d.name
                    ))
                    .into());
                }
                let mut spec = format!("bridge={bridge}");
                if let Some(mac) = mac {
                    let _ = write!(spec, ",mac={mac}");
                }
                vifs.push((
                    format!("vif {}: network interface {}", vifs.len(), d.name),
                    xl_str(&spec, '\'')?,
                ));
            }
            DeviceKind::Block { size, writable, .. } => {
                let vdev = format!("xvd{}", disk_letters(disks.len()));
                // A device the spec does not declare writable is attached read-only.
                let access = if *writable { "rw" } else { "ro" };
                let spec = format!(
                    "format=raw,vdev={vdev},access={access},target={}",
                    utf8_path(&mapping.block[&d.name])?
                );
                let size = size.map_or(String::new(), |b| format!(", expected size {b} bytes"));
                disks.push((
                    format!("{vdev}: block device {}{size}", d.name),
                    xl_str(&spec, '\'')?,
                ));
            }
            DeviceKind::Secret => {}
        }
    }
    // The secrets travel on a disk of their own, after the block devices (the position
    // the image's manifest gives them); the .xl names the file, never the values.
    if let Some(secrets) = mapping
        .secrets_image
        .as_deref()
        .filter(|_| manifest.devices_of("secret").next().is_some())
    {
        let vdev = format!("xvd{}", disk_letters(disks.len()));
        let spec = format!(
            "format=raw,vdev={vdev},access=ro,target={}",
            utf8_path(secrets)?
        );
        disks.push((
            format!("{vdev}: the secrets block device"),
            xl_str(&spec, '\'')?,
        ));
    }
    for (key, items) in [("vif", vifs), ("disk", disks)] {
        if items.is_empty() {
            continue;
        }
        for (comment, _) in &items {
            let _ = writeln!(s, "# {comment}");
        }
        let list: Vec<&str> = items.iter().map(|(_, v)| v.as_str()).collect();
        let _ = writeln!(s, "{key} = [ {} ]", list.join(", "));
    }
    // A PVH kernel's command line (hvm_start_info.cmdline_paddr): the boot arguments.
    let _ = writeln!(s, "cmdline = {}", xl_str(&boot_args.join(" "), '"')?);
    Ok(s)
}

/// `a`, `b`, ... `z`, `aa`, `ab`...: the letters of the n-th Xen virtual disk.
fn disk_letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Secrets as a block device.

/// The sector size of a secrets image.
pub const SECRETS_SECTOR: usize = 512;
/// The first eight bytes of a secrets image.
pub const SECRETS_MAGIC: &[u8; 8] = b"CMPSECR1";
const TABLE_ENTRY: usize = 128;
const NAME_FIELD: usize = 64;

/// Why secrets cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsImageError {
    /// A name is empty, longer than 63 bytes, holds a NUL, or is repeated.
    #[error("secret name {0:?} is empty, longer than 63 bytes, contains NUL or is repeated")]
    BadName(String),
    /// The image is not in the format.
    #[error("not a secrets image: {0}")]
    Corrupt(&'static str),
}

/// Encodes secrets as a block device image, all little-endian, in 512-byte sectors:
///
/// * sector 0, the header: magic `CMPSECR1` (8 bytes), version `u32` = 1, count `u32`,
///   total size in sectors `u64`, zeros;
/// * from sector 1, the table: `count` entries of 128 bytes, sorted by name: the name
///   (64 bytes, NUL-padded, at most 63), the value's byte offset from the start of the
///   image `u64` (a multiple of 512), its length `u64`, zeros; padded to a whole sector;
/// * then each value, starting on a sector boundary, zero-padded to a whole sector.
///
/// The same secrets give the same image. The image holds the values: the launcher
/// writes it to a private temporary file, never to the store or a bundle.
pub fn secrets_block_image(values: &[(&str, &[u8])]) -> Result<Vec<u8>, SecretsImageError> {
    let mut sorted: Vec<&(&str, &[u8])> = values.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, _)) in sorted.iter().enumerate() {
        if name.is_empty()
            || name.len() >= NAME_FIELD
            || name.contains('\0')
            || (i > 0 && sorted[i - 1].0 == *name)
        {
            return Err(SecretsImageError::BadName(name.to_string()));
        }
    }
    let pad = |n: usize| n.div_ceil(SECRETS_SECTOR) * SECRETS_SECTOR;
    let table_len = pad(sorted.len() * TABLE_ENTRY);
    let mut offset = SECRETS_SECTOR + table_len;
    let mut out = vec![0u8; offset];
    for (i, (name, value)) in sorted.iter().enumerate() {
        let e = SECRETS_SECTOR + i * TABLE_ENTRY;
        out[e..e + name.len()].copy_from_slice(name.as_bytes());
        out[e + NAME_FIELD..e + NAME_FIELD + 8].copy_from_slice(&(offset as u64).to_le_bytes());
        out[e + NAME_FIELD + 8..e + NAME_FIELD + 16]
            .copy_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        out.resize(pad(out.len()), 0);
        offset = out.len();
    }
    out[..8].copy_from_slice(SECRETS_MAGIC);
    out[8..12].copy_from_slice(&1u32.to_le_bytes());
    out[12..16].copy_from_slice(&(sorted.len() as u32).to_le_bytes());
    let sectors = (out.len() / SECRETS_SECTOR) as u64;
    out[16..24].copy_from_slice(&sectors.to_le_bytes());
    Ok(out)
}

/// Decodes a [`secrets_block_image`], checking every bound.
pub fn parse_secrets_block(image: &[u8]) -> Result<Vec<(String, Vec<u8>)>, SecretsImageError> {
    let corrupt = SecretsImageError::Corrupt;
    let u64_at = |at: usize| {
        image
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    if image.get(..8) != Some(SECRETS_MAGIC.as_slice()) {
        return Err(corrupt("bad magic"));
    }
    if u32_at(8) != Some(1) {
        return Err(corrupt("unknown version"));
    }
    let count = u32_at(12).ok_or(corrupt("short header"))? as usize;
    if count > image.len() / TABLE_ENTRY {
        return Err(corrupt("more entries than the image can hold"));
    }
    let sectors = u64_at(16).ok_or(corrupt("short header"))?;
    if sectors.checked_mul(SECRETS_SECTOR as u64) != Some(image.len() as u64) {
        return Err(corrupt("size does not match the header"));
    }
    let mut out = Vec::with_capacity(count.min(image.len() / TABLE_ENTRY));
    for i in 0..count {
        let e = i
            .checked_mul(TABLE_ENTRY)
            .and_then(|x| x.checked_add(SECRETS_SECTOR))
            .ok_or(corrupt("table out of range"))?;
        let name = image
            .get(e..e + NAME_FIELD)
            .ok_or(corrupt("table out of range"))?;
        let len = name
            .iter()
            .position(|b| *b == 0)
            .ok_or(corrupt("unterminated name"))?;
        let name = std::str::from_utf8(&name[..len])
            .map_err(|_| corrupt("name is not UTF-8"))?
            .to_string();
        let offset = u64_at(e + NAME_FIELD).ok_or(corrupt("table out of range"))?;
        let length = u64_at(e + NAME_FIELD + 8).ok_or(corrupt("table out of range"))?;
        let table_end = (SECRETS_SECTOR
            + (count * TABLE_ENTRY).div_ceil(SECRETS_SECTOR) * SECRETS_SECTOR)
            as u64;
        if offset % SECRETS_SECTOR as u64 != 0 || offset < table_end {
            return Err(corrupt("value not on a sector after the table"));
        }
        let end = offset
            .checked_add(length)
            .filter(|end| *end <= image.len() as u64)
            .ok_or(corrupt("value out of range"))?;
        out.push((name, image[offset as usize..end as usize].to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn sample() -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            name: "web".into(),
            target: "hvt".into(),
            memory: 96 * MIB + 1,
            image: "web.hvt".into(),
            bootargs: vec![
                BootArg {
                    name: "port".into(),
                    ty: "u16".into(),
                    default: Some("8080".into()),
                    doc: "the port to \"listen\" on\\".into(),
                },
                BootArg {
                    name: "greeting".into(),
                    ty: "string".into(),
                    default: None,
                    doc: "what to say\nfirst; ünïcode ok\u{202e}\u{2028}\u{0}\u{85}\t".into(),
                },
            ],
            devices: vec![
                Device {
                    name: "service".into(),
                    kind: DeviceKind::Net {
                        mac: Some("02:00:00:00:00:01".into()),
                    },
                },
                Device {
                    name: "storage".into(),
                    kind: DeviceKind::Block {
                        size: Some(1 << 30),
                        sector_size: Some(4096),
                        writable: true,
                    },
                },
                Device {
                    name: "admin".into(),
                    kind: DeviceKind::Net { mac: None },
                },
                Device {
                    name: "logs".into(),
                    kind: DeviceKind::Block {
                        size: None,
                        sector_size: None,
                        writable: false,
                    },
                },
                Device {
                    name: "api-token".into(),
                    kind: DeviceKind::Secret,
                },
            ],
            files: [
                ("web.hvt", sha('a')),
                ("build-info.json", sha('b')),
                ("sbom.spdx.json", sha('c')),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b))
            .collect(),
        }
    }

    fn mapping() -> Mapping {
        let mut m = Mapping::default();
        m.add_net("service=tap0").unwrap();
        m.add_net("admin=tap1").unwrap();
        m.add_block("storage=/srv/disk.img").unwrap();
        m.add_block("logs=logs.img").unwrap();
        m.add_secret("api-token=@/run/token").unwrap();
        m
    }

    #[test]
    fn json_round_trip_and_shape() {
        let m = sample();
        m.validate().unwrap();
        let json = m.to_json();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        assert_eq!(
            json,
            Manifest::from_json(&json).unwrap().to_json(),
            "stable bytes"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "schema", "name", "target", "memory", "image", "bootargs", "devices", "files"
            ]
        );
        assert_eq!(
            v["devices"][1],
            serde_json::json!({"name": "storage", "kind": "block", "size": 1u64 << 30, "sector-size": 4096, "writable": true})
        );
        // Not writable is the default, and is left out.
        assert_eq!(
            v["devices"][3],
            serde_json::json!({"name": "logs", "kind": "block"})
        );
        assert_eq!(
            v["devices"][4],
            serde_json::json!({"name": "api-token", "kind": "secret"})
        );
        assert_eq!(v["bootargs"][0]["type"], "u16");
        assert!(v["bootargs"][1].get("default").is_none());
        assert_eq!(m.image_sha256(), Some(sha('a').as_str()));
        // Wrong schema, missing image hash, bad names are refused with a reason.
        let mut bad = m.clone();
        bad.schema = "compose.manifest/v9".into();
        assert!(
            Manifest::from_json(&bad.to_json())
                .unwrap_err()
                .to_string()
                .contains("compose.manifest/v9")
        );
        let mut bad = m.clone();
        bad.files.remove("web.hvt");
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("not listed")
        );
        let mut bad = m.clone();
        bad.devices[0].name = "ser-vice".into();
        assert!(bad.validate().is_err());
        let mut bad = m.clone();
        bad.files.insert(JSON_FILE.into(), sha('d'));
        assert!(bad.validate().is_err());
        assert!(matches!(
            Manifest::from_json("{"),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn kdl_round_trip() {
        let m = sample();
        let text = m.to_kdl();
        assert!(
            text.contains("memory 100663297 // 100663297 bytes"),
            "{text}"
        );
        assert!(
            text.contains("net \"service\" mac=\"02:00:00:00:00:01\"\n"),
            "{text}"
        );
        assert!(
            text.contains("block \"storage\" size=1073741824 sector-size=4096 writable=#true\n"),
            "{text}"
        );
        assert!(text.contains("block \"logs\"\n"), "{text}");
        // writable= must be a boolean.
        let bad = text.replace("writable=#true", "writable=\"yes\"");
        assert!(
            Manifest::from_kdl(&bad)
                .unwrap_err()
                .to_string()
                .contains("writable= on `block` takes #true or #false")
        );
        assert!(text.contains("secret \"api-token\"\n"), "{text}");
        // Parsed by the kdl crate itself, then back into the same manifest.
        kdl::KdlDocument::parse(&text).unwrap();
        assert_eq!(Manifest::from_kdl(&text).unwrap(), m);
        let mut small = m.clone();
        small.bootargs.clear();
        small.devices.clear();
        small.memory = 64 * MIB;
        assert!(small.to_kdl().contains("memory 67108864 // 64 MiB"));
        assert_eq!(Manifest::from_kdl(&small.to_kdl()).unwrap(), small);
        // Errors name the problem.
        assert!(
            Manifest::from_kdl("schema \"compose.manifest/v1\"")
                .unwrap_err()
                .to_string()
                .contains("no `name` node")
        );
        assert!(
            Manifest::from_kdl("memory \"big\"")
                .unwrap_err()
                .to_string()
                .contains("integer")
        );
        assert!(matches!(
            Manifest::from_kdl("{{{"),
            Err(ManifestError::Kdl(_))
        ));
    }

    #[test]
    fn file_verification_names_the_file() {
        let m = sample();
        let mut actual = m.files.clone();
        assert_eq!(m.verify_files(&actual), Ok(()));
        actual.insert("sbom.spdx.json".into(), sha('e'));
        actual.remove("build-info.json");
        actual.insert("extra.bin".into(), sha('f'));
        let problems = m.verify_files(&actual).unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3);
        assert_eq!(
            text[0],
            "build-info.json is listed in the manifest but missing"
        );
        assert_eq!(text[1], "extra.bin is not listed in the manifest");
        assert!(
            text[2].starts_with("sbom.spdx.json has been modified"),
            "{}",
            text[2]
        );
    }

    #[test]
    fn mapping_errors_name_device_and_flag() {
        let m = sample();
        mapping().validate(&m).unwrap();
        let mut map = mapping();
        map.net.remove("admin");
        map.add_block("extra=x.img").unwrap();
        map.add_net("storage=tap9").unwrap();
        map.secrets.clear();
        map.add_secret("other=env:OTHER").unwrap();
        let errs = map.validate(&m).unwrap_err();
        let text = errs.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines.contains(&"--net storage=...: `storage` is a block device, not a network interface; use --block storage=FILE"), "{text}");
        assert!(lines.contains(&"--block extra=...: the image declares no block device named `extra` (it declares: storage, logs)"), "{text}");
        assert!(
            lines.contains(&"the image needs network interface `admin`: add --net admin=TAP"),
            "{text}"
        );
        assert!(lines.contains(&"--secret other=...: the image declares no secret named `other` (it declares: api-token)"), "{text}");
        assert!(
            lines.contains(&"the image needs secret `api-token`: add --secret api-token=@FILE"),
            "{text}"
        );
        // Attachments alone ignore secrets.
        let mut map = mapping();
        map.secrets.clear();
        map.validate_attachments(&m).unwrap();
        assert!(map.validate(&m).is_err());
        // Flag syntax.
        let mut map = Mapping::default();
        assert!(matches!(
            map.add_net("service"),
            Err(MappingError::Malformed { .. })
        ));
        map.add_net("service=tap0").unwrap();
        assert_eq!(
            map.add_net("service=tap1").unwrap_err().to_string(),
            "--net service=... is given twice"
        );
        let err = map.add_secret("token=hunter2").unwrap_err().to_string();
        assert!(
            !err.contains("hunter2"),
            "the value must not be echoed: {err}"
        );
        assert!(err.contains("@FILE"), "{err}");
        map.add_secret("token=env:TOKEN").unwrap();
        assert_eq!(map.secrets["token"], SecretSource::Env("TOKEN".into()));
        assert!(map.add_secret("t2=@").is_err());
        let mut map = mapping();
        map.memory = Some(0);
        assert!(map.validate(&m).is_err());
    }

    #[test]
    fn solo5_command_line() {
        let m = sample();
        let mut map = mapping();
        let args = solo5_args(
            &m,
            &map,
            Path::new("/store/x/web.hvt"),
            &["--port=80".into(), "--greeting=hi".into()],
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "--mem=97",
                "--net:service=tap0",
                "--net-mac:service=02:00:00:00:00:01",
                "--block:storage=/srv/disk.img",
                "--net:admin=tap1",
                "--block:logs=logs.img",
                "--",
                "/store/x/web.hvt",
                "--port=80",
                "--greeting=hi"
            ]
        );
        map.memory = Some(2 * MIB);
        map.secrets_image = Some(PathBuf::from("/tmp/s.img"));
        let args = solo5_args(&m, &map, Path::new("web.hvt"), &[]).unwrap();
        assert_eq!(args[0], "--mem=2");
        assert!(args.contains(&"--block:secrets=/tmp/s.img".to_string()));
        assert!(
            !args.iter().any(|a| a.contains("/run/token")),
            "secret sources stay off the command line"
        );
        // As compose run attaches them: the store's image read-only even though the spec
        // says writable, the user's file read-only as the spec does not, the secrets too.
        let mut run_map = map.clone();
        let notes = run_map.set_read_only(&m, &["storage".to_string()]);
        assert_eq!(notes, ["storage"]);
        let args = solo5_args(&m, &run_map, Path::new("web.hvt"), &[]).unwrap();
        for flag in [
            "--block-ro:storage=/srv/disk.img",
            "--block-ro:logs=logs.img",
            "--block-ro:secrets=/tmp/s.img",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag}: {args:?}");
        }
        // A user's file for a writable device is attached read-write.
        let mut run_map = map.clone();
        assert!(run_map.set_read_only(&m, &[]).is_empty());
        let args = solo5_args(&m, &run_map, Path::new("web.hvt"), &[]).unwrap();
        assert!(args.contains(&"--block:storage=/srv/disk.img".to_string()));
        assert!(args.contains(&"--block-ro:logs=logs.img".to_string()));
        map.block.remove("logs");
        let err = solo5_args(&m, &map, Path::new("web.hvt"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image needs block device `logs`: add --block logs=FILE"
        );
        assert_eq!(memory_mib(1), 1);
        assert_eq!(memory_mib(MIB), 1);
        assert_eq!(memory_mib(MIB + 1), 2);
    }

    #[test]
    fn albatross_command() {
        let m = sample();
        let mut map = mapping();
        map.net.insert("admin".into(), "br-admin".into());
        let cmd = albatross_create(
            &m,
            &map,
            Path::new("/images/web.hvt"),
            &["--port=80".into(), "--greeting=hello world".into()],
        )
        .unwrap();
        assert_eq!(
            cmd,
            "albatross-client create --mem=97 --net=service:tap0 --block=storage:/srv/disk.img --net=admin:br-admin --block=logs:logs.img web /images/web.hvt --arg=--port=80 '--arg=--greeting=hello world'"
        );
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn xen_config() {
        let m = sample();
        let mut map = mapping();
        map.net.insert("service".into(), "xenbr0".into());
        map.net.insert("admin".into(), "xenbr1".into());
        let xl = xen_xl(
            &m,
            &map,
            Path::new("/images/web.xen"),
            &["--port=80".into(), "--greeting=hi".into()],
        )
        .unwrap();
        let expected = "\
# Xen domain of web (hvt), generated by compose from its deployment manifest.
name = \"web\"
type = \"pvh\"
kernel = \"/images/web.xen\"
memory = 97
# vif 0: network interface service
# vif 1: network interface admin
vif = [ 'bridge=xenbr0,mac=02:00:00:00:00:01', 'bridge=xenbr1' ]
# xvda: block device storage, expected size 1073741824 bytes
# xvdb: block device logs
disk = [ 'format=raw,vdev=xvda,access=rw,target=/srv/disk.img', 'format=raw,vdev=xvdb,access=ro,target=logs.img' ]
cmdline = \"--port=80 --greeting=hi\"
";
        assert_eq!(xl, expected);
        assert!(xen_xl(&m, &map, Path::new("/i"), &["--x=\"q\"".into()]).is_err());
        map.net.insert("admin".into(), "br,evil".into());
        assert!(xen_xl(&m, &map, Path::new("/i"), &[]).is_err());
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(27), "ab");
    }

    #[test]
    fn secrets_image_round_trip() {
        let img = secrets_block_image(&[
            ("tls-key", b"-----BEGIN KEY-----\nabc"),
            ("api-token", b"t0k3n"),
            ("empty", b""),
        ])
        .unwrap();
        assert_eq!(img.len() % SECRETS_SECTOR, 0);
        assert_eq!(&img[..8], SECRETS_MAGIC);
        // Header, one table sector, then two one-sector values (the empty one takes none).
        assert_eq!(img.len(), 4 * SECRETS_SECTOR);
        let parsed = parse_secrets_block(&img).unwrap();
        assert_eq!(
            parsed,
            vec![
                ("api-token".into(), b"t0k3n".to_vec()),
                ("empty".into(), vec![]),
                ("tls-key".into(), b"-----BEGIN KEY-----\nabc".to_vec())
            ]
        );
        // Order-independent.
        assert_eq!(
            secrets_block_image(&[
                ("empty", b""),
                ("api-token", b"t0k3n"),
                ("tls-key", b"-----BEGIN KEY-----\nabc")
            ])
            .unwrap(),
            img
        );
        assert!(secrets_block_image(&[("a", b"1"), ("a", b"2")]).is_err());
        assert!(secrets_block_image(&[(&"x".repeat(64), b"1")]).is_err());
        assert_eq!(
            parse_secrets_block(&secrets_block_image(&[]).unwrap()).unwrap(),
            vec![]
        );
        // Corruption is detected, never a panic.
        assert!(parse_secrets_block(&img[..img.len() - 1]).is_err());
        assert!(parse_secrets_block(b"").is_err());
        let mut bad = img.clone();
        bad[SECRETS_SECTOR + NAME_FIELD + 15] = 0xff;
        assert!(parse_secrets_block(&bad).is_err());
        let mut bad = img.clone();
        bad[SECRETS_SECTOR + NAME_FIELD] = 0x01;
        assert!(parse_secrets_block(&bad).is_err());
        let mut bad = img.clone();
        bad[12] = 0xff;
        assert!(parse_secrets_block(&bad).is_err());
    }
}
