//! Stage 3: generate the glue crate: a `Cargo.toml` with exactly pinned path dependencies,
//! the compose workspace's lock file, and a `main.rs` that constructs the devices in graph
//! order and starts the application. Templates live in `templates/` and are rendered with
//! minijinja; each device's constructor is a snippet from its descriptor.

use crate::graph::{App, Graph, PropValue, Use, ident};
use crate::types::Ty;
use minijinja::{Environment, context};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The generated file that holds exactly the application call (included by `main.rs`):
/// a compile error whose primary span lies in it is the spec's application mismatch.
pub const APP_FILE: &str = "application.rs";

/// A generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path relative to the glue directory.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
}

/// Work the build does before compiling, as data (so `generate` stays pure and testable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Pack `dir` into the archive `archive` (relative to the glue directory) for the
    /// assets device `device`; with `block`, the archive is also an image of its own.
    PackAssets {
        device: String,
        dir: PathBuf,
        include: Vec<String>,
        exclude: Vec<String>,
        compress: bool,
        archive: PathBuf,
        block: bool,
        /// The device's `allow-private-keys`: files holding a private key are packed.
        allow_private_keys: bool,
    },
    /// Wrap the archive `archive` into the object `object` (symbols `compose_assets_<ident>_*`)
    /// for the image to link.
    AssetsObject {
        archive: PathBuf,
        ident: String,
        object: PathBuf,
    },
}

/// The rendered glue crate.
#[derive(Debug, Clone)]
pub struct Glue {
    /// Steps to run before compiling.
    pub steps: Vec<Step>,
    /// The cargo package name.
    pub package: String,
    /// The binary's name.
    pub binary: String,
    /// Files to write, relative to the glue directory.
    pub files: Vec<File>,
    /// The file, relative to the glue directory, that holds only the application call
    /// ([`APP_FILE`]); compile errors there are mapped back to the spec.
    pub app_file: PathBuf,
    /// The user application's crate directory, if any (its lock file joins the glue's).
    pub app_dir: Option<PathBuf>,
}

/// Why glue could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GlueError {
    /// No glue template for the target yet.
    #[error("compose cannot generate glue for target {0} yet (supported: {1})")]
    Target(String, String),
    /// A template or a descriptor snippet failed to render (a compose bug).
    #[error("template {0}: {1}")]
    Template(String, String),
    /// A crate's manifest could not be read.
    #[error("{0}")]
    Manifest(String),
}

#[derive(Serialize)]
struct Dep {
    name: String,
    path: String,
    version: String,
}

#[derive(Serialize)]
struct DeviceCtx {
    kind: String,
    name: String,
    name_lit: String,
    ident: String,
    implicit: bool,
    descriptor: String,
    construct: String,
}

/// The link, inside the glue directory, to the compose source root.
pub const SRC_ROOT: &str = "src-root";

/// The link, inside the glue directory, to the project (the spec's directory), through
/// which an application crate inside the project is reached.
pub const SRC_PROJECT: &str = "src-project";

/// The link, inside a project's `_build/`, to the compose tree: an application crate's
/// `[patch.crates-io]` points through it for plain `cargo check` (see docs/projects.md).
pub const SDK_LINK: &str = "sdk";

/// The compose crates an application may depend on by version (`compose-devices = "0.1"`);
/// the glue redirects each to the compose tree with `[patch.crates-io]`.
pub const PATCHED_CRATES: &[(&str, &str)] = &[
    ("compose-devices", "devices/base"),
    ("compose-netstack", "devices/netstack"),
    ("compose-http", "devices/http"),
    ("compose-assets", "devices/assets"),
];

/// The compose source root: where `devices/`, `platforms/` and the lock file are
/// (see [`crate::tree`]: `$COMPOSE_ROOT`, the checkout, or the tree carried in the binary).
/// Exits with a message when the carried tree cannot be unpacked.
pub fn compose_root() -> PathBuf {
    match crate::tree::root() {
        Ok(root) => root,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// (Re)creates `link` as a symbolic link to `target`, atomically, unless it already is one.
pub fn ensure_link(link: &Path, target: &Path) -> std::io::Result<()> {
    if std::fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(());
    }
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = link.file_name().unwrap_or_default().to_string_lossy();
    let tmp = link.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Makes `<project>/_build/sdk` a link to the compose tree (for `cargo check` in the
/// project's application crate).
pub fn ensure_sdk_link(project: &Path) -> std::io::Result<()> {
    let root = compose_root();
    let root = root.canonicalize().unwrap_or(root);
    ensure_link(&project.join("_build").join(SDK_LINK), &root)
}

fn env() -> Result<Environment<'static>, GlueError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    for (name, text) in crate::descriptor::TEMPLATES {
        env.add_template(name, text)
            .map_err(|e| GlueError::Template(name.to_string(), e.to_string()))?;
    }
    Ok(env)
}

/// How a boot argument is read in the glue.
fn boot_get(name: &str, ty: &Ty) -> String {
    format!("boot.args.get::<{}>({name:?})", ty.boot_rust_type())
}

fn const_name(param: &str) -> String {
    param.replace('-', "_").to_uppercase()
}

/// Renders the glue crate for `graph`, whose spec is `spec_file`.
pub fn generate(graph: &Graph, spec_file: &Path) -> Result<Glue, GlueError> {
    let target = crate::target::by_name(&graph.target).ok_or_else(|| {
        GlueError::Target(
            graph.target.clone(),
            crate::target::all()
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let platform = target.platform();
    let root = compose_root();
    let env = env()?;
    let mut boot_used = false;

    // Dependencies: the interface crate, the platform, every device crate, the application.
    let mut deps: BTreeMap<String, PathBuf> = BTreeMap::new();
    deps.insert("compose-devices".into(), root.join("devices/base"));
    deps.insert(platform.krate.into(), root.join(platform.path));
    for d in &graph.devices {
        deps.insert(d.imp.krate.clone(), root.join(&d.imp.path));
    }
    if let App::User { package, dir, .. } = &graph.app {
        deps.insert(package.clone(), dir.clone());
    }
    // Crates of the compose tree are reached through the `src-root` link in the glue
    // directory, and an application inside the project through the `src-project` link, so
    // that they lie inside the glue workspace: cargo then hashes their paths relative to
    // it, and two checkouts or projects in different places build identical code.
    let root_abs = root.canonicalize().unwrap_or_else(|_| root.clone());
    let project = std::path::absolute(spec_dir(spec_file)).unwrap_or_else(|_| spec_dir(spec_file));
    let project = project.canonicalize().unwrap_or(project);
    let glue_path = |path: &Path| -> PathBuf {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Ok(rel) = path.strip_prefix(&root_abs) {
            Path::new(SRC_ROOT).join(rel)
        } else if let Ok(rel) = path.strip_prefix(&project) {
            Path::new(SRC_PROJECT).join(rel)
        } else {
            path
        }
    };
    let mut dependencies = Vec::new();
    for (name, path) in &deps {
        let version = crate_version(path, &root).map_err(GlueError::Manifest)?;
        dependencies.push(Dep {
            name: name.clone(),
            path: glue_path(path).display().to_string(),
            version,
        });
    }
    let patches: Vec<_> = PATCHED_CRATES
        .iter()
        .map(|(name, rel)| context! { name => name, path => Path::new(SRC_ROOT).join(rel).display().to_string() })
        .collect();

    // Devices, with their constructor snippets rendered. A device nothing uses is still
    // built (it may have effects, like a listening socket) but bound to `_name`.
    let mut used = vec![false; graph.devices.len()];
    for d in &graph.devices {
        for (_, dep) in &d.deps {
            used[*dep] = true;
        }
    }
    match &graph.app {
        App::User { uses, .. } => uses.iter().for_each(|u| {
            if let Use::Device(i, _) = u {
                used[*i] = true;
            }
        }),
        App::Builtin(i) => used[*i] = true,
    }
    let mut devices = Vec::new();
    let mut steps = Vec::new();
    let mut embedded = Vec::new();
    for (index, d) in graph.devices.iter().enumerate() {
        let mut vars: BTreeMap<String, minijinja::Value> = BTreeMap::new();
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        vars.insert("name".into(), format!("{:?}", d.name).into());
        // The unikernel's memory in bytes, for constructors that size themselves by it.
        vars.insert("memory".into(), format!("{}_u64", graph.memory).into());
        // The unikernel's name, for devices that report it (the monitoring device's tag).
        vars.insert("unikernel".into(), format!("{:?}", graph.name).into());
        for (key, _, value) in &d.props {
            if let PropValue::Given(v) | PropValue::Default(v) | PropValue::Param(_, v) = value {
                raw.insert(key.replace('-', "_"), v.text());
            }
        }
        for step in &d.descriptor.build {
            match step {
                crate::descriptor::BuildStep::PackAssets {
                    dir,
                    include,
                    exclude,
                    compress,
                    image_when,
                } => {
                    let archive = PathBuf::from("assets").join(format!("{}.car", d.name));
                    vars.insert(
                        "archive".into(),
                        format!("{:?}", archive.display().to_string()).into(),
                    );
                    vars.insert("archive_fn".into(), ident(&d.name).into());
                    let block = image_when
                        .as_ref()
                        .is_some_and(|c| crate::target::condition_holds(d, c));
                    let object = PathBuf::from("assets").join(format!("{}.o", d.name));
                    if !block {
                        embedded.push(context! { ident => ident(&d.name), object => object.display().to_string() });
                    }
                    let text = |k: &Option<String>| {
                        k.as_ref()
                            .and_then(|k| raw.get(&k.replace('-', "_")))
                            .cloned()
                    };
                    let words = |k: &Option<String>| {
                        text(k)
                            .map(|s| s.split_whitespace().map(str::to_string).collect())
                            .unwrap_or_default()
                    };
                    let dir = text(&Some(dir.clone()))
                        .map(PathBuf::from)
                        .unwrap_or_default();
                    steps.push(Step::PackAssets {
                        device: d.name.clone(),
                        dir: d.dir.join(dir),
                        include: words(include),
                        exclude: words(exclude),
                        compress: text(compress).is_none_or(|c| c == "true"),
                        archive: archive.clone(),
                        block,
                        allow_private_keys: raw
                            .get("allow_private_keys")
                            .is_some_and(|v| v == "true"),
                    });
                    if !block {
                        steps.push(Step::AssetsObject {
                            archive,
                            ident: ident(&d.name),
                            object,
                        });
                    }
                }
            }
        }
        vars.insert("raw".into(), minijinja::Value::from_serialize(&raw));
        for (slot, dep) in &d.deps {
            vars.insert(
                slot.replace('-', "_"),
                ident(&graph.devices[*dep].name).into(),
            );
            // The referenced device's name, for messages ("secret `tls`: ...").
            vars.insert(
                format!("{}_name", slot.replace('-', "_")),
                format!("{:?}", graph.devices[*dep].name).into(),
            );
        }
        for (key, ty, value) in &d.props {
            let optional = d
                .descriptor
                .properties
                .iter()
                .any(|p| p.name == *key && p.default.is_none() && !p.required);
            let expr = match value {
                // Integers carry their type, so a snippet may use them in any expression.
                PropValue::Given(v) | PropValue::Default(v) | PropValue::Param(_, v) => match v {
                    crate::types::Value::Int(i) => format!("{i}_{}", ty.rust_type()),
                    v => v.rust_expr(),
                },
                PropValue::Absent => "None".into(),
                PropValue::BootArg(name) => {
                    boot_used = true;
                    boot_get(name, ty)
                }
            };
            let expr = if optional && !matches!(value, PropValue::Absent) {
                format!("Some({expr})")
            } else {
                expr
            };
            vars.insert(key.replace('-', "_"), expr.into());
        }
        let construct = env
            .render_str(&d.imp.construct, &vars)
            .map_err(|e| GlueError::Template(d.descriptor.file.clone(), e.to_string()))?;
        if construct.contains("&boot") || construct.contains("boot.args") {
            boot_used = true;
        }
        devices.push(DeviceCtx {
            kind: d.descriptor.kind.clone(),
            name: d.name.clone(),
            name_lit: format!("{:?}", d.name),
            ident: if used[index] {
                ident(&d.name)
            } else {
                format!("_{}", ident(&d.name))
            },
            implicit: d.implicit,
            descriptor: d.descriptor.file.clone(),
            construct,
        });
    }

    // The application call (rendered into its own file, see [`APP_FILE`]).
    let app_call = match &graph.app {
        App::User { entry, uses, .. } => {
            let args: Vec<String> = uses
                .iter()
                .map(|u| match u {
                    Use::Device(i, _) => ident(&graph.devices[*i].name),
                    Use::Param(p) => const_name(p),
                    Use::BootArg(b) => {
                        boot_used = true;
                        let ty = graph
                            .bootargs
                            .iter()
                            .find(|x| x.name == *b)
                            .map_or(Ty::String, |x| x.ty.clone());
                        boot_get(b, &ty)
                    }
                })
                .collect();
            if args.len() > 2 {
                format!("{entry}(\n        {},\n    )", args.join(",\n        "))
            } else {
                format!("{entry}({})", args.join(", "))
            }
        }
        // A built-in application is the last device; its constructor is the main future.
        App::Builtin(i) => devices.remove(*i).construct,
    };

    let params: Vec<_> = graph
        .params
        .iter()
        .map(|p| context! { const_name => const_name(&p.name), rust_type => p.ty.rust_type(), expr => p.value.rust_expr(), doc => p.doc })
        .collect();
    let bootargs: Vec<_> = graph
        .bootargs
        .iter()
        .map(|b| {
            context! {
                name_lit => format!("{:?}", b.name),
                kind => b.ty.boot_kind().unwrap_or("Str"),
                default => b.default.as_ref().map_or("None".to_string(), |v| format!("Some({:?})", v.text())),
                doc_lit => format!("{:?}", b.doc),
            }
        })
        .collect();
    // What the target adds (for Solo5, the manifest note of the devices a tender attaches).
    let extra = target
        .glue_context(&crate::target::host_devices(graph))
        .map_err(|e| GlueError::Template(format!("target {}", target.name()), e))?;
    let package = format!("{}-{}-glue", graph.name, graph.target);
    // Unique per target: hvt and spt builds share a rustc target, hence cargo's output path.
    let binary = format!("{}-{}", graph.name, graph.target);
    let spec_name = spec_file.file_name().map_or_else(
        || spec_file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let embedded_any = !embedded.is_empty();
    let base = context! {
        name => graph.name,
        target => graph.target,
        compose_version => env!("CARGO_PKG_VERSION"),
        spec_file => spec_name,
        package => package,
        binary => binary,
        dependencies => dependencies,
        patches => patches,
        devices => devices,
        params => params,
        bootargs => bootargs,
        app_name => graph.app_name,
        app_call => app_call,
        boot_binding => if boot_used { "let boot = " } else { "" },
        embedded => embedded,
        platform_crate => platform.krate.replace('-', "_"),
        triple => target.triple().unwrap_or_default(),
        app_file => APP_FILE,
        opt_level => 3,
        panic => "abort",
    };
    let ctx = context! { ..base, ..minijinja::Value::from_serialize(&extra) };
    let render = |name: &str| -> Result<String, GlueError> {
        let t = env
            .get_template(name)
            .map_err(|e| GlueError::Template(name.into(), e.to_string()))?;
        t.render(&ctx)
            .map_err(|e| GlueError::Template(name.into(), e.to_string()))
    };
    let cargo_toml = render("Cargo.toml.j2")?;
    let main_rs = render(&format!("{}/main.rs.j2", target.template()))?;
    let application_rs = render("application.rs.j2")?;
    let mut files = vec![
        File {
            path: "Cargo.toml".into(),
            contents: cargo_toml,
        },
        File {
            path: "main.rs".into(),
            contents: main_rs,
        },
        File {
            path: APP_FILE.into(),
            contents: application_rs,
        },
    ];
    if embedded_any {
        files.push(File {
            path: "build.rs".into(),
            contents: render("build.rs.j2")?,
        });
    }
    if crate::descriptor::TEMPLATES
        .iter()
        .any(|(n, _)| *n == format!("{}/config.toml.j2", target.template()))
    {
        files.push(File {
            path: ".cargo/config.toml".into(),
            contents: render(&format!("{}/config.toml.j2", target.template()))?,
        });
    }
    Ok(Glue {
        steps,
        package,
        binary,
        files,
        app_file: APP_FILE.into(),
        app_dir: match &graph.app {
            App::User { dir, .. } => Some(dir.clone()),
            App::Builtin(_) => None,
        },
    })
}

#[derive(serde::Deserialize)]
struct Manifest {
    package: Option<Package>,
    workspace: Option<Workspace>,
}
#[derive(serde::Deserialize)]
struct Package {
    version: Option<toml::Value>,
}
#[derive(serde::Deserialize)]
struct Workspace {
    package: Option<WorkspacePackage>,
}
#[derive(serde::Deserialize)]
struct WorkspacePackage {
    version: Option<String>,
}

fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A crate's version, following `version.workspace = true` to the compose workspace.
fn crate_version(dir: &Path, root: &Path) -> Result<String, String> {
    let m = read_manifest(&dir.join("Cargo.toml"))?;
    match m.package.and_then(|p| p.version) {
        Some(toml::Value::String(v)) => Ok(v),
        Some(toml::Value::Table(_)) => read_manifest(&root.join("Cargo.toml"))?
            .workspace
            .and_then(|w| w.package)
            .and_then(|p| p.version)
            .ok_or_else(|| format!("{}: workspace version not found", root.display())),
        _ => Ok("0.0.0".into()),
    }
}

/// Writes the glue into `dir`, atomically per file and only where the contents changed
/// (unchanged files keep their mtime, so cargo does not rebuild them). Carries over the
/// compose workspace's lock file the first time.
pub fn write(glue: &Glue, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for f in &glue.files {
        let path = dir.join(&f.path);
        if write_if_changed(&path, f.contents.as_bytes())? {
            written.push(f.path.clone());
        }
    }
    // The links to the compose tree and to the project (replaced atomically if they point
    // elsewhere). The glue directory is `<project>/_build/<name>-<target>`.
    let root = compose_root()
        .canonicalize()
        .unwrap_or_else(|_| compose_root());
    ensure_link(&dir.join(SRC_ROOT), &root)?;
    if let Some(project) = dir.parent().and_then(Path::parent) {
        ensure_link(&dir.join(SRC_PROJECT), &project.canonicalize()?)?;
        ensure_sdk_link(project)?;
    }
    let lock = dir.join("Cargo.lock");
    if !lock.exists() {
        let root_lock = compose_root().join("Cargo.lock");
        if let Ok(bytes) = std::fs::read(root_lock) {
            // The application's own lock file, if it has one, pins its crates.io
            // dependencies: its registry packages join compose's.
            let app_lock = glue.app_dir.as_ref().and_then(|d| {
                std::fs::read_to_string(d.join("Cargo.lock"))
                    .ok()
                    .or_else(|| std::fs::read_to_string(d.parent()?.join("Cargo.lock")).ok())
            });
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let merged = match app_lock {
                Some(app) => merge_locks(&text, &app),
                None => text,
            };
            write_if_changed(&lock, merged.as_bytes())?;
            written.push("Cargo.lock".into());
        }
    }
    Ok(written)
}

/// The `[[package]]` blocks of a lock file, each with its (name, version, source) key;
/// path packages (no `source`) have an empty source.
fn lock_packages(text: &str) -> Vec<((String, String, String), String)> {
    let mut out = Vec::new();
    for block in text.split("\n[[package]]\n").skip(1) {
        let block = block.split("\n\n").next().unwrap_or(block).trim_end();
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = ")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default()
        };
        out.push((
            (field("name"), field("version"), field("source")),
            block.to_string(),
        ));
    }
    out
}

/// compose's lock file with the registry packages of `app` that it lacks appended (cargo
/// reads packages in any order, prunes what the glue does not use, and rewrites it sorted).
pub fn merge_locks(compose: &str, app: &str) -> String {
    let have: std::collections::BTreeSet<_> =
        lock_packages(compose).into_iter().map(|(k, _)| k).collect();
    let mut out = compose.trim_end().to_string();
    out.push('\n');
    for (key, block) in lock_packages(app) {
        if !key.2.is_empty() && !have.contains(&key) {
            out.push_str("\n[[package]]\n");
            out.push_str(&block);
            out.push('\n');
        }
    }
    out
}

/// The spec's directory (its project), as given.
fn spec_dir(spec: &Path) -> PathBuf {
    spec.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Writes `bytes` to `path` through a temporary file and a rename, unless it already holds
/// exactly them. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    crate::atomic_write(path, bytes)?;
    Ok(true)
}

#[cfg(test)]
mod lock_tests {
    use super::merge_locks;

    const COMPOSE: &str = "# This file is automatically @generated by Cargo.\nversion = 4\n\n[[package]]\nname = \"compose-devices\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"spin\"\nversion = \"0.10.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"aa\"\n";
    const APP: &str = "version = 4\n\n[[package]]\nname = \"compose-devices\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"itoa\"\nversion = \"1.0.15\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"bb\"\n\n[[package]]\nname = \"myapp\"\nversion = \"0.1.0\"\ndependencies = [\n \"compose-devices\",\n \"itoa\",\n]\n\n[[package]]\nname = \"spin\"\nversion = \"0.10.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"aa\"\n";

    #[test]
    fn adds_only_the_registry_packages_compose_lacks() {
        let merged = merge_locks(COMPOSE, APP);
        assert!(merged.starts_with(COMPOSE.trim_end()));
        assert_eq!(merged.matches("name = \"itoa\"").count(), 1);
        assert_eq!(merged.matches("name = \"spin\"").count(), 1);
        assert_eq!(merged.matches("name = \"compose-devices\"").count(), 1);
        assert!(
            !merged.contains("myapp"),
            "path packages are the glue's to resolve"
        );
        assert_eq!(merge_locks(COMPOSE, COMPOSE).trim_end(), COMPOSE.trim_end());
    }
}
