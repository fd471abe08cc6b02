//! Device descriptors: what each device kind provides and requires, its properties, and
//! how the glue constructs it on each target. Descriptors are KDL files that live with the
//! device code under `devices/` (`*.device.kdl`); the composer embeds them at build time
//! and knows no device of its own.
//!
//! ```kdl
//! device ipv4 {
//!     summary "An IPv4 stack on a network interface"
//!     provides ipv4
//!     requires net interface=netif default=netif doc="the interface it runs on"
//!     property address type=ipv4-cidr doc="static address, like 10.0.0.2/24"
//!     property dhcp type=bool default=#false doc="lease an address with DHCP"
//!     exclusive address dhcp
//!     target unix crate=compose-unix path="platforms/unix" construct="platform::Ipv4::new({{ net }}, ...)"
//! }
//! ```
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
    /// Build steps the composer runs before compiling (e.g. `pack-assets`).
    pub build: Vec<String>,
    /// How to build it, per target.
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
        targets: Vec::new(),
        file: file.to_string(),
    };
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
            "build" => d.build.push(arg_str(c, 0)?),
            "exclusive" => d.exclusive.push((arg_str(c, 0)?, arg_str(c, 1)?)),
            "target" => d.targets.push(TargetImpl {
                target: arg_str(c, 0)?,
                krate: prop_str(c, "crate").ok_or("`target` needs crate=")?,
                path: prop_str(c, "path").ok_or("`target` needs path=")?,
                construct: prop_str(c, "construct").ok_or("`target` needs construct=")?,
            }),
            other => return Err(format!("device {kind}: unknown descriptor node `{other}`")),
        }
    }
    Ok(d)
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
}
