//! The store key covers the whole input closure, and assets trees cannot escape.
//!
//! In a copy of the compose tree (found through `COMPOSE_ROOT`), one file of each kind of
//! transitive input is changed and the store path must change; an excluded file must not
//! change it; the same site built from two places has one path. Hostile assets trees
//! (links out of the tree, a FIFO, a newline in a name) are refused with exit 1, naming
//! the path, and nothing behind a link lands anywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `compose build SPEC ARGS` with the given compose tree and store, sharing the tests'
/// cargo target directory.
fn build(root: &Path, store: &Path, spec: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_compose"));
    cmd.arg("build")
        .arg(spec)
        .arg("--no-out-link")
        .args(args)
        .current_dir(spec.parent().unwrap())
        .env("COMPOSE_ROOT", root)
        .env("COMPOSE_TARGET_DIR", repo().join("target/compose-tests"))
        .env("COMPOSE_STORE", store)
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run compose")
}

/// The store path a successful build printed.
fn built(o: &Output) -> String {
    assert!(o.status.success(), "compose failed:\n{}", text(&o.stderr));
    text(&o.stdout).trim().to_string()
}

/// Copies the compose tree's sources (no build output, no VCS data, no result links).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let n = name.to_string_lossy();
        if matches!(n.as_ref(), "target" | "_build" | ".git") || n.starts_with("result") {
            continue;
        }
        let kind = e.file_type().unwrap();
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn append(file: &Path, line: &str) {
    let mut s = std::fs::read_to_string(file).unwrap();
    s.push_str(line);
    std::fs::write(file, s).unwrap();
}

#[test]
fn every_transitive_input_changes_the_store_path() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("compose");
    copy_tree(&repo(), &tree);
    let store = d.path().join("store");
    let spec = tree.join("specs/echo.kdl");
    let spt = ["--target", "spt"];
    let mut seen = vec![built(&build(&tree, &store, &spec, &spt, &[]))];
    let mut rebuild = |what: &str, env: &[(&str, &str)]| {
        let path = built(&build(&tree, &store, &spec, &spt, env));
        assert!(
            !seen.contains(&path),
            "changing {what} kept a store path already seen: {path}"
        );
        seen.push(path);
    };
    // A crate the platform uses (spt -> solo5 guest -> solo5 abi), a crate a device uses
    // (tcp -> netstack): none of them is named by the glue.
    append(
        &tree.join("platforms/solo5/abi/src/lib.rs"),
        "\n// an edit\n",
    );
    rebuild("platforms/solo5/abi", &[]);
    append(
        &tree.join("platforms/solo5/guest/src/lib.rs"),
        "\n// an edit\n",
    );
    rebuild("platforms/solo5/guest", &[]);
    append(&tree.join("devices/netstack/src/lib.rs"), "\n// an edit\n");
    rebuild("devices/netstack", &[]);
    rebuild("SOURCE_DATE_EPOCH", &[("SOURCE_DATE_EPOCH", "1700000000")]);
    // Unchanged inputs: the same path, and no work.
    let o = build(
        &tree,
        &store,
        &spec,
        &spt,
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(&built(&o), seen.last().unwrap());
    assert!(text(&o.stderr).contains("unchanged"), "{}", text(&o.stderr));
    // The build information names inputs by relative paths only.
    let info =
        std::fs::read_to_string(Path::new(seen.last().unwrap()).join("buildinfo.json")).unwrap();
    for crate_dir in [
        "platforms/solo5/abi",
        "platforms/solo5/guest",
        "devices/netstack",
    ] {
        assert!(
            info.contains(&format!("\"crate/{crate_dir}\"")),
            "{crate_dir} not among the inputs"
        );
    }
    assert!(
        !info.contains(&d.path().display().to_string()),
        "an absolute path in buildinfo.json"
    );
}

/// A site spec outside the repository: `site.kdl` and `public/` in `dir`.
fn site(dir: &Path) -> PathBuf {
    let public = dir.join("public");
    std::fs::create_dir_all(public.join("drafts")).unwrap();
    std::fs::create_dir_all(public.join("docs")).unwrap();
    std::fs::write(public.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(public.join("docs/a.html"), "<p>a</p>\n").unwrap();
    std::fs::write(public.join("drafts/wip.html"), "<p>wip</p>\n").unwrap();
    let spec = dir.join("site.kdl");
    std::fs::write(
        &spec,
        r#"unikernel site {
    target unix
    memory "64MiB"
}
bootarg port type=u16 default=8080
bootarg ipv4 type=ipv4-cidr default="127.0.0.1/8"
netif service
ipv4 stack net=service address=(bootarg)"ipv4"
tcp
assets public dir="public" exclude="drafts"
application site builtin=static-site assets=public port=(bootarg)"port"
"#,
    )
    .unwrap();
    spec
}

#[test]
fn the_packed_files_and_only_they_are_in_the_key_wherever_the_spec_is() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let a = site(&d.path().join("a"));
    // With SOURCE_DATE_EPOCH, file times are not inputs: two copies have one key.
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let first = built(&build(&repo(), &store, &a, &[], &sde));
    // The same site in another place: the same key, found in the store.
    let b = site(&d.path().join("elsewhere/b"));
    let o = build(&repo(), &store, &b, &[], &sde);
    assert_eq!(built(&o), first);
    assert!(text(&o.stderr).contains("unchanged"), "{}", text(&o.stderr));
    let info = std::fs::read_to_string(Path::new(&first).join("buildinfo.json")).unwrap();
    assert!(
        !info.contains(&d.path().display().to_string()),
        "an absolute path in buildinfo.json:\n{info}"
    );
    assert!(info.contains("\"spec\": \"site.kdl\""), "{info}");
    // A file that `exclude` drops: not packed, so not an input.
    std::fs::write(d.path().join("a/public/drafts/wip.html"), "<p>edited</p>\n").unwrap();
    std::fs::write(d.path().join("a/public/drafts/new.html"), "<p>new</p>\n").unwrap();
    assert_eq!(built(&build(&repo(), &store, &a, &[], &sde)), first);
    // A top-level folder named `dist` is packed like any other, so it is an input.
    std::fs::create_dir_all(d.path().join("a/public/dist")).unwrap();
    std::fs::write(d.path().join("a/public/dist/app.js"), "let x = 1;\n").unwrap();
    let second = built(&build(&repo(), &store, &a, &[], &[]));
    assert_ne!(second, first, "an added dist/ file kept the store path");
    std::fs::write(d.path().join("a/public/dist/app.js"), "let x = 2;\n").unwrap();
    let third = built(&build(&repo(), &store, &a, &[], &[]));
    assert_ne!(third, second, "an edited dist/ file kept the store path");
    // And it is in the image: the packed archive holds it.
    let image = std::fs::read(Path::new(&third).join("site")).unwrap();
    assert!(image.windows(10).any(|w| w == b"let x = 2;"));

    // Without it, each file's mtime is its time in the archive (Last-Modified), so the
    // mtime is an input: a touched file changes the key, and the archive has its time.
    let index = d.path().join("a/public/index.html");
    let set_mtime = |secs: u64| {
        std::fs::File::options()
            .write(true)
            .open(&index)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap()
    };
    set_mtime(1_600_000_000);
    let dated = built(&build(&repo(), &store, &a, &[], &[]));
    assert_ne!(dated, third);
    let image = std::fs::read(Path::new(&dated).join("site")).unwrap();
    assert_eq!(archive_times(&image)["index.html"], 1_600_000_000);
    set_mtime(1_600_000_001);
    let touched = built(&build(&repo(), &store, &a, &[], &[]));
    assert_ne!(touched, dated, "a new mtime kept the store path");
}

/// Each file's time in the archive inside `image` (0 when unknown).
fn archive_times(image: &[u8]) -> std::collections::BTreeMap<String, u64> {
    use compose_assets::format::{Header, Index};
    let at = image
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == b"COMPOSKV")
        .map(|(i, _)| i)
        .find(|&i| Header::parse(&image[i..]).is_ok())
        .expect("no archive in the image");
    let bytes = &image[at..];
    let h = Header::parse(bytes).unwrap();
    let index = &bytes[h.index_offset as usize..(h.index_offset + h.index_len) as usize];
    let index = Index::parse(index, &h).unwrap();
    (0..index.len())
        .map(|i| {
            let r = index.record(i).unwrap();
            (r.key.to_string(), r.modified)
        })
        .collect()
}

/// Every file under `dir` (not following links), except `skip`.
fn files_under(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let kind = e.file_type().unwrap();
        if p == skip {
            continue;
        }
        if kind.is_dir() {
            files_under(&p, skip, out);
        } else if kind.is_file() {
            out.push(p);
        }
    }
}

#[test]
fn hostile_assets_are_refused_naming_the_path() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let secret = d.path().join("secret.txt");
    let marker = "COMPOSE-OUTSIDE-MARKER-7d1e";
    std::fs::write(&secret, marker).unwrap();
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    type Setup = fn(&Path, &Path);
    let cases: [(&str, Setup, &str, &str); 5] = [
        (
            "link to a file outside",
            |public, secret| std::os::unix::fs::symlink(secret, public.join("leak.txt")).unwrap(),
            "public/leak.txt",
            "outside the assets directory",
        ),
        (
            "link to /etc/passwd",
            |public, _| std::os::unix::fs::symlink("/etc/passwd", public.join("passwd")).unwrap(),
            "public/passwd",
            "/etc/passwd",
        ),
        (
            "link to /etc",
            |public, _| std::os::unix::fs::symlink("/etc", public.join("docs/etc")).unwrap(),
            "public/docs/etc",
            "/etc",
        ),
        (
            "a FIFO",
            |public, _| {
                let s = Command::new("mkfifo")
                    .arg(public.join("docs/pipe"))
                    .status()
                    .unwrap();
                assert!(s.success());
            },
            "public/docs/pipe",
            "FIFO",
        ),
        (
            "a newline in a name",
            |public, _| std::fs::write(public.join("two\nlines.html"), "x").unwrap(),
            "two\\nlines.html",
            "control character",
        ),
    ];
    for (i, (what, setup, path, why)) in cases.into_iter().enumerate() {
        let dir = d.path().join(format!("case{i}"));
        let spec = site(&dir);
        setup(&dir.join("public"), &secret);
        let o = build(&repo(), &store, &spec, &[], &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(path) && err.contains(why), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!err.contains(marker), "{what}: {err}");
    }
    // No byte of what the links point to was copied anywhere: store, glue, archives.
    let mut files = Vec::new();
    files_under(d.path(), &secret, &mut files);
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{} holds the outside file's bytes",
            f.display()
        );
        if passwd.len() >= 16 {
            assert!(
                !bytes.windows(16).any(|w| w == &passwd[..16]),
                "{} holds /etc/passwd's bytes",
                f.display()
            );
        }
    }
}
