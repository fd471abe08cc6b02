//! One error for every operation: each stage keeps its own error enum, and [`Error`]
//! collects them with `#[from]`. Every variant has a stable miette code
//! (`compose::store`, `compose::launch::empty-secret`, ...), the exit status comes from the
//! variant's [`Kind`] alone, and one layer (the `compose` binary's `report`) prints it.

use crate::build::BuildError;
use crate::diag::Diag;
use crate::manifest::{ManifestError, MappingErrors, SecretsImageError};
use crate::sign::KeyError;
use crate::store::StoreError;
use std::path::PathBuf;

/// What kind of failure an [`Error`] is; the process's exit status follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line is wrong (an unknown `--target`, an undeclared `--arg`, an
    /// unreadable `--key`): exit 2, like clap's own usage errors.
    Usage,
    /// The operation failed (a spec mistake, a build or store failure, a bundle that does
    /// not verify): exit 1.
    Failure,
    /// `compose verify`: intact, but unsigned or signed by a key that is not trusted: exit 3.
    NotTrusted,
}

impl Kind {
    /// The exit status of a process that failed this way.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage => 2,
            Kind::Failure => 1,
            Kind::NotTrusted => 3,
        }
    }
}

/// Why a `compose` operation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    /// The spec is wrong; each diagnostic is located in it.
    #[error("the spec has {} mistake{}", .0.len(), if .0.len() == 1 { "" } else { "s" })]
    #[diagnostic(code(compose::spec))]
    Spec(Vec<Diag>),
    /// The command line is wrong; each diagnostic says how (`compose::bad-arg`).
    #[error("{}", .0.first().map_or("bad command line", |d| d.message.as_str()))]
    #[diagnostic(code(compose::usage))]
    Usage(Vec<Diag>),
    /// A store operation failed.
    #[error(transparent)]
    #[diagnostic(code(compose::store))]
    Store(#[from] StoreError),
    /// The glue could not be generated.
    #[error(transparent)]
    #[diagnostic(code(compose::glue))]
    Glue(#[from] crate::glue::GlueError),
    /// cargo failed; compile errors the spec caused are diagnostics at the spec.
    #[error(transparent)]
    #[diagnostic(code(compose::build))]
    Build(#[from] BuildError),
    /// A deployment manifest is unreadable or invalid.
    #[error("{}: {source}", path.display())]
    #[diagnostic(code(compose::manifest))]
    Manifest {
        /// The manifest (or the result holding it).
        path: PathBuf,
        /// What is wrong.
        source: ManifestError,
    },
    /// The host mapping (`--net`, `--block`, `--secret`) does not fit the image.
    #[error(transparent)]
    #[diagnostic(code(compose::mapping))]
    Mapping(#[from] MappingErrors),
    /// `compose deploy` cannot render.
    #[error(transparent)]
    #[diagnostic(code(compose::deploy))]
    Deploy(#[from] crate::target::DeployError),
    /// A signing key cannot be made or read.
    #[error(transparent)]
    #[diagnostic(code(compose::key))]
    Key(#[from] KeyError),
    /// A `--key` or the trust file cannot be read (`compose verify` exits 2).
    #[error(transparent)]
    #[diagnostic(code("compose::trusted-keys"))]
    TrustedKeys(KeyError),
    /// A bundle cannot be written or read.
    #[error(transparent)]
    #[diagnostic(code(compose::bundle))]
    Bundle(#[from] crate::bundle::BundleError),
    /// A file is not a readable bundle.
    #[error("{} is not a readable bundle: {source}", path.display())]
    #[diagnostic(code(compose::bundle::unreadable))]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crate::bundle::BundleError,
    },
    /// The secrets block cannot be encoded.
    #[error(transparent)]
    #[diagnostic(code("compose::secrets-image"))]
    SecretsImage(#[from] SecretsImageError),
    /// An assets directory cannot be packed.
    #[error("cannot pack assets `{device}`: {source}")]
    #[diagnostic(code(compose::assets))]
    Pack {
        /// The assets device.
        device: String,
        /// Why.
        source: compose_assets::PackError,
    },
    /// `SOURCE_DATE_EPOCH` is unusable for packing assets.
    #[error(transparent)]
    #[diagnostic(code(compose::assets::epoch))]
    PackEpoch(compose_assets::PackError),
    /// An environment setting compose reads is malformed (its message names it).
    #[error("{0}")]
    #[diagnostic(code(compose::env))]
    Env(String),
    /// The store key could not be computed from the inputs.
    #[error("cannot hash the build's inputs: {0}")]
    #[diagnostic(code(compose::inputs))]
    Inputs(String),
    /// The SBOM or the store entry could not be made.
    #[error("{0}")]
    #[diagnostic(code(compose::image))]
    Image(String),
    /// The built image failed its target's check.
    #[error("the {target} image {} failed its check: {why}", path.display())]
    #[diagnostic(code(compose::image::check))]
    ImageCheck {
        /// The target.
        target: String,
        /// The image.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Launching an image failed or was refused.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Launch(#[from] LaunchError),
    /// The toolchain is missing or broken.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Toolchain(#[from] crate::toolchain::ToolchainError),
    /// compose has no source tree to build from.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Tree(#[from] crate::tree::TreeError),
    /// `compose init` wrote no project.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Init(#[from] crate::init::InitError),
    /// A file system operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    #[diagnostic(code(compose::io))]
    Io {
        /// What was being done (`read`, `create`, ...).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A bundle or result lacks something an operation needs.
    #[error("{} {what}", path.display())]
    #[diagnostic(code(compose::artifact))]
    Artifact {
        /// The bundle or result.
        path: PathBuf,
        /// What it lacks (`has no manifest.json`).
        what: String,
    },
    /// This compose has no platform for the target.
    #[error("{0}")]
    #[diagnostic(code(compose::target))]
    NoPlatform(String),
    /// A built-in device descriptor is broken (a compose bug).
    #[error("internal error: bad device descriptor: {0}")]
    #[diagnostic(code(compose::internal))]
    Descriptor(String),
    /// `compose verify` found the bundle altered or malformed.
    #[error("{} does not verify", .0.display())]
    #[diagnostic(code(compose::verify::failed))]
    NotVerified(PathBuf),
    /// `compose sign` refuses a bundle that does not verify.
    #[error("{} does not verify; not signing it", .0.display())]
    #[diagnostic(code("compose::sign::not-verified"))]
    NotSigning(PathBuf),
    /// `compose verify --rebuild` got different bytes.
    #[error("not reproducible: {0}")]
    #[diagnostic(code("compose::verify::not-reproducible"))]
    NotReproducible(String),
    /// Intact, but signed by a key that is not trusted.
    #[error("{} is intact, but signed by key {id}, which is not trusted (trusted keys: {trusted})", path.display())]
    #[diagnostic(
        code(compose::verify::untrusted),
        help("pass --key KEY.pub, or add the key's .pub line to the trust file")
    )]
    Untrusted {
        /// The bundle or result.
        path: PathBuf,
        /// The signing key's id.
        id: String,
        /// The trusted keys and where they came from.
        trusted: String,
    },
    /// Intact, but not signed.
    #[error("{} is intact, but not signed, so nothing says who made it", .0.display())]
    #[diagnostic(code(compose::verify::unsigned), help("compose sign adds a signature"))]
    Unsigned(PathBuf),
    /// `compose unpin` of a name that is not pinned.
    #[error("no pin named {0}")]
    #[diagnostic(code(compose::pin::unknown))]
    NoPin(String),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) | Error::TrustedKeys(_) => Kind::Usage,
            Error::Untrusted { .. } | Error::Unsigned(_) => Kind::NotTrusted,
            _ => Kind::Failure,
        }
    }

    /// The process's exit status: from [`Error::kind`] only.
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }

    /// Diagnostics from loading a spec: a usage error when every one is about the command
    /// line (`compose::bad-arg`), else spec mistakes.
    pub fn from_diags(diags: Vec<Diag>) -> Error {
        if !diags.is_empty() && diags.iter().all(Diag::is_command_line) {
            Error::Usage(diags)
        } else {
            Error::Spec(diags)
        }
    }

    /// The diagnostics to print as spec diagnostics (located, or about the command line):
    /// a spec's or a usage error's, or those of a compile error the spec caused.
    pub fn diagnostics(&self) -> &[Diag] {
        match self {
            Error::Spec(d) | Error::Usage(d) => d,
            Error::Build(BuildError::Compile { spec, .. }) => spec,
            _ => &[],
        }
    }

    /// A file system error on `path` while doing `what`.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }
}

impl From<Vec<Diag>> for Error {
    fn from(d: Vec<Diag>) -> Self {
        Error::from_diags(d)
    }
}

/// Why `compose run` did not start the unikernel.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LaunchError {
    /// A xen image could not be run (with `xl`, or in the local Xen sandbox).
    #[error("{0}")]
    #[diagnostic(code("compose::launch::xen"))]
    Xen(String),
    /// A secret's value is empty.
    #[error("secret `{name}` is empty ({from} holds no value); refusing to start")]
    #[diagnostic(code("compose::launch::empty-secret"))]
    EmptySecret {
        /// The secret.
        name: String,
        /// Where its value was read from (`the file F`, `the environment variable V`).
        from: String,
    },
    /// A secret's file cannot be read.
    #[error("secret `{name}`: cannot read {}: {source}", path.display())]
    #[diagnostic(code("compose::launch::unreadable-secret"))]
    UnreadableSecret {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A secret's environment variable is not set.
    #[error("secret `{name}`: the environment variable {var} is not set")]
    #[diagnostic(code("compose::launch::unset-secret"))]
    UnsetSecret {
        /// The secret.
        name: String,
        /// The variable.
        var: String,
    },
    /// The result's image is not the one its manifest records.
    #[error("refusing to start {}: the image is not the one its manifest records", image.display())]
    #[diagnostic(
        code(compose::launch::tampered),
        help("`compose verify {}` says more", result.display())
    )]
    Tampered {
        /// The image.
        image: PathBuf,
        /// The result.
        result: PathBuf,
    },
    /// The boot arguments do not fit the ones the image declares.
    #[error("refusing to start {name}: {why}")]
    #[diagnostic(code("compose::launch::boot-args"))]
    BootArgs {
        /// The unikernel.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// The host mapping does not fit the image's manifest.
    #[error("refusing to start {name}:\n{source}")]
    #[diagnostic(code(compose::launch::mapping))]
    Mapping {
        /// The unikernel.
        name: String,
        /// Every problem.
        source: MappingErrors,
    },
    /// The in-memory file for a secret cannot be made.
    #[error("cannot hold a secret in memory (memfd_create): {0}")]
    #[diagnostic(code(compose::launch::memfd))]
    Memfd(std::io::Error),
    /// The image or its tender cannot be started.
    #[error("cannot start {}: {source}", what.display())]
    #[diagnostic(code(compose::launch::exec))]
    Exec {
        /// The program.
        what: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `$COMPOSE_TENDER_DIR` has no such tender.
    #[error("COMPOSE_TENDER_DIR has no {name} (looked for {})", path.display())]
    #[diagnostic(code("compose::launch::no-tender"))]
    NoTender {
        /// The tender.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The target has no tender (`compose deploy --format solo5` of a unix image).
    #[error("no tender for target {0}")]
    #[diagnostic(code("compose::launch::no-tender-for-target"))]
    NoTenderFor(String),
    /// cargo could not be started to build a tender.
    #[error("cannot run cargo to build {name}: {source}")]
    #[diagnostic(code("compose::launch::tender-build"))]
    TenderSpawn {
        /// The tender.
        name: String,
        /// The error.
        source: std::io::Error,
    },
    /// Building a tender failed.
    #[error("building the {name} tender failed:\n{stderr}")]
    #[diagnostic(code("compose::launch::tender-build"))]
    TenderBuild {
        /// The tender.
        name: String,
        /// What cargo said.
        stderr: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_follows_the_kind() {
        assert_eq!(Kind::Usage.exit_code(), 2);
        assert_eq!(Kind::Failure.exit_code(), 1);
        assert_eq!(Kind::NotTrusted.exit_code(), 3);
        let cases: Vec<(Error, Kind)> = vec![
            (
                Error::from_diags(vec![Diag::nowhere("compose::bad-arg", "--target vmx")]),
                Kind::Usage,
            ),
            (Error::Spec(Vec::new()), Kind::Failure),
            (
                Error::TrustedKeys(KeyError::Exists(PathBuf::from("k"))),
                Kind::Usage,
            ),
            (
                Error::Key(KeyError::Exists(PathBuf::from("k"))),
                Kind::Failure,
            ),
            (Error::Unsigned(PathBuf::from("b")), Kind::NotTrusted),
            (
                Error::Untrusted {
                    path: PathBuf::from("b"),
                    id: "compose:0".into(),
                    trusted: "none".into(),
                },
                Kind::NotTrusted,
            ),
            (Error::NotVerified(PathBuf::from("b")), Kind::Failure),
            (
                Error::Launch(LaunchError::EmptySecret {
                    name: "token".into(),
                    from: "the file t".into(),
                }),
                Kind::Failure,
            ),
            (Error::Store(StoreError::NoHome), Kind::Failure),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.exit_code(), kind.exit_code(), "{e}");
        }
    }

    #[test]
    fn only_bad_args_are_a_usage_error() {
        let usage = Diag::nowhere("compose::bad-arg", "--arg x=1: no param `x`");
        let other = Diag::nowhere("compose::cannot-read", "cannot read spec");
        assert!(matches!(
            Error::from_diags(vec![usage.clone(), other]),
            Error::Spec(_)
        ));
        assert!(matches!(Error::from_diags(Vec::new()), Error::Spec(_)));
        assert!(matches!(Error::from_diags(vec![usage]), Error::Usage(_)));
    }

    #[test]
    fn every_error_has_a_stable_code() {
        use miette::Diagnostic;
        let e = Error::Launch(LaunchError::EmptySecret {
            name: "token".into(),
            from: "the file t".into(),
        });
        assert_eq!(
            e.code().map(|c| c.to_string()).as_deref(),
            Some("compose::launch::empty-secret")
        );
        let e = Error::Store(StoreError::NoHome);
        assert_eq!(
            e.code().map(|c| c.to_string()).as_deref(),
            Some("compose::store")
        );
    }
}
