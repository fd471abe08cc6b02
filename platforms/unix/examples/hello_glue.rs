//! What the composer generates for the `hello` spec on the unix target.
//!
//! Run it with `cargo run -p compose-unix --example hello_glue -- --block:storage=FILE`.
// The glue starts every device of the spec, also those the application does not use, and
// keeps the application's status whatever its type, `()` included.
#![allow(unused_variables, clippy::let_unit_value)]

use compose_devices as devices;
use compose_unix as platform;

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

pub fn main() {
    let boot = platform::boot(BOOT_ARGS);
    let console = platform::init("console", platform::Console::new());
    let clock = platform::init("clock", platform::MonotonicClock::new());
    let wall = platform::init("wall", platform::WallClock::new());
    let random = platform::init("random", platform::Random::new());
    let service = platform::init("service", platform::Netif::new("service"));
    let stack = platform::init(
        "stack",
        platform::Ipv4::new(
            service,
            platform::Ipv4Config {
                address: Some(devices::net::Ipv4Cidr {
                    address: core::net::Ipv4Addr::new(127, 0, 0, 1),
                    prefix: 8,
                }),
                gateway: None,
                dhcp: false,
            },
        ),
    );
    let tcp = platform::init("tcp", platform::Tcp::new(stack));
    let storage = platform::init("storage", platform::Block::open(&boot, "storage", 512));
    let status = platform::run(hello::start(
        console,
        clock,
        "Hello",
        boot.args.get::<String>("name"),
        boot.args.get::<u32>("times"),
    ));
    platform::exit(devices::Termination::exit_code(status));
}
