//! The rpi4 target end to end, through the `compose` binary and QEMU's `raspi4b` machine
//! (`qemu-system-aarch64`, from Debian's qemu-system-arm): hello prints its greeting on
//! the UART and QEMU exits with the unikernel's status (semihosting); the mailbox answers
//! with the board revision; boot arguments arrive by `-append` (an ATAG list) and by a
//! device tree's `/chosen/bootargs` (as the firmware passes cmdline.txt); sleeps measured
//! by the guest against the generic timer last at least what was asked and not much more,
//! and no less host time passes than the guest measured (the timer's frequency is read at run time, not assumed); a CPU fault
//! prints a report and ends with 255 instead of hanging; `compose check` refuses devices
//! the board cannot offer, naming the target; the SD card image is a valid, reproducible
//! FAT32 card with exactly the boot files (a stand-in firmware made here); the jukebox
//! builds, and under QEMU (no PWM) its jack fails to start with a message.
//!
//! Every QEMU run has a deadline and is killed if it passes it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn have_qemu() -> bool {
    Command::new("qemu-system-aarch64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a run printed, its exit code and how long it took.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` to its end, killing it if it is still running after `deadline`.
fn run(mut cmd: Command, deadline: Duration) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn compose");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    let stdout = t_out.join().unwrap().replace("\r\n", "\n");
    let stderr = t_err.join().unwrap();
    assert!(
        status.is_some(),
        "still running after {deadline:?}, killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    Ran {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
        took,
    }
}

/// `compose run SPEC --target rpi4 -- ARGS`, with a deadline.
fn boot(store: &Path, spec: &Path, args: &[&str]) -> Ran {
    let mut cmd = compose(store);
    cmd.args(["run", "--no-out-link"])
        .arg(spec)
        .args(["--target", "rpi4", "--"])
        .args(args);
    run(cmd, Duration::from_secs(300))
}

fn put(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).is_ok_and(|b| b == bytes) {
        return;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A spec whose application, by boot argument `mode`, sleeps and measures (then returns
/// status 7), draws random bytes, or touches PWM1, which QEMU does not emulate (a
/// synchronous external abort).
fn probe_spec() -> PathBuf {
    let dir = root().join("target/compose-tests/rpi4-fixtures");
    let app = dir.join("probe");
    put(
        &app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\ncompose-devices = {{ path = \"{}devices/base\" }}\n",
            "../".repeat(app.strip_prefix(root()).unwrap().components().count())
        )
        .as_bytes(),
    );
    put(
        &app.join("src/lib.rs"),
        br#"#![no_std]
extern crate alloc;
use alloc::format;
use alloc::string::String;
use core::time::Duration;
use compose_devices::console::Console;
use compose_devices::random::Random;
use compose_devices::time::MonotonicClock;

pub async fn start<C: Console, T: MonotonicClock, R: Random>(
    console: &'static C,
    clock: &'static T,
    random: &'static R,
    mode: String,
) -> u8 {
    match mode.as_str() {
        "sleep" => {
            for ms in [20u64, 150, 400] {
                let t0 = clock.elapsed();
                clock.sleep(Duration::from_millis(ms)).await;
                let took = clock.elapsed() - t0;
                console.log(&format!("probe: sleep {ms} ms took {} us", took.as_micros()));
            }
            let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
            random.fill(&mut a);
            random.fill(&mut b);
            console.log(&format!("probe: random {a:02x?} {b:02x?}"));
            7
        }
        "fault" => {
            console.log("probe: reading PWM1");
            // SAFETY: none: the point is the abort (QEMU has no PWM).
            let v = unsafe { core::ptr::read_volatile(0xFE20_C800usize as *const u32) };
            console.log(&format!("probe: PWM1 CTL {v:#x}"));
            0
        }
        _ => 3,
    }
}
"#,
    );
    let spec = dir.join("probe.kdl");
    put(
        &spec,
        b"unikernel probe {\n    target rpi4\n    memory \"64MiB\"\n}\nbootarg mode default=\"sleep\"\nconsole\nclock\nrandom\napplication probe {\n    crate \"probe\"\n    entry \"probe::start\"\n    use console clock random mode\n}\n",
    );
    spec
}

/// A minimal flattened device tree (version 17): `/` with the cells QEMU reads, and
/// `/chosen` with `bootargs`, as the Pi's firmware passes it.
fn tiny_dtb(bootargs: &str) -> Vec<u8> {
    fn pad(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
    }
    let mut strings: Vec<u8> = Vec::new();
    let mut st: Vec<u8> = Vec::new();
    let node = |st: &mut Vec<u8>, name: &str| {
        st.extend(1u32.to_be_bytes());
        st.extend(name.as_bytes());
        st.push(0);
        pad(st);
    };
    let mut prop = |st: &mut Vec<u8>, name: &str, value: &[u8]| {
        let off = strings.len() as u32;
        strings.extend(name.as_bytes());
        strings.push(0);
        st.extend(3u32.to_be_bytes());
        st.extend((value.len() as u32).to_be_bytes());
        st.extend(off.to_be_bytes());
        st.extend(value);
        pad(st);
    };
    node(&mut st, "");
    prop(&mut st, "#address-cells", &1u32.to_be_bytes());
    prop(&mut st, "#size-cells", &1u32.to_be_bytes());
    node(&mut st, "chosen");
    prop(&mut st, "bootargs", format!("{bootargs}\0").as_bytes());
    st.extend(2u32.to_be_bytes()); // end of /chosen
    st.extend(2u32.to_be_bytes()); // end of /
    st.extend(9u32.to_be_bytes()); // end
    let (off_rsv, off_st) = (40u32, 56u32);
    let off_str = off_st + st.len() as u32;
    let total = off_str + strings.len() as u32;
    let mut out = Vec::new();
    for w in [
        0xd00d_feed,
        total,
        off_st,
        off_str,
        off_rsv,
        17,
        16,
        0,
        strings.len() as u32,
        st.len() as u32,
    ] {
        out.extend(u32::to_be_bytes(w));
    }
    out.extend([0u8; 16]);
    out.extend(st);
    out.extend(strings);
    out
}

/// `rpi4: slept X us for Y us (...)` lines: (X, Y).
fn slept(out: &str) -> Vec<(u64, u64)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("rpi4: slept ")?;
            let (x, rest) = rest.split_once(" us for ")?;
            let (y, _) = rest.split_once(" us")?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

#[test]
fn hello_greets_on_the_uart_and_exits_with_its_status() {
    if !have_qemu() {
        eprintln!("skipped: no qemu-system-aarch64 (Debian: qemu-system-arm)");
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let hello = root().join("specs/hello.kdl");
    let r = boot(
        store.path(),
        &hello,
        &["--name=Ada", "--times=4", "--rpi4:debug"],
    );
    let ctx = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    for i in 1..=4 {
        assert!(
            r.stdout.contains(&format!("Hello, Ada! ({i}/4)\n")),
            "{ctx}"
        );
    }
    assert!(r.stdout.ends_with("rpi4: exit status 0\n"), "{ctx}");
    // The mailbox answered: QEMU's raspi4b is a 2 GiB Pi 4 B rev 1.5.
    assert!(
        r.stdout
            .contains("rpi4: board revision 0xb03115 (Raspberry Pi 4 Model B)\n"),
        "{ctx}"
    );
    assert!(r.stdout.contains("rpi4: MAC 52:54:00:12:34:57\n"), "{ctx}");
    assert!(r.stdout.contains("UART 3000000 Hz"), "{ctx}");
    // Each of the three 100 ms pauses ended by the timer interrupt, never early.
    let sleeps = slept(&r.stdout);
    assert_eq!(sleeps.len(), 3, "{ctx}");
    for (took, asked) in &sleeps {
        assert!(took >= asked, "woke before the deadline: {ctx}");
        assert!(*asked <= 100_000, "{ctx}");
    }
    assert!(
        r.stdout.contains("(1 timer interrupts)"),
        "no timer interrupt woke the sleep: {ctx}"
    );
    // A boot argument that does not fit (compose run checks them first, so QEMU by hand,
    // as a user would boot the image): the usage status, through semihosting.
    let image = std::fs::read_dir(store.path())
        .unwrap()
        .flatten()
        .map(|e| e.path().join("kernel8.img"))
        .find(|p| p.is_file())
        .expect("the image in the store");
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-M", "raspi4b", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-semihosting", "-kernel"])
        .arg(&image)
        .args(["-append", "--times=many"]);
    let r = run(qemu, Duration::from_secs(120));
    assert_eq!(r.code, Some(64), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("times"), "{}", r.stdout);
    assert!(r.stdout.ends_with("rpi4: exit status 64\n"), "{}", r.stdout);
    // The firmware's way: the command line in a device tree's /chosen/bootargs (x0), after
    // words of its own for Linux, which the unikernel leaves alone.
    let dtb = store.path().join("chosen.dtb");
    std::fs::write(
        &dtb,
        tiny_dtb("coherent_pool=1M 8250.nr_uarts=1 --name=Tree --times=1"),
    )
    .unwrap();
    let mut qemu = Command::new("qemu-system-aarch64");
    qemu.args(["-M", "raspi4b", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-semihosting", "-kernel"])
        .arg(&image)
        .arg("-dtb")
        .arg(&dtb);
    let r = run(qemu, Duration::from_secs(120));
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout, "Hello, Tree! (1/1)\nrpi4: exit status 0\n",
        "{}",
        r.stderr
    );
}

#[test]
fn sleeps_faults_and_randomness_under_qemu() {
    if !have_qemu() {
        eprintln!("skipped: no qemu-system-aarch64 (Debian: qemu-system-arm)");
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let spec = probe_spec();
    let r = boot(store.path(), &spec, &["--mode=sleep"]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(7), "the application's status: {ctx}");
    assert!(r.stdout.ends_with("rpi4: exit status 7\n"), "{ctx}");
    let mut guest_total = Duration::ZERO;
    for ms in [20u64, 150, 400] {
        let line = format!("probe: sleep {ms} ms took ");
        let us: u64 = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.strip_suffix(" us")?.parse().ok())
            .unwrap_or_else(|| panic!("no measure of the {ms} ms sleep: {ctx}"));
        // Never early; late by at most a generous margin for a loaded machine.
        assert!(us >= ms * 1000, "{ms} ms took {us} us: {ctx}");
        assert!(us < ms * 1000 + 500_000, "{ms} ms took {us} us: {ctx}");
        guest_total += Duration::from_micros(us);
    }
    // The guest's clock runs no faster than the host's: with a wrong counter frequency
    // (54 MHz assumed where QEMU's is 62.5 MHz) the guest would see 570 ms pass in 493.
    assert!(
        r.took >= guest_total,
        "the guest measured {guest_total:?} in a run of {:?}: {ctx}",
        r.took
    );
    // No RNG200 under QEMU: the host's seed, said loudly; two draws differ.
    assert!(
        r.stdout.contains(
            "rpi4: no hardware RNG (RNG200 absent): random bytes come from the host's seed"
        ),
        "{ctx}"
    );
    let draws = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("probe: random "))
        .unwrap_or_else(|| panic!("no random bytes: {ctx}"))
        .to_string();
    let (a, b) = draws.split_at(draws.len() / 2);
    assert_ne!(a.trim(), b.trim(), "{ctx}");
    // Another boot gets another seed.
    let again = boot(store.path(), &spec, &["--mode=sleep"]);
    assert!(
        !again.stdout.contains(&draws),
        "the same random bytes twice"
    );

    // A fault: a report on the UART and status 255, not a hang.
    let r = boot(store.path(), &spec, &["--mode=fault"]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(255), "{ctx}");
    assert!(r.stdout.contains("probe: reading PWM1\n"), "{ctx}");
    assert!(!r.stdout.contains("PWM1 CTL"), "{ctx}");
    let report = r
        .stdout
        .lines()
        .find(|l| l.contains(": trap: "))
        .unwrap_or_else(|| panic!("no fault report: {ctx}"));
    assert!(
        report.starts_with("probe-rpi4: trap: data abort (ESR 0x96000010), pc 0x"),
        "{ctx}"
    );
    assert!(report.contains("far 0xfe20c800"), "{ctx}");
    assert!(r.stdout.ends_with("rpi4: exit status 255\n"), "{ctx}");
}

#[test]
fn check_refuses_what_the_board_cannot_offer() {
    let store = tempfile::tempdir().unwrap();
    let mut cmd = compose(store.path());
    cmd.args(["check", "specs/echo.kdl", "--target", "rpi4"]);
    let r = run(cmd, Duration::from_secs(60));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    for device in ["`service` (netif)", "`stack` (ipv4)", "`tcp` (tcp)"] {
        assert!(
            r.stderr
                .contains(&format!("{device} is not supported on target rpi4")),
            "{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("compose::unsupported-target"),
        "{}",
        r.stderr
    );
}

/// A stand-in for the Pi's firmware (the real one is not free software and is never
/// needed by the tests): files of the right names, with bytes made here.
fn fake_firmware(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir).unwrap();
    let files = vec![
        (
            "start4.elf".to_string(),
            (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("fixup4.dat".to_string(), b"fake fixup4.dat\n".repeat(300)),
    ];
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    files
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn the_sd_card_image_is_a_valid_fat32_card_with_exactly_the_boot_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fw_dir = tmp.path().join("firmware");
    let firmware = fake_firmware(&fw_dir);

    // Without firmware: kernel8.img only, and a note that says how to get it.
    let mut cmd = compose(&store);
    cmd.args([
        "build",
        "specs/hello.kdl",
        "--target",
        "rpi4",
        "--no-out-link",
    ])
    .env_remove("COMPOSE_RPI4_FIRMWARE");
    let r = run(cmd, Duration::from_secs(600));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("note: no SD card image: COMPOSE_RPI4_FIRMWARE")
            && r.stderr.contains("apt-get download raspi-firmware"),
        "{}",
        r.stderr
    );
    let bare = PathBuf::from(r.stdout.trim());
    assert!(bare.join("kernel8.img").is_file());
    assert!(!bare.join("hello.sdcard.img").exists());

    // A directory without the firmware: a clear error, and nothing stored.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let entries = || std::fs::read_dir(&store).unwrap().count();
    let before = entries();
    let mut cmd = compose(&store);
    cmd.args([
        "build",
        "specs/hello.kdl",
        "--target",
        "rpi4",
        "--no-out-link",
    ])
    .env("COMPOSE_RPI4_FIRMWARE", &empty);
    let r = run(cmd, Duration::from_secs(600));
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "COMPOSE_RPI4_FIRMWARE={}: no fixup4.dat or start4.elf there",
            empty.display()
        )) && r.stderr.contains("raspi-firmware"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(entries(), before, "a half-made entry");

    // With it: the card, next to the image; --out gets both.
    let out = tmp.path().join("out");
    let mut cmd = compose(&store);
    cmd.args([
        "build",
        "specs/hello.kdl",
        "--target",
        "rpi4",
        "--no-out-link",
    ])
    .arg("--out")
    .arg(&out)
    .env("COMPOSE_RPI4_FIRMWARE", &fw_dir);
    let r = run(cmd, Duration::from_secs(600));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let entry = PathBuf::from(r.stdout.trim());
    let card_path = entry.join("hello.sdcard.img");
    let card = std::fs::read(&card_path).unwrap();
    let kernel = std::fs::read(entry.join("kernel8.img")).unwrap();
    assert_eq!(std::fs::read(out.join("hello.sdcard.img")).unwrap(), card);
    assert_eq!(std::fs::read(out.join("kernel8.img")).unwrap(), kernel);
    // The kernel is the same with or without a card.
    assert_eq!(std::fs::read(bare.join("kernel8.img")).unwrap(), kernel);

    // MBR: one FAT32 (LBA) partition at 1 MiB covering the rest of the image.
    assert_eq!(&card[510..512], &[0x55, 0xaa]);
    let p = &card[446..462];
    assert_eq!(p[4], 0x0c, "partition type");
    let start = u32::from_le_bytes(p[8..12].try_into().unwrap()) as usize;
    let sectors = u32::from_le_bytes(p[12..16].try_into().unwrap()) as usize;
    assert_eq!(start, 2048);
    assert_eq!((start + sectors) * 512, card.len());
    assert!(card[462..510].iter().all(|b| *b == 0), "a single partition");

    if !(tool("fsck.vfat") && tool("mdir")) {
        eprintln!("skipped the FAT checks: no dosfstools/mtools");
        return;
    }
    // The FAT is valid: fsck.vfat finds nothing to say about the partition.
    let part = tmp.path().join("part.img");
    std::fs::write(&part, &card[start * 512..]).unwrap();
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&fsck.stdout).into_owned();
    assert!(fsck.status.success(), "{said}");
    assert_eq!(
        said.lines().count(),
        2,
        "fsck.vfat reported something: {said}"
    );
    // Exactly the boot files, with fixed dates.
    let img = format!("{}@@1M", card_path.display());
    let mdir = Command::new("mdir")
        .args(["-i", &img, "-b", "::/"])
        .output()
        .unwrap();
    assert!(
        mdir.status.success(),
        "{}",
        String::from_utf8_lossy(&mdir.stderr)
    );
    let mut listed: Vec<String> = String::from_utf8_lossy(&mdir.stdout)
        .lines()
        .map(|l| l.trim_start_matches("::/").to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "cmdline.txt",
            "config.txt",
            "fixup4.dat",
            "kernel8.img",
            "start4.elf"
        ]
    );
    let long = Command::new("mdir")
        .args(["-i", &img, "::/"])
        .output()
        .unwrap();
    let long = String::from_utf8_lossy(&long.stdout).into_owned();
    assert_eq!(long.matches("1980-01-01   0:00").count(), 5, "{long}");
    let read = |name: &str| {
        let o = Command::new("mtype")
            .args(["-i", &img, &format!("::/{name}")])
            .output()
            .unwrap();
        assert!(o.status.success(), "mtype {name}");
        o.stdout
    };
    assert_eq!(read("kernel8.img"), kernel);
    for (name, bytes) in &firmware {
        assert_eq!(&read(name), bytes, "{name}");
    }
    let config = String::from_utf8(read("config.txt")).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=kernel8.img",
        "enable_uart=1",
        "kernel_address=0x80000",
    ] {
        assert!(config.lines().any(|l| l == line), "{config}");
    }
    assert_eq!(read("cmdline.txt"), b"--name=world --times=3\n");

    // The firmware's hashes are in the build information and the SBOM.
    let buildinfo = std::fs::read_to_string(entry.join("buildinfo.json")).unwrap();
    let sbom = std::fs::read_to_string(entry.join("sbom.cdx.json")).unwrap();
    for (name, bytes) in &firmware {
        let sha = sha256(bytes);
        assert!(
            buildinfo.contains(&format!("target/firmware/{name}")) && buildinfo.contains(&sha),
            "{name} not in buildinfo.json"
        );
        assert!(
            sbom.contains(&format!("\"file:{name}\"")) && sbom.contains(&sha),
            "{sbom}"
        );
    }
    assert!(
        !buildinfo.contains(&fw_dir.display().to_string()),
        "a path in buildinfo"
    );

    // The same firmware from another directory and another store: the same card.
    let fw2 = tmp.path().join("elsewhere/with/a/longer/path/fw");
    fake_firmware(&fw2);
    let mut cmd = compose(&tmp.path().join("store2"));
    cmd.args([
        "build",
        "specs/hello.kdl",
        "--target",
        "rpi4",
        "--no-out-link",
    ])
    .env("COMPOSE_RPI4_FIRMWARE", &fw2);
    let r = run(cmd, Duration::from_secs(600));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let again = std::fs::read(PathBuf::from(r.stdout.trim()).join("hello.sdcard.img")).unwrap();
    assert!(
        again == card,
        "the card differs when the firmware is elsewhere"
    );
    // Other firmware: another card (and another store key).
    std::fs::write(fw2.join("fixup4.dat"), b"another fixup").unwrap();
    let mut cmd = compose(&tmp.path().join("store2"));
    cmd.args([
        "build",
        "specs/hello.kdl",
        "--target",
        "rpi4",
        "--no-out-link",
    ])
    .env("COMPOSE_RPI4_FIRMWARE", &fw2);
    let r = run(cmd, Duration::from_secs(600));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let other = std::fs::read(PathBuf::from(r.stdout.trim()).join("hello.sdcard.img")).unwrap();
    assert!(other != card, "the firmware changed, the card did not");
}

#[test]
fn the_jukebox_builds_for_the_pi_and_says_qemu_has_no_jack() {
    if !have_qemu() {
        eprintln!("skipped: no qemu-system-aarch64 (Debian: qemu-system-arm)");
        return;
    }
    // The jack is PWM1 through bcm2711-audio (tested against its register model in
    // devices/bcm2711-audio); QEMU's raspi4b has no PWM: the device fails to start with a
    // message, the runtime having caught the probe's abort, instead of a fault.
    let store = tempfile::tempdir().unwrap();
    let r = boot(store.path(), &root().join("specs/jukebox.kdl"), &[]);
    let ctx = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, Some(1), "{ctx}");
    assert!(
        r.stdout.contains(
            "jukebox-rpi4: device 'jack' failed to start: the board has no PWM1 (QEMU's raspi4b does not emulate PWM"
        ),
        "{ctx}"
    );
    assert!(!r.stdout.contains("trap"), "{ctx}");
    // The crunched chime is in the image.
    let chime = std::fs::metadata(root().join("specs/jukebox/music/chime.wav"))
        .unwrap()
        .len();
    let image = std::fs::read_dir(store.path())
        .unwrap()
        .flatten()
        .map(|e| e.path().join("kernel8.img"))
        .find(|p| p.is_file())
        .unwrap();
    assert!(std::fs::metadata(image).unwrap().len() > chime);
}
