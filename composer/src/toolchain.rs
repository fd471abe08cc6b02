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

/// The channel `dir/rust-toolchain.toml` pins, if it pins one.
pub fn pinned_channel(dir: &Path) -> Result<Option<String>, String> {
    let path = dir.join("rust-toolchain.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let file: ToolchainFile =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(file.toolchain.channel))
}

fn rustup() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("rustup"))
        .find(|p| p.is_file())
}

/// `rustc --print sysroot` as rustup resolves it in `dir` (with its rust-toolchain.toml).
fn sysroot(dir: &Path) -> Result<PathBuf, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rustc.to_string_lossy()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn run_rustup(rustup: &Path, args: &[&str], reporter: &Reporter) -> Result<(), String> {
    reporter.stage("Installing", &format!("`rustup {}`", args.join(" ")));
    let status = Command::new(rustup)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup {}` failed ({status}); run it yourself and try again",
            args.join(" ")
        ))
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
) -> Result<(), String> {
    let channel = pinned_channel(root)?;
    let rustup = rustup();
    // The toolchain itself.
    if let (Some(channel), Some(rustup)) = (&channel, &rustup) {
        let listed = Command::new(rustup)
            .args(["toolchain", "list"])
            .output()
            .map_err(|e| format!("cannot run rustup: {e}"))?;
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
        return sysroot(dir).map(|_| ());
    };
    let sysroot = sysroot(dir).map_err(|e| match &channel {
        Some(c) => format!(
            "the pinned toolchain {c} does not run: {e}\nInstall it with: rustup toolchain install {c}"
        ),
        None => format!("rustc does not run: {e}"),
    })?;
    let has_target = |s: &Path| s.join("lib/rustlib").join(triple).join("lib").is_dir();
    if has_target(&sysroot) {
        return Ok(());
    }
    let add: Vec<&str> = match &channel {
        Some(c) => vec!["target", "add", triple, "--toolchain", c],
        None => vec!["target", "add", triple],
    };
    match &rustup {
        Some(rustup) => {
            run_rustup(rustup, &add, reporter)?;
            if has_target(&sysroot) {
                Ok(())
            } else {
                Err(format!(
                    "after `rustup {}`, {} still has no standard library for {triple}",
                    add.join(" "),
                    sysroot.display()
                ))
            }
        }
        None => Err(format!(
            "the toolchain at {} has no standard library for {triple}, and there is no rustup \
             to install it.\nInstall it with: rustup {}\n(or use a toolchain that includes \
             {triple})",
            sysroot.display(),
            add.join(" ")
        )),
    }
}
