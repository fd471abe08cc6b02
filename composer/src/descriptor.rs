//! Device descriptors: what each device kind provides and requires, its properties, how
//! the glue constructs it, and what it needs from the host. Descriptors are KDL files that
//! live with the device code under `devices/` (`*.device.kdl`); the composer embeds them at
//! build time and knows no device of its own.
//!
//! ```kdl
//! device netif {
//!     summary "A network interface"
//!     provides netif
//!     property mac type=mac doc="fixed MAC address"
//!     host net mac=mac
//!     impl platform construct="platform::Netif::new({{ name }})"
//! }
//! ```
//!
//! A descriptor names no target. Its constructor is written once: `impl platform` for a
//! device the platform crate implements (every target whose platform declares the kind,
//! see [`crate::target::Target::implements`]), or `impl crate=NAME path=DIR` for a portable
//! device built on other devices (every target). A `target NAME crate=... path=...
//! construct=...` line overrides the constructor on one target.
//!
//! Capabilities replace matching kind names in the generic stages:
//! `host net mac=PROPERTY`, `host block sector-size=PROPERTY|N size=PROPERTY|N writable=PROPERTY` and
//! `host secret` say the launcher attaches the device (each may be conditional,
//! `when="PROPERTY=VALUE"`); `build pack-assets dir=P include=P exclude=P compress=P
//! image-when="PROPERTY=VALUE"` is a build step whose typed inputs are properties.
//!
//! A `property` may add constraints on its value beyond its type, each checked where the
//! spec gives the value (a located diagnostic) and on the descriptor's own default:
//! `min=N` (an integer at least N), `power-of-two=#true`, and for a `mac`, `unicast=#true`
//! (not a multicast or the broadcast address).

use crate::types::{Constraint, Ty, Value};
use kdl::{KdlDocument, KdlNode, KdlValue};
use serde::Serialize;

/// A device kind.
#[derive(Debug, Clone, Serialize)]
pub struct Descriptor {
    /// The node name in specs.
    pub kind: String,
    /// One line for `describe` and the docs.
    pub summary: String,
    /// Interfaces it provides.
    pub provides: Vec<String>,
    /// Typed slots that reference other devices.
    pub requires: Vec<Slot>,
    /// Typed properties.
    pub properties: Vec<PropSpec>,
    /// Pairs of properties that may not both be given.
    pub exclusive: Vec<(String, String)>,
    /// The name of a device of this kind declared without one, or created as a default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_name: Option<String>,
    /// Names must be alphanumeric (they go into a Solo5 manifest).
    pub alnum_name: bool,
    /// Build steps the composer runs before compiling.
    pub build: Vec<BuildStep>,
    /// What the host provides for it, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    /// The constructor, written once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imp: Option<Impl>,
    /// How to build it, per target: [`Descriptor::imp`] expanded over the targets that
    /// can build it, with per-target overrides.
    pub targets: Vec<TargetImpl>,
    /// The descriptor file, relative to the compose root.
    pub file: String,
}

/// A reference to another device.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    /// The property that names the device.
    pub name: String,
    /// The interface the device must provide.
    pub interface: String,
    /// The kind to create when no device provides the interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Documentation.
    pub doc: String,
}

/// A typed property.
#[derive(Debug, Clone, Serialize)]
pub struct PropSpec {
    /// Its key.
    pub name: String,
    /// Its type.
    #[serde(serialize_with = "ser_display")]
    pub ty: Ty,
    /// The default; with neither a default nor `required`, the property is optional (`Option` in Rust).
    pub default: Option<Value>,
    /// Whether the spec must give it.
    pub required: bool,
    /// Rules on the value beyond its type.
    #[serde(skip)]
    pub constraints: Vec<Constraint>,
    /// Documentation.
    pub doc: String,
}

/// How a device is built on one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetImpl {
    /// The target name.
    pub target: String,
    /// The crate that implements it.
    #[serde(rename = "crate")]
    pub krate: String,
    /// The crate's directory, relative to the compose root.
    pub path: String,
    /// A template of the Rust expression that constructs it.
    pub construct: String,
}

/// Where a constructor comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImplSource {
    /// The target's platform crate (the device kind is part of the platform contract).
    Platform,
    /// A portable crate of the compose tree.
    Crate {
        /// The cargo package.
        #[serde(rename = "crate")]
        krate: String,
        /// Its directory, relative to the compose root.
        path: String,
    },
}

/// A constructor written once for every target.
#[derive(Debug, Clone, Serialize)]
pub struct Impl {
    /// Where it comes from.
    pub source: ImplSource,
    /// A template of the Rust expression that constructs it.
    pub construct: String,
}

/// `PROPERTY=VALUE`: holds when the device's property has that value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The property.
    pub property: String,
    /// The value, as text.
    pub value: String,
}

/// An integer input: fixed, or a property's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntSource {
    /// A number.
    Fixed(u64),
    /// The value of an integer property.
    Property(String),
}

/// What the host attaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostCap {
    /// A network interface; `mac` names a `mac` property.
    Net {
        /// The property holding a fixed MAC address.
        mac: Option<String>,
    },
    /// A block device.
    Block {
        /// Bytes per sector.
        sector_size: Option<IntSource>,
        /// Size in bytes, when fixed at build time.
        size: Option<IntSource>,
        /// The bool property that lets the image write to it; absent: never writable.
        writable: Option<String>,
    },
    /// A secret supplied at launch.
    Secret,
}

/// A host capability, maybe conditional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// What it is.
    pub cap: HostCap,
    /// Only when this holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// A build step, with its inputs named as properties of the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildStep {
    /// Pack a directory into an asset archive (embedded in the image, or shipped as a
    /// block image of its own when `image_when` holds).
    PackAssets {
        /// The `path` property naming the directory.
        dir: String,
        /// The `string` property with include globs.
        include: Option<String>,
        /// The `string` property with exclude globs.
        exclude: Option<String>,
        /// The `bool` property saying whether to store compressed variants.
        compress: Option<String>,
        /// When the archive ships as a block image rather than inside the image.
        image_when: Option<Condition>,
    },
}

fn ser_display<S: serde::Serializer>(t: &Ty, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

impl Descriptor {
    /// The name a device of this kind gets when the spec gives none.
    pub fn default_name(&self) -> &str {
        self.default_name.as_deref().unwrap_or(&self.kind)
    }

    /// The implementation for `target`, if the kind supports it.
    pub fn for_target(&self, target: &str) -> Option<&TargetImpl> {
        self.targets.iter().find(|t| t.target == target)
    }

    /// The slot named `name`.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.requires.iter().find(|s| s.name == name)
    }
}

/// Every known device kind.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    descriptors: Vec<Descriptor>,
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
pub use embedded::TEMPLATES;

impl Registry {
    /// The descriptors compiled into this compose.
    pub fn builtin() -> Result<Registry, String> {
        Registry::from_sources(embedded::DESCRIPTORS.iter().copied())
    }

    /// Descriptors parsed from (file name, KDL text) pairs.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Registry, String> {
        let mut descriptors: Vec<Descriptor> = Vec::new();
        for (file, text) in sources {
            let doc = KdlDocument::parse(text).map_err(|e| format!("{file}: {e}"))?;
            for node in doc.nodes() {
                let d = parse_descriptor(node, file).map_err(|e| format!("{file}: {e}"))?;
                if descriptors.iter().any(|x| x.kind == d.kind) {
                    return Err(format!(
                        "{file}: device kind `{}` is described twice",
                        d.kind
                    ));
                }
                descriptors.push(d);
            }
        }
        descriptors.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(Registry { descriptors })
    }

    /// The descriptor of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.kind == kind)
    }

    /// Every kind name.
    pub fn kinds(&self) -> impl Iterator<Item = &str> + Clone {
        self.descriptors.iter().map(|d| d.kind.as_str())
    }

    /// Every descriptor.
    pub fn all(&self) -> &[Descriptor] {
        &self.descriptors
    }

    /// Kinds that provide `interface`.
    pub fn providers_of<'a>(
        &'a self,
        interface: &'a str,
    ) -> impl Iterator<Item = &'a Descriptor> + 'a {
        self.descriptors
            .iter()
            .filter(move |d| d.provides.iter().any(|p| p == interface))
    }
}

fn arg_str(node: &KdlNode, i: usize) -> Result<String, String> {
    match node
        .entries()
        .iter()
        .filter(|e| e.name().is_none())
        .nth(i)
        .map(|e| e.value())
    {
        Some(KdlValue::String(s)) => Ok(s.clone()),
        _ => Err(format!(
            "`{}` needs argument {}",
            node.name().value(),
            i + 1
        )),
    }
}

fn prop<'a>(node: &'a KdlNode, key: &str) -> Option<&'a KdlValue> {
    node.entries()
        .iter()
        .find(|e| e.name().is_some_and(|n| n.value() == key))
        .map(|e| e.value())
}

fn prop_str(node: &KdlNode, key: &str) -> Option<String> {
    match prop(node, key) {
        Some(KdlValue::String(s)) => Some(s.clone()),
        _ => None,
    }
}

fn parse_descriptor(node: &KdlNode, file: &str) -> Result<Descriptor, String> {
    if node.name().value() != "device" {
        return Err(format!(
            "expected `device`, found `{}`",
            node.name().value()
        ));
    }
    let kind = arg_str(node, 0)?;
    let mut d = Descriptor {
        kind: kind.clone(),
        summary: String::new(),
        provides: Vec::new(),
        requires: Vec::new(),
        properties: Vec::new(),
        exclusive: Vec::new(),
        default_name: None,
        alnum_name: false,
        build: Vec::new(),
        host: None,
        imp: None,
        targets: Vec::new(),
        file: file.to_string(),
    };
    let mut overrides: Vec<TargetImpl> = Vec::new();
    for c in node.children().map(|c| c.nodes()).unwrap_or_default() {
        let doc = prop_str(c, "doc").unwrap_or_default();
        match c.name().value() {
            "summary" => d.summary = arg_str(c, 0)?,
            "provides" => d.provides.push(arg_str(c, 0)?),
            "default-name" => d.default_name = Some(arg_str(c, 0)?),
            "alnum-name" => d.alnum_name = true,
            "requires" => d.requires.push(Slot {
                name: arg_str(c, 0)?,
                interface: prop_str(c, "interface").ok_or("`requires` needs interface=")?,
                default: prop_str(c, "default"),
                doc,
            }),
            "property" => {
                let name = arg_str(c, 0)?;
                let ty_name =
                    prop_str(c, "type").ok_or_else(|| format!("property {name} needs type="))?;
                let ty = Ty::parse(&ty_name)
                    .ok_or_else(|| format!("property {name}: unknown type {ty_name}"))?;
                let default = match prop(c, "default") {
                    Some(v) => Some(ty.check(v).map_err(|e| {
                        format!("property {name}: default: expected {}", e.expected)
                    })?),
                    None => None,
                };
                let required = matches!(prop(c, "required"), Some(KdlValue::Bool(true)));
                let mut constraints = Vec::new();
                for e in c.entries() {
                    let Some(key) = e.name() else { continue };
                    let Some(parsed) = Constraint::parse(key.value(), e.value()) else {
                        continue;
                    };
                    let k = parsed.map_err(|e| format!("property {name}: {e}"))?;
                    if !k.fits(&ty) {
                        return Err(format!(
                            "property {name}: {} does not apply to {ty}",
                            key.value()
                        ));
                    }
                    if let Some(Err(e)) = default.as_ref().map(|v| k.check(v)) {
                        return Err(format!("property {name}: default: {}", e.message));
                    }
                    constraints.push(k);
                }
                d.properties.push(PropSpec {
                    name,
                    ty,
                    default,
                    required,
                    constraints,
                    doc,
                });
            }
            "build" => {
                let step = arg_str(c, 0)?;
                match step.as_str() {
                    "pack-assets" => d.build.push(BuildStep::PackAssets {
                        dir: prop_str(c, "dir").ok_or("`build pack-assets` needs dir=")?,
                        include: prop_str(c, "include"),
                        exclude: prop_str(c, "exclude"),
                        compress: prop_str(c, "compress"),
                        image_when: prop_str(c, "image-when")
                            .map(|w| condition(&w))
                            .transpose()?,
                    }),
                    other => return Err(format!("device {kind}: unknown build step `{other}`")),
                }
            }
            "host" => {
                if d.host.is_some() {
                    return Err(format!("device {kind}: more than one `host` line"));
                }
                let int = |key: &str| -> Result<Option<IntSource>, String> {
                    match prop(c, key) {
                        None => Ok(None),
                        Some(KdlValue::Integer(n)) => u64::try_from(*n)
                            .map(|n| Some(IntSource::Fixed(n)))
                            .map_err(|_| format!("host {key}: a negative number")),
                        Some(KdlValue::String(p)) => Ok(Some(IntSource::Property(p.clone()))),
                        Some(_) => Err(format!("host {key}= takes a number or a property name")),
                    }
                };
                let cap = match arg_str(c, 0)?.as_str() {
                    "net" => HostCap::Net {
                        mac: prop_str(c, "mac"),
                    },
                    "block" => HostCap::Block {
                        sector_size: int("sector-size")?,
                        size: int("size")?,
                        writable: prop_str(c, "writable"),
                    },
                    "secret" => HostCap::Secret,
                    other => {
                        return Err(format!(
                            "device {kind}: unknown host capability `{other}` (net, block, secret)"
                        ));
                    }
                };
                d.host = Some(Host {
                    cap,
                    when: prop_str(c, "when").map(|w| condition(&w)).transpose()?,
                });
            }
            "impl" => {
                if d.imp.is_some() {
                    return Err(format!("device {kind}: more than one `impl` line"));
                }
                let construct = prop_str(c, "construct").ok_or("`impl` needs construct=")?;
                let source = match arg_str(c, 0).ok().as_deref() {
                    Some("platform") => ImplSource::Platform,
                    Some(other) => {
                        return Err(format!(
                            "device {kind}: `impl {other}`: expected `impl platform` or `impl crate=NAME path=DIR`"
                        ));
                    }
                    None => ImplSource::Crate {
                        krate: prop_str(c, "crate").ok_or("`impl` needs `platform` or crate=")?,
                        path: prop_str(c, "path").ok_or("`impl crate=` needs path=")?,
                    },
                };
                d.imp = Some(Impl { source, construct });
            }
            "exclusive" => d.exclusive.push((arg_str(c, 0)?, arg_str(c, 1)?)),
            "target" => overrides.push(TargetImpl {
                target: arg_str(c, 0)?,
                krate: prop_str(c, "crate").ok_or("`target` needs crate=")?,
                path: prop_str(c, "path").ok_or("`target` needs path=")?,
                construct: prop_str(c, "construct").ok_or("`target` needs construct=")?,
            }),
            other => return Err(format!("device {kind}: unknown descriptor node `{other}`")),
        }
    }
    check_inputs(&d)?;
    for o in &overrides {
        if !crate::target::is_known(&o.target) {
            return Err(format!(
                "device {kind}: `target {}`: not a target",
                o.target
            ));
        }
    }
    // Expand the constructor over the targets that can build it.
    for t in crate::target::all() {
        if let Some(o) = overrides.iter().find(|o| o.target == t.name()) {
            d.targets.push(o.clone());
            continue;
        }
        let Some(imp) = &d.imp else { continue };
        let (krate, path) = match &imp.source {
            ImplSource::Platform if t.implements().contains(&kind.as_str()) => (
                t.platform().krate.to_string(),
                t.platform().path.to_string(),
            ),
            ImplSource::Platform => continue,
            ImplSource::Crate { krate, path } => (krate.clone(), path.clone()),
        };
        d.targets.push(TargetImpl {
            target: t.name().to_string(),
            krate,
            path,
            construct: imp.construct.clone(),
        });
    }
    d.targets.extend(
        overrides
            .into_iter()
            .filter(|o| crate::target::by_name(&o.target).is_none()),
    );
    Ok(d)
}

fn condition(text: &str) -> Result<Condition, String> {
    match text.split_once('=') {
        Some((p, v)) if !p.is_empty() => Ok(Condition {
            property: p.to_string(),
            value: v.to_string(),
        }),
        _ => Err(format!("condition {text:?}: expected PROPERTY=VALUE")),
    }
}

/// Every property a capability or build step names exists, with a type that fits.
fn check_inputs(d: &Descriptor) -> Result<(), String> {
    let kind = &d.kind;
    let need = |name: &str, what: &str, fits: &dyn Fn(&Ty) -> bool| -> Result<(), String> {
        match d.properties.iter().find(|p| p.name == name) {
            Some(p) if fits(&p.ty) => Ok(()),
            Some(p) => Err(format!(
                "device {kind}: {what} names property `{name}` of type {}, which does not fit",
                p.ty
            )),
            None => Err(format!(
                "device {kind}: {what} names property `{name}`, which the device does not declare"
            )),
        }
    };
    let is_int = |t: &Ty| matches!(t, Ty::U8 | Ty::U16 | Ty::U32 | Ty::U64 | Ty::Size);
    let any = |_: &Ty| true;
    if let Some(h) = &d.host {
        if let Some(w) = &h.when {
            need(&w.property, "host when=", &any)?;
        }
        match &h.cap {
            HostCap::Net { mac: Some(m) } => need(m, "host net mac=", &|t| *t == Ty::Mac)?,
            HostCap::Block {
                sector_size,
                size,
                writable,
            } => {
                for s in [sector_size, size].into_iter().flatten() {
                    if let IntSource::Property(p) = s {
                        need(p, "host block", &is_int)?;
                    }
                }
                if let Some(w) = writable {
                    need(w, "host block writable=", &|t| *t == Ty::Bool)?;
                }
            }
            _ => {}
        }
    }
    for b in &d.build {
        let BuildStep::PackAssets {
            dir,
            include,
            exclude,
            compress,
            image_when,
        } = b;
        need(dir, "pack-assets dir=", &|t| *t == Ty::Path)?;
        for p in [include, exclude].into_iter().flatten() {
            need(p, "pack-assets include=/exclude=", &|t| *t == Ty::String)?;
        }
        if let Some(p) = compress {
            need(p, "pack-assets compress=", &|t| *t == Ty::Bool)?;
        }
        if let Some(w) = image_when {
            need(&w.property, "pack-assets image-when=", &any)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_descriptors_parse() {
        let r = Registry::builtin().unwrap();
        assert!(r.get("console").is_some());
        assert!(r.get("tcp").unwrap().slot("stack").is_some());
    }

    #[test]
    fn a_platform_impl_expands_to_every_target_and_capabilities_are_typed() {
        let r = Registry::builtin().unwrap();
        let netif = r.get("netif").unwrap();
        let targets: Vec<&str> = netif.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(targets, ["unix", "hvt", "spt", "xen"]);
        assert_eq!(netif.for_target("hvt").unwrap().krate, "compose-hvt-guest");
        assert_eq!(
            netif.host,
            Some(Host {
                cap: HostCap::Net {
                    mac: Some("mac".into())
                },
                when: None
            })
        );
        let part = r.get("partition").unwrap();
        assert!(part.targets.iter().all(|t| t.krate == "compose-devices"));
    }

    #[test]
    fn capabilities_naming_missing_or_mistyped_properties_are_refused() {
        let bad = |body: &str| {
            Registry::from_sources([("x.device.kdl", format!("device x {{\n{body}\n}}").as_str())])
                .unwrap_err()
        };
        assert!(bad("host net mac=nope").contains("does not declare"));
        assert!(bad("property mac type=string\nhost net mac=mac").contains("does not fit"));
        assert!(bad("host tape").contains("unknown host capability"));
        assert!(bad("build pack-assets dir=d").contains("`d`"));
        assert!(bad("impl construct=\"x\"").contains("platform"));
        assert!(bad("build unpack").contains("unknown build step"));
    }
}
