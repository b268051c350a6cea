//! Host side of vmd networking on Linux (spec §6, F-NET-*).
//!
//! This crate owns what a VM's NICs need outside the guest:
//! - [`tap`]: creating tap devices on `/dev/net/tun` (named or the first free `tapN`) and
//!   their host-side MAC;
//! - [`netlink`]: rtnetlink operations on links — up/down, description (`ifalias`), bridges
//!   for switches, bridge membership, addresses, VRFs for rdomains, groups;
//! - [`local`]: the address scheme of `local interface`s;
//! - [`dhcp`]: the built-in DHCP/BOOTP responder of local interfaces, as a pure function on
//!   frames;
//! - [`locked`]: the `locked lladdr` frame filters.
//!
//! It never emulates a device (virtio-net lives in `devices` and calls [`dhcp`] and
//! [`locked`] per frame), never reads vm.conf or decides policy (the daemon maps its
//! configuration onto these calls), and never runs external programs such as `ip`.

pub mod dhcp;
pub mod local;
pub mod locked;
pub mod netlink;
pub mod tap;

/// An Ethernet address, most significant byte first.
pub type MacAddr = [u8; 6];
