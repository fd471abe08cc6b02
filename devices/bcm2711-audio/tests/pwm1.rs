//! The PWM1 driver against the register model (tests/model): QEMU cannot run PWM, so the
//! same driver code a Pi 4 runs is driven through `Mmio` into a model of PWM1, the clock
//! manager and GPIO, and what the model's two channels receive is written as a WAV file
//! that sox compares with the source (length, pitch per channel, a null test).
//!
//! The source audio is made here with `sox ... synth`; sox is required (Debian: sox).

mod model;

use bcm2711_audio::{Clock, Format, Jack, Mmio, Pwm1Audio, Sample, reg::*};
use compose_devices::audio::{AudioError, PcmFormat, SampleFormat, wav};
use model::Model;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sox(args: &[&str]) -> String {
    let out = Command::new("sox")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sox (Debian package sox): {e}"));
    assert!(
        out.status.success(),
        "sox {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `stat` and `stats` report on stderr.
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// The number after `label` in sox's `stat`/`stats` output (first column).
fn stat(report: &str, label: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} in\n{report}"));
    let rest = &line[line.find(label).unwrap() + label.len()..];
    match rest.split_whitespace().next() {
        Some("-inf") => f64::NEG_INFINITY,
        Some(v) => v.parse().unwrap_or_else(|_| panic!("{label}: {v:?}")),
        None => panic!("{label}: no value"),
    }
}

/// The rough frequency of channel `ch` (1-based), with the PWM's DC offset filtered out.
fn pitch(file: &Path, ch: u32) -> f64 {
    let r = sox(&[
        file.to_str().unwrap(),
        "-n",
        "remix",
        &ch.to_string(),
        "highpass",
        "20",
        "stat",
    ]);
    stat(&r, "Rough   frequency:")
}

fn samples(file: &Path) -> u64 {
    let out = Command::new("soxi")
        .args(["-s", file.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("bcm2711-audio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the model's channels received, as a WAV of `sample` samples at the played rate:
/// left = channel 2 (GPIO 41), right = channel 1 (GPIO 40), each duty scaled back from
/// 0..=range to the sample range.
fn capture_wav(m: &Model, sample: SampleFormat, rate: u32, path: &Path) {
    let r = u64::from(m.range());
    let n = m.ch1.len().min(m.ch2.len());
    let mut data = Vec::new();
    for i in 0..n {
        for d in [m.ch2[i], m.ch1[i]] {
            let d = u64::from(d);
            match sample {
                SampleFormat::U8 => data.push(((d * 255 + r / 2) / r) as u8),
                SampleFormat::S16Le => {
                    let s = ((d * 65535 + r / 2) / r) as i64 - 32768;
                    data.extend_from_slice(&(s as i16).to_le_bytes());
                }
            }
        }
    }
    let mut file = wav::header(&PcmFormat::new(rate, 2, sample), data.len() as u32).to_vec();
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// Polls a future that never waits (the jack busy-waits on the FIFO) to its end.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the jack's futures complete when polled"),
    }
}

/// Plays the WAV at `src` through the `audio` device a platform builds on the driver
/// ([`Jack`], the same code as [`Pwm1Audio`]) into a model of FIFO depth `depth`; returns
/// the model, the driver's played rate in mHz and the samples.
fn play(src: &Path, clock: Clock, depth: usize) -> (Model, u64, Vec<u8>) {
    use compose_devices::audio::Audio;
    let bytes = std::fs::read(src).unwrap();
    let w = wav::parse(&bytes).unwrap();
    let data = &bytes[w.data_offset..w.data_offset + w.data_len as usize];
    let mut m = Model::new(depth);
    let jack = Jack::open(&mut m, w.format, clock).expect("driver starts");
    // In pieces, as an application writes.
    let fb = w.format.frame_bytes();
    for piece in data.chunks(4096 / fb * fb) {
        now(jack.write(piece)).expect("write");
    }
    if fb > 1 {
        assert_eq!(now(jack.write(&data[..1])), Err(AudioError::PartialFrame));
    }
    now(jack.flush()).expect("flush");
    let mut driver = jack.into_driver();
    assert_eq!(driver.take_errors() & STA_WERR1, 0, "the FIFO lost a word");
    let rate = driver.played_rate_mhz();
    driver.stop();
    (m, rate, data.to_vec())
}

fn assert_clean(m: &Model) {
    assert!(
        m.violations.is_empty(),
        "protocol violations:\n{}",
        m.violations.join("\n")
    );
    let gaps = m.gaps_mid_stream();
    assert!(
        gaps.is_empty(),
        "{} underruns mid-stream, first {:?}",
        gaps.len(),
        gaps[0]
    );
}

#[test]
fn stereo_s16_plays_in_order_at_its_rate_from_pll_d() {
    let dir = Dir::new("s16");
    let src = dir.0.join("src.wav");
    // Left 440 Hz, right 660 Hz: a swapped pair or mono-as-stereo shows in the pitches.
    sox(&[
        "-R",
        "-n",
        "-r",
        "22050",
        "-c",
        "2",
        "-b",
        "16",
        src.to_str().unwrap(),
        "synth",
        "1",
        "sine",
        "440",
        "sine",
        "660",
        "gain",
        "-1",
    ]);
    let (m, rate_mhz, data) = play(&src, Clock::PLLD, 8);
    assert_clean(&m);
    // PLLD 750 MHz / 6 = 125 MHz, RNG = round(125e6 / 22050) = 5669.
    assert_eq!(m.pwm_hz, Some(125_000_000));
    assert_eq!(m.range(), 5669);
    let frames = data.len() / 4;
    assert_eq!(
        (m.ch1.len(), m.ch2.len()),
        (frames, frames),
        "every sample played once"
    );
    assert!(m.max_fill <= 8);
    // The rate the model consumed at: words over the time between the first and the last.
    let span = (m.last_word_ns.unwrap() - m.first_word_ns.unwrap()) as f64 / 1e9;
    let measured = (frames - 1) as f64 / span;
    assert!(
        (measured - 22050.0).abs() / 22050.0 < 0.001,
        "played at {measured} Hz"
    );
    assert!(
        (rate_mhz as f64 / 1000.0 - 22050.0).abs() < 1.0,
        "{rate_mhz} mHz"
    );
    // Right first: channel 1 (GPIO 40) carried the right samples.
    let right0 = i16::from_le_bytes([data[2], data[3]]);
    let duty = ((i64::from(right0) + 32768) as u64 * 5669 + 32767) / 65535;
    assert_eq!(u64::from(m.ch1[0]), duty);

    let cap = dir.0.join("cap.wav");
    capture_wav(
        &m,
        SampleFormat::S16Le,
        (rate_mhz as f64 / 1000.0).round() as u32,
        &cap,
    );
    assert_eq!(samples(&cap), samples(&src), "length");
    let (l, r) = (pitch(&cap, 1), pitch(&cap, 2));
    assert!(
        (l - 440.0).abs() < 9.0 && (r - 660.0).abs() < 13.0,
        "pitches L {l} R {r}"
    );
    // Null test: what is left is the 12.5-bit quantisation of a 5669-step range.
    let null = sox(&[
        "-m",
        "-v",
        "1",
        src.to_str().unwrap(),
        "-v",
        "-1",
        cap.to_str().unwrap(),
        "-n",
        "stats",
    ]);
    let rms = stat(&null, "RMS lev dB");
    eprintln!(
        "s16 via PLLD: played {measured:.2} Hz, pitches L {l} R {r}, null residual {rms} dB, FIFO max {}",
        m.max_fill
    );
    assert!(rms < -70.0, "null test residual {rms} dB\n{null}");
}

#[test]
fn mono_u8_from_the_oscillator_is_bit_exact_on_both_channels() {
    let dir = Dir::new("u8");
    let src = dir.0.join("src.wav");
    sox(&[
        "-R",
        "-n",
        "-r",
        "44100",
        "-c",
        "1",
        "-b",
        "8",
        "-e",
        "unsigned-integer",
        src.to_str().unwrap(),
        "synth",
        "0.5",
        "sine",
        "440",
        "gain",
        "-1",
    ]);
    let (m, rate_mhz, data) = play(&src, Clock::OSCILLATOR, 16);
    assert_clean(&m);
    // The oscillator / 2 = 27 MHz, RNG 612: 44117.6 Hz, as rpi4-osdev and the retreat play.
    assert_eq!((m.pwm_hz, m.range()), (Some(27_000_000), 612));
    assert_eq!(rate_mhz, 44_117_647);
    assert!(m.max_fill <= 16);
    // Duties scale back to exactly the source bytes, on both sides.
    let back = |d: u32| ((u64::from(d) * 255 + 306) / 612) as u8;
    let ch1: Vec<u8> = m.ch1.iter().map(|&d| back(d)).collect();
    let ch2: Vec<u8> = m.ch2.iter().map(|&d| back(d)).collect();
    assert_eq!(ch1, data, "right channel");
    assert_eq!(ch2, data, "left channel");
    let cap = dir.0.join("cap.wav");
    capture_wav(&m, SampleFormat::U8, 44118, &cap);
    assert_eq!(samples(&cap), samples(&src));
    let (l, r) = (pitch(&cap, 1), pitch(&cap, 2));
    assert!(
        (l - 440.0).abs() < 9.0 && (r - 440.0).abs() < 9.0,
        "pitches L {l} R {r}"
    );
    // Null test against the source read at the played rate: identical samples.
    let relabelled = dir.0.join("src-relabelled.wav");
    let mut bytes = std::fs::read(&src).unwrap();
    // The same samples declared at the played rate, duplicated to two channels, so that
    // sox mixes sample against sample without resampling.
    let w = wav::parse(&bytes).unwrap();
    let stereo: Vec<u8> = bytes[w.data_offset..]
        .iter()
        .flat_map(|&b| [b, b])
        .collect();
    bytes = wav::header(
        &PcmFormat::new(44118, 2, SampleFormat::U8),
        stereo.len() as u32,
    )
    .to_vec();
    bytes.extend_from_slice(&stereo);
    std::fs::write(&relabelled, bytes).unwrap();
    let null = sox(&[
        "-m",
        "-v",
        "1",
        relabelled.to_str().unwrap(),
        "-v",
        "-1",
        cap.to_str().unwrap(),
        "-n",
        "stats",
    ]);
    assert_eq!(stat(&null, "RMS lev dB"), f64::NEG_INFINITY, "{null}");
}

/// A driver that sends the left sample first shows up as swapped channels: the order
/// check can fail.
#[test]
fn left_first_would_be_heard_swapped() {
    let dir = Dir::new("swap");
    let mut m = Model::new(16);
    let mut jack =
        Pwm1Audio::new(&mut m, Format::new(22050, 2, Sample::S16Le), Clock::PLLD).unwrap();
    // Swap the pair in the data itself: what a left-first driver would send.
    let src = dir.0.join("src.wav");
    sox(&[
        "-R",
        "-n",
        "-r",
        "22050",
        "-c",
        "2",
        "-b",
        "16",
        src.to_str().unwrap(),
        "synth",
        "0.5",
        "sine",
        "440",
        "sine",
        "660",
    ]);
    let bytes = std::fs::read(&src).unwrap();
    let w = wav::parse(&bytes).unwrap();
    let swapped: Vec<u8> = bytes[w.data_offset..]
        .chunks_exact(4)
        .flat_map(|f| [f[2], f[3], f[0], f[1]])
        .collect();
    jack.write(&swapped).unwrap();
    jack.flush().unwrap();
    jack.stop();
    let cap = dir.0.join("cap.wav");
    capture_wav(&m, SampleFormat::S16Le, 22050, &cap);
    let (l, r) = (pitch(&cap, 1), pitch(&cap, 2));
    assert!(
        (l - 660.0).abs() < 13.0 && (r - 440.0).abs() < 9.0,
        "L {l} R {r}"
    );
}

/// The model catches the mistakes the fact sheet warns about: each of these sequences,
/// written by hand, is reported.
#[test]
fn the_model_reports_protocol_breaches() {
    let breaches = |f: &dyn Fn(&mut Model)| {
        let mut m = Model::new(8);
        f(&mut m);
        m.violations
    };
    let has = |v: Vec<String>, what: &str| {
        assert!(v.iter().any(|s| s.contains(what)), "{what:?} not in {v:#?}");
    };
    // No password: ignored and reported.
    has(
        breaches(&|m| m.write32(CM_PWMDIV, 6 << 12)),
        "without the password",
    );
    // DIV changed while the clock runs, and without waiting for BUSY to clear.
    let start_clock = |m: &mut Model| {
        m.write32(CM_PWMDIV, CM_PASSWD | 6 << 12);
        m.write32(CM_PWMCTL, CM_PASSWD | 6);
        m.write32(CM_PWMCTL, CM_PASSWD | 6 | CM_ENAB);
    };
    has(
        breaches(&|m| {
            start_clock(m);
            m.write32(CM_PWMDIV, CM_PASSWD | 7 << 12);
        }),
        "CM_PWMDIV changed while the clock is enabled or BUSY",
    );
    has(
        breaches(&|m| {
            start_clock(m);
            m.write32(CM_PWMCTL, CM_PASSWD | 6);
            m.write32(CM_PWMDIV, CM_PASSWD | 7 << 12);
        }),
        "CM_PWMDIV changed while the clock is enabled or BUSY",
    );
    // Waiting while BUSY, then changing, is fine.
    assert!(
        breaches(&|m| {
            start_clock(m);
            m.write32(CM_PWMCTL, CM_PASSWD | 6);
            while m.read32(CM_PWMCTL) & CM_BUSY != 0 {
                m.delay_us(1);
            }
            m.write32(CM_PWMDIV, CM_PASSWD | 7 << 12);
        })
        .is_empty()
    );
    has(
        breaches(&|m| {
            m.write32(CM_PWMDIV, CM_PASSWD | 6 << 12);
            m.write32(CM_PWMCTL, CM_PASSWD | 6 | CM_ENAB);
        }),
        "ENAB set in the same write",
    );
    has(
        breaches(&|m| {
            m.write32(CM_PWMDIV, CM_PASSWD | 1 << 12);
            m.write32(CM_PWMCTL, CM_PASSWD | 6);
            m.write32(CM_PWMCTL, CM_PASSWD | 6 | CM_ENAB);
        }),
        "DIVI 1",
    );
    // PWM enabled before GPIO 40/41 are ALT0.
    let enable = |m: &mut Model| {
        m.write32(PWM_RNG1, 612);
        m.write32(PWM_RNG2, 612);
        m.write32(
            PWM_CTL,
            CTL_PWEN1 | CTL_USEF1 | CTL_PWEN2 | CTL_USEF2 | CTL_CLRF1,
        );
    };
    has(
        breaches(&|m| {
            start_clock(m);
            enable(m);
        }),
        "not GPIO 40/41 in ALT0",
    );
    // A FIFO write while full loses the word.
    has(
        breaches(&|m| {
            m.write32(PWM_CTL, CTL_CLRF1);
            for _ in 0..9 {
                m.write32(PWM_FIF1, 0);
            }
        }),
        "FIF1 written while STA.FULL1",
    );
    has(
        breaches(&|m| m.write32(PWM_FIF1, 0)),
        "before the FIFO was cleared",
    );
    has(
        breaches(&|m| {
            m.write32(PWM_CTL, 0);
            m.write32(PWM_CTL, 0);
        }),
        "back to back",
    );
    has(breaches(&|m| m.write32(0xFE20_0094, 2)), "GPPUD");
}

#[test]
fn bad_formats_are_refused() {
    let mut m = Model::new(8);
    let e = Pwm1Audio::new(&mut m, Format::new(44100, 3, Sample::U8), Clock::PLLD).unwrap_err();
    assert_eq!(e, bcm2711_audio::Error::Channels(3));
    let e = Pwm1Audio::new(&mut m, Format::new(400_000, 2, Sample::U8), Clock::PLLD).unwrap_err();
    assert_eq!(e, bcm2711_audio::Error::Rate(400_000));
    let mut jack =
        Pwm1Audio::new(&mut m, Format::new(8000, 2, Sample::S16Le), Clock::PLLD).unwrap();
    assert_eq!(jack.write(&[0; 6]), Err(bcm2711_audio::Error::PartialFrame));
    jack.stop();
    assert!(m.violations.is_empty(), "{:#?}", m.violations);
}

/// Starting the jack while its clock runs (a second open, a warm reboot) stops the clock
/// and waits for BUSY to clear before changing it.
#[test]
fn restarting_a_running_clock_waits_for_busy() {
    let mut m = Model::new(8);
    let first = Pwm1Audio::new(&mut m, Format::new(44100, 2, Sample::S16Le), Clock::PLLD).unwrap();
    drop(first);
    assert_eq!(m.read32(CM_PWMCTL) & (CM_ENAB | CM_BUSY), CM_ENAB | CM_BUSY);
    let second =
        Pwm1Audio::new(&mut m, Format::new(8000, 1, Sample::U8), Clock::OSCILLATOR).unwrap();
    assert_eq!(second.range(), 27_000_000 / 8000);
    drop(second);
    assert!(m.violations.is_empty(), "{:#?}", m.violations);
    assert_eq!(m.clock_hz(), Some(27_000_000));
}
