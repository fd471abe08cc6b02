//! Stage 1: read a spec. Parses the KDL (following `import`s), applies `--arg` overrides
//! and produces the declarations the graph stage resolves. Nothing here knows devices:
//! device nodes are any node whose name a descriptor declares.
//!
//! Composition is Nix-like: an imported file's definitions come first, and a later
//! definition replaces an earlier one of the same name from another file. Two definitions
//! of one name in the same file are an error.

use crate::descriptor::Registry;
use crate::diag::{Diag, Source, Span, suggest};
use crate::types::{Ty, Value};
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use std::path::{Path, PathBuf};

/// Memory given to a unikernel whose spec does not say.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// The nodes of the language itself; every other top-level node is a device kind.
pub const LANGUAGE_NODES: &[&str] = &["unikernel", "import", "param", "bootarg", "application"];

/// A spec after imports and `--arg` overrides: declarations, not yet resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The unikernel's name.
    pub name: String,
    /// Where the name is declared.
    pub name_span: Span,
    /// The default target, if the spec names one.
    pub target: Option<(String, Span)>,
    /// Guest memory in bytes, if the spec says.
    pub memory: Option<(u64, Span)>,
    /// Build-time parameters.
    pub params: Vec<Param>,
    /// Boot-time arguments.
    pub bootargs: Vec<BootArg>,
    /// Device declarations, in spec order.
    pub devices: Vec<DeviceDecl>,
    /// The application.
    pub application: AppDecl,
    /// Every spec file read, the main one first.
    pub files: Vec<PathBuf>,
}

/// `param NAME default=V [type=T] [doc=S]`: a build-time value, overridable with `--arg`.
#[derive(Debug, Clone)]
pub struct Param {
    /// Name.
    pub name: String,
    /// Type.
    pub ty: Ty,
    /// The value in force (the default, or the `--arg`).
    pub value: Value,
    /// Whether `--arg` set it.
    pub overridden: bool,
    /// One line of documentation.
    pub doc: String,
    /// The node.
    pub span: Span,
}

/// `bootarg NAME [type=T] [default=V] [doc=S]`: a value read from the boot command line.
#[derive(Debug, Clone)]
pub struct BootArg {
    /// Name (`--NAME` at boot).
    pub name: String,
    /// Type.
    pub ty: Ty,
    /// Default; `None` makes the argument required at boot.
    pub default: Option<Value>,
    /// One line of documentation.
    pub doc: String,
    /// The node.
    pub span: Span,
}

/// A device node: `KIND [NAME] [PROP=VALUE]...`.
#[derive(Debug, Clone)]
pub struct DeviceDecl {
    /// The descriptor kind (the node name).
    pub kind: String,
    /// The device's name (the argument, or the kind's default name).
    pub name: String,
    /// The name's span (the node name's when the name is implied).
    pub name_span: Span,
    /// The whole node.
    pub span: Span,
    /// Properties, in order.
    pub props: Vec<PropDecl>,
    /// The directory of the spec file, against which `path` properties resolve.
    pub dir: PathBuf,
}

/// `KEY=VALUE` on a device or application node, possibly `KEY=(param)"name"`.
#[derive(Debug, Clone)]
pub struct PropDecl {
    /// Property name.
    pub key: String,
    /// The value as written.
    pub value: KdlValue,
    /// A type annotation on the value: `param` or `bootarg` make it a reference.
    pub annotation: Option<String>,
    /// The key's span.
    pub key_span: Span,
    /// The whole `key=value` entry.
    pub span: Span,
}

/// The application: the user's crate or a built-in one, and what it is handed.
#[derive(Debug, Clone)]
pub struct AppDecl {
    /// Name.
    pub name: String,
    /// The node.
    pub span: Span,
    /// `crate "path"`: the application crate's directory (absolute) and where it was written.
    pub krate: Option<(PathBuf, Span)>,
    /// `entry "crate::function"`.
    pub entry: Option<(String, Span)>,
    /// `builtin=KIND`: a built-in application from a descriptor.
    pub builtin: Option<(String, Span)>,
    /// Properties of a built-in application.
    pub props: Vec<PropDecl>,
    /// `use a b c`: the names handed to the entry function, in order.
    pub uses: Vec<(String, Span)>,
    /// The directory of the spec file.
    pub dir: PathBuf,
}

/// A value and where it was written.
type Named = (String, Span);

/// A definition, before override resolution.
enum Def {
    Unikernel(KdlNode, Source),
    Param(Param),
    BootArg(BootArg),
    Device(DeviceDecl),
    App(AppDecl),
}

struct Loader<'r> {
    registry: &'r Registry,
    diags: Vec<Diag>,
    /// (file index, name, span) of each definition, in order.
    defs: Vec<(usize, String, Span, Def)>,
    files: Vec<PathBuf>,
    /// Import chain, for cycle detection: canonical path and the span of the import.
    stack: Vec<PathBuf>,
}

/// Reads the spec at `path` and everything it imports, then applies `--arg NAME=VALUE`s.
pub fn load(
    path: &Path,
    args: &[(String, String)],
    registry: &Registry,
) -> Result<Spec, Vec<Diag>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diag::nowhere(
                "compose::io",
                format!("cannot read spec {}: {e}", path.display()),
            )]);
        }
    };
    let mut loader = Loader {
        registry,
        diags: Vec::new(),
        defs: Vec::new(),
        files: Vec::new(),
        stack: Vec::new(),
    };
    loader.file(path, text);
    loader.finish(path, args)
}

/// Converts the KDL parser's errors into compose diagnostics.
fn syntax_errors(err: kdl::KdlError, source: &Source) -> Vec<Diag> {
    err.diagnostics
        .into_iter()
        .map(|d| {
            let at = Span {
                source: source.clone(),
                span: d.span,
            };
            let message = d.message.unwrap_or_else(|| "invalid KDL".into());
            Diag::new(
                "compose::syntax",
                format!("invalid KDL: {message}"),
                &at,
                d.label.unwrap_or_else(|| "here".into()),
            )
            .maybe_help(d.help)
        })
        .collect()
}

fn span(source: &Source, s: miette::SourceSpan) -> Span {
    Span {
        source: source.clone(),
        span: s,
    }
}

impl Loader<'_> {
    fn file(&mut self, path: &Path, text: String) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.stack.push(canonical);
        self.files.push(path.to_path_buf());
        let file_index = self.files.len() - 1;
        let source = Source::new(path, text);
        let doc = match KdlDocument::parse(&source.text) {
            Ok(doc) => doc,
            Err(e) => {
                self.diags.extend(syntax_errors(e, &source));
                self.stack.pop();
                return;
            }
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for node in doc.nodes() {
            self.node(node, &source, &dir, file_index);
        }
        self.stack.pop();
    }

    fn err(&mut self, d: Diag) {
        self.diags.push(d);
    }

    fn node(&mut self, node: &KdlNode, source: &Source, dir: &Path, file: usize) {
        let kind = node.name().value();
        let node_span = span(source, node.span());
        let name_span = span(source, node.name().span());
        if let Some(ty) = node.ty() {
            let at = span(source, ty.span());
            self.err(Diag::new(
                "compose::annotation",
                "type annotations are not allowed on nodes",
                &at,
                "remove this",
            ));
        }
        match kind {
            "import" => self.import(node, source, dir),
            "unikernel" => {
                if let Some((name, at)) = self.name_arg(node, source, "unikernel", None) {
                    self.defs
                        .push((file, name, at, Def::Unikernel(node.clone(), source.clone())));
                }
            }
            "param" => {
                if let Some(p) = self.param(node, source) {
                    let (n, s) = (p.name.clone(), p.span.clone());
                    self.defs.push((file, n, s, Def::Param(p)));
                }
            }
            "bootarg" => {
                if let Some(b) = self.bootarg(node, source) {
                    let (n, s) = (b.name.clone(), b.span.clone());
                    self.defs.push((file, n, s, Def::BootArg(b)));
                }
            }
            "application" => {
                if let Some(a) = self.application(node, source, dir) {
                    let (n, s) = (a.name.clone(), a.span.clone());
                    self.defs.push((file, n, s, Def::App(a)));
                }
            }
            _ if self.registry.get(kind).is_some() => {
                if let Some(d) = self.device(node, source, dir) {
                    let (n, s) = (d.name.clone(), d.name_span.clone());
                    self.defs.push((file, n, s, Def::Device(d)));
                }
            }
            _ => {
                let known: Vec<&str> = LANGUAGE_NODES
                    .iter()
                    .copied()
                    .chain(self.registry.kinds())
                    .collect();
                let help = suggest(kind, known.iter().copied());
                self.err(
                    Diag::new(
                        "compose::unknown-node",
                        format!("unknown node `{kind}`"),
                        &name_span,
                        "not a device kind or a spec node",
                    )
                    .help(help),
                );
            }
        }
        let _ = node_span;
    }

    /// The node's single positional argument, a name. `implied` is used when there is none.
    fn name_arg(
        &mut self,
        node: &KdlNode,
        source: &Source,
        what: &str,
        implied: Option<&str>,
    ) -> Option<(String, Span)> {
        let args: Vec<&KdlEntry> = node
            .entries()
            .iter()
            .filter(|e| e.name().is_none())
            .collect();
        let node_name = span(source, node.name().span());
        if args.len() > 1 {
            let at = span(source, args[1].span());
            self.err(
                Diag::new(
                    "compose::extra-argument",
                    format!("{what} takes one name, found {} arguments", args.len()),
                    &at,
                    "unexpected argument",
                )
                .help("properties are written KEY=VALUE"),
            );
            return None;
        }
        let Some(arg) = args.first() else {
            return match implied {
                Some(n) => Some((n.to_string(), node_name)),
                None => {
                    self.err(
                        Diag::new(
                            "compose::missing-name",
                            format!("{what} needs a name"),
                            &node_name,
                            "no name given",
                        )
                        .help(format!("write `{} NAME ...`", node.name().value())),
                    );
                    None
                }
            };
        };
        let at = span(source, arg.span());
        match arg.value() {
            KdlValue::String(s) if valid_name(s) => Some((s.clone(), at)),
            KdlValue::String(s) => {
                self.err(
                    Diag::new("compose::invalid-name", format!("invalid name {s:?}"), &at, "not a valid name")
                        .help("names are 1 to 63 characters: lowercase letters, digits and `-`, starting with a letter"),
                );
                None
            }
            other => {
                self.err(Diag::new(
                    "compose::invalid-name",
                    format!("a name must be a string, found {other}"),
                    &at,
                    "not a name",
                ));
                None
            }
        }
    }

    /// Properties (`KEY=VALUE` entries), checked against `allowed` when given.
    fn props(
        &mut self,
        node: &KdlNode,
        source: &Source,
        allowed: Option<&[&str]>,
    ) -> Vec<PropDecl> {
        let mut out: Vec<PropDecl> = Vec::new();
        for e in node.entries() {
            let Some(key) = e.name() else { continue };
            let key_span = span(source, key.span());
            let entry_span = span(source, e.span());
            let k = key.value();
            if let Some(allowed) = allowed.filter(|a| !a.contains(&k)) {
                {
                    let what = node.name().value();
                    self.err(
                        Diag::new(
                            "compose::unknown-property",
                            format!("unknown property `{k}` on `{what}`"),
                            &key_span,
                            "unknown property",
                        )
                        .help(suggest(k, allowed.iter().copied())),
                    );
                    continue;
                }
            }
            if let Some(prev) = out.iter().find(|p| p.key == k) {
                let first = prev.key_span.clone();
                self.err(
                    Diag::new(
                        "compose::duplicate-property",
                        format!("property `{k}` is given twice"),
                        &key_span,
                        "given again here",
                    )
                    .also(&first, "first given here"),
                );
                continue;
            }
            out.push(PropDecl {
                key: k.to_string(),
                value: e.value().clone(),
                annotation: e.ty().map(|t| t.value().to_string()),
                key_span,
                span: entry_span,
            });
        }
        out
    }

    fn no_children(&mut self, node: &KdlNode, source: &Source, what: &str) {
        if let Some(children) = node.children() {
            let at = span(source, children.span());
            self.err(Diag::new(
                "compose::unexpected-children",
                format!("{what} takes no children block"),
                &at,
                "unexpected block",
            ));
        }
    }

    fn import(&mut self, node: &KdlNode, source: &Source, dir: &Path) {
        let node_span = span(source, node.span());
        let args: Vec<&KdlEntry> = node.entries().iter().collect();
        let Some(KdlValue::String(rel)) = args
            .first()
            .map(|e| e.value())
            .filter(|_| args.len() == 1 && args[0].name().is_none())
        else {
            self.err(Diag::new(
                "compose::bad-import",
                "import takes one path",
                &node_span,
                "expected `import \"file.kdl\"`",
            ));
            return;
        };
        let at = span(source, args[0].span());
        let path = dir.join(rel);
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if self.stack.contains(&canonical) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .map(|p| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            self.err(
                Diag::new(
                    "compose::import-cycle",
                    format!("circular import of {rel:?}"),
                    &at,
                    "imported again here",
                )
                .help(format!("import chain: {} → {rel}", chain.join(" → "))),
            );
            return;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => self.file(&path, text),
            Err(e) => {
                let msg = if e.kind() == std::io::ErrorKind::NotFound {
                    "no such file".to_string()
                } else {
                    e.to_string()
                };
                self.err(
                    Diag::new(
                        "compose::missing-import",
                        format!("cannot import {rel:?}: {msg}"),
                        &at,
                        "imported here",
                    )
                    .help(format!(
                        "paths are relative to the importing file: looked for {}",
                        path.display()
                    )),
                );
            }
        }
    }

    fn param(&mut self, node: &KdlNode, source: &Source) -> Option<Param> {
        let (name, _) = self.name_arg(node, source, "param", None)?;
        self.no_children(node, source, "param");
        let props = self.props(node, source, Some(&["type", "default", "doc"]));
        let node_span = span(source, node.span());
        let ty = self.declared_type(&props)?;
        let doc = string_prop(&props, "doc").unwrap_or_default();
        let Some(default) = props.iter().find(|p| p.key == "default") else {
            self.err(
                Diag::new(
                    "compose::missing-property",
                    format!("param `{name}` needs a default"),
                    &node_span,
                    "no default=",
                )
                .help("build-time parameters always have a value; `--arg NAME=VALUE` overrides it"),
            );
            return None;
        };
        let ty = ty.unwrap_or_else(|| Ty::infer(&default.value));
        let value = self.typed(default, &ty)?;
        Some(Param {
            name,
            ty,
            value,
            overridden: false,
            doc,
            span: node_span,
        })
    }

    fn bootarg(&mut self, node: &KdlNode, source: &Source) -> Option<BootArg> {
        let (name, _) = self.name_arg(node, source, "bootarg", None)?;
        self.no_children(node, source, "bootarg");
        let props = self.props(node, source, Some(&["type", "default", "doc"]));
        let node_span = span(source, node.span());
        let declared = self.declared_type(&props)?;
        let default_prop = props.iter().find(|p| p.key == "default");
        let ty = declared
            .or_else(|| default_prop.map(|d| Ty::infer(&d.value)))
            .unwrap_or(Ty::String);
        if ty.boot_kind().is_none() {
            let at = props
                .iter()
                .find(|p| p.key == "type")
                .map(|p| p.span.clone())
                .unwrap_or(node_span.clone());
            self.err(
                Diag::new(
                    "compose::bootarg-type",
                    format!("boot arguments cannot be of type {ty}"),
                    &at,
                    "unsupported here",
                )
                .help("boot arguments are string, bool, u16, u32, u64, i64, ipv4 or ipv4-cidr"),
            );
            return None;
        }
        let default = match default_prop {
            Some(d) => Some(self.typed(d, &ty)?),
            None => None,
        };
        let doc = string_prop(&props, "doc").unwrap_or_default();
        Some(BootArg {
            name,
            ty,
            default,
            doc,
            span: node_span,
        })
    }

    fn declared_type(&mut self, props: &[PropDecl]) -> Option<Option<Ty>> {
        let Some(p) = props.iter().find(|p| p.key == "type") else {
            return Some(None);
        };
        match &p.value {
            KdlValue::String(s) => match Ty::parse(s) {
                Some(t) => Some(Some(t)),
                None => {
                    self.err(
                        Diag::new(
                            "compose::unknown-type",
                            format!("unknown type `{s}`"),
                            &p.span,
                            "not a type",
                        )
                        .help(suggest(s, crate::types::TYPE_NAMES.iter().copied())),
                    );
                    None
                }
            },
            _ => {
                self.err(Diag::new(
                    "compose::unknown-type",
                    "a type is written as a string",
                    &p.span,
                    "not a type",
                ));
                None
            }
        }
    }

    fn typed(&mut self, p: &PropDecl, ty: &Ty) -> Option<Value> {
        match ty.check(&p.value) {
            Ok(v) => Some(v),
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
        }
    }

    fn device(&mut self, node: &KdlNode, source: &Source, dir: &Path) -> Option<DeviceDecl> {
        let kind = node.name().value().to_string();
        let implied = self
            .registry
            .get(&kind)
            .map(|d| d.default_name().to_string());
        let (name, name_span) = self.name_arg(node, source, &kind, implied.as_deref())?;
        self.no_children(node, source, &format!("`{kind}`"));
        let props = self.props(node, source, None);
        Some(DeviceDecl {
            kind,
            name,
            name_span,
            span: span(source, node.span()),
            props,
            dir: dir.to_path_buf(),
        })
    }

    fn application(&mut self, node: &KdlNode, source: &Source, dir: &Path) -> Option<AppDecl> {
        let (name, _) = self.name_arg(node, source, "application", None)?;
        let node_span = span(source, node.span());
        let mut props = self.props(node, source, None);
        let builtin = match props.iter().position(|p| p.key == "builtin") {
            Some(i) => {
                let p = props.remove(i);
                match &p.value {
                    KdlValue::String(s) => Some((s.clone(), p.span)),
                    _ => {
                        self.err(Diag::new(
                            "compose::type-mismatch",
                            "`builtin` expects the name of a built-in application",
                            &p.span,
                            "expected a string",
                        ));
                        return None;
                    }
                }
            }
            None => None,
        };
        let mut app = AppDecl {
            name,
            span: node_span,
            krate: None,
            entry: None,
            builtin,
            props,
            uses: Vec::new(),
            dir: dir.to_path_buf(),
        };
        if let Some(p) = app.props.first().filter(|_| app.builtin.is_none()) {
            {
                let at = p.key_span.clone();
                self.err(
                    Diag::new(
                        "compose::unknown-property",
                        format!("unknown property `{}` on `application`", p.key),
                        &at,
                        "unknown property",
                    )
                    .help("a user application is configured in its block: crate, entry, use"),
                );
            }
        }
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            let cname = child.name().value();
            let cspan = span(source, child.span());
            let strings: Vec<(String, Span)> = child
                .entries()
                .iter()
                .filter_map(|e| match (e.name(), e.value()) {
                    (None, KdlValue::String(s)) => Some((s.clone(), span(source, e.span()))),
                    _ => None,
                })
                .collect();
            if strings.len() != child.entries().len() {
                self.err(Diag::new(
                    "compose::type-mismatch",
                    format!("`{cname}` takes plain string arguments"),
                    &cspan,
                    "unexpected value",
                ));
                continue;
            }
            match cname {
                "crate" | "entry" if strings.len() != 1 => {
                    self.err(Diag::new(
                        "compose::extra-argument",
                        format!("`{cname}` takes exactly one value"),
                        &cspan,
                        "expected one value",
                    ));
                }
                "crate" => {
                    let (rel, at) = strings.into_iter().next()?;
                    app.krate = Some((dir.join(rel), at));
                }
                "entry" => app.entry = strings.into_iter().next(),
                "use" => app.uses.extend(strings),
                other => {
                    let at = span(source, child.name().span());
                    self.err(
                        Diag::new(
                            "compose::unknown-node",
                            format!("unknown node `{other}` in application"),
                            &at,
                            "unknown here",
                        )
                        .help(suggest(other, ["crate", "entry", "use"])),
                    );
                }
            }
        }
        Some(app)
    }

    /// The unikernel node's `target` and `memory`.
    fn unikernel(
        &mut self,
        node: &KdlNode,
        source: &Source,
    ) -> (Option<Named>, Option<(u64, Span)>) {
        let mut target = None;
        let mut memory = None;
        let _ = self.props(node, source, Some(&[]));
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            let cname = child.name().value();
            let at = span(source, child.span());
            let value = child
                .entries()
                .first()
                .filter(|_| child.entries().len() == 1 && child.entries()[0].name().is_none());
            match (cname, value.map(|e| (e.value(), span(source, e.span())))) {
                ("target", Some((KdlValue::String(t), vspan))) => {
                    if crate::target::is_known(t) {
                        target = Some((t.clone(), vspan));
                    } else {
                        self.err(
                            Diag::new(
                                "compose::unknown-target",
                                format!("unknown target `{t}`"),
                                &vspan,
                                "not a target",
                            )
                            .help(suggest(t, crate::target::names())),
                        );
                    }
                }
                ("memory", Some((v, vspan))) => match Ty::Size.check(v) {
                    Ok(Value::Int(n)) if n >= 2 << 20 => memory = Some((n as u64, vspan)),
                    Ok(_) => self.err(
                        Diag::new(
                            "compose::memory",
                            "memory must be at least 2MiB",
                            &vspan,
                            "too small",
                        )
                        .help("Solo5 tenders need at least 2MiB; 64MiB is a comfortable start"),
                    ),
                    Err(e) => self.err(
                        Diag::new(
                            "compose::type-mismatch",
                            format!("`memory` expects a size, found {}", e.found),
                            &vspan,
                            "expected a size",
                        )
                        .maybe_help(e.hint),
                    ),
                },
                ("target" | "memory", _) => self.err(Diag::new(
                    "compose::extra-argument",
                    format!("`{cname}` takes exactly one value"),
                    &at,
                    "expected one value",
                )),
                (other, _) => {
                    let at = span(source, child.name().span());
                    self.err(
                        Diag::new(
                            "compose::unknown-node",
                            format!("unknown node `{other}` in unikernel"),
                            &at,
                            "unknown here",
                        )
                        .help(suggest(other, ["target", "memory"])),
                    );
                }
            }
        }
        (target, memory)
    }

    fn finish(mut self, main: &Path, args: &[(String, String)]) -> Result<Spec, Vec<Diag>> {
        // Resolve overrides: the last definition of a name wins, unless two are in one file.
        let defs = std::mem::take(&mut self.defs);
        let mut kept: Vec<(usize, String, Span, Def)> = Vec::new();
        for (file, name, at, def) in defs {
            if let Some(i) = kept
                .iter()
                .position(|(_, n, _, d)| *n == name && same_namespace(d, &def))
            {
                if kept[i].0 == file {
                    let first = kept[i].2.clone();
                    let d = Diag::new(
                        "compose::duplicate-name",
                        format!("`{name}` is defined twice"),
                        &at,
                        "defined again here",
                    );
                    let d = if first.source.path == at.source.path {
                        d.also(&first, "first defined here")
                    } else {
                        d
                    };
                    self.err(d.help("names are unique in a file; an importing file may override an imported definition"));
                    continue;
                }
                kept.remove(i);
            }
            kept.push((file, name, at, def));
        }
        let mut unikernel = None;
        let mut spec_params = Vec::new();
        let mut bootargs = Vec::new();
        let mut devices = Vec::new();
        let mut apps = Vec::new();
        for (_, name, at, def) in kept {
            match def {
                Def::Unikernel(node, source) => unikernel = Some((name, at, node, source)),
                Def::Param(p) => spec_params.push(p),
                Def::BootArg(b) => bootargs.push(b),
                Def::Device(d) => devices.push(d),
                Def::App(a) => apps.push(a),
            }
        }
        let main_source = Source::new(main, std::fs::read_to_string(main).unwrap_or_default());
        let whole_main = Span {
            source: main_source.clone(),
            span: (0, 0).into(),
        };
        let (name, name_span, target, memory) = match unikernel {
            Some((name, at, node, source)) => {
                let (t, m) = self.unikernel(&node, &source);
                (name, at, t, m)
            }
            None => {
                if self.diags.is_empty() {
                    self.err(
                        Diag::new("compose::missing-unikernel", "the spec has no `unikernel` node", &whole_main, "in this file")
                            .help("start the spec with `unikernel NAME { target unix; memory \"64MiB\" }`"),
                    );
                }
                (String::new(), whole_main.clone(), None, None)
            }
        };
        if apps.len() > 1 {
            let d = Diag::new(
                "compose::two-applications",
                "a unikernel has exactly one application",
                &apps[1].span,
                "second application",
            )
            .also(&apps[0].span, "first application");
            self.err(d);
        }
        let application = apps.into_iter().next();
        if application.is_none() && self.diags.is_empty() {
            self.err(
                Diag::new(
                    "compose::missing-application",
                    "the spec has no `application`",
                    &name_span,
                    "this unikernel runs nothing",
                )
                .help("add `application NAME { crate \"path\"; entry \"crate::start\"; use ... }`"),
            );
        }
        apply_args(&mut spec_params, args, &mut self.diags);
        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let Some(application) = application else {
            return Err(self.diags);
        };
        Ok(Spec {
            name,
            name_span,
            target,
            memory,
            params: spec_params,
            bootargs,
            devices,
            application,
            files: self.files,
        })
    }
}

/// Params, boot arguments, devices and the application share one namespace (they are all
/// names the application can `use`); the unikernel node is its own.
fn same_namespace(a: &Def, b: &Def) -> bool {
    matches!(a, Def::Unikernel(..)) == matches!(b, Def::Unikernel(..))
}

fn apply_args(params: &mut [Param], args: &[(String, String)], diags: &mut Vec<Diag>) {
    for (name, value) in args {
        let Some(p) = params.iter_mut().find(|p| p.name == *name) else {
            let help = if params.is_empty() {
                "the spec declares no build-time parameters".to_string()
            } else {
                suggest(name, params.iter().map(|p| p.name.as_str()))
            };
            diags.push(
                Diag::nowhere(
                    "compose::bad-arg",
                    format!("--arg {name}={value}: the spec has no param `{name}`"),
                )
                .help(help),
            );
            continue;
        };
        match p.ty.check_text(value) {
            Ok(v) => {
                p.value = v;
                p.overridden = true;
            }
            Err(e) => {
                let d = Diag::new(
                    "compose::bad-arg",
                    format!(
                        "--arg {name}={value}: expected {}, found {}",
                        e.expected, e.found
                    ),
                    &p.span,
                    "param declared here",
                );
                diags.push(d.maybe_help(e.hint));
            }
        }
    }
}

fn string_prop(props: &[PropDecl], key: &str) -> Option<String> {
    props
        .iter()
        .find(|p| p.key == key)
        .and_then(|p| match &p.value {
            KdlValue::String(s) => Some(s.clone()),
            _ => None,
        })
}

/// Names of devices, params, boot arguments and applications: lowercase, digits, `-`.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
}

/// Parses `NAME=VALUE` for `--arg`.
pub fn parse_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, found `{s}`")),
    }
}
