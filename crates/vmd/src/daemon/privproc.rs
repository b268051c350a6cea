//! The priv process: the only process that changes host network interfaces (spec §1.1). It
//! stays root (netlink needs CAP_NET_ADMIN) and touches nothing but bridges and the taps it
//! creates: it refuses any bridge name that exists as another kind of interface, and taps come
//! from /dev/net/tun, so a compromised parent message cannot reconfigure the host's real
//! links. A VM's taps are not persistent: they vanish when the VM process's fds close.

use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;

use ipc::Channel;
use net::netlink::{self, Netlink, NetlinkError};
use net::tap::{Tap, TapOptions};

use super::internal::{ParentToPriv, PrivToParent, SwitchSetup, TapReady, TapSetup};
use super::log;
use super::spawn::Inherit;
use crate::{log_debug, log_info, log_warn};

/// Entry point of the `priv` role.
pub fn main(parent: Channel, inherit: &Inherit) -> ExitCode {
    log::init("priv", inherit.foreground, inherit.verbosity);
    let mut nl = match Netlink::connect() {
        Ok(n) => n,
        Err(e) => {
            log_warn!("{e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        let msg: ParentToPriv = match parent.recv() {
            Ok((m, _)) => m,
            Err(e) => {
                log_debug!("parent channel closed ({e})");
                return ExitCode::SUCCESS;
            }
        };
        if let ParentToPriv::CreateTaps {
            vm,
            generation,
            taps,
        } = msg
        {
            let (reply, fds) = match create_taps(&mut nl, &taps) {
                Ok(made) => {
                    let ready = made
                        .iter()
                        .map(|(tap, mac)| TapReady {
                            name: tap.name().to_string(),
                            mac: *mac,
                        })
                        .collect();
                    let reply = PrivToParent::TapsReady {
                        vm,
                        generation,
                        taps: ready,
                    };
                    (reply, made)
                }
                Err(message) => (
                    PrivToParent::TapsFailed {
                        vm,
                        generation,
                        message,
                    },
                    Vec::new(),
                ),
            };
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(t, _)| t.file().as_fd()).collect();
            if parent.send(&reply, &borrowed).is_err() {
                return ExitCode::SUCCESS;
            }
            // Our copies close here; the VM process's keep the taps alive.
            continue;
        }
        let reply = match msg {
            ParentToPriv::SetupSwitch(sw) => match setup_switch(&mut nl, &sw) {
                Ok(created) => {
                    log_info!(
                        "switch {}: bridge {}{}",
                        sw.name,
                        sw.bridge,
                        if created { " created" } else { "" }
                    );
                    PrivToParent::SwitchReady {
                        bridge: sw.bridge,
                        created,
                    }
                }
                Err(e) => PrivToParent::Failed {
                    message: format!("switch {}: {e}", sw.name),
                },
            },
            ParentToPriv::RemoveBridge { bridge } => match remove_bridge(&mut nl, &bridge) {
                Ok(()) => continue,
                Err(e) => PrivToParent::Failed {
                    message: format!("removing bridge {bridge}: {e}"),
                },
            },
            ParentToPriv::CreateTaps { .. } => continue,
        };
        if parent.send(&reply, &[]).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

/// Create the bridge if missing (beyond vmd, which requires it to exist), then apply the
/// description, group, routing domain and up/down state.
fn setup_switch(nl: &mut Netlink, sw: &SwitchSetup) -> Result<bool, NetlinkError> {
    let created = nl.ensure_bridge(&sw.bridge)?;
    nl.set_alias(&sw.bridge, &netlink::switch_description(sw.id, &sw.name))?;
    if let Some(g) = &sw.group {
        nl.set_group(&sw.bridge, netlink::group_number(g))?;
    }
    if let Some(r) = sw.rdomain {
        nl.set_rdomain(&sw.bridge, r)?;
    }
    nl.set_up(&sw.bridge, sw.up)?;
    Ok(created)
}

fn remove_bridge(nl: &mut Netlink, bridge: &str) -> Result<(), NetlinkError> {
    nl.check_bridge(bridge)?;
    nl.delete_link(bridge)
}

/// Create every tap of one VM start; on any failure the ones made so far are dropped (and so
/// removed) and the error names the tap.
fn create_taps(nl: &mut Netlink, taps: &[TapSetup]) -> Result<Vec<(Tap, [u8; 6])>, String> {
    let mut made = Vec::with_capacity(taps.len());
    for setup in taps {
        let tap = Tap::create(setup.name.as_deref(), TapOptions { vnet_hdr: true })
            .map_err(|e| e.to_string())?;
        let mac = configure_tap(nl, tap.name(), setup)
            .and_then(|()| tap.mac().map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", tap.name()))?;
        log_info!("{} created ({})", tap.name(), setup.description);
        made.push((tap, mac));
    }
    Ok(made)
}

/// Description, group, switch or routing domain, link state and local addresses (F-NET-02,
/// F-NET-03, F-NET-08). A switch whose bridge is missing only warns, as vmd does.
fn configure_tap(nl: &mut Netlink, name: &str, setup: &TapSetup) -> Result<(), String> {
    let e = |e: NetlinkError| e.to_string();
    nl.set_alias(name, &setup.description).map_err(e)?;
    if let Some(g) = &setup.group {
        nl.set_group(name, netlink::group_number(g)).map_err(e)?;
    }
    // A Linux link has one master: a tap in a switch routes through its bridge (whose own
    // rdomain is the switch's), so the NIC's rdomain applies only to a tap on its own.
    let bridged = match &setup.bridge {
        Some(bridge) => match nl.check_bridge(bridge) {
            Ok(_) => {
                nl.set_master(name, Some(bridge)).map_err(e)?;
                true
            }
            Err(err) => {
                log_warn!("{name}: not attached to {bridge}: {err}");
                false
            }
        },
        None => false,
    };
    if let (Some(r), false) = (setup.rdomain, bridged) {
        nl.set_rdomain(name, r).map_err(e)?;
    }
    nl.set_up(name, setup.up).map_err(e)?;
    for (addr, len) in &setup.local {
        nl.add_address(name, *addr, *len).map_err(e)?;
    }
    Ok(())
}
