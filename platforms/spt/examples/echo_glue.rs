//! What the composer generates for `specs/echo.kdl` on the spt target, unchanged: the
//! stack has the spec's static address 127.0.0.1/8.
//!
//! Run it on the tender with a tap that is up: `compose-spt --mem=64 --net:service=tap0
//! echo_glue`. A host reaches 127.0.0.1 through a tap only from a network namespace whose
//! `lo` is down, with 127.0.0.2/8 on the tap and `net.ipv4.conf.all.route_localnet=1`
//! (see `tests/guest.rs`); `echo_private_glue` shows the usual setup.
#![no_std]
#![no_main]

extern crate alloc;

use compose_devices as devices;
use compose_spt_guest as platform;

static BOOT_ARGS: &[devices::bootargs::Spec] = &[devices::bootargs::Spec {
    name: "port",
    kind: devices::bootargs::Kind::U16,
    default: Some("7777"),
    doc: "TCP port to listen on",
}];

/// The manifest: the reserved entry, then the network device `service` (handle 1).
#[used]
#[unsafe(link_section = ".note.solo5.manifest")]
static SOLO5_MANIFEST: solo5_abi::Mft1Note<2> =
    solo5_abi::Mft1Note::new(&[solo5_abi::MftDevice::net("service")]);

fn main() {
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

platform::entry!(main);
