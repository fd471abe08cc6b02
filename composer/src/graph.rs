//! Stage 2: resolve a spec into a typed device graph for one target.
//!
//! Each device's slots (references to other devices) are filled from the spec, or else
//! from the unique device that provides the slot's interface, or else by creating the
//! descriptor's documented default (once, and shared, as functoria's generic stack does).
//! Then the graph is checked: interfaces match, no cycles, every device supports the
//! target. Construction order is a topological order that keeps spec order where it can.

use crate::descriptor::{Descriptor, Registry, TargetImpl};
use crate::diag::{Diag, Span, suggest};
use crate::spec::{AppDecl, BootArg, DeviceDecl, Param, PropDecl, Spec};
use crate::types::{Ty, Value};
use kdl::KdlValue;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::collections::BTreeMap;

/// A property's value once resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "source", content = "value", rename_all = "kebab-case")]
pub enum PropValue {
    /// Written in the spec.
    Given(Value),
    /// The descriptor's default.
    Default(Value),
    /// Optional and not given.
    Absent,
    /// The value of a build-time parameter.
    Param(String, Value),
    /// Read from a boot argument at boot.
    BootArg(String),
}

/// A resolved device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its name.
    pub name: String,
    /// Its descriptor.
    pub descriptor: Descriptor,
    /// Created as a default rather than declared.
    pub implicit: bool,
    /// The declaration, or for an implicit device the reference that made it.
    pub span: Span,
    /// Every descriptor property, resolved, in descriptor order.
    pub props: Vec<(String, Ty, PropValue)>,
    /// Filled slots: (slot name, device index in [`Graph::devices`]).
    pub deps: Vec<(String, usize)>,
    /// The implementation for the graph's target.
    pub imp: TargetImpl,
    /// The directory `path` properties are relative to (the declaring spec file's).
    pub dir: std::path::PathBuf,
}

/// What the application is handed, in order.
#[derive(Debug, Clone)]
pub enum Use {
    /// A device: its index in [`Graph::devices`] and its name.
    Device(usize, String),
    /// A build-time parameter.
    Param(String),
    /// A boot argument.
    BootArg(String),
}

/// The application, resolved.
#[derive(Debug, Clone)]
pub enum App {
    /// The user's crate: its package name, directory and entry function.
    User {
        package: String,
        dir: std::path::PathBuf,
        entry: String,
        uses: Vec<Use>,
    },
    /// A built-in application: a descriptor whose construct expression is the main future.
    Builtin(usize),
}

/// The resolved graph for one target.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The unikernel's name.
    pub name: String,
    /// The target it was resolved for.
    pub target: String,
    /// Guest memory in bytes.
    pub memory: u64,
    /// Devices in construction order (dependencies first).
    pub devices: Vec<Device>,
    /// Build-time parameters.
    pub params: Vec<Param>,
    /// Boot arguments.
    pub bootargs: Vec<BootArg>,
    /// The application's name.
    pub app_name: String,
    /// The application.
    pub app: App,
    /// The same graph as petgraph: nodes are device indices, edges point from a user to
    /// what it requires, weighted by slot name.
    pub petgraph: DiGraph<usize, String>,
}

impl Graph {
    /// The device named `name`.
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }
}

/// A Rust identifier for a spec name.
pub fn ident(name: &str) -> String {
    let s = name.replace('-', "_");
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else",
        "enum", "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match",
        "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while", "yield", "boot", "platform", "devices",
        "status", "main",
    ];
    if KEYWORDS.contains(&s.as_str()) {
        format!("{s}_")
    } else {
        s
    }
}

struct Resolver<'a> {
    registry: &'a Registry,
    spec: &'a Spec,
    target: &'a str,
    diags: Vec<Diag>,
    /// Devices in creation order; (device, declaration index for ordering).
    devices: Vec<Device>,
}

/// Resolves `spec` for `target`.
pub fn resolve(spec: &Spec, registry: &Registry, target: &str) -> Result<Graph, Vec<Diag>> {
    let mut r = Resolver {
        registry,
        spec,
        target,
        diags: Vec::new(),
        devices: Vec::new(),
    };
    // Declared devices first, in spec order, so their indices follow the spec.
    for decl in &spec.devices {
        r.declare(decl);
    }
    for i in 0..spec.devices.len() {
        let decl = &spec.devices[i];
        r.fill(i, Some(decl));
    }
    let app = r.application(&spec.application);
    if !r.diags.is_empty() {
        return Err(r.diags);
    }
    r.check_cycles()?;
    r.check_target();
    if !r.diags.is_empty() {
        return Err(r.diags);
    }
    let app = app.ok_or_else(Vec::new)?;
    let order = r.order();
    let remap: BTreeMap<usize, usize> = order
        .iter()
        .enumerate()
        .map(|(new, old)| (*old, new))
        .collect();
    let mut devices: Vec<Device> = order.iter().map(|i| r.devices[*i].clone()).collect();
    for d in &mut devices {
        for (_, dep) in &mut d.deps {
            *dep = remap[dep];
        }
    }
    let app = match app {
        App::User {
            package,
            dir,
            entry,
            uses,
        } => App::User {
            package,
            dir,
            entry,
            uses: uses
                .into_iter()
                .map(|u| match u {
                    Use::Device(i, n) => Use::Device(remap[&i], n),
                    other => other,
                })
                .collect(),
        },
        App::Builtin(i) => App::Builtin(remap[&i]),
    };
    let mut petgraph = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..devices.len()).map(|i| petgraph.add_node(i)).collect();
    for (i, d) in devices.iter().enumerate() {
        for (slot, dep) in &d.deps {
            petgraph.add_edge(nodes[i], nodes[*dep], slot.clone());
        }
    }
    Ok(Graph {
        name: spec.name.clone(),
        target: target.to_string(),
        memory: spec
            .memory
            .as_ref()
            .map_or(crate::spec::DEFAULT_MEMORY, |m| m.0),
        devices,
        params: spec.params.clone(),
        bootargs: spec.bootargs.clone(),
        app_name: spec.application.name.clone(),
        app,
        petgraph,
    })
}

impl Resolver<'_> {
    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    fn placeholder_imp(&self) -> TargetImpl {
        TargetImpl {
            target: self.target.into(),
            krate: String::new(),
            path: String::new(),
            construct: String::new(),
        }
    }

    fn new_device(
        &self,
        name: &str,
        descriptor: &Descriptor,
        implicit: bool,
        span: Span,
        dir: &std::path::Path,
    ) -> Device {
        let imp = descriptor
            .for_target(self.target)
            .cloned()
            .unwrap_or_else(|| self.placeholder_imp());
        Device {
            name: name.to_string(),
            descriptor: descriptor.clone(),
            implicit,
            span,
            props: Vec::new(),
            deps: Vec::new(),
            imp,
            dir: dir.to_path_buf(),
        }
    }

    fn declare(&mut self, decl: &DeviceDecl) {
        // Kinds were checked by the spec stage.
        let descriptor = self
            .registry
            .get(&decl.kind)
            .cloned()
            .unwrap_or_else(|| unreachable_descriptor(&decl.kind));
        if descriptor.alnum_name && !decl.name.chars().all(|c| c.is_ascii_alphanumeric()) {
            self.err(
                Diag::new("compose::manifest-name", format!("`{}` devices need an alphanumeric name, found {:?}", decl.kind, decl.name), &decl.name_span, "not alphanumeric")
                    .help(format!("the name goes into the Solo5 manifest and the tender's --{}:NAME= option, which allow only letters and digits", if matches!(descriptor.host.as_ref().map(|h| &h.cap), Some(crate::descriptor::HostCap::Net { .. })) { "net" } else { "block" })),
            );
        }
        let d = self.new_device(&decl.name, &descriptor, false, decl.span.clone(), &decl.dir);
        self.devices.push(d);
    }

    /// Resolves the properties and slots of device `i` (declared by `decl`, or implicit).
    fn fill(&mut self, i: usize, decl: Option<&DeviceDecl>) {
        let descriptor = self.devices[i].descriptor.clone();
        let empty = Vec::new();
        let props: &Vec<PropDecl> = decl.map_or(&empty, |d| &d.props);
        let here = self.devices[i].span.clone();
        // Unknown keys.
        for p in props {
            if descriptor.slot(&p.key).is_none()
                && !descriptor.properties.iter().any(|s| s.name == p.key)
            {
                let known: Vec<&str> = descriptor
                    .requires
                    .iter()
                    .map(|s| s.name.as_str())
                    .chain(descriptor.properties.iter().map(|s| s.name.as_str()))
                    .collect();
                let help = if known.is_empty() {
                    format!("`{}` takes no properties", descriptor.kind)
                } else {
                    suggest(&p.key, known.iter().copied())
                };
                self.err(
                    Diag::new(
                        "compose::unknown-property",
                        format!("unknown property `{}` on `{}`", p.key, descriptor.kind),
                        &p.key_span,
                        "unknown property",
                    )
                    .help(help),
                );
            }
        }
        // Properties.
        let mut resolved = Vec::new();
        for spec in &descriptor.properties {
            let given = props.iter().find(|p| p.key == spec.name);
            let value = match given {
                Some(p) => match self.prop_value(p, &spec.ty) {
                    Some(PropValue::Given(Value::Str(rel)))
                        if spec.ty == Ty::Path && !self.devices[i].dir.join(&rel).exists() =>
                    {
                        self.err(
                            Diag::new(
                                "compose::missing-path",
                                format!("`{}` names {rel:?}, which does not exist", spec.name),
                                &p.span,
                                "no such file or directory",
                            )
                            .help("paths are relative to the spec file that names them"),
                        );
                        continue;
                    }
                    Some(v) => {
                        if let PropValue::Given(x) | PropValue::Param(_, x) = &v
                            && let Some(e) = spec.constraints.iter().find_map(|k| k.check(x).err())
                        {
                            let via = match &v {
                                PropValue::Param(name, _) => format!(" (from param `{name}`)"),
                                _ => String::new(),
                            };
                            self.err(
                                Diag::new(
                                    e.code,
                                    format!("`{}` {}{via}", spec.name, e.message),
                                    &p.span,
                                    "not allowed here",
                                )
                                .help(e.hint),
                            );
                            continue;
                        }
                        v
                    }
                    None => continue,
                },
                None => match (&spec.default, spec.required) {
                    (Some(v), _) => PropValue::Default(v.clone()),
                    (None, true) => {
                        self.err(
                            Diag::new(
                                "compose::missing-property",
                                format!("`{}` needs the property `{}`", descriptor.kind, spec.name),
                                &here,
                                format!("no {}=", spec.name),
                            )
                            .help(format!("{}: {}", spec.name, spec.doc)),
                        );
                        continue;
                    }
                    (None, false) => PropValue::Absent,
                },
            };
            resolved.push((spec.name.clone(), spec.ty.clone(), value));
        }
        for (a, b) in &descriptor.exclusive {
            let pa = props.iter().find(|p| p.key == *a);
            let pb = props.iter().find(|p| p.key == *b);
            if let (Some(pa), Some(pb)) = (pa, pb) {
                let is_false = |p: &PropDecl| matches!(p.value, KdlValue::Bool(false));
                if !is_false(pa) && !is_false(pb) {
                    self.err(
                        Diag::new(
                            "compose::exclusive-properties",
                            format!(
                                "`{a}` and `{b}` cannot both be set on `{}`",
                                descriptor.kind
                            ),
                            &pb.span,
                            "conflicts",
                        )
                        .also(&pa.span, "with this")
                        .help(format!("keep one of `{a}` and `{b}`")),
                    );
                }
            }
        }
        self.devices[i].props = resolved;
        // Slots.
        for slot in &descriptor.requires {
            let given = props.iter().find(|p| p.key == slot.name);
            let dep = match given {
                Some(p) => self.explicit_ref(p, &slot.interface, &descriptor.kind),
                None => self.default_ref(
                    i,
                    &slot.name,
                    &slot.interface,
                    slot.default.as_deref(),
                    &descriptor.kind,
                ),
            };
            if let Some(dep) = dep {
                self.devices[i].deps.push((slot.name.clone(), dep));
            }
        }
    }

    fn prop_value(&mut self, p: &PropDecl, ty: &Ty) -> Option<PropValue> {
        match (p.annotation.as_deref(), &p.value) {
            (Some("param"), KdlValue::String(name)) => {
                let Some(param) = self.spec.params.iter().find(|x| x.name == *name) else {
                    let help = suggest(name, self.spec.params.iter().map(|x| x.name.as_str()));
                    self.err(
                        Diag::new(
                            "compose::dangling-reference",
                            format!("no param named `{name}`"),
                            &p.span,
                            "unknown param",
                        )
                        .help(help),
                    );
                    return None;
                };
                if param.ty != *ty
                    && !(matches!(ty, Ty::Choice(_) | Ty::Path) && param.ty == Ty::String)
                {
                    self.err(
                        Diag::new(
                            "compose::type-mismatch",
                            format!(
                                "`{}` expects {ty}, but param `{name}` is {}",
                                p.key, param.ty
                            ),
                            &p.span,
                            format!("expected {ty}"),
                        )
                        .also(&param.span, "param declared here"),
                    );
                    return None;
                }
                // Re-check: a choice or path parameter's value must fit the property.
                match ty.check_text(&param.value.text()) {
                    Ok(v) => Some(PropValue::Param(name.clone(), v)),
                    Err(e) => {
                        self.err(
                            Diag::new(
                                "compose::type-mismatch",
                                format!(
                                    "param `{name}` = {:?} does not fit `{}`: expected {}",
                                    param.value.text(),
                                    p.key,
                                    e.expected
                                ),
                                &p.span,
                                "here",
                            )
                            .maybe_help(e.hint),
                        );
                        None
                    }
                }
            }
            (Some("bootarg"), KdlValue::String(name)) => {
                let Some(arg) = self.spec.bootargs.iter().find(|x| x.name == *name) else {
                    let help = suggest(name, self.spec.bootargs.iter().map(|x| x.name.as_str()));
                    self.err(
                        Diag::new(
                            "compose::dangling-reference",
                            format!("no bootarg named `{name}`"),
                            &p.span,
                            "unknown boot argument",
                        )
                        .help(help),
                    );
                    return None;
                };
                if arg.ty != *ty {
                    self.err(
                        Diag::new(
                            "compose::type-mismatch",
                            format!(
                                "`{}` expects {ty}, but bootarg `{name}` is {}",
                                p.key, arg.ty
                            ),
                            &p.span,
                            format!("expected {ty}"),
                        )
                        .also(&arg.span, "bootarg declared here"),
                    );
                    return None;
                }
                Some(PropValue::BootArg(name.clone()))
            }
            (Some(other), _) => {
                self.err(
                    Diag::new(
                        "compose::annotation",
                        format!("unknown annotation `({other})`"),
                        &p.span,
                        "here",
                    )
                    .help("a value may be annotated (param)\"name\" or (bootarg)\"name\""),
                );
                None
            }
            (None, v) => match ty.check(v) {
                Ok(v) => Some(PropValue::Given(v)),
                Err(e) => {
                    self.err(
                        Diag::new(
                            "compose::type-mismatch",
                            format!("`{}` expects {}, found {}", p.key, e.expected, e.found),
                            &p.span,
                            format!("expected {}", e.expected),
                        )
                        .maybe_help(e.hint),
                    );
                    None
                }
            },
        }
    }

    fn explicit_ref(&mut self, p: &PropDecl, interface: &str, user: &str) -> Option<usize> {
        let KdlValue::String(name) = &p.value else {
            self.err(Diag::new(
                "compose::type-mismatch",
                format!("`{}` names a device", p.key),
                &p.span,
                "expected a device name",
            ));
            return None;
        };
        let Some(i) = self.devices.iter().position(|d| d.name == *name) else {
            let other_kind = self.spec.params.iter().any(|x| x.name == *name)
                || self.spec.bootargs.iter().any(|x| x.name == *name);
            let help = if other_kind {
                format!("`{name}` is a param or bootarg, not a device")
            } else {
                let names: Vec<&str> = self
                    .devices
                    .iter()
                    .filter(|d| d.descriptor.provides.iter().any(|x| x == interface))
                    .map(|d| d.name.as_str())
                    .collect();
                match crate::diag::did_you_mean(name, names.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if names.is_empty() => {
                        format!("no device provides {interface}; declare one")
                    }
                    None => format!("devices that provide {interface}: {}", names.join(", ")),
                }
            };
            self.err(
                Diag::new(
                    "compose::dangling-reference",
                    format!("no device named `{name}`"),
                    &p.span,
                    "unknown device",
                )
                .help(help),
            );
            return None;
        };
        let target = &self.devices[i];
        if !target.descriptor.provides.iter().any(|x| x == interface) {
            let provides = target.descriptor.provides.join(", ");
            let d = Diag::new(
                "compose::wrong-interface",
                format!(
                    "`{user}` needs {interface} for `{}`, but `{name}` is a {} (provides {provides})",
                    p.key, target.descriptor.kind
                ),
                &p.span,
                format!("needs {interface}"),
            );
            let d = if target.span.source.path == p.span.source.path {
                d.also(&target.span, format!("`{name}` declared here"))
            } else {
                d
            };
            let providers: Vec<&str> = self
                .registry
                .providers_of(interface)
                .map(|d| d.kind.as_str())
                .collect();
            self.err(d.help(format!(
                "{interface} is provided by: {}",
                providers.join(", ")
            )));
            return None;
        }
        Some(i)
    }

    fn default_ref(
        &mut self,
        user: usize,
        slot: &str,
        interface: &str,
        default: Option<&str>,
        kind: &str,
    ) -> Option<usize> {
        let providers: Vec<usize> = (0..self.devices.len())
            .filter(|&j| {
                j != user
                    && self.devices[j]
                        .descriptor
                        .provides
                        .iter()
                        .any(|x| x == interface)
            })
            .collect();
        let here = self.devices[user].span.clone();
        match providers.as_slice() {
            [one] => Some(*one),
            [] => {
                let Some(default) = default else {
                    self.err(
                        Diag::new("compose::missing-device", format!("`{kind}` needs a device that provides {interface}, and there is none"), &here, format!("needs {interface} for `{slot}`"))
                            .help(format!("declare one and name it: {slot}=\"...\"")),
                    );
                    return None;
                };
                let descriptor = self
                    .registry
                    .get(default)
                    .cloned()
                    .unwrap_or_else(|| unreachable_descriptor(default));
                let name = descriptor.default_name().to_string();
                if self.devices.iter().any(|d| d.name == name) {
                    self.err(
                        Diag::new("compose::default-name-taken", format!("the default {interface} device would be named `{name}`, which is taken"), &here, format!("needs {interface}"))
                            .help(format!("declare the {default} explicitly and name it: {slot}=\"...\"")),
                    );
                    return None;
                }
                let dir = self.devices[user].dir.clone();
                let d = self.new_device(&name, &descriptor, true, here, &dir);
                self.devices.push(d);
                let j = self.devices.len() - 1;
                self.fill(j, None);
                Some(j)
            }
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|&j| format!("`{}`", self.devices[j].name))
                    .collect();
                let mut d = Diag::new(
                    "compose::ambiguous-default",
                    format!(
                        "`{kind}` needs {interface} and {} devices provide it: {}",
                        many.len(),
                        names.join(", ")
                    ),
                    &here,
                    format!("which {interface}?"),
                )
                .help(format!(
                    "name one: {slot}=\"{}\"",
                    self.devices[many[0]].name
                ));
                for &j in many {
                    if self.devices[j].span.source.path == here.source.path
                        && !self.devices[j].implicit
                    {
                        let s = self.devices[j].span.clone();
                        d = d.also(&s, "provides it");
                    }
                }
                self.err(d);
                None
            }
        }
    }

    fn application(&mut self, app: &AppDecl) -> Option<App> {
        if let Some((builtin, at)) = &app.builtin {
            let Some(descriptor) = self
                .registry
                .get(builtin)
                .filter(|d| d.provides.iter().any(|p| p == "application"))
                .cloned()
            else {
                let apps: Vec<&str> = self
                    .registry
                    .providers_of("application")
                    .map(|d| d.kind.as_str())
                    .collect();
                let help = if apps.is_empty() {
                    "this compose has no built-in applications".into()
                } else {
                    suggest(builtin, apps.iter().copied())
                };
                self.err(
                    Diag::new(
                        "compose::unknown-builtin",
                        format!("no built-in application `{builtin}`"),
                        at,
                        "unknown",
                    )
                    .help(help),
                );
                return None;
            };
            let decl = DeviceDecl {
                kind: builtin.clone(),
                name: app.name.clone(),
                name_span: app.span.clone(),
                span: app.span.clone(),
                props: app.props.clone(),
                dir: app.dir.clone(),
            };
            if self.devices.iter().any(|d| d.name == app.name) {
                self.err(Diag::new(
                    "compose::duplicate-name",
                    format!("`{}` is defined twice", app.name),
                    &app.span,
                    "the application's name is taken by a device",
                ));
                return None;
            }
            let d = self.new_device(&app.name, &descriptor, false, app.span.clone(), &app.dir);
            self.devices.push(d);
            let i = self.devices.len() - 1;
            self.fill(i, Some(&decl));
            if let Some((_, at)) = app.uses.first() {
                self.err(Diag::new(
                    "compose::unknown-node",
                    "a built-in application takes its devices as properties, not `use`",
                    at,
                    "not here",
                ));
            }
            return Some(App::Builtin(i));
        }
        let mut ok = true;
        let krate = match &app.krate {
            Some((dir, at)) => {
                let manifest = dir.join("Cargo.toml");
                match package_name(&manifest) {
                    Ok(name) => Some((name, dir.clone())),
                    Err(why) => {
                        self.err(Diag::new("compose::application-crate", format!("no application crate at {}: {why}", dir.display()), at, "here").help("`crate` is a directory holding a Cargo.toml, relative to this spec"));
                        ok = false;
                        None
                    }
                }
            }
            None => {
                self.err(Diag::new("compose::missing-property", format!("application `{}` needs `crate` and `entry`", app.name), &app.span, "incomplete").help("write `crate \"path/to/crate\"` and `entry \"crate_name::start\"` in its block, or use builtin=..."));
                return None;
            }
        };
        let entry = match &app.entry {
            Some((e, at)) => {
                let valid = e.split("::").count() >= 2
                    && e.split("::").all(|seg| {
                        !seg.is_empty()
                            && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !seg.starts_with(|c: char| c.is_ascii_digit())
                    });
                if !valid {
                    self.err(
                        Diag::new(
                            "compose::bad-entry",
                            format!("`{e}` is not a path to a function"),
                            at,
                            "expected crate::function",
                        )
                        .help("the entry is a Rust path like `hello::start`"),
                    );
                    ok = false;
                } else if let Some((pkg, _)) = &krate {
                    let first = e.split("::").next().unwrap_or_default();
                    let lib = pkg.replace('-', "_");
                    if first != lib {
                        self.err(
                            Diag::new(
                                "compose::bad-entry",
                                format!("`{e}` is not in the application crate `{lib}`"),
                                at,
                                format!("expected {lib}::..."),
                            )
                            .help(format!(
                                "write `entry \"{lib}::{}\"`",
                                e.split("::").last().unwrap_or("start")
                            )),
                        );
                        ok = false;
                    }
                }
                e.clone()
            }
            None => {
                self.err(
                    Diag::new(
                        "compose::missing-property",
                        format!("application `{}` needs an `entry`", app.name),
                        &app.span,
                        "no entry",
                    )
                    .help("write `entry \"crate_name::start\"` in its block"),
                );
                return None;
            }
        };
        let mut uses = Vec::new();
        for (name, at) in &app.uses {
            if let Some(i) = self.devices.iter().position(|d| d.name == *name) {
                uses.push(Use::Device(i, name.clone()));
            } else if self.spec.params.iter().any(|p| p.name == *name) {
                uses.push(Use::Param(name.clone()));
            } else if self.spec.bootargs.iter().any(|b| b.name == *name) {
                uses.push(Use::BootArg(name.clone()));
            } else {
                let all: Vec<&str> = self
                    .devices
                    .iter()
                    .map(|d| d.name.as_str())
                    .chain(self.spec.params.iter().map(|p| p.name.as_str()))
                    .chain(self.spec.bootargs.iter().map(|b| b.name.as_str()))
                    .collect();
                self.err(
                    Diag::new(
                        "compose::dangling-reference",
                        format!("the application uses `{name}`, which is not defined"),
                        at,
                        "not defined",
                    )
                    .help(suggest(name, all.iter().copied())),
                );
                ok = false;
            }
        }
        let (package, dir) = krate?;
        ok.then_some(App::User {
            package,
            dir,
            entry,
            uses,
        })
    }

    fn check_cycles(&mut self) -> Result<(), Vec<Diag>> {
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..self.devices.len()).map(|i| g.add_node(i)).collect();
        for (i, d) in self.devices.iter().enumerate() {
            for (_, dep) in &d.deps {
                g.add_edge(nodes[i], nodes[*dep], ());
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            let cyclic = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
            if !cyclic {
                continue;
            }
            let mut members: Vec<usize> = scc.iter().map(|n| g[*n]).collect();
            members.sort();
            let names: Vec<String> = members
                .iter()
                .map(|&i| format!("`{}`", self.devices[i].name))
                .collect();
            let first = &self.devices[members[0]];
            let mut d = Diag::new(
                "compose::cycle",
                format!(
                    "devices depend on each other in a cycle: {}",
                    names.join(" → ")
                ),
                &first.span,
                format!("`{}` is in the cycle", first.name),
            );
            for &i in &members[1..] {
                let dev = &self.devices[i];
                if dev.span.source.path == first.span.source.path {
                    d = d.also(&dev.span, format!("`{}` is in the cycle", dev.name));
                }
            }
            self.err(d.help("a device cannot be built from itself: break the cycle by naming a different device in one of these references"));
        }
        if self.diags.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.diags))
        }
    }

    fn check_target(&mut self) {
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if d.descriptor.for_target(self.target).is_some() {
                continue;
            }
            let supported: Vec<&str> = d
                .descriptor
                .targets
                .iter()
                .map(|t| t.target.as_str())
                .collect();
            let what = if d.implicit {
                format!("the default {} `{}`", d.descriptor.kind, d.name)
            } else {
                format!("`{}`", d.name)
            };
            let help = if supported.is_empty() {
                format!("no target supports {} yet", d.descriptor.kind)
            } else {
                format!(
                    "{} is supported on: {}",
                    d.descriptor.kind,
                    supported.join(", ")
                )
            };
            let diag = Diag::new(
                "compose::unsupported-target",
                format!(
                    "{what} ({}) is not supported on target {}",
                    d.descriptor.kind, self.target
                ),
                &d.span,
                format!("not available on {}", self.target),
            )
            .help(help);
            self.err(diag);
        }
    }

    /// Kahn's algorithm, picking the lowest creation index among ready devices, so the
    /// order is deterministic and follows the spec where dependencies allow.
    fn order(&self) -> Vec<usize> {
        let n = self.devices.len();
        let mut pending: Vec<usize> = self.devices.iter().map(|d| d.deps.len()).collect();
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, d) in self.devices.iter().enumerate() {
            for (_, dep) in &d.deps {
                users[*dep].push(i);
            }
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&i| pending[i] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut out = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            out.push(i);
            for &u in &users[i] {
                pending[u] -= 1;
                if pending[u] == 0 {
                    ready.push(std::cmp::Reverse(u));
                }
            }
        }
        out
    }
}

fn unreachable_descriptor(kind: &str) -> Descriptor {
    // The spec stage only lets known kinds through; an unknown one here is a compose bug,
    // reported as an unsupported device rather than a panic.
    Descriptor {
        kind: kind.to_string(),
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
        file: String::new(),
    }
}

/// The `[package] name` of a crate's Cargo.toml.
pub fn package_name(manifest: &std::path::Path) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        package: Option<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
    }
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let m: Manifest =
        toml::from_str(&text).map_err(|e| format!("{}: {}", manifest.display(), e.message()))?;
    m.package
        .map(|p| p.name)
        .ok_or_else(|| "Cargo.toml has no [package] name".into())
}
