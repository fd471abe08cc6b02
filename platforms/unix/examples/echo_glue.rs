//! What the composer generates for the `echo` spec on the unix target.
//!
//! Run it with `cargo run -p compose-unix --example echo_glue -- --port=7777`.

use compose_devices as devices;
use compose_unix as platform;

static BOOT_ARGS: &[devices::bootargs::Spec] = &[devices::bootargs::Spec {
    name: "port",
    kind: devices::bootargs::Kind::U16,
    default: Some("7"),
    doc: "TCP port to echo on",
}];

pub fn main() {
    let boot = platform::boot(BOOT_ARGS);
    let console = platform::init("console", platform::Console::new());
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
    let status = platform::run(echo::start(console, tcp, boot.args.get::<u16>("port")));
    platform::exit(devices::Termination::exit_code(status));
}
