//! The command line: boot arguments and attachments.
//!
//! Like a Solo5 tender, the process takes its attachments as `--block:NAME=PATH` (or
//! `--block-ro:NAME=PATH`, attached read-only: the file is opened read-only and every write
//! fails with [`BlockError::ReadOnly`](compose_devices::block::BlockError::ReadOnly)); every
//! other argument is a boot argument, checked against the spec's declarations by
//! [`BootArgs::parse`].

use std::fmt;
use std::path::{Path, PathBuf};

use compose_devices::bootargs::{self, BootArgs, Spec};

/// What the unikernel was started with.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The checked boot arguments.
    pub args: BootArgs,
    /// Block attachments: device name and host file.
    blocks: Vec<(String, PathBuf)>,
    /// The block devices attached with `--block-ro:`.
    read_only: Vec<String>,
    /// Secret attachments: secret name and the file holding its value.
    secrets: Vec<(String, PathBuf)>,
}

/// A command line that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The boot arguments do not fit the spec (including `--help`, carrying the usage).
    Args(bootargs::Error),
    /// A malformed or repeated `--block:NAME=PATH`.
    Attachment(String),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Args(e) => e.fmt(f),
            BootError::Attachment(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for BootError {}

const BLOCK_FLAG: &str = "--block:";
const BLOCK_RO_FLAG: &str = "--block-ro:";
const SECRET_FLAG: &str = "--secret:";

impl Boot {
    /// Parses a command line (without the program name) against `specs`.
    pub fn parse<S: AsRef<str>>(
        specs: &[Spec],
        args: impl IntoIterator<Item = S>,
    ) -> Result<Boot, BootError> {
        let args: Vec<S> = args.into_iter().collect();
        if args.iter().any(|a| a.as_ref() == "--help") {
            return Err(BootError::Args(bootargs::Error::Help(usage(specs))));
        }
        let mut blocks: Vec<(String, PathBuf)> = Vec::new();
        let mut secrets: Vec<(String, PathBuf)> = Vec::new();
        let mut read_only = Vec::new();
        let mut rest = Vec::with_capacity(args.len());
        for arg in &args {
            let arg = arg.as_ref();
            let (flag, what, list) = if let Some(a) = arg.strip_prefix(BLOCK_FLAG) {
                (a, "block device", &mut blocks)
            } else if let Some(a) = arg.strip_prefix(BLOCK_RO_FLAG) {
                if let Some((n, _)) = a.split_once('=') {
                    read_only.push(n.to_string());
                }
                (a, "block device", &mut blocks)
            } else if let Some(a) = arg.strip_prefix(SECRET_FLAG) {
                (a, "secret", &mut secrets)
            } else {
                rest.push(arg);
                continue;
            };
            let (name, path) = match flag.split_once('=') {
                Some((n, p)) if !n.is_empty() && !p.is_empty() => (n, p),
                _ => {
                    let prefix = &arg[..arg.len() - flag.len()];
                    return Err(BootError::Attachment(format!(
                        "{arg:?}: expected {prefix}NAME=PATH"
                    )));
                }
            };
            if list.iter().any(|(n, _)| n == name) {
                return Err(BootError::Attachment(format!(
                    "{what} '{name}' attached twice"
                )));
            }
            list.push((name.to_string(), PathBuf::from(path)));
        }
        let args = BootArgs::parse(specs, rest).map_err(BootError::Args)?;
        Ok(Boot {
            args,
            blocks,
            read_only,
            secrets,
        })
    }

    /// The file holding the value of secret `name`.
    pub fn secret(&self, name: &str) -> Option<&Path> {
        self.secrets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
    }

    /// The host file attached as block device `name`.
    pub fn block(&self, name: &str) -> Option<&Path> {
        self.blocks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_path())
    }

    /// Whether block device `name` was attached read-only (`--block-ro:NAME=PATH`).
    pub fn block_read_only(&self, name: &str) -> bool {
        self.read_only.iter().any(|n| n == name)
    }
}

/// The `--help` text.
fn usage(specs: &[Spec]) -> String {
    let mut s = bootargs::usage(specs);
    s.push_str("attachments:\n  --block:NAME=PATH  the file backing block device NAME\n");
    s.push_str("  --block-ro:NAME=PATH  the same, read-only: writes fail\n");
    s.push_str("  --secret:NAME=PATH  the file holding the value of secret NAME\n");
    s
}

/// Reads the process's command line. Prints the usage and exits 0 on `--help`; prints the
/// error and exits 64 (`EX_USAGE`) when the command line does not fit.
pub fn boot(specs: &'static [Spec]) -> Boot {
    // Start the monotonic clock now: `now_ns` counts from the first call.
    let _ = <crate::Unix as compose_devices::executor::Platform>::now_ns();
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unikernel".to_string());
    let parsed = match argv
        .map(|a| a.into_string())
        .collect::<Result<Vec<String>, _>>()
    {
        Ok(args) => Boot::parse(specs, args),
        Err(a) => Err(BootError::Attachment(format!(
            "argument {a:?} is not UTF-8"
        ))),
    };
    match parsed {
        Ok(boot) => boot,
        Err(BootError::Args(bootargs::Error::Help(usage))) => {
            print!("usage: {program} [--NAME=VALUE]... [--block:NAME=PATH]...\n{usage}");
            crate::exit(0)
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            eprintln!("{program}: try '{program} --help' for the boot arguments");
            std::process::exit(64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compose_devices::bootargs::Kind;

    const SPECS: &[Spec] = &[
        Spec {
            name: "name",
            kind: Kind::Str,
            default: Some("world"),
            doc: "who to greet",
        },
        Spec {
            name: "port",
            kind: Kind::U16,
            default: None,
            doc: "port",
        },
    ];

    #[test]
    fn args_and_attachments() {
        let b = Boot::parse(
            SPECS,
            [
                "--block:storage=/tmp/disk.img",
                "--port=80",
                "--name",
                "Ada",
            ],
        )
        .unwrap();
        assert_eq!(b.args.get::<u16>("port"), 80);
        assert_eq!(b.args.get::<String>("name"), "Ada");
        assert_eq!(b.block("storage"), Some(Path::new("/tmp/disk.img")));
        assert_eq!(b.block("other"), None);
        let b = Boot::parse(SPECS, ["--port", "1"]).unwrap();
        assert_eq!(b.args.get::<String>("name"), "world");
    }

    #[test]
    fn errors() {
        let err = |args: &[&str]| Boot::parse(SPECS, args).unwrap_err();
        assert_eq!(
            err(&[]),
            BootError::Args(bootargs::Error::Required("port".into()))
        );
        assert_eq!(
            err(&["--port=1", "--nme=x"]),
            BootError::Args(bootargs::Error::Unknown("nme".into()))
        );
        assert!(matches!(
            err(&["--port=x"]),
            BootError::Args(bootargs::Error::Invalid { .. })
        ));
        assert!(matches!(
            err(&["--port=1", "--block:disk"]),
            BootError::Attachment(_)
        ));
        assert!(matches!(
            err(&["--port=1", "--block:=x"]),
            BootError::Attachment(_)
        ));
        assert!(matches!(
            err(&["--port=1", "--block:d=a", "--block:d=b"]),
            BootError::Attachment(_)
        ));
        // `--help` wins over anything else and mentions attachments.
        match err(&["--nme=x", "--help"]) {
            BootError::Args(bootargs::Error::Help(usage)) => {
                assert!(usage.contains("--name=<string>"), "{usage}");
                assert!(usage.contains("--block:NAME=PATH"), "{usage}");
            }
            e => panic!("expected help, got {e:?}"),
        }
        assert_eq!(err(&["--nme=x"]).to_string(), "unknown boot argument --nme");
    }
}
