//! The operations behind the CLI's commands. They take option structs and never touch
//! clap, so tests and other front ends call them directly. They return
//! [`Error`](crate::error::Error) and never print it: the caller reports it once.

use crate::build::{BuildError, CargoOptions, MessageFormat, Reporter};
use crate::descriptor::Registry;
use crate::diag::Diag;
pub use crate::error::Error;
use crate::error::LaunchError;
use crate::graph::Graph;
use crate::spec::Spec;
use std::path::{Path, PathBuf};

/// What to load and for which target.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The spec file.
    pub spec: PathBuf,
    /// `--target`, overriding the spec's.
    pub target: Option<String>,
    /// `--arg NAME=VALUE`s.
    pub args: Vec<(String, String)>,
}

/// Loads the spec and resolves its graph: the whole of `compose check`.
pub fn check(opts: &LoadOptions) -> Result<(Spec, Graph), Error> {
    let registry = Registry::builtin().map_err(|e| Error::Descriptor(e.to_string()))?;
    let spec = crate::spec::load(&opts.spec, &opts.args, &registry)?;
    let target = match &opts.target {
        Some(t) if !crate::target::is_known(t) => {
            let help = crate::diag::suggest(t, crate::target::names());
            return Err(Error::Usage(vec![
                Diag::nowhere(
                    crate::diag::BAD_ARG,
                    format!("--target {t}: unknown target"),
                )
                .help(help),
            ]));
        }
        Some(t) => t.clone(),
        None => spec
            .target
            .as_ref()
            .map_or_else(|| "unix".to_string(), |(t, _)| t.clone()),
    };
    let graph = crate::graph::resolve(&spec, &registry, &target)?;
    if let Some(t) = crate::target::by_name(&graph.target) {
        check_memory(t, &spec, &graph)?;
    }
    Ok((spec, graph))
}

/// Options of `compose build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// What to build.
    pub load: LoadOptions,
    /// Also copy the image (and block images) into this directory.
    pub out: Option<PathBuf>,
    /// The store (default: `$COMPOSE_STORE`, else `~/.cache/compose/store`).
    pub store: Option<PathBuf>,
    /// Where to leave the `result` link; `None`: no link.
    pub out_link: Option<PathBuf>,
    /// How to report.
    pub format: MessageFormat,
    /// Show the cargo command.
    pub verbose: bool,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    /// The resolved graph.
    pub graph: Graph,
    /// The store entry.
    pub entry: PathBuf,
    /// The image, inside the entry.
    pub image: PathBuf,
    /// Block-device images that ship with the image, inside the entry: (device, file).
    pub block_images: Vec<(String, PathBuf)>,
    /// The deployment manifest.
    pub manifest: crate::manifest::Manifest,
    /// Whether this build made the entry (false: it was already in the store).
    pub fresh: bool,
}

/// The spec's directory, absolute (cargo runs in other directories).
fn spec_dir(spec: &Path) -> PathBuf {
    let dir = spec
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Where cargo keeps build products: `$COMPOSE_TARGET_DIR`, or `_build/target` next to the spec.
pub fn target_dir(spec: &Path) -> PathBuf {
    match std::env::var_os("COMPOSE_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => spec_dir(spec).join("_build").join("target"),
    }
}

/// `rustc -vV` of the toolchain the compose root pins.
fn toolchain_version(root: &Path) -> Result<String, Error> {
    Ok(crate::toolchain::rustc(root, &["-vV"], &None)?)
}

/// rustc flags that keep build paths out of the image: the compose tree, cargo's registry
/// and the target directory are remapped to fixed names.
fn reproducible_rustflags(
    root: &Path,
    glue_dir: &Path,
    target_dir: &Path,
    app_dir: Option<&Path>,
) -> Vec<String> {
    // rustc applies the last matching prefix: the general ones first.
    let mut flags = vec![format!("--remap-path-prefix={}=/compose", root.display())];
    flags.push(format!("--remap-path-prefix={}=/glue", glue_dir.display()));
    flags.push(format!(
        "--remap-path-prefix={}=/compose",
        glue_dir.join(crate::glue::SRC_ROOT).display()
    ));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    if let Some(app) = app_dir.filter(|a| !a.starts_with(root)) {
        flags.push(format!("--remap-path-prefix={}=/app", app.display()));
    }
    flags.push(format!(
        "--remap-path-prefix={}=/target",
        target_dir.display()
    ));
    flags
}

/// Parse, resolve, generate, then either find the result in the store or compile it and
/// add it: `compose build`.
pub fn build(opts: &BuildOptions) -> Result<Built, Error> {
    let started = std::time::Instant::now();
    let mut reporter = Reporter::new(opts.format);
    let (spec, graph) = crate::timings::time("parse", || check(&opts.load))?;
    let info = crate::target::by_name(&graph.target)
        .ok_or_else(|| Error::NoPlatform(crate::target::no_platform(&graph.target)))?;
    let root = crate::tree::root()?;
    let root = root.canonicalize().unwrap_or(root);
    let glue = crate::timings::time("glue", || crate::glue::generate(&graph, &opts.load.spec))?;
    let dir = spec_dir(&opts.load.spec);
    let glue_dir = dir
        .join("_build")
        .join(format!("{}-{}", graph.name, graph.target));
    let store = crate::store::Store::open(opts.store.clone())?;
    // The toolchain (rustup and rustc, a fraction of a second) on this thread, and what
    // the key needs of the store and the assets on another.
    let (toolchain, prepared) = std::thread::scope(|s| {
        let prepared = s.spawn(|| crate::inputs::prepare(&store, &glue));
        let toolchain = crate::toolchain::ensure(&root, &root, info.triple(), &reporter)
            .map_err(Error::from)
            .and_then(|()| toolchain_version(&root));
        (
            toolchain,
            prepared.join().expect("preparing the key does not panic"),
        )
    });
    let toolchain = toolchain?;
    let triple = info
        .triple()
        .map(str::to_string)
        .unwrap_or_else(|| host_triple(&toolchain));

    // The key: everything that can change the output, and nothing that depends on where
    // the sources are (see crate::inputs).
    let app_dir = match &graph.app {
        crate::graph::App::User { dir, .. } => Some(dir.canonicalize().unwrap_or(dir.clone())),
        crate::graph::App::Builtin(_) => None,
    };
    let key_started = std::time::Instant::now();
    let key = crate::inputs::key(
        &store,
        &crate::inputs::KeyInputs {
            graph: &graph,
            glue: &glue,
            glue_dir: &glue_dir,
            spec: &opts.load.spec,
            root: &root,
            toolchain: &toolchain,
            triple: &triple,
            target_dir: &target_dir(&opts.load.spec),
        },
        prepared,
    )
    .map_err(Error::Inputs)?;
    let (key, mut selections) = (key.outcome, key.assets);
    crate::timings::add("key", key_started.elapsed());

    let _lock = store.lock()?;
    let name = graph.name.clone();
    let image_file = info.image_file(&name);
    let target = graph.target.clone();
    let (entry, fresh) = match store.lookup(&key.key, &name, &target)? {
        Some(entry) => {
            reporter.stage(
                "Found",
                &format!("{name} ({target}) in the store, unchanged"),
            );
            (entry, false)
        }
        None => {
            // Builds of one unikernel share its glue directory and cargo's output binary:
            // one at a time, from writing the glue until the image is in the store.
            let target_dir = target_dir(&opts.load.spec);
            std::fs::create_dir_all(&target_dir).map_err(Error::io("create", &target_dir))?;
            let lock_path = target_dir.join(format!(".compose-{name}-{target}.lock"));
            let build_lock = std::fs::File::create(&lock_path)
                .map_err(Error::io("create the build lock", &lock_path))?;
            build_lock
                .lock()
                .map_err(Error::io("take the build lock", &lock_path))?;
            crate::glue::write(&glue, &glue_dir).map_err(Error::io("write glue to", &glue_dir))?;
            if let Ok(bytes) = std::fs::read(root.join("rust-toolchain.toml")) {
                let path = glue_dir.join("rust-toolchain.toml");
                crate::glue::write_if_changed(&path, &bytes).map_err(Error::io("write", &path))?;
            }
            reporter.stage("Generating", &format!("glue for {name} ({target})"));
            let mut images = Vec::new();
            let pack_cache = store.pack_cache();
            let layered = crate::target::by_name(&target)
                .is_some_and(|t| t.reads_layered_images())
                .then(crate::image::layered_from)
                .transpose()
                .map(Option::flatten)
                .map_err(Error::Env)?;
            for step in &glue.steps {
                if let Some(image) = run_step(
                    step,
                    &glue_dir,
                    info.triple(),
                    layered,
                    &mut selections,
                    &pack_cache,
                    &reporter,
                )? {
                    images.push(image);
                }
            }
            // The block images are complete: hash them while cargo builds (a large one
            // takes most of a second), on another thread.
            let image_hashes: Vec<_> = images
                .iter()
                .map(|(device, file): &(String, PathBuf)| {
                    let (device, file) = (device.clone(), file.clone());
                    std::thread::spawn(move || {
                        (
                            device,
                            crate::store::sha256_image(&file).map_err(|e| e.to_string()),
                        )
                    })
                })
                .collect();
            reporter.stage("Building", &format!("{name} for {target}"));
            let cargo = CargoOptions {
                target_dir: target_dir.clone(),
                format: opts.format,
                verbose: opts.verbose,
                rustflags: reproducible_rustflags(
                    &root,
                    &glue_dir,
                    &std::path::absolute(&target_dir).unwrap_or(target_dir.clone()),
                    app_dir.as_deref(),
                ),
            };
            // Only a user application's call can be wrong because of the spec; a built-in one is ours.
            let app_span = matches!(graph.app, crate::graph::App::User { .. })
                .then_some(&spec.application.span);
            let cargo_started = std::time::Instant::now();
            let artifact = match crate::build::cargo_build(
                &glue,
                &glue_dir,
                info,
                app_span,
                &cargo,
                &mut reporter,
            ) {
                Ok(a) => a,
                // The compiler's own messages are noise next to the spec's diagnostics:
                // shown with -v only.
                Err(BuildError::Compile { spec, .. }) if !spec.is_empty() && !opts.verbose => {
                    return Err(BuildError::Compile {
                        spec,
                        rendered: Vec::new(),
                        stderr: String::new(),
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            crate::timings::add("cargo", cargo_started.elapsed());
            let image_started = std::time::Instant::now();
            let image_bytes = std::fs::read(&artifact).map_err(Error::io("read", &artifact))?;
            info.check_image(&image_bytes)
                .map_err(|why| Error::ImageCheck {
                    target: target.clone(),
                    path: artifact.clone(),
                    why: why.to_string(),
                })?;
            // A target may store another form of cargo's output (rpi4: the flat kernel8.img).
            let finished = info
                .finish_image(&image_bytes)
                .map_err(|why| Error::ImageCheck {
                    target: target.clone(),
                    path: artifact.clone(),
                    why,
                })?;
            drop(image_bytes);
            let artifact = match finished {
                Some(bytes) => {
                    // Next to cargo's output, named after it: unikernels share the
                    // target directory (and so would share `kernel8.img`).
                    let path = artifact.with_file_name(format!("{name}-{target}.{image_file}"));
                    std::fs::write(&path, bytes).map_err(Error::io("write", &path))?;
                    path
                }
                None => artifact,
            };
            // What the target makes besides the image (rpi4: the SD card image).
            let extra = {
                let image = std::fs::read(&artifact).map_err(Error::io("read", &artifact))?;
                let inputs = info.input_files().map_err(Error::Inputs)?;
                info.extra_outputs(&graph, &image, &inputs)
                    .map_err(|why| Error::ImageCheck {
                        target: target.clone(),
                        path: artifact.clone(),
                        why,
                    })?
            };
            if let Some(note) = &extra.note {
                eprintln!("note: {note}");
            }
            let mut extra_files = Vec::new();
            for (file, bytes) in &extra.files {
                let path = artifact.with_file_name(format!("{name}-{target}.{file}"));
                std::fs::write(&path, bytes).map_err(Error::io("write", &path))?;
                extra_files.push((file.clone(), path));
            }
            drop(extra.files);
            crate::timings::add("image", image_started.elapsed());
            reporter.stage("Storing", &format!("{name} ({target})"));
            let sbom = crate::image::sbom(&glue_dir, &triple, &name).map_err(Error::Image)?;
            let sbom =
                crate::image::sbom_with(&sbom, &extra.sbom_components).map_err(Error::Image)?;
            let spec_dir = crate::inputs::spec_dir(&opts.load.spec);
            let (spec_base, spec_path) = crate::inputs::portable(&opts.load.spec, &root, &spec_dir);
            let mut command = vec![
                "compose".to_string(),
                "build".into(),
                spec_path.clone(),
                "--target".into(),
                target.clone(),
            ];
            for (k, v) in &opts.load.args {
                command.extend(["--arg".to_string(), format!("{k}={v}")]);
            }
            let buildinfo = crate::image::BuildInfo {
                name: &name,
                target: &target,
                toolchain: &toolchain,
                triple: &triple,
                command,
                spec: spec_path,
                spec_base,
                args: &opts.load.args,
                key: &key,
                cargo: crate::build::cargo_args(info),
            }
            .to_json();
            let epoch = crate::bundle::source_date_epoch()?;
            let manifest = crate::manifest::Manifest::from_graph(&graph, &image_file);
            // Entries made from an assets device that publishes keys on purpose.
            let keys_allowed: Vec<String> = glue
                .steps
                .iter()
                .filter_map(|s| match s {
                    crate::glue::Step::PackAssets {
                        device,
                        block,
                        allow_private_keys: true,
                        ..
                    } => Some(if *block {
                        format!("{device}.img")
                    } else {
                        image_file.clone()
                    }),
                    _ => None,
                })
                .collect();
            let store_started = std::time::Instant::now();
            let block_hashes = crate::timings::time("hash", || {
                image_hashes
                    .into_iter()
                    .map(|h| h.join().expect("the hashing thread does not panic"))
                    .collect::<std::collections::BTreeMap<_, _>>()
            });
            let committed = store.commit(&key.key, &name, &target, |tmp: &Path| {
                crate::image::fill_entry(
                    tmp,
                    crate::image::EntryContents {
                        image: (&image_file, &artifact),
                        block_images: &images,
                        block_hashes: &block_hashes,
                        extra_files: &extra_files,
                        manifest,
                        buildinfo,
                        sbom,
                        epoch,
                        keys_allowed: &keys_allowed,
                        frame_cache: Some(store.frame_cache()),
                    },
                )
                .map(|_| ())
            })?;
            // The store has fsync'd the archives it holds (and so the build folder's, the
            // same files): the next pack may trust their stamps.
            for (_, archive) in &images {
                compose_assets::commit_stamps(archive).map_err(Error::io("sync", archive))?;
            }
            crate::timings::add("store", store_started.elapsed());
            // The image in the store holds the assets objects' bytes: they are written
            // again before the next link, so the build folder need not keep them.
            for step in &glue.steps {
                if let crate::glue::Step::AssetsObject { object, .. } = step {
                    let _ = std::fs::remove_file(glue_dir.join(object));
                }
            }
            drop(build_lock);
            (committed.path, committed.fresh)
        }
    };
    let manifest_path = entry.join(crate::manifest::JSON_FILE);
    let manifest_text =
        std::fs::read_to_string(&manifest_path).map_err(Error::io("read", &manifest_path))?;
    let manifest =
        crate::manifest::Manifest::from_json(&manifest_text).map_err(|source| Error::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
    let image = entry.join(&manifest.image);
    let block_images: Vec<(String, PathBuf)> = manifest
        .files
        .keys()
        // Not the image itself (rpi4's kernel8.img), nor a file named with a dot
        // (`NAME.sdcard.img`): device names have none.
        .filter(|f| **f != manifest.image)
        .filter_map(|f| {
            f.strip_suffix(".img")
                .filter(|d| !d.contains('.'))
                .map(|d| (d.to_string(), entry.join(f)))
        })
        .collect();
    if let Some(link) = &opts.out_link {
        store.link_result(&entry, link)?;
    }
    if let Some(out) = &opts.out {
        crate::image::place(&image, out, &manifest.image)
            .map_err(Error::io("copy the image to", out))?;
        for (device, file) in &block_images {
            crate::image::place_block_image(file, out, &format!("{device}.img"))
                .map_err(Error::io("copy a block image to", out))?;
        }
        // Other disk images the target made (rpi4: NAME.sdcard.img).
        for f in manifest.files.keys() {
            if f.ends_with(".img")
                && *f != manifest.image
                && !block_images.iter().any(|(d, _)| format!("{d}.img") == *f)
            {
                crate::image::place(&entry.join(f), out, f)
                    .map_err(Error::io("copy a disk image to", out))?;
            }
        }
    }
    reporter.stage("Finished", &entry.display().to_string());
    crate::timings::report(started.elapsed());
    match opts.format {
        MessageFormat::Json => crate::build::json_line(
            &serde_json::json!({"reason": "compose-result", "success": true, "entry": entry, "image": image, "target": target, "fresh": fresh}),
        ),
        MessageFormat::Human => {}
    }
    Ok(Built {
        graph,
        entry,
        image,
        block_images,
        manifest,
        fresh,
    })
}

/// The target's own memory check, reported at the spec's `memory` line (or its
/// `unikernel` node when the size is the default).
fn check_memory(
    target: &dyn crate::target::Target,
    spec: &crate::spec::Spec,
    graph: &Graph,
) -> Result<(), Error> {
    let Err(why) = target.check_memory(graph.memory) else {
        return Ok(());
    };
    let (span, label) = match &spec.memory {
        Some((_, span)) => (span, "this much"),
        None => (&spec.name_span, "the default memory"),
    };
    let d = Diag::new(
        "compose::memory",
        format!(
            "{} of memory does not fit target {}",
            match graph.memory {
                m if m % (1 << 30) == 0 => format!("{}GiB", m >> 30),
                m if m % (1 << 20) == 0 => format!("{}MiB", m >> 20),
                m => format!("{m} bytes"),
            },
            target.name()
        ),
        span,
        label,
    )
    .help(why);
    Err(Error::Spec(vec![d]))
}

fn host_triple(rustc_vv: &str) -> String {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or("x86_64-unknown-linux-gnu")
        .to_string()
}

/// Runs one build step; returns (device, file) when it produced a block-device image.
fn run_step(
    step: &crate::glue::Step,
    glue_dir: &Path,
    triple: Option<&str>,
    layered_from: Option<u64>,
    selections: &mut std::collections::BTreeMap<String, compose_assets::Selected>,
    pack_cache: &compose_assets::PackCache,
    reporter: &Reporter,
) -> Result<Option<(String, PathBuf)>, Error> {
    match step {
        crate::glue::Step::PackAssets {
            device,
            dir,
            include,
            exclude,
            compress,
            archive,
            block,
            allow_private_keys,
        } => {
            reporter.stage("Packing", &format!("{} ({})", dir.display(), device));
            let options = compose_assets::PackOptions {
                include: include.clone(),
                exclude: exclude.clone(),
                compress: *compress,
                allow_private_keys: *allow_private_keys,
                source_date_epoch: compose_assets::source_date_epoch_from_env()
                    .map_err(Error::PackEpoch)?,
                layered_from: layered_from.filter(|_| *block),
                ..Default::default()
            };
            let out = glue_dir.join(archive);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
            }
            // The files the key found and `stat`ed (it always has, for a build): the tree
            // is walked once.
            let selected = selections.remove(device);
            let summary = crate::timings::time("pack", || match selected {
                Some(s) => compose_assets::pack_incremental_deferred_selected(
                    s,
                    &options,
                    &out,
                    Some(pack_cache),
                ),
                None => {
                    compose_assets::pack_incremental_deferred(dir, &options, &out, Some(pack_cache))
                }
            })
            .map_err(|source| Error::Pack {
                device: device.clone(),
                source,
            })?;
            crate::timings::count("archive-written", summary.written as u64);
            crate::timings::count("files-reused", summary.reused_files);
            crate::timings::count("files-read", summary.files - summary.reused_files);
            Ok(block.then(|| (device.clone(), out)))
        }
        crate::glue::Step::AssetsObject {
            archive,
            ident,
            object,
        } => {
            crate::timings::time("object", || {
                crate::elfobj::write_blob_object(
                    &glue_dir.join(archive),
                    ident,
                    crate::elfobj::Machine::of(triple),
                    &glue_dir.join(object),
                )
            })
            .map_err(Error::io("write", glue_dir.join(object)))?;
            // The object holds every byte of the archive: keep one copy. (The next build
            // packs again, from the pack cache.)
            let _ = std::fs::remove_file(glue_dir.join(archive));
            let _ = std::fs::remove_file(compose_assets::stamps_file(&glue_dir.join(archive)));
            Ok(None)
        }
    }
}

/// Host resources for `compose run`: the flags `--net`, `--block`, `--secret`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--net NAME=TAP`.
    pub net: Vec<String>,
    /// `--block NAME=FILE`.
    pub block: Vec<String>,
    /// `--secret NAME=@FILE` or `NAME=env:VAR`.
    pub secrets: Vec<String>,
    /// Boot arguments.
    pub boot_args: Vec<String>,
}

/// An image to launch, with what its launch is checked against.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The unikernel's name.
    pub name: String,
    /// Its target.
    pub target: String,
    /// The store entry that holds it.
    pub entry: PathBuf,
    /// The image.
    pub image: PathBuf,
    /// Its deployment manifest.
    pub manifest: crate::manifest::Manifest,
    /// The block-device images that ship with it: (device, file).
    pub block_images: Vec<(String, PathBuf)>,
}

/// Whether `path` is a result (a store entry, or a link to one): a directory holding a
/// deployment manifest, rather than a spec file.
pub fn is_result(path: &Path) -> bool {
    path.is_dir() && path.join(crate::manifest::JSON_FILE).is_file()
}

impl Launch {
    /// The image a build made.
    pub fn of_built(built: &Built) -> Launch {
        Launch {
            name: built.graph.name.clone(),
            target: built.graph.target.clone(),
            entry: built.entry.clone(),
            image: built.image.clone(),
            manifest: built.manifest.clone(),
            block_images: built.block_images.clone(),
        }
    }

    /// The image of the result `path`, after checking that the image is the one its
    /// manifest records (so a service manager never starts a tampered image).
    pub fn of_result(path: &Path) -> Result<Launch, Error> {
        use crate::manifest::{JSON_FILE, Manifest};
        let entry = path.canonicalize().map_err(Error::io("resolve", path))?;
        let manifest_path = entry.join(JSON_FILE);
        let text =
            std::fs::read_to_string(&manifest_path).map_err(Error::io("read", &manifest_path))?;
        let manifest = Manifest::from_json(&text).map_err(|source| Error::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
        let image = entry.join(&manifest.image);
        let bytes = std::fs::read(&image).map_err(Error::io("read the image", &image))?;
        if manifest.image_sha256() != Some(crate::store::sha256_hex(&bytes).as_str()) {
            return Err(LaunchError::Tampered {
                image,
                result: path.to_path_buf(),
            }
            .into());
        }
        let block_images = manifest
            .files
            .keys()
            .filter(|f| **f != manifest.image)
            .filter_map(|f| {
                f.strip_suffix(".img")
                    .filter(|d| !d.contains('.'))
                    .map(|d| (d.to_string(), entry.join(f)))
            })
            .collect();
        Ok(Launch {
            name: manifest.name.clone(),
            target: manifest.target.clone(),
            image,
            manifest,
            block_images,
            entry,
        })
    }
}

/// Builds (or finds) the image, checks the host mapping against its manifest, then runs
/// it; returns its exit status.
pub fn run(opts: &BuildOptions, run: &RunOptions) -> Result<i32, Error> {
    // Held from the build until the launch is recorded (released at exec: the descriptor
    // is close-on-exec), so that no gc runs in between and takes the entry.
    let _store_lock = crate::store::Store::open(opts.store.clone()).and_then(|s| s.lock())?;
    let built = build(&BuildOptions {
        out_link: None,
        ..opts.clone()
    })?;
    // The result link is a convenience here: a store this user cannot write (read-only)
    // still runs what it holds, with no link.
    if let Some(link) = &opts.out_link
        && let Err(e) = crate::store::Store::open(opts.store.clone())
            .and_then(|s| s.link_result(&built.entry, link))
    {
        eprintln!("warning: no result link at {}: {e}", link.display());
    }
    launch(&Launch::of_built(&built), run, opts.format, opts.verbose)
}

/// `compose run RESULT`: runs an existing result, with no spec and no build.
pub fn run_result(
    path: &Path,
    run: &RunOptions,
    format: MessageFormat,
    verbose: bool,
) -> Result<i32, Error> {
    launch(&Launch::of_result(path)?, run, format, verbose)
}

/// Checks the host mapping and the boot arguments against the image's manifest, then
/// runs it (replacing compose); returns only on failure.
pub fn launch(
    built: &Launch,
    run: &RunOptions,
    format: MessageFormat,
    verbose: bool,
) -> Result<i32, Error> {
    let runtime_flags = crate::target::by_name(&built.target).and_then(|t| t.runtime_flags());
    let checked: Vec<String> = run
        .boot_args
        .iter()
        .filter(|a| runtime_flags.is_none_or(|p| !a.starts_with(p)))
        .cloned()
        .collect();
    crate::manifest::check_boot_args(&built.manifest, &checked).map_err(|why| {
        LaunchError::BootArgs {
            name: built.name.clone(),
            why,
        }
    })?;
    let mut mapping = crate::manifest::Mapping::default();
    let mut problems = Vec::new();
    for n in &run.net {
        if let Err(e) = mapping.add_net(n) {
            problems.push(e);
        }
    }
    for b in &run.block {
        if let Err(e) = mapping.add_block(b) {
            problems.push(e);
        }
    }
    for s in &run.secrets {
        if let Err(e) = mapping.add_secret(s) {
            problems.push(e);
        }
    }
    // Block images the build made are attached unless the user maps them elsewhere.
    let mut from_store = Vec::new();
    for (device, file) in &built.block_images {
        if !mapping.block.contains_key(device) {
            mapping.block.insert(device.clone(), file.clone());
            from_store.push(device.clone());
        }
    }
    let mut manifest = built.manifest.clone();
    // Store images are sealed: always read-only. A user's file is written only if the spec
    // declares the device writable.
    for device in mapping.set_read_only(&manifest, &from_store) {
        eprintln!(
            "note: block device `{device}` is writable, but its image is in the store: attached read-only (pass --block {device}=FILE with a copy to write to it)"
        );
    }
    let target = crate::target::by_name(&built.target)
        .ok_or_else(|| Error::NoPlatform(crate::target::no_platform(&built.target)))?;
    if !target.attaches_net() {
        // A network interface is the host's networking: nothing to attach.
        if !mapping.net.is_empty() {
            problems.push(crate::manifest::MappingError::Malformed { flag: "--net", value: mapping.net.keys().cloned().collect::<Vec<_>>().join(","), expected: "no --net on unix: the unikernel uses the host's network (--net is for Solo5 targets)" });
        }
        manifest
            .devices
            .retain(|d| !matches!(d.kind, crate::manifest::DeviceKind::Net { .. }));
    }
    if !problems.is_empty() {
        return Err(crate::manifest::MappingErrors(problems).into());
    }
    mapping
        .validate(&manifest)
        .map_err(|source| LaunchError::Mapping {
            name: built.name.clone(),
            source,
        })?;
    // Every secret readable and not empty before anything is said to run.
    for (name, source) in &mapping.secrets {
        secret_value(name, source)?;
    }
    Reporter::new(format).stage("Running", &built.image.display().to_string());
    match target.launcher() {
        crate::target::Launcher::Exec => run_unix(built, &mapping, &run.boot_args),
        crate::target::Launcher::Xl => {
            // The secrets travel on a block device of their own, as on Solo5 targets.
            let secrets = secrets_image(&manifest, &mapping)?;
            crate::xen_sandbox::run(built, &manifest, mapping, secrets, &run.boot_args, verbose)
        }
        crate::target::Launcher::Qemu => run_qemu(built, &run.boot_args, verbose, format),
        crate::target::Launcher::Tender(tender) => {
            let tender = ensure_tender(tender, format)?;
            let mut mapping = mapping;
            // The secrets block device is built in memory and handed to the tender as an
            // inherited file: the values touch no disk and no command line.
            if let Some(image) = secrets_image(&manifest, &mapping)? {
                let fd = memfd_with(&image)?;
                mapping.secrets_image = Some(PathBuf::from(format!("/proc/self/fd/{fd}")));
            }
            let args =
                crate::manifest::solo5_args(&manifest, &mapping, &built.image, &run.boot_args)?;
            if verbose {
                Reporter::new(format).stage(
                    "Running",
                    &format!("{} {}", tender.display(), args.join(" ")),
                );
            }
            let mut cmd = std::process::Command::new(&tender);
            cmd.args(&args);
            remove_secret_vars(&mut cmd, &mapping);
            let record = record_launch(built);
            let e = exec(cmd, &tender);
            forget_launch(record);
            Err(e)
        }
    }
}

/// Boots an rpi4 image in QEMU (replacing compose), with a fresh random seed for the
/// random device in an inherited memory file (the board under QEMU has no RNG200).
/// `$COMPOSE_QEMU_AARCH64` names the QEMU binary (default: `qemu-system-aarch64`).
fn run_qemu(
    built: &Launch,
    boot_args: &[String],
    verbose: bool,
    format: MessageFormat,
) -> Result<i32, Error> {
    let qemu = std::env::var_os("COMPOSE_QEMU_AARCH64")
        .filter(|q| !q.is_empty())
        .map_or_else(|| PathBuf::from("qemu-system-aarch64"), PathBuf::from);
    let mut seed = b"compose-rpi4-rng".to_vec();
    let mut random = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    seed.extend_from_slice(&random);
    let fd = memfd_with(&seed)?;
    let seed_path = PathBuf::from(format!("/proc/self/fd/{fd}"));
    let args =
        crate::target::qemu_args(&built.image, boot_args, Some(&seed_path)).map_err(|why| {
            LaunchError::BootArgs {
                name: built.name.clone(),
                why,
            }
        })?;
    if verbose {
        Reporter::new(format).stage("Running", &format!("{} {}", qemu.display(), args.join(" ")));
    }
    let mut cmd = std::process::Command::new(&qemu);
    cmd.args(&args);
    let record = record_launch(built);
    let e = exec(cmd, &qemu);
    forget_launch(record);
    Err(e)
}

/// The tender binary `name` (`compose-hvt`, `compose-spt`). Found, in order: in
/// `$COMPOSE_TENDER_DIR` (an explicit choice wins); for the checkout's own compose, built
/// (release) in the checkout, so that edits are seen; next to compose's executable (where
/// `cargo install` puts it); else built from the compose tree into
/// `<cache>/compose/tenders/<tree>/`, never into the tree itself.
pub fn ensure_tender(name: &str, format: MessageFormat) -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("COMPOSE_TENDER_DIR").filter(|d| !d.is_empty()) {
        let p = PathBuf::from(dir).join(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LaunchError::NoTender {
                name: name.to_string(),
                path: p,
            }
            .into())
        };
    }
    let root = crate::tree::root()?;
    let checkout = crate::tree::checkout().is_some_and(|c| c == root);
    if !checkout
        && let Some(p) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(name)))
            .filter(|p| p.is_file())
    {
        return Ok(p);
    }
    let (workspace, target_dir) = if checkout {
        (root.clone(), root.join("target"))
    } else {
        let cache = crate::tree::cache_dir()?
            .join("tenders")
            .join(crate::tree::tree_key(&root));
        (tender_workspace(&root, &cache)?, cache.join("target"))
    };
    Reporter::new(format).stage("Building", &format!("the {name} tender"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            name,
            "--manifest-path",
        ])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WRAPPER")
        .env_remove(crate::build::WRAPPER_ENV)
        .current_dir(&workspace)
        .output()
        .map_err(|source| LaunchError::TenderSpawn {
            name: name.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(LaunchError::TenderBuild {
            name: name.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        .into());
    }
    Ok(target_dir.join("release").join(name))
}

/// A workspace in `cache` that is a view of the compose tree `root` (its crate directories
/// linked, its manifest, lock and toolchain files copied), so that cargo may rewrite the lock
/// file there and never writes into the tree, which may be read-only or shared.
fn tender_workspace(root: &Path, cache: &Path) -> Result<PathBuf, Error> {
    let ws = cache.join("workspace");
    let io = |e: std::io::Error| Error::io("prepare a workspace to build tenders in", &ws)(e);
    std::fs::create_dir_all(&ws).map_err(io)?;
    for dir in ["devices", "platforms", "specs"] {
        crate::glue::ensure_link(&ws.join(dir), &root.join(dir)).map_err(io)?;
    }
    for file in ["Cargo.toml", "rust-toolchain.toml"] {
        if let Ok(bytes) = std::fs::read(root.join(file)) {
            crate::glue::write_if_changed(&ws.join(file), &bytes).map_err(io)?;
        }
    }
    if !ws.join("Cargo.lock").exists()
        && let Ok(bytes) = std::fs::read(root.join("Cargo.lock"))
    {
        crate::glue::write_if_changed(&ws.join("Cargo.lock"), &bytes).map_err(io)?;
    }
    Ok(ws)
}

/// Records this process (which is about to exec the unikernel, keeping its pid) as
/// running `built`'s entry, so that `compose gc` keeps the entry. Best effort: a store this
/// user cannot write (read-only) cannot be collected from here either.
fn record_launch(built: &Launch) -> Option<PathBuf> {
    // An entry's store is the directory that holds it.
    let store = crate::store::Store::at(built.entry.parent()?).ok()?;
    let pid = std::process::id();
    let start = crate::store::process_start_time(pid)?;
    match store.record_launch(&built.entry, pid, start) {
        Ok(p) => Some(p),
        Err(crate::store::StoreError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied
                || source.raw_os_error() == Some(libc::EROFS) =>
        {
            None
        }
        Err(e) => {
            eprintln!("warning: compose gc may remove the running image: {e}");
            None
        }
    }
}

/// Removes a launch record after a failed exec.
fn forget_launch(record: Option<PathBuf>) {
    if let Some(p) = record {
        let _ = std::fs::remove_file(p);
    }
}

fn run_unix(
    built: &Launch,
    mapping: &crate::manifest::Mapping,
    boot_args: &[String],
) -> Result<i32, Error> {
    let mut cmd = std::process::Command::new(&built.image);
    for (device, file) in &mapping.block {
        cmd.arg(format!(
            "{}{device}={}",
            mapping.block_flag(device),
            file.display()
        ));
    }
    // Secrets reach the unikernel as files: a named file as it is, an environment variable
    // through an anonymous in-memory file the unikernel inherits. Only paths are on the
    // command line, never values, and nothing is written to disk.
    for (name, source) in &mapping.secrets {
        // Checked here (readable, not empty), so that nothing starts with a bad secret.
        let value = secret_value(name, source)?;
        let path = match source {
            crate::manifest::SecretSource::File(p) => p.clone(),
            crate::manifest::SecretSource::Env(_) => {
                let fd = memfd_with(&value)?;
                PathBuf::from(format!("/proc/self/fd/{fd}"))
            }
        };
        cmd.arg(format!("--secret:{name}={}", path.display()));
    }
    remove_secret_vars(&mut cmd, mapping);
    cmd.args(boot_args);
    let record = record_launch(built);
    let e = exec(cmd, &built.image);
    forget_launch(record);
    Err(e)
}

/// The secrets block device's bytes, with every secret's value read from where the launch
/// named it; `None` if the unikernel has no secret.
fn secrets_image(
    manifest: &crate::manifest::Manifest,
    mapping: &crate::manifest::Mapping,
) -> Result<Option<Vec<u8>>, Error> {
    if manifest.devices_of("secret").next().is_none() {
        return Ok(None);
    }
    let mut values = Vec::new();
    for (name, source) in &mapping.secrets {
        values.push((name.clone(), secret_value(name, source)?));
    }
    let refs: Vec<(&str, &[u8])> = values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    Ok(Some(crate::manifest::secrets_block_image(&refs)?))
}

/// The value of secret `name` as the unikernel gets it: the file's or the variable's bytes
/// without one trailing newline. An empty value is refused, naming the secret.
fn secret_value(name: &str, source: &crate::manifest::SecretSource) -> Result<Vec<u8>, Error> {
    use crate::manifest::SecretSource;
    let (mut value, from) = match source {
        SecretSource::File(p) => (
            std::fs::read(p).map_err(|source| LaunchError::UnreadableSecret {
                name: name.to_string(),
                path: p.clone(),
                source,
            })?,
            format!("the file {}", p.display()),
        ),
        SecretSource::Env(var) => (
            std::env::var_os(var)
                .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
                .ok_or_else(|| LaunchError::UnsetSecret {
                    name: name.to_string(),
                    var: var.clone(),
                })?,
            format!("the environment variable {var}"),
        ),
    };
    if value.last() == Some(&b'\n') {
        value.pop();
    }
    if value.is_empty() {
        return Err(LaunchError::EmptySecret {
            name: name.to_string(),
            from,
        }
        .into());
    }
    Ok(value)
}

/// Removes from `cmd`'s environment every variable an `env:` secret came from, so that the
/// value is only where the unikernel was told to find it.
fn remove_secret_vars(cmd: &mut std::process::Command, mapping: &crate::manifest::Mapping) {
    for source in mapping.secrets.values() {
        if let crate::manifest::SecretSource::Env(var) = source {
            cmd.env_remove(var);
        }
    }
}

/// An anonymous in-memory file holding `bytes`, left open across exec; returns its fd.
fn memfd_with(bytes: &[u8]) -> Result<i32, Error> {
    // SAFETY: memfd_create with a NUL-terminated name and no flags (so the descriptor
    // survives exec, which is the point); the result is checked.
    let fd = unsafe { libc::memfd_create(c"compose-secret".as_ptr(), 0) };
    if fd < 0 {
        return Err(LaunchError::Memfd(std::io::Error::last_os_error()).into());
    }
    // SAFETY: `fd` was just created and is owned here; the File takes it over for the
    // write, and `into_raw_fd` hands it back without closing it.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut file, bytes).map_err(LaunchError::Memfd)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(file))
}

/// Replaces compose with `cmd`, so that signals (Ctrl-C, a supervisor's SIGTERM) reach the
/// unikernel or its tender directly and its exit status is the process's. Returns only on
/// failure.
fn exec(mut cmd: std::process::Command, what: &Path) -> Error {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let err = cmd.exec();
    LaunchError::Exec {
        what: what.to_path_buf(),
        source: err,
    }
    .into()
}

/// The files of a bundle or a store entry, by name.
fn read_artifact(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let meta = std::fs::metadata(path).map_err(Error::io("read", path))?;
    if meta.is_dir() {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(path)
            .map_err(Error::io("read", path))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && !name.ends_with(".tar.zst") {
                // A layered block image (`compose_blockfile`) is read as the bytes it
                // stands for; its parts are in a directory, not listed here.
                let bytes = if name.ends_with(".img")
                    && compose_blockfile::is_layered(&e.path()).unwrap_or(false)
                {
                    let image = compose_blockfile::BlockFile::open(&e.path())
                        .map_err(Error::io("read", e.path()))?;
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut image.reader(), &mut v)
                        .map_err(Error::io("read", e.path()))?;
                    v
                } else {
                    std::fs::read(e.path()).map_err(Error::io("read", e.path()))?
                };
                files.insert(name, bytes);
            }
        }
        Ok(files)
    } else {
        let entries = crate::bundle::read(path).map_err(|source| Error::NotABundle {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(entries.into_iter().collect())
    }
}

use std::collections::BTreeMap;

/// Who signed what `compose verify` checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// There is no signature.
    #[default]
    Unsigned,
    /// An intact signature by a key that is not trusted (its id).
    Untrusted(String),
    /// An intact signature by a trusted key (its id).
    Trusted(String),
}

/// What `compose verify` checks and found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Lines saying what was checked and held.
    pub ok: Vec<String>,
    /// Lines naming what is wrong.
    pub problems: Vec<String>,
    /// Who signed it (meaningful when there are no problems).
    pub trust: Trust,
}

/// Checks a bundle or a result: the manifest's own consistency, every file's sha256
/// against it, and the signature, whose key is checked against `trusted`.
pub fn verify(path: &Path, trusted: &crate::sign::TrustedKeys) -> Result<Verified, Error> {
    use crate::manifest::{JSON_FILE, KDL_FILE, Manifest, SIGNATURE_FILE};
    let files = read_artifact(path)?;
    let mut v = Verified::default();
    let Some(json) = files.get(JSON_FILE) else {
        v.problems.push(format!(
            "{JSON_FILE} is missing: this is not a compose bundle or result"
        ));
        return Ok(v);
    };
    let json = String::from_utf8_lossy(json).into_owned();
    let manifest = match Manifest::from_json(&json) {
        Ok(m) => m,
        Err(e) => {
            v.problems
                .push(format!("{JSON_FILE} is not a valid manifest: {e}"));
            return Ok(v);
        }
    };
    match files
        .get(KDL_FILE)
        .map(|b| Manifest::from_kdl(&String::from_utf8_lossy(b)))
    {
        Some(Ok(k)) if k == manifest => v.ok.push(format!("{KDL_FILE} matches {JSON_FILE}")),
        Some(Ok(_)) => v.problems.push(format!(
            "{KDL_FILE} has been modified: it no longer says what {JSON_FILE} says"
        )),
        Some(Err(e)) => v
            .problems
            .push(format!("{KDL_FILE} is not a valid manifest: {e}")),
        None => v.problems.push(format!("{KDL_FILE} is missing")),
    }
    let actual: BTreeMap<String, String> = files
        .iter()
        .filter(|(n, _)| ![JSON_FILE, KDL_FILE, SIGNATURE_FILE].contains(&n.as_str()))
        .map(|(n, b)| (n.clone(), crate::store::sha256_hex(b)))
        .collect();
    match manifest.verify_files(&actual) {
        Ok(()) => v.ok.push(format!(
            "{} files match the sha256 the manifest records",
            actual.len()
        )),
        Err(problems) => v.problems.extend(problems.iter().map(|p| p.to_string())),
    }
    match files.get(SIGNATURE_FILE) {
        Some(sig) => {
            match crate::sign::check(trusted, json.as_bytes(), &String::from_utf8_lossy(sig)) {
                Ok(crate::sign::SignedBy::Trusted(k)) => {
                    v.ok.push(format!(
                        "{SIGNATURE_FILE}: a valid signature of the manifest by the trusted key {}",
                        k.id()
                    ));
                    v.trust = Trust::Trusted(k.id());
                }
                Ok(crate::sign::SignedBy::Untrusted(k)) => {
                    v.ok.push(format!(
                        "{SIGNATURE_FILE}: a valid signature of the manifest by key {}",
                        k.id()
                    ));
                    v.trust = Trust::Untrusted(k.id());
                }
                Err(e) => v.problems.push(format!("{SIGNATURE_FILE}: {e}")),
            }
        }
        None => v.trust = Trust::Unsigned,
    }
    Ok(v)
}

/// `compose verify --rebuild`: rebuilds from the recorded inputs into a scratch store and
/// compares every file bit for bit; returns the first difference, if any.
pub fn rebuild_and_compare(path: &Path, format: MessageFormat) -> Result<Option<String>, Error> {
    let files = read_artifact(path)?;
    let info: serde_json::Value = files
        .get(crate::image::BUILDINFO_FILE)
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| Error::Artifact {
            path: path.to_path_buf(),
            what: format!("has no readable {}", crate::image::BUILDINFO_FILE),
        })?;
    let root = crate::tree::root()?;
    // A spec outside the compose tree is recorded relative to its own directory: rebuild
    // it from there (the current directory).
    let base = match info["spec_base"].as_str() {
        Some("spec-dir") => PathBuf::from("."),
        _ => root,
    };
    let spec = info["spec"]
        .as_str()
        .map(|s| base.join(s))
        .ok_or_else(|| Error::Artifact {
            path: path.to_path_buf(),
            what: format!("has a {} that names no spec", crate::image::BUILDINFO_FILE),
        })?;
    let args: Vec<(String, String)> = info["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(|s| crate::spec::parse_arg(s).ok()))
                .collect()
        })
        .unwrap_or_default();
    let scratch = tempfile::tempdir()
        .map_err(Error::io("create a scratch store in", std::env::temp_dir()))?;
    let opts = BuildOptions {
        load: LoadOptions {
            spec,
            target: info["target"].as_str().map(str::to_string),
            args,
        },
        out: None,
        store: Some(scratch.path().to_path_buf()),
        out_link: None,
        format,
        verbose: false,
    };
    let rebuilt = build(&opts)?;
    let again = read_artifact(&rebuilt.entry)?;
    for (name, bytes) in &files {
        if name == crate::manifest::SIGNATURE_FILE {
            continue;
        }
        let Some(other_bytes) = again.get(name) else {
            return Ok(Some(format!("{name}: the rebuild has no such file")));
        };
        if let Some(offset) = bytes
            .iter()
            .zip(other_bytes.iter())
            .position(|(a, b)| a != b)
            .or((bytes.len() != other_bytes.len()).then(|| bytes.len().min(other_bytes.len())))
        {
            return Ok(Some(format!(
                "{name} differs from the rebuild at byte offset {offset} (sizes {} and {})",
                bytes.len(),
                other_bytes.len()
            )));
        }
    }
    Ok(None)
}

/// `compose bundle`: writes the bundle of the result (a store entry or a link to one) at
/// `path` to `out`, with the bytes the build writes into an entry whose block images are
/// small enough (see [`crate::image::defer_bundle_from`]). Every file is checked against
/// the entry's manifest first, so an entry altered since its build gives no bundle; frames
/// come from the store's frame cache. Block images were scanned for private keys file by
/// file when they were packed, and are not scanned again; every other entry is.
pub fn bundle(path: &Path, out: &Path) -> Result<PathBuf, Error> {
    use crate::manifest::{DeviceKind, JSON_FILE, Manifest};
    let artifact = |what: String| Error::Artifact {
        path: path.to_path_buf(),
        what,
    };
    if !is_result(path) {
        return Err(artifact(
            "is not a result (a store entry, or a link to one)".into(),
        ));
    }
    let json_path = path.join(JSON_FILE);
    let json = std::fs::read_to_string(&json_path).map_err(Error::io("read", &json_path))?;
    let manifest = Manifest::from_json(&json)
        .map_err(|e| artifact(format!("has an invalid {JSON_FILE}: {e}")))?;
    let mut w = crate::bundle::BundleWriter::new(crate::bundle::source_date_epoch()?);
    if let Some(cache) = crate::store::Store::frame_cache_of_entry(path) {
        w = w.with_frame_cache(cache);
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(path).map_err(Error::io("read", path))? {
        let e = e.map_err(Error::io("read", path))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tar.zst") || !e.path().is_file() {
            continue;
        }
        let block_image = manifest.devices.iter().any(|d| {
            matches!(d.kind, DeviceKind::Block { size: Some(_), .. })
                && name == format!("{}.img", d.name)
        });
        if block_image {
            w.add_image(&name, &e.path())?;
        } else {
            w.add_file(&name, &e.path())?;
        }
        names.push(name);
    }
    for d in &manifest.devices {
        if matches!(d.kind, DeviceKind::Block { size: Some(_), .. }) {
            w.allow_private_keys(&format!("{}.img", d.name));
        }
    }
    // Everything the manifest lists and nothing else (but the manifests themselves).
    let listed: std::collections::BTreeSet<&str> =
        manifest.files.keys().map(String::as_str).collect();
    for name in &names {
        if !listed.contains(name.as_str()) && name != JSON_FILE && name != crate::manifest::KDL_FILE
        {
            return Err(artifact(format!(
                "holds {name}, which its manifest does not list"
            )));
        }
    }
    for name in &listed {
        if !names.iter().any(|n| n == name) {
            return Err(artifact(format!("lacks {name}, which its manifest lists")));
        }
    }
    let dir = crate::store::parent_dir(out);
    let tmp = crate::store::tmp_sibling(out);
    let hashes = w.write(&tmp)?;
    let altered: Vec<&str> = manifest
        .files
        .iter()
        .filter(|(name, sha)| hashes.get(*name) != Some(*sha))
        .map(|(name, _)| name.as_str())
        .collect();
    if !altered.is_empty() {
        let _ = std::fs::remove_file(&tmp);
        return Err(artifact(format!(
            "does not match its manifest (altered: {}): no bundle written",
            altered.join(", ")
        )));
    }
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", out)(e)
    })?;
    let _ = crate::store::sync_dir(dir);
    Ok(out.to_path_buf())
}

/// `compose sign`: writes a signed bundle of a bundle or result to `out`.
pub fn sign(path: &Path, key: &Path, out: &Path) -> Result<PathBuf, Error> {
    use crate::manifest::{JSON_FILE, SIGNATURE_FILE};
    let key = crate::sign::PrivateKey::load(key)?;
    let files = read_artifact(path)?;
    let json = files.get(JSON_FILE).ok_or_else(|| Error::Artifact {
        path: path.to_path_buf(),
        what: format!("has no {JSON_FILE}"),
    })?;
    let sig = key.sign(json).to_text();
    let epoch = crate::bundle::source_date_epoch()?;
    let mut w = crate::bundle::BundleWriter::new(epoch);
    for (name, bytes) in &files {
        if name != SIGNATURE_FILE {
            let exec = crate::manifest::Manifest::from_json(&String::from_utf8_lossy(json))
                .is_ok_and(|m| m.image == *name);
            w.add_bytes(name, bytes.clone(), exec)?;
        }
    }
    w.add_bytes(SIGNATURE_FILE, sig.into_bytes(), false)?;
    w.write(out)?;
    Ok(out.to_path_buf())
}
