//! Stage 5: place the built unikernel in the output directory.

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
