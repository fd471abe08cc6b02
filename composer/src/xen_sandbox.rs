//! A local Xen for machines without one: Debian's Xen 4.17 hypervisor and a Linux dom0,
//! booted under QEMU's TCG emulator with an AMD CPU model that has SVM and nested paging
//! (`-cpu qemu64,+svm,+npt`), so that PVH guests run under real Xen, with real XenStore,
//! grant tables, event channels, xenconsoled, netback and blkback.
//!
//! [`Sandbox::prepare`] makes it once per cache directory: it fetches the Debian
//! packages with `apt-get download` (never installing them), extracts them with
//! `dpkg-deb -x`, and writes the hypervisor (gunzipped: QEMU's multiboot loader takes an
//! ELF32), the dom0 kernel (the ELF inside Debian's bzImage, uncompressed) and dom0's
//! initramfs (busybox, xl, xenstored, xenconsoled and their libraries, the hotplug
//! scripts, the backend modules; its `/init` is `xen_sandbox/init.sh`). The host must be
//! Debian 12 (bookworm): its bash, flock and C library go into the initramfs.
//!
//! [`Sandbox::boot`] boots it once for a list of [`Guest`]s: each guest's image, `xl`
//! configuration, files and dom0 hook go into a second cpio archive appended to the
//! initramfs; dom0 creates the guests one after another (`run-guest.sh`) and reports
//! each one's console, hook output, shutdown reason and timings on the serial line, which
//! this module parses into [`Outcome`]s. dom0 has two bridges for the guests' vifs,
//! `xenbr0` at 10.0.0.1/24 and `xenbr1` at 10.0.1.1/24 (a second, private interface, as
//! for monitoring), and, when the host has them, its `curl` and `openssl` (clients for the
//! hooks: HTTPS with `--cacert`). QEMU has no network device: nothing leaves the machine.

use std::fmt::Write as _;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// dom0's `/init`.
const INIT: &str = include_str!("xen_sandbox/init.sh");
/// dom0's per-guest runner.
const RUN_GUEST: &str = include_str!("xen_sandbox/run-guest.sh");

/// Bumped when what [`Sandbox::prepare`] writes changes.
const LAYOUT: &str = "compose-xen-sandbox-2";
const XENVER: &str = "4.17";

/// The Debian packages of the sandbox (the dom0 kernel is added: the current
/// `linux-image-*-amd64-unsigned` of bookworm).
const PACKAGES: &[&str] = &[
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxenhypfs1",
    "libxendevicemodel1",
    "libxentoolcore1",
    "libyajl2",
    "busybox-static",
];

/// dom0's kernel modules (their dependencies are added from `modules.dep`).
const MODULES: &[&str] = &[
    "xen-evtchn",
    "xen-privcmd",
    "xenfs",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-blkback",
    "loop",
    "xen-netback",
    "bridge",
];

/// The toolstack programs dom0 runs.
const XEN_BINS: &[&str] = &[
    "xl",
    "xenstored",
    "xenconsoled",
    "xenconsole",
    "xen-init-dom0",
];

/// dom0's bridges for the guests' vifs (`init.sh`): `xenbr0` at 10.0.0.1/24, `xenbr1` at
/// 10.0.1.1/24.
pub const BRIDGES: &[&str] = &["xenbr0", "xenbr1"];

/// Host programs copied into dom0 when the host has them (with their libraries), for the
/// hooks: HTTP(S) clients that verify certificates.
const HOST_CLIENTS: &[&str] = &["/usr/bin/curl", "/usr/bin/openssl"];

/// What the sandbox needs on the host, for messages.
pub const NEEDS: &str = "qemu-system-x86_64 (Debian: qemu-system-x86), apt-get and dpkg-deb \
                         with bookworm's package lists, xz-utils, and a Debian 12 host";

/// Why the sandbox cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A host program it needs is missing.
    #[error("the Xen sandbox needs `{0}` on PATH (it needs: {NEEDS})")]
    Missing(&'static str),
    /// Preparing it failed.
    #[error("cannot prepare the Xen sandbox in {}: {why}", dir.display())]
    Prepare {
        /// The cache directory.
        dir: PathBuf,
        /// What failed.
        why: String,
    },
    /// Booting it failed.
    #[error("the Xen sandbox failed: {0}")]
    Boot(String),
}

fn prep(dir: &Path, why: impl Into<String>) -> SandboxError {
    SandboxError::Prepare {
        dir: dir.to_path_buf(),
        why: why.into(),
    }
}

/// Whether `prog` is on PATH.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(prog);
            f.is_file()
        })
    })
}

/// A prepared sandbox: its files in a cache directory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    dir: PathBuf,
}

/// One guest of a boot.
#[derive(Debug, Clone, Default)]
pub struct Guest {
    /// The PVH image.
    pub image: PathBuf,
    /// `xl` configuration lines. The sandbox writes `name`, `type = "pvh"`, `kernel`
    /// (the image's path in dom0), `memory = 32` and `on_* = "preserve"` first; a later
    /// line overrides them (xl keeps the last assignment). Files are under
    /// `/job/gN/` in dom0 (see [`Guest::files`]).
    pub xl: Vec<String>,
    /// Files for dom0, as `/job/gN/NAME`: (name, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// A dom0 shell script run before `xl create`.
    pub pre: Option<String>,
    /// A dom0 shell script run while the guest runs, with its domain id as `$1`; its
    /// output is [`Outcome::hook`]. It may end the guest with `xl destroy $1`.
    pub hook: Option<String>,
    /// A dom0 shell script run once the guest is gone (to look at its disks).
    pub post: Option<String>,
    /// Seconds the guest may run (default 60).
    pub timeout: Option<u32>,
}

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It powered off.
    Poweroff,
    /// It crashed (a panic, a CPU fault).
    Crash,
    /// dom0 destroyed it (a hook ended it).
    Destroyed,
    /// Another Xen shutdown code.
    Other(String),
    /// It ran past its timeout (and was destroyed).
    Timeout,
    /// `xl create` failed (its output is in [`Outcome::xl`]).
    CreateFailed,
}

/// What one guest did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its console output.
    pub console: String,
    /// How it ended.
    pub reason: Reason,
    /// The hook's output and exit status (`None`: no hook, or it did not finish).
    pub hook: String,
    /// The hook's exit status.
    pub hook_rc: Option<i32>,
    /// `xl create`'s output, when it failed or the guest did not power off.
    pub xl: String,
    /// Seconds from `xl create` to the guest's first console output (dom0's clock).
    pub create_to_console: Option<f64>,
    /// Seconds from `xl create` until the domain shut down.
    pub create_to_end: Option<f64>,
}

impl Outcome {
    /// The status of the guest's last `compose: exit status N` line.
    pub fn exit_status(&self) -> Option<u8> {
        self.console
            .lines()
            .rev()
            .find_map(|l| l.trim_end().strip_prefix(EXIT_LINE)?.parse().ok())
    }
}

/// The last line a compose xen guest prints (`platforms/xen`'s `EXIT_LINE`).
pub const EXIT_LINE: &str = "compose: exit status ";

/// One boot of the sandbox.
#[derive(Debug)]
pub struct Boot {
    /// Each guest's outcome, in order.
    pub guests: Vec<Outcome>,
    /// The whole serial log (Xen's boot messages, dom0's markers).
    pub serial: String,
    /// Seconds from QEMU's start to dom0's toolstack being ready.
    pub ready_after: Option<f64>,
    /// The whole boot's duration.
    pub elapsed: Duration,
}

fn run_ok(cmd: &mut Command, dir: &Path) -> Result<Vec<u8>, SandboxError> {
    let out = cmd
        .output()
        .map_err(|e| prep(dir, format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(prep(
            dir,
            format!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out.stdout)
}

impl Sandbox {
    /// The cache directory compose uses: `$COMPOSE_XEN_SANDBOX` if set, else
    /// `target/xen-sandbox` in the compose checkout, else
    /// `$XDG_CACHE_HOME/compose/xen-sandbox` (or `~/.cache/...`).
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("COMPOSE_XEN_SANDBOX").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d));
        }
        if let Some(c) = crate::tree::checkout() {
            return Some(c.join("target/xen-sandbox"));
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(cache.join("compose/xen-sandbox"))
    }

    /// Whether `dir` holds a prepared sandbox.
    pub fn is_prepared(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("out/.done")).is_ok_and(|s| s.trim() == LAYOUT)
    }

    /// Makes (once) or opens the sandbox in `dir`. Concurrent callers wait for each other.
    pub fn prepare(dir: &Path) -> Result<Sandbox, SandboxError> {
        for prog in ["qemu-system-x86_64"] {
            if !on_path(prog) {
                return Err(SandboxError::Missing(prog));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| prep(dir, e.to_string()))?;
        let lock = std::fs::File::create(dir.join("lock")).map_err(|e| prep(dir, e.to_string()))?;
        lock.lock()
            .map_err(|e| prep(dir, format!("cannot lock: {e}")))?;
        if !Self::is_prepared(dir) {
            for prog in ["apt-get", "apt-cache", "dpkg-deb", "xz", "ldd"] {
                if !on_path(prog) {
                    return Err(SandboxError::Missing(prog));
                }
            }
            make(dir)?;
        }
        Ok(Sandbox {
            dir: dir.to_path_buf(),
        })
    }

    /// Boots Xen once and runs `guests` in turn. Fails only if the sandbox itself fails
    /// (QEMU, Xen or dom0); each guest's fate is in its [`Outcome`].
    pub fn boot(&self, guests: &[Guest], overall: Duration) -> Result<Boot, SandboxError> {
        let out = self.dir.join("out");
        let mut job = Cpio::default();
        job.dir("job");
        let mut run = String::from("#!/bin/sh\n");
        for (i, g) in guests.iter().enumerate() {
            let n = i + 1;
            let gd = format!("job/g{n}");
            job.dir(&gd);
            let image = std::fs::read(&g.image).map_err(|e| {
                SandboxError::Boot(format!("cannot read {}: {e}", g.image.display()))
            })?;
            let base = g
                .image
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("image")
                .to_string();
            let stem = base.split('.').next().unwrap_or("guest").to_string();
            job.file(&format!("{gd}/{base}"), &image, 0o644);
            let mut cfg = String::new();
            let _ = writeln!(cfg, "name = \"g{n}-{stem}\"");
            let _ = writeln!(cfg, "type = \"pvh\"");
            let _ = writeln!(cfg, "kernel = \"/{gd}/{base}\"");
            let _ = writeln!(cfg, "memory = 32");
            for l in &g.xl {
                // The name and the kernel are the sandbox's; everything else is the guest's.
                let key = l.split('=').next().unwrap_or("").trim();
                if key == "name" || key == "kernel" {
                    continue;
                }
                let _ = writeln!(cfg, "{l}");
            }
            let _ = writeln!(cfg, "on_poweroff = \"preserve\"");
            let _ = writeln!(cfg, "on_reboot = \"preserve\"");
            let _ = writeln!(cfg, "on_crash = \"preserve\"");
            job.file(&format!("{gd}/guest.cfg"), cfg.as_bytes(), 0o644);
            for (name, data) in &g.files {
                job.file(&format!("{gd}/{name}"), data, 0o644);
            }
            if let Some(pre) = &g.pre {
                job.file(&format!("{gd}/pre.sh"), script(pre).as_bytes(), 0o755);
            }
            if let Some(post) = &g.post {
                job.file(&format!("{gd}/post.sh"), script(post).as_bytes(), 0o755);
            }
            if let Some(hook) = &g.hook {
                job.file(&format!("{gd}/hook.sh"), script(hook).as_bytes(), 0o755);
            }
            let _ = writeln!(run, "run-guest {n} {}", g.timeout.unwrap_or(60));
        }
        job.file("job/run.sh", run.as_bytes(), 0o755);
        // The per-guest runner travels with the job (it overrides the one in dom0's
        // archive), so that changing it needs no new dom0.
        job.file("usr/bin/run-guest", RUN_GUEST.as_bytes(), 0o755);
        let job = job.finish();

        // The initramfs: dom0's, then the job (Linux unpacks concatenated archives). It is
        // a memory file that QEMU inherits and opens as /proc/self/fd/N: what the job holds
        // (a secrets disk) touches no disk.
        let mut initrd =
            memfd().map_err(|e| SandboxError::Boot(format!("cannot make the initramfs: {e}")))?;
        {
            let mut base = std::fs::File::open(out.join("dom0.cpio"))
                .map_err(|e| SandboxError::Boot(format!("dom0.cpio: {e}")))?;
            std::io::copy(&mut base, &mut initrd)
                .and_then(|_| initrd.write_all(&job))
                .map_err(|e| SandboxError::Boot(format!("cannot write the initramfs: {e}")))?;
        }
        let qemu_initrd = {
            use std::os::fd::AsRawFd;
            format!(
                "{} console=hvc0 earlyprintk=xen,/proc/self/fd/{}",
                out.join("vmlinux").display(),
                initrd.as_raw_fd()
            )
        };
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "pc",
            "-accel",
            "tcg",
        ])
        .args([
            "-cpu",
            "qemu64,+svm,+npt,+rdrand",
            "-m",
            "1024",
            "-smp",
            "1",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(out.join("xen"))
        .args([
            "-append",
            "console=com1 com1=115200,8n1 dom0_mem=384M,max:384M dom0_max_vcpus=1",
        ])
        .arg("-initrd")
        .arg(qemu_initrd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // QEMU dies with the thread that started it, even if compose is killed with a signal
        // no destructor sees (a test's deadline, the OOM killer).
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let start = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| SandboxError::Boot(format!("cannot start qemu-system-x86_64: {e}")))?;
        let mut qemu = Killer(child);
        let stdout = qemu.0.stdout.take().expect("piped");
        let mut stderr = qemu.0.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, String)>();
        std::thread::spawn(move || {
            let r = std::io::BufReader::new(stdout);
            for line in r.split(b'\n') {
                let Ok(line) = line else { break };
                let s = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send((Instant::now(), s)).is_err() {
                    break;
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let mut serial = String::new();
        // `$COMPOSE_XEN_SERIAL_LOG`: a copy of the serial line as it comes, for watching.
        let mut live =
            std::env::var_os("COMPOSE_XEN_SERIAL_LOG").and_then(|p| std::fs::File::create(p).ok());
        let mut ready_after = None;
        let deadline = start + overall;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                qemu.kill();
                return Err(SandboxError::Boot(format!(
                    "no end after {} s; the serial log so far:\n{}",
                    overall.as_secs(),
                    tail(&serial, 60)
                )));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok((at, line)) => {
                    if line.starts_with("SANDBOX: ready") {
                        ready_after = Some((at - start).as_secs_f64());
                    }
                    if let Some(f) = live.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    serial.push_str(&line);
                    serial.push('\n');
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = qemu.0.wait();
        let qemu_err = err_reader.join().unwrap_or_default();
        let guests_out = parse(&serial, guests.len());
        if guests_out.len() != guests.len() {
            return Err(SandboxError::Boot(format!(
                "{} of {} guests reported (QEMU: {}{}); the serial log's end:\n{}",
                guests_out.len(),
                guests.len(),
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                if qemu_err.trim().is_empty() {
                    String::new()
                } else {
                    format!(", {}", qemu_err.trim())
                },
                tail(&serial, 80)
            )));
        }
        Ok(Boot {
            guests: guests_out,
            serial,
            ready_after,
            elapsed: start.elapsed(),
        })
    }
}

/// An anonymous memory file that child processes inherit (no close-on-exec).
fn memfd() -> std::io::Result<std::fs::File> {
    // SAFETY: memfd_create with a NUL-terminated name and no flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"compose-xen-initrd".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn script(body: &str) -> String {
    if body.starts_with("#!") {
        body.to_string()
    } else {
        format!("#!/bin/sh\n{body}")
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills QEMU when dropped (a failed test, an early return).
struct Killer(std::process::Child);

impl Killer {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// The outcomes in a serial log.
fn parse(serial: &str, n: usize) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut cur = Outcome {
        console: String::new(),
        reason: Reason::CreateFailed,
        hook: String::new(),
        hook_rc: None,
        xl: String::new(),
        create_to_console: None,
        create_to_end: None,
    };
    let mut in_console = false;
    for line in serial.lines() {
        if let Some(rest) = line.strip_prefix("CONSOLE| ") {
            if in_console {
                cur.console.push_str(rest);
                cur.console.push('\n');
            }
            continue;
        }
        if line == "CONSOLE|" && in_console {
            cur.console.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("HOOK| ").or(line.strip_prefix("HOOK|")) {
            cur.hook.push_str(rest);
            cur.hook.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("XL| ") {
            cur.xl.push_str(rest);
            cur.xl.push('\n');
            continue;
        }
        let Some(m) = line.strip_prefix("SANDBOX: guest ") else {
            continue;
        };
        let rest = m.split_once(' ').map_or("", |(_, r)| r);
        if rest == "console-begin" {
            in_console = true;
        } else if rest == "console-end" {
            in_console = false;
        } else if let Some(rc) = rest.strip_prefix("hook rc=") {
            cur.hook_rc = rc.trim().parse().ok();
        } else if let Some(r) = rest.strip_prefix("result ") {
            let field = |k: &str| {
                r.split(' ')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_string)
            };
            cur.reason = match field("reason").as_deref() {
                Some("0") => Reason::Poweroff,
                Some("3") => Reason::Crash,
                Some("timeout") => Reason::Timeout,
                Some("destroyed") => Reason::Destroyed,
                Some("create-failed") => Reason::CreateFailed,
                Some(o) => Reason::Other(o.to_string()),
                None => Reason::Other("unknown".into()),
            };
            let t = |k: &str| field(k).and_then(|v| v.parse::<f64>().ok());
            if let Some(c) = t("create") {
                cur.create_to_console = t("first").map(|f| f - c);
                cur.create_to_end = t("end").map(|e| e - c);
            }
            // The console ends with the blank line run-guest adds.
            if cur.console.ends_with("\n\n") {
                cur.console.pop();
            }
            out.push(std::mem::replace(
                &mut cur,
                Outcome {
                    console: String::new(),
                    reason: Reason::CreateFailed,
                    hook: String::new(),
                    hook_rc: None,
                    xl: String::new(),
                    create_to_console: None,
                    create_to_end: None,
                },
            ));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// A cpio archive in the "newc" format, the one Linux's initramfs unpacker reads.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let _ = write!(
            self.buf,
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }
    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100000 | perm, data);
    }
    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }

    /// Adds the tree at `root` (directories, files, symlinks), paths relative to it.
    fn tree(&mut self, root: &Path) -> std::io::Result<()> {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let mut entries: Vec<_> =
                std::fs::read_dir(root.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let r = rel.join(e.file_name());
                let name = r.to_string_lossy().to_string();
                let ft = e.file_type()?;
                if ft.is_symlink() {
                    let t = std::fs::read_link(e.path())?;
                    self.symlink(&name, &t.to_string_lossy());
                } else if ft.is_dir() {
                    self.dir(&name);
                    stack.push(r);
                } else {
                    use std::os::unix::fs::PermissionsExt;
                    let perm = e.metadata()?.permissions().mode() & 0o7777;
                    self.file(&name, &std::fs::read(e.path())?, perm);
                }
            }
        }
        Ok(())
    }
}

/// Makes the sandbox in `dir` (the caller holds its lock).
fn make(dir: &Path) -> Result<(), SandboxError> {
    eprintln!(
        "note: preparing the Xen sandbox in {} (once: Debian's Xen {XENVER} and a dom0, fetched with apt-get download)",
        dir.display()
    );
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| prep(dir, e.to_string()))?;
    // The dom0 kernel: what linux-image-amd64 depends on, unsigned.
    let deps = run_ok(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        dir,
    )?;
    let kpkg = String::from_utf8_lossy(&deps)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
                .map(str::to_string)
        })
        .ok_or_else(|| {
            prep(
                dir,
                "apt-cache knows no linux-image-amd64 (run apt-get update with bookworm's sources)",
            )
        })?;
    let kver = kpkg.trim_start_matches("linux-image-").to_string();
    let mut wanted: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    wanted.push(format!("{kpkg}-unsigned"));
    let have: Vec<String> = std::fs::read_dir(&debs)
        .map_err(|e| prep(dir, e.to_string()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|p| !have.iter().any(|h| h.starts_with(&format!("{p}_"))))
        .collect();
    if !missing.is_empty() {
        run_ok(
            Command::new("apt-get")
                .arg("download")
                .args(&missing)
                .current_dir(&debs),
            dir,
        )?;
    }
    let pkgroot = dir.join("pkgroot");
    let _ = std::fs::remove_dir_all(&pkgroot);
    std::fs::create_dir_all(&pkgroot).map_err(|e| prep(dir, e.to_string()))?;
    for p in &wanted {
        let deb = std::fs::read_dir(&debs)
            .map_err(|e| prep(dir, e.to_string()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{p}_")) && n.ends_with(".deb"))
            })
            .max()
            .ok_or_else(|| prep(dir, format!("no .deb for {p}")))?;
        run_ok(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&pkgroot),
            dir,
        )?;
    }
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| prep(dir, e.to_string()))?;

    // The hypervisor, gunzipped (QEMU's multiboot loader takes the ELF32 as it is).
    let xen_gz = pkgroot.join(format!("boot/xen-{XENVER}-amd64.gz"));
    let xen = run_ok(Command::new("gzip").arg("-dc").arg(&xen_gz), dir)?;
    std::fs::write(out.join("xen"), xen).map_err(|e| prep(dir, e.to_string()))?;
    // The dom0 kernel: the ELF inside the bzImage (xz), so that Xen need not inflate it.
    let bz = std::fs::read(pkgroot.join(format!("boot/vmlinuz-{kver}")))
        .map_err(|e| prep(dir, format!("the kernel: {e}")))?;
    let at = bz
        .windows(6)
        .position(|w| w == b"\xfd7zXZ\x00")
        .ok_or_else(|| prep(dir, "no xz payload in the kernel"))?;
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| prep(dir, format!("xz: {e}")))?;
    let mut xin = xz.stdin.take().expect("piped");
    let payload = bz[at..].to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = xin.write_all(&payload);
    });
    let mut vmlinux = Vec::new();
    xz.stdout
        .take()
        .expect("piped")
        .read_to_end(&mut vmlinux)
        .map_err(|e| prep(dir, format!("xz: {e}")))?;
    let _ = feeder.join();
    let _ = xz.wait();
    if !vmlinux.starts_with(b"\x7fELF") {
        return Err(prep(dir, "the kernel's payload is not an ELF"));
    }
    std::fs::write(out.join("vmlinux"), vmlinux).map_err(|e| prep(dir, e.to_string()))?;

    let stage = dir.join("stage");
    stage_dom0(dir, &pkgroot, &stage, &kver)?;
    let mut cpio = Cpio::default();
    cpio.tree(&stage)
        .map_err(|e| prep(dir, format!("cannot archive dom0: {e}")))?;
    std::fs::write(out.join("dom0.cpio"), cpio.finish()).map_err(|e| prep(dir, e.to_string()))?;
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::write(out.join(".done"), LAYOUT).map_err(|e| prep(dir, e.to_string()))?;
    Ok(())
}

/// Assembles dom0's root file system in `stage`.
fn stage_dom0(dir: &Path, pkgroot: &Path, stage: &Path, kver: &str) -> Result<(), SandboxError> {
    let io = |e: std::io::Error| prep(dir, e.to_string());
    let _ = std::fs::remove_dir_all(stage);
    for d in [
        "bin",
        "sbin",
        "etc/xen",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "var/log/xen/console",
        "var/lib/xen",
        "var/lib/xenstored",
        "usr/bin",
        "usr/sbin",
        "lib64",
        "lib/x86_64-linux-gnu",
        "job",
    ] {
        std::fs::create_dir_all(stage.join(d)).map_err(io)?;
    }
    std::os::unix::fs::symlink("../run", stage.join("var/run")).map_err(io)?;
    let bb = pkgroot.join("bin/busybox");
    std::fs::copy(&bb, stage.join("bin/busybox")).map_err(io)?;
    let list = run_ok(Command::new(&bb).arg("--list-full"), dir)?;
    for app in String::from_utf8_lossy(&list).lines() {
        let p = stage.join(app);
        if !p.exists() && p.symlink_metadata().is_err() {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::os::unix::fs::symlink("/bin/busybox", &p).map_err(io)?;
        }
    }
    // A dynamic program and its libraries (the Xen ones from the packages, the rest from
    // the host).
    let copy_elf = |from: &Path, to: &str| -> Result<(), SandboxError> {
        let dest = stage.join(to.trim_start_matches('/'));
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).map_err(io)?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(from, &dest).map_err(|e| prep(dir, format!("{}: {e}", from.display())))?;
        let libs = run_ok(
            Command::new("ldd")
                .arg(from)
                .env("LD_LIBRARY_PATH", pkgroot.join("usr/lib/x86_64-linux-gnu")),
            dir,
        )?;
        for line in String::from_utf8_lossy(&libs).lines() {
            let lib = match line.split_once("=> ") {
                Some((_, r)) => r.split(' ').next().unwrap_or(""),
                None => line.trim().split(' ').next().unwrap_or(""),
            };
            if !lib.starts_with('/') {
                continue;
            }
            let lib = Path::new(lib);
            let target = lib
                .strip_prefix(pkgroot)
                .map_or_else(|_| lib.to_path_buf(), |r| Path::new("/").join(r));
            let d = stage.join(target.strip_prefix("/").unwrap_or(&target));
            if !d.exists() {
                if let Some(p) = d.parent() {
                    std::fs::create_dir_all(p).map_err(io)?;
                }
                std::fs::copy(lib, &d).map_err(|e| prep(dir, format!("{}: {e}", lib.display())))?;
            }
        }
        Ok(())
    };
    for b in XEN_BINS {
        let path = format!("/usr/lib/xen-{XENVER}/bin/{b}");
        copy_elf(&pkgroot.join(path.trim_start_matches('/')), &path)?;
        let link = stage.join("usr/bin").join(b);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, link).map_err(io)?;
    }
    copy_elf(&pkgroot.join("usr/bin/xenstore"), "/usr/bin/xenstore")?;
    for n in [
        "read", "write", "rm", "list", "ls", "exists", "chmod", "watch",
    ] {
        let link = stage.join(format!("usr/bin/xenstore-{n}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("xenstore", link).map_err(io)?;
    }
    // bash and flock for the hotplug scripts; libgcc_s, which glibc loads for threads.
    copy_elf(Path::new("/bin/bash"), "/bin/bash")?;
    copy_elf(Path::new("/usr/bin/flock"), "/usr/bin/flock")?;
    for client in HOST_CLIENTS {
        if Path::new(client).is_file() {
            copy_elf(Path::new(client), client)?;
        }
    }
    let gcc = Path::new("/lib/x86_64-linux-gnu/libgcc_s.so.1");
    if gcc.exists() {
        std::fs::copy(gcc, stage.join("lib/x86_64-linux-gnu/libgcc_s.so.1")).map_err(io)?;
    }
    copy_tree(
        &pkgroot.join("etc/xen/scripts"),
        &stage.join("etc/xen/scripts"),
    )
    .map_err(io)?;
    std::fs::write(
        stage.join("etc/xen/xl.conf"),
        "# xl runs the hotplug scripts itself (no udev in this dom0)\nrun_hotplug_scripts=1\nautoballoon=\"off\"\nlockfile=\"/var/run/xen/xl.lock\"\n",
    )
    .map_err(io)?;
    // Kernel modules with their dependencies.
    let msrc = pkgroot.join(format!("lib/modules/{kver}"));
    if !msrc.join("modules.dep").exists() {
        run_ok(
            Command::new(&bb)
                .arg("depmod")
                .arg("-b")
                .arg(pkgroot)
                .arg(kver),
            dir,
        )?;
    }
    let dep = std::fs::read_to_string(msrc.join("modules.dep")).map_err(io)?;
    let mdest = stage.join(format!("lib/modules/{kver}"));
    for m in MODULES {
        let line = dep
            .lines()
            .find(|l| {
                let f = l.split(':').next().unwrap_or("");
                let base = f.rsplit('/').next().unwrap_or("");
                base == format!("{m}.ko") || base == format!("{m}.ko.xz")
            })
            .ok_or_else(|| prep(dir, format!("no kernel module {m}")))?;
        for k in line.replace(':', " ").split_whitespace() {
            let d = mdest.join(k);
            if let Some(p) = d.parent() {
                std::fs::create_dir_all(p).map_err(io)?;
            }
            std::fs::copy(msrc.join(k), d).map_err(io)?;
        }
    }
    for f in std::fs::read_dir(&msrc).map_err(io)? {
        let f = f.map_err(io)?;
        let n = f.file_name().to_string_lossy().to_string();
        if n.starts_with("modules.builtin") || n == "modules.order" {
            std::fs::copy(f.path(), mdest.join(&n)).map_err(io)?;
        }
    }
    run_ok(
        Command::new(&bb)
            .arg("depmod")
            .arg("-b")
            .arg(stage)
            .arg(kver),
        dir,
    )?;
    std::fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").map_err(io)?;
    std::fs::write(stage.join("etc/group"), "root:x:0:\n").map_err(io)?;
    write_exec(&stage.join("init"), INIT).map_err(io)?;
    write_exec(&stage.join("usr/bin/run-guest"), RUN_GUEST).map_err(io)?;
    Ok(())
}

fn write_exec(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let ft = e.file_type()?;
        let d = to.join(e.file_name());
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, d)?;
        } else if ft.is_dir() {
            copy_tree(&e.path(), &d)?;
        } else {
            std::fs::copy(e.path(), d)?;
        }
    }
    Ok(())
}

/// `compose run` for a xen image: `xl create -c` where `xl` exists, else one boot of the
/// sandbox. Returns the unikernel's exit status.
pub fn run(
    built: &crate::ops::Launch,
    manifest: &crate::manifest::Manifest,
    mapping: crate::manifest::Mapping,
    secrets: Option<Vec<u8>>,
    boot_args: &[String],
    verbose: bool,
) -> Result<i32, crate::error::Error> {
    let err = |why: String| crate::error::Error::from(crate::error::LaunchError::Xen(why));
    if on_path("xl") && std::env::var_os("COMPOSE_XEN_SANDBOX_ONLY").is_none() {
        return run_xl(built, manifest, mapping, secrets, boot_args, verbose);
    }
    let dir = Sandbox::default_dir().ok_or_else(|| {
        err("no place for the Xen sandbox: set $COMPOSE_XEN_SANDBOX or $HOME".into())
    })?;
    eprintln!(
        "note: no `xl` on this machine: running {} in the local Xen sandbox (Xen {XENVER} under QEMU's emulator, in {}; it needs {NEEDS})",
        built.name,
        dir.display()
    );
    let sandbox = Sandbox::prepare(&dir).map_err(|e| err(e.to_string()))?;
    // The .xl as deploy writes it, with the sandbox's bridges and the files in dom0.
    let mut m = mapping.clone();
    let mut files = Vec::new();
    for (name, from, to) in sandbox_bridges(manifest, &mut m) {
        eprintln!(
            "note: network interface {name}: the sandbox has no bridge {from:?}: attached to its {to}"
        );
    }
    for (name, path) in m.block.iter_mut() {
        let data = std::fs::read(&*path).map_err(|e| {
            err(format!(
                "block device {name}: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let f = format!("block-{name}.img");
        *path = PathBuf::from(format!("/job/g1/{f}"));
        files.push((f, data));
    }
    if let Some(s) = secrets {
        m.secrets_image = Some(PathBuf::from("/job/g1/secrets.img"));
        files.push(("secrets.img".into(), s));
    }
    let xl = crate::manifest::xen_xl(manifest, &m, &built.image, boot_args)?;
    let guest = Guest {
        image: built.image.clone(),
        xl: xl
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        files,
        ..Guest::default()
    };
    let boot = sandbox
        .boot(&[guest], Duration::from_secs(900))
        .map_err(|e| err(e.to_string()))?;
    if verbose {
        eprint!("{}", boot.serial);
    }
    let g = &boot.guests[0];
    print!("{}", strip_exit_line(&g.console));
    let _ = std::io::stdout().flush();
    outcome_status(&built.name, g.exit_status(), &g.reason, &g.xl)
}

/// Puts every network interface of `mapping` on one of the sandbox's [`BRIDGES`]: a
/// `--net NAME=xenbrN` naming one is kept; any other is replaced by the bridge of the
/// interface's position (the first interface `xenbr0`, the second `xenbr1`, later ones
/// the last bridge). Returns the replacements: (interface, given, bridge).
pub fn sandbox_bridges(
    manifest: &crate::manifest::Manifest,
    mapping: &mut crate::manifest::Mapping,
) -> Vec<(String, String, &'static str)> {
    let mut changed = Vec::new();
    let nets = manifest
        .devices
        .iter()
        .filter(|d| matches!(d.kind, crate::manifest::DeviceKind::Net { .. }));
    for (i, d) in nets.enumerate() {
        let Some(v) = mapping.net.get_mut(&d.name) else {
            continue;
        };
        if BRIDGES.contains(&v.as_str()) {
            continue;
        }
        let to = BRIDGES[i.min(BRIDGES.len() - 1)];
        changed.push((d.name.clone(), std::mem::replace(v, to.to_string()), to));
    }
    changed
}

/// The console without the runtime's `compose: exit status N` line.
fn strip_exit_line(console: &str) -> String {
    let mut s = String::new();
    for l in console.lines() {
        if !l.starts_with(EXIT_LINE) {
            s.push_str(l);
            s.push('\n');
        }
    }
    s
}

/// The status `compose run` exits with: the guest's own, or a message and a failure.
fn outcome_status(
    name: &str,
    status: Option<u8>,
    reason: &Reason,
    xl: &str,
) -> Result<i32, crate::error::Error> {
    let err = |why: String| crate::error::Error::from(crate::error::LaunchError::Xen(why));
    match (reason, status) {
        (Reason::Poweroff, Some(s)) => Ok(i32::from(s)),
        (Reason::Crash, s) => {
            eprintln!("{name}: the Xen domain crashed");
            Ok(i32::from(s.unwrap_or(255)))
        }
        (Reason::Poweroff, None) => Err(err(format!(
            "{name} powered off without reporting its exit status"
        ))),
        (Reason::Destroyed, _) => Err(err(format!("{name} was destroyed"))),
        (Reason::Timeout, _) => Err(err(format!("{name} did not end in time; it was destroyed"))),
        (Reason::CreateFailed, _) => Err(err(format!("xl create failed:\n{}", xl.trim_end()))),
        (Reason::Other(code), _) => Err(err(format!(
            "{name} shut down with Xen's reason code {code}"
        ))),
    }
}

/// `xl create -c` on a real Xen host: the .xl in a temporary file (the secrets image,
/// if any, in a memory file named by /proc/self/fd), the console on the terminal, the
/// status from the console's last line.
fn run_xl(
    built: &crate::ops::Launch,
    manifest: &crate::manifest::Manifest,
    mut mapping: crate::manifest::Mapping,
    secrets: Option<Vec<u8>>,
    boot_args: &[String],
    verbose: bool,
) -> Result<i32, crate::error::Error> {
    let err = |why: String| crate::error::Error::from(crate::error::LaunchError::Xen(why));
    let mut secrets_file = None;
    if let Some(s) = secrets {
        let mut f = tempfile::tempfile().map_err(|e| err(e.to_string()))?;
        f.write_all(&s).map_err(|e| err(e.to_string()))?;
        use std::os::fd::AsRawFd;
        mapping.secrets_image = Some(PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            f.as_raw_fd()
        )));
        secrets_file = Some(f);
    }
    let mut xl = crate::manifest::xen_xl(manifest, &mapping, &built.image, boot_args)?;
    xl.push_str("on_poweroff = \"destroy\"\non_crash = \"destroy\"\n");
    let mut cfg = tempfile::Builder::new()
        .prefix("compose-")
        .suffix(".xl")
        .tempfile()
        .map_err(|e| err(e.to_string()))?;
    cfg.write_all(xl.as_bytes())
        .map_err(|e| err(e.to_string()))?;
    if verbose {
        eprintln!("xl create -c {}:\n{xl}", cfg.path().display());
    }
    let mut child = Command::new("xl")
        .arg("create")
        .arg("-c")
        .arg(cfg.path())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run xl: {e}")))?;
    let mut status = None;
    let reader = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        if let Some(s) = line.strip_prefix(EXIT_LINE) {
            status = s.trim().parse::<u8>().ok();
        } else {
            println!("{line}");
        }
    }
    let rc = child.wait().map_err(|e| err(e.to_string()))?;
    drop(secrets_file);
    if !rc.success() && status.is_none() {
        return Err(err(format!("xl create failed ({rc})")));
    }
    let reason = if status == Some(255) {
        Reason::Crash
    } else {
        Reason::Poweroff
    };
    outcome_status(&built.name, status, &reason, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_log_is_read_into_outcomes() {
        let serial = "\
(XEN) HVM: SVM enabled
SANDBOX: ready uptime=3.1
SANDBOX: guest 1 running domid=1
SANDBOX: guest 1 console-begin
CONSOLE| Hello, world! (1/1)
CONSOLE| compose: exit status 3
CONSOLE|
SANDBOX: guest 1 console-end
HOOK| pong
SANDBOX: guest 1 hook rc=0
SANDBOX: guest 1 result reason=0 create=4.00 first=5.25 end=6.50
SANDBOX: guest 2 console-begin
SANDBOX: guest 2 console-end
XL| libxl: error
SANDBOX: guest 2 result reason=create-failed create=7 first=none end=8
";
        let o = parse(serial, 2);
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0].console,
            "Hello, world! (1/1)\ncompose: exit status 3\n"
        );
        assert_eq!(o[0].exit_status(), Some(3));
        assert_eq!(o[0].reason, Reason::Poweroff);
        assert_eq!(o[0].hook, "pong\n");
        assert_eq!(o[0].hook_rc, Some(0));
        assert_eq!(o[0].create_to_console, Some(1.25));
        assert_eq!(o[1].reason, Reason::CreateFailed);
        assert_eq!(o[1].xl, "libxl: error\n");
        assert_eq!(o[1].exit_status(), None);
    }

    #[test]
    fn interfaces_go_on_the_sandbox_bridges() {
        use crate::manifest::{Device, DeviceKind, Manifest, Mapping};
        let dev = |name: &str, kind| Device {
            name: name.into(),
            kind,
        };
        let manifest = Manifest {
            schema: String::new(),
            name: "site".into(),
            target: "xen".into(),
            memory: 64 << 20,
            image: "site.xen".into(),
            bootargs: Vec::new(),
            devices: vec![
                dev("service", DeviceKind::Net { mac: None }),
                dev(
                    "public",
                    DeviceKind::Block {
                        size: None,
                        sector_size: None,
                        writable: false,
                    },
                ),
                dev("management", DeviceKind::Net { mac: None }),
                dev("third", DeviceKind::Net { mac: None }),
            ],
            files: Default::default(),
        };
        let mut m = Mapping::default();
        for (n, v) in [
            ("service", "tap0"),
            ("management", "tap1"),
            ("third", "xenbr0"),
        ] {
            m.net.insert(n.into(), v.into());
        }
        let changed = sandbox_bridges(&manifest, &mut m);
        assert_eq!(m.net["service"], "xenbr0");
        assert_eq!(m.net["management"], "xenbr1");
        assert_eq!(m.net["third"], "xenbr0");
        assert_eq!(
            changed,
            vec![
                ("service".to_string(), "tap0".to_string(), "xenbr0"),
                ("management".to_string(), "tap1".to_string(), "xenbr1"),
            ]
        );
        // Given on the sandbox's bridges, swapped: kept as given.
        m.net.insert("service".into(), "xenbr1".into());
        m.net.insert("management".into(), "xenbr0".into());
        assert!(sandbox_bridges(&manifest, &mut m).is_empty());
        assert_eq!(m.net["service"], "xenbr1");
    }

    #[test]
    fn cpio_entries_are_newc() {
        let mut c = Cpio::default();
        c.file("a", b"xyz", 0o644);
        let b = c.finish();
        assert!(b.starts_with(b"070701"));
        assert_eq!(&b[110..112], b"a\0");
        assert_eq!(&b[112..115], b"xyz");
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(b.len() % 512, 0);
    }
}
