// The body of `hello_glue`, the same on hvt and spt: each target's `examples/hello_glue.rs`
// brings `platform` (its runtime crate) into scope and includes this file.

extern crate alloc;

use alloc::string::String;

use compose_devices as devices;

static BOOT_ARGS: &[devices::bootargs::Spec] = &[
    devices::bootargs::Spec {
        name: "name",
        kind: devices::bootargs::Kind::Str,
        default: Some("world"),
        doc: "who to greet",
    },
    devices::bootargs::Spec {
        name: "times",
        kind: devices::bootargs::Kind::U32,
        default: Some("3"),
        doc: "how many greetings",
    },
];

/// The manifest: no devices, only the reserved entry.
#[used]
#[unsafe(link_section = ".note.solo5.manifest")]
static SOLO5_MANIFEST: solo5_abi::Mft1Note<1> = solo5_abi::Mft1Note::new(&[]);

fn main() {
    let boot = platform::boot(BOOT_ARGS);
    let console = platform::init("console", platform::Console::new());
    let clock = platform::init("clock", platform::MonotonicClock::new());
    let status = platform::run(hello::start(
        console,
        clock,
        "Hello",
        boot.args.get::<String>("name"),
        boot.args.get::<u32>("times"),
    ));
    platform::exit(devices::Termination::exit_code(status));
}

platform::entry!(main);
