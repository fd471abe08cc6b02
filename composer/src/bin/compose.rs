//! The `compose` command line: parses arguments and calls `compose::ops`.

use clap::{Args, CommandFactory, Parser, Subcommand};
use compose::build::MessageFormat;
use compose::error::{Error, LaunchError};
use compose::ops::{self, BuildOptions, LoadOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// Declarative build system and image composer for Rust unikernels.
///
/// A KDL spec declares a unikernel's devices and application; compose checks it, resolves
/// the device graph, generates Rust glue and builds an image for a target.
#[derive(Parser, Debug)]
#[command(
    name = "compose",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Show more: the exact cargo command the build runs.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse and resolve a spec and report any mistake; nothing is built.
    Check(SpecArgs),
    /// Show the resolved device graph for a target.
    Describe {
        #[command(flatten)]
        spec: SpecArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: DescribeFormat,
    },
    /// Generate the glue, compile it and place the image.
    Build {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Write a new project into DIR: a spec, its application crate and a .gitignore.
    Init {
        /// The project directory (new or empty).
        dir: PathBuf,
        /// What to start from.
        #[arg(long, value_enum, default_value = "hello")]
        template: InitTemplate,
    },
    /// Build if needed, then run the unikernel; arguments after `--` are its boot arguments.
    ///
    /// Given a spec, it builds (or finds) the image and leaves ./result like `build`; given a
    /// result (a store entry or a result link), it runs that image as it is, with no spec and
    /// no build: what a service manager calls.
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        out: OutArgs,
        /// Attach a network interface the image declares to a host tap (Solo5 targets).
        #[arg(long, value_name = "NAME=TAP")]
        net: Vec<String>,
        /// Attach a block device the image declares to a host file.
        #[arg(long, value_name = "NAME=FILE")]
        block: Vec<String>,
        /// Supply a secret the spec declares: from a file (`NAME=@FILE`) or an environment
        /// variable (`NAME=env:VAR`). The value never reaches a command line or a log.
        #[arg(long, value_name = "NAME=@FILE")]
        secret: Vec<String>,
        /// Boot arguments, e.g. `-- --name=Ada`.
        #[arg(last = true)]
        boot_args: Vec<String>,
    },
    /// Check a bundle or a result: manifest, file hashes, signature, and who signed it.
    ///
    /// The signature must be by a trusted key: one given with --key, or else one listed in
    /// the trust file ($COMPOSE_TRUSTED_KEYS, else $XDG_CONFIG_HOME/compose/trusted-keys,
    /// else ~/.config/compose/trusted-keys; one KEY.pub line per key, # comments).
    ///
    /// Exit status: 0 intact and signed by a trusted key; 1 does not verify (a file, the
    /// manifest or the signature was altered, or a --rebuild differs); 2 a --key or the trust
    /// file cannot be read; 3 intact but unsigned, or signed by a key that is not trusted
    /// (with --no-trust: 0).
    #[command(verbatim_doc_comment)]
    Verify {
        /// A bundle (`NAME-TARGET.tar.zst`) or a result (link or store entry).
        path: PathBuf,
        /// A trusted public key (`compose keygen` wrote it as KEY.pub); repeatable. When
        /// given, only these keys are trusted and the trust file is not read.
        #[arg(long, value_name = "KEY.pub")]
        key: Vec<PathBuf>,
        /// Also rebuild from the recorded inputs and compare bit for bit.
        #[arg(long)]
        rebuild: bool,
        /// Check integrity only (manifest, file hashes, --rebuild): a result or bundle that
        /// is intact passes whoever signed it, or if no one did, as `nix store verify
        /// --no-trust` does. A signature that is present must still be valid.
        #[arg(long, conflicts_with = "key")]
        no_trust: bool,
    },
    /// Make an ed25519 signing key (private key mode 0600) and its KEY.pub; prints the
    /// public key line and the key's id (`compose:` and 16 hex digits).
    Keygen {
        /// Where to write the private key.
        #[arg(default_value = "compose.key")]
        path: PathBuf,
    },
    /// Write a signed bundle of a bundle or a result.
    Sign {
        /// A bundle or a result.
        path: PathBuf,
        /// The private key.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The signed bundle to write (default: NAME-TARGET.tar.zst here).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Write the bundle of a result (NAME-TARGET.tar.zst) that its build left out of the
    /// store entry (block images of 256 MiB or more: see COMPOSE_DEFER_BUNDLE_FROM), or
    /// a copy of the one it holds: the same bytes either way. Checks every file against
    /// the manifest first; prints the path written.
    #[command(verbatim_doc_comment)]
    Bundle {
        /// A result (link or store entry).
        path: PathBuf,
        /// The bundle to write (default: NAME-TARGET.tar.zst here).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Remove store entries that no `result` link, pin or running unikernel refers to.
    Gc {
        /// The store.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
        /// Only list what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep a result from `compose gc` under a name, with no result link needed.
    Pin {
        /// A result (link or store entry).
        path: PathBuf,
        /// The pin's name.
        name: String,
        /// The store.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Remove a pin.
    Unpin {
        /// The pin's name.
        name: String,
        /// The store.
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Render a result's deployment manifest for a launcher.
    Deploy {
        /// A result (link or store entry).
        path: PathBuf,
        /// What to render.
        #[arg(long, value_enum, default_value = "solo5")]
        format: compose::target::DeployFormat,
        /// Host tap or bridge for a network interface.
        #[arg(long, value_name = "NAME=TAP")]
        net: Vec<String>,
        /// Host file or volume for a block device.
        #[arg(long, value_name = "NAME=FILE")]
        block: Vec<String>,
        /// Supply a secret the image declares (`NAME=@FILE` or `NAME=env:VAR`); the solo5
        /// launch line then goes through `compose run RESULT`, which builds the secrets block.
        #[arg(long, value_name = "NAME=@FILE")]
        secret: Vec<String>,
        /// Boot arguments (checked against the ones the image declares).
        #[arg(last = true)]
        boot_args: Vec<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
struct SpecArgs {
    /// The spec file (for `run`, also a result: a store entry or a result link).
    spec: PathBuf,
    /// The target: unix, hvt, spt, xen or rpi4 (default: the spec's, else unix).
    #[arg(long, short)]
    target: Option<String>,
    /// Set a build-time parameter declared with `param`.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = compose::spec::parse_arg)]
    args: Vec<(String, String)>,
}

#[derive(Args, Debug)]
struct OutArgs {
    /// Also copy the image (and block images) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The store (default: $COMPOSE_STORE, else ~/.cache/compose/store).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Where to leave the link to the result.
    #[arg(long, value_name = "PATH", default_value = "result")]
    out_link: PathBuf,
    /// Leave no result link.
    #[arg(long)]
    no_out_link: bool,
    /// How to report progress and errors.
    #[arg(long, value_enum, default_value = "human")]
    message_format: MessageFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum InitTemplate {
    /// A console greeting: spec and application crate.
    Hello,
    /// A TCP echo service: spec and application crate.
    Echo,
    /// A static website: spec and public/.
    Site,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DescribeFormat {
    Text,
    Json,
    Dot,
}

impl OutArgs {
    fn options(&self, load: LoadOptions, verbose: bool, link_by_default: bool) -> BuildOptions {
        let out_link = (link_by_default && !self.no_out_link).then(|| self.out_link.clone());
        BuildOptions {
            load,
            out: self.out.clone(),
            store: self.store.clone(),
            out_link,
            format: self.message_format,
            verbose,
        }
    }
}

impl SpecArgs {
    fn load(&self) -> LoadOptions {
        LoadOptions {
            spec: self.spec.clone(),
            target: self.target.clone(),
            args: self.args.clone(),
        }
    }
}

/// Prints an error, once: spec and usage diagnostics with miette (or as
/// `compose-diagnostic` JSON lines), anything else as miette's report (or one
/// `compose-error` JSON line on stdout, so that stdout is only JSON).
fn report(e: &Error, format: MessageFormat, verbose: bool) {
    let diags = e.diagnostics();
    compose::build::Reporter::new(format).diagnostics(diags);
    if let Error::Build(compose::build::BuildError::Compile {
        spec,
        rendered,
        stderr,
    }) = e
    {
        if format == MessageFormat::Human {
            for r in rendered {
                eprint!("{r}");
            }
            if rendered.is_empty() {
                eprint!("{stderr}");
            }
            if !spec.is_empty() && !verbose {
                eprintln!("(compose -v build shows the compiler's own messages)");
            }
        }
        if !spec.is_empty() {
            // Mapped to the spec: reported like the spec's own mistakes.
            return;
        }
    } else if !diags.is_empty() {
        // The diagnostics are the whole report.
        return;
    }
    match format {
        MessageFormat::Human => {
            let theme = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                miette::GraphicalTheme::default()
            } else {
                miette::GraphicalTheme::unicode_nocolor()
            };
            // Not wrapped: messages name paths and key ids, which must stay whole.
            let handler = miette::GraphicalReportHandler::new_themed(theme)
                .with_links(false)
                .with_wrap_lines(false)
                .without_cause_chain();
            let mut out = String::new();
            match handler.render_report(&mut out, e) {
                Ok(()) => eprint!("{out}"),
                Err(_) => eprintln!("error: {e}"),
            }
        }
        MessageFormat::Json => {
            use miette::Diagnostic;
            compose::build::json_line(&serde_json::json!({
                "reason": "compose-error",
                "code": e.code().map(|c| c.to_string()),
                "message": e.to_string(),
                "help": e.help().map(|h| h.to_string()),
                "exit": e.exit_code(),
            }));
        }
    }
}

fn verify(
    path: &std::path::Path,
    keys: &[PathBuf],
    rebuild: bool,
    no_trust: bool,
) -> Result<i32, Error> {
    use compose::ops::Trust;
    use compose::sign::TrustedKeys;
    let trusted = if keys.is_empty() {
        TrustedKeys::from_trust_file(|k| std::env::var_os(k))
    } else {
        TrustedKeys::from_files(keys)
    };
    let trusted = trusted.map_err(Error::TrustedKeys)?;
    let v = ops::verify(path, &trusted)?;
    for line in &v.ok {
        eprintln!("  ok: {line}");
    }
    for line in &v.problems {
        eprintln!("  FAILED: {line}");
    }
    if !v.problems.is_empty() {
        return Err(Error::NotVerified(path.to_path_buf()));
    }
    if rebuild {
        match ops::rebuild_and_compare(path, MessageFormat::Human)? {
            None => eprintln!("  ok: a rebuild from the recorded inputs is bit-for-bit identical"),
            Some(diff) => return Err(Error::NotReproducible(diff)),
        }
    }
    match &v.trust {
        _ if no_trust => {
            println!(
                "{}: intact (signatures not required: --no-trust)",
                path.display()
            );
            Ok(0)
        }
        Trust::Trusted(id) => {
            println!("{}: verified, signed by trusted key {id}", path.display());
            Ok(0)
        }
        Trust::Untrusted(id) => Err(Error::Untrusted {
            path: path.to_path_buf(),
            id: id.clone(),
            trusted: trusted_list(&trusted),
        }),
        Trust::Unsigned => Err(Error::Unsigned(path.to_path_buf())),
    }
}

fn trusted_list(t: &compose::sign::TrustedKeys) -> String {
    if t.keys().is_empty() {
        format!("none, from {}", t.source)
    } else {
        let ids: Vec<String> = t.keys().iter().map(|k| k.id()).collect();
        format!("{}, from {}", ids.join(", "), t.source)
    }
}

fn sign(
    path: &std::path::Path,
    key: &std::path::Path,
    output: Option<&std::path::Path>,
) -> Result<i32, Error> {
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => {
            let m = ops::verify(path, &compose::sign::TrustedKeys::default())?;
            if !m.problems.is_empty() {
                return Err(Error::NotSigning(path.to_path_buf()));
            }
            let dir = if path.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().map(|p| p.to_path_buf()).unwrap_or_default()
            };
            let manifest = std::fs::read_to_string(dir.join(compose::manifest::JSON_FILE))
                .ok()
                .and_then(|t| compose::manifest::Manifest::from_json(&t).ok());
            match manifest {
                Some(m) => PathBuf::from(compose::bundle::file_name(&m.name, &m.target)),
                None => PathBuf::from("signed.tar.zst"),
            }
        }
    };
    let written = ops::sign(path, key, &out)?;
    println!("{}", written.display());
    Ok(0)
}

fn bundle(path: &std::path::Path, output: Option<&std::path::Path>) -> Result<i32, Error> {
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => {
            let json = path.join(compose::manifest::JSON_FILE);
            let text = std::fs::read_to_string(&json).map_err(Error::io("read", &json))?;
            let m = compose::manifest::Manifest::from_json(&text).map_err(|e| Error::Artifact {
                path: path.to_path_buf(),
                what: format!("has an invalid {}: {e}", compose::manifest::JSON_FILE),
            })?;
            PathBuf::from(compose::bundle::file_name(&m.name, &m.target))
        }
    };
    let written = ops::bundle(path, &out)?;
    println!("{}", written.display());
    Ok(0)
}

fn gc(store: Option<PathBuf>, dry_run: bool) -> Result<i32, Error> {
    let store = compose::store::Store::open(store)?;
    let report = store.gc_with(dry_run)?;
    for (pid, entry) in &report.running {
        eprintln!("keeping {entry} (running, pid {pid})");
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for r in &report.removed {
        eprintln!("{verb} {r}");
    }
    if dry_run {
        println!(
            "{} entries would be removed, {} bytes would be freed, {} live (dry run: nothing removed)",
            report.removed.len(),
            report.bytes,
            report.live.len()
        );
    } else {
        println!(
            "{} entries removed, {} bytes freed, {} live",
            report.removed.len(),
            report.bytes,
            report.live.len()
        );
        if report.pack_cache_removed > 0 {
            eprintln!(
                "removed {} unused entries of the pack cache",
                report.pack_cache_removed
            );
        }
    }
    Ok(0)
}

fn pin(path: &std::path::Path, name: &str, store: Option<PathBuf>) -> Result<i32, Error> {
    let store = compose::store::Store::open(store)?;
    let resolved = path.canonicalize().map_err(Error::io("resolve", path))?;
    let entry =
        store
            .entry_of(&resolved)
            .ok_or_else(|| compose::store::StoreError::NotAnEntry {
                path: path.to_path_buf(),
                root: store.root().to_path_buf(),
            })?;
    store.pin(name, &entry)?;
    println!("{}", entry.display());
    Ok(0)
}

fn init(dir: &std::path::Path, template: InitTemplate) -> Result<i32, Error> {
    let name = match template {
        InitTemplate::Hello => "hello",
        InitTemplate::Echo => "echo",
        InitTemplate::Site => "site",
    };
    let t = compose::init::template(name).ok_or_else(|| {
        Error::Usage(vec![compose::diag::Diag::nowhere(
            compose::diag::BAD_ARG,
            format!("--template {name}: no such template"),
        )])
    })?;
    let done = compose::init::init(dir, t)?;
    for f in &done.files {
        eprintln!("     Created {}", done.dir.join(f).display());
    }
    eprintln!(
        "\nNext: compose run {}    (docs/projects.md explains the layout)",
        done.spec.display()
    );
    Ok(0)
}

/// The complete solo5-format launch line of a result on a Solo5 target: the tender and
/// its arguments, or `compose run RESULT` when the image declares secrets (only compose
/// builds the secrets block).
fn solo5_line(
    entry: &std::path::Path,
    manifest: &compose::manifest::Manifest,
    mapping: &compose::manifest::Mapping,
    image: &std::path::Path,
    raw: (&[String], &[String], &[String]),
    boot_args: &[String],
) -> Result<Vec<String>, Error> {
    let (net, block, secret) = raw;
    mapping.validate(manifest)?;
    if manifest.devices_of("secret").next().is_some() {
        let exe = std::env::current_exe()
            .and_then(|e| e.canonicalize())
            .map_err(Error::io("find compose's executable", "/proc/self/exe"))?;
        let mut line = vec![exe.display().to_string(), "run".into()];
        line.push(entry.display().to_string());
        for (flag, values) in [("--net", net), ("--block", block), ("--secret", secret)] {
            for v in values {
                line.extend([flag.to_string(), v.clone()]);
            }
        }
        if !boot_args.is_empty() {
            line.push("--".into());
            line.extend(boot_args.iter().cloned());
        }
        return Ok(line);
    }
    let tender = match compose::target::by_name(&manifest.target).map(|t| t.launcher()) {
        Some(compose::target::Launcher::Tender(t)) => t,
        _ => {
            return Err(LaunchError::NoTenderFor(manifest.target.clone()).into());
        }
    };
    let tender = ops::ensure_tender(tender, MessageFormat::Human)?;
    let mut line = vec![tender.display().to_string()];
    line.extend(compose::manifest::solo5_args(
        manifest, mapping, image, boot_args,
    )?);
    Ok(line)
}

fn deploy(
    path: &std::path::Path,
    format: compose::target::DeployFormat,
    net: &[String],
    block: &[String],
    secret: &[String],
    boot_args: &[String],
) -> Result<i32, Error> {
    use compose::manifest::{Manifest, Mapping, MappingErrors};
    let manifest_path = path.join(compose::manifest::JSON_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).map_err(Error::io("read", &manifest_path))?;
    let manifest = Manifest::from_json(&text).map_err(|source| Error::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    let entry = path.canonicalize().map_err(Error::io("resolve", path))?;
    compose::manifest::check_boot_args(&manifest, boot_args).map_err(|why| {
        LaunchError::BootArgs {
            name: manifest.name.clone(),
            why,
        }
    })?;
    let mut mapping = Mapping::default();
    for n in net {
        mapping.add_net(n).map_err(MappingErrors::from)?;
    }
    for b in block {
        mapping.add_block(b).map_err(MappingErrors::from)?;
    }
    for s in secret {
        mapping.add_secret(s).map_err(MappingErrors::from)?;
    }
    let image = entry.join(&manifest.image);
    let target = compose::target::by_name(&manifest.target)
        .ok_or_else(|| compose::target::DeployError::Target(manifest.target.clone()))?;
    if format == compose::target::DeployFormat::Xl && manifest.devices_of("secret").next().is_some()
    {
        // An .xl names the secrets disk (a file made with the secrets' values), never the
        // values: `--block secrets=FILE`. `compose run` makes that disk in memory.
        let secrets = compose::manifest::SECRETS_BLOCK;
        let bad = |m: String| {
            Error::Usage(vec![compose::diag::Diag::nowhere(
                compose::diag::BAD_ARG,
                m,
            )])
        };
        if !secret.is_empty() {
            return Err(bad(format!(
                "--secret: an .xl file cannot carry secret values; pass --block {secrets}=FILE (a secrets disk image), or start the image with `compose run`, which builds that disk in memory"
            )));
        }
        match mapping.block.remove(secrets) {
            Some(file) => mapping.secrets_image = Some(file),
            None => {
                return Err(bad(format!(
                    "the image needs secrets: add --block {secrets}=FILE, the secrets disk image the domain reads them from"
                )));
            }
        }
    }
    let refuse = |e: compose::target::DeployError| match e {
        // A format that does not apply is a usage error, like an unknown --target.
        compose::target::DeployError::Format { .. } => {
            Error::Usage(vec![compose::diag::Diag::nowhere(
                compose::diag::BAD_ARG,
                e.to_string(),
            )])
        }
        e => e.into(),
    };
    let out = match format {
        compose::target::DeployFormat::Solo5 => {
            // The target refuses the format if it does not apply; the line is then completed
            // with the tender (or `compose run` when the image needs secrets).
            target
                .deploy(format, &manifest, &mapping, &image, boot_args)
                .map_err(refuse)?;
            let line = solo5_line(
                &entry,
                &manifest,
                &mapping,
                &image,
                (net, block, secret),
                boot_args,
            )?;
            line.iter()
                .map(|s| compose::manifest::shell_quote(s))
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => target
            .deploy(format, &manifest, &mapping, &image, boot_args)
            .map_err(refuse)?,
    };
    println!("{out}");
    Ok(0)
}

fn main() -> ExitCode {
    // Under cargo, compose is also the rustc wrapper of the builds it starts.
    compose::build::rustc_wrapper();
    let cli = Cli::parse();
    // Colours and terminal-sized output on a terminal; elsewhere (logs, CI, tests) plain
    // Unicode at a fixed width, so the same mistake always reads the same.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    miette::set_hook(Box::new(move |_| {
        let opts = miette::MietteHandlerOpts::new().width(100);
        let opts = if terminal {
            opts
        } else {
            opts.graphical_theme(miette::GraphicalTheme::unicode_nocolor())
                .terminal_links(false)
        };
        Box::new(opts.build())
    }))
    .ok();
    // How errors are reported: as JSON lines when the command asked for them.
    let format = match &cli.command {
        Command::Build { out, .. } | Command::Run { out, .. } => out.message_format,
        _ => MessageFormat::Human,
    };
    let result: Result<i32, Error> = match &cli.command {
        Command::Check(spec) => ops::check(&spec.load()).map(|(_, g)| {
            eprintln!(
                "{}: ok ({} devices, target {})",
                spec.spec.display(),
                g.devices.len(),
                g.target
            );
            0
        }),
        Command::Describe { spec, format } => ops::check(&spec.load()).map(|(_, g)| {
            match format {
                DescribeFormat::Text => print!("{}", compose::describe::text(&g)),
                DescribeFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&compose::describe::json(&g)).unwrap_or_default()
                ),
                DescribeFormat::Dot => print!("{}", compose::describe::dot(&g)),
            }
            0
        }),
        Command::Build { spec, out } => ops::build(&out.options(spec.load(), cli.verbose, true))
            .map(|b| {
                // Like nix-build: the store path on stdout, for scripts.
                if out.message_format == MessageFormat::Human {
                    println!("{}", b.entry.display());
                }
                0
            }),
        Command::Run {
            spec,
            out,
            net,
            block,
            secret,
            boot_args,
        } => {
            let run = ops::RunOptions {
                net: net.clone(),
                block: block.clone(),
                secrets: secret.clone(),
                boot_args: boot_args.clone(),
            };
            if ops::is_result(&spec.spec) {
                if spec.target.is_some() || !spec.args.is_empty() {
                    Err(Error::Usage(vec![compose::diag::Diag::nowhere(
                        compose::diag::BAD_ARG,
                        format!(
                            "{} is a result, already built: --target and --arg apply to a spec",
                            spec.spec.display()
                        ),
                    )]))
                } else {
                    ops::run_result(&spec.spec, &run, out.message_format, cli.verbose)
                }
            } else {
                // Like `build`, running a spec leaves ./result (unless --no-out-link).
                ops::run(&out.options(spec.load(), cli.verbose, true), &run)
            }
        }
        Command::Init { dir, template } => init(dir, *template),
        Command::Verify {
            path,
            key,
            rebuild,
            no_trust,
        } => verify(path, key, *rebuild, *no_trust),
        Command::Keygen { path } => compose::sign::keygen(path)
            .map(|k| {
                eprintln!(
                    "wrote {} (private, mode 0600) and {}",
                    path.display(),
                    compose::sign::public_path(path).display()
                );
                println!("{}", k.to_text());
                println!("id: {}", k.id());
                0
            })
            .map_err(Error::from),
        Command::Sign { path, key, output } => sign(path, key, output.as_deref()),
        Command::Bundle { path, output } => bundle(path, output.as_deref()),
        Command::Gc { store, dry_run } => gc(store.clone(), *dry_run),
        Command::Pin { path, name, store } => pin(path, name, store.clone()),
        Command::Unpin { name, store } => compose::store::Store::open(store.clone())
            .and_then(|s| s.unpin(name))
            .map_err(Error::from)
            .and_then(|removed| {
                if removed {
                    Ok(0)
                } else {
                    Err(Error::NoPin(name.clone()))
                }
            }),
        Command::Deploy {
            path,
            format,
            net,
            block,
            secret,
            boot_args,
        } => deploy(path, *format, net, block, secret, boot_args),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "compose",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            report(&e, format, cli.verbose);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
