// The body of `echo_glue` and `echo_private_glue`, the same on hvt and spt: each of those
// examples brings `platform` (its target's runtime crate) into scope, defines the stack's
// address as `ADDRESS: devices::net::Ipv4Cidr`, and includes this file.

extern crate alloc;

use compose_devices as devices;

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
                address: Some(ADDRESS),
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
