//! Launch hygiene, through `compose run` as a process: empty secrets are refused before
//! anything starts, the variable an `env:` secret came from is not in the unikernel's
//! environment, a running unikernel's entry survives `compose gc` (and goes once it has
//! stopped), `gc --dry-run` removes nothing, and a read-only store still runs what it holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_compose"));
    c.current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", store);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A child process that is killed and reaped however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `compose run ARGS` and waits (with a deadline) for the unikernel's first line.
fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let mut cmd = compose(store);
    cmd.args(["run", "--no-out-link"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Running(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("the unikernel printed nothing in time");
    assert!(!line.is_empty(), "compose run ended without output");
    (child, line)
}

fn entries(store: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() > 33 && n.as_bytes()[32] == b'-')
        .collect();
    out.sort();
    out
}

fn gc(store: &Path, extra: &[&str]) -> Output {
    let o = compose(store).arg("gc").args(extra).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    o
}

#[test]
fn empty_secrets_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n").unwrap();
    type Case<'a> = (String, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 2] = [
        (format!("token=@{}", empty.display()), &[], "the file"),
        (
            "token=env:COMPOSE_TEST_EMPTY_TOKEN".to_string(),
            &[("COMPOSE_TEST_EMPTY_TOKEN", "")],
            "the environment variable COMPOSE_TEST_EMPTY_TOKEN",
        ),
    ];
    for (flag, env, from) in cases {
        let mut cmd = compose(&store);
        cmd.args([
            "run",
            "--no-out-link",
            "specs/echo-token.kdl",
            "--secret",
            &flag,
            "--",
            "--port=0",
        ])
        .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{flag}: {err}");
        assert!(
            err.contains("secret `token` is empty") && err.contains(from),
            "{flag}: {err}"
        );
        // The unikernel never started: it would have printed its port.
        assert!(
            !text(&o.stdout).contains("listening"),
            "{}",
            text(&o.stdout)
        );
        assert!(!err.contains("Running"), "{err}");
    }
}

#[test]
fn an_env_secret_is_not_in_the_unikernels_environment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let var = "COMPOSE_TEST_TOKEN_VAR";
    let value = format!("tok-{}", std::process::id());
    let (child, _line) = start(
        &store,
        &[
            "specs/echo-token.kdl",
            "--secret",
            &format!("token=env:{var}"),
            "--",
            "--port=0",
        ],
        &[(var, &value), ("COMPOSE_TEST_OTHER_VAR", "kept")],
    );
    // compose execs the unikernel: the child's pid is the unikernel's.
    let pid = child.0.id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        contains(&cmdline, b"--secret:token="),
        "not the unikernel: {}",
        text(&cmdline)
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        contains(&environ, b"COMPOSE_TEST_OTHER_VAR=kept"),
        "the environment is otherwise passed on"
    );
    assert!(
        !contains(&environ, var.as_bytes()),
        "{var} is still in the unikernel's environment"
    );
    assert!(!contains(&environ, value.as_bytes()));
}

#[test]
fn gc_keeps_the_entry_of_a_running_unikernel_and_dry_run_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (mut child, _line) = start(&store, &["specs/echo.kdl", "--", "--port=0"], &[]);
    let pid = child.0.id();
    let held = entries(&store);
    assert_eq!(held.len(), 1, "{held:?}");
    let entry = &held[0];

    // No result link, no pin: only the running process keeps it.
    let o = gc(&store, &[]);
    assert!(
        text(&o.stderr).contains(&format!("keeping {entry} (running, pid {pid})")),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(entries(&store), held);
    // The unikernel is unharmed.
    assert!(child.0.try_wait().unwrap().is_none());

    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // Now it would go; a dry run says so and removes nothing.
    let o = gc(&store, &["--dry-run"]);
    assert!(
        text(&o.stderr).contains(&format!("would remove {entry}")),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("nothing removed"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(entries(&store), held);
    assert!(
        store.join("launches").join(pid.to_string()).exists(),
        "a dry run leaves even the stale launch record"
    );

    let o = gc(&store, &[]);
    assert!(
        text(&o.stderr).contains(&format!("removed {entry}")),
        "{}",
        text(&o.stderr)
    );
    assert!(entries(&store).is_empty());
    assert!(!store.join("launches").join(pid.to_string()).exists());
}

#[test]
fn a_recycled_pid_does_not_keep_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = compose(&store)
        .args(["build", "specs/hello.kdl", "--no-out-link"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let entry = PathBuf::from(text(&o.stdout).trim());
    // A record naming this test's own (live) pid, but with another start time.
    let s = compose::store::Store::at(&store).unwrap();
    let me = std::process::id();
    let start = compose::store::process_start_time(me).unwrap();
    s.record_launch(&entry, me, start + 1).unwrap();
    gc(&store, &[]);
    assert!(entries(&store).is_empty(), "{:?}", entries(&store));
}

/// Runs `sh -c SCRIPT` in a private mount namespace in which `store` is a read-only bind
/// mount of itself; None if this machine cannot (not root, no unshare).
fn in_read_only_mount(store: &Path, script: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !probe.success() {
        return None;
    }
    let s = store.display();
    let full = format!(
        "set -e; mount --make-rprivate / ; mount --bind '{s}' '{s}'; mount -o remount,bind,ro '{s}'; \
         if touch '{s}/.probe' 2>/dev/null; then echo 'the store is writable' >&2; exit 99; fi; {script}"
    );
    Some(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &full])
            .current_dir(root())
            .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
            .env("COMPOSE_STORE", store)
            .env("COMPOSE", env!("CARGO_BIN_EXE_compose"))
            .output()
            .unwrap(),
    )
}

#[test]
fn a_read_only_store_runs_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let o = compose(&store)
        .args(["build", "specs/hello.kdl", "--no-out-link"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Start from a store without a lock file or hash cache: neither can be created.
    let _ = std::fs::remove_file(store.join(".lock"));
    let _ = std::fs::remove_dir_all(store.join(".cache"));
    std::fs::create_dir(store.join(".cache")).unwrap();
    let before = entries(&store);
    let Some(o) = in_read_only_mount(
        &store,
        "exec \"$COMPOSE\" run --no-out-link specs/hello.kdl -- --name=ReadOnly",
    ) else {
        println!("\n*** SKIPPED: cannot make a read-only mount (root and unshare needed) ***\n");
        return;
    };
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(out.contains("ReadOnly"), "{out}\n{err}");
    assert!(err.contains("in the store, unchanged"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(entries(&store), before);

    // With a lock file (read-only, like the rest) it runs as well.
    std::fs::write(store.join(".lock"), "").unwrap();
    let o = in_read_only_mount(
        &store,
        "exec \"$COMPOSE\" run --no-out-link specs/hello.kdl -- --name=Locked",
    )
    .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("Locked"), "{}", text(&o.stdout));
}

/// A directory for test applications inside the compose tree (see [`writer_spec`]), kept
/// between runs: cargo's cached build-script output of the platform crates names the glue
/// directory of the build that ran it, so a glue directory must not vanish under it.
fn fixtures(name: &str) -> PathBuf {
    let dir = root()
        .join("target/compose-tests/launch-fixtures")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` to `path` unless it holds them already (atomically: tests running in
/// parallel write the same fixtures).
fn put(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|b| b == bytes) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Unique per process and per call: tests of one process write the same fixtures too.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An application crate `name` in `dir` (inside the compose tree) with `lib_rs` as its
/// source, depending on compose-devices by path.
fn app_crate(dir: &Path, name: &str, lib_rs: &str) {
    let app = dir.join(name);
    put(
        &app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\ncompose-devices = {{ path = \"{}devices/base\" }}\n",
            "../".repeat(app.strip_prefix(root()).unwrap().components().count())
        )
        .as_bytes(),
    );
    put(&app.join("src/lib.rs"), lib_rs.as_bytes());
}

/// A spec (in `dir`, a directory of the compose tree's `target/compose-tests`) whose
/// application reads sector 0 of block device `disk`, then tries to overwrite it, and
/// prints what happened. (An application outside the compose tree cannot name
/// compose-devices by its absolute path: cargo sees two copies, one through the glue's
/// `src-root` link.)
fn writer_spec(dir: &Path, writable: bool) -> PathBuf {
    app_crate(
        dir,
        "writer",
        r#"#![no_std]
extern crate alloc;
use compose_devices::block::Block;
use compose_devices::console::Console;

/// Reads sector 0, then tries to overwrite it with 0x42.
pub async fn start<C: Console, B: Block>(console: &'static C, disk: &'static B) {
    let mut buf = alloc::vec![0u8; 512];
    let read = disk.read(0, &mut buf).await;
    console.log(&alloc::format!("read: {read:?} {:#x}", buf[0]));
    let write = disk.write(0, &[0x42u8; 512]).await;
    console.log(&alloc::format!("write: {write:?}"));
}
"#,
    );
    let spec = dir.join(format!("writer-{writable}.kdl"));
    put(
        &spec,
        format!(
            "unikernel writer {{\n    memory \"32MiB\"\n}}\nconsole\nblock disk{}\napplication writer {{\n    crate \"writer\"\n    entry \"writer::start\"\n    use console disk\n}}\n",
            if writable { " writable=#true" } else { "" }
        )
        .as_bytes(),
    );
    spec
}

fn guest_writes(target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for writable in [false, true] {
        let spec = writer_spec(&fixtures("writer"), writable);
        let disk = dir.path().join(format!("disk-{writable}.img"));
        std::fs::write(&disk, [0x11u8; 4096]).unwrap();
        let o = compose(&store)
            .args(["run", "--no-out-link"])
            .arg(&spec)
            .args(["--target", target, "--block"])
            .arg(format!("disk={}", disk.display()))
            .output()
            .unwrap();
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{target}, writable={writable}: {err}");
        assert!(out.contains("read: Ok(()) 0x11"), "{target}: {out}\n{err}");
        let after = std::fs::read(&disk).unwrap();
        if writable {
            assert!(out.contains("write: Ok(())"), "{target}: {out}");
            assert_eq!(after[..512], [0x42u8; 512]);
        } else {
            // unix reports ReadOnly; a Solo5 guest gets SOLO5_R_EUNSPEC, an I/O error.
            let want = if target == "unix" {
                "write: Err(ReadOnly)"
            } else {
                "write: Err(Io)"
            };
            assert!(out.contains(want), "{target}: {out}\n{err}");
            assert_eq!(after, vec![0x11u8; 4096], "{target}: the file was written");
        }
        // The manifest records it.
        let entry = std::fs::read_dir(&store)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .ends_with(&format!("-writer-{target}"))
                    && std::fs::read_to_string(p.join("manifest.kdl"))
                        .is_ok_and(|k| k.contains("writable=#true") == writable)
            });
        assert!(
            entry.is_some(),
            "no {target} entry whose manifest says writable={writable}"
        );
    }
}

#[test]
fn a_guest_writes_only_to_a_block_device_declared_writable_on_unix() {
    guest_writes("unix");
}

#[test]
fn a_guest_writes_only_to_a_block_device_declared_writable_on_spt() {
    guest_writes("spt");
}

#[test]
fn a_guest_writes_only_to_a_block_device_declared_writable_on_hvt() {
    if !Path::new("/dev/kvm").exists() {
        println!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    guest_writes("hvt");
}

#[test]
fn a_block_image_from_the_store_is_attached_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (child, _line) = start(
        &store,
        &["specs/site.kdl", "--arg", "backend=block", "--", "--port=0"],
        &[],
    );
    let pid = child.0.id();
    let cmdline = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    assert!(cmdline.contains("--block-ro:public="), "{cmdline:?}");
    // The unikernel holds the store's image open read-only (O_ACCMODE of the descriptor).
    let mut seen = false;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.starts_with(&store) && target.ends_with("public.img") {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap();
            assert_eq!(
                flags & libc::O_ACCMODE as u32,
                libc::O_RDONLY as u32,
                "{info}"
            );
            seen = true;
        }
    }
    assert!(
        seen,
        "the unikernel has no descriptor of the store's public.img"
    );
}

/// A spec (in `dir`, inside the compose tree as for [`writer_spec`]) whose application
/// prints the length of secret `token`, then waits a minute.
fn sleeper_spec(dir: &Path) -> PathBuf {
    let app = dir.join("sleeper");
    put(
        &app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"sleeper\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\ncompose-devices = {{ path = \"{}devices/base\" }}\n",
            "../".repeat(app.strip_prefix(root()).unwrap().components().count())
        )
        .as_bytes(),
    );
    put(
        &app.join("src/lib.rs"),
        r#"#![no_std]
extern crate alloc;
use compose_devices::console::Console;
use compose_devices::secret::Secret;
use compose_devices::time::MonotonicClock;

/// Says how long the secret is, then sleeps for a minute.
pub async fn start<C: Console, T: MonotonicClock, S: Secret>(
    console: &'static C,
    clock: &'static T,
    token: &'static S,
) {
    console.log(&alloc::format!("secret of {} bytes", token.value().len()));
    clock.sleep(core::time::Duration::from_secs(60)).await;
}
"#
        .as_bytes(),
    );
    let spec = dir.join("sleeper.kdl");
    put(
        &spec,
        b"unikernel sleeper {\n    memory \"32MiB\"\n}\nconsole\nclock\nsecret token\napplication sleeper {\n    crate \"sleeper\"\n    entry \"sleeper::start\"\n    use console clock token\n}\n",
    );
    spec
}

/// On a Solo5 target compose execs the tender: the variable is not in its environment.
fn env_secret_not_in_the_tenders_environment(target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = sleeper_spec(&fixtures("sleeper"));
    let store = dir.path().join("store");
    let var = "COMPOSE_TEST_TENDER_TOKEN";
    let value = format!("tender-tok-{}", std::process::id());
    let (child, line) = start(
        &store,
        &[
            spec.to_str().unwrap(),
            "--target",
            target,
            "--secret",
            &format!("token=env:{var}"),
        ],
        &[(var, &value), ("COMPOSE_TEST_OTHER_VAR", "kept")],
    );
    assert_eq!(line.trim(), format!("secret of {} bytes", value.len()));
    let pid = child.0.id();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().contains(&format!("compose-{target}")),
        "not the tender: {}",
        exe.display()
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(contains(&environ, b"COMPOSE_TEST_OTHER_VAR=kept"));
    assert!(
        !contains(&environ, var.as_bytes()),
        "{var} is in the tender's environment"
    );
    assert!(!contains(&environ, value.as_bytes()));
}

#[test]
fn an_env_secret_is_not_in_the_spt_tenders_environment() {
    env_secret_not_in_the_tenders_environment("spt");
}

#[test]
fn an_env_secret_is_not_in_the_hvt_tenders_environment() {
    if !Path::new("/dev/kvm").exists() {
        println!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    env_secret_not_in_the_tenders_environment("hvt");
}

/// A spec whose application reads every sector of block device `disk`, prints an FNV-1a
/// hash of them all, then tries to overwrite sector 0.
fn reader_spec(dir: &Path) -> PathBuf {
    app_crate(
        dir,
        "layered-reader",
        r#"#![no_std]
extern crate alloc;
use compose_devices::block::Block;
use compose_devices::console::Console;

/// Hashes every sector (FNV-1a, 64 bits), then tries to write sector 0.
pub async fn start<C: Console, B: Block>(console: &'static C, disk: &'static B) {
    let info = disk.info();
    let mut buf = alloc::vec![0u8; info.sector_size as usize];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for sector in 0..info.sectors {
        if let Err(e) = disk.read(sector, &mut buf).await {
            console.log(&alloc::format!("read {sector}: {e:?}"));
            return;
        }
        for b in &buf {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    console.log(&alloc::format!("fnv: {h:016x} sectors: {}", info.sectors));
    let write = disk.write(0, &buf).await;
    console.log(&alloc::format!("write: {write:?}"));
}
"#,
    );
    let spec = dir.join("layered-reader.kdl");
    put(
        &spec,
        b"unikernel layered-reader {\n    memory \"32MiB\"\n}\nconsole\nblock disk\napplication layered-reader {\n    crate \"layered-reader\"\n    entry \"layered_reader::start\"\n    use console disk\n}\n",
    );
    spec
}

/// A layered image at `dir/disk.img` of 40 sectors whose extents do not fall on sector
/// boundaries, over two parts; returns the bytes it stands for.
fn layered_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    use compose_blockfile::LayoutBuilder;
    let img = dir.join("disk.img");
    let parts = compose_blockfile::parts_dir(&img);
    std::fs::create_dir_all(&parts).unwrap();
    let a: Vec<u8> = (0..12_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let b: Vec<u8> = (0..10_000u32)
        .map(|i| (i * 17 % 241) as u8 ^ 0x5a)
        .collect();
    std::fs::write(parts.join("a-one"), &a).unwrap();
    std::fs::write(parts.join("d-two"), &b).unwrap();
    let mut l = LayoutBuilder::new();
    let (pa, pb) = (
        l.part("a-one", a.len() as u64),
        l.part("d-two", b.len() as u64),
    );
    let mut flat = Vec::new();
    for (part, bytes, off, len) in [
        (pb, &b, 0usize, 700usize),
        (pa, &a, 100, 5000),
        (pb, &b, 3000, 4000),
        (pa, &a, 6000, 5000),
        (pb, &b, 9000, 660),
    ] {
        l.push(part, off as u64, len as u64);
        flat.extend_from_slice(&bytes[off..off + len]);
    }
    let layout = l.finish();
    assert_eq!(layout.size % 512, 0);
    std::fs::write(&img, layout.encode()).unwrap();
    (img, flat)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn reads_a_layered_image(target: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let spec = reader_spec(&fixtures("layered-reader"));
    let (img, flat) = layered_disk(dir.path());
    let o = compose(&store)
        .args(["run", "--no-out-link"])
        .arg(&spec)
        .args(["--target", target, "--block"])
        .arg(format!("disk={}", img.display()))
        .output()
        .unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    if target == "spt" {
        // The spt guest reads its images itself: it is told so, and nothing runs.
        assert!(!o.status.success(), "{out}");
        assert!(
            err.contains("a layered image cannot be attached on spt"),
            "{err}"
        );
        return;
    }
    assert!(o.status.success(), "{target}: {err}");
    let want = format!("fnv: {:016x} sectors: {}", fnv(&flat), flat.len() / 512);
    assert!(out.contains(&want), "{target}: want {want}: {out}\n{err}");
    // Layered images are read-only, however attached.
    let refused = if target == "unix" {
        "write: Err(ReadOnly)"
    } else {
        "write: Err(Io)"
    };
    assert!(out.contains(refused), "{target}: {out}");
}

#[test]
fn a_layered_image_reads_as_its_bytes_on_unix() {
    reads_a_layered_image("unix");
}

#[test]
fn a_layered_image_reads_as_its_bytes_on_hvt() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!(
            "\n*** SKIPPED: no /dev/kvm on this machine: the hvt target cannot run here ***\n"
        );
        return;
    }
    reads_a_layered_image("hvt");
}

#[test]
fn a_layered_image_is_refused_on_spt_with_a_reason() {
    reads_a_layered_image("spt");
}
