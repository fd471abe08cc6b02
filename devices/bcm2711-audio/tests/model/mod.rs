//! A register-level model of the BCM2711's PWM1, the PWM clock of the clock manager and
//! GPIO function select / pulls, written from the fact sheet (docs/rpi4 facts: BCM2835
//! peripherals datasheet with ma16/rpio's errata, circle, Linux), driven through the
//! driver's [`Mmio`] trait.
//!
//! Time is model time: every register access takes [`ACCESS_NS`], `delay_us` advances it,
//! and the PWM consumes its FIFO at the configured rate in that time (two words per period
//! of RNG PWM-clock cycles: channel 1, then channel 2). What the model checks, recording
//! each breach in [`Model::violations`]:
//!
//! - every clock-manager write carries the password 0x5A in bits 31:24 (otherwise it is
//!   ignored, as the hardware and QEMU do);
//! - DIV, SRC and MASH change only while the clock is disabled and no longer BUSY; BUSY
//!   stays 1 for [`BUSY_LINGER_NS`] after ENAB is cleared, so a driver that does not wait is
//!   caught; ENAB is set by a write that changes nothing else; DIVI ≥ 2; MASH ≠ 0 exactly
//!   when DIVF ≠ 0; the source is one the Pi 4 has (oscillator 54 MHz, PLLD 750 MHz);
//! - GPIO 40/41 are in ALT0 with no pulls when a PWM channel is enabled, and the BCM2835
//!   pull registers (GPPUD, GPPUDCLK0/1) are not touched;
//! - at enable: the clock runs, RNG1 = RNG2 ≠ 0, both channels in PWM mode from the FIFO,
//!   RPTL clear; CLRF has been written before the first FIFO word;
//! - no FIF1 write while STA.FULL1 (the word is lost and WERR set, as on hardware);
//! - no word above the range; no two CTL writes back to back (BERR);
//! - underruns (a channel finds the FIFO empty at a period boundary) are timestamped.

use bcm2711_audio::{Mmio, reg::*};
use std::collections::VecDeque;

/// Model time of one register access.
pub const ACCESS_NS: u64 = 50;
/// How long BUSY stays set after the clock is disabled.
pub const BUSY_LINGER_NS: u64 = 5_000;
/// Two writes to CTL closer than this set BERR (ma16/rpio: writes too fast to the same
/// register).
pub const CTL_GAP_NS: u64 = 100;

const GPPUD: usize = 0xFE20_0094;
const GPPUDCLK0: usize = 0xFE20_0098;
const GPPUDCLK1: usize = 0xFE20_009C;

/// The model.
#[derive(Debug)]
pub struct Model {
    /// Model time, ns.
    pub now_ns: u64,
    /// FIFO depth in words (8 per the datasheet, 16 per ma16/rpio's measurement).
    pub depth: usize,
    /// Every breach of the protocol, in order.
    pub violations: Vec<String>,
    /// Words consumed by channel 1 (GPIO 40, right) and channel 2 (GPIO 41, left).
    pub ch1: Vec<u32>,
    /// See `ch1`.
    pub ch2: Vec<u32>,
    /// (time, channel) of each underrun.
    pub gaps: Vec<(u64, u8)>,
    /// Time of the first and last word consumed.
    pub first_word_ns: Option<u64>,
    /// See `first_word_ns`.
    pub last_word_ns: Option<u64>,
    /// The most words the FIFO held at once.
    pub max_fill: usize,
    /// The PWM clock at the time PWM was enabled, and the range.
    pub pwm_hz: Option<u64>,
    // Clock manager.
    cm_ctl: u32,
    cm_div: u32,
    busy: bool,
    busy_until: Option<u64>,
    // GPIO.
    gpfsel: [u32; 6],
    pulls: [u32; 4],
    // PWM.
    ctl: u32,
    sta: u32,
    rng1: u32,
    rng2: u32,
    dmac: u32,
    fifo: VecDeque<u32>,
    cleared: bool,
    last_ctl_write: Option<u64>,
    /// PWM clock cycle count at which consumption started, and periods done since.
    start_cycle: Option<(u64, u64)>,
    start_ns: u64,
}

impl Model {
    /// A model at reset: QEMU's and the hardware's reset values where the fact sheet has
    /// them (CM_PWMCTL 0x200, GPIO 40/41 pull-down).
    pub fn new(depth: usize) -> Self {
        Model {
            now_ns: 0,
            depth,
            violations: Vec::new(),
            ch1: Vec::new(),
            ch2: Vec::new(),
            gaps: Vec::new(),
            first_word_ns: None,
            last_word_ns: None,
            max_fill: 0,
            pwm_hz: None,
            cm_ctl: 0x200,
            cm_div: 0,
            busy: false,
            busy_until: None,
            gpfsel: [0; 6],
            pulls: [0, 0, 0x50aa_a95a, 0],
            ctl: 0,
            sta: STA_EMPT1,
            rng1: 0x20,
            rng2: 0x20,
            dmac: 0x0707,
            fifo: VecDeque::new(),
            cleared: false,
            last_ctl_write: None,
            start_cycle: None,
            start_ns: 0,
        }
    }

    fn violation(&mut self, what: impl Into<String>) {
        let what = what.into();
        self.violations
            .push(format!("at {} ns: {what}", self.now_ns));
    }

    /// The PWM clock, if the clock manager runs one.
    pub fn clock_hz(&self) -> Option<u64> {
        if self.cm_ctl & CM_ENAB == 0 {
            return None;
        }
        let src: u64 = match self.cm_ctl & CM_SRC_MASK {
            1 => 54_000_000,
            6 => 750_000_000,
            _ => return None,
        };
        let divi = u64::from(self.cm_div >> 12 & 0xFFF);
        let divf = u64::from(self.cm_div & 0xFFF);
        let mash = self.cm_ctl & CM_MASH_MASK;
        if divi == 0 {
            return None;
        }
        Some(if mash == 0 {
            src / divi
        } else {
            src * 4096 / (divi * 4096 + divf)
        })
    }

    /// The range both channels use.
    pub fn range(&self) -> u32 {
        self.rng1
    }

    fn enabled(&self) -> bool {
        self.ctl & (CTL_PWEN1 | CTL_PWEN2) == (CTL_PWEN1 | CTL_PWEN2)
    }

    /// Advances model time, consuming the FIFO at period boundaries.
    pub fn advance(&mut self, ns: u64) {
        self.now_ns += ns;
        if let Some(t) = self.busy_until
            && self.now_ns >= t
        {
            self.busy = false;
            self.busy_until = None;
        }
        let (Some(hz), Some((c0, mut done))) = (self.clock_hz(), self.start_cycle) else {
            return;
        };
        if !self.enabled() || self.rng1 == 0 {
            return;
        }
        let cycles = u128::from(self.now_ns - self.start_ns) * u128::from(hz) / 1_000_000_000;
        let periods = (cycles as u64 + c0) / u64::from(self.rng1);
        while done < periods {
            done += 1;
            let t = self.start_ns
                + ((u128::from(done * u64::from(self.rng1) - c0) * 1_000_000_000) / u128::from(hz))
                    as u64;
            for ch in [1u8, 2] {
                match self.fifo.pop_front() {
                    Some(w) => {
                        if ch == 1 {
                            self.ch1.push(w);
                        } else {
                            self.ch2.push(w);
                        }
                        self.first_word_ns.get_or_insert(t);
                        self.last_word_ns = Some(t);
                    }
                    None => {
                        self.sta |= if ch == 1 { STA_GAPO1 } else { STA_GAPO2 };
                        self.gaps.push((t, ch));
                    }
                }
            }
        }
        self.start_cycle = Some((c0, done));
    }

    /// Underruns between the first and the last word played: audible gaps.
    pub fn gaps_mid_stream(&self) -> Vec<(u64, u8)> {
        let (Some(a), Some(b)) = (self.first_word_ns, self.last_word_ns) else {
            return Vec::new();
        };
        self.gaps
            .iter()
            .copied()
            .filter(|&(t, _)| t > a && t < b)
            .collect()
    }

    fn sta_read(&self) -> u32 {
        let mut s = self.sta & STA_ERRORS;
        if self.fifo.len() >= self.depth {
            s |= STA_FULL1;
        }
        if self.fifo.is_empty() {
            s |= STA_EMPT1;
        }
        if self.ctl & CTL_PWEN1 != 0 {
            s |= 1 << 9;
        }
        if self.ctl & CTL_PWEN2 != 0 {
            s |= 1 << 10;
        }
        s
    }

    fn cm_write(&mut self, addr: usize, v: u32) {
        if v >> 24 != 0x5A {
            self.violation(format!(
                "clock-manager write {v:#010x} to {addr:#x} without the password: ignored"
            ));
            return;
        }
        let v = v & 0x00FF_FFFF;
        let running = self.cm_ctl & CM_ENAB != 0 || self.busy;
        if addr == CM_PWMDIV {
            if running && v != self.cm_div {
                self.violation("CM_PWMDIV changed while the clock is enabled or BUSY");
            }
            self.cm_div = v;
            return;
        }
        if v & CM_KILL != 0 {
            self.cm_ctl = v & !CM_ENAB;
            self.busy = false;
            self.busy_until = None;
            return;
        }
        let config = CM_SRC_MASK | CM_MASH_MASK;
        let (old, new) = (self.cm_ctl, v);
        if old & config != new & config && running {
            self.violation(format!(
                "CM_PWMCTL source/MASH changed ({old:#x} -> {new:#x}) while the clock is enabled or BUSY"
            ));
        }
        let enabling = old & CM_ENAB == 0 && new & CM_ENAB != 0;
        if enabling {
            if old & config != new & config {
                self.violation(
                    "CM_PWMCTL ENAB set in the same write that changes the source or MASH",
                );
            }
            let divi = self.cm_div >> 12 & 0xFFF;
            let divf = self.cm_div & 0xFFF;
            let mash = new & CM_MASH_MASK;
            if divi < 2 {
                self.violation(format!("PWM clock enabled with DIVI {divi} (at least 2)"));
            }
            if (mash != 0) != (divf != 0) {
                self.violation(format!(
                    "PWM clock enabled with MASH {} and DIVF {divf} (MASH > 0 exactly with a fraction)",
                    mash >> 9
                ));
            }
            if !matches!(new & CM_SRC_MASK, 1 | 6) {
                self.violation(format!(
                    "PWM clock source {} is not the oscillator (1) or PLLD (6)",
                    new & CM_SRC_MASK
                ));
            }
            self.busy = true;
            self.busy_until = None;
        }
        if old & CM_ENAB != 0 && new & CM_ENAB == 0 {
            self.busy_until = Some(self.now_ns + BUSY_LINGER_NS);
        }
        self.cm_ctl = new & !CM_BUSY;
    }

    fn pwm_ctl_write(&mut self, v: u32) {
        if let Some(t) = self.last_ctl_write
            && self.now_ns - t < CTL_GAP_NS
        {
            self.sta |= STA_BERR;
            self.violation("two CTL writes back to back (BERR)");
        }
        self.last_ctl_write = Some(self.now_ns);
        if v & CTL_CLRF1 != 0 {
            self.fifo.clear();
            self.cleared = true;
        }
        let was = self.enabled();
        let enabling = v & (CTL_PWEN1 | CTL_PWEN2) != 0 && self.ctl & (CTL_PWEN1 | CTL_PWEN2) == 0;
        if enabling {
            if self.gpfsel[4] & 0o77 != GPFSEL4_40_41_ALT0 {
                self.violation(format!(
                    "PWM enabled with GPFSEL4 bits 5:0 = {:#o}, not GPIO 40/41 in ALT0 (0o44)",
                    self.gpfsel[4] & 0o77
                ));
            }
            if self.pulls[2] & PULL_40_41_MASK != 0 {
                self.violation("PWM enabled with pulls on GPIO 40/41");
            }
            if !self.busy || self.clock_hz().is_none() {
                self.violation("PWM enabled without a running PWM clock");
            }
            if self.rng1 != self.rng2 || self.rng1 == 0 {
                self.violation(format!(
                    "PWM enabled with RNG1 {} and RNG2 {} (equal and non-zero with a shared FIFO)",
                    self.rng1, self.rng2
                ));
            }
            let need = CTL_PWEN1 | CTL_PWEN2 | CTL_USEF1 | CTL_USEF2;
            if v & need != need {
                self.violation(format!(
                    "CTL {v:#x} does not enable both channels from the FIFO"
                ));
            }
            if v & (CTL_MODE1 | CTL_MODE2 | CTL_RPTL1 | CTL_RPTL2) != 0 {
                self.violation(format!("CTL {v:#x}: serialiser mode or RPTL set"));
            }
        }
        self.ctl = v & !CTL_CLRF1;
        if self.enabled() && !was {
            self.pwm_hz = self.clock_hz();
            self.start_ns = self.now_ns;
            self.start_cycle = Some((0, 0));
        } else if !self.enabled() {
            self.start_cycle = None;
        }
    }

    fn fifo_write(&mut self, v: u32) {
        if !self.cleared {
            self.violation("FIF1 written before the FIFO was cleared (CLRF1)");
        }
        if self.fifo.len() >= self.depth {
            self.sta |= STA_WERR1;
            self.violation(format!("FIF1 written while STA.FULL1 (word {v} lost)"));
            return;
        }
        if v > self.rng1 {
            self.violation(format!("duty {v} above the range {}", self.rng1));
        }
        self.fifo.push_back(v);
        self.max_fill = self.max_fill.max(self.fifo.len());
    }
}

impl Mmio for Model {
    fn read32(&mut self, addr: usize) -> u32 {
        self.advance(ACCESS_NS);
        match addr {
            CM_PWMCTL => self.cm_ctl | if self.busy { CM_BUSY } else { 0 },
            CM_PWMDIV => self.cm_div,
            a if (0xFE20_0000..0xFE20_0018).contains(&a) => self.gpfsel[(a - 0xFE20_0000) / 4],
            a if (0xFE20_00E4..=0xFE20_00F0).contains(&a) => self.pulls[(a - 0xFE20_00E4) / 4],
            GPPUD | GPPUDCLK0 | GPPUDCLK1 => {
                self.violation("BCM2835 pull registers (GPPUD/GPPUDCLK) read on a BCM2711");
                0
            }
            PWM_CTL => self.ctl,
            PWM_STA => self.sta_read(),
            PWM_DMAC => self.dmac,
            PWM_RNG1 => self.rng1,
            PWM_RNG2 => self.rng2,
            PWM_FIF1 => 0x7077_6d30,
            PWM_DAT1 | PWM_DAT2 => 0,
            a => {
                self.violation(format!("read of unmodelled address {a:#x}"));
                0
            }
        }
    }

    fn write32(&mut self, addr: usize, v: u32) {
        self.advance(ACCESS_NS);
        match addr {
            CM_PWMCTL | CM_PWMDIV => self.cm_write(addr, v),
            a if (0xFE20_0000..0xFE20_0018).contains(&a) => self.gpfsel[(a - 0xFE20_0000) / 4] = v,
            a if (0xFE20_00E4..=0xFE20_00F0).contains(&a) => self.pulls[(a - 0xFE20_00E4) / 4] = v,
            GPPUD | GPPUDCLK0 | GPPUDCLK1 => {
                self.violation("BCM2835 pull registers (GPPUD/GPPUDCLK) written on a BCM2711");
            }
            PWM_CTL => self.pwm_ctl_write(v),
            PWM_STA => self.sta &= !(v & STA_ERRORS),
            PWM_DMAC => self.dmac = v,
            PWM_RNG1 => self.rng1 = v,
            PWM_RNG2 => self.rng2 = v,
            PWM_FIF1 => self.fifo_write(v),
            PWM_DAT1 | PWM_DAT2 => {}
            a => self.violation(format!("write of unmodelled address {a:#x}")),
        }
    }

    fn delay_us(&mut self, us: u32) {
        self.advance(u64::from(us) * 1000);
    }
}
