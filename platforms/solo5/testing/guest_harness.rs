//! The end-to-end guest test that the hvt and spt targets share: each target's
//! `tests/guest.rs` includes this file as a module (`#[path = ...] mod harness;`), says what
//! differs in a [`Target`], and keeps its own `main` and target-only runs.
//!
//! The images `hello_glue` and `echo_glue` are the glue compose generates for
//! `specs/hello.kdl` and `specs/echo.kdl` (each target's Cargo.toml points them at the
//! snapshots under `tests/snapshots/glue/`); `devices_guest` (and spt's `sandbox_guest`)
//! are test guests written by hand.
//!
//! 1. [`build_examples`]: `cargo build --examples --features examples --target
//!    x86_64-unknown-none --release` with the flags a unikernel needs ([`rustflags`]), in
//!    a target directory of its own.
//! 2. [`elf_layout`]: the images' ELF header, program headers and Solo5 notes are checked
//!    (what `readelf -lnW` shows, against shared/reference/solo5-abi.md §1).
//! 3. The images run on the tender: [`hello_greets`], [`hello_help_and_bad_arguments`],
//!    [`devices`], [`devices_failures`] and, in a network namespace of its own, [`echo`]
//!    (whose client is this test binary again, see [`echo_client`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What differs between the targets, as far as the shared runs go.
pub struct Target {
    /// `hvt` or `spt`: names the package (`compose-NAME-guest`), its linker script
    /// (`compose-NAME.ld`), and this test's directories, files and namespaces.
    pub name: &'static str,
    /// The target in the images' ABI1 note (`solo5_abi::AbiTarget`: 1 hvt, 2 spt).
    pub abi_target: u32,
    /// The variable that, set to an address, makes this test binary the echo client.
    pub client_env: &'static str,
    /// Applied to every command this test runs (the tender, the echo client).
    pub prepare: fn(&mut Command),
    /// Checks the run of `devices_guest --fault` (a read of unmapped address 8).
    pub check_fault: fn(&Output),
}

#[derive(Default)]
pub struct Results {
    pub passed: u32,
    pub failed: u32,
}

impl Results {
    pub fn run(&mut self, name: &str, test: impl FnOnce() + std::panic::UnwindSafe) {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Prints the summary and exits: 0 if every run passed.
    pub fn exit(self) -> ! {
        println!("guest: {} passed, {} failed", self.passed, self.failed);
        std::process::exit(if self.failed == 0 { 0 } else { 1 });
    }
}

/// Where the built examples are.
pub struct Images {
    dir: PathBuf,
}

impl Images {
    pub fn get(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// What every crate of a unikernel is compiled with (besides `--target
/// x86_64-unknown-none`): the glue's `.cargo/config.toml` carries the same.
pub fn rustflags(target: &Target) -> Vec<String> {
    vec![
        "-Crelocation-model=static".into(),
        format!("-Clink-arg=-Tcompose-{}.ld", target.name),
        "-Clink-arg=-zmax-page-size=0x1000".into(),
        "-Clink-arg=-znorelro".into(),
        "-Clink-arg=--no-pie".into(),
    ]
}

/// The workspace's root (this test's package is `platforms/NAME`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the example glue for the guest, in a target directory of its own (the outer
/// cargo holds the lock on the workspace's).
pub fn build_examples(target: &Target) -> Images {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-guest", target.name));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--release", "-p"])
        .arg(format!("compose-{}-guest", target.name))
        .args(["--features", "examples", "--examples"])
        .args(["--target", "x86_64-unknown-none"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(target).join("\x1f"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the guest examples failed");
    Images {
        dir: target_dir.join("x86_64-unknown-none/release/examples"),
    }
}

// ---------------------------------------------------------------------------------------
// ELF checks
// ---------------------------------------------------------------------------------------

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: usize,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

fn program_headers(elf: &[u8]) -> Vec<Phdr> {
    let phoff = u64_at(elf, 32) as usize;
    let phentsize = u16_at(elf, 54) as usize;
    let phnum = u16_at(elf, 56) as usize;
    (0..phnum)
        .map(|i| {
            let p = &elf[phoff + i * phentsize..];
            Phdr {
                kind: u32_at(p, 0),
                flags: u32_at(p, 4),
                offset: u64_at(p, 8) as usize,
                vaddr: u64_at(p, 16),
                filesz: u64_at(p, 32),
                memsz: u64_at(p, 40),
                align: u64_at(p, 48),
            }
        })
        .collect()
}

/// Checks one image the way the target's tender loads it; returns the manifest's entry
/// count.
fn check_elf(target: &Target, path: &Path) -> u32 {
    let elf = std::fs::read(path).unwrap();
    let name = path.display();
    assert_eq!(&elf[..4], b"\x7fELF", "{name}: not ELF");
    assert_eq!(elf[4], 2, "{name}: not ELF64");
    assert_eq!(elf[5], 1, "{name}: not little-endian");
    assert_eq!(u16_at(&elf, 16), 2, "{name}: not ET_EXEC (PIE is rejected)");
    assert_eq!(u16_at(&elf, 18), 62, "{name}: not x86_64");
    assert_eq!(u16_at(&elf, 52), 64);
    assert_eq!(u16_at(&elf, 54), 56);
    let entry = u64_at(&elf, 24);
    assert!(entry >= 0x10_0000, "{name}: entry {entry:#x} below 1 MiB");

    let phdrs = program_headers(&elf);
    let mut prev_end = 0x10_0000u64;
    let mut loads = 0;
    for p in phdrs.iter().filter(|p| p.kind == PT_LOAD && p.filesz != 0) {
        loads += 1;
        assert_eq!(
            p.align, 0x1000,
            "{name}: PT_LOAD at {:#x} is not 4 KiB-aligned",
            p.vaddr
        );
        let start = p.vaddr & !0xfff;
        assert!(
            start >= prev_end,
            "{name}: PT_LOAD at {:#x} overlaps or is out of order",
            p.vaddr
        );
        assert!(p.memsz >= p.filesz);
        assert!(
            p.flags & (PF_W | PF_X) != PF_W | PF_X,
            "{name}: PT_LOAD at {:#x} is W+X",
            p.vaddr
        );
        prev_end = (p.vaddr + p.memsz).next_multiple_of(0x1000);
    }
    assert!(loads >= 2, "{name}: {loads} loadable segments");
    assert!(
        phdrs.iter().any(|p| p.kind == PT_LOAD
            && p.flags & PF_X != 0
            && (p.vaddr..p.vaddr + p.memsz).contains(&entry)),
        "{name}: the entry point is not in an executable segment"
    );

    // Each Solo5 note must be the first note of its own PT_NOTE.
    let (mut abi, mut mft) = (None, None);
    for p in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
        assert!(
            p.filesz >= 20,
            "{name}: a PT_NOTE of {} bytes is rejected",
            p.filesz
        );
        let n = &elf[p.offset..p.offset + p.filesz as usize];
        if u32_at(n, 0) != 6 || &n[12..18] != b"Solo5\0" {
            continue;
        }
        let (descsz, kind) = (u32_at(n, 4) as usize, u32_at(n, 8));
        assert!(
            p.filesz as usize >= 20 + descsz,
            "{name}: note longer than its PT_NOTE"
        );
        match kind {
            0x3149_4241 => abi = Some((descsz, u32_at(n, 20), u32_at(n, 24))),
            0x3154_464d => mft = Some((descsz, u32_at(n, 24), u32_at(n, 28))),
            other => panic!("{name}: unexpected Solo5 note type {other:#x}"),
        }
    }
    assert_eq!(
        abi,
        Some((16, target.abi_target, 2)),
        "{name}: ABI1 note (descsz, target {}, version 2)",
        target.name
    );
    let (descsz, version, entries) =
        mft.unwrap_or_else(|| panic!("{name}: no MFT1 note in its own PT_NOTE"));
    assert_eq!(version, 1, "{name}: manifest version");
    assert_eq!(
        descsz,
        4 + 8 + 104 * entries as usize,
        "{name}: manifest descsz"
    );
    entries
}

pub fn elf_layout(target: &Target, images: &Images) {
    assert_eq!(check_elf(target, &images.get("hello_glue")), 1);
    assert_eq!(check_elf(target, &images.get("echo_glue")), 2);
    assert_eq!(check_elf(target, &images.get("devices_guest")), 2);
}

// ---------------------------------------------------------------------------------------
// Running on the tender
// ---------------------------------------------------------------------------------------

/// A tender binary of `target`.
pub struct Tender {
    pub path: PathBuf,
    pub target: &'static Target,
}

impl Tender {
    /// `TENDER OPTS IMAGE ARGS`, prepared as the target wants.
    pub fn cmd(&self, opts: &[&str], image: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(opts).arg(image).args(args);
        (self.target.prepare)(&mut cmd);
        cmd
    }

    /// Runs `TENDER OPTS IMAGE ARGS` to completion, within 30 s.
    pub fn run(&self, opts: &[&str], image: &Path, args: &[&str]) -> Output {
        run(self.cmd(opts, image, args), Duration::from_secs(30))
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn hello_greets(t: &Tender, images: &Images) {
    let hello = images.get("hello_glue");
    let started = Instant::now();
    let out = t.run(&["--mem=32"], &hello, &["--name=Ada", "--times=3"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Hello, Ada! (1/3)\nHello, Ada! (2/3)\nHello, Ada! (3/3)\n"),
        "stdout: {stdout}"
    );
    // Two 100 ms sleeps between the greetings.
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Defaults, and Solo5's own leading log-level argument.
    let out = t.run(&["--mem=32"], &hello, &["--solo5:quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Hello, world! (3/3)\n"),
        "{}",
        text(&out.stdout)
    );
    // 2 MiB of guest memory (hvt's smallest) is enough.
    let out = t.run(&["--mem=2"], &hello, &["--times=1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

pub fn hello_help_and_bad_arguments(t: &Tender, images: &Images) {
    let hello = images.get("hello_glue");
    let out = t.run(&["--mem=32"], &hello, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("--name=<string>"),
        "{}",
        text(&out.stdout)
    );
    for (args, why) in [
        (&["--nme=x"][..], "unknown boot argument --nme"),
        (&["--times=many"][..], "boot argument --times=\"many\""),
        (&["positional"][..], "unexpected boot argument"),
    ] {
        let out = t.run(&["--mem=32"], &hello, args);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stdout}");
        assert!(stdout.contains(why), "{args:?}: {stdout}");
    }
}

/// A disk image, removed on drop.
pub struct Disk(pub PathBuf);

impl Disk {
    pub fn new(target: &Target, tag: &str, len: u64) -> Disk {
        let path = std::env::temp_dir().join(format!(
            "compose-{}-guest-{}-{tag}.img",
            target.name,
            std::process::id()
        ));
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        Disk(path)
    }
    pub fn flag(&self) -> String {
        format!("--block:storage={}", self.0.display())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn devices(t: &Tender, images: &Images) {
    let disk = Disk::new(t.target, "devices", 64 * 1024);
    let flag = disk.flag();
    let out = t.run(&["--mem=32", &flag], &images.get("devices_guest"), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    for check in [
        "wall clock: ok",
        "sleep: ok",
        "random: ok",
        "block write and read back: ok",
        "block past the end: ok",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }
    assert!(
        stdout.contains("storage: 128 sectors of 512 bytes"),
        "{stdout}"
    );
    // Timers are polled against the executor turn's one reading, and the park reads the
    // clock once before and once after it blocks: a wake-up of a sleep under a timeout
    // costs at most four reads (two of them the sleeps' own starts), not eight.
    let per_wake: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("clock reads per timer wake: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no clock read count: {stdout}"));
    assert!(per_wake <= 4.0, "{per_wake} clock reads per wake: {stdout}");
    // The two sectors really are on the disk.
    let bytes = std::fs::read(&disk.0).unwrap();
    let want: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(&bytes[64 * 1024 - 1024..], &want[..]);
}

/// A panic exits 255; a CPU fault is as [`Target::check_fault`] says; a block device
/// whose sector size the guest does not take fails to start (exit 1).
pub fn devices_failures(t: &Tender, images: &Images) {
    let disk = Disk::new(t.target, "failures", 64 * 1024);
    let flag = disk.flag();
    let image = images.get("devices_guest");
    let out = t.run(&["--mem=32", &flag], &image, &["--panic"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(255), "{stdout}");
    assert!(
        stdout.contains("panicked at") && stdout.contains("asked to panic"),
        "{stdout}"
    );

    let out = t.run(&["--mem=32", &flag], &image, &["--fault"]);
    (t.target.check_fault)(&out);

    let out = t.run(
        &["--mem=32", &flag, "--block-sector-size:storage=4096"],
        &image,
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("device 'storage' failed to start") && stdout.contains("4096"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------
// Echo over a tap in a network namespace
// ---------------------------------------------------------------------------------------

/// How the namespace's side of the tap is set up.
#[derive(Clone, Copy, Debug)]
pub enum Net {
    /// `lo` up; the tap is 10.77.0.1/24; the guest is 10.77.0.2 (`echo_glue --ipv4=...`).
    Private,
    /// `lo` down; the tap is 127.0.0.2/8 with `route_localnet`, so that 127.0.0.1 (the
    /// address in `specs/echo.kdl`, `echo_glue`) is reached through the tap.
    Loopback,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            text(&out.stderr).trim()
        ))
    }
}

/// A network namespace with a tap `tap0` that is up; deleted (with the tap) on drop.
struct Netns(String);

impl Netns {
    fn new(target: &Target, net: Net) -> Result<Netns, String> {
        let name = format!("compose-{}-{}-{net:?}", target.name, std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        match net {
            Net::Private => {
                ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
                ip(&["-n", &ns.0, "addr", "add", "10.77.0.1/24", "dev", "tap0"])?;
            }
            Net::Loopback => {
                ip(&[
                    "-n",
                    &ns.0,
                    "addr",
                    "add",
                    "127.0.0.2/8",
                    "scope",
                    "global",
                    "dev",
                    "tap0",
                ])?;
                let out = ns
                    .exec(Path::new("sysctl"))
                    .args(["-q", "-w", "net.ipv4.conf.all.route_localnet=1"])
                    .args(["net.ipv4.conf.tap0.route_localnet=1"])
                    .output()
                    .map_err(|e| format!("sysctl: {e}"))?;
                if !out.status.success() {
                    return Err(format!("sysctl: {}", text(&out.stderr)));
                }
            }
        }
        ip(&["-n", &ns.0, "link", "set", "tap0", "up"])?;
        Ok(ns)
    }

    fn exec(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Whether a network namespace with a tap can be made here (root, `ip`).
pub fn netns_or_why(target: &Target) -> Result<(), String> {
    drop(Netns::new(target, Net::Private)?);
    Ok(())
}

/// The tender, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU time of `pid` and of its children: the tender and, on spt, the guest process
/// under it.
fn tree_cpu_ticks(pid: u32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    cpu_ticks(pid)
        + children
            .split_whitespace()
            .map(|c| cpu_ticks(c.parse().unwrap()))
            .sum::<u64>()
}

/// Echo on a tap in a namespace of its own: it serves [`echo_client`] and does not spin
/// while idle.
pub fn echo(t: &Tender, images: &Images, net: Net) {
    let (image, args, guest, port) = match net {
        Net::Private => (
            "echo_glue",
            &["--port=7", "--ipv4=10.77.0.2/24"][..],
            "10.77.0.2:7",
            7,
        ),
        Net::Loopback => ("echo_glue", &[][..], "127.0.0.1:7777", 7777),
    };
    let ns = Netns::new(t.target, net).unwrap();
    let mut cmd = ns.exec(&t.path);
    cmd.args(["--mem=64", "--net:service=tap0"])
        .arg(images.get(image))
        .args(args);
    (t.target.prepare)(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let pid = running.0.id();

    // Wait for the listening line.
    let stdout = running.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| {
            let _ = running.0.kill();
            let mut err = String::new();
            let _ = running.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("echo did not start; stderr: {err}")
        });
    assert_eq!(line, format!("echo: listening on port {port}"));

    // Idle, the unikernel blocks in the tender: it must not burn a CPU.
    let before = tree_cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = tree_cpu_ticks(pid) - before;
    assert!(
        used <= 20,
        "the idle unikernel used {used} ticks of CPU in 2 s"
    );

    // Clients, from inside the namespace: this test binary in client mode.
    let me = std::env::current_exe().unwrap();
    let mut client = ns.exec(&me);
    client.env(t.target.client_env, guest);
    (t.target.prepare)(&mut client);
    let out = run(client, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "client failed\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("echo client: 8 connections ok"),
        "{}",
        text(&out.stdout)
    );

    // Still serving afterwards, and still idle.
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "the unikernel exited"
    );
    let before = tree_cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = tree_cpu_ticks(pid) - before;
    assert!(
        used <= 10,
        "the idle unikernel used {used} ticks of CPU in 1 s after serving"
    );
}

/// If this test binary was run as the echo client (by [`echo`], with
/// [`Target::client_env`] set to the guest's address), be it and exit.
pub fn be_echo_client_if_asked(target: &Target) {
    if let Ok(addr) = std::env::var(target.client_env) {
        echo_client(addr.parse().expect("client address"));
    }
}

/// The echo client: 8 connections at once, each sending 64 KiB in pieces and reading it
/// all back, then closing. (Small: under a nested or emulated KVM the guest may run a
/// thousand times slower than on hardware.) Exits 0 if all 8 went well.
fn echo_client(addr: SocketAddr) -> ! {
    let threads: Vec<_> = (0..8u8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut s =
                    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.set_nodelay(true).unwrap();
                let data: Vec<u8> = (0..64 * 1024u32)
                    .map(|i| (i as u8).wrapping_mul(13).wrapping_add(n))
                    .collect();
                for chunk in data.chunks(8 * 1024) {
                    s.write_all(chunk).expect("write");
                    let mut back = vec![0u8; chunk.len()];
                    s.read_exact(&mut back).expect("read back");
                    assert_eq!(back, chunk, "connection {n}: echoed bytes differ");
                }
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).expect("read to end");
                assert!(
                    rest.is_empty(),
                    "connection {n}: {} bytes after the end",
                    rest.len()
                );
            })
        })
        .collect();
    let mut ok = 0;
    for t in threads {
        if t.join().is_ok() {
            ok += 1;
        }
    }
    println!("echo client: {ok} connections ok");
    std::process::exit(if ok == 8 { 0 } else { 1 });
}
