//! Secrets on unix: the launcher passes `--secret:NAME=PATH`, a file it controls; the value
//! is read once at start and kept in memory. Only the path is ever on the command line.

use crate::Error;
use crate::boot::Boot;

/// A secret's value, read from the file the launcher attached.
pub struct Secret {
    value: Vec<u8>,
}

impl Secret {
    /// Reads the secret `name` from the file given with `--secret:NAME=PATH`.
    pub fn open(boot: &Boot, name: &'static str) -> Result<Secret, Error> {
        let path = boot.secret(name).ok_or_else(|| {
            Error::new(format!(
                "secret '{name}' was not supplied: pass --secret:{name}=PATH (compose run --secret {name}=@FILE)"
            ))
        })?;
        let mut value = std::fs::read(path).map_err(|e| {
            Error::new(format!(
                "secret '{name}': cannot read {}: {e}",
                path.display()
            ))
        })?;
        // A trailing newline from `echo token > file` is not part of the value.
        if value.last() == Some(&b'\n') {
            value.pop();
        }
        Ok(Secret { value })
    }
}

impl compose_devices::secret::Secret for Secret {
    fn value(&self) -> &[u8] {
        &self.value
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
