//! The inputs of a build, hashed into its store key: everything that can change the
//! output, and nothing that depends on where the sources are.
//!
//! [`key`] computes the key of one build from:
//!
//! * compose's version, the resolved graph (as `compose describe --format json` shows it)
//!   and the generated glue files (with the compose tree and the spec's directory replaced
//!   by fixed names);
//! * the toolchain (`rustc -vV`) and the target triple;
//! * the lock files: the compose workspace's `Cargo.lock` and the glue's own (the one
//!   cargo builds with); crates.io dependencies are covered by them;
//! * every file of every path crate in the glue's dependency closure, from the compose
//!   tree or the user's tree (normal and build dependencies, for the target platform, as
//!   `cargo metadata` resolves them), less each crate's build output (`target/`,
//!   `_build/`), VCS directories and nested packages;
//! * the compose workspace's `Cargo.toml` (crates inherit from it) and, of every cargo
//!   configuration file cargo reads for the glue (`.cargo/config.toml` in the glue
//!   directory's ancestors and in `$CARGO_HOME`), the tables that can change the output
//!   (not where crates come from: a vendored, offline build has the key of an online one);
//! * the environment variables that reach the build ([`ENV_VARS`], and the
//!   `CARGO_PROFILE_*`, `CARGO_TARGET_*`, `CARGO_BUILD_*` and `CARGO_UNSTABLE_*`
//!   families cargo honours, less those compose removes before running cargo);
//! * exactly the files each `assets` device packs ([`compose_assets::select`]), and,
//!   when `SOURCE_DATE_EPOCH` is unset, their modification times (each file's time in
//!   the archive, sent as `Last-Modified`).
//!
//! Every label is relative: `crate/devices/netstack/src/lib.rs` for the compose tree,
//! `spec/...` for paths relative to the spec's directory. The same spec built from two
//! places therefore has one key.
//!
//! The closure comes from `cargo metadata --offline` on the glue manifest (once online if
//! the offline run fails). It is cached in the store's `.cache/closure-v1/`, valid while
//! the glue manifest and every manifest, lock and config file that went into it are
//! unchanged (checked by their sha256), so an unchanged build does not run cargo.

use crate::glue::{Glue, Step};
use crate::graph::Graph;
use crate::store::{KeyBuilder, KeyOutcome, Store};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Environment variables that reach the build and so are part of its key (when set):
/// the bundle's and asset archive's time and the switch that unlocks unstable features.
/// The variables that choose the compiler (`RUSTC`, `RUSTUP_TOOLCHAIN`, which rustup sets
/// for every command it proxies) are not: the key has the chosen compiler's own `rustc
/// -vV`, which says the same without depending on how it was found.
pub const ENV_VARS: &[&str] = &["SOURCE_DATE_EPOCH", "RUSTC_BOOTSTRAP", "CARGO_INCREMENTAL"];

/// Members of [`ENV_PREFIXES`]' families that cannot change the output.
const ENV_WITHOUT_EFFECT: &[&str] = &[
    "CARGO_BUILD_JOBS",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
];

/// Families of cargo's configuration variables, which override profile, target and build
/// settings.
const ENV_PREFIXES: &[&str] = &[
    "CARGO_PROFILE_",
    "CARGO_TARGET_",
    "CARGO_BUILD_",
    "CARGO_UNSTABLE_",
];

/// What a build's key is computed from (besides the environment and the files named).
pub struct KeyInputs<'a> {
    /// The resolved graph.
    pub graph: &'a Graph,
    /// The generated glue.
    pub glue: &'a Glue,
    /// Where the glue is (or will be) written.
    pub glue_dir: &'a Path,
    /// The spec file.
    pub spec: &'a Path,
    /// The compose tree, canonical.
    pub root: &'a Path,
    /// `rustc -vV`.
    pub toolchain: &'a str,
    /// The rustc target triple.
    pub triple: &'a str,
    /// cargo's target directory (the per-unikernel build lock lives there).
    pub target_dir: &'a Path,
}

/// A path crate of the glue's dependency closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathCrate {
    /// Its package name.
    pub name: String,
    /// Its label in the key: `crate/<path in the compose tree>` or `spec/<path from the
    /// spec's directory>`.
    pub label: String,
    /// Its directory, canonical.
    pub dir: PathBuf,
}

/// What [`key`] found.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The key and its inputs.
    pub outcome: KeyOutcome,
    /// The path crates of the closure, sorted by label.
    pub crates: Vec<PathCrate>,
    /// Each assets device's files, as the key found and `stat`ed them: the packer takes
    /// them rather than walking the tree again.
    pub assets: BTreeMap<String, compose_assets::Selected>,
}

/// What the key needs that takes time and depends on neither the toolchain nor the
/// closure: the store's hash cache, loaded, and each assets device's files, selected. A
/// build makes it on another thread while it asks rustup and rustc about the toolchain.
pub struct Prepared {
    cache: crate::store::HashCache,
    assets: BTreeMap<String, Result<Vec<(String, PathBuf)>, String>>,
}

/// Loads the hash cache and selects each assets device's files (see [`Prepared`]).
pub fn prepare(store: &Store, glue: &Glue) -> Prepared {
    let cache = crate::timings::time("key-cache-load", || store.hash_cache());
    let mut assets = BTreeMap::new();
    for step in &glue.steps {
        if let Step::PackAssets {
            device,
            dir,
            include,
            exclude,
            ..
        } = step
        {
            let files =
                crate::timings::time("key-assets-select", || asset_files(dir, include, exclude))
                    .map_err(|e| format!("assets `{device}`: {e}"));
            assets.insert(device.clone(), files);
        }
    }
    Prepared { cache, assets }
}

/// Computes the store key of a build (see the module documentation), from what
/// [`prepare`] made for it.
pub fn key(store: &Store, k: &KeyInputs<'_>, prepared: Prepared) -> Result<Keyed, String> {
    let spec_dir = spec_dir(k.spec);
    let Prepared {
        cache,
        assets: mut selected,
    } = prepared;
    let mut kb = KeyBuilder::new(cache);
    let add = |kb: &mut KeyBuilder, label: &str, bytes: &[u8]| {
        kb.add_bytes(label, bytes).map_err(|e| e.to_string())
    };
    add(
        &mut kb,
        "compose-version",
        env!("CARGO_PKG_VERSION").as_bytes(),
    )?;
    let spec_json = serde_json::to_string(&crate::describe::json(k.graph)).unwrap_or_default();
    add(
        &mut kb,
        "spec",
        relocate(&spec_json, k.root, &spec_dir).as_bytes(),
    )?;
    for f in &k.glue.files {
        add(
            &mut kb,
            &format!("glue/{}", f.path.display()),
            relocate(&f.contents, k.root, &spec_dir).as_bytes(),
        )?;
    }
    add(
        &mut kb,
        "toolchain",
        format!("{}target: {}\n", k.toolchain, k.triple).as_bytes(),
    )?;
    let mut env = String::new();
    for (name, value) in key_env() {
        env.push_str(&format!("{name}={value:?}\n"));
    }
    add(&mut kb, "env", env.as_bytes())?;
    kb.add_file("Cargo.lock", &k.root.join("Cargo.lock"))
        .map_err(|e| e.to_string())?;
    kb.add_file("compose/Cargo.toml", &k.root.join("Cargo.toml"))
        .map_err(|e| e.to_string())?;

    let crates = crate::timings::time("key-closure", || closure(store, k, &spec_dir))?;
    let crates_started = std::time::Instant::now();
    let glue_lock = k.glue_dir.join("Cargo.lock");
    if glue_lock.is_file() {
        kb.add_file("glue/Cargo.lock", &glue_lock)
            .map_err(|e| e.to_string())?;
    }
    // Of cargo's configuration, what can change the output, wherever the files are.
    let mut effects = Vec::new();
    for file in cargo_configs(k.glue_dir) {
        if let Some(effect) = config_effect(&file)? {
            effects.push(effect);
        }
    }
    if !effects.is_empty() {
        kb.add_bytes("cargo-config", effects.join("\n").as_bytes())
            .map_err(|e| e.to_string())?;
    }
    for c in &crates {
        kb.add_tree(&c.label, &c.dir, &[])
            .map_err(|e| format!("crate {}: {e}", c.name))?;
    }
    crate::timings::add("key-crates", crates_started.elapsed());
    let mut assets = BTreeMap::new();
    for step in &k.glue.steps {
        if let Step::PackAssets {
            device,
            dir,
            include,
            exclude,
            ..
        } = step
        {
            let files = match selected.remove(device) {
                Some(files) => files?,
                None => {
                    crate::timings::time("key-assets-select", || asset_files(dir, include, exclude))
                        .map_err(|e| format!("assets `{device}`: {e}"))?
                }
            };
            let stated_at = std::time::SystemTime::now();
            let metas = crate::timings::time("key-assets-hash", || {
                kb.add_files_meta(&format!("assets/{device}"), &files)
            })
            .map_err(|e| format!("assets `{device}`: {e}"))?;
            let mtimes: Vec<u64> = metas
                .iter()
                .map(|m| {
                    m.modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs())
                })
                .collect();
            // Without SOURCE_DATE_EPOCH, each file's mtime is its time in the archive.
            if compose_assets::source_date_epoch_from_env()
                .ok()
                .flatten()
                .is_none()
            {
                let mut times = String::new();
                for ((name, _), secs) in files.iter().zip(&mtimes) {
                    times.push_str(&format!("{name} {secs}\n"));
                }
                kb.add_bytes(&format!("assets/{device}/mtimes"), times.as_bytes())
                    .map_err(|e| format!("assets `{device}`: {e}"))?;
            }
            assets.insert(
                device.clone(),
                compose_assets::Selected {
                    files: files
                        .into_iter()
                        .map(|(key, path)| compose_assets::AssetFile { key, path })
                        .collect(),
                    metadata: metas.into_iter().map(Some).collect(),
                    stated_at,
                },
            );
        }
    }
    // What the target takes from outside the tree (rpi4: the firmware), by content.
    if let Some(target) = crate::target::by_name(&k.graph.target) {
        let files = target.input_files()?;
        for (label, path) in &files {
            kb.add_file(&format!("target/{label}"), path)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(Keyed {
        outcome: crate::timings::time("key-finish", || kb.finish()),
        crates,
        assets,
    })
}

/// The files an assets device packs, as `(key, file)`: exactly what the packer reads.
pub fn asset_files(
    dir: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<(String, PathBuf)>, compose_assets::PackError> {
    let options = compose_assets::PackOptions {
        include: include.to_vec(),
        exclude: exclude.to_vec(),
        ..Default::default()
    };
    Ok(compose_assets::select(dir, &options)?
        .into_iter()
        .map(|f| (f.key, f.path))
        .collect())
}

/// The environment variables of the key, set ones only, sorted.
pub fn key_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            let wanted = ENV_VARS.contains(&k.as_str())
                || (ENV_PREFIXES.iter().any(|p| k.starts_with(p))
                    && !crate::build::REMOVED_ENV.contains(&k.as_str())
                    && !ENV_WITHOUT_EFFECT.contains(&k.as_str()));
            wanted.then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    out.sort();
    out
}

/// The spec's directory, canonical.
pub fn spec_dir(spec: &Path) -> PathBuf {
    let dir = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.canonicalize()
        .unwrap_or_else(|_| std::path::absolute(dir).unwrap_or(dir.to_path_buf()))
}

/// Replaces the compose tree's and the spec directory's paths in `text` with fixed names
/// (the longer first, should one contain the other).
fn relocate(text: &str, root: &Path, spec_dir: &Path) -> String {
    let mut pairs = [
        (root.display().to_string(), "/compose"),
        (spec_dir.display().to_string(), "/spec"),
    ];
    pairs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let mut out = text.to_string();
    for (from, to) in pairs {
        if from.len() > 1 {
            out = out.replace(&from, to);
        }
    }
    out
}

/// Where a path is, for records: `(base, relative path)`, the base being `compose-root`
/// when it is inside the compose tree, else `spec-dir` (relative to the spec's
/// directory, possibly with `..`). Never absolute.
pub fn portable(path: &Path, root: &Path, spec_dir: &Path) -> (&'static str, String) {
    let abs = path
        .canonicalize()
        .unwrap_or_else(|_| std::path::absolute(path).unwrap_or(path.to_path_buf()));
    match abs.strip_prefix(root) {
        Ok(rel) => ("compose-root", rel.display().to_string()),
        Err(_) => ("spec-dir", relative(spec_dir, &abs).display().to_string()),
    }
}

/// `to` relative to the directory `from` (both absolute and canonical).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to_c: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The label of a crate directory.
fn crate_label(dir: &Path, root: &Path, spec_dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(rel) => format!("crate/{}", rel.display()),
        Err(_) => format!("spec/{}", relative(spec_dir, dir).display()),
    }
}

/// cargo configuration files cargo reads for a build in `glue_dir`, outside the glue
/// itself (whose `.cargo/config.toml` is a glue file), nearest first.
fn cargo_configs(glue_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let glue_abs = std::path::absolute(glue_dir).unwrap_or(glue_dir.to_path_buf());
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let dirs = glue_abs
        .ancestors()
        .skip(1)
        .map(|d| d.join(".cargo"))
        .chain(home);
    for dir in dirs {
        for name in ["config.toml", "config"] {
            let f = dir.join(name);
            if f.is_file() && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// Tables of a cargo configuration file that cannot change what is built: where crates
/// come from (the lock file's checksums pin their contents), networking, aliases, the
/// terminal, and how many jobs run or where output goes.
const CONFIG_WITHOUT_EFFECT: &[&str] = &[
    "source",
    "net",
    "http",
    "registries",
    "registry",
    "credential-alias",
    "alias",
    "term",
    "cargo-new",
    "install",
    "future-incompat-report",
    "cache",
];

/// The part of the cargo configuration `file` that can change the output (profiles,
/// target and build flags, `[env]`, `[patch]`, unstable features), canonically serialised;
/// `None` when it has none (a source replacement, as vendored builds have, is not one).
fn config_effect(file: &Path) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{} is not valid TOML: {e}", file.display()))?;
    for key in CONFIG_WITHOUT_EFFECT {
        table.remove(*key);
    }
    if let Some(toml::Value::Table(build)) = table.get_mut("build") {
        for key in ["jobs", "target-dir", "build-dir"] {
            build.remove(key);
        }
        if build.is_empty() {
            table.remove("build");
        }
    }
    if table.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&table)
        .map(Some)
        .map_err(|e| format!("{}: {e}", file.display()))
}

// ---------------------------------------------------------------------------------------
// The closure and its cache.

const CLOSURE_CACHE_DIR: &str = "closure-v1";

#[derive(serde::Serialize, serde::Deserialize)]
struct ClosureCache {
    /// Files whose contents determine the closure, with their sha256.
    manifests: Vec<(PathBuf, String)>,
    /// The closure: (name, directory).
    crates: Vec<(String, PathBuf)>,
}

fn sha_of(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| crate::store::sha256_hex(&b))
}

/// The path crates of the glue's closure: from the cache when it still holds, else from
/// `cargo metadata` (then cached).
fn closure(store: &Store, k: &KeyInputs<'_>, spec_dir: &Path) -> Result<Vec<PathCrate>, String> {
    let glue_manifest = k
        .glue
        .files
        .iter()
        .find(|f| f.path == Path::new("Cargo.toml"))
        .map(|f| f.contents.as_str())
        .unwrap_or_default();
    let id = crate::store::sha256_hex(
        format!(
            "{}\n{}\n{}\n{glue_manifest}",
            k.glue_dir.display(),
            k.root.display(),
            k.triple
        )
        .as_bytes(),
    );
    let cache_file = store
        .root()
        .join(".cache")
        .join(CLOSURE_CACHE_DIR)
        .join(&id[..32]);
    let cached = std::fs::read(&cache_file)
        .ok()
        .and_then(|b| serde_json::from_slice::<ClosureCache>(&b).ok())
        .filter(|c| {
            c.manifests
                .iter()
                .all(|(p, sha)| sha_of(p).as_deref() == Some(sha.as_str()))
        });
    let crates = match cached {
        Some(c) => c.crates,
        None => {
            let crates = closure_from_cargo(k)?;
            let mut manifests: Vec<PathBuf> = vec![
                k.root.join("Cargo.toml"),
                k.root.join("Cargo.lock"),
                k.glue_dir.join("Cargo.toml"),
                k.glue_dir.join("Cargo.lock"),
            ];
            manifests.extend(crates.iter().map(|(_, d)| d.join("Cargo.toml")));
            manifests.extend(cargo_configs(k.glue_dir));
            let record = ClosureCache {
                manifests: manifests
                    .into_iter()
                    .filter_map(|p| sha_of(&p).map(|s| (p, s)))
                    .collect(),
                crates: crates.clone(),
            };
            // A cache that cannot be written only costs time later.
            if let Ok(bytes) = serde_json::to_vec(&record) {
                let _ = crate::store::write_atomic(&cache_file, &bytes, 0o644);
            }
            crates
        }
    };
    let mut out: Vec<PathCrate> = crates
        .into_iter()
        .map(|(name, dir)| PathCrate {
            label: crate_label(&dir, k.root, spec_dir),
            name,
            dir,
        })
        .collect();
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out.dedup_by(|a, b| a.label == b.label);
    Ok(out)
}

/// Writes the glue (under the unikernel's build lock, as the build does) and asks cargo
/// for its closure: the path packages reachable by normal and build dependencies.
fn closure_from_cargo(k: &KeyInputs<'_>) -> Result<Vec<(String, PathBuf)>, String> {
    let meta = {
        std::fs::create_dir_all(k.target_dir)
            .map_err(|e| format!("cannot create {}: {e}", k.target_dir.display()))?;
        let lock = std::fs::File::create(
            k.target_dir
                .join(format!(".compose-{}-{}.lock", k.graph.name, k.graph.target)),
        )
        .map_err(|e| format!("cannot create the build lock: {e}"))?;
        lock.lock()
            .map_err(|e| format!("cannot take the build lock: {e}"))?;
        crate::glue::write(k.glue, k.glue_dir)
            .map_err(|e| format!("cannot write glue to {}: {e}", k.glue_dir.display()))?;
        if let Ok(bytes) = std::fs::read(k.root.join("rust-toolchain.toml")) {
            crate::glue::write_if_changed(&k.glue_dir.join("rust-toolchain.toml"), &bytes)
                .map_err(|e| e.to_string())?;
        }
        match crate::image::metadata(k.glue_dir, k.triple, true) {
            Ok(m) => m,
            Err(_) => crate::image::metadata(k.glue_dir, k.triple, false)?,
        }
    };
    let resolve = meta
        .resolve
        .as_ref()
        .ok_or("cargo metadata gave no resolve graph")?;
    let root = resolve
        .root
        .clone()
        .ok_or("the glue crate has no root package")?;
    let nodes: std::collections::BTreeMap<_, _> =
        resolve.nodes.iter().map(|n| (n.id.clone(), n)).collect();
    let packages: std::collections::BTreeMap<_, _> =
        meta.packages.iter().map(|p| (p.id.clone(), p)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![root.clone()];
    let mut out = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if id != root
            && let Some(p) = packages.get(&id)
            && p.source.is_none()
        {
            let dir = p
                .manifest_path
                .parent()
                .map(|d| d.as_std_path().to_path_buf())
                .unwrap_or_default();
            let dir = dir.canonicalize().unwrap_or(dir);
            out.push((p.name.to_string(), dir));
        }
        if let Some(n) = nodes.get(&id) {
            for d in &n.deps {
                if d.dep_kinds.iter().any(|k| {
                    matches!(
                        k.kind,
                        cargo_metadata::DependencyKind::Normal
                            | cargo_metadata::DependencyKind::Build
                    )
                }) {
                    stack.push(d.pkg.clone());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_cargo_configuration_that_changes_the_output_is_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.toml");
        std::fs::write(
            &f,
            "[source.crates-io]\nreplace-with = \"vendored\"\n[source.vendored]\ndirectory = \"/v\"\n[net]\noffline = true\n[build]\njobs = 2\n",
        )
        .unwrap();
        assert_eq!(super::config_effect(&f).unwrap(), None);
        std::fs::write(
            &f,
            "[build]\njobs = 2\nrustflags = [\"-Ctarget-cpu=native\"]\n",
        )
        .unwrap();
        let effect = super::config_effect(&f).unwrap().unwrap();
        assert!(
            effect.contains("target-cpu") && !effect.contains("jobs"),
            "{effect}"
        );
        std::fs::write(&f, "[profile.release\n").unwrap();
        assert!(super::config_effect(&f).is_err());
    }

    use super::*;

    #[test]
    fn relative_paths() {
        let r = |a: &str, b: &str| relative(Path::new(a), Path::new(b)).display().to_string();
        assert_eq!(r("/a/b", "/a/b/c/d"), "c/d");
        assert_eq!(r("/a/b", "/a/x"), "../x");
        assert_eq!(r("/a/b", "/a/b"), ".");
        assert_eq!(r("/a/b", "/"), "../..");
    }

    #[test]
    fn relocation_replaces_the_longer_path_first() {
        let t = relocate(
            "path = \"/r/specs/app\" and /r/x",
            Path::new("/r"),
            Path::new("/r/specs"),
        );
        assert_eq!(t, "path = \"/spec/app\" and /compose/x");
    }
}
