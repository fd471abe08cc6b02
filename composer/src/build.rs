//! Stage 4: compile the glue crate with cargo.
//!
//! cargo's JSON message stream (parsed with cargo_metadata) gives progress, the compiled
//! artifact and compiler errors. An error in the call of the application's entry (the glue's
//! `application.rs`, which holds that call and nothing else) is a mismatch between the
//! spec and the application, so it is reported at the spec.

use crate::diag::{Diag, Span};
use crate::glue::Glue;
use crate::target::Target;
use cargo_metadata::Message;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How progress and errors are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageFormat {
    /// A progress bar on a terminal, plain lines otherwise.
    Human,
    /// One JSON object per line on stdout, for CI.
    Json,
}

/// Options of a cargo build.
#[derive(Debug, Clone)]
pub struct CargoOptions {
    /// Where cargo keeps its build products; shared between builds so dependencies compile once.
    pub target_dir: PathBuf,
    /// How to report.
    pub format: MessageFormat,
    /// Print the exact cargo command.
    pub verbose: bool,
    /// Extra rustc flags (path remapping for reproducible output).
    pub rustflags: Vec<String>,
}

/// Why the build failed.
#[derive(Debug)]
pub enum BuildError {
    /// cargo could not be started.
    Spawn(std::io::Error),
    /// The code did not compile. `spec` holds the errors that the spec caused, `rendered`
    /// the compiler's own messages for the rest.
    Compile {
        spec: Vec<Diag>,
        rendered: Vec<String>,
        stderr: String,
    },
    /// cargo succeeded but named no binary.
    NoArtifact,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Spawn(e) => write!(f, "cannot run cargo: {e}"),
            BuildError::Compile { .. } => f.write_str("the unikernel did not compile"),
            BuildError::NoArtifact => f.write_str("cargo built no binary"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Reports progress to the user.
pub struct Reporter {
    format: MessageFormat,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    /// A reporter for `format`; a progress bar only when stderr is a terminal.
    pub fn new(format: MessageFormat) -> Self {
        Reporter { format, bar: None }
    }

    /// A stage verb and what it applies to: `Generating glue for hello (unix)`.
    pub fn stage(&self, verb: &str, what: &str) {
        match self.format {
            MessageFormat::Human => eprintln!("{verb:>12} {what}"),
            MessageFormat::Json => json_line(
                &serde_json::json!({"reason": "compose-stage", "stage": verb.to_lowercase(), "message": what}),
            ),
        }
    }

    fn start_compile(&mut self) {
        if self.format == MessageFormat::Human && std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            self.bar = Some(bar);
        }
    }

    fn compiled(&self, package: &str, count: usize) {
        match (&self.bar, self.format) {
            (Some(bar), _) => {
                bar.set_message(format!("Compiling: {count} crates done, last {package}"))
            }
            (None, MessageFormat::Json) => json_line(
                &serde_json::json!({"reason": "compose-compiled", "package": package, "count": count}),
            ),
            (None, MessageFormat::Human) => {}
        }
    }

    fn finish_compile(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Reports diagnostics (to stderr, or as JSON lines).
    pub fn diagnostics(&self, diags: &[Diag]) {
        for d in diags {
            match self.format {
                MessageFormat::Human => eprintln!("{:?}", miette::Report::new(d.clone())),
                MessageFormat::Json => {
                    let (file, line, column) = d
                        .location()
                        .map_or((None, None, None), |(f, l, c)| (Some(f), Some(l), Some(c)));
                    json_line(&serde_json::json!({
                        "reason": "compose-diagnostic",
                        "code": d.code,
                        "message": d.message,
                        "file": file, "line": line, "column": column,
                        "help": d.help,
                        "rendered": d.render_plain(100),
                    }));
                }
            }
        }
    }
}

/// Prints one JSON object on its own line on stdout.
pub fn json_line(v: &serde_json::Value) {
    println!("{v}");
}

/// Set when compose runs as cargo's rustc wrapper.
pub const WRAPPER_ENV: &str = "COMPOSE_RUSTC_WRAPPER";

/// When cargo runs compose as its rustc wrapper (`compose RUSTC ARGS...`), runs rustc with
/// the path remapping flags added, and never returns. Otherwise returns.
pub fn rustc_wrapper() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(WRAPPER_ENV).is_none() {
        return;
    }
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else { return };
    let mut cmd = Command::new(rustc);
    cmd.args(args)
        .env_remove(WRAPPER_ENV)
        .env_remove("RUSTC_WRAPPER");
    if let Some(extra) = std::env::var_os("COMPOSE_REMAP") {
        let extra = extra.to_string_lossy().into_owned();
        cmd.args(extra.split('\x1f').filter(|s| !s.is_empty()));
    }
    cmd.env_remove("COMPOSE_REMAP");
    let err = cmd.exec();
    eprintln!("compose: cannot run rustc: {err}");
    std::process::exit(101);
}

/// The cargo arguments of a build, with paths relative to the glue directory (for build
/// information).
pub fn cargo_args(target: &dyn Target) -> Vec<String> {
    let mut v: Vec<String> = [
        "cargo",
        "build",
        "--release",
        "--manifest-path",
        "Cargo.toml",
        "--message-format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    if let Some(t) = target.triple() {
        v.extend(["--target".to_string(), t.to_string()]);
    }
    v
}

/// Environment variables removed before cargo runs (an outer cargo's, when compose itself
/// runs under cargo): they never reach the build, so they are not part of its key.
pub const REMOVED_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTFLAGS",
];

/// Builds the glue crate in `glue_dir` and returns the binary's path.
pub fn cargo_build(
    glue: &Glue,
    glue_dir: &Path,
    target: &dyn Target,
    app_span: Option<&Span>,
    opts: &CargoOptions,
    reporter: &mut Reporter,
) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(glue_dir.join("Cargo.toml"));
    cmd.arg("--message-format")
        .arg("json")
        .arg("--target-dir")
        .arg(&opts.target_dir);
    if let Some(triple) = target.triple() {
        cmd.arg("--target").arg(triple);
    }
    cmd.current_dir(glue_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Variables of an outer cargo (when compose itself runs under cargo) must not leak in.
    for var in REMOVED_ENV {
        cmd.env_remove(var);
    }
    if !opts.rustflags.is_empty() {
        // Through a rustc wrapper, not RUSTFLAGS: cargo hashes RUSTFLAGS into every crate's
        // -C metadata, and these flags name the checkout's path, so two checkouts would
        // produce different symbols. The wrapper is compose itself (see `rustc_wrapper`).
        cmd.env(
            "RUSTC_WRAPPER",
            std::env::current_exe().map_err(BuildError::Spawn)?,
        );
        cmd.env(WRAPPER_ENV, "1");
        cmd.env("COMPOSE_REMAP", opts.rustflags.join("\x1f"));
    }
    if opts.verbose {
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        reporter.stage("Running", &format!("`cargo {}`", args.join(" ")));
    }
    let mut child = cmd.spawn().map_err(BuildError::Spawn)?;
    // Drain stderr on a thread so cargo never blocks on a full pipe.
    let stderr = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    reporter.start_compile();
    let mut artifact = None;
    let mut count = 0;
    let mut spec = Vec::new();
    let mut rendered = Vec::new();
    let main_rs = glue_dir.join("main.rs");
    if let Some(stdout) = child.stdout.take() {
        for message in Message::parse_stream(BufReader::new(stdout)).flatten() {
            match message {
                Message::CompilerArtifact(a) => {
                    count += 1;
                    reporter.compiled(&a.target.name, count);
                    if a.target.kind.contains(&cargo_metadata::TargetKind::Bin)
                        && a.target.name == glue.binary
                    {
                        artifact = a.executable.map(PathBuf::from);
                    }
                }
                Message::CompilerMessage(m)
                    if m.message.level == cargo_metadata::diagnostic::DiagnosticLevel::Error
                        || m.message.level
                            == cargo_metadata::diagnostic::DiagnosticLevel::Warning =>
                {
                    let is_error =
                        m.message.level == cargo_metadata::diagnostic::DiagnosticLevel::Error;
                    // The application call is the whole of its own file (included by
                    // main.rs): any error whose primary span lies there is the call's.
                    let app_file = glue_dir.join(&glue.app_file);
                    let in_app_call = m
                        .message
                        .spans
                        .iter()
                        .any(|s| s.is_primary && glue_dir.join(&s.file_name) == app_file);
                    let from_glue = m.target.src_path.as_std_path() == main_rs.as_path()
                        || m.target.src_path.ends_with("main.rs")
                            && m.package_id.repr.contains("-glue");
                    if let Some(app_span) =
                        app_span.filter(|_| is_error && in_app_call && from_glue && spec.is_empty())
                    {
                        let first = m.message.message.clone();
                        spec.push(
                            Diag::new("compose::application-mismatch", "the application's entry does not accept what the spec hands it", app_span, "the spec hands these to the entry")
                                .help(format!("rustc: {first}\ncheck the entry's parameters against the `use` list, in order and type")),
                        );
                    }
                    if let Some(r) = m.message.rendered {
                        rendered.push(r);
                    }
                }
                _ => {}
            }
        }
    }
    let status = child.wait().map_err(BuildError::Spawn)?;
    reporter.finish_compile();
    let stderr = stderr_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(BuildError::Compile {
            spec,
            rendered,
            stderr,
        });
    }
    artifact.ok_or(BuildError::NoArtifact)
}
