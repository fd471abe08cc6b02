//! The operations behind the CLI's commands. They take option structs and never touch
//! clap, so tests and other front ends call them directly.

use crate::build::{BuildError, CargoOptions, MessageFormat, Reporter};
use crate::descriptor::Registry;
use crate::diag::Diag;
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

/// Why an operation failed; [`Failure::exit_code`] maps it to the process status.
#[derive(Debug)]
pub enum Failure {
    /// The spec (or a `--arg`) is wrong.
    Spec(Vec<Diag>),
    /// Compilation failed.
    Build(BuildError),
    /// Anything else, already worded for the user.
    Other(String),
}

impl Failure {
    /// 2 for command-line mistakes, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Spec(d) if !d.is_empty() && d.iter().all(|d| d.code == "compose::bad-arg") => 2,
            _ => 1,
        }
    }
}

impl From<Vec<Diag>> for Failure {
    fn from(d: Vec<Diag>) -> Self {
        Failure::Spec(d)
    }
}

/// Loads the spec and resolves its graph: the whole of `compose check`.
pub fn check(opts: &LoadOptions) -> Result<(Spec, Graph), Failure> {
    let registry = Registry::builtin().map_err(|e| Failure::Other(format!("internal error: bad device descriptor: {e}")))?;
    let spec = crate::spec::load(&opts.spec, &opts.args, &registry)?;
    let target = match &opts.target {
        Some(t) if !crate::spec::TARGETS.contains(&t.as_str()) => {
            let help = crate::diag::suggest(t, crate::spec::TARGETS.iter().copied());
            return Err(Failure::Spec(vec![Diag::nowhere("compose::bad-arg", format!("--target {t}: unknown target")).help(help)]));
        }
        Some(t) => t.clone(),
        None => spec.target.as_ref().map_or_else(|| "unix".to_string(), |(t, _)| t.clone()),
    };
    let graph = crate::graph::resolve(&spec, &registry, &target)?;
    Ok((spec, graph))
}

/// Options of `compose build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// What to build.
    pub load: LoadOptions,
    /// Where the image goes; default `dist/` next to the spec.
    pub out: Option<PathBuf>,
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
    /// The image.
    pub image: PathBuf,
    /// The generated glue crate.
    pub glue_dir: PathBuf,
    /// Block-device images that ship with the image: (device, file).
    pub block_images: Vec<(String, PathBuf)>,
}

/// The spec's directory, absolute (cargo runs in other directories).
fn spec_dir(spec: &Path) -> PathBuf {
    let dir = spec.parent().filter(|p| !p.as_os_str().is_empty()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Where cargo keeps build products: `$COMPOSE_TARGET_DIR`, or `_build/target` next to the spec.
pub fn target_dir(spec: &Path) -> PathBuf {
    match std::env::var_os("COMPOSE_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => spec_dir(spec).join("_build").join("target"),
    }
}

/// Parse, resolve, generate, compile, place: `compose build`.
pub fn build(opts: &BuildOptions) -> Result<Built, Failure> {
    let mut reporter = Reporter::new(opts.format);
    let (spec, graph) = match check(&opts.load) {
        Ok(x) => x,
        Err(Failure::Spec(d)) => {
            reporter.diagnostics(&d);
            return Err(Failure::Spec(Vec::new()));
        }
        Err(e) => return Err(e),
    };
    let info = crate::glue::target_info(&graph.target)
        .ok_or_else(|| Failure::Other(format!("compose cannot build for target {} yet: only unix has a platform so far", graph.target)))?;
    reporter.stage("Generating", &format!("glue for {} ({})", graph.name, graph.target));
    let glue = crate::glue::generate(&graph, &opts.load.spec).map_err(|e| Failure::Other(e.to_string()))?;
    let dir = spec_dir(&opts.load.spec);
    let glue_dir = dir.join("_build").join(format!("{}-{}", graph.name, graph.target));
    crate::glue::write(&glue, &glue_dir).map_err(|e| Failure::Other(format!("cannot write glue to {}: {e}", glue_dir.display())))?;
    let toolchain = crate::glue::compose_root().join("rust-toolchain.toml");
    if let Ok(bytes) = std::fs::read(&toolchain) {
        crate::glue::write_if_changed(&glue_dir.join("rust-toolchain.toml"), &bytes).map_err(|e| Failure::Other(e.to_string()))?;
    }
    let mut images = Vec::new();
    for step in &glue.steps {
        if let Some(image) = run_step(step, &glue_dir, &reporter)? {
            images.push(image);
        }
    }
    reporter.stage("Building", &format!("{} for {}", graph.name, graph.target));
    let cargo = CargoOptions { target_dir: target_dir(&opts.load.spec), format: opts.format, verbose: opts.verbose };
    // Only a user application's call can be wrong because of the spec; a built-in one is ours.
    let app_span = matches!(graph.app, crate::graph::App::User { .. }).then_some(&spec.application.span);
    let artifact = match crate::build::cargo_build(&glue, &glue_dir, info, app_span, &cargo, &mut reporter) {
        Ok(a) => a,
        Err(BuildError::Compile { spec, rendered, stderr }) => {
            if !spec.is_empty() {
                reporter.diagnostics(&spec);
            }
            if opts.format == MessageFormat::Human && !spec.is_empty() && !opts.verbose {
                eprintln!("(compose -v build shows the compiler's own messages)");
            } else if opts.format == MessageFormat::Human {
                for r in &rendered {
                    eprint!("{r}");
                }
                if rendered.is_empty() {
                    eprint!("{stderr}");
                }
            }
            return Err(Failure::Build(BuildError::Compile { spec, rendered: Vec::new(), stderr: String::new() }));
        }
        Err(e) => return Err(Failure::Build(e)),
    };
    let out = opts.out.clone().unwrap_or_else(|| dir.join("dist"));
    let image = crate::image::place(&artifact, &out, &graph.name).map_err(|e| Failure::Other(format!("cannot write the image to {}: {e}", out.display())))?;
    let mut block_images = Vec::new();
    for (device, archive) in images {
        let file = format!("{device}.img");
        let placed = crate::image::place(&archive, &out, &file).map_err(|e| Failure::Other(format!("cannot write {file} to {}: {e}", out.display())))?;
        block_images.push((device, placed));
    }
    reporter.stage("Finished", &image.display().to_string());
    if opts.format == MessageFormat::Json {
        crate::build::json_line(&serde_json::json!({"reason": "compose-result", "success": true, "image": image, "target": graph.target}));
    }
    Ok(Built { graph, image, glue_dir, block_images })
}

/// Runs one build step; returns (device, file) when it produced a block-device image.
fn run_step(step: &crate::glue::Step, glue_dir: &Path, reporter: &Reporter) -> Result<Option<(String, PathBuf)>, Failure> {
    match step {
        crate::glue::Step::PackAssets { device, dir, include, exclude, compress, archive, block } => {
            reporter.stage("Packing", &format!("{} ({})", dir.display(), device));
            let options = compose_assets::PackOptions {
                include: include.clone(),
                exclude: exclude.clone(),
                compress: *compress,
                source_date_epoch: compose_assets::source_date_epoch_from_env().map_err(|e| Failure::Other(e.to_string()))?,
                ..Default::default()
            };
            let out = glue_dir.join(archive);
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Failure::Other(format!("cannot create {}: {e}", parent.display())))?;
            }
            compose_assets::pack(dir, &options, &out).map_err(|e| Failure::Other(format!("cannot pack assets `{device}`: {e}")))?;
            Ok(block.then(|| (device.clone(), out)))
        }
    }
}

/// Builds, then runs the image with `boot_args`; returns its exit status.
pub fn run(opts: &BuildOptions, boot_args: &[String]) -> Result<i32, Failure> {
    let built = build(opts)?;
    if built.graph.target != "unix" {
        return Err(Failure::Other(format!("compose run cannot launch target {} yet", built.graph.target)));
    }
    Reporter::new(opts.format).stage("Running", &built.image.display().to_string());
    // Block devices whose contents the build made (assets on a block device) are attached
    // the way the Solo5 tenders do it.
    let attach = built.block_images.iter().map(|(d, f)| format!("--block:{d}={}", f.display()));
    let status = std::process::Command::new(&built.image)
        .args(attach)
        .args(boot_args)
        .status()
        .map_err(|e| Failure::Other(format!("cannot start {}: {e}", built.image.display())))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
