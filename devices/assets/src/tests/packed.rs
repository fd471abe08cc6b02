//! Packer tests: determinism, selection, variants, and round trips through both backends.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::string::String;
use std::time::{Duration, SystemTime};
use std::vec::Vec;
use std::{format, vec};

use super::{MemBlock, leak, run};
use crate::{Embedded, OnBlock, PackError, PackOptions, pack};
use compose_devices::kv::{Encoding, Kv};
use sha2::{Digest, Sha256};

fn html(n: usize) -> String {
    let mut s = String::from("<!doctype html><title>t</title>\n");
    for i in 0..n {
        s.push_str(&format!(
            "<p>Paragraph {i} about compose, unikernels and static sites.</p>\n"
        ));
    }
    s
}

/// Deterministic, incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn site() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("index.html", html(200).into_bytes()),
        (
            "style.css",
            "body { color: #222; }\n".repeat(40).into_bytes(),
        ),
        ("tiny.txt", b"short".to_vec()),
        ("empty.txt", Vec::new()),
        ("logo.png", noise(3000, 1)),
        ("docs/index.html", html(50).into_bytes()),
        ("docs/guide.html", html(80).into_bytes()),
        (
            "docs/deep/er/data.json",
            format!("[{}1]", "1,".repeat(500)).into_bytes(),
        ),
        ("a b ü.txt", "unicode name ✓\n".repeat(30).into_bytes()),
        ("latin1.txt", vec![0xe9; 400]),
        ("noext", noise(10, 2)),
    ]
}

/// Writes `files` under `dir` in the given order.
fn write_tree(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
    }
}

fn options() -> PackOptions {
    // Low levels keep the tests fast; determinism does not depend on them.
    PackOptions {
        gzip_level: 6,
        zstd_level: 3,
        source_date_epoch: Some(1_700_000_000),
        ..PackOptions::default()
    }
}

fn packed(dir: &Path, options: &PackOptions) -> Vec<u8> {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("site.kv");
    pack(dir, options, &path).unwrap();
    fs::read(path).unwrap()
}

#[test]
fn packing_is_deterministic() {
    let files = site();
    let a = tempfile::tempdir().unwrap();
    write_tree(a.path(), &files);

    let b = tempfile::tempdir().unwrap();
    let b_root = b.path().join("some/other/place");
    let mut reversed = files.clone();
    reversed.reverse();
    write_tree(&b_root, &reversed);
    // Different times and permissions on every file and directory.
    for entry in walkdir::WalkDir::new(&b_root).min_depth(1) {
        let entry = entry.unwrap();
        let file = fs::File::options().read(true).open(entry.path()).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(12345))
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if entry.file_type().is_dir() {
                0o700
            } else {
                0o600
            };
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode)).unwrap();
        }
    }

    let first = packed(a.path(), &options());
    assert_eq!(
        first,
        packed(&b_root, &options()),
        "same tree, different place, order, times and modes"
    );
    assert_eq!(first, packed(a.path(), &options()), "packing twice");
    let other_time = PackOptions {
        source_date_epoch: Some(1),
        ..options()
    };
    assert_ne!(first, packed(a.path(), &other_time));
}

#[test]
fn round_trip_through_both_backends() {
    let files = site();
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &files);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("site.kv");
    let summary = pack(dir.path(), &options(), &path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(summary.files, files.len() as u64);
    assert_eq!(summary.archive_bytes, bytes.len() as u64);
    assert_eq!(bytes.len() % 512, 0);
    assert!(
        summary.gzip_variants >= 5 && summary.zstd_variants >= 5,
        "{summary:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );

    let embedded = Embedded::new(leak(bytes.clone())).unwrap();
    let on_block = run(OnBlock::open(MemBlock::new(bytes, 512), 32 * 1024)).unwrap();
    check_store(&embedded, &files);
    check_store(&on_block, &files);
    assert_eq!(embedded.modified(), Some(1_700_000_000));
    assert_eq!(on_block.modified(), Some(1_700_000_000));

    run(async {
        let types = [
            ("index.html", "text/html; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("logo.png", "image/png"),
            ("docs/deep/er/data.json", "application/json"),
            ("latin1.txt", "text/plain"),
            ("noext", "application/octet-stream"),
        ];
        for (key, ty) in types {
            assert_eq!(
                embedded.get(key).await.unwrap().unwrap().content_type,
                ty,
                "{key}"
            );
        }
        let png = embedded.get("logo.png").await.unwrap().unwrap();
        assert!(!png.has_variants(), "images are not compressed");
        let tiny = embedded.get("tiny.txt").await.unwrap().unwrap();
        assert!(!tiny.has_variants(), "small files are not compressed");
        let index = embedded.get("index.html").await.unwrap().unwrap();
        assert!(index.gzip_size.unwrap() < index.size && index.zstd_size.unwrap() < index.size);
        assert_eq!(
            embedded.list("", None, 100).await.unwrap(),
            [
                "a b ü.txt",
                "docs/deep/er/data.json",
                "docs/guide.html",
                "docs/index.html",
                "empty.txt",
                "index.html",
                "latin1.txt",
                "logo.png",
                "noext",
                "style.css",
                "tiny.txt"
            ]
        );
    });
}

/// Reads every value of `kv` in every encoding, in odd-sized chunks, and checks it.
fn check_store<K: Kv>(kv: &K, files: &[(&str, Vec<u8>)]) {
    run(async {
        assert_eq!(kv.len(), files.len() as u64);
        for (key, data) in files {
            let e = kv
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(e.size, data.len() as u64);
            assert_eq!(e.sha256, <[u8; 32]>::from(Sha256::digest(data)));
            for enc in Encoding::ALL {
                let Some(size) = e.size_in(enc) else { continue };
                let mut stored = Vec::new();
                let mut buf = vec![0u8; 777];
                loop {
                    let n = kv
                        .read(&e, enc, stored.len() as u64, &mut buf)
                        .await
                        .unwrap();
                    if n == 0 {
                        break;
                    }
                    stored.extend_from_slice(&buf[..n]);
                }
                assert_eq!(stored.len() as u64, size);
                if let Some(slice) = kv.slice(&e, enc) {
                    assert_eq!(slice, &stored[..]);
                }
                let decoded = match enc {
                    Encoding::Identity => stored,
                    Encoding::Gzip => {
                        let mut d = Vec::new();
                        flate2::read::GzDecoder::new(&stored[..])
                            .read_to_end(&mut d)
                            .unwrap();
                        d
                    }
                    Encoding::Zstd => zstd::stream::decode_all(&stored[..]).unwrap(),
                };
                assert_eq!(&decoded, data, "{key} as {enc}");
            }
        }
    });
}

#[test]
fn include_and_exclude() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &site());
    let keys = |options: PackOptions| -> Vec<String> {
        let kv = Embedded::new(leak(packed(dir.path(), &options))).unwrap();
        run(kv.list("", None, 100)).unwrap()
    };
    let only_html = keys(PackOptions {
        include: vec!["*.html".into()],
        ..options()
    });
    assert_eq!(
        only_html,
        ["docs/guide.html", "docs/index.html", "index.html"]
    );
    let top_html = keys(PackOptions {
        include: vec!["/*.html".into()],
        ..options()
    });
    assert_eq!(top_html, ["index.html"]);
    let docs_dir = keys(PackOptions {
        include: vec!["docs".into()],
        exclude: vec!["deep".into()],
        ..options()
    });
    assert_eq!(docs_dir, ["docs/guide.html", "docs/index.html"]);
    let no_txt = keys(PackOptions {
        exclude: vec!["*.txt".into(), "docs/**".into()],
        ..options()
    });
    assert_eq!(no_txt, ["index.html", "logo.png", "noext", "style.css"]);
}

#[test]
fn compression_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &site());
    let bytes = packed(
        dir.path(),
        &PackOptions {
            compress: false,
            ..options()
        },
    );
    let kv = Embedded::new(leak(bytes)).unwrap();
    run(async {
        for key in kv.list("", None, 100).await.unwrap() {
            assert!(!kv.get(&key).await.unwrap().unwrap().has_variants());
        }
    });
}

#[test]
fn errors_are_reported_and_leave_the_output_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), &site());
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("site.kv");
    fs::write(&path, b"previous").unwrap();

    let err = pack(&dir.path().join("missing"), &options(), &path).unwrap_err();
    assert!(matches!(err, PackError::Io { .. }), "{err}");
    let err = pack(
        dir.path(),
        &PackOptions {
            include: vec!["[".into()],
            ..options()
        },
        &path,
    )
    .unwrap_err();
    assert!(matches!(err, PackError::Glob { .. }), "{err}");
    let err = pack(
        dir.path(),
        &PackOptions {
            align: 3,
            ..options()
        },
        &path,
    )
    .unwrap_err();
    assert!(matches!(err, PackError::InvalidOption(_)), "{err}");
    let err = pack(
        dir.path(),
        &PackOptions {
            zstd_level: 22,
            ..options()
        },
        &path,
    )
    .unwrap_err();
    assert!(matches!(err, PackError::InvalidOption(_)), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
        fs::write(&bad, b"x").unwrap();
        let err = pack(dir.path(), &options(), &path).unwrap_err();
        assert!(matches!(err, PackError::NotUtf8(_)), "{err}");
        fs::remove_file(bad).unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), b"previous");
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
    pack(dir.path(), &options(), &path).unwrap();
    assert!(Embedded::new(leak(fs::read(&path).unwrap())).is_ok());
}

#[test]
fn empty_directory_packs_to_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let kv = Embedded::new(leak(packed(dir.path(), &options()))).unwrap();
    assert!(kv.is_empty());
    assert_eq!(run(kv.get("index.html")), Ok(None));
}
