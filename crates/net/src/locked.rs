//! `locked lladdr` (F-NET-07): what a NIC whose MAC is locked may send and receive.
//!
//! Enforced in the device emulation, on every frame, so it holds whatever the host bridge
//! does. Frames too short to carry an Ethernet header are refused in both directions.

use crate::MacAddr;

/// Bytes of an Ethernet header (destination, source, EtherType).
pub const ETHER_HDR_LEN: usize = 14;
/// Bytes of a MAC address.
pub const ETHER_ADDR_LEN: usize = 6;
/// I/G bit of the first destination byte: set for multicast and broadcast.
const ETHER_GROUP_BIT: u8 = 0x01;

/// Guest → host: only frames whose source MAC is the VM's own may leave the VM.
pub fn tx_allowed(frame: &[u8], vm_mac: &MacAddr) -> bool {
    frame.len() >= ETHER_HDR_LEN && frame[ETHER_ADDR_LEN..2 * ETHER_ADDR_LEN] == vm_mac[..]
}

/// Host → guest: only frames addressed to the VM's MAC, broadcast or multicast reach it.
pub fn rx_allowed(frame: &[u8], vm_mac: &MacAddr) -> bool {
    if frame.len() < ETHER_HDR_LEN {
        return false;
    }
    // Broadcast is the all-ones group address, so the group bit covers it too.
    frame[0] & ETHER_GROUP_BIT != 0 || frame[..ETHER_ADDR_LEN] == vm_mac[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: MacAddr = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x34];
    const OTHER: MacAddr = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x35];

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0u8; 46]);
        f
    }

    #[test]
    fn tx_only_from_own_mac() {
        assert!(tx_allowed(&frame([0xff; 6], VM), &VM));
        assert!(tx_allowed(&frame(OTHER, VM), &VM));
        assert!(!tx_allowed(&frame([0xff; 6], OTHER), &VM));
        assert!(!tx_allowed(&frame(VM, OTHER), &VM));
    }

    #[test]
    fn rx_own_broadcast_multicast_only() {
        assert!(rx_allowed(&frame(VM, OTHER), &VM));
        assert!(rx_allowed(&frame([0xff; 6], OTHER), &VM));
        assert!(rx_allowed(&frame([0x01, 0x00, 0x5e, 0, 0, 1], OTHER), &VM));
        assert!(rx_allowed(&frame([0x33, 0x33, 0, 0, 0, 1], OTHER), &VM));
        assert!(!rx_allowed(&frame(OTHER, VM), &VM));
    }

    #[test]
    fn short_frames_are_refused() {
        let f = frame(VM, VM);
        for len in 0..ETHER_HDR_LEN {
            assert!(!tx_allowed(&f[..len], &VM));
            assert!(!rx_allowed(&f[..len], &VM));
        }
        assert!(tx_allowed(&f[..ETHER_HDR_LEN], &VM));
    }
}
