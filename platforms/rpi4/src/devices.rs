//! The platform contract (docs/platform.md) on the board.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use compose_devices::bootargs::{self, BootArgs, Spec};
use compose_devices::executor::Platform;
use compose_devices::net::{Ipv4Cidr, NetError};

use crate::hw::{self, Uart};

pub use crate::hw::{exit, mac_address, program, set_program};

/// Why a device could not start.
#[derive(Debug)]
pub struct Error(&'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl core::error::Error for Error {}

/// What the unikernel was started with.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The checked boot arguments.
    pub args: BootArgs,
}

/// Reads the boot arguments: the words of the command line that start with `--` (see
/// [`crate::cmdline`]). Prints the usage and exits 0 on `--help`; prints the error and
/// exits 64 when they do not fit `specs`.
pub fn boot(specs: &'static [Spec]) -> Boot {
    let program = program();
    let (args, _) = crate::cmdline::unikernel_args(hw::cmdline());
    match BootArgs::parse(specs, args) {
        Ok(args) => Boot { args },
        Err(bootargs::Error::Help(usage)) => {
            let _ = write!(Uart, "usage: {program} [--NAME=VALUE]...\n{usage}");
            exit(0)
        }
        Err(e) => {
            let _ = writeln!(Uart, "{program}: {e}");
            let _ = writeln!(
                Uart,
                "{program}: the boot arguments come from cmdline.txt (QEMU: -append); try --help"
            );
            exit(64)
        }
    }
}

/// Keeps a started device for the rest of the run, or prints why it failed and exits 1.
pub fn init<T, E: fmt::Display>(device: &str, started: Result<T, E>) -> &'static T {
    match started {
        Ok(d) => compose_devices::leak(d),
        Err(e) => {
            let _ = writeln!(
                Uart,
                "{}: device '{device}' failed to start: {e}",
                program()
            );
            exit(1)
        }
    }
}

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Runs the application's entry future, and every task it spawns, until it completes.
pub fn run<F: Future>(future: F) -> F::Output {
    assert!(
        !RUNNING.swap(true, Ordering::AcqRel),
        "the executor is already running (one `run` per unikernel)"
    );
    let out = compose_devices::block_on::<Rpi4, _>(future);
    RUNNING.store(false, Ordering::Release);
    out
}

/// The executor platform: the generic timer, and WFI until the timer interrupt.
#[derive(Debug)]
pub struct Rpi4;

impl Platform for Rpi4 {
    fn now_ns() -> u64 {
        hw::now_ns()
    }

    fn park(deadline: Option<u64>) {
        // Nothing but the timer can wake a task (no device here raises interrupts), so
        // with no deadline the unikernel waits for good, in WFI.
        hw::sleep_until(deadline.unwrap_or(u64::MAX));
    }
}

/// The PL011 UART (GPIO 14/15), 115200 8N1.
#[derive(Debug)]
pub struct Console;

impl Console {
    /// The console.
    pub fn new() -> Result<Self, Error> {
        Ok(Console)
    }
}

impl compose_devices::console::Console for Console {
    fn write(&self, bytes: &[u8]) {
        hw::uart_write(bytes);
    }
}

/// Time since start, from the ARM generic timer (scaled by CNTFRQ, read at start).
#[derive(Debug)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// The generic timer.
    pub fn new() -> Result<Self, Error> {
        Ok(MonotonicClock)
    }
}

impl compose_devices::time::MonotonicClock for MonotonicClock {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(hw::now_ns())
    }
}

/// Random bytes.
///
/// # Entropy source
///
/// On a board: the BCM2711's RNG200 (0xFE104000), each 32-bit word read from its FIFO,
/// restarted after a failed health test. QEMU's `raspi4b` has no RNG200 (any access
/// aborts; the runtime probes it once and catches the abort). There, and on any board
/// where it does not start, the fallback is a seed the host leaves in RAM before boot:
/// 48 bytes at [`hw::SEED_ADDR`] (0x07F00000), the 16-byte header
/// `compose-rpi4-rng` then 32 random bytes, which `compose run` loads with
/// `-device loader,file=SEED,addr=0x07f00000,force-raw=on` from the host's
/// `getrandom`. The runtime copies it at start, wipes it from RAM and expands it with
/// ChaCha20 (`chacha20::ChaCha20Rng`); `Random::new` says so on the console. With
/// neither, `Random::new` fails rather than hand out predictable bytes.
pub struct Random(RandomSource);

enum RandomSource {
    Rng200,
    Seeded(alloc::boxed::Box<spin::Mutex<chacha20::ChaCha20Rng>>),
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            RandomSource::Rng200 => "Random(RNG200)",
            RandomSource::Seeded(_) => "Random(host seed, ChaCha20)",
        })
    }
}

impl Random {
    /// RNG200, else the host's seed; fails with neither.
    pub fn new() -> Result<Self, Error> {
        if hw::rng200_present() {
            return Ok(Random(RandomSource::Rng200));
        }
        match hw::host_seed() {
            Some(seed) => {
                let _ = writeln!(
                    Uart,
                    "rpi4: no hardware RNG (RNG200 absent): random bytes come from the host's seed, expanded with ChaCha20"
                );
                use rand_core::SeedableRng as _;
                Ok(Random(RandomSource::Seeded(alloc::boxed::Box::new(
                    spin::Mutex::new(chacha20::ChaCha20Rng::from_seed(seed)),
                ))))
            }
            None => Err(Error(
                "the board has no hardware RNG (RNG200 absent, as under QEMU) and the host left no seed (compose run loads one)",
            )),
        }
    }
}

impl compose_devices::random::Random for Random {
    fn fill(&self, buf: &mut [u8]) {
        match &self.0 {
            RandomSource::Rng200 => {
                for chunk in buf.chunks_mut(4) {
                    chunk.copy_from_slice(&hw::rng200_word().to_le_bytes()[..chunk.len()]);
                }
            }
            RandomSource::Seeded(rng) => {
                use rand_core::Rng as _;
                rng.lock().fill_bytes(buf);
            }
        }
    }
}

/// The board's registers as the PWM audio driver reaches them: volatile 32-bit accesses
/// at their physical addresses (mapped as device memory), delays on the generic timer.
#[derive(Debug)]
pub struct BoardMmio;

impl bcm2711_audio::Mmio for BoardMmio {
    fn read32(&mut self, addr: usize) -> u32 {
        // SAFETY: the driver only names registers of PWM1, the clock manager and GPIO,
        // which `Audio::open` found present; the MMU maps them as device memory.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
    fn write32(&mut self, addr: usize, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
    }
    fn delay_us(&mut self, us: u32) {
        let until = hw::now_ns() + u64::from(us) * 1000;
        while hw::now_ns() < until {
            core::hint::spin_loop();
        }
    }
}

/// The headphone jack: PWM1 on GPIO 40 (right) and 41 (left), driven by
/// `bcm2711-audio` from PLLD (750 MHz, the PWM clock 125 MHz). The CPU feeds the FIFO:
/// a write busy-waits while the FIFO is full.
#[derive(Debug)]
pub struct Audio(bcm2711_audio::Jack<BoardMmio>);

impl Audio {
    /// Opens the jack for `format` (`file` is the unix target's and means nothing here).
    /// Fails when the board has no PWM1 (QEMU's raspi4b: any access aborts, which this
    /// probes for and catches) or the driver refuses the format.
    pub fn open(
        _name: &'static str,
        format: compose_devices::audio::PcmFormat,
        _file: alloc::string::String,
    ) -> Result<Audio, alloc::string::String> {
        if hw::probe_read(bcm2711_audio::reg::PWM_STA).is_none() {
            return Err(
                "the board has no PWM1 (QEMU's raspi4b does not emulate PWM: the headphone jack plays on a real Pi 4)"
                    .into(),
            );
        }
        bcm2711_audio::Jack::open(BoardMmio, format, bcm2711_audio::Clock::PLLD)
            .map(Audio)
            .map_err(|e| alloc::format!("{e}"))
    }
}

impl compose_devices::audio::Audio for Audio {
    fn format(&self) -> compose_devices::audio::PcmFormat {
        self.0.format()
    }
    async fn write(&self, frames: &[u8]) -> Result<(), compose_devices::audio::AudioError> {
        self.0.write(frames).await
    }
    async fn flush(&self) -> Result<(), compose_devices::audio::AudioError> {
        self.0.flush().await
    }
}

const NO_NET: Error = Error("the rpi4 target has no network driver (GENET) yet");

macro_rules! unavailable {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// No value of it exists: its constructor always fails, and the target's
        /// `implements` list keeps specs from asking for it.
        #[derive(Debug)]
        pub enum $name {}
    )*};
}

unavailable! {
    /// A wall clock: the Pi 4 has no RTC.
    WallClock;
    /// A network interface: none (no GENET driver yet).
    Netif;
    /// An IPv4 stack: none.
    Ipv4;
    /// TCP (and its listeners and connections): none.
    Tcp;
    /// A block device: none (no EMMC2 driver yet).
    Block;
    /// A secret: none (secrets come from a block device).
    Secret;
}

/// The `ipv4` device's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Config {
    /// A static address.
    pub address: Option<Ipv4Cidr>,
    /// The default gateway.
    pub gateway: Option<core::net::Ipv4Addr>,
    /// Whether to use DHCP.
    pub dhcp: bool,
}

impl WallClock {
    /// Fails: there is no real-time clock.
    pub fn new() -> Result<WallClock, Error> {
        Err(Error("the Raspberry Pi 4 has no real-time clock"))
    }
}

impl Netif {
    /// Fails: no network driver.
    pub fn new(_name: &'static str) -> Result<Netif, Error> {
        Err(NO_NET)
    }
}

impl Ipv4 {
    /// Fails: no network driver.
    pub fn new(netif: &'static Netif, _config: Ipv4Config) -> Result<Ipv4, Error> {
        match *netif {}
    }
}

impl Tcp {
    /// Fails: no network driver.
    pub fn new(stack: &'static Ipv4) -> Result<Tcp, Error> {
        match *stack {}
    }
}

impl Block {
    /// Fails: no block device driver.
    pub fn open(_boot: &Boot, _name: &'static str, _sector_size: u32) -> Result<Block, Error> {
        Err(Error("the rpi4 target has no block device driver yet"))
    }
}

impl Secret {
    /// Fails: no block device to carry secrets.
    pub fn open(_boot: &Boot, _name: &'static str) -> Result<Secret, Error> {
        Err(Error(
            "the rpi4 target has no secrets (they need a block device)",
        ))
    }
}

impl compose_devices::time::WallClock for WallClock {
    fn now(&self) -> Duration {
        match *self {}
    }
}

impl compose_devices::net::Netif for Netif {
    fn name(&self) -> &str {
        match *self {}
    }
    fn mac(&self) -> Option<[u8; 6]> {
        match *self {}
    }
    fn mtu(&self) -> u16 {
        match *self {}
    }
}

impl compose_devices::net::Ipv4 for Ipv4 {
    fn address(&self) -> Option<Ipv4Cidr> {
        match *self {}
    }
    fn gateway(&self) -> Option<core::net::Ipv4Addr> {
        match *self {}
    }
}

impl compose_devices::net::Tcp for Tcp {
    type Listener = Tcp;
    type Flow = Tcp;
    fn listen(&self, _port: u16) -> Result<Tcp, NetError> {
        match *self {}
    }
    async fn connect(&self, _peer: core::net::SocketAddrV4) -> Result<Tcp, NetError> {
        match *self {}
    }
}

impl compose_devices::net::TcpListener for Tcp {
    type Flow = Tcp;
    async fn accept(&self) -> Result<Tcp, NetError> {
        match *self {}
    }
    fn port(&self) -> u16 {
        match *self {}
    }
}

impl compose_devices::net::TcpFlow for Tcp {
    async fn read(&mut self, _buf: &mut [u8]) -> Result<usize, NetError> {
        match *self {}
    }
    async fn write(&mut self, _buf: &[u8]) -> Result<usize, NetError> {
        match *self {}
    }
    async fn close(&mut self) -> Result<(), NetError> {
        match *self {}
    }
    fn peer(&self) -> core::net::SocketAddrV4 {
        match *self {}
    }
}

impl compose_devices::block::Block for Block {
    fn info(&self) -> compose_devices::block::BlockInfo {
        match *self {}
    }
    async fn read(
        &self,
        _sector: u64,
        _buf: &mut [u8],
    ) -> Result<(), compose_devices::block::BlockError> {
        match *self {}
    }
    async fn write(
        &self,
        _sector: u64,
        _buf: &[u8],
    ) -> Result<(), compose_devices::block::BlockError> {
        match *self {}
    }
}

impl compose_devices::secret::Secret for Secret {
    fn value(&self) -> &[u8] {
        match *self {}
    }
}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::AcqRel) {
        hw::uart_write(b"\npanicked while ending the unikernel\n");
        exit(255);
    }
    let _ = write!(Uart, "{}: panicked", program());
    if let Some(at) = info.location() {
        let _ = write!(Uart, " at {}:{}:{}", at.file(), at.line(), at.column());
    }
    let _ = writeln!(Uart, ": {}", info.message());
    exit(255)
}
