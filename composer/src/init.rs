//! `compose init DIR [--template hello|echo|site]`: writes a new project the user owns (a
//! spec, the application crate for hello and echo, a `.gitignore`), then the `_build/sdk`
//! link through which the application crate finds compose's crates for `cargo check`.
//! See docs/projects.md for the layout.
//!
//! The project is written into a temporary directory next to DIR and renamed into place,
//! so that a failure leaves nothing half-written; DIR must not exist or be empty.

use std::path::{Path, PathBuf};

/// A project template: its name, what it is, and its files (path in the project, contents).
pub struct Template {
    /// `--template NAME`.
    pub name: &'static str,
    /// One line for the help.
    pub about: &'static str,
    /// The files.
    pub files: &'static [(&'static str, &'static str)],
}

const GITIGNORE: (&str, &str) = (".gitignore", include_str!("../init/gitignore"));

/// The templates, the first being the default.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "hello",
        about: "a console greeting (spec and application crate)",
        files: &[
            GITIGNORE,
            ("hello.kdl", include_str!("../init/hello/hello.kdl")),
            (
                "hello/Cargo.toml",
                include_str!("../init/hello/hello/Cargo.toml.tmpl"),
            ),
            (
                "hello/src/lib.rs",
                include_str!("../init/hello/hello/src/lib.rs"),
            ),
        ],
    },
    Template {
        name: "echo",
        about: "a TCP echo service (spec and application crate)",
        files: &[
            GITIGNORE,
            ("echo.kdl", include_str!("../init/echo/echo.kdl")),
            (
                "echo/Cargo.toml",
                include_str!("../init/echo/echo/Cargo.toml.tmpl"),
            ),
            (
                "echo/src/lib.rs",
                include_str!("../init/echo/echo/src/lib.rs"),
            ),
        ],
    },
    Template {
        name: "site",
        about: "a static website served over HTTP (spec and public/)",
        files: &[
            GITIGNORE,
            ("site.kdl", include_str!("../init/site/site.kdl")),
            (
                "public/index.html",
                include_str!("../init/site/public/index.html"),
            ),
        ],
    },
];

/// The template named `name`.
pub fn template(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// What `compose init` made.
#[derive(Debug)]
pub struct Initialized {
    /// The project directory.
    pub dir: PathBuf,
    /// The spec, inside it.
    pub spec: PathBuf,
    /// Every file written, relative to the project.
    pub files: Vec<String>,
}

/// Why `compose init` wrote no project.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InitError {
    /// The directory holds files already.
    #[error("{} is not empty: compose init writes a new project into an empty or new directory", .0.display())]
    #[diagnostic(code("compose::init::not-empty"))]
    NotEmpty(PathBuf),
    /// The path is a file, not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    #[diagnostic(code("compose::init::not-a-directory"))]
    NotADirectory(PathBuf),
    /// The path has no parent to create the project in.
    #[error("{} has no parent directory", .0.display())]
    #[diagnostic(code("compose::init::no-parent"))]
    NoParent(PathBuf),
    /// A file system operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    #[diagnostic(code(compose::init::io))]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitError {
    let path = path.to_path_buf();
    move |source| InitError::Io { what, path, source }
}

/// Writes the project `template` into `dir`.
pub fn init(dir: &Path, template: &Template) -> Result<Initialized, InitError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(InitError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(InitError::NotADirectory(dir.to_path_buf()));
        }
        Err(e) => return Err(io_error("read", dir)(e)),
    }
    let abs = std::path::absolute(dir).map_err(io_error("resolve", dir))?;
    let parent = abs
        .parent()
        .ok_or_else(|| InitError::NoParent(dir.to_path_buf()))?;
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".compose-init-")
        .tempdir_in(parent)
        .map_err(io_error("write in", parent))?;
    for (path, contents) in template.files {
        let p = tmp.path().join(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(io_error("create", d))?;
        }
        std::fs::write(&p, contents).map_err(io_error("write", &p))?;
    }
    // rename(2) replaces DIR only if it is (still) empty, so nothing of the user's is lost.
    std::fs::rename(tmp.path(), &abs).map_err(io_error("move the project into", dir))?;
    let _ = tmp.keep();
    crate::glue::ensure_sdk_link(&abs).map_err(io_error("link _build/sdk in", dir))?;
    let spec = template
        .files
        .iter()
        .find(|(p, _)| p.ends_with(".kdl"))
        .map(|(p, _)| dir.join(p))
        .unwrap_or_else(|| dir.to_path_buf());
    Ok(Initialized {
        dir: dir.to_path_buf(),
        spec,
        files: template.files.iter().map(|(p, _)| p.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_one_spec_and_a_gitignore() {
        for t in TEMPLATES {
            assert_eq!(
                t.files.iter().filter(|(p, _)| p.ends_with(".kdl")).count(),
                1,
                "{}",
                t.name
            );
            assert!(t.files.iter().any(|(p, _)| *p == ".gitignore"));
        }
    }

    #[test]
    fn refuses_a_non_empty_directory_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("mine.txt"), "keep").unwrap();
        let e = init(d.path(), &TEMPLATES[0]).unwrap_err();
        assert!(e.to_string().contains("is not empty"), "{e}");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mine.txt")]);
    }
}
