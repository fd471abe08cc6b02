//! The pinned toolchain: before a build, compose checks that the toolchain the compose tree's
//! `rust-toolchain.toml` names is installed, and that its standard library exists for the
//! target's rustc target. Where rustup is present and something is missing, compose installs
//! it (saying so); otherwise it stops with the exact command to run.

use crate::build::Reporter;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(serde::Deserialize)]
struct ToolchainFile {
    toolchain: Toolchain,
}
#[derive(serde::Deserialize)]
struct Toolchain {
    channel: String,
}

/// Why the pinned toolchain or a target's standard library is not available.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ToolchainError {
    /// The toolchain file is not TOML of the expected shape.
    #[error("{}: {why}", path.display())]
    #[diagnostic(code(compose::toolchain::file))]
    File {
        /// The `rust-toolchain.toml`.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A program (rustc, rustup) cannot be started.
    #[error("cannot run {program}: {source}")]
    #[diagnostic(code(compose::toolchain::spawn))]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// `rustup ARGS` ran and failed.
    #[error("`rustup {args}` failed ({status}); run it yourself and try again")]
    #[diagnostic(code(compose::toolchain::rustup))]
    Rustup {
        /// Its arguments.
        args: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// rustc ran and failed.
    #[error("{}: {why}", match channel { Some(c) => format!("the pinned toolchain {c} does not run"), None => "rustc does not run".to_string() })]
    #[diagnostic(
        code(compose::toolchain::rustc),
        help("{}", channel.as_ref().map_or_else(String::new, |c| format!("install it with: rustup toolchain install {c}")))
    )]
    Rustc {
        /// The pinned channel, if any.
        channel: Option<String>,
        /// What rustc said.
        why: String,
    },
    /// The sysroot has no standard library for the triple.
    #[error("{} has no standard library for {triple}{}", sysroot.display(), if *rustup { ", even after `rustup target add`" } else { ", and there is no rustup to install it" })]
    #[diagnostic(
        code("compose::toolchain::no-std"),
        help("install it with: rustup {add} (or use a toolchain that includes {triple})")
    )]
    NoStd {
        /// The toolchain's sysroot.
        sysroot: PathBuf,
        /// The target triple.
        triple: String,
        /// The rustup command that adds it.
        add: String,
        /// Whether rustup ran.
        rustup: bool,
    },
}

/// The channel `dir/rust-toolchain.toml` pins, if it pins one.
pub fn pinned_channel(dir: &Path) -> Result<Option<String>, ToolchainError> {
    let path = dir.join("rust-toolchain.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let file: ToolchainFile = toml::from_str(&text).map_err(|e| ToolchainError::File {
        path: path.clone(),
        why: e.to_string(),
    })?;
    Ok(Some(file.toolchain.channel))
}

fn rustup() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rustup"))
        .find(|p| p.is_file())
}

/// `rustc --print sysroot` as rustup resolves it in `dir` (with its rust-toolchain.toml).
fn sysroot(dir: &Path, channel: &Option<String>) -> Result<PathBuf, ToolchainError> {
    let out = rustc(dir, &["--print", "sysroot"], channel)?;
    Ok(PathBuf::from(out.trim()))
}

/// The output of `rustc ARGS` run in `dir` (`$RUSTC` if set), so that rustup picks the
/// toolchain that directory pins.
pub fn rustc(
    dir: &Path,
    args: &[&str],
    channel: &Option<String>,
) -> Result<String, ToolchainError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|source| ToolchainError::Spawn {
            program: rustc.to_string_lossy().into_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolchainError::Rustc {
            channel: channel.clone(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_rustup(source: std::io::Error) -> ToolchainError {
    ToolchainError::Spawn {
        program: "rustup".into(),
        source,
    }
}

fn run_rustup(rustup: &Path, args: &[&str], reporter: &Reporter) -> Result<(), ToolchainError> {
    reporter.stage("Installing", &format!("`rustup {}`", args.join(" ")));
    let status = Command::new(rustup)
        .args(args)
        .status()
        .map_err(spawn_rustup)?;
    if status.success() {
        Ok(())
    } else {
        Err(ToolchainError::Rustup {
            args: args.join(" "),
            status,
        })
    }
}

/// Makes sure the toolchain pinned in `root` (the compose tree) is installed and has the
/// standard library of `triple` (`None`: the host). `dir` is where the build runs cargo
/// (it holds a copy of the toolchain file).
pub fn ensure(
    root: &Path,
    dir: &Path,
    triple: Option<&str>,
    reporter: &Reporter,
) -> Result<(), ToolchainError> {
    let channel = pinned_channel(root)?;
    let rustup = rustup();
    // The toolchain itself.
    if let (Some(channel), Some(rustup)) = (&channel, &rustup) {
        let listed = Command::new(rustup)
            .args(["toolchain", "list"])
            .output()
            .map_err(spawn_rustup)?;
        let listed = String::from_utf8_lossy(&listed.stdout);
        let installed = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|t| t == channel || t.starts_with(&format!("{channel}-")));
        if !installed {
            run_rustup(
                rustup,
                &["toolchain", "install", channel, "--profile", "minimal"],
                reporter,
            )?;
        }
    }
    let Some(triple) = triple else {
        return sysroot(dir, &channel).map(|_| ());
    };
    let sysroot = sysroot(dir, &channel)?;
    let has_target = |s: &Path| s.join("lib/rustlib").join(triple).join("lib").is_dir();
    if has_target(&sysroot) {
        return Ok(());
    }
    let add: Vec<&str> = match &channel {
        Some(c) => vec!["target", "add", triple, "--toolchain", c],
        None => vec!["target", "add", triple],
    };
    let no_std = |rustup| ToolchainError::NoStd {
        sysroot: sysroot.clone(),
        triple: triple.to_string(),
        add: add.join(" "),
        rustup,
    };
    match &rustup {
        Some(rustup) => {
            run_rustup(rustup, &add, reporter)?;
            if has_target(&sysroot) {
                Ok(())
            } else {
                Err(no_std(true))
            }
        }
        None => Err(no_std(false)),
    }
}
