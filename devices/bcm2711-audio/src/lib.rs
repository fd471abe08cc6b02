//! PWM audio on the BCM2711 (Raspberry Pi 4): the 3.5 mm headphone jack is PWM1, on
//! GPIO 40 (right) and 41 (left) in ALT0.
//!
//! The driver is platform-independent: it reaches the hardware only through [`Mmio`]
//! (32-bit reads and writes at ARM physical addresses, and a microsecond delay), so a
//! bare-metal platform implements it with volatile accesses and the crate's tests drive the
//! very same code against a register-level model of PWM1, the clock manager and GPIO
//! (`tests/model/`). QEMU's `raspi4b` machine does not emulate PWM (any access to PWM1 is
//! a synchronous external abort), so the model is how this driver is tested.
//!
//! ```ignore
//! let mut jack = Pwm1Audio::new(mmio, Format::new(44_100, 2, Sample::S16Le), Clock::PLLD)?;
//! jack.write(&frames)?; // interleaved left/right s16le frames, blocks while the FIFO is full
//! jack.flush()?;        // until the FIFO has played out
//! ```
//!
//! What it does, in order (the fact sheet's sequence, with its sources: circle, Linux):
//!
//! 1. GPIO 40/41 to ALT0 (GPFSEL4 bits 5:0 = 0b100_100) and their pulls to none (BCM2711's
//!    GPIO_PUP_PDN_CNTRL_REG2 bits 19:16), before the PWM is enabled.
//! 2. PWM1 stopped (errors cleared first: BERR can otherwise stick), the FIFO cleared.
//! 3. The PWM clock (CM_PWMCTL/CM_PWMDIV, every write with the password `0x5A << 24`):
//!    disabled, BUSY waited for (never waiting for BUSY to become 1, which QEMU never sets),
//!    then DIV (an integer divider, at least 2, MASH 0), then the source, then ENAB alone.
//!    The PWM clock is the source divided down to at most 125 MHz (PLLD 750 MHz / 6).
//! 4. RNG1 = RNG2 = round(f_pwm / rate), so one period per sample; then CTL =
//!    PWEN1|USEF1|PWEN2|USEF2|CLRF1 (|MSEN1|MSEN2 in mark-space mode): both channels from
//!    the shared FIFO, which they consume alternately.
//! 5. Samples: each becomes a duty in 0..=RNG (u8 `v` → round(v·RNG/255), s16 `s` →
//!    round((s+32768)·RNG/65535)), written to FIF1 only while STA.FULL1 is clear, the
//!    **right** sample first in each pair (channel 1 is GPIO 40, the right side of the
//!    jack on a Pi 4 B, as circle maps it). Mono samples are sent to both channels.
//!
//! [`Jack`] wraps the driver as a `compose_devices::audio::Audio` device, which is what a
//! platform's `Audio::open` returns. The crate allocates nothing.
//!
//! The FIFO is fed by the CPU (no DMA): a FIFO of 8–16 words lasts 90–180 µs at 44.1 kHz
//! stereo, so [`Pwm1Audio::write`] busy-waits on FULL1 while it has frames to send.
#![no_std]

/// Register addresses (ARM physical, low-peripheral mode) and bits.
pub mod reg {
    /// PWM1 (the jack), 0x28 bytes of registers.
    pub const PWM1: usize = 0xFE20_C800;
    /// PWM control.
    pub const PWM_CTL: usize = PWM1;
    /// PWM status (error bits are write-1-to-clear).
    pub const PWM_STA: usize = PWM1 + 0x04;
    /// PWM DMA control.
    pub const PWM_DMAC: usize = PWM1 + 0x08;
    /// Channel 1 range.
    pub const PWM_RNG1: usize = PWM1 + 0x10;
    /// Channel 1 data (unused with the FIFO).
    pub const PWM_DAT1: usize = PWM1 + 0x14;
    /// The FIFO both channels share.
    pub const PWM_FIF1: usize = PWM1 + 0x18;
    /// Channel 2 range.
    pub const PWM_RNG2: usize = PWM1 + 0x20;
    /// Channel 2 data (unused with the FIFO).
    pub const PWM_DAT2: usize = PWM1 + 0x24;

    /// CTL: channel 1 enable.
    pub const CTL_PWEN1: u32 = 1 << 0;
    /// CTL: channel 1 serialiser mode (0: PWM).
    pub const CTL_MODE1: u32 = 1 << 1;
    /// CTL: channel 1 repeats the last word when the FIFO is empty.
    pub const CTL_RPTL1: u32 = 1 << 2;
    /// CTL: channel 1 takes its data from the FIFO.
    pub const CTL_USEF1: u32 = 1 << 5;
    /// CTL: clear the FIFO (write-only, reads 0).
    pub const CTL_CLRF1: u32 = 1 << 6;
    /// CTL: channel 1 mark-space mode.
    pub const CTL_MSEN1: u32 = 1 << 7;
    /// CTL: channel 2 enable.
    pub const CTL_PWEN2: u32 = 1 << 8;
    /// CTL: channel 2 serialiser mode.
    pub const CTL_MODE2: u32 = 1 << 9;
    /// CTL: channel 2 repeat-last.
    pub const CTL_RPTL2: u32 = 1 << 10;
    /// CTL: channel 2 takes its data from the FIFO.
    pub const CTL_USEF2: u32 = 1 << 13;
    /// CTL: channel 2 mark-space mode.
    pub const CTL_MSEN2: u32 = 1 << 15;

    /// STA: the FIFO is full.
    pub const STA_FULL1: u32 = 1 << 0;
    /// STA: the FIFO is empty.
    pub const STA_EMPT1: u32 = 1 << 1;
    /// STA: a FIFO write while full (the word was lost).
    pub const STA_WERR1: u32 = 1 << 2;
    /// STA: a FIFO read while empty.
    pub const STA_RERR1: u32 = 1 << 3;
    /// STA: channel 1 had no data at a period boundary.
    pub const STA_GAPO1: u32 = 1 << 4;
    /// STA: channel 2 had no data at a period boundary.
    pub const STA_GAPO2: u32 = 1 << 5;
    /// STA: APB bus error.
    pub const STA_BERR: u32 = 1 << 8;
    /// STA: every error bit the driver clears (WERR, RERR, GAPO1/2, BERR).
    pub const STA_ERRORS: u32 = STA_WERR1 | STA_RERR1 | STA_GAPO1 | STA_GAPO2 | STA_BERR;

    /// The clock manager's PWM clock control.
    pub const CM_PWMCTL: usize = 0xFE10_10A0;
    /// The clock manager's PWM clock divider.
    pub const CM_PWMDIV: usize = 0xFE10_10A4;
    /// Bits 31:24 of every clock-manager write; writes without it are ignored.
    pub const CM_PASSWD: u32 = 0x5A << 24;
    /// CM CTL: clock source, bits 3:0.
    pub const CM_SRC_MASK: u32 = 0xF;
    /// CM CTL: enable.
    pub const CM_ENAB: u32 = 1 << 4;
    /// CM CTL: stop the clock at once.
    pub const CM_KILL: u32 = 1 << 5;
    /// CM CTL: the clock generator is running (read-only).
    pub const CM_BUSY: u32 = 1 << 7;
    /// CM CTL: MASH, bits 10:9.
    pub const CM_MASH_MASK: u32 = 3 << 9;
    /// CM DIV: integer part, bits 23:12.
    pub const CM_DIVI_SHIFT: u32 = 12;

    /// GPIO function select for GPIO 40–49.
    pub const GPFSEL4: usize = 0xFE20_0010;
    /// GPIO 40/41 in ALT0 (0b100 each), GPFSEL4 bits 5:0.
    pub const GPFSEL4_40_41_ALT0: u32 = 0b100_100;
    /// BCM2711 pull control of GPIO 32–47 (2 bits per pin; 00 = none).
    pub const GPIO_PUP_PDN_CNTRL_REG2: usize = 0xFE20_00EC;
    /// GPIO 40/41's bits in GPIO_PUP_PDN_CNTRL_REG2.
    pub const PULL_40_41_MASK: u32 = 0xF << 16;
}

use reg::*;

/// The hardware, as the driver sees it: 32-bit registers at ARM physical addresses and
/// a delay. A bare-metal platform with peripherals mapped as device memory at their
/// physical addresses implements `read32`/`write32` with `read_volatile`/`write_volatile`
/// on `addr as *mut u32`.
pub trait Mmio {
    /// Reads the 32-bit register at `addr`.
    fn read32(&mut self, addr: usize) -> u32;
    /// Writes `value` to the 32-bit register at `addr`.
    fn write32(&mut self, addr: usize, value: u32);
    /// Waits at least `us` microseconds.
    fn delay_us(&mut self, us: u32);
}

impl<M: Mmio + ?Sized> Mmio for &mut M {
    fn read32(&mut self, addr: usize) -> u32 {
        (**self).read32(addr)
    }
    fn write32(&mut self, addr: usize, value: u32) {
        (**self).write32(addr, value)
    }
    fn delay_us(&mut self, us: u32) {
        (**self).delay_us(us)
    }
}

/// How samples are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    /// Unsigned 8-bit (128 is silence).
    U8,
    /// Signed 16-bit little-endian.
    S16Le,
}

/// The PCM format [`Pwm1Audio::write`] takes: interleaved frames, left then right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Frames per second.
    pub rate: u32,
    /// 1 (mono: played on both sides) or 2 (stereo).
    pub channels: u8,
    /// Sample encoding.
    pub sample: Sample,
}

impl Format {
    /// A format.
    pub const fn new(rate: u32, channels: u8, sample: Sample) -> Self {
        Format {
            rate,
            channels,
            sample,
        }
    }

    /// Bytes per frame.
    pub const fn frame_bytes(&self) -> usize {
        self.channels as usize
            * match self.sample {
                Sample::U8 => 1,
                Sample::S16Le => 2,
            }
    }
}

/// A clock-manager source for the PWM clock, with its frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The CM_PWMCTL SRC value (1 oscillator, 6 PLLD_PER, ...).
    pub source: u32,
    /// Its frequency in Hz.
    pub hz: u32,
}

impl Clock {
    /// PLLD_PER on a Pi 4: 750 MHz (the PWM clock becomes 125 MHz, as in circle).
    pub const PLLD: Clock = Clock {
        source: 6,
        hz: 750_000_000,
    };
    /// The crystal oscillator on a Pi 4: 54 MHz (the PWM clock becomes 27 MHz).
    pub const OSCILLATOR: Clock = Clock {
        source: 1,
        hz: 54_000_000,
    };
}

/// The fastest PWM clock the driver asks for.
pub const MAX_PWM_HZ: u32 = 125_000_000;
/// The coarsest range (duty levels − 1) it accepts: 8 bits.
pub const MIN_RANGE: u32 = 255;
/// How far the played rate may be from the requested one, in parts per million.
pub const MAX_RATE_ERROR_PPM: u64 = 1000;

/// How long the clock may stay BUSY after it is disabled, in microseconds (Linux: 100 ms).
const BUSY_TIMEOUT_US: u32 = 100_000;
/// How long the FIFO may stay full before [`Error::Stalled`], in microseconds.
const STALL_US: u32 = 20_000;

/// Why the driver refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Channels other than 1 or 2.
    Channels(u8),
    /// The rate cannot be played from this clock with at least 8 bits per sample and
    /// within 0.1 % (the rate asked for).
    Rate(u32),
    /// The clock source is unusable (a frequency of 0, or too high to divide).
    Clock,
    /// The PWM clock stayed BUSY after it was disabled.
    ClockBusy,
    /// The FIFO stopped draining.
    Stalled,
    /// A buffer that is not a whole number of frames.
    PartialFrame,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Channels(n) => write!(f, "PWM audio plays 1 or 2 channels, not {n}"),
            Error::Rate(r) => write!(
                f,
                "PWM audio cannot play {r} Hz from this clock (8-bit resolution and 0.1 % accuracy needed)"
            ),
            Error::Clock => f.write_str("unusable PWM clock source"),
            Error::ClockBusy => f.write_str("the PWM clock stayed busy after it was stopped"),
            Error::Stalled => f.write_str("the PWM FIFO stopped draining"),
            Error::PartialFrame => f.write_str("audio buffer is not a whole number of frames"),
        }
    }
}

/// The divider and range for `rate` from `clock`: (DIVI, f_pwm, RNG).
fn plan(rate: u32, clock: Clock) -> Result<(u32, u32, u32), Error> {
    if clock.hz == 0 || clock.source > 15 {
        return Err(Error::Clock);
    }
    let divi = clock.hz.div_ceil(MAX_PWM_HZ).max(2);
    if divi > 0xFFF {
        return Err(Error::Clock);
    }
    let pwm_hz = clock.hz / divi;
    if rate == 0 {
        return Err(Error::Rate(rate));
    }
    let range = (pwm_hz + rate / 2) / rate;
    if range < MIN_RANGE {
        return Err(Error::Rate(rate));
    }
    // |pwm_hz / range − rate| / rate, in ppm.
    let played = u64::from(pwm_hz) * 1_000_000 / u64::from(range);
    let want = u64::from(rate) * 1_000_000;
    if played.abs_diff(want) * 1_000_000 / want > MAX_RATE_ERROR_PPM {
        return Err(Error::Rate(rate));
    }
    Ok((divi, pwm_hz, range))
}

/// The headphone jack: PWM1 playing PCM frames from its FIFO.
#[derive(Debug)]
pub struct Pwm1Audio<M: Mmio> {
    mmio: M,
    format: Format,
    pwm_hz: u32,
    range: u32,
    /// The left word of a frame whose right word went in just before the FIFO filled.
    pending: Option<u32>,
}

impl<M: Mmio> Pwm1Audio<M> {
    /// Sets up GPIO 40/41, the PWM clock from `clock` and PWM1 to play `format`, leaving
    /// the FIFO empty and both channels enabled. `mark_space` is on (circle's default since
    /// 2026, against hum); see [`Pwm1Audio::with_mode`].
    pub fn new(mmio: M, format: Format, clock: Clock) -> Result<Self, Error> {
        Self::with_mode(mmio, format, clock, true)
    }

    /// [`Pwm1Audio::new`], choosing mark-space (`true`: one pulse of DUTY cycles per
    /// period) or the PWM algorithm (`false`: the high cycles spread over the period).
    pub fn with_mode(
        mut mmio: M,
        format: Format,
        clock: Clock,
        mark_space: bool,
    ) -> Result<Self, Error> {
        if !(1..=2).contains(&format.channels) {
            return Err(Error::Channels(format.channels));
        }
        let (divi, pwm_hz, range) = plan(format.rate, clock)?;

        // 1. The jack's pins: ALT0, no pulls.
        let fsel = mmio.read32(GPFSEL4);
        mmio.write32(GPFSEL4, (fsel & !0o77) | GPFSEL4_40_41_ALT0);
        let pulls = mmio.read32(GPIO_PUP_PDN_CNTRL_REG2);
        mmio.write32(GPIO_PUP_PDN_CNTRL_REG2, pulls & !PULL_40_41_MASK);

        // 2. PWM1 stopped: errors (BERR) cleared first, then the channels disabled.
        mmio.write32(PWM_STA, STA_ERRORS);
        mmio.write32(PWM_CTL, 0);
        mmio.write32(PWM_DMAC, 0);

        // 3. The PWM clock: stop, wait while BUSY, DIV, SRC, then ENAB.
        let ctl = mmio.read32(CM_PWMCTL) & !(0xFF << 24);
        if ctl & CM_ENAB != 0 {
            mmio.write32(CM_PWMCTL, CM_PASSWD | (ctl & !CM_ENAB));
        }
        let mut waited = 0;
        while mmio.read32(CM_PWMCTL) & CM_BUSY != 0 {
            if waited >= BUSY_TIMEOUT_US {
                return Err(Error::ClockBusy);
            }
            mmio.delay_us(1);
            waited += 1;
        }
        mmio.write32(CM_PWMDIV, CM_PASSWD | (divi << CM_DIVI_SHIFT));
        mmio.delay_us(10);
        mmio.write32(CM_PWMCTL, CM_PASSWD | clock.source);
        mmio.delay_us(10);
        mmio.write32(CM_PWMCTL, CM_PASSWD | clock.source | CM_ENAB);
        mmio.delay_us(2000);

        // 4. One period per sample on both channels, both from the FIFO, cleared.
        mmio.write32(PWM_RNG1, range);
        mmio.write32(PWM_RNG2, range);
        let mut ctl = CTL_PWEN1 | CTL_USEF1 | CTL_PWEN2 | CTL_USEF2 | CTL_CLRF1;
        if mark_space {
            ctl |= CTL_MSEN1 | CTL_MSEN2;
        }
        mmio.write32(PWM_CTL, ctl);
        mmio.delay_us(2000);
        mmio.write32(PWM_STA, STA_ERRORS);
        Ok(Pwm1Audio {
            mmio,
            format,
            pwm_hz,
            range,
            pending: None,
        })
    }

    /// The format [`Pwm1Audio::write`] takes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The PWM clock in Hz.
    pub fn pwm_clock_hz(&self) -> u32 {
        self.pwm_hz
    }

    /// The range (RNG1 = RNG2): PWM clock cycles per sample; duties are 0..=range.
    pub fn range(&self) -> u32 {
        self.range
    }

    /// The rate actually played, in millihertz (f_pwm / range).
    pub fn played_rate_mhz(&self) -> u64 {
        u64::from(self.pwm_hz) * 1000 / u64::from(self.range)
    }

    /// The duty (0..=range) of one sample.
    pub fn duty(&self, sample: &[u8]) -> u32 {
        let r = u64::from(self.range);
        let d = match self.format.sample {
            Sample::U8 => (u64::from(sample[0]) * r + 127) / 255,
            Sample::S16Le => {
                let s = i16::from_le_bytes([sample[0], sample[1]]);
                ((i64::from(s) + 32768) as u64 * r + 32767) / 65535
            }
        };
        d as u32
    }

    fn full(&mut self) -> bool {
        self.mmio.read32(PWM_STA) & STA_FULL1 != 0
    }

    /// Sends as many whole frames of `frames` as the FIFO takes now, without waiting;
    /// returns how many bytes it consumed (a multiple of the frame size). The right sample
    /// goes first in each pair; a frame whose right sample went in just as the FIFO filled
    /// is completed by the next call.
    pub fn try_write(&mut self, frames: &[u8]) -> Result<usize, Error> {
        let fb = self.format.frame_bytes();
        if !frames.len().is_multiple_of(fb) {
            return Err(Error::PartialFrame);
        }
        if let Some(left) = self.pending {
            if self.full() {
                return Ok(0);
            }
            self.mmio.write32(PWM_FIF1, left);
            self.pending = None;
        }
        let sb = fb / usize::from(self.format.channels);
        let mut done = 0;
        for frame in frames.chunks_exact(fb) {
            let left = self.duty(&frame[..sb]);
            let right = if self.format.channels == 2 {
                self.duty(&frame[sb..])
            } else {
                left
            };
            if self.full() {
                break;
            }
            self.mmio.write32(PWM_FIF1, right);
            done += fb;
            if self.full() {
                self.pending = Some(left);
                break;
            }
            self.mmio.write32(PWM_FIF1, left);
        }
        Ok(done)
    }

    /// Plays `frames` (a whole number of frames in [`Pwm1Audio::format`]), waiting while
    /// the FIFO is full; returns when the last word is in the FIFO. Fails with
    /// [`Error::Stalled`] if the FIFO does not drain for 20 ms.
    pub fn write(&mut self, mut frames: &[u8]) -> Result<(), Error> {
        let mut idle = 0;
        while !frames.is_empty() || self.pending.is_some() {
            let n = self.try_write(frames)?;
            frames = &frames[n..];
            if n == 0 {
                if idle >= STALL_US {
                    return Err(Error::Stalled);
                }
                self.mmio.delay_us(1);
                idle += 1;
            } else {
                idle = 0;
            }
        }
        Ok(())
    }

    /// Waits until the FIFO has played out, and two sample periods more (an empty FIFO
    /// does not mean the last word has finished).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.write(&[])?;
        let mut waited = 0;
        while self.mmio.read32(PWM_STA) & STA_EMPT1 == 0 {
            if waited >= STALL_US {
                return Err(Error::Stalled);
            }
            self.mmio.delay_us(1);
            waited += 1;
        }
        let period_us = 2_000_000 / self.format.rate + 1;
        self.mmio.delay_us(period_us);
        Ok(())
    }

    /// The error bits of STA since the last call (WERR, GAPO1/2 = underruns, BERR), cleared.
    pub fn take_errors(&mut self) -> u32 {
        let sta = self.mmio.read32(PWM_STA) & STA_ERRORS;
        if sta != 0 {
            self.mmio.write32(PWM_STA, sta);
        }
        sta
    }

    /// Stops the PWM and its clock, and hands the MMIO back.
    pub fn stop(mut self) -> M {
        self.mmio.write32(PWM_STA, STA_ERRORS);
        self.mmio.write32(PWM_CTL, 0);
        self.mmio.delay_us(2000);
        self.mmio.write32(CM_PWMCTL, CM_PASSWD | CM_KILL);
        self.mmio
    }
}

/// The driver as the `audio` device of compose (`compose_devices::audio::Audio`), shared
/// behind a spin lock. `write` blocks the executor while it feeds the FIFO: the FIFO lasts
/// 90–180 µs, less than a task switch may take, so it does not yield mid-stream.
#[derive(Debug)]
pub struct Jack<M: Mmio> {
    format: compose_devices::audio::PcmFormat,
    driver: spin::Mutex<Pwm1Audio<M>>,
}

impl<M: Mmio> Jack<M> {
    /// Starts the jack (see [`Pwm1Audio::new`]) to play `format`, from `clock`.
    pub fn open(
        mmio: M,
        format: compose_devices::audio::PcmFormat,
        clock: Clock,
    ) -> Result<Self, Error> {
        let sample = match format.sample {
            compose_devices::audio::SampleFormat::U8 => Sample::U8,
            compose_devices::audio::SampleFormat::S16Le => Sample::S16Le,
        };
        let driver = Pwm1Audio::new(
            mmio,
            Format::new(format.rate, format.channels, sample),
            clock,
        )?;
        Ok(Jack {
            format,
            driver: spin::Mutex::new(driver),
        })
    }

    /// The driver, for its figures ([`Pwm1Audio::range`], ...) and [`Pwm1Audio::stop`].
    pub fn into_driver(self) -> Pwm1Audio<M> {
        self.driver.into_inner()
    }
}

impl<M: Mmio> compose_devices::audio::Audio for Jack<M> {
    fn format(&self) -> compose_devices::audio::PcmFormat {
        self.format
    }

    async fn write(&self, frames: &[u8]) -> Result<(), compose_devices::audio::AudioError> {
        self.check_frames(frames.len())?;
        self.driver.lock().write(frames).map_err(audio_error)
    }

    async fn flush(&self) -> Result<(), compose_devices::audio::AudioError> {
        self.driver.lock().flush().map_err(audio_error)
    }
}

fn audio_error(e: Error) -> compose_devices::audio::AudioError {
    match e {
        Error::PartialFrame => compose_devices::audio::AudioError::PartialFrame,
        _ => compose_devices::audio::AudioError::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_fact_sheet() {
        // circle: PLLD/6 = 125 MHz, RNG 2834 for 44.1 kHz; rpi4-osdev: OSC/2, RNG 612.
        assert_eq!(plan(44_100, Clock::PLLD), Ok((6, 125_000_000, 2834)));
        assert_eq!(plan(44_100, Clock::OSCILLATOR), Ok((2, 27_000_000, 612)));
        assert_eq!(plan(48_000, Clock::PLLD), Ok((6, 125_000_000, 2604)));
        // 27 MHz / 255 = 105.9 kHz is the fastest 8-bit rate from the oscillator.
        assert_eq!(plan(192_000, Clock::OSCILLATOR), Err(Error::Rate(192_000)));
        assert!(plan(192_000, Clock::PLLD).is_ok());
        assert_eq!(plan(0, Clock::PLLD), Err(Error::Rate(0)));
        assert_eq!(plan(44_100, Clock { source: 6, hz: 0 }), Err(Error::Clock));
    }
}
