//! rtnetlink operations on host interfaces (F-NET-02..06, F-NET-08, F-NET-09, F-NET-12).
//!
//! One blocking `NETLINK_ROUTE` socket, one request at a time, each acknowledged before the
//! next: the priv process configures a few interfaces per VM start, so simplicity beats
//! batching. neli's socket handle is used directly rather than its router, which would start a
//! thread per socket.
//!
//! How OpenBSD concepts map onto Linux here:
//! - **description** → `IFLA_IFALIAS`, truncated to [`MAX_DESCR_LEN`] like vmd's;
//! - **switch** → a Linux bridge; a tap joins it through `IFLA_MASTER`;
//! - **rdomain N** → a VRF device `vrfN` bound to routing table [`VRF_TABLE_BASE`] + N
//!   (created on first use). Tables 253..255 are the kernel's default/main/local tables, so
//!   "table N" would clash for high rdomains; the offset keeps every rdomain in its own table.
//!   rdomain 0 is the main table: no VRF. A bridge port cannot also be a VRF port, so for a
//!   tap on a switch the daemon puts the bridge into the VRF;
//! - **interface group** → the link's numeric `IFLA_GROUP`, [`group_number`] of the name.
//!   Linux gives a link a single group, not a set: the daemon picks which name applies.

use std::io;
use std::net::IpAddr;

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, Rtm};
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::{Size, ToBytes};

/// vmd's description buffer (IFDESCRSIZE 64, with the NUL): longer descriptions are cut.
pub const MAX_DESCR_LEN: usize = 63;
/// Routing table of rdomain N is this plus N.
pub const VRF_TABLE_BASE: u32 = 1000;
/// Name prefix of the VRF device of an rdomain.
pub const VRF_PREFIX: &str = "vrf";
/// Group numbers below this are left to the admin (`/etc/iproute2/group`, 0 = default).
pub const GROUP_BASE: u32 = 256;
/// `IFLA_VRF_TABLE` inside `IFLA_INFO_DATA` of a VRF (linux/if_link.h; neli has no enum).
const IFLA_VRF_TABLE: u16 = 1;
/// `IFLA_BRPORT_LEARNING` inside `IFLA_PROTINFO` of a bridge port (linux/if_link.h).
const IFLA_BRPORT_LEARNING: u16 = 8;
/// Marks a netlink attribute as nested (linux/netlink.h).
const NLA_F_NESTED: u16 = 0x8000;
/// Link kinds as the kernel names them in `IFLA_INFO_KIND`.
const KIND_BRIDGE: &str = "bridge";
const KIND_VRF: &str = "vrf";
/// Replies to a single request fit in this many datagrams; a stream that goes on is a bug.
const MAX_REPLY_DATAGRAMS: usize = 64;

/// What can go wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink: {0}")]
    Socket(String),
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {0} is not a bridge")]
    NotABridge(String),
    #[error("invalid prefix length {0}")]
    BadPrefixLen(u8),
}

fn sock_err(e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Socket(e.to_string())
}

/// What [`Netlink::link`] reports about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("bridge", "tun", "vrf", ...); `None` for plain devices.
    pub kind: Option<String>,
    /// Index of the bridge or VRF the link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// The description (`ifalias`).
    pub alias: Option<String>,
    pub group: u32,
}

/// `vm<vmid>-if<idx>-<vmname>`, the description of a VM's tap (F-NET-02).
pub fn vm_description(vm_id: u32, nic: usize, vm_name: &str) -> String {
    truncate(format!("vm{vm_id}-if{nic}-{vm_name}"))
}

/// `switch<id>-<name>`, the description of a switch's bridge (F-NET-02).
pub fn switch_description(switch_id: u32, name: &str) -> String {
    truncate(format!("switch{switch_id}-{name}"))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_DESCR_LEN {
        let mut end = MAX_DESCR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The Linux link group standing for the interface group `name` (F-NET-05): a 32-bit FNV-1a
/// hash of the name folded into `GROUP_BASE..`, so every process maps a name to the same
/// number without shared state. Distinct names may collide (about 1 in 4 billion per pair);
/// an admin who wants readable names adds `NUMBER NAME` lines to `/etc/iproute2/group`.
pub fn group_number(name: &str) -> u32 {
    const FNV_OFFSET: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    let hash = name.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    });
    GROUP_BASE + hash % (u32::MAX - GROUP_BASE)
}

/// The VRF device name of rdomain `rdomain` (1..=255).
pub fn vrf_name(rdomain: u8) -> String {
    format!("{VRF_PREFIX}{rdomain}")
}

/// A route netlink socket.
pub struct Netlink {
    sock: NlSocketHandle,
    seq: u32,
}

impl Netlink {
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let sock =
            NlSocketHandle::connect(NlFamily::Route, None, Groups::empty()).map_err(sock_err)?;
        Ok(Netlink { sock, seq: 0 })
    }

    /// The interface `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.get_link(0, Some(name))
    }

    /// The interface with index `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let index = i32::try_from(index).map_err(|_| kernel("get link", -libc::EINVAL))?;
        self.get_link(index, None)
    }

    /// RTM_GETLINK for one interface, by index or (with index 0) by name.
    fn get_link(&mut self, index: i32, name: Option<&str>) -> Result<Option<Link>, NetlinkError> {
        let mut attrs = RtBuffer::new();
        if let Some(name) = name {
            attrs.push(attr(Ifla::Ifname, name)?);
        }
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index)
            .rtattrs(attrs)
            .build()
            .map_err(sock_err)?;
        let what = || {
            format!(
                "get link {}",
                name.map_or(index.to_string(), str::to_string)
            )
        };
        let seq = self.send(Rtm::Getlink, NlmF::empty(), msg)?;
        for _ in 0..MAX_REPLY_DATAGRAMS {
            let (iter, _) = self.sock.recv::<Rtm, Ifinfomsg>().map_err(sock_err)?;
            for reply in iter {
                let reply: Nlmsghdr<Rtm, Ifinfomsg> = reply.map_err(sock_err)?;
                if *reply.nl_seq() != seq {
                    continue;
                }
                match reply.nl_payload() {
                    NlPayload::Payload(info) => return Ok(Some(parse_link(info))),
                    NlPayload::Err(e) if -*e.error() == libc::ENODEV => return Ok(None),
                    NlPayload::Err(e) => return Err(kernel(what(), *e.error())),
                    _ => {}
                }
            }
        }
        Err(sock_err(format!("{}: no answer", what())))
    }

    /// Like [`Netlink::link`], with a missing interface as an error.
    fn existing(&mut self, name: &str) -> Result<Link, NetlinkError> {
        self.link(name)?
            .ok_or_else(|| NetlinkError::NoSuchInterface(name.to_string()))
    }

    /// F-NET-12: `name` exists and is a bridge (a switch's `interface`).
    pub fn check_bridge(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let link = self.existing(name)?;
        if link.kind.as_deref() != Some(KIND_BRIDGE) {
            return Err(NetlinkError::NotABridge(name.to_string()));
        }
        Ok(link)
    }

    /// Creates the bridge `name` unless it exists; true if it was created. An existing
    /// interface of another kind is an error.
    pub fn ensure_bridge(&mut self, name: &str) -> Result<bool, NetlinkError> {
        if self.link(name)?.is_some() {
            self.check_bridge(name)?;
            return Ok(false);
        }
        self.create_link(name, KIND_BRIDGE, None)?;
        Ok(true)
    }

    /// Sets the link administratively up or down (F-NET-06).
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), NetlinkError> {
        let link = self.existing(name)?;
        let mut b = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(link.index as i32);
        b = if up { b.up() } else { b.down() };
        let msg = b.build().map_err(sock_err)?;
        self.ack(
            Rtm::Newlink,
            NlmF::empty(),
            msg,
            format!("set {name} up/down"),
        )
    }

    /// Sets the description (F-NET-02); an empty one clears it.
    pub fn set_alias(&mut self, name: &str, alias: &str) -> Result<(), NetlinkError> {
        self.set_attr(name, attr(Ifla::Ifalias, alias)?, "set description")
    }

    /// Enslaves `name` to the bridge or VRF `master`, or frees it with `None` (F-NET-03).
    pub fn set_master(&mut self, name: &str, master: Option<&str>) -> Result<(), NetlinkError> {
        let index = match master {
            Some(m) => self.existing(m)?.index,
            None => 0,
        };
        self.set_attr(name, attr(Ifla::Master, index)?, "set master")
    }

    /// Puts the link into Linux link group `group` (F-NET-05, see [`group_number`]).
    pub fn set_group(&mut self, name: &str, group: u32) -> Result<(), NetlinkError> {
        self.set_attr(name, attr(Ifla::Group, group)?, "set group")
    }

    /// Turns MAC learning of the bridge port `name` on or off. For `locked lladdr` switches:
    /// the device already drops spoofed frames, and without learning the bridge does not even
    /// record the addresses a guest tries.
    pub fn set_port_learning(&mut self, name: &str, on: bool) -> Result<(), NetlinkError> {
        let link = self.existing(name)?;
        let mut port = RtBuffer::<u16, Buffer>::new();
        port.push(attr(IFLA_BRPORT_LEARNING, u8::from(on))?);
        let mut attrs = RtBuffer::new();
        // The bridge code takes per-port settings only from a nested IFLA_PROTINFO; without
        // the flag it reads the attribute as an old-style port state byte.
        let protinfo = Ifla::from(u16::from(Ifla::Protinfo) | NLA_F_NESTED);
        attrs.push(attr(protinfo, port)?);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::from(libc::AF_BRIDGE as u8))
            .ifi_index(link.index as i32)
            .rtattrs(attrs)
            .build()
            .map_err(sock_err)?;
        self.ack(
            Rtm::Setlink,
            NlmF::empty(),
            msg,
            format!("set learning of bridge port {name}"),
        )
    }

    /// Moves `name` into rdomain `rdomain` (F-NET-04): rdomain 0 takes it out of any VRF,
    /// others enslave it to `vrfN`, created (and set up) if missing.
    pub fn set_rdomain(&mut self, name: &str, rdomain: u8) -> Result<(), NetlinkError> {
        if rdomain == 0 {
            let link = self.existing(name)?;
            if let Some(master) = link.master {
                let master = self.link_by_index(master)?;
                if master.and_then(|m| m.kind).as_deref() == Some(KIND_VRF) {
                    return self.set_master(name, None);
                }
            }
            return Ok(());
        }
        let vrf = self.ensure_vrf(rdomain)?;
        self.set_master(name, Some(&vrf))
    }

    /// The VRF device of `rdomain`, created and set up if missing; its name.
    pub fn ensure_vrf(&mut self, rdomain: u8) -> Result<String, NetlinkError> {
        let name = vrf_name(rdomain);
        match self.link(&name)? {
            Some(l) if l.kind.as_deref() == Some(KIND_VRF) => {}
            Some(_) => return Err(kernel(format!("{name} is not a VRF"), -libc::EEXIST)),
            None => {
                let table = VRF_TABLE_BASE + u32::from(rdomain);
                let mut data = RtBuffer::<u16, Buffer>::new();
                data.push(attr(IFLA_VRF_TABLE, table)?);
                self.create_link(&name, KIND_VRF, Some(data))?;
                self.set_up(&name, true)?;
            }
        }
        Ok(name)
    }

    /// Adds `addr/prefix_len` to `name` (F-NET-08, F-NET-09), replacing the same address.
    /// Lifetimes are infinite; IPv6 skips duplicate address detection because the /96 is
    /// private to this link, and DAD on a tap whose guest is still booting would leave the
    /// address tentative.
    pub fn add_address(
        &mut self,
        name: &str,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let link = self.existing(name)?;
        let mut attrs = RtBuffer::new();
        let (family, flags, max) = match addr {
            IpAddr::V4(a) => {
                attrs.push(attr(Ifa::Local, a.octets())?);
                attrs.push(attr(Ifa::Address, a.octets())?);
                (RtAddrFamily::Inet, IfaF::empty(), 32)
            }
            IpAddr::V6(a) => {
                attrs.push(attr(Ifa::Address, a.octets())?);
                (RtAddrFamily::Inet6, IfaF::NODAD, 128)
            }
        };
        if prefix_len > max {
            return Err(NetlinkError::BadPrefixLen(prefix_len));
        }
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(family)
            .ifa_prefixlen(prefix_len)
            .ifa_flags(flags)
            .ifa_scope(RtScope::Universe)
            .ifa_index(link.index)
            .rtattrs(attrs)
            .build()
            .map_err(sock_err)?;
        self.ack(
            Rtm::Newaddr,
            NlmF::CREATE | NlmF::REPLACE,
            msg,
            format!("add address {addr}/{prefix_len} to {name}"),
        )
    }

    /// The addresses on `name`, with prefix lengths.
    pub fn addresses(&mut self, name: &str) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let link = self.existing(name)?;
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(sock_err)?;
        let seq = self.send(Rtm::Getaddr, NlmF::DUMP, msg)?;
        let mut out = Vec::new();
        loop {
            let (iter, _) = self.sock.recv::<Rtm, Ifaddrmsg>().map_err(sock_err)?;
            for reply in iter {
                let reply: Nlmsghdr<Rtm, Ifaddrmsg> = reply.map_err(sock_err)?;
                if *reply.nl_seq() != seq {
                    continue;
                }
                match reply.nl_payload() {
                    NlPayload::Payload(a) if *a.ifa_index() == link.index => {
                        for rta in a.rtattrs().iter() {
                            if *rta.rta_type() != Ifa::Address {
                                continue;
                            }
                            let p: &[u8] = rta.rta_payload().as_ref();
                            let ip = match p.len() {
                                4 => IpAddr::from(<[u8; 4]>::try_from(p).unwrap_or_default()),
                                16 => IpAddr::from(<[u8; 16]>::try_from(p).unwrap_or_default()),
                                _ => continue,
                            };
                            out.push((ip, *a.ifa_prefixlen()));
                        }
                    }
                    NlPayload::Err(e) => return Err(kernel("dump addresses", *e.error())),
                    NlPayload::Empty | NlPayload::DumpExtAck(_) => return Ok(out),
                    _ => {}
                }
                if *reply.nl_type() == Rtm::UnrecognizedConst(libc::NLMSG_DONE as u16) {
                    return Ok(out);
                }
            }
        }
    }

    /// Deletes the link `name`; a missing one is not an error (cleanup is idempotent).
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetlinkError> {
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(link.index as i32)
            .build()
            .map_err(sock_err)?;
        self.ack(Rtm::Dellink, NlmF::empty(), msg, format!("delete {name}"))
    }

    fn create_link(
        &mut self,
        name: &str,
        kind: &str,
        data: Option<RtBuffer<u16, Buffer>>,
    ) -> Result<(), NetlinkError> {
        let mut info = RtBuffer::<IflaInfo, Buffer>::new();
        info.push(attr(IflaInfo::Kind, kind)?);
        if let Some(data) = data {
            info.push(attr(IflaInfo::Data, data)?);
        }
        let mut attrs = RtBuffer::new();
        attrs.push(attr(Ifla::Ifname, name)?);
        attrs.push(attr(Ifla::Linkinfo, info)?);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .build()
            .map_err(sock_err)?;
        self.ack(
            Rtm::Newlink,
            NlmF::CREATE | NlmF::EXCL,
            msg,
            format!("create {kind} {name}"),
        )
    }

    fn set_attr(
        &mut self,
        name: &str,
        a: neli::rtnl::Rtattr<Ifla, Buffer>,
        what: &str,
    ) -> Result<(), NetlinkError> {
        let link = self.existing(name)?;
        let mut attrs = RtBuffer::new();
        attrs.push(a);
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(link.index as i32)
            .ifi_flags(Iff::empty())
            .ifi_change(Iff::empty())
            .rtattrs(attrs)
            .build()
            .map_err(sock_err)?;
        self.ack(
            Rtm::Newlink,
            NlmF::empty(),
            msg,
            format!("{what} of {name}"),
        )
    }

    fn send<P>(&mut self, ty: Rtm, flags: NlmF, payload: P) -> Result<u32, NetlinkError>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::REQUEST | flags)
            .nl_seq(self.seq)
            .nl_payload(NlPayload::Payload(payload))
            .build()
            .map_err(sock_err)?;
        self.sock.send(&msg).map_err(sock_err)?;
        Ok(self.seq)
    }

    /// Sends a request that answers with an acknowledgement only, and waits for it.
    fn ack<P>(&mut self, ty: Rtm, flags: NlmF, payload: P, what: String) -> Result<(), NetlinkError>
    where
        P: Size + ToBytes + std::fmt::Debug,
    {
        let seq = self.send(ty, NlmF::ACK | flags, payload)?;
        for _ in 0..MAX_REPLY_DATAGRAMS {
            let (iter, _) = self.sock.recv::<Rtm, Buffer>().map_err(sock_err)?;
            for reply in iter {
                let reply: Nlmsghdr<Rtm, Buffer> = reply.map_err(sock_err)?;
                if *reply.nl_seq() != seq {
                    continue;
                }
                match reply.nl_payload() {
                    NlPayload::Ack(_) => return Ok(()),
                    NlPayload::Err(e) => return Err(kernel(what, *e.error())),
                    _ => {}
                }
            }
        }
        Err(sock_err(format!("{what}: no acknowledgement")))
    }
}

fn kernel(what: impl Into<String>, error: i32) -> NetlinkError {
    NetlinkError::Kernel {
        what: what.into(),
        source: io::Error::from_raw_os_error(-error),
    }
}

fn attr<T, P>(ty: T, payload: P) -> Result<neli::rtnl::Rtattr<T, Buffer>, NetlinkError>
where
    T: neli::consts::rtnl::RtaType,
    P: Size + ToBytes,
{
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(payload)
        .build()
        .map_err(sock_err)
}

fn parse_link(info: &Ifinfomsg) -> Link {
    let mut link = Link {
        index: u32::try_from(*info.ifi_index()).unwrap_or(0),
        name: String::new(),
        kind: None,
        master: None,
        up: info.ifi_flags().contains(Iff::UP),
        alias: None,
        group: 0,
    };
    for rta in info.rtattrs().iter() {
        let p: &[u8] = rta.rta_payload().as_ref();
        match rta.rta_type() {
            Ifla::Ifname => link.name = c_string(p),
            Ifla::Ifalias => link.alias = Some(c_string(p)),
            Ifla::Master => link.master = u32_of(p).filter(|&m| m != 0),
            Ifla::Group => link.group = u32_of(p).unwrap_or(0),
            Ifla::Linkinfo => {
                if let Ok(h) = rta.get_attr_handle::<IflaInfo>() {
                    if let Some(k) = h.get_attribute(IflaInfo::Kind) {
                        link.kind = Some(c_string(k.rta_payload().as_ref()));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// An attribute string, which the kernel may or may not NUL-terminate.
fn c_string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions() {
        assert_eq!(vm_description(1, 0, "myvm"), "vm1-if0-myvm");
        assert_eq!(switch_description(2, "uplink"), "switch2-uplink");
        let long = vm_description(12, 3, &"é".repeat(40));
        assert!(long.len() <= MAX_DESCR_LEN && long.starts_with("vm12-if3-"));
    }

    #[test]
    fn groups_are_stable_and_above_the_base() {
        assert_eq!(group_number("tap"), group_number("tap"));
        assert_ne!(group_number("tap"), group_number("pat"));
        for n in ["", "a", "mygroup", "x".repeat(15).as_str()] {
            assert!(group_number(n) >= GROUP_BASE);
        }
        // Pinned so a change of the mapping is a conscious one: deployed nft rules use it.
        assert_eq!(group_number("tap"), 2_868_333_474);
    }

    #[test]
    fn vrf_names() {
        assert_eq!(vrf_name(7), "vrf7");
    }
}
