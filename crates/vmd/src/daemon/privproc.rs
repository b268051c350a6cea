//! The priv process: the only process that changes host network interfaces (spec §1.1). It
//! stays root (netlink needs CAP_NET_ADMIN) and touches nothing but bridges: it refuses any
//! name that exists as another kind of interface, so a compromised parent message cannot
//! reconfigure the host's real links.

use std::process::ExitCode;

use ipc::Channel;
use net::netlink::{self, Netlink, NetlinkError};

use super::internal::{ParentToPriv, PrivToParent, SwitchSetup};
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
