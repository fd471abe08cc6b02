//! compose: a declarative build system and image composer for Rust unikernels.
//!
//! One module per stage: [`spec`] reads the KDL spec, [`graph`] resolves the typed device
//! graph, [`glue`] generates the Rust glue crate, [`build`] compiles it with cargo, and
//! [`image`] places the result. [`ops`] strings them together for the CLI.

pub mod build;
pub mod bundle;
pub mod describe;
pub mod descriptor;
pub mod diag;
pub mod elfobj;
pub mod error;
pub mod glue;
pub mod graph;
pub mod image;
pub mod init;
pub mod inputs;
pub mod manifest;
pub mod ops;
pub mod sign;
pub mod spec;
pub mod store;
pub mod target;
pub mod timings;
pub mod toolchain;
pub mod tree;
pub mod types;
pub mod xen_sandbox;

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync'd,
/// then renamed over `path`. Readers see the old file or the new one, never a mix; an
/// interrupted write leaves at most a stray temporary file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
