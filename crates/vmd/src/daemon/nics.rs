//! What a VM's NICs need from the host (taps, asked of priv) and from the VM process (the
//! device's MAC, lock and DHCP answers), derived from a start plan (spec §6, F-NET-01..11).
//! Pure functions: the addresses priv puts on a tap and the ones the DHCP responder hands
//! out come from the same [`net::local`] rule, so they always agree.

use std::net::{IpAddr, Ipv6Addr};

use net::local::{self, LocalInet, LOCAL_INET6_PREFIX_LEN, LOCAL_INET_PREFIX_LEN};
use vmconf::{BootDevice, Global, LocalInet6};

use super::internal::{DhcpLaunch, NicLaunch, TapReady, TapSetup};
use crate::registry::{Failure, StartPlan};

/// The IPv4 pair of local NIC `nic` of the plan's VM, or why it has none.
fn local_pair(plan: &StartPlan, global: &Global, nic: usize) -> Result<LocalInet, Failure> {
    let p = &global.local_prefix;
    local::local_inet(p.addr, p.len, plan.id, nic).map_err(|e| {
        Failure::errno(
            libc::ERANGE,
            format!("vm \"{}\": interface {nic}: {e}", plan.name),
        )
    })
}

/// The IPv6 prefix of local interfaces: configured, or the daemon's random ULA.
fn inet6_prefix(global: &Global, ula: Ipv6Addr) -> Option<Ipv6Addr> {
    match &global.local_inet6 {
        None => None,
        Some(LocalInet6::Auto) => Some(ula),
        Some(LocalInet6::Prefix(p)) => Some(p.addr),
    }
}

/// One tap request per NIC of `plan`.
pub fn tap_setups(
    plan: &StartPlan,
    global: &Global,
    ula: Ipv6Addr,
) -> Result<Vec<TapSetup>, Failure> {
    let mut out = Vec::with_capacity(plan.nics.len());
    for (i, n) in plan.nics.iter().enumerate() {
        let mut addrs = Vec::new();
        if n.nic.local {
            let pair = local_pair(plan, global, i)?;
            addrs.push((IpAddr::V4(pair.host), LOCAL_INET_PREFIX_LEN));
            if let Some(prefix) = inet6_prefix(global, ula) {
                let v6 = local::local_inet6(prefix, pair.guest);
                addrs.push((IpAddr::V6(v6.host), LOCAL_INET6_PREFIX_LEN));
            }
        }
        out.push(TapSetup {
            name: n.nic.name.clone(),
            description: net::netlink::vm_description(plan.id, i, &plan.name),
            bridge: n.switch.as_ref().map(|s| s.interface.clone()),
            // A Linux link has one group: the NIC's own, else its switch's (spec §2.4).
            group: n
                .nic
                .group
                .clone()
                .or_else(|| n.switch.as_ref().and_then(|s| s.group.clone())),
            rdomain: n.nic.rdomain,
            up: n.nic.up,
            local: addrs,
        });
    }
    Ok(out)
}

/// What the VM process's device needs per NIC, once priv made the taps.
pub fn nic_launches(
    plan: &StartPlan,
    global: &Global,
    taps: &[TapReady],
) -> Result<Vec<NicLaunch>, Failure> {
    let mut out = Vec::with_capacity(plan.nics.len());
    for (i, (n, tap)) in plan.nics.iter().zip(taps).enumerate() {
        let dhcp = if n.nic.local {
            let pair = local_pair(plan, global, i)?;
            Some(DhcpLaunch {
                host_mac: tap.mac,
                host: pair.host,
                guest: pair.guest,
                netboot: (plan.boot_device == Some(BootDevice::Net)).then(|| plan.name.clone()),
            })
        } else {
            None
        };
        out.push(NicLaunch {
            mac: n.nic.mac.0,
            locked: n.nic.locked,
            dhcp,
        });
    }
    Ok(out)
}

/// A random ULA prefix for bare `local inet6`, drawn once per daemon lifetime.
pub fn random_ula() -> Ipv6Addr {
    let mut random = [0u8; local::ULA_RANDOM_BYTES];
    // Without randomness the prefix is fd00::/64: still private, only less unique.
    let _ = getrandom::fill(&mut random);
    local::ula_prefix(random)
}
