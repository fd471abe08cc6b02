//! Random bytes from the CPU's hardware random number generator (see [`Random`]).

use crate::Error;

/// Which instruction the random device uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Rdseed,
    Rdrand,
}

/// Cryptographically secure random bytes from the CPU's hardware generator.
///
/// # Entropy source
///
/// Solo5 tenders offer no entropy call, so randomness comes from the CPU: `RDSEED` when
/// the CPU has it (output of the hardware entropy source, conditioned), else `RDRAND`
/// (a NIST SP 800-90A CTR_DRBG that the CPU reseeds from that source). Both are available
/// in a KVM guest and in an spt process when the host CPU has them (CPUID is passed
/// through). Each draw is retried, as Intel recommends, because both instructions may
/// transiently report no data; a CPU that keeps failing is treated as broken (panic).
/// A CPU with neither instruction has no entropy source, and [`Random::new`] fails rather
/// than hand out predictable bytes.
#[derive(Debug)]
pub struct Random {
    source: Source,
}

impl Random {
    /// The CPU's random number generator. Fails if the CPU has neither RDSEED nor RDRAND.
    pub fn new() -> Result<Self, Error> {
        match detect() {
            Some(source) => Ok(Random { source }),
            None => Err(Error::new(
                "the CPU has no hardware random number generator (RDSEED or RDRAND)",
            )),
        }
    }
}

impl compose_devices::random::Random for Random {
    fn fill(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = match draw(self.source) {
                Some(w) => w,
                None => panic!("the CPU's random number generator keeps failing"),
            };
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A seed for things that need to differ between boots but need not be secret (TCP
/// sequence numbers, ephemeral ports, DHCP ids): a hardware random number, or the TSC
/// when the CPU has no generator.
pub fn seed() -> u64 {
    if let Some(w) = detect().and_then(draw) {
        return w;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // Mix the TSC (the time since the host booted, to the cycle) with a multiplier
        // so that neighbouring boots get unrelated seeds.
        // SAFETY: RDTSC has no preconditions; the Solo5 targets allow it (CR4.TSD = 0).
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        tsc.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
    }
    #[cfg(not(target_arch = "x86_64"))]
    0x9e37_79b9_7f4a_7c15
}

/// The best instruction this CPU has.
#[cfg(target_arch = "x86_64")]
fn detect() -> Option<Source> {
    use core::arch::x86_64::__cpuid;
    let max_leaf = __cpuid(0).eax;
    // CPUID.(EAX=7,ECX=0):EBX bit 18 = RDSEED; CPUID.1:ECX bit 30 = RDRAND.
    if max_leaf >= 7 && __cpuid(7).ebx & (1 << 18) != 0 {
        return Some(Source::Rdseed);
    }
    if __cpuid(1).ecx & (1 << 30) != 0 {
        return Some(Source::Rdrand);
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Option<Source> {
    None
}

/// One 64-bit draw, retrying transient failures; `None` if the instruction keeps failing.
#[cfg(target_arch = "x86_64")]
fn draw(source: Source) -> Option<u64> {
    // Intel's guidance: RDRAND failing 10 times in a row means a broken CPU. RDSEED fails
    // more often under load (it waits for fresh entropy), so it gets more tries.
    let tries = match source {
        Source::Rdseed => 100,
        Source::Rdrand => 10,
    };
    for _ in 0..tries {
        let mut word = 0u64;
        // SAFETY: `detect` found this instruction in CPUID, which is the target feature
        // that `rdseed64`/`rdrand64` are compiled with.
        let ok = unsafe {
            match source {
                Source::Rdseed => rdseed64(&mut word),
                Source::Rdrand => rdrand64(&mut word),
            }
        };
        if ok {
            return Some(word);
        }
        core::hint::spin_loop();
    }
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn draw(_source: Source) -> Option<u64> {
    None
}

/// RDSEED into `word`; false when the CPU had no data ready. Calling it (unsafe, because
/// of the target feature) requires a CPU with RDSEED.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "rdseed")]
fn rdseed64(word: &mut u64) -> bool {
    core::arch::x86_64::_rdseed64_step(word) == 1
}

/// RDRAND into `word`; false when the CPU had no data ready. Calling it (unsafe, because
/// of the target feature) requires a CPU with RDRAND.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "rdrand")]
fn rdrand64(word: &mut u64) -> bool {
    core::arch::x86_64::_rdrand64_step(word) == 1
}
