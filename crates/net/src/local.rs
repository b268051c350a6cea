//! Addresses of `local interface`s (spec §6.3, F-NET-08, F-NET-09).
//!
//! Every local NIC gets its own /31 carved from the `local prefix`: the host (gateway) side
//! of the tap takes the even address, the guest the odd one. With `local inet6` the guest's
//! IPv4 address is embedded into the IPv6 prefix and the pair shares a /96. The functions are
//! pure so the daemon (which assigns the host side) and the DHCP responder (which hands the
//! guest its side) always agree.

use std::net::{Ipv4Addr, Ipv6Addr};

/// `local prefix` when vm.conf sets none: RFC 6598 shared address space.
pub const DEFAULT_LOCAL_PREFIX: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Length of [`DEFAULT_LOCAL_PREFIX`].
pub const DEFAULT_LOCAL_PREFIX_LEN: u8 = 10;
/// Prefix length of the host address on the tap: one /31 per NIC.
pub const LOCAL_INET_PREFIX_LEN: u8 = 31;
/// Netmask of [`LOCAL_INET_PREFIX_LEN`], as the DHCP responder announces it.
pub const LOCAL_INET_NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 254);
/// Prefix length of the host IPv6 address on the tap.
pub const LOCAL_INET6_PREFIX_LEN: u8 = 96;
/// NIC indices must stay below this: `(i + 1) * 2` has to fit the low byte of the offset,
/// otherwise it would run into the VM id bits.
pub const MAX_LOCAL_NIC_INDEX: usize = 127;
/// Bits the VM id is shifted left by in the offset: the low byte belongs to the NIC.
const VM_ID_SHIFT: u32 = 8;
/// Bytes 8..12 of the IPv6 address carry the guest's IPv4 address.
const INET6_V4_OFFSET: usize = 8;
/// Last byte of the IPv6 address on the host side.
const INET6_HOST_SUFFIX: u8 = 1;
/// Last byte of the IPv6 address on the guest side.
const INET6_GUEST_SUFFIX: u8 = 2;
/// First byte of a generated ULA prefix (`fd00::/8`, RFC 4193 with L = 1).
const ULA_FIRST_BYTE: u8 = 0xfd;
/// Random bytes after the leading `fd` of a generated prefix (56 bits, bytes 1-7).
pub const ULA_RANDOM_BYTES: usize = 7;

/// Why a NIC gets no local address; the interface is then left unconfigured, as in vmd.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The VM id pushes the address beyond the prefix (vmd's message).
    #[error("dhcp address range exceeded")]
    RangeExceeded,
    /// NIC index of 127 or more.
    #[error("too many interfaces")]
    TooManyInterfaces,
    /// A prefix length beyond 32 cannot describe an IPv4 network.
    #[error("invalid local prefix length {0}")]
    BadPrefixLen(u8),
}

/// The IPv4 pair of one local NIC; both lie in the same /31 ([`LOCAL_INET_PREFIX_LEN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInet {
    /// Set on the tap; the guest's router and DNS server.
    pub host: Ipv4Addr,
    /// Handed to the guest by the DHCP responder.
    pub guest: Ipv4Addr,
}

/// The IPv6 pair of one local NIC; both lie in the same /96 ([`LOCAL_INET6_PREFIX_LEN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalInet6 {
    pub host: Ipv6Addr,
    pub guest: Ipv6Addr,
}

/// IPv4 addresses of NIC `nic` (0-based) of VM `vm_id` within `prefix/prefix_len`.
///
/// offset = `(vm_id << 8) | ((nic + 1) * 2)`, host = prefix | offset, guest = host + 1.
pub fn local_inet(
    prefix: Ipv4Addr,
    prefix_len: u8,
    vm_id: u32,
    nic: usize,
) -> Result<LocalInet, LocalError> {
    if prefix_len > 32 {
        return Err(LocalError::BadPrefixLen(prefix_len));
    }
    if nic >= MAX_LOCAL_NIC_INDEX {
        return Err(LocalError::TooManyInterfaces);
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let net = u32::from(prefix) & mask;
    // NIC index < 127, so this is at most 254 and stays in the low byte.
    let nic_bits = (nic as u32 + 1) * 2;
    // u64 so that a large VM id cannot lose bits in the shift.
    let offset = (u64::from(vm_id) << VM_ID_SHIFT) | u64::from(nic_bits);
    // The offset must fit the host bits. vmd ORs first and then compares the network part,
    // which lets an id whose high bits coincide with set prefix bits (16384 in 100.64/10)
    // alias VM 0; checking the offset itself closes that hole.
    let offset = u32::try_from(offset).map_err(|_| LocalError::RangeExceeded)?;
    if offset & mask != 0 {
        return Err(LocalError::RangeExceeded);
    }
    // The host address is even, so the guest's + 1 stays in the same /31.
    let host = net | offset;
    Ok(LocalInet {
        host: Ipv4Addr::from(host),
        guest: Ipv4Addr::from(host + 1),
    })
}

/// IPv6 addresses of a local NIC whose guest got `guest_inet`: the first 64 bits of
/// `prefix`, the guest IPv4 address in bytes 8-11, and a last byte of 1 (host) or 2 (guest).
pub fn local_inet6(prefix: Ipv6Addr, guest_inet: Ipv4Addr) -> LocalInet6 {
    let mut bytes = prefix.octets();
    bytes[INET6_V4_OFFSET..INET6_V4_OFFSET + 4].copy_from_slice(&guest_inet.octets());
    let mut host = bytes;
    host[15] = INET6_HOST_SUFFIX;
    let mut guest = bytes;
    guest[15] = INET6_GUEST_SUFFIX;
    LocalInet6 {
        host: Ipv6Addr::from(host),
        guest: Ipv6Addr::from(guest),
    }
}

/// The ULA prefix of bare `local inet6`: `fd` followed by 56 random bits, a /64 with the
/// rest zero. The caller draws the random bytes once per daemon lifetime.
pub fn ula_prefix(random: [u8; ULA_RANDOM_BYTES]) -> Ipv6Addr {
    let mut bytes = [0u8; 16];
    bytes[0] = ULA_FIRST_BYTE;
    bytes[1..=ULA_RANDOM_BYTES].copy_from_slice(&random);
    Ipv6Addr::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default(vm_id: u32, nic: usize) -> Result<LocalInet, LocalError> {
        local_inet(DEFAULT_LOCAL_PREFIX, DEFAULT_LOCAL_PREFIX_LEN, vm_id, nic)
    }

    #[test]
    fn first_nic_is_dot2_dot3() {
        let a = default(1, 0).unwrap();
        assert_eq!(a.host, Ipv4Addr::new(100, 64, 1, 2));
        assert_eq!(a.guest, Ipv4Addr::new(100, 64, 1, 3));
    }

    #[test]
    fn second_nic_is_dot4_dot5() {
        let a = default(7, 1).unwrap();
        assert_eq!(a.host, Ipv4Addr::new(100, 64, 7, 4));
        assert_eq!(a.guest, Ipv4Addr::new(100, 64, 7, 5));
        let last = default(7, MAX_LOCAL_NIC_INDEX - 1).unwrap();
        assert_eq!(last.host, Ipv4Addr::new(100, 64, 7, 254));
        assert_eq!(last.guest, Ipv4Addr::new(100, 64, 7, 255));
    }

    #[test]
    fn vm_ids_from_256_spill_into_higher_octets() {
        let a = default(300, 0).unwrap();
        // 300 << 8 = 0x01_2c_00
        assert_eq!(a.host, Ipv4Addr::new(100, 65, 44, 2));
        // The largest id a /10 holds: 22 host bits minus the NIC byte.
        let top = default((1 << 14) - 1, 0).unwrap();
        assert_eq!(top.guest, Ipv4Addr::new(100, 127, 255, 3));
    }

    #[test]
    fn range_exceeded_and_too_many_interfaces() {
        assert_eq!(default(1 << 14, 0), Err(LocalError::RangeExceeded));
        assert_eq!(default(u32::MAX, 0), Err(LocalError::RangeExceeded));
        assert_eq!(
            default(1, MAX_LOCAL_NIC_INDEX),
            Err(LocalError::TooManyInterfaces)
        );
        // A /24 only holds VM id 0.
        let p = Ipv4Addr::new(10, 0, 0, 0);
        assert_eq!(
            local_inet(p, 24, 0, 0).unwrap().host,
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert_eq!(local_inet(p, 24, 1, 0), Err(LocalError::RangeExceeded));
        assert_eq!(local_inet(p, 33, 0, 0), Err(LocalError::BadPrefixLen(33)));
    }

    #[test]
    fn host_bits_of_the_prefix_are_ignored() {
        let a = local_inet(Ipv4Addr::new(10, 1, 2, 3), 16, 2, 0).unwrap();
        assert_eq!(a.host, Ipv4Addr::new(10, 1, 2, 2));
    }

    #[test]
    fn inet6_embeds_guest_inet() {
        let v4 = default(1, 0).unwrap();
        let p: Ipv6Addr = "fd12:3456:789a:1::".parse().unwrap();
        let a = local_inet6(p, v4.guest);
        assert_eq!(
            a.host,
            "fd12:3456:789a:1:6440:103:0:1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            a.guest,
            "fd12:3456:789a:1:6440:103:0:2".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ula_prefix_layout() {
        let p = ula_prefix([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(p, "fd01:203:405:607::".parse::<Ipv6Addr>().unwrap());
    }
}
