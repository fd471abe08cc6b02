// The body of `devices_guest`, the same on hvt and spt: each target's
// `examples/devices_guest.rs` brings `platform` (its runtime crate) into scope and includes
// this file.

extern crate alloc;

use alloc::format;
use alloc::vec;

use compose_devices as devices;
use devices::block::Block as _;
use devices::console::Console as _;
use devices::random::Random as _;
use devices::time::{MonotonicClock as _, WallClock as _};

static BOOT_ARGS: &[devices::bootargs::Spec] = &[
    devices::bootargs::Spec {
        name: "panic",
        kind: devices::bootargs::Kind::Bool,
        default: Some("false"),
        doc: "panic after the checks",
    },
    devices::bootargs::Spec {
        name: "fault",
        kind: devices::bootargs::Kind::Bool,
        default: Some("false"),
        doc: "read unmapped memory after the checks",
    },
];

/// The manifest: the reserved entry, then the block device `storage` (handle 1).
#[used]
#[unsafe(link_section = ".note.solo5.manifest")]
static SOLO5_MANIFEST: solo5_abi::Mft1Note<2> =
    solo5_abi::Mft1Note::new(&[solo5_abi::MftDevice::block("storage")]);

fn main() {
    let boot = platform::boot(BOOT_ARGS);
    let console = platform::init("console", platform::Console::new());
    let clock = platform::init("clock", platform::MonotonicClock::new());
    let wall = platform::init("wall", platform::WallClock::new());
    let random = platform::init("random", platform::Random::new());
    let storage = platform::init("storage", platform::Block::open(&boot, "storage", 512));
    let panic = boot.args.get::<bool>("panic");
    let fault = boot.args.get::<bool>("fault");
    let ok = platform::run(async move {
        let mut ok = true;
        let mut check = |what: &str, passed: bool| {
            console.log(&format!("{what}: {}", if passed { "ok" } else { "FAILED" }));
            ok &= passed;
        };
        // The wall clock is the host's: after 2020 and before 2100.
        let secs = wall.now().as_secs();
        check("wall clock", (1_577_836_800..4_102_444_800).contains(&secs));

        // Sleeping 50 ms takes at least 50 ms, and not much more.
        let t0 = clock.elapsed();
        clock.sleep(core::time::Duration::from_millis(50)).await;
        let slept = clock.elapsed() - t0;
        check("sleep", slept.as_millis() >= 50 && slept.as_millis() < 1000);

        // Two random draws differ.
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random.fill(&mut a);
        random.fill(&mut b);
        check("random", a != b && a != [0; 32]);

        // Write two sectors at the end of the disk, read them back.
        let info = storage.info();
        console.log(&format!(
            "storage: {} sectors of {} bytes",
            info.sectors, info.sector_size
        ));
        let last = info.sectors - 2;
        let data: alloc::vec::Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
        let wrote = storage.write(last, &data).await;
        let mut back = vec![0u8; 1024];
        let read = storage.read(last, &mut back).await;
        check(
            "block write and read back",
            wrote.is_ok() && read.is_ok() && back == data,
        );
        check(
            "block past the end",
            storage.read(info.sectors, &mut back[..512]).await.is_err(),
        );

        // Clock reads per timer wake-up: short sleeps under a timeout, as a connection's
        // read waits under its idle timeout. Each wake-up costs at least a park and a
        // turn of the executor.
        let before = platform::park_stats().clock_reads;
        let wakes = 200u64;
        for _ in 0..wakes {
            let sleep = clock.sleep(core::time::Duration::from_micros(200));
            let _ = devices::executor::timeout(core::time::Duration::from_secs(60), sleep).await;
        }
        let reads = platform::park_stats().clock_reads - before;
        console.log(&format!(
            "clock reads per timer wake: {}.{:02} ({reads} reads for {wakes} wakes)",
            reads / wakes,
            reads * 100 / wakes % 100
        ));
        ok
    });
    if panic {
        panic!("asked to panic");
    }
    if fault {
        // SAFETY: deliberately reads address 8, which is never mapped (the hvt tender
        // leaves it out of guest memory; Linux never maps page 0 of an spt process): the
        // CPU faults before the load completes, so no value is ever produced. On hvt the
        // runtime's handler reports the page fault and halts; on spt the kernel ends the
        // process with SIGSEGV.
        unsafe {
            core::arch::asm!("mov {0}, qword ptr [8]", out(reg) _, options(nostack, readonly))
        };
    }
    platform::exit(if ok { 0 } else { 1 });
}

platform::entry!(main);
