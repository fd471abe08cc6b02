//! Stage 5: assemble the store entry: the image, block-device images, the deployment
//! manifest (JSON and KDL), build information, an SBOM, and a deterministic bundle of
//! them all. Every file is a pure function of the build's inputs, so two builds of the
//! same inputs give the same bytes.

use crate::bundle::BundleWriter;
use crate::manifest::{Device, DeviceKind, Manifest};
use crate::store::{InputHash, KeyOutcome};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Copies the artifact to `out/<name>` atomically, keeping its permissions, and returns
/// the image's path.
pub fn place(artifact: &Path, out: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let dest = out.join(name);
    let tmp = out.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::copy(artifact, &tmp).and_then(|_| std::fs::rename(&tmp, &dest));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|_| dest)
}

/// Images at least this large are hard-linked into a store entry rather than copied.
/// A link shares the file with the build folder (the store seals it: read-only, mtime 1,
/// which makes cargo relink that binary on its next build), so small images, whose copy
/// costs nothing, are copied and keep cargo's own times.
pub const LINK_IMAGES_FROM: u64 = 64 << 20;

/// Puts `src` at `dest` as a hard link (no second copy on disk) where the file system
/// allows it, else as a copy. `src` must never be written in place afterwards: the build
/// replaces its outputs by renaming new files over them.
pub fn link_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(src, dest) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(src, dest).map(|_| ()),
    }
}

/// Puts the block image `src` at `dest` with [`link_or_copy`]; a layered image
/// (`compose_blockfile`) as its descriptor and each of its parts, in `<dest>.parts/`.
pub fn link_block_image(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(layout) = compose_blockfile::read_layout(src)? {
        let (from, to) = (
            compose_blockfile::parts_dir(src),
            compose_blockfile::parts_dir(dest),
        );
        std::fs::create_dir_all(&to)?;
        for (name, _) in &layout.parts {
            link_or_copy(&from.join(name), &to.join(name))?;
        }
    }
    link_or_copy(src, dest)
}

/// Writes the block image `src` (plain or layered) to `out/<name>` as one plain file,
/// atomically, and returns its path: what [`place`] is for a block image.
pub fn place_block_image(src: &Path, out: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let dest = out.join(name);
    compose_blockfile::copy_flat(src, &dest)?;
    Ok(dest)
}

/// Build information, as robur's builder records it: what went in, with what, how.
pub struct BuildInfo<'a> {
    /// The unikernel.
    pub name: &'a str,
    /// The target.
    pub target: &'a str,
    /// `rustc -vV` of the toolchain that compiled it.
    pub toolchain: &'a str,
    /// The rustc target triple (the host's for unix).
    pub triple: &'a str,
    /// The `compose build` command that reproduces it, with paths relative to the compose root.
    pub command: Vec<String>,
    /// The spec, relative to `spec_base`.
    pub spec: String,
    /// What `spec` (and the command's spec) is relative to: `compose-root` when the spec is
    /// inside the compose tree, else `spec-dir` (the spec's own directory: `spec` is then
    /// its file name). Never an absolute path.
    pub spec_base: &'a str,
    /// `--arg`s.
    pub args: &'a [(String, String)],
    /// The store key and its inputs.
    pub key: &'a KeyOutcome,
    /// The cargo invocation (relative paths).
    pub cargo: Vec<String>,
}

impl BuildInfo<'_> {
    /// The `buildinfo.json` document.
    pub fn to_json(&self) -> String {
        // Serialized straight from a struct (no `serde_json::Value` of every input on the
        // way: a site has tens of thousands), in this field order.
        #[derive(serde::Serialize)]
        struct Json<'a> {
            schema: &'static str,
            name: &'a str,
            target: &'a str,
            compose_version: &'static str,
            toolchain: &'a str,
            triple: &'a str,
            spec: &'a str,
            spec_base: &'a str,
            args: Vec<String>,
            command: &'a [String],
            cargo: &'a [String],
            key: String,
            inputs: &'a [InputHash],
        }
        let v = Json {
            schema: "compose.buildinfo/v1",
            name: self.name,
            target: self.target,
            compose_version: env!("CARGO_PKG_VERSION"),
            toolchain: self.toolchain,
            triple: self.triple,
            spec: &self.spec,
            spec_base: self.spec_base,
            args: self.args.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            command: &self.command,
            cargo: &self.cargo,
            key: self.key.key.hex(),
            inputs: &self.key.inputs,
        };
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }
}

/// `cargo metadata` of the glue crate in `glue_dir`, its resolve filtered for `triple`;
/// with `offline`, without touching the network (the store key's closure and the SBOM
/// both read it: see [`crate::inputs`]).
pub fn metadata(
    glue_dir: &Path,
    triple: &str,
    offline: bool,
) -> Result<cargo_metadata::Metadata, String> {
    let mut cmd = cargo_metadata::MetadataCommand::new();
    cmd.manifest_path(glue_dir.join("Cargo.toml"));
    cmd.current_dir(glue_dir);
    let mut opts = vec!["--filter-platform".to_string(), triple.to_string()];
    if offline {
        opts.push("--offline".into());
    }
    cmd.other_options(opts);
    for var in crate::build::REMOVED_ENV {
        cmd.env_remove(var);
    }
    cmd.exec().map_err(|e| format!("cargo metadata: {e}"))
}

/// A CycloneDX 1.5 SBOM of the crates linked into the image, from cargo's resolved graph
/// (normal dependencies of the glue crate, for the target platform). No timestamps, no
/// random serial: the document is a function of the lock file.
pub fn sbom(glue_dir: &Path, triple: &str, name: &str) -> Result<String, String> {
    let meta = metadata(glue_dir, triple, true).or_else(|_| metadata(glue_dir, triple, false))?;
    let resolve = meta
        .resolve
        .as_ref()
        .ok_or("cargo metadata gave no resolve graph")?;
    let root = resolve
        .root
        .clone()
        .ok_or("the glue crate has no root package")?;
    // Walk normal dependencies from the root.
    let nodes: BTreeMap<_, _> = resolve.nodes.iter().map(|n| (n.id.clone(), n)).collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(n) = nodes.get(&id) {
            for d in &n.deps {
                if d.dep_kinds
                    .iter()
                    .any(|k| k.kind == cargo_metadata::DependencyKind::Normal)
                {
                    stack.push(d.pkg.clone());
                }
            }
        }
    }
    let packages: BTreeMap<_, _> = meta.packages.iter().map(|p| (p.id.clone(), p)).collect();
    let bom_ref = |id: &cargo_metadata::PackageId| -> String {
        packages.get(id).map_or_else(
            || id.repr.clone(),
            |p| format!("pkg:cargo/{}@{}", p.name, p.version),
        )
    };
    let mut components = Vec::new();
    let mut deps = Vec::new();
    for id in &seen {
        let Some(p) = packages.get(id) else { continue };
        let r = bom_ref(id);
        if *id != root {
            let mut c = json!({
                "type": "library",
                "bom-ref": r,
                "name": p.name.as_str(),
                "version": p.version.to_string(),
                "purl": r,
                "scope": "required",
            });
            if let Some(l) = &p.license {
                c["licenses"] = json!([{ "expression": l }]);
            }
            if p.source.is_none() {
                c["properties"] = json!([{ "name": "compose:source", "value": "compose source tree (path dependency)" }]);
            }
            components.push(c);
        }
        if let Some(n) = nodes.get(id) {
            let mut on: Vec<String> = n
                .deps
                .iter()
                .filter(|d| {
                    d.dep_kinds
                        .iter()
                        .any(|k| k.kind == cargo_metadata::DependencyKind::Normal)
                })
                .map(|d| bom_ref(&d.pkg))
                .collect();
            on.sort();
            on.dedup();
            deps.push(json!({ "ref": r, "dependsOn": on }));
        }
    }
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": { "components": [{ "type": "application", "name": "compose", "version": env!("CARGO_PKG_VERSION") }] },
            "component": { "type": "application", "bom-ref": bom_ref(&root), "name": name, "version": "0.0.0" },
        },
        "components": components,
        "dependencies": deps,
    });
    Ok(serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n")
}

/// `sbom` with `components` added to its components (nothing changes when there are none).
pub fn sbom_with(sbom: &str, components: &[serde_json::Value]) -> Result<String, String> {
    if components.is_empty() {
        return Ok(sbom.to_string());
    }
    let mut doc: serde_json::Value = serde_json::from_str(sbom).map_err(|e| e.to_string())?;
    let list = doc["components"]
        .as_array_mut()
        .ok_or("the SBOM has no components list")?;
    list.extend(components.iter().cloned());
    Ok(serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n")
}

/// File names inside a store entry and a bundle.
pub const BUILDINFO_FILE: &str = "buildinfo.json";
/// The SBOM's file name.
pub const SBOM_FILE: &str = "sbom.cdx.json";

/// What goes into a store entry.
pub struct EntryContents<'a> {
    /// The image's file name (the unikernel's name) and the built artifact.
    pub image: (&'a str, &'a Path),
    /// Block-device images: (device, file).
    pub block_images: &'a [(String, PathBuf)],
    /// Other files the target made (rpi4: `NAME.sdcard.img`): (name in the entry, file).
    pub extra_files: &'a [(String, PathBuf)],
    /// The manifest, without `files` filled in.
    pub manifest: Manifest,
    /// `buildinfo.json`.
    pub buildinfo: String,
    /// `sbom.cdx.json`.
    pub sbom: String,
    /// The bundle's mtime (SOURCE_DATE_EPOCH or 0).
    pub epoch: u64,
    /// Entries that may hold a private key (made from an assets device with
    /// `allow-private-keys=#true`).
    pub keys_allowed: &'a [String],
    /// Where the bundle's compressed frames are cached (the store's `.cache/bundle-v1/`).
    pub frame_cache: Option<crate::bundle::FrameCache>,
    /// The sha256 (hex) and length of block images already hashed, by device (the
    /// build's own files, which the entry links): the others are hashed here.
    pub block_hashes: &'a BTreeMap<String, Result<(String, u64), String>>,
}

/// Fills the store entry directory `dir` and returns the final manifest.
pub fn fill_entry(dir: &Path, c: EntryContents<'_>) -> Result<Manifest, String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let mut manifest = c.manifest;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let (image_name, artifact) = c.image;
    let image_len = std::fs::metadata(artifact)
        .map(|m| m.len())
        .map_err(e("cannot read the image"))?;
    if image_len >= LINK_IMAGES_FROM {
        link_or_copy(artifact, &dir.join(image_name))
    } else {
        std::fs::copy(artifact, dir.join(image_name)).map(|_| ())
    }
    .map_err(e("cannot copy the image"))?;
    // Each large file is hashed once, here; the bundle takes the hashes.
    let sha = |p: &Path| crate::store::sha256_file(p).map(|(s, _)| s);
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let mut bundle = BundleWriter::new(c.epoch);
    if let Some(cache) = c.frame_cache {
        bundle = bundle.with_frame_cache(cache);
    }
    for name in c.keys_allowed {
        bundle.allow_private_keys(name);
    }
    let image_sha =
        crate::timings::time("hash", || sha(&dir.join(image_name))).map_err(e("cannot hash"))?;
    bundle
        .add_file_hashed(image_name, &dir.join(image_name), &image_sha)
        .map_err(|x| x.to_string())?;
    known.insert(image_name.to_string(), image_sha);
    for (device, file) in c.block_images {
        let name = format!("{device}.img");
        // The archive the packer wrote: the next pack renames a new one over it, so the
        // store's link keeps this one.
        link_block_image(file, &dir.join(&name)).map_err(e("cannot copy a block image"))?;
        // Plain or layered: the image's bytes are what is hashed, sized and bundled.
        let (block_sha, size) = match c.block_hashes.get(device) {
            Some(Ok(known)) => known.clone(),
            Some(Err(why)) => return Err(format!("cannot hash: {why}")),
            None => crate::timings::time("hash", || crate::store::sha256_image(&dir.join(&name)))
                .map_err(e("cannot hash"))?,
        };
        // A block device the build made: the manifest records its exact size.
        match manifest.devices.iter_mut().find(|d| d.name == *device) {
            Some(d) => {
                d.kind = DeviceKind::Block {
                    size: Some(size),
                    sector_size: Some(512),
                    writable: false,
                }
            }
            None => manifest.devices.push(Device {
                name: device.clone(),
                kind: DeviceKind::Block {
                    size: Some(size),
                    sector_size: Some(512),
                    writable: false,
                },
            }),
        }
        bundle
            .add_image_hashed(&name, &dir.join(&name), &block_sha)
            .map_err(|x| x.to_string())?;
        known.insert(name, block_sha);
    }
    for (name, file) in c.extra_files {
        std::fs::copy(file, dir.join(name)).map_err(e("cannot copy a file of the target"))?;
        bundle
            .add_file(name, &dir.join(name))
            .map_err(|x| x.to_string())?;
    }
    std::fs::write(dir.join(BUILDINFO_FILE), &c.buildinfo)
        .map_err(e("cannot write build information"))?;
    bundle
        .add_bytes(BUILDINFO_FILE, c.buildinfo.clone().into_bytes(), false)
        .map_err(|x| x.to_string())?;
    std::fs::write(dir.join(SBOM_FILE), &c.sbom).map_err(e("cannot write the SBOM"))?;
    bundle
        .add_bytes(SBOM_FILE, c.sbom.clone().into_bytes(), false)
        .map_err(|x| x.to_string())?;
    let hash_started = std::time::Instant::now();
    for name in bundle.names().map(str::to_string).collect::<Vec<_>>() {
        let sha = match known.remove(&name) {
            Some(sha) => sha,
            None => sha(&dir.join(&name)).map_err(e("cannot hash"))?,
        };
        files.insert(name, sha);
    }
    crate::timings::add("hash", hash_started.elapsed());
    manifest.files = files;
    let json = manifest.to_json();
    let kdl = manifest.to_kdl();
    std::fs::write(dir.join(crate::manifest::JSON_FILE), &json)
        .map_err(e("cannot write the manifest"))?;
    std::fs::write(dir.join(crate::manifest::KDL_FILE), &kdl)
        .map_err(e("cannot write the manifest"))?;
    bundle
        .add_bytes(crate::manifest::JSON_FILE, json.into_bytes(), false)
        .map_err(|x| x.to_string())?;
    bundle
        .add_bytes(crate::manifest::KDL_FILE, kdl.into_bytes(), false)
        .map_err(|x| x.to_string())?;
    // A large block image's bundle is left to `compose bundle` (see [`defer_bundle_from`]):
    // writing a few hundred megabytes durably at each build would dominate a rebuild.
    let block_bytes: u64 = manifest
        .devices
        .iter()
        .filter_map(|d| match d.kind {
            DeviceKind::Block { size, .. } => size,
            _ => None,
        })
        .sum();
    if c.block_images.is_empty() || block_bytes < defer_bundle_from()? {
        let bundle_name = crate::bundle::file_name(&manifest.name, &manifest.target);
        crate::timings::time("bundle", || bundle.write(&dir.join(bundle_name)))
            .map_err(|x| x.to_string())?;
    } else {
        crate::timings::count("bundle-deferred", 1);
    }
    Ok(manifest)
}

/// The size of the block images (in all, in bytes) from which a build leaves the bundle
/// out of the store entry: `$COMPOSE_DEFER_BUNDLE_FROM` if set, else
/// [`DEFER_BUNDLE_FROM`]. `compose bundle RESULT` writes it when it is wanted, with the
/// same bytes.
pub fn defer_bundle_from() -> Result<u64, String> {
    match std::env::var_os("COMPOSE_DEFER_BUNDLE_FROM") {
        None => Ok(DEFER_BUNDLE_FROM),
        Some(v) => v
            .to_str()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                format!("COMPOSE_DEFER_BUNDLE_FROM={v:?} is not a whole number of bytes")
            }),
    }
}

/// The default of [`defer_bundle_from`]: 256 MiB of block images.
pub const DEFER_BUNDLE_FROM: u64 = 256 << 20;

/// From what size a block image that a rebuild changed is stored as a *layered image*
/// (see `compose_blockfile`: the unchanged bytes referenced from the previous image's
/// files, only the changed files, the index and the header written): on targets whose
/// launcher reads them, `$COMPOSE_LAYERED_FROM` bytes if set (`off`: never), else
/// [`LAYERED_FROM`].
pub fn layered_from() -> Result<Option<u64>, String> {
    match std::env::var_os("COMPOSE_LAYERED_FROM") {
        None => Ok(Some(LAYERED_FROM)),
        Some(v) if v == "off" => Ok(None),
        Some(v) => v
            .to_str()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                format!("COMPOSE_LAYERED_FROM={v:?} is neither a whole number of bytes nor `off`")
            }),
    }
}

/// The default of [`layered_from`]: block images of 64 MiB or more.
pub const LAYERED_FROM: u64 = 64 << 20;
