//! Tests of the responder: requests are encoded with `dhcproto`, replies decoded with it.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};

use super::*;

const VM_MAC: MacAddr = [0xfe, 0xe1, 0xbb, 0xd1, 0x0a, 0xff];
const HOST_MAC: MacAddr = [0xfe, 0xe1, 0xba, 0xd0, 0x01, 0x02];
const HOST: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 3);
const XID: u32 = 0x1234_5678;

fn ctx(netboot: Option<&str>) -> DhcpContext<'_> {
    DhcpContext {
        guest_mac: VM_MAC,
        host_mac: HOST_MAC,
        addrs: LocalInet {
            host: HOST,
            guest: GUEST,
        },
        netboot,
    }
}

/// A DHCP message of `kind` (or plain BOOTP for `None`) from the VM, padded to 300 bytes.
fn bootp(kind: Option<MessageType>, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = v4::Message::default();
    m.set_opcode(v4::Opcode::BootRequest)
        .set_xid(XID)
        .set_chaddr(&VM_MAC)
        .set_flags(v4::Flags::default().set_broadcast());
    match kind {
        Some(kind) => {
            m.opts_mut().insert(DhcpOption::MessageType(kind));
            if let Some(a) = requested {
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
            }
            let mut v = m.to_vec().unwrap();
            v.resize(v.len().max(BOOTP_MIN_LEN), 0);
            v
        }
        None => {
            let mut v = m.to_vec().unwrap();
            // dhcproto always writes the cookie; a BOOTP client leaves the vendor area empty.
            v.truncate(BOOTP_OPTIONS);
            v.resize(BOOTP_MIN_LEN, 0);
            v
        }
    }
}

struct Wire {
    dst_mac: MacAddr,
    src_mac: MacAddr,
    sport: u16,
    dport: u16,
    udp_sum: bool,
}

impl Default for Wire {
    fn default() -> Self {
        Wire {
            dst_mac: [0xff; 6],
            src_mac: VM_MAC,
            sport: CLIENT_PORT,
            dport: SERVER_PORT,
            udp_sum: true,
        }
    }
}

/// Independent of the code under test: a plain 32-bit accumulation, folded once at the end.
fn inet_sum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn udp_sum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
    let mut p = Vec::new();
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, 17]);
    p.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    p.extend_from_slice(udp);
    inet_sum(&p)
}

fn frame(payload: &[u8], w: &Wire) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&w.sport.to_be_bytes());
    udp.extend_from_slice(&w.dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let (src, dst) = ([0, 0, 0, 0], [255, 255, 255, 255]);
    if w.udp_sum {
        let s = udp_sum(src, dst, &udp);
        udp[6..8].copy_from_slice(&s.to_be_bytes());
    }
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let s = inet_sum(&ip);
    ip[10..12].copy_from_slice(&s.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&w.dst_mac);
    f.extend_from_slice(&w.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

fn discover() -> Vec<u8> {
    frame(&bootp(Some(MessageType::Discover), None), &Wire::default())
}

/// Checks every header field of a reply and returns the decoded DHCP message.
fn check_reply(reply: &[u8]) -> v4::Message {
    assert_eq!(&reply[0..6], &VM_MAC, "destination is the VM");
    assert_eq!(
        &reply[6..12],
        &[0xfe, 0xe1, 0xbb, 0xd1, 0x0a, 0x00],
        "source is the synthetic server MAC (last byte + 1, no carry)"
    );
    assert_eq!(&reply[12..14], &[0x08, 0x00]);
    let ip = &reply[14..34];
    assert_eq!(ip[0], 0x45);
    assert_eq!(
        usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        reply.len() - 14
    );
    assert_eq!(ip[6] & 0x3f, 0, "not a fragment");
    assert_eq!(ip[9], 17);
    assert_eq!(inet_sum(ip), 0, "IPv4 header checksum");
    assert_eq!(&ip[12..16], &HOST.octets());
    assert_eq!(&ip[16..20], &GUEST.octets());
    let udp = &reply[34..];
    assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 67);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 68);
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len());
    assert_ne!(
        u16::from_be_bytes([udp[6], udp[7]]),
        0,
        "UDP checksum present"
    );
    assert_eq!(
        udp_sum(HOST.octets(), GUEST.octets(), udp),
        0,
        "UDP checksum"
    );
    assert!(
        udp.len() - 8 >= BOOTP_MIN_LEN,
        "padded to the BOOTP minimum"
    );

    let m = v4::Message::from_bytes(&udp[8..]).expect("dhcproto decodes the reply");
    assert_eq!(m.opcode(), v4::Opcode::BootReply);
    assert_eq!(m.htype(), v4::HType::Eth);
    assert_eq!(m.hlen(), 6);
    assert_eq!(m.hops(), 0);
    assert_eq!(m.xid(), XID);
    assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.yiaddr(), GUEST);
    assert_eq!(m.siaddr(), HOST);
    assert_eq!(m.giaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(m.chaddr(), &VM_MAC);
    m
}

/// The boot file name without its NUL terminator.
fn file(m: &v4::Message) -> Option<String> {
    let f = m.fname()?;
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    Some(String::from_utf8(f[..end].to_vec()).unwrap())
}

fn lease_options(m: &v4::Message, kind: MessageType) {
    let o = m.opts();
    assert_eq!(o.msg_type(), Some(kind));
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(u32::MAX))
    );
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(HOST))
    );
    network_options(m);
}

fn network_options(m: &v4::Message) {
    let o = m.opts();
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 254)))
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![HOST]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![HOST]))
    );
}

#[test]
fn discover_gets_offer() {
    let reply = respond(&discover(), &ctx(None)).expect("offer");
    let m = check_reply(&reply);
    lease_options(&m, MessageType::Offer);
    assert_eq!(
        m.opts().len(),
        6,
        "type, lease, server id, mask, router, DNS"
    );
    assert_eq!(file(&m), None);
    assert!(m.opts().get(OptionCode::Hostname).is_none());
}

#[test]
fn exact_option_bytes() {
    let reply = respond(&discover(), &ctx(None)).unwrap();
    let opts = &reply[14 + 20 + 8 + 236..];
    #[rustfmt::skip]
    let expect: &[u8] = &[
        99, 130, 83, 99,
        53, 1, 2,
        51, 4, 0xff, 0xff, 0xff, 0xff,
        54, 4, 100, 64, 1, 2,
        1, 4, 255, 255, 255, 254,
        3, 4, 100, 64, 1, 2,
        6, 4, 100, 64, 1, 2,
        255,
    ];
    assert_eq!(&opts[..expect.len()], expect);
    assert!(opts[expect.len()..].iter().all(|&b| b == 0));
    assert_eq!(reply.len(), 14 + 20 + 8 + BOOTP_MIN_LEN);
}

#[test]
fn request_gets_ack() {
    for requested in [None, Some(GUEST)] {
        let f = frame(
            &bootp(Some(MessageType::Request), requested),
            &Wire::default(),
        );
        let m = check_reply(&respond(&f, &ctx(None)).expect("ack"));
        lease_options(&m, MessageType::Ack);
    }
}

#[test]
fn request_for_another_address_gets_nak() {
    let f = frame(
        &bootp(Some(MessageType::Request), Some(Ipv4Addr::new(10, 0, 0, 9))),
        &Wire::default(),
    );
    let m = check_reply(&respond(&f, &ctx(None)).expect("nak"));
    assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
}

#[test]
fn other_types_get_nak() {
    for kind in [
        MessageType::Decline,
        MessageType::Release,
        MessageType::Inform,
    ] {
        let f = frame(&bootp(Some(kind), None), &Wire::default());
        let m = check_reply(&respond(&f, &ctx(None)).expect("nak"));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
    }
}

#[test]
fn plain_bootp_gets_network_options_only() {
    let f = frame(&bootp(None, None), &Wire::default());
    let m = check_reply(&respond(&f, &ctx(None)).expect("bootp reply"));
    assert_eq!(m.opts().msg_type(), None);
    assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(m.opts().get(OptionCode::ServerIdentifier).is_none());
    network_options(&m);
}

#[test]
fn unicast_to_the_tap_mac_is_answered() {
    let w = Wire {
        dst_mac: HOST_MAC,
        ..Wire::default()
    };
    let f = frame(&bootp(Some(MessageType::Discover), None), &w);
    assert!(respond(&f, &ctx(None)).is_some());
}

#[test]
fn zero_udp_checksum_is_accepted() {
    let w = Wire {
        udp_sum: false,
        ..Wire::default()
    };
    let f = frame(&bootp(Some(MessageType::Discover), None), &w);
    assert!(respond(&f, &ctx(None)).is_some());
}

#[test]
fn netboot_adds_file_and_hostname() {
    let m = check_reply(&respond(&discover(), &ctx(Some("installer-1"))).unwrap());
    lease_options(&m, MessageType::Offer);
    assert_eq!(file(&m), Some(NETBOOT_FILE.to_string()));
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("installer-1".into()))
    );
    // Not a valid host name, or a single character: the file but no option 12.
    for name in ["bad_", "-x", "a b", "x", "a..-b"] {
        let m = check_reply(&respond(&discover(), &ctx(Some(name))).unwrap());
        assert_eq!(file(&m), Some(NETBOOT_FILE.to_string()), "{name}");
        assert!(m.opts().get(OptionCode::Hostname).is_none(), "{name}");
    }
    // Underscores and hyphens inside labels are fine.
    let m = check_reply(&respond(&discover(), &ctx(Some("a_b-c.d"))).unwrap());
    assert!(m.opts().get(OptionCode::Hostname).is_some());
}

#[test]
fn a_hostname_that_does_not_fit_means_no_reply() {
    let long = "a".repeat(300);
    assert!(respond(&discover(), &ctx(Some(&long))).is_none());
    let fits = "a".repeat(250);
    let m = check_reply(&respond(&discover(), &ctx(Some(&fits))).unwrap());
    assert_eq!(
        m.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname(fits))
    );
}

#[test]
fn other_macs_are_ignored() {
    let other: MacAddr = [0xfe, 0xe1, 0xbb, 0xd1, 0x0a, 0xfe];
    // Ethernet source of another host.
    let w = Wire {
        src_mac: other,
        ..Wire::default()
    };
    assert!(respond(
        &frame(&bootp(Some(MessageType::Discover), None), &w),
        &ctx(None)
    )
    .is_none());
    // Unicast to someone else.
    let w = Wire {
        dst_mac: other,
        ..Wire::default()
    };
    assert!(respond(
        &frame(&bootp(Some(MessageType::Discover), None), &w),
        &ctx(None)
    )
    .is_none());
    // chaddr of another client.
    let mut b = bootp(Some(MessageType::Discover), None);
    b[BOOTP_CHADDR + 5] ^= 1;
    assert!(respond(&frame(&b, &Wire::default()), &ctx(None)).is_none());
}

#[test]
fn wrong_ports_are_ignored() {
    for (sport, dport) in [(68, 68), (67, 67), (1234, 67), (68, 1234)] {
        let w = Wire {
            sport,
            dport,
            ..Wire::default()
        };
        let f = frame(&bootp(Some(MessageType::Discover), None), &w);
        assert!(respond(&f, &ctx(None)).is_none(), "{sport}->{dport}");
    }
}

#[test]
fn unsupported_requests_pass_through() {
    let base = bootp(Some(MessageType::Request), None);
    let mut cases = Vec::new();
    let mut b = base.clone();
    b[BOOTP_OP] = 2; // a reply
    cases.push(b);
    let mut b = base.clone();
    b[BOOTP_HTYPE] = 6;
    cases.push(b);
    let mut b = base.clone();
    b[BOOTP_HLEN] = 16;
    cases.push(b);
    let mut b = base.clone();
    b[BOOTP_HOPS] = 1; // relayed
    cases.push(b);
    let mut b = base.clone();
    b[BOOTP_CIADDR..BOOTP_CIADDR + 4].copy_from_slice(&GUEST.octets()); // renewal
    cases.push(b);
    let mut b = base.clone();
    b[BOOTP_FILE] = b'x';
    cases.push(b);
    for b in cases {
        assert!(respond(&frame(&b, &Wire::default()), &ctx(None)).is_none());
    }
}

#[test]
fn bad_checksums_and_headers_are_ignored() {
    let good = discover();
    let mut f = good.clone();
    f[14 + 10] ^= 1; // IP header checksum
    assert!(respond(&f, &ctx(None)).is_none());
    let mut f = good.clone();
    f[14 + 20 + 6] ^= 1; // UDP checksum
    assert!(respond(&f, &ctx(None)).is_none());
    let mut f = good.clone();
    f[12] = 0x86; // EtherType IPv6
    assert!(respond(&f, &ctx(None)).is_none());
    let mut f = good.clone();
    f[14 + 6] = 0x20; // more fragments (header checksum then wrong too; fix it)
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let s = inet_sum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&s.to_be_bytes());
    assert!(respond(&f, &ctx(None)).is_none());
    let mut f = good;
    f[14 + 2..14 + 4].copy_from_slice(&0xffffu16.to_be_bytes()); // IP length beyond frame
    assert!(respond(&f, &ctx(None)).is_none());
}

#[test]
fn short_long_truncated_and_garbage_frames_are_ignored() {
    let good = discover();
    for len in 0..good.len() {
        assert!(respond(&good[..len], &ctx(None)).is_none(), "len {len}");
    }
    let mut big = good.clone();
    big.resize(MAX_FRAME_LEN + 1, 0);
    assert!(respond(&big, &ctx(None)).is_none());
    let mut seed: u32 = 1;
    for len in [0, 1, 14, 313, 314, 600, 1514] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        assert!(respond(&junk, &ctx(None)).is_none());
    }
}

#[test]
fn truncated_option_list_keeps_what_came_before() {
    // Message type, then an option whose length runs past the end of the packet.
    let mut b = vec![0u8; BOOTP_MIN_LEN];
    b[..BOOTP_OPTIONS].copy_from_slice(&bootp(None, None)[..BOOTP_OPTIONS]);
    let opts = [99, 130, 83, 99, 0, 0, 53, 1, 1, 12, 200, b'x'];
    b[BOOTP_OPTIONS..BOOTP_OPTIONS + opts.len()].copy_from_slice(&opts);
    let n = b.len();
    b[n - 2] = 60;
    b[n - 1] = 200;
    let m = check_reply(&respond(&frame(&b, &Wire::default()), &ctx(None)).unwrap());
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
}

#[test]
fn server_mac_wraps() {
    assert_eq!(server_mac(&[1, 2, 3, 4, 5, 6]), [1, 2, 3, 4, 5, 7]);
    assert_eq!(server_mac(&[1, 2, 3, 4, 5, 0xff]), [1, 2, 3, 4, 5, 0]);
}
