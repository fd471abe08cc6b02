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
    /// The main spec's text, as read (never read twice).
    main: Option<Source>,
    /// The `unikernel` node of each file that has one (file index, node name).
    unikernels: Vec<(usize, Span)>,
}

/// Reads the spec at `path` and everything it imports, then applies `--arg NAME=VALUE`s.
pub fn load(
    path: &Path,
    args: &[(String, String)],
    registry: &Registry,
) -> Result<Spec, Vec<Diag>> {
    let text = match read_spec_file(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Diag::nowhere(
                e.code(),
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
        main: None,
        unikernels: Vec::new(),
    };
    loader.file(path, text, None);
    let mut diags = match loader.finish(path, args) {
        Ok(spec) => return Ok(spec),
        Err(d) => d,
    };
    // Thousands of errors help no one, and rendering each costs a pass over its file.
    if diags.len() > MAX_DIAGNOSTICS {
        let more = diags.len() - MAX_DIAGNOSTICS;
        diags.truncate(MAX_DIAGNOSTICS);
        diags.push(Diag::nowhere(
            "compose::too-many-errors",
            format!("{more} more errors not shown"),
        ));
    }
    Err(diags)
}

/// The most diagnostics one `load` reports; the rest are counted.
pub const MAX_DIAGNOSTICS: usize = 50;

/// How the import of a file went wrong, for a diagnostic at the import node.
fn import_not_kdl(at: &Span, rel: &str, path: &Path, why: String) -> Diag {
    Diag::new(
        "compose::not-kdl",
        format!("cannot import {rel:?}: not a KDL spec"),
        at,
        "imported here",
    )
    .help(format!(
        "{why}; its content is not shown (run `compose check {}` to see it)",
        path.display()
    ))
}

/// Parses checked text on a thread with a large stack: the KDL parser recurses, and the
/// scan bounds only the recursion it knows of.
fn parse_kdl(text: &str) -> Result<KdlDocument, kdl::KdlError> {
    std::thread::scope(|s| {
        let parser = std::thread::Builder::new()
            .name("kdl-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(s, || KdlDocument::parse(text));
        match parser {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => KdlDocument::parse(text),
        }
    })
}

/// The parser thread's stack (reserved, touched only as deep as the parse goes).
const PARSER_STACK: usize = 256 << 20;

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
    /// Reads one file's nodes. `import` is the import node's value and the name written
    /// there, for a file that another imports: its problems are reported at the import,
    /// without showing its content.
    fn file(&mut self, path: &Path, text: String, import: Option<(&Span, &str)>) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let source = Source::new(path, text);
        if import.is_none() {
            self.main = Some(source.clone());
        }
        let checked = scan(&source.text);
        let parsed = match &checked {
            Ok(blanked) => Some(parse_kdl(blanked)),
            Err(_) => None,
        };
        let doc = match (checked, parsed) {
            (_, Some(Ok(doc))) => doc,
            (Err(limit), _) => {
                let (code, offset, message, label, help) = match limit {
                    ScanError::TooDeep(at) => (
                        "compose::nesting-too-deep",
                        at,
                        format!("blocks nest deeper than {MAX_NESTING} levels"),
                        "too deep",
                        "a spec nests one or two levels of `{ ... }`",
                    ),
                    ScanError::Unmatched(at) => (
                        "compose::syntax",
                        at,
                        "invalid KDL: a `}` that closes no block".to_string(),
                        "unmatched",
                        "remove it, or open its block with `{`",
                    ),
                    ScanError::SlashdashNesting(at) => (
                        "compose::nesting-too-deep",
                        at,
                        format!(
                            "blocks commented out with `/-` nest deeper than {MAX_SLASHDASH_NESTING} levels"
                        ),
                        "too deep",
                        "one `/-` comments out a whole block, with every block inside it",
                    ),
                    ScanError::Slashdashes(at) => (
                        "compose::syntax",
                        at,
                        format!("more than {MAX_SLASHDASH_RUN} `/-` in a row"),
                        "one too many",
                        "one `/-` comments out the node, entry or block that follows",
                    ),
                };
                let at = span(&source, (offset, 1).into());
                match import {
                    Some((node, rel)) => {
                        let (line, col) = at.line_col();
                        let why = format!("{}:{line}:{col}: {message}", path.display());
                        self.err(import_not_kdl(node, rel, path, why));
                    }
                    None => self.err(Diag::new(code, message, &at, label).help(help)),
                }
                return;
            }
            (Ok(_), parsed) => {
                let e = match parsed {
                    Some(Err(e)) => e,
                    _ => unreachable!("a scanned file is parsed"),
                };
                match import {
                    Some((node, rel)) => {
                        let first = syntax_errors(e, &source).into_iter().next();
                        let why = match first.as_ref().and_then(|d| d.location().zip(Some(d))) {
                            Some(((file, line, col), d)) => {
                                format!("{file}:{line}:{col}: {}", d.message)
                            }
                            None => "it does not parse as KDL".to_string(),
                        };
                        self.err(import_not_kdl(node, rel, path, why));
                    }
                    None => self.diags.extend(syntax_errors(e, &source)),
                }
                return;
            }
        };
        self.stack.push(canonical);
        self.files.push(path.to_path_buf());
        let file_index = self.files.len() - 1;
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
                if let Some(first) = self.unikernels.iter().find(|(f, _)| *f == file) {
                    let first = first.1.clone();
                    self.err(
                        Diag::new(
                            "compose::two-unikernels",
                            "a spec has one `unikernel` node",
                            &name_span,
                            "second unikernel",
                        )
                        .also(&first, "first unikernel")
                        .help("merge the two; a spec that imports this one may declare its own `unikernel` to replace it"),
                    );
                    return;
                }
                self.unikernels.push((file, name_span.clone()));
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

    /// Whether `child` repeats a setting given once already in this block (reported, with
    /// both places); otherwise records it.
    fn repeated(
        &mut self,
        seen: &mut Vec<(String, Span)>,
        child: &KdlNode,
        source: &Source,
        block: &str,
    ) -> bool {
        let name = child.name().value();
        let at = span(source, child.span());
        if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
            let first = first.clone();
            self.err(
                Diag::new(
                    "compose::repeated-setting",
                    format!("`{name}` is given twice in `{block}`"),
                    &at,
                    "given again here",
                )
                .also(&first, "first given here")
                .help(format!("`{name}` is set once; keep one of them")),
            );
            return true;
        }
        seen.push((name.to_string(), at));
        false
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
        match read_spec_file(&path) {
            Ok(text) => self.file(&path, text, Some((&at, rel))),
            Err(FileError::NotText) => self.err(import_not_kdl(
                &at,
                rel,
                &path,
                FileError::NotText.to_string(),
            )),
            Err(e) => {
                let help = match &e {
                    FileError::Io(_) => format!(
                        "paths are relative to the importing file: looked for {}",
                        path.display()
                    ),
                    FileError::NotRegular(_) => "an import names a spec file".to_string(),
                    _ => format!("a spec file is at most {} KiB", MAX_SPEC_BYTES >> 10),
                };
                let code = match &e {
                    FileError::Io(_) => "compose::missing-import",
                    e => e.code(),
                };
                self.err(
                    Diag::new(
                        code,
                        format!("cannot import {rel:?}: {e}"),
                        &at,
                        "imported here",
                    )
                    .help(help),
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
        let mut seen = Vec::new();
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            let cname = child.name().value();
            let cspan = span(source, child.span());
            if matches!(cname, "crate" | "entry")
                && self.repeated(&mut seen, child, source, "application")
            {
                continue;
            }
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
        let mut seen = Vec::new();
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            let cname = child.name().value();
            if matches!(cname, "target" | "memory")
                && self.repeated(&mut seen, child, source, "unikernel")
            {
                continue;
            }
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
        let main_source = self.main.clone().unwrap_or_else(|| Source::new(main, ""));
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

/// The largest spec file compose reads (64 KiB, some thirty times the largest example); a
/// larger one is refused, and never read beyond this. The limit also bounds the time and
/// stack the KDL parser spends on a hostile file.
pub const MAX_SPEC_BYTES: u64 = 64 << 10;

/// The deepest nesting of `{ ... }` blocks a spec may have. Specs nest one or two levels;
/// the KDL parser recurses per level, so a deeper file is refused before it is parsed.
pub const MAX_NESTING: usize = 64;

/// The longest run of `/-` (slashdash) markers with nothing but whitespace between them;
/// the KDL parser recurses per marker.
pub const MAX_SLASHDASH_RUN: usize = 16;

/// The deepest nesting of blocks commented out with `/-` (the KDL parser's time doubles
/// with each level).
pub const MAX_SLASHDASH_NESTING: usize = 4;

/// What reading a spec file can go wrong with. None of them shows the file's content.
#[derive(Debug)]
enum FileError {
    /// Opening or reading failed (`NotFound` among them).
    Io(std::io::Error),
    /// Not a regular file: a directory, a FIFO, a device, a socket.
    NotRegular(&'static str),
    /// Larger than [`MAX_SPEC_BYTES`].
    TooLarge,
    /// Not UTF-8 text.
    NotText,
}

impl FileError {
    fn code(&self) -> &'static str {
        match self {
            FileError::Io(_) => "compose::io",
            FileError::NotRegular(_) => "compose::not-a-file",
            FileError::TooLarge => "compose::spec-too-large",
            FileError::NotText => "compose::not-kdl",
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                f.write_str("no such file")
            }
            FileError::Io(e) => write!(f, "{e}"),
            FileError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            FileError::TooLarge => write!(
                f,
                "it is larger than {} KiB, the limit for a spec file",
                MAX_SPEC_BYTES >> 10
            ),
            FileError::NotText => f.write_str("it is not UTF-8 text, so not a KDL spec"),
        }
    }
}

fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Reads a spec file: only a regular file (checked before it is opened, so a FIFO is never
/// opened and a device never read, and again on the open file), at most
/// [`MAX_SPEC_BYTES`], and only UTF-8 text. Symbolic links are followed.
fn read_spec_file(path: &Path) -> Result<String, FileError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let meta = std::fs::metadata(path).map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(file_kind(meta.file_type())));
    }
    // O_NONBLOCK: should the file be swapped for a FIFO after the check, opening it does
    // not wait for a writer; the check on the open file then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(FileError::Io)?;
    let meta = file.metadata().map_err(FileError::Io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(file_kind(meta.file_type())));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(FileError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotText)
}

/// A limit the pre-parse scan found exceeded, at a byte offset.
#[derive(Debug, PartialEq, Eq)]
enum ScanError {
    /// A `{` opening level [`MAX_NESTING`] + 1.
    TooDeep(usize),
    /// A `}` that closes nothing.
    Unmatched(usize),
    /// The `/-` that makes a run longer than [`MAX_SLASHDASH_RUN`].
    Slashdashes(usize),
    /// A `{` nesting commented-out blocks deeper than [`MAX_SLASHDASH_NESTING`].
    SlashdashNesting(usize),
}

/// KDL's newlines, as byte sequences.
const NEWLINES: &[&[u8]] = &[
    b"\r",
    b"\n",
    "\u{85}".as_bytes(),
    b"\x0b",
    b"\x0c",
    "\u{2028}".as_bytes(),
    "\u{2029}".as_bytes(),
];

fn newline_at(b: &[u8], i: usize) -> Option<usize> {
    NEWLINES
        .iter()
        .find(|n| b[i..].starts_with(n))
        .map(|n| n.len())
}

/// Scans KDL v2 text before it reaches the parser, which recurses per nesting level, per
/// `/-` in a run and per piece of a block comment: checks nesting and slashdash runs, and
/// returns the text with the inside of every block comment blanked to spaces (newlines
/// kept, so every byte offset and line stays where it was). Strings (`"..."` with escapes,
/// `"""` multi-line, `#"..."#` raw with any number of `#`) and `//` comments are skipped;
/// an unterminated string or comment ends the scan (the parser reports it).
fn scan(src: &str) -> Result<String, ScanError> {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let (mut i, mut depth, mut run) = (0usize, 0usize, 0usize);
    // Whether each open block is commented out, and how many are; whether a `/-` is
    // pending (it applies to the node, entry or block that follows it), and whether a
    // token has come since (after which a newline ends the node).
    let (mut blocks, mut slashed): (Vec<bool>, usize) = (Vec::new(), 0);
    let (mut pending, mut token) = (false, false);
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'/' if next == Some(b'/') => {
                i += 2;
                while i < b.len() && newline_at(b, i).is_none() {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let start = i + 2;
                let (mut j, mut level) = (start, 1usize);
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        level += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        level -= 1;
                        if level == 0 {
                            break;
                        }
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                for x in &mut out[start..j] {
                    if *x != b'\n' && *x != b'\r' {
                        *x = b' ';
                    }
                }
                i = j + 2;
            }
            b'/' if next == Some(b'-') => {
                run += 1;
                (pending, token) = (true, false);
                if run > MAX_SLASHDASH_RUN {
                    return Err(ScanError::Slashdashes(i));
                }
                i += 2;
            }
            b'"' | b'#' => {
                run = 0;
                token = true;
                let hashes = b[i..].iter().take_while(|&&x| x == b'#').count();
                let q = i + hashes;
                if b.get(q) != Some(&b'"') {
                    // A keyword (`#true`) or a stray `#`: the parser judges it.
                    i = q.max(i + 1);
                    continue;
                }
                let multi = b[q..].starts_with(b"\"\"\"");
                let mut close = if multi {
                    b"\"\"\"".to_vec()
                } else {
                    b"\"".to_vec()
                };
                close.extend(std::iter::repeat_n(b'#', hashes));
                let mut j = q + if multi { 3 } else { 1 };
                loop {
                    if j >= b.len() {
                        return Ok(String::from_utf8(out).unwrap_or_default());
                    }
                    if hashes == 0 && b[j] == b'\\' {
                        j += 2;
                    } else if b[j..].starts_with(&close) {
                        j += close.len();
                        break;
                    } else {
                        j += 1;
                    }
                }
                i = j;
            }
            b'{' => {
                run = 0;
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ScanError::TooDeep(i));
                }
                let inside = blocks.last().copied().unwrap_or(false);
                blocks.push(pending || inside);
                if pending || inside {
                    slashed += 1;
                    if slashed > MAX_SLASHDASH_NESTING {
                        return Err(ScanError::SlashdashNesting(i));
                    }
                }
                (pending, token) = (false, false);
                i += 1;
            }
            b'}' => {
                run = 0;
                let Some(d) = depth.checked_sub(1) else {
                    return Err(ScanError::Unmatched(i));
                };
                depth = d;
                if blocks.pop() == Some(true) {
                    slashed -= 1;
                }
                (pending, token) = (false, false);
                i += 1;
            }
            b';' => {
                (run, pending, token) = (0, false, false);
                i += 1;
            }
            b' ' | b'\t' | b'\\' => i += 1,
            _ if newline_at(b, i).is_some() => {
                if pending && token {
                    (pending, token) = (false, false);
                }
                i += newline_at(b, i).unwrap_or(1);
            }
            _ if c >= 0x80 => {
                let ch = src.get(i..).and_then(|t| t.chars().next()).unwrap_or(' ');
                if !ch.is_whitespace() {
                    run = 0;
                    token = true;
                }
                i += ch.len_utf8();
            }
            _ => {
                run = 0;
                token = true;
                i += 1;
            }
        }
    }
    // Only ASCII spaces replaced whole bytes inside comments; the text stays UTF-8.
    Ok(String::from_utf8(out).unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_skips_strings_and_comments() {
        let ok = "a \"{{{\" #\"}}}\"# ##\"\"#}\"## \"\\\"{\" /* { /* } */ { */ // {{{\nb \"\"\"\n}}}\n\"\"\" { c }";
        let out = scan(ok).unwrap();
        assert_eq!(out.len(), ok.len());
        assert!(out.contains("/*") && !out.contains("/* {"));
        assert_eq!(scan("}"), Err(ScanError::Unmatched(0)));
        let deep = format!("{}{}", "a {".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert!(scan(&deep).is_ok());
        let deeper = format!("a {{ {deep} }}");
        assert_eq!(
            scan(&deeper),
            Err(ScanError::TooDeep(2 + 3 * MAX_NESTING + 1))
        );
        let run = "/- ".repeat(MAX_SLASHDASH_RUN);
        assert!(scan(&format!("{run}a")).is_ok());
        assert!(matches!(
            scan(&format!("{run}/- a")),
            Err(ScanError::Slashdashes(_))
        ));
        // Whitespace and comments do not break a run; a node does.
        assert!(scan(&format!("{run}a\n{run}b")).is_ok());
        assert!(matches!(
            scan(&format!("{run}/* x */ /-a")),
            Err(ScanError::Slashdashes(_))
        ));
        // Unterminated strings and comments end the scan; the parser reports them.
        assert!(scan("a \"{{{").is_ok());
        assert!(scan("a /* {{{").is_ok());
    }

    #[test]
    fn every_example_and_ui_spec_passes_the_scan() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut dirs = vec![root.join("specs"), root.join("tests/ui")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                // Build directories hold links back into the tree (src-root): not followed.
                let kind = e.file_type().unwrap();
                if kind.is_dir() && e.file_name() != "_build" {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "kdl") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 50, "{files:?}");
        for f in files {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let expect_deep = f.to_string_lossy().contains("nesting-too-deep");
            let expect_other = ["unmatched-brace", "slashdash-run", "slashdash-nesting"]
                .iter()
                .any(|c| f.to_string_lossy().contains(c));
            match scan(&text) {
                Ok(blanked) => {
                    assert!(!expect_deep && !expect_other, "{}", f.display());
                    // Blanking comments keeps every node the parser would see.
                    if let Ok(doc) = KdlDocument::parse(&text) {
                        let again = KdlDocument::parse(&blanked).unwrap();
                        assert_eq!(doc.nodes().len(), again.nodes().len(), "{}", f.display());
                    }
                }
                Err(ScanError::TooDeep(_)) => assert!(expect_deep, "{}", f.display()),
                Err(_) => assert!(expect_other, "{}", f.display()),
            }
        }
    }
}
