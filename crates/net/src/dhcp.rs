//! The built-in DHCP/BOOTP responder of local interfaces (spec §6.4, F-NET-10).
//!
//! [`respond`] takes one frame the guest transmitted and returns the reply frame to inject
//! into the guest's receive queue, or `None` when the frame is not a request this responder
//! answers (the caller then forwards it to the tap as usual). There is no lease state: every
//! VM NIC always gets the same address ([`crate::local`]), so a reply depends on the request
//! and the NIC alone.
//!
//! The request is parsed by hand rather than with `dhcproto`: vmd looks at a handful of
//! fixed BOOTP fields and walks the options leniently (a truncated option list still yields
//! the message type seen before the cut), while a full decoder rejects such packets. The reply
//! is assembled by hand too so that its layout (option order, BOOTP padding, the cookie on
//! plain BOOTP replies) is exactly vmd's; the tests decode it with `dhcproto`.
//!
//! The guest's frame must carry complete checksums: a device that lets the guest offload
//! UDP checksums has to finish them before calling [`respond`].

use std::net::Ipv4Addr;

use crate::local::{LocalInet, LOCAL_INET_NETMASK};
use crate::locked::{ETHER_ADDR_LEN, ETHER_HDR_LEN};
use crate::MacAddr;

/// Smallest BOOTP message (RFC 951): requests below it are ignored, replies are padded to it.
pub const BOOTP_MIN_LEN: usize = 300;
/// Largest IP packet on the NIC (Ethernet MTU).
pub const ETHER_MTU: usize = 1500;
/// Largest frame considered: MTU plus the Ethernet header.
pub const MAX_FRAME_LEN: usize = ETHER_MTU + ETHER_HDR_LEN;
/// The boot file named in replies of a VM with `boot device net` (OpenBSD autoinstall).
pub const NETBOOT_FILE: &str = "auto_install";
/// Lease time of every answer: infinite, the address never changes.
pub const LEASE_INFINITE: u32 = 0xffff_ffff;

/// UDP port of BOOTP/DHCP servers.
pub const SERVER_PORT: u16 = 67;
/// UDP port of BOOTP/DHCP clients.
pub const CLIENT_PORT: u16 = 68;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const IPV4_VERSION: u8 = 4;
/// Header length of the replies' IPv4 header (no options).
const IPV4_HDR_LEN: usize = 20;
/// Smallest IHL field value (in 32-bit words).
const IPV4_MIN_IHL: usize = 5;
/// Fragment offset and "more fragments" bits of the IPv4 flags/offset field.
const IPV4_FRAG_MASK: u16 = 0x3fff;
/// TOS and TTL of replies, as OpenBSD's packet assembly sets them (IPTOS_LOWDELAY, 16).
const REPLY_TOS: u8 = 0x10;
const REPLY_TTL: u8 = 16;
const UDP_HDR_LEN: usize = 8;

const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHER: u8 = 1;
/// Offsets into the fixed BOOTP header (RFC 951).
const BOOTP_OP: usize = 0;
const BOOTP_HTYPE: usize = 1;
const BOOTP_HLEN: usize = 2;
const BOOTP_HOPS: usize = 3;
const BOOTP_XID: usize = 4;
const BOOTP_CIADDR: usize = 12;
const BOOTP_YIADDR: usize = 16;
const BOOTP_SIADDR: usize = 20;
const BOOTP_CHADDR: usize = 28;
const BOOTP_FILE: usize = 108;
const BOOTP_FILE_LEN: usize = 128;
// The boot file name must fit the `file` field with its NUL.
const _: () = assert!(NETBOOT_FILE.len() < BOOTP_FILE_LEN);
/// Where the vendor area (DHCP options) starts.
const BOOTP_OPTIONS: usize = 236;
/// Size of the options area of a reply (RFC 2131 minimum a client must accept).
const DHCP_OPTIONS_LEN: usize = 312;
/// Requests whose options area is this long or longer cannot be in one MTU; vmd treats them
/// as plain BOOTP.
const OPTIONS_MAX_LEN: usize = ETHER_MTU - IPV4_HDR_LEN - UDP_HDR_LEN - BOOTP_OPTIONS;
const DHCP_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Smallest option: code, length and one byte of data.
const MIN_OPTION_LEN: usize = 3;

const DHO_PAD: u8 = 0;
const DHO_SUBNET_MASK: u8 = 1;
const DHO_ROUTERS: u8 = 3;
const DHO_DOMAIN_NAME_SERVERS: u8 = 6;
const DHO_HOST_NAME: u8 = 12;
const DHO_DHCP_REQUESTED_ADDRESS: u8 = 50;
const DHO_DHCP_LEASE_TIME: u8 = 51;
const DHO_DHCP_MESSAGE_TYPE: u8 = 53;
const DHO_DHCP_SERVER_IDENTIFIER: u8 = 54;
const DHO_END: u8 = 255;

const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
const DHCPREQUEST: u8 = 3;
const DHCPACK: u8 = 5;
const DHCPNAK: u8 = 6;

/// What the responder knows about one local NIC.
#[derive(Debug, Clone, Copy)]
pub struct DhcpContext<'a> {
    /// The VM's MAC: the only client answered.
    pub guest_mac: MacAddr,
    /// The tap's own MAC: requests may be unicast to it instead of broadcast (F-NET-11).
    pub host_mac: MacAddr,
    /// The NIC's /31 ([`crate::local::local_inet`]).
    pub addrs: LocalInet,
    /// `Some(vm name)` for `boot device net`: the reply names [`NETBOOT_FILE`] and, if the VM
    /// name is a valid host name, carries it as option 12.
    pub netboot: Option<&'a str>,
}

/// The source MAC of replies: the VM's MAC with the last byte plus one, so the guest sees a
/// distinct, stable "server" on its link.
pub fn server_mac(guest_mac: &MacAddr) -> MacAddr {
    let mut mac = *guest_mac;
    mac[5] = mac[5].wrapping_add(1);
    mac
}

/// The reply to `frame`, a frame sent by the guest, or `None` if it gets none. With a reply,
/// the request is consumed: the caller injects the reply into the guest's receive queue and
/// does not forward the request to the tap.
pub fn respond(frame: &[u8], ctx: &DhcpContext<'_>) -> Option<Vec<u8>> {
    // At least a minimal BOOTP message behind the Ethernet header (vmd's bound; the IP and UDP
    // headers are then checked on top), at most one MTU.
    if frame.len() < ETHER_HDR_LEN + BOOTP_MIN_LEN || frame.len() > MAX_FRAME_LEN {
        return None;
    }
    let dst = &frame[..ETHER_ADDR_LEN];
    if dst != [0xff; ETHER_ADDR_LEN] && dst != ctx.host_mac {
        return None;
    }
    if frame[ETHER_ADDR_LEN..2 * ETHER_ADDR_LEN] != ctx.guest_mac {
        return None;
    }
    if be16(frame, 2 * ETHER_ADDR_LEN)? != ETHERTYPE_IPV4 {
        return None;
    }
    let bootp = udp_payload(&frame[ETHER_HDR_LEN..])?;
    let request = parse_request(bootp, &ctx.guest_mac)?;
    let reply = build_bootp_reply(&request, ctx)?;
    Some(build_frame(&reply, ctx))
}

/// The fields of a request that shape the answer.
struct Request {
    xid: [u8; 4],
    /// DHCP message type; `None` for plain BOOTP.
    dhcp_type: Option<u8>,
    requested: Option<Ipv4Addr>,
}

/// The UDP payload of an IPv4/UDP packet from port 68 to port 67, with valid checksums.
fn udp_payload(ip: &[u8]) -> Option<&[u8]> {
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != IPV4_VERSION || ihl < IPV4_MIN_IHL * 4 || ip.len() < ihl + UDP_HDR_LEN {
        return None;
    }
    if checksum(&[&ip[..ihl]]) != 0 {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    // A fragment cannot hold a whole request and vmd does no reassembly.
    if total < ihl + UDP_HDR_LEN || total > ip.len() || be16(ip, 6)? & IPV4_FRAG_MASK != 0 {
        return None;
    }
    if ip[9] != IPPROTO_UDP {
        return None;
    }
    let udp = &ip[ihl..total];
    let (sport, dport, ulen) = (be16(udp, 0)?, be16(udp, 2)?, usize::from(be16(udp, 4)?));
    if ulen < UDP_HDR_LEN || ulen > udp.len() {
        return None;
    }
    let udp = &udp[..ulen];
    // A zero checksum means the sender computed none (allowed for UDP over IPv4).
    if be16(udp, 6)? != 0 && checksum(&[&pseudo_header(&ip[12..16], &ip[16..20], ulen), udp]) != 0 {
        return None;
    }
    if sport != CLIENT_PORT || dport != SERVER_PORT {
        return None;
    }
    Some(&udp[UDP_HDR_LEN..])
}

/// Checks the BOOTP header as vmd does and reads the two DHCP options it cares about.
fn parse_request(bootp: &[u8], guest_mac: &MacAddr) -> Option<Request> {
    if bootp.len() < BOOTP_OPTIONS {
        return None;
    }
    if bootp[BOOTP_OP] != BOOTREQUEST
        || bootp[BOOTP_HTYPE] != HTYPE_ETHER
        || usize::from(bootp[BOOTP_HLEN]) != ETHER_ADDR_LEN
        || bootp[BOOTP_CHADDR..BOOTP_CHADDR + ETHER_ADDR_LEN] != guest_mac[..]
    {
        return None;
    }
    // Renewals (ciaddr set), requests for a given boot file and relayed requests are not
    // this responder's business: they go on to the tap.
    if bootp[BOOTP_CIADDR..BOOTP_CIADDR + 4] != [0; 4]
        || bootp[BOOTP_FILE] != 0
        || bootp[BOOTP_HOPS] != 0
    {
        return None;
    }
    let mut xid = [0u8; 4];
    xid.copy_from_slice(&bootp[BOOTP_XID..BOOTP_XID + 4]);
    let mut request = Request {
        xid,
        dhcp_type: None,
        requested: None,
    };
    // The options area ends where the UDP datagram does. vmd measures it to the end of the
    // frame instead, which differs only for frames with trailing Ethernet padding.
    let opts = &bootp[BOOTP_OPTIONS..];
    if opts.len() > DHCP_COOKIE.len() + MIN_OPTION_LEN
        && opts.len() < OPTIONS_MAX_LEN
        && opts[..DHCP_COOKIE.len()] == DHCP_COOKIE
    {
        read_options(&opts[DHCP_COOKIE.len()..], &mut request);
    }
    Some(request)
}

/// Walks the options up to END or to the first one that overruns the area, keeping what was
/// read before (vmd's leniency).
fn read_options(opts: &[u8], request: &mut Request) {
    let mut pos = 0;
    while pos + 1 < opts.len() && opts[pos] != DHO_END {
        let code = opts[pos];
        if code == DHO_PAD {
            pos += 1;
            continue;
        }
        let len = usize::from(opts[pos + 1]);
        let Some(data) = opts.get(pos + 2..pos + 2 + len) else {
            break;
        };
        match (code, data) {
            (DHO_DHCP_MESSAGE_TYPE, &[t]) => request.dhcp_type = Some(t),
            (DHO_DHCP_REQUESTED_ADDRESS, &[a, b, c, d]) => {
                request.requested = Some(Ipv4Addr::new(a, b, c, d))
            }
            _ => {}
        }
        pos += 2 + len;
    }
}

/// The BOOTP/DHCP reply message (UDP payload).
fn build_bootp_reply(request: &Request, ctx: &DhcpContext<'_>) -> Option<Vec<u8>> {
    let LocalInet { host, guest } = ctx.addrs;
    let mut msg = vec![0u8; BOOTP_OPTIONS + DHCP_OPTIONS_LEN];
    msg[BOOTP_OP] = BOOTREPLY;
    msg[BOOTP_HTYPE] = HTYPE_ETHER;
    msg[BOOTP_HLEN] = ETHER_ADDR_LEN as u8;
    msg[BOOTP_XID..BOOTP_XID + 4].copy_from_slice(&request.xid);
    msg[BOOTP_YIADDR..BOOTP_YIADDR + 4].copy_from_slice(&guest.octets());
    msg[BOOTP_SIADDR..BOOTP_SIADDR + 4].copy_from_slice(&host.octets());
    msg[BOOTP_CHADDR..BOOTP_CHADDR + ETHER_ADDR_LEN].copy_from_slice(&ctx.guest_mac);
    let hostname = ctx.netboot.filter(|name| valid_hostname(name));
    if ctx.netboot.is_some() {
        msg[BOOTP_FILE..BOOTP_FILE + NETBOOT_FILE.len()].copy_from_slice(NETBOOT_FILE.as_bytes());
    }

    let mut opts = Vec::with_capacity(DHCP_OPTIONS_LEN);
    opts.extend_from_slice(&DHCP_COOKIE);
    if let Some(t) = request.dhcp_type {
        // No state machine: every VM always gets the same address and options.
        let answer = match t {
            DHCPDISCOVER => DHCPOFFER,
            DHCPREQUEST if request.requested.is_none_or(|a| a == guest) => DHCPACK,
            _ => DHCPNAK,
        };
        opts.extend_from_slice(&[DHO_DHCP_MESSAGE_TYPE, 1, answer]);
        opts.extend_from_slice(&[DHO_DHCP_LEASE_TIME, 4]);
        opts.extend_from_slice(&LEASE_INFINITE.to_be_bytes());
        opts.extend_from_slice(&[DHO_DHCP_SERVER_IDENTIFIER, 4]);
        opts.extend_from_slice(&host.octets());
    }
    opts.extend_from_slice(&[DHO_SUBNET_MASK, 4]);
    opts.extend_from_slice(&LOCAL_INET_NETMASK.octets());
    opts.extend_from_slice(&[DHO_ROUTERS, 4]);
    opts.extend_from_slice(&host.octets());
    opts.extend_from_slice(&[DHO_DOMAIN_NAME_SERVERS, 4]);
    opts.extend_from_slice(&host.octets());
    // vmd skips one-character names.
    if let Some(name) = hostname.filter(|n| n.len() > 1) {
        // Room for code, length, the name and END, else no reply at all (as vmd).
        let len = u8::try_from(name.len()).ok()?;
        if opts.len() + 2 + name.len() + 1 > DHCP_OPTIONS_LEN {
            return None;
        }
        opts.extend_from_slice(&[DHO_HOST_NAME, len]);
        opts.extend_from_slice(name.as_bytes());
    }
    opts.push(DHO_END);
    msg[BOOTP_OPTIONS..BOOTP_OPTIONS + opts.len()].copy_from_slice(&opts);
    msg.truncate((BOOTP_OPTIONS + opts.len()).max(BOOTP_MIN_LEN));
    Some(msg)
}

/// Ethernet + IPv4 + UDP around `payload`, from the synthetic server to the guest.
fn build_frame(payload: &[u8], ctx: &DhcpContext<'_>) -> Vec<u8> {
    let LocalInet { host, guest } = ctx.addrs;
    let udp_len = UDP_HDR_LEN + payload.len();
    let ip_len = IPV4_HDR_LEN + udp_len;
    let mut f = Vec::with_capacity(ETHER_HDR_LEN + ip_len);
    f.extend_from_slice(&ctx.guest_mac);
    f.extend_from_slice(&server_mac(&ctx.guest_mac));
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());

    let ip_start = f.len();
    f.push((IPV4_VERSION << 4) | IPV4_MIN_IHL as u8);
    f.push(REPLY_TOS);
    // Both lengths are below the MTU: the payload is at most 236 + 312 bytes.
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, REPLY_TTL, IPPROTO_UDP, 0, 0]);
    f.extend_from_slice(&host.octets());
    f.extend_from_slice(&guest.octets());
    let ip_sum = checksum(&[&f[ip_start..]]);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());

    let udp_start = f.len();
    f.extend_from_slice(&SERVER_PORT.to_be_bytes());
    f.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let pseudo = pseudo_header(&host.octets(), &guest.octets(), udp_len);
    let mut udp_sum = checksum(&[&pseudo, &f[udp_start..]]);
    // Zero means "no checksum" in UDP; a computed zero is sent as all ones (RFC 768).
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&udp_sum.to_be_bytes());
    f
}

fn pseudo_header(src: &[u8], dst: &[u8], udp_len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(src);
    p[4..8].copy_from_slice(dst);
    p[9] = IPPROTO_UDP;
    // Callers pass a UDP length read from or bounded by a 16-bit field.
    p[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`; 0 when a message that
/// contains its own checksum is intact. Every part but the last must have an even length.
pub(crate) fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold as we go so a long message cannot overflow.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// res_hnok(3): dot-separated labels of letters, digits, '-' and '_', where a label starts
/// and ends with a letter or digit. Names that fail are not sent as option 12.
fn valid_hostname(name: &str) -> bool {
    let b = name.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        let border = i == 0 || b[i - 1] == b'.' || i + 1 == b.len() || b[i + 1] == b'.';
        c == b'.' || c.is_ascii_alphanumeric() || (!border && (c == b'-' || c == b'_'))
    })
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
