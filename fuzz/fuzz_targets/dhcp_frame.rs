//! Feeds arbitrary frames to the DHCP/BOOTP responder, as a guest on a local interface can:
//! no input may panic it, and whatever it answers must be a well-formed frame to the guest.
//!
//! Input: one control byte, then the frame. Control bit 0 repairs the IPv4 header and UDP
//! lengths and checksums first, so mutations get past them into the BOOTP and option parsing;
//! bit 1 turns on simulated netboot (boot file and host name). The guest MAC is taken from the
//! frame's own source address so the MAC filter does not stop every input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use net::dhcp::{respond, DhcpContext, BOOTP_MIN_LEN, MAX_FRAME_LEN};
use net::local::{local_inet, DEFAULT_LOCAL_PREFIX, DEFAULT_LOCAL_PREFIX_LEN};

const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;

fn sum(parts: &[&[u8]]) -> u16 {
    let mut s: u64 = 0;
    for p in parts {
        for (i, b) in p.iter().enumerate() {
            s += if i % 2 == 0 {
                u64::from(*b) << 8
            } else {
                u64::from(*b)
            };
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Makes lengths and checksums of an option-less IPv4 header and its UDP datagram right.
fn repair(f: &mut [u8]) {
    if f.len() < ETH + IP + UDP {
        return;
    }
    f[ETH] = 0x45;
    let ip_len = (f.len() - ETH) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
    f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
    let s = sum(&[&f[ETH..ETH + IP]]);
    f[ETH + 10..ETH + 12].copy_from_slice(&s.to_be_bytes());
    let udp_len = (f.len() - ETH - IP) as u16;
    let u = ETH + IP;
    f[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    f[u + 6..u + 8].copy_from_slice(&[0, 0]);
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&f[ETH + 12..ETH + 20]);
    pseudo[9] = f[ETH + 9];
    pseudo[10..].copy_from_slice(&udp_len.to_be_bytes());
    let s = sum(&[&pseudo, &f[u..]]);
    f[u + 6..u + 8].copy_from_slice(&s.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, frame)) = data.split_first() else {
        return;
    };
    let mut frame = frame.to_vec();
    if control & 1 != 0 {
        repair(&mut frame);
    }
    let mut guest_mac = [0u8; 6];
    if let Some(src) = frame.get(6..12) {
        guest_mac.copy_from_slice(src);
    }
    let ctx = DhcpContext {
        guest_mac,
        host_mac: [0xfe, 0xe1, 0xba, 0xd0, 0, 1],
        addrs: local_inet(DEFAULT_LOCAL_PREFIX, DEFAULT_LOCAL_PREFIX_LEN, 1, 0).unwrap(),
        netboot: (control & 2 != 0).then_some("fuzz-vm"),
    };
    if let Some(reply) = respond(&frame, &ctx) {
        assert!(reply.len() >= ETH + IP + UDP + BOOTP_MIN_LEN && reply.len() <= MAX_FRAME_LEN);
        assert_eq!(&reply[..6], &guest_mac);
        assert_eq!(sum(&[&reply[ETH..ETH + IP]]), 0, "IPv4 header checksum");
        // A reply looks like a server's answer, never like a request: it gets no reply itself.
        assert!(respond(&reply, &ctx).is_none());
    }
});
