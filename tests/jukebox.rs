//! The jukebox on unix, as a user runs it: `compose run specs/jukebox.kdl --arg tracks=DIR
//! -- --out=FILE` crunches tracks made here with sox into the image, plays them into the
//! audio device, and the WAV file it records is compared with the source by sox: length,
//! pitch per channel, a null test. Bad tracks end the unikernel with status 1 and a
//! message naming the problem.
//!
//! Needs sox (Debian: sox).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sox(args: &[&str]) -> String {
    let out = Command::new("sox")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sox (Debian package sox): {e}"));
    assert!(
        out.status.success(),
        "sox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first number after `label` in sox's `stat` / `stats` report.
fn stat(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{report}"));
    match line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .next()
    {
        Some("-inf") => f64::NEG_INFINITY,
        Some(v) => v.parse().unwrap(),
        None => panic!("{label}: no value"),
    }
}

/// The rough frequency of channel `ch` of `file` between `from` and `from + len` seconds.
fn pitch(file: &Path, ch: u32, from: f64, len: f64) -> f64 {
    let r = sox(&[
        file.to_str().unwrap(),
        "-n",
        "trim",
        &from.to_string(),
        &len.to_string(),
        "remix",
        &ch.to_string(),
        "stat",
    ]);
    stat(&r, "Rough   frequency:")
}

fn soxi(flag: &str, file: &Path) -> String {
    let out = Command::new("soxi")
        .args([flag, file.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs compose with `args`, killing it if it has not finished within five minutes (the
/// first run builds).
fn compose(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_compose"))
        .args(args)
        .current_dir(root())
        .env("COMPOSE_TARGET_DIR", root().join("target/compose-tests"))
        .env("COMPOSE_STORE", root().join("target/compose-tests/store"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("compose {args:?} did not finish in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_jukebox_records_what_it_plays() {
    let dir = tempfile::tempdir().unwrap();
    let tracks = dir.path().join("tracks");
    std::fs::create_dir(&tracks).unwrap();
    let a = tracks.join("a-tone.wav");
    let b = tracks.join("b-low.wav");
    let synth = |file: &Path, secs: &str, left: &str, right: &str| {
        sox(&[
            "-R",
            "-n",
            "-r",
            "22050",
            "-c",
            "2",
            "-b",
            "16",
            file.to_str().unwrap(),
            "synth",
            secs,
            "sine",
            left,
            "sine",
            right,
            "gain",
            "-3",
        ]);
    };
    synth(&a, "1.5", "440", "660");
    synth(&b, "1", "330", "550");
    // Not played with the rest: not .wav. Played on request, they are refused.
    std::fs::write(tracks.join("notes.txt"), "not audio\n").unwrap();
    sox(&[
        "-R",
        "-n",
        "-r",
        "44100",
        "-c",
        "1",
        "-b",
        "8",
        "-t",
        "wav",
        tracks.join("mono.wave").to_str().unwrap(),
        "synth",
        "0.1",
        "sine",
        "440",
    ]);
    let expected = dir.path().join("expected.wav");
    sox(&[
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        expected.to_str().unwrap(),
    ]);

    let out = dir.path().join("out.wav");
    let arg = format!("tracks={}", tracks.display());
    let out_arg = format!("--out={}", out.display());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "specs/jukebox.kdl",
            "--no-out-link",
            "--arg",
            &arg,
            "--",
        ];
        args.extend_from_slice(extra);
        compose(&args)
    };
    let o = run(&[&out_arg]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        stdout,
        "jukebox: playing a-tone.wav (33075 frames, 1.500 s)\n\
         jukebox: playing b-low.wav (22050 frames, 1.000 s)\n\
         jukebox: played 2 track(s)\n"
    );

    // The recording is the two tracks, in order, sample for sample.
    assert_eq!(soxi("-r", &out), "22050");
    assert_eq!(soxi("-c", &out), "2");
    assert_eq!(soxi("-b", &out), "16");
    assert_eq!(soxi("-s", &out), "55125");
    assert_eq!(soxi("-s", &out), soxi("-s", &expected));
    for (from, len, left, right) in [(0.0, 1.5, 440.0, 660.0), (1.5, 1.0, 330.0, 550.0)] {
        let (l, r) = (pitch(&out, 1, from, len), pitch(&out, 2, from, len));
        assert!(
            (l - left).abs() < left * 0.02 && (r - right).abs() < right * 0.02,
            "at {from} s: L {l} Hz (want {left}), R {r} Hz (want {right})"
        );
    }
    let null = sox(&[
        "-m",
        "-v",
        "1",
        expected.to_str().unwrap(),
        "-v",
        "-1",
        out.to_str().unwrap(),
        "-n",
        "stats",
    ]);
    assert_eq!(stat(&null, "RMS lev dB"), f64::NEG_INFINITY, "{null}");

    // Bad tracks: exit 1, a message naming the problem.
    for (track, says) in [
        (
            "mono.wave",
            "mono.wave is 44100 Hz mono u8, but the audio device plays 22050 Hz stereo s16",
        ),
        ("notes.txt", "notes.txt: not a RIFF/WAVE file"),
        ("missing.wav", "no track missing.wav in the music assets"),
    ] {
        let o = run(&[&out_arg, &format!("--track={track}")]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{track}: {stdout}");
        assert!(stdout.contains(says), "{track}: {stdout}");
    }
    // An output that cannot be created stops the device before the application starts.
    let o = run(&["--out=/nonexistent-dir/out.wav"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "device 'jack' failed to start: /nonexistent-dir/out.wav: No such file or directory"
        ),
        "{stderr}"
    );
}
