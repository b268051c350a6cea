//! A guest's rings and frames into virtio-net: arbitrary receive and transmit descriptor
//! tables (addresses, lengths, flags, chains, indirect tables), avail rings, guest memory
//! (vnet headers, frames, DHCP-looking packets) and frames from the tap, under every header
//! layout (legacy 10/12 bytes, modern), with and without vnet headers, `locked lladdr` and the
//! local DHCP responder. Every frame must be delivered, dropped or end in NEEDS_RESET — never
//! a panic or a hang.
//!
//! Input: one control byte (bits 0-1 the driver's feature set, bit 2 a backend with vnet
//! headers, bit 3 locked, bit 4 a responder, bit 5 checksum offloads), 16 bytes per
//! descriptor for the receive then the transmit table, then guest memory; the tap's frames
//! are cut from that same tail.
#![no_main]

mod virtio_common;

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::Arc;

use devices::virtio::net::{LocalResponder, Net, NetBackend, RX_QUEUE, TX_QUEUE};
use devices::virtio::{VirtioDevice, RING_FEATURES};
use libfuzzer_sys::fuzz_target;
use virtio_common::{fill_avail, fill_descriptors, NoIrq};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x4_0000;
const QUEUE_SIZE: u16 = 16;
/// The transmit rings, after the receive rings at 0.
const TX_RING: u64 = 0x1000;
/// Where the input's tail lands in guest memory.
const DATA: u64 = 0x2_0000;
const VM_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x34];

// virtio-net feature bits.
const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_HOST_TSO4: u64 = 1 << 11;
const F_MAC: u64 = 1 << 5;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_STATUS: u64 = 1 << 16;

struct Tap {
    inbound: VecDeque<Vec<u8>>,
    vnet: bool,
}

impl NetBackend for Tap {
    fn has_vnet_hdr(&self) -> bool {
        self.vnet
    }
    fn send(&mut self, _bufs: &[IoSlice<'_>]) -> io::Result<()> {
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(f) = self.inbound.pop_front() else {
            return Ok(None);
        };
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(Some(n))
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

fn fill_queue(vq: &MockSplitQueue<'_, GuestMemoryMmap>, table: &[u8], avail: &[u8], n: u16) {
    // Addresses near guest memory so lookups both hit and miss.
    fill_descriptors(vq, QUEUE_SIZE, table, 0x3000, |a| {
        a % (MEM_SIZE as u64 + 0x1000)
    });
    fill_avail(vq, QUEUE_SIZE, avail, n);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, data)) = data.split_first() else {
        return;
    };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let rxq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let txq = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QUEUE_SIZE);
    let table_len = usize::from(QUEUE_SIZE) * 16;
    let rest = data.get(2 * table_len..).unwrap_or(&[]);
    let _ = mem.write_slice(&rest[..rest.len().min(0x8000)], GuestAddress(DATA));
    fill_queue(&rxq, data, rest, rest.len() as u16 % (QUEUE_SIZE + 4));
    fill_queue(
        &txq,
        data.get(table_len..).unwrap_or(&[]),
        rest.get(QUEUE_SIZE.into()..).unwrap_or(&[]),
        (rest.len() / 3) as u16 % (QUEUE_SIZE + 4),
    );

    let mut features = match control & 3 {
        0 => RING_FEATURES | F_MRG_RXBUF,
        1 => RING_FEATURES,
        2 => 0,
        _ => F_MRG_RXBUF,
    } | F_MAC
        | F_STATUS;
    if control & 0x20 != 0 {
        features |= F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_HOST_TSO4;
    }
    // The tap's frames: cut from the tail, lengths from its first bytes.
    let mut inbound = VecDeque::new();
    let mut at = 0;
    for k in 0..4 {
        let len = usize::from(rest.get(k).copied().unwrap_or(0)) * 16;
        let Some(f) = rest.get(at..(at + len).min(rest.len())) else {
            break;
        };
        inbound.push_back(f.to_vec());
        at += len;
    }
    let tap = Tap {
        inbound,
        vnet: control & 4 != 0,
    };
    let mut net = Net::new(Box::new(tap), VM_MAC, control & 8 != 0);
    if control & 0x10 != 0 {
        // Answers every other request with a frame of the request's size.
        let responder: LocalResponder = Box::new(|f: &[u8]| (f.len() % 2 == 0).then(|| f.to_vec()));
        net = net.with_local_responder(responder);
    }
    let (Ok(rx), Ok(tx)) = (rxq.create_queue::<Queue>(), txq.create_queue::<Queue>()) else {
        return;
    };
    net.activate(mem.clone(), Arc::new(NoIrq), vec![rx, tx], features);
    net.process_queue(TX_QUEUE);
    net.process_rx();
    net.process_queue(RX_QUEUE);
    net.process_queue(TX_QUEUE);
});
