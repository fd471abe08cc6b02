//! DHCP: a stack leases its address from a minimal scripted DHCP server on the segment,
//! then talks TCP with a static stack.

mod sim;

use std::cell::{Cell, RefCell};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use compose_devices::net::{Ipv4, Tcp as _, TcpFlow as _, TcpListener as _};
use compose_devices::{sleep, spawn};
use compose_netstack::{EthernetDevice, Ipv4Cidr, Ipv4Config, Stack, Tcp};
use sim::{Hub, Node, Port, add_hub, add_node, run, static_stack};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const LEASED: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A DHCP server that offers [`LEASED`] to whoever asks, and acknowledges any request for
/// it. It answers by broadcast and keeps count of what it saw.
struct DhcpServer {
    port: Port,
    discovers: Cell<u32>,
    requests: Cell<u32>,
    /// The server's answers; a test can stop it answering.
    answering: Cell<bool>,
    log: RefCell<Vec<DhcpMessageType>>,
}

impl DhcpServer {
    fn handle(&self, frame: &[u8]) -> Option<()> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if ip.next_header() != IpProtocol::Udp {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != 67 {
            return None;
        }
        let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
        let req = DhcpRepr::parse(&dhcp).ok()?;
        self.log.borrow_mut().push(req.message_type);
        let reply_type = match req.message_type {
            DhcpMessageType::Discover => {
                self.discovers.set(self.discovers.get() + 1);
                DhcpMessageType::Offer
            }
            DhcpMessageType::Request => {
                self.requests.set(self.requests.get() + 1);
                if req.requested_ip.unwrap_or(req.client_ip) != LEASED {
                    DhcpMessageType::Nak
                } else {
                    DhcpMessageType::Ack
                }
            }
            _ => return None,
        };
        if !self.answering.get() {
            return None;
        }
        let reply = DhcpRepr {
            message_type: reply_type,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: LEASED,
            server_ip: SERVER_IP,
            router: Some(ROUTER),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER_IP),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: Some(3600),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        self.port.send(&encode(self.port.mac(), &reply));
        Some(())
    }
}

/// An Ethernet broadcast frame carrying `reply` from the server's port 67 to port 68.
fn encode(mac: [u8; 6], reply: &DhcpRepr<'_>) -> Vec<u8> {
    let dhcp_len = reply.buffer_len();
    let mut buf = vec![0u8; 14 + 20 + 8 + dhcp_len];
    let caps = ChecksumCapabilities::default();
    EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    Ipv4Repr {
        src_addr: SERVER_IP,
        dst_addr: Ipv4Addr::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp_len,
        hop_limit: 64,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut buf[14..]), &caps);
    UdpRepr {
        src_port: 67,
        dst_port: 68,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut buf[34..]),
        &SERVER_IP.into(),
        &Ipv4Addr::BROADCAST.into(),
        dhcp_len,
        |payload| {
            reply
                .emit(&mut DhcpPacket::new_unchecked(payload))
                .expect("DHCP reply fits")
        },
        &caps,
    );
    buf
}

impl Node for DhcpServer {
    fn poll(&self, _now: u64) -> Option<u64> {
        let mut buf = [0u8; 1514];
        let mut did = false;
        while let Some(n) = self.port.receive(&mut buf) {
            did |= self.handle(&buf[..n]).is_some();
        }
        // Purely reactive: it never needs a timer.
        if did { Some(0) } else { None }
    }
}

fn dhcp_stack(hub: &Rc<Hub>) -> Stack<Port> {
    let config = Ipv4Config {
        address: None,
        gateway: None,
        dhcp: true,
    };
    let stack = Stack::new(hub.port(sim::mac(50)), config, 42).unwrap();
    add_node(Rc::new(stack.clone()));
    stack
}

fn server(hub: &Rc<Hub>) -> Rc<DhcpServer> {
    let server = Rc::new(DhcpServer {
        port: hub.port(sim::mac(254)),
        discovers: Cell::new(0),
        requests: Cell::new(0),
        answering: Cell::new(true),
        log: RefCell::new(Vec::new()),
    });
    add_node(server.clone());
    server
}

#[test]
fn lease_then_tcp() {
    let hub = Hub::new();
    add_hub(&hub);
    let dhcp = server(&hub);
    let router = static_stack(&hub, 1);
    let client = dhcp_stack(&hub);
    assert_eq!(client.address(), None);
    let t_router = Tcp::new(&router).unwrap();
    let t_client = Tcp::new(&client).unwrap();
    let client2 = client.clone();
    run(async move {
        let listener = t_router.listen(7).unwrap();
        spawn(async move {
            let mut flow = listener.accept().await.unwrap();
            // The connection comes from the leased address.
            assert_eq!(flow.peer().ip(), &LEASED);
            let mut buf = [0u8; 64];
            let n = flow.read(&mut buf).await.unwrap();
            flow.write_all(&buf[..n]).await.unwrap();
            flow.close().await.unwrap();
        });
        // Connecting before the lease waits for it.
        let mut flow = t_client
            .connect(SocketAddrV4::new(ROUTER, 7))
            .await
            .unwrap();
        assert_eq!(
            client2.address(),
            Some(Ipv4Cidr {
                address: LEASED,
                prefix: 24
            })
        );
        assert_eq!(client2.gateway(), Some(ROUTER));
        flow.write_all(b"leased").await.unwrap();
        let mut buf = [0u8; 64];
        let n = flow.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"leased");
    });
    assert_eq!(dhcp.discovers.get(), 1);
    assert_eq!(dhcp.requests.get(), 1);
}

#[test]
fn no_server_no_address_and_retries() {
    let hub = Hub::new();
    add_hub(&hub);
    let dhcp = server(&hub);
    dhcp.answering.set(false);
    let client = dhcp_stack(&hub);
    let client2 = client.clone();
    let dhcp2 = dhcp.clone();
    run(async move {
        // Connecting without a lease gives up after the TCP timeout.
        let t = Tcp::new(&client2).unwrap();
        let started = sim::now();
        assert_eq!(
            t.connect(SocketAddrV4::new(ROUTER, 7)).await.unwrap_err(),
            compose_devices::net::NetError::Unreachable
        );
        assert!(sim::now() - started >= compose_netstack::TCP_TIMEOUT.as_nanos() as u64);
        assert_eq!(client2.address(), None);
        // The client keeps asking, with its retry timer, not in a busy loop.
        let asked = dhcp2.discovers.get();
        assert!((2..=20).contains(&asked), "{asked} DISCOVERs in a minute");
        // A server appears: the next DISCOVER gets a lease.
        dhcp2.answering.set(true);
        while client2.address().is_none() {
            sleep(Duration::from_secs(1)).await;
        }
    });
    assert_eq!(client.address().map(|c| c.address), Some(LEASED));
}
