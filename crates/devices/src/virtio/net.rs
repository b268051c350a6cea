//! virtio-net over a host tap (spec §5.6 vionet, §6; F-HW-12, F-HW-16, F-NET-07, F-NET-10).
//!
//! This module owns the guest side of one NIC: the receive and transmit rings, the
//! `virtio_net_hdr` in front of every frame (10 bytes for legacy drivers without mergeable
//! buffers, 12 otherwise), mergeable receive buffers, the checksum/TSO offloads the guest
//! accepted (negotiated with the tap when it carries vnet headers), `locked lladdr`
//! filtering in both directions (F-NET-07) and diverting the guest's DHCP requests to the
//! local-interface responder (F-NET-10).
//!
//! It never creates or configures the host side of a tap (the daemon does, with the `net`
//! crate), never parses DHCP itself (the hypervisor passes a [`LocalResponder`] that calls
//! `net::dhcp::respond`), never blocks on the backend, and never drops a frame because the
//! guest has no receive buffers posted: the frame waits, the rest stay in the tap, and
//! reading resumes when the driver posts buffers. A frame is copied out of guest memory
//! before it is filtered, so the bytes checked are the bytes sent. Guest input never makes
//! it panic: a malformed ring or chain marks the device NEEDS_RESET (spec §5.6), a malformed
//! frame is dropped with a rate-limited log line and the device carries on.
//!
//! Wiring (hypervisor): register [`Net::backend_fd`] edge-triggered (`EPOLLIN | EPOLLET`) and
//! call [`Net::process_rx`] when it fires; a stalled receive path resumes from
//! [`VirtioDevice::process_queue`] on the receive queue, not from the fd.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::VIRTIO_F_ANY_LAYOUT;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_S_LINK_UP,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::queue::{collect_chain, drain, ChainError};
use super::stream::Stream;
use super::{
    transitional_ids, InterruptKind, VirtioDevice, VirtioInterrupt, RING_FEATURES,
    VIRTIO_F_VERSION_1,
};
use crate::pci::config::PciIds;

/// Size of each queue (vmd 7.x's VIONET_QUEUE_SIZE).
pub const NET_QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// `virtio_net_hdr` with `num_buffers`: modern drivers, and legacy ones with mergeable
/// buffers.
pub const VNET_HDR_LEN: usize = 12;
/// `virtio_net_hdr` without `num_buffers`: legacy drivers without mergeable buffers.
pub const VNET_HDR_LEN_LEGACY: usize = 10;
/// Bytes of an Ethernet header (destination, source, EtherType).
pub const ETHER_HDR_LEN: usize = 14;
/// Largest frame either way: a 64 KiB TSO/GSO packet (IPv4 total length is 16 bits) behind
/// an Ethernet header with one VLAN tag. Larger guest frames are dropped.
pub const MAX_FRAME_LEN: usize = 65535 + ETHER_HDR_LEN + VLAN_TAG_LEN;
/// Frames waiting for receive buffers: DHCP replies, plus the one tap frame read before the
/// buffers ran out. Bounds what a guest flooding DHCP requests without posting buffers costs.
pub const MAX_PENDING_FRAMES: usize = 8;
/// At most one log line about dropped frames per interval; the line counts the drops since
/// the last one.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes of `struct virtio_net_config` presented: mac, status, max_virtqueue_pairs.
pub const NET_CONFIG_LEN: usize = 10;

/// An 802.1Q tag.
const VLAN_TAG_LEN: usize = 4;
/// Bytes of a MAC address.
const ETHER_ADDR_LEN: usize = 6;
/// I/G bit of the first destination byte: set for multicast and broadcast.
const ETHER_GROUP_BIT: u8 = 0x01;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_UDP: u8 = 17;
/// UDP port of BOOTP/DHCP servers: where the requests the local responder answers go.
const DHCP_SERVER_PORT: u16 = 67;
/// UDP checksum that stands for a computed zero (RFC 768; Linux's CSUM_MANGLED_0).
const UDP_CSUM_MANGLED_ZERO: u16 = 0xffff;

// Offsets in struct virtio_net_hdr.
const HDR_FLAGS: usize = 0;
const HDR_CSUM_START: usize = 6;
const HDR_CSUM_OFFSET: usize = 8;
const HDR_NUM_BUFFERS: usize = 10;

// Offsets in struct virtio_net_config.
const CFG_MAC: usize = 0;
const CFG_STATUS: usize = 6;
const CFG_MAX_VQ_PAIRS: usize = 8;

/// PCI class "network controller", subclass "Ethernet", as vmd presents vionet.
const PCI_CLASS_NETWORK: u8 = 0x02;
const PCI_SUBCLASS_ETHERNET: u8 = 0x00;

/// Bytes of one used ring element (id, len) and of the used ring header (flags, idx).
const USED_ELEM_LEN: u64 = 8;
const USED_RING_HEADER_LEN: u64 = 4;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Offloads that need the backend to carry vnet headers.
const OFFLOAD_FEATURES: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN);

/// Answers a frame the guest sent to UDP port 67 on a `local interface` NIC: `Some(reply
/// frame)` consumes the request (it is not forwarded; the reply is injected into the guest's
/// receive queue), `None` forwards it as usual. The hypervisor passes a closure over
/// `net::dhcp::respond` with the NIC's `DhcpContext`. The frame has complete checksums.
pub type LocalResponder = Box<dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send>;

/// Where frames go and come from. Kept small so tests and fuzzing can stand in for a tap.
pub trait NetBackend: Send {
    /// Whether every frame carries a `virtio_net_hdr` in front (a tap opened with
    /// IFF_VNET_HDR). Only then does the device offer checksum and TSO offloads.
    fn has_vnet_hdr(&self) -> bool {
        false
    }
    /// At every activation: the header size the guest uses ([`VNET_HDR_LEN`] or
    /// [`VNET_HDR_LEN_LEGACY`]) and the receive offloads it accepted (`TUN_F_*`). Only
    /// backends with vnet headers have anything to do.
    fn configure(&mut self, hdr_len: usize, offloads: u32) -> io::Result<()> {
        let _ = (hdr_len, offloads);
        Ok(())
    }
    /// Sends one frame gathered from `bufs` (the header first when
    /// [`NetBackend::has_vnet_hdr`]).
    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<()>;
    /// Reads one frame (with its header when [`NetBackend::has_vnet_hdr`]) into `buf`;
    /// `Ok(None)` when none is waiting. Never blocks.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// The fd that becomes readable when a frame waits, for the supervisor's epoll.
    fn raw_fd(&self) -> RawFd;
}

/// A tap fd the daemon opened (`/dev/net/tun` + TUNSETIFF, IFF_TAP | IFF_NO_PI, with or
/// without IFF_VNET_HDR) and passed to the VM process.
pub struct TapBackend {
    file: File,
    vnet_hdr: bool,
}

impl TapBackend {
    /// Takes over `fd`, which must be a tap, and makes it non-blocking (the supervisor polls
    /// it). Whether it carries vnet headers is asked from the tap (TUNGETIFF), so the daemon's
    /// choice needs no extra message.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let file = File::from(fd);
        let raw = file.as_raw_fd();
        // SAFETY: ifreq is plain old data (a name array and a union of integers and
        // sockaddrs), for which all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: TUNGETIFF writes one `struct ifreq` (name and flags) through the pointer;
        // `ifr` is one and lives across the call; the fd is owned by `file`.
        if unsafe { libc::ioctl(raw, libc::TUNGETIFF, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: TUNGETIFF filled in the flags member of the union.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
        if flags & libc::IFF_TAP == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "virtio-net backend is a tun, not a tap",
            ));
        }
        // SAFETY: F_GETFL only reads the status flags of an fd we own.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: F_SETFL only sets the status flags of an fd we own.
        if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(TapBackend {
            file,
            vnet_hdr: flags & libc::IFF_VNET_HDR != 0,
        })
    }
}

impl NetBackend for TapBackend {
    fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn configure(&mut self, hdr_len: usize, offloads: u32) -> io::Result<()> {
        if !self.vnet_hdr {
            return Ok(());
        }
        let size = libc::c_int::try_from(hdr_len)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = self.file.as_raw_fd();
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which lives across the
        // call.
        if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &size as *const libc::c_int) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: TUNSETOFFLOAD takes the flags by value; no memory is touched.
        if unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, libc::c_ulong::from(offloads)) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // A tap takes one frame per write, whole or not at all.
        let n = match bufs {
            [one] => (&self.file).write(one)?,
            _ => (&self.file).write_vectored(bufs)?,
        };
        if n != total {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match (&self.file).read(buf) {
            // A tap has no end of file; a zero read carries no frame.
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    /// Shorter than its vnet header plus an Ethernet header.
    Short,
    /// The guest sent more than a vnet header plus [`MAX_FRAME_LEN`].
    Oversized,
    /// `locked lladdr`: the guest sent from another MAC.
    Spoofed,
    /// `locked lladdr`: unicast for another MAC. Normal on a bridge, so not logged.
    NotForVm,
    /// Larger than the receive buffers the guest can ever offer.
    NoBufferFits,
    /// A DHCP reply found [`MAX_PENDING_FRAMES`] frames waiting already.
    PendingFull,
    /// The backend refused a send or failed a receive.
    Backend(io::ErrorKind),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Short => f.write_str("frame too short"),
            DropReason::Oversized => f.write_str("guest frame too large"),
            DropReason::Spoofed => f.write_str("locked lladdr: guest sent from another MAC"),
            DropReason::NotForVm => f.write_str("locked lladdr: not for the VM"),
            DropReason::NoBufferFits => f.write_str("frame larger than the guest's buffers"),
            DropReason::PendingFull => f.write_str("too many frames waiting for buffers"),
            DropReason::Backend(kind) => write!(f, "tap: {kind}"),
        }
    }
}

/// Counts drops and logs them at most once per [`DROP_LOG_INTERVAL`], so a guest flooding
/// bad frames cannot flood the log.
#[derive(Default)]
struct DropLog {
    total: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl DropLog {
    fn record(&mut self, why: DropReason) {
        self.total += 1;
        if why == DropReason::NotForVm {
            return;
        }
        self.since_log += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= DROP_LOG_INTERVAL)
        {
            tracing::warn!(
                "virtio-net: dropped {} frame(s), latest: {why}",
                self.since_log
            );
            self.since_log = 0;
            self.last_log = Some(now);
        }
    }
}

/// What became of a frame offered to the receive queue.
enum Delivery {
    Done,
    /// Not enough buffers now; the frame waits for the driver to post more.
    NoRoom,
    /// No buffers the guest could post would hold it.
    NoFit,
}

/// The queues after activation and what was negotiated.
struct Active {
    mem: GuestMemoryMmap,
    interrupt: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
    features: u64,
    hdr_len: usize,
    /// Set once the driver broke a rule; nothing is processed until reset.
    broken: bool,
    /// Used buffers went onto the receive ring since the last interrupt decision.
    rx_added: bool,
    /// Some were published in a batch that `Queue::needs_notification` cannot account for.
    rx_force_notify: bool,
    /// Kept from chain to chain and frame to frame, so that the fast paths allocate nothing.
    scratch: Scratch,
}

/// Lists one chain or frame needs while it is served.
#[derive(Default)]
struct Scratch {
    /// The descriptors of the transmit chain, or of every receive chain of the frame, in
    /// order.
    descs: Vec<Descriptor>,
    /// Head index of each receive chain of the frame and where its descriptors end in
    /// `descs`.
    chains: Vec<(u16, usize)>,
    /// (head index, used length) of each receive chain of the frame.
    used: Vec<(u16, u32)>,
}

impl Active {
    fn mergeable(&self) -> bool {
        self.features & bit(VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Put `packet` (vnet header, then the frame) into receive buffers.
    fn deliver(&mut self, packet: &mut [u8]) -> Result<Delivery, ChainError> {
        loop {
            let start = self.rx.next_avail();
            match self.place(packet)? {
                Delivery::Done => return Ok(Delivery::Done),
                other => {
                    // Chains taken but not used go back to the driver's side of the ring.
                    self.rx.set_next_avail(start);
                    if matches!(other, Delivery::NoFit) || !self.arm_rx()? {
                        return Ok(other);
                    }
                }
            }
        }
    }

    fn place(&mut self, packet: &mut [u8]) -> Result<Delivery, ChainError> {
        let mergeable = self.mergeable();
        let Scratch {
            descs,
            chains,
            used,
        } = &mut self.scratch;
        descs.clear();
        chains.clear();
        used.clear();
        let mut room = 0usize;
        while room < packet.len() {
            // One chain must hold it all without mergeable buffers; with them, no more chains
            // than the ring has.
            if (!mergeable && !chains.is_empty()) || chains.len() == usize::from(self.rx.size()) {
                return Ok(Delivery::NoFit);
            }
            let chain = self.rx.iter(&self.mem)?.next();
            let Some(chain) = chain else {
                return Ok(Delivery::NoRoom);
            };
            let head = chain.head_index();
            let start = descs.len();
            collect_chain(chain, &self.mem, descs)?;
            let chain = &descs[start..];
            // Receive buffers are device-writable and each holds at least the header
            // (virtio 1.x §5.1.6.3.1); a chain breaking that can never be used.
            if chain.iter().any(|d| !d.is_write_only()) {
                return Err(ChainError::Malformed);
            }
            let cap = Stream::new(chain, true).len;
            if cap < self.hdr_len {
                return Err(ChainError::Malformed);
            }
            room = room.saturating_add(cap);
            chains.push((head, descs.len()));
        }
        if self.hdr_len == VNET_HDR_LEN {
            // At most the ring size, which fits 16 bits.
            let n = chains.len() as u16;
            packet[HDR_NUM_BUFFERS..HDR_NUM_BUFFERS + 2].copy_from_slice(&n.to_le_bytes());
        }
        let (mut off, mut start) = (0, 0);
        for &(head, end) in chains.iter() {
            let chain = Stream::new(&descs[start..end], true);
            let n = chain.len.min(packet.len() - off);
            chain.write(&self.mem, 0, &packet[off..off + n])?;
            // Bounded by MAX_FRAME_LEN plus the header.
            used.push((head, n as u32));
            off += n;
            start = end;
        }
        self.publish()?;
        Ok(Delivery::Done)
    }

    /// Return the chains of one frame (`scratch.used`) to the driver under a single
    /// used-index update: a driver polling the ring must never see the first buffer of a
    /// merged frame (whose header announces `num_buffers`) before the others.
    fn publish(&mut self) -> Result<(), ChainError> {
        let Some((&(last_head, last_len), rest)) = self.scratch.used.split_last() else {
            return Ok(());
        };
        if !rest.is_empty() {
            let base = self.rx.next_used();
            let ring = GuestAddress(self.rx.used_ring());
            for (i, &(head, len)) in rest.iter().enumerate() {
                // `rest` is shorter than the ring, so `i` fits 16 bits.
                let slot = base.wrapping_add(i as u16) % self.rx.size();
                let at = ring
                    .checked_add(USED_RING_HEADER_LEN + USED_ELEM_LEN * u64::from(slot))
                    .ok_or(ChainError::Malformed)?;
                let mut elem = [0u8; USED_ELEM_LEN as usize];
                elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
                elem[4..].copy_from_slice(&len.to_le_bytes());
                self.mem
                    .write_slice(&elem, at)
                    .map_err(|_| ChainError::OutOfMemory {
                        addr: at.0,
                        len: USED_ELEM_LEN as u32,
                    })?;
            }
            self.rx.set_next_used(base.wrapping_add(rest.len() as u16));
            self.rx_force_notify = true;
        }
        // Writes the last element and then the index with release ordering, publishing all.
        self.rx.add_used(&self.mem, last_head, last_len)?;
        self.rx_added = true;
        Ok(())
    }

    /// Ask the driver to notify the receive queue once it posts buffers beyond those available
    /// now (which were not enough). Returns whether it posted some meanwhile.
    fn arm_rx(&mut self) -> Result<bool, ChainError> {
        let start = self.rx.next_avail();
        let end = self.rx.avail_idx(&self.mem, Ordering::Acquire)?.0;
        // enable_notification sets avail_event to next_avail: point it past what is there.
        self.rx.set_next_avail(end);
        let more = self.rx.enable_notification(&self.mem);
        self.rx.set_next_avail(start);
        Ok(more?)
    }

    /// Interrupt the driver for the receive queue if anything was returned and it wants one.
    fn notify_rx(&mut self) -> Result<(), ChainError> {
        if !std::mem::take(&mut self.rx_added) {
            return Ok(());
        }
        let forced = std::mem::take(&mut self.rx_force_notify);
        if self.rx.needs_notification(&self.mem)? || forced {
            self.interrupt
                .trigger(InterruptKind::Queue(RX_QUEUE as u16));
        }
        Ok(())
    }

    /// Serve every transmit chain with `send`, then say whether to interrupt the driver.
    fn drain_tx(
        &mut self,
        mut send: impl FnMut(&GuestMemoryMmap, &[Descriptor]) -> Result<(), ChainError>,
    ) -> Result<bool, ChainError> {
        drain(
            &mut self.tx,
            &self.mem,
            &mut self.scratch.descs,
            &mut |mem, descs| send(mem, descs).map(|()| 0),
        )
    }

    fn fail(&mut self, e: ChainError) {
        // Logged once: the device stays broken until the driver resets it.
        tracing::warn!("virtio-net: {e}; device needs reset");
        self.broken = true;
        self.interrupt.needs_reset();
    }
}

/// Everything but the queues: the backend, the filters and the frames in flight.
struct Port {
    backend: Box<dyn NetBackend>,
    mac: [u8; ETHER_ADDR_LEN],
    locked: bool,
    responder: Option<LocalResponder>,
    /// Whole packets (header included) waiting for receive buffers, oldest first.
    pending: VecDeque<Vec<u8>>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    drops: DropLog,
}

impl Port {
    /// Waiting frames first, then the backend until it is empty or the buffers run out.
    fn fill_rx(&mut self, a: &mut Active) -> Result<(), ChainError> {
        while let Some(packet) = self.pending.front_mut() {
            match a.deliver(packet)? {
                Delivery::NoRoom => return Ok(()),
                Delivery::NoFit => self.drops.record(DropReason::NoBufferFits),
                Delivery::Done => {}
            }
            self.pending.pop_front();
        }
        while let Some(len) = self.read_frame(a) {
            match a.deliver(&mut self.rx_buf[..len])? {
                Delivery::NoRoom => {
                    self.pending.push_back(self.rx_buf[..len].to_vec());
                    return Ok(());
                }
                Delivery::NoFit => self.drops.record(DropReason::NoBufferFits),
                Delivery::Done => {}
            }
        }
        Ok(())
    }

    /// The next frame from the backend that may reach the guest, as a packet (header, frame)
    /// at the start of `rx_buf`; its length.
    fn read_frame(&mut self, a: &Active) -> Option<usize> {
        let h = a.hdr_len;
        let vnet = self.backend.has_vnet_hdr();
        self.rx_buf.resize(VNET_HDR_LEN + MAX_FRAME_LEN, 0);
        loop {
            let got = if vnet {
                self.backend.recv(&mut self.rx_buf[..h + MAX_FRAME_LEN])
            } else {
                self.backend.recv(&mut self.rx_buf[h..h + MAX_FRAME_LEN])
            };
            let n = match got {
                Ok(Some(n)) => n,
                Ok(None) => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Stop for now rather than spin on an error; the next frame retries.
                    self.drops.record(DropReason::Backend(e.kind()));
                    return None;
                }
            };
            let frame_len = if vnet {
                n.saturating_sub(h)
            } else {
                self.rx_buf[..h].fill(0);
                n
            };
            let frame = &self.rx_buf[h..h + frame_len];
            if frame_len < ETHER_HDR_LEN {
                self.drops.record(DropReason::Short);
                continue;
            }
            if self.locked && !rx_allowed(frame, &self.mac) {
                self.drops.record(DropReason::NotForVm);
                continue;
            }
            if a.features & bit(VIRTIO_NET_F_GUEST_CSUM) == 0 {
                // Without GUEST_CSUM the flags and offload fields must be zero (virtio 1.x
                // §5.1.6.4.1), whatever the tap reported.
                self.rx_buf[..VNET_HDR_LEN_LEGACY].fill(0);
            }
            return Some(h + frame_len);
        }
    }

    /// One transmit chain: its device-readable buffers are the header and the frame.
    fn transmit(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Descriptor],
        h: usize,
        features: u64,
    ) -> Result<(), ChainError> {
        let out = Stream::new(descs, false);
        let total = out.len;
        if total < h + ETHER_HDR_LEN {
            self.drops.record(DropReason::Short);
            return Ok(());
        }
        if total > h + MAX_FRAME_LEN {
            self.drops.record(DropReason::Oversized);
            return Ok(());
        }
        // Copied first: the guest cannot change what was checked before it is sent.
        self.tx_buf.resize(total, 0);
        out.read(mem, 0, &mut self.tx_buf[..total])?;
        let (hdr, frame) = self.tx_buf[..total].split_at_mut(h);
        if self.locked && frame[ETHER_ADDR_LEN..2 * ETHER_ADDR_LEN] != self.mac {
            self.drops.record(DropReason::Spoofed);
            return Ok(());
        }
        if let Some(respond) = self.responder.as_mut().filter(|_| is_dhcp_request(frame)) {
            let mut request = frame.to_vec();
            if u32::from(hdr[HDR_FLAGS]) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                finish_checksum(
                    &mut request,
                    le16(hdr, HDR_CSUM_START),
                    le16(hdr, HDR_CSUM_OFFSET),
                );
            }
            if let Some(reply) = respond(&request) {
                if reply.len() > MAX_FRAME_LEN || self.pending.len() >= MAX_PENDING_FRAMES {
                    self.drops.record(DropReason::PendingFull);
                } else {
                    let mut packet = vec![0u8; h];
                    packet.extend_from_slice(&reply);
                    self.pending.push_back(packet);
                }
                return Ok(());
            }
        }
        let sent = if self.backend.has_vnet_hdr() {
            if features & bit(VIRTIO_NET_F_CSUM) == 0 {
                // Offloads the guest did not negotiate are not passed on to the host.
                hdr.fill(0);
            }
            // The header and the frame lie back to back: one buffer.
            self.backend.send(&[IoSlice::new(&self.tx_buf[..total])])
        } else {
            self.backend.send(&[IoSlice::new(frame)])
        };
        if let Err(e) = sent {
            self.drops.record(DropReason::Backend(e.kind()));
        }
        Ok(())
    }
}

/// `locked lladdr`, host → guest: only frames for the VM's MAC, broadcast or multicast.
fn rx_allowed(frame: &[u8], mac: &[u8; ETHER_ADDR_LEN]) -> bool {
    // Broadcast is the all-ones group address, so the group bit covers it too.
    frame[0] & ETHER_GROUP_BIT != 0 || frame[..ETHER_ADDR_LEN] == mac[..]
}

/// Whether `frame` is IPv4/UDP to the DHCP server port: the only frames worth showing the
/// local responder, which does the full checks itself.
fn is_dhcp_request(frame: &[u8]) -> bool {
    let ip = &frame[ETHER_HDR_LEN..];
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    frame[2 * ETHER_ADDR_LEN..ETHER_HDR_LEN] == ETHERTYPE_IPV4
        && vihl >> 4 == 4
        && ip.get(9) == Some(&IPPROTO_UDP)
        && ip.get(ihl + 2..ihl + 4) == Some(&DHCP_SERVER_PORT.to_be_bytes()[..])
}

/// Complete a checksum the guest left to the device (VIRTIO_NET_HDR_F_NEEDS_CSUM): the
/// one's-complement sum from `start` to the end, which includes the pseudo-header sum the
/// guest seeded the field with, goes at `start + offset`. Out-of-range fields are left alone
/// (the responder then sees a bad checksum and the frame goes to the tap).
fn finish_checksum(frame: &mut [u8], start: u16, offset: u16) {
    let (start, field) = (usize::from(start), usize::from(start) + usize::from(offset));
    if field + 2 > frame.len() {
        return;
    }
    let mut sum: u32 = 0;
    for pair in frame[start..].chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = match !(sum as u16) {
        0 => UDP_CSUM_MANGLED_ZERO,
        c => c,
    };
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The tap offloads (`TUN_F_*`) matching the receive offloads the guest accepted.
fn tun_offloads(features: u64) -> u32 {
    [
        (VIRTIO_NET_F_GUEST_CSUM, libc::TUN_F_CSUM),
        (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
        (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
        (VIRTIO_NET_F_GUEST_ECN, libc::TUN_F_TSO_ECN),
    ]
    .iter()
    .filter(|(f, _)| features & bit(*f) != 0)
    .fold(0, |acc, (_, t)| acc | t)
}

/// A virtio network device.
pub struct Net {
    features: u64,
    config: [u8; NET_CONFIG_LEN],
    port: Port,
    active: Option<Active>,
}

impl Net {
    /// A NIC with address `mac` over `backend`; with `locked`, `locked lladdr` is enforced
    /// (F-NET-07). Offloads are offered only if the backend carries vnet headers.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6], locked: bool) -> Self {
        let mut features = RING_FEATURES
            | bit(VIRTIO_F_ANY_LAYOUT)
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_MRG_RXBUF);
        if backend.has_vnet_hdr() {
            features |= OFFLOAD_FEATURES;
        }
        let mut config = [0u8; NET_CONFIG_LEN];
        config[CFG_MAC..CFG_MAC + ETHER_ADDR_LEN].copy_from_slice(&mac);
        config[CFG_STATUS..CFG_STATUS + 2]
            .copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[CFG_MAX_VQ_PAIRS..CFG_MAX_VQ_PAIRS + 2].copy_from_slice(&1u16.to_le_bytes());
        Net {
            features,
            config,
            port: Port {
                backend,
                mac,
                locked,
                responder: None,
                pending: VecDeque::new(),
                rx_buf: Vec::new(),
                tx_buf: Vec::new(),
                drops: DropLog::default(),
            },
            active: None,
        }
    }

    /// Answer DHCP requests with `responder` instead of forwarding them: `local interface`
    /// NICs (F-NET-10).
    pub fn with_local_responder(mut self, responder: LocalResponder) -> Self {
        self.port.responder = Some(responder);
        self
    }

    /// The backend's fd: register it edge-triggered and call [`Net::process_rx`] when it is
    /// readable.
    pub fn backend_fd(&self) -> RawFd {
        self.port.backend.raw_fd()
    }

    /// Frames wait in the backend: move them into the guest's receive buffers until either
    /// runs out. Does nothing before activation, after NEEDS_RESET, or while the frames wait
    /// for buffers (the driver's next receive-queue notification resumes).
    pub fn process_rx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.broken || !a.rx.ready() {
            return;
        }
        if let Err(e) = self.port.fill_rx(a).and_then(|()| a.notify_rx()) {
            a.fail(e);
        }
    }

    fn process_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.broken || !a.tx.ready() {
            return;
        }
        let (h, features, port) = (a.hdr_len, a.features, &mut self.port);
        match a.drain_tx(|mem, descs| port.transmit(mem, descs, h, features)) {
            Ok(true) => a.interrupt.trigger(InterruptKind::Queue(TX_QUEUE as u16)),
            Ok(false) => {}
            Err(e) => return a.fail(e),
        }
        if !self.port.pending.is_empty() {
            // DHCP replies to inject.
            self.process_rx();
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }
    fn pci_ids(&self) -> PciIds {
        transitional_ids(VIRTIO_ID_NET, PCI_CLASS_NETWORK, PCI_SUBCLASS_ETHERNET)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[NET_QUEUE_SIZE, NET_QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        super::copy_window(&self.config, offset, data, 0);
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        features: u64,
    ) {
        let mut queues = queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            interrupt.needs_reset();
            return;
        };
        // Modern drivers always use num_buffers; legacy ones only with mergeable buffers.
        let hdr_len = if features & (VIRTIO_F_VERSION_1 | bit(VIRTIO_NET_F_MRG_RXBUF)) != 0 {
            VNET_HDR_LEN
        } else {
            VNET_HDR_LEN_LEGACY
        };
        let mut a = Active {
            mem,
            interrupt,
            rx,
            tx,
            features,
            hdr_len,
            broken: false,
            rx_added: false,
            rx_force_notify: false,
            scratch: Scratch::default(),
        };
        self.port.pending.clear();
        if let Err(e) = self.port.backend.configure(hdr_len, tun_offloads(features)) {
            // A tap reading another header size would garble every frame.
            tracing::error!("virtio-net: cannot set the tap's vnet header and offloads: {e}");
            a.broken = true;
            a.interrupt.needs_reset();
        }
        self.active = Some(a);
        // Frames that arrived before the driver was ready, and buffers it posted before
        // DRIVER_OK (legacy drivers may notify that early), get no other wake-up.
        self.process_rx();
    }
    fn process_queue(&mut self, index: usize) {
        match index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }
    fn reset(&mut self) {
        self.active = None;
        self.port.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use crate::virtio::queue::testing::{memory, Recorder, TEST_MEM_SIZE};
    use std::sync::Mutex;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    const VM_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x34];
    const OTHER_MAC: [u8; 6] = [0xfe, 0xe1, 0xbb, 0xd1, 0x12, 0x35];
    const BROADCAST: [u8; 6] = [0xff; 6];
    /// The receive rings sit at 0, the transmit rings here, buffers above.
    const TX_RING: u64 = 0x1_0000;
    const BUF_START: u64 = 0x10_0000;

    /// What a driver accepts: modern with mergeable buffers (12-byte header), modern without,
    /// legacy without (10-byte header) and legacy with (12 bytes).
    const MODERN: u64 = RING_FEATURES | FEAT_MAC_STATUS | bit(VIRTIO_NET_F_MRG_RXBUF);
    const MODERN_NO_MRG: u64 = RING_FEATURES | FEAT_MAC_STATUS;
    const LEGACY: u64 = FEAT_MAC_STATUS;
    const LEGACY_MRG: u64 = FEAT_MAC_STATUS | bit(VIRTIO_NET_F_MRG_RXBUF);
    const FEAT_MAC_STATUS: u64 = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS);

    /// Both ends of a fake tap.
    #[derive(Default)]
    struct Wire {
        sent: Vec<Vec<u8>>,
        inbound: VecDeque<Vec<u8>>,
        configured: Vec<(usize, u32)>,
    }

    struct Fake {
        wire: Arc<Mutex<Wire>>,
        vnet: bool,
    }

    impl NetBackend for Fake {
        fn has_vnet_hdr(&self) -> bool {
            self.vnet
        }
        fn configure(&mut self, hdr_len: usize, offloads: u32) -> io::Result<()> {
            self.wire
                .lock()
                .unwrap()
                .configured
                .push((hdr_len, offloads));
            Ok(())
        }
        fn send(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
            let frame = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.wire.lock().unwrap().sent.push(frame);
            Ok(())
        }
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            let Some(f) = self.wire.lock().unwrap().inbound.pop_front() else {
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

    struct Harness<'a> {
        mem: &'a GuestMemoryMmap,
        rxq: MockSplitQueue<'a, GuestMemoryMmap>,
        txq: MockSplitQueue<'a, GuestMemoryMmap>,
        rx_next: u16,
        tx_next: u16,
        /// Bump allocator for buffers.
        next_buf: u64,
        net: Net,
        wire: Arc<Mutex<Wire>>,
        irq: Arc<Recorder>,
    }

    fn fake(vnet: bool) -> (Box<dyn NetBackend>, Arc<Mutex<Wire>>) {
        let wire = Arc::new(Mutex::new(Wire::default()));
        (
            Box::new(Fake {
                wire: wire.clone(),
                vnet,
            }),
            wire,
        )
    }

    fn harness(mem: &GuestMemoryMmap, vnet: bool, locked: bool, features: u64) -> Harness<'_> {
        let (backend, wire) = fake(vnet);
        harness_with(
            mem,
            Net::new(backend, VM_MAC, locked),
            wire,
            features,
            false,
        )
    }

    fn harness_with(
        mem: &GuestMemoryMmap,
        mut net: Net,
        wire: Arc<Mutex<Wire>>,
        features: u64,
        event_idx: bool,
    ) -> Harness<'_> {
        let rxq = MockSplitQueue::new(mem, NET_QUEUE_SIZE);
        let txq = MockSplitQueue::create(mem, GuestAddress(TX_RING), NET_QUEUE_SIZE);
        let mut rx: Queue = rxq.create_queue().unwrap();
        rx.set_event_idx(event_idx);
        let tx: Queue = txq.create_queue().unwrap();
        let irq = Arc::new(Recorder::default());
        net.activate(mem.clone(), irq.clone(), vec![rx, tx], features);
        Harness {
            mem,
            rxq,
            txq,
            rx_next: 0,
            tx_next: 0,
            next_buf: BUF_START,
            net,
            wire,
            irq,
        }
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
    }

    /// Link `descs` (address, length, flags) into one chain from table index `first`.
    fn chain(first: u16, descs: &[(u64, u32, u32)]) -> Vec<RawDescriptor> {
        let n = descs.len() as u16;
        descs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let i = i as u16;
                if i + 1 < n {
                    desc(a, l, f | VRING_DESC_F_NEXT, first + i + 1)
                } else {
                    desc(a, l, f, 0)
                }
            })
            .collect()
    }

    impl Harness<'_> {
        fn alloc(&mut self, len: u32) -> u64 {
            let a = self.next_buf;
            self.next_buf = (a + u64::from(len) + 0xfff) & !0xfff;
            assert!(
                self.next_buf < TEST_MEM_SIZE as u64,
                "test buffers overflow"
            );
            a
        }

        /// Post one receive chain per entry, each of writable buffers of the given sizes.
        fn post_rx(&mut self, chains: &[&[u32]]) {
            for sizes in chains {
                let descs: Vec<_> = sizes
                    .iter()
                    .map(|&l| (self.alloc(l), l, VRING_DESC_F_WRITE))
                    .collect();
                self.post_rx_raw(&descs);
            }
        }

        /// Post `n` receive chains of one `size`-byte buffer each.
        fn post_n(&mut self, n: usize, size: u32) {
            for _ in 0..n {
                self.post_rx(&[&[size]]);
            }
        }

        fn post_rx_raw(&mut self, descs: &[(u64, u32, u32)]) {
            let raw = chain(self.rx_next, descs);
            self.rxq.add_desc_chains(&raw, self.rx_next).unwrap();
            self.rx_next += raw.len() as u16;
        }

        /// Queue one transmit chain of readable buffers holding `segs` and notify.
        fn send(&mut self, segs: &[&[u8]]) {
            let descs: Vec<_> = segs
                .iter()
                .map(|s| {
                    let a = self.alloc(s.len() as u32);
                    self.mem.write_slice(s, GuestAddress(a)).unwrap();
                    (a, s.len() as u32, 0)
                })
                .collect();
            self.send_raw(&descs);
        }

        fn send_raw(&mut self, descs: &[(u64, u32, u32)]) {
            let raw = chain(self.tx_next, descs);
            self.txq.add_desc_chains(&raw, self.tx_next).unwrap();
            self.tx_next += raw.len() as u16;
            self.net.process_queue(TX_QUEUE);
        }

        fn inbound(&self, frames: &[Vec<u8>]) {
            self.wire
                .lock()
                .unwrap()
                .inbound
                .extend(frames.iter().cloned());
        }

        fn sent(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut self.wire.lock().unwrap().sent)
        }

        fn used(&self, q: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u16, u32)> {
            let n = q.used().idx().load();
            (0..n)
                .map(|i| {
                    let e = q.used().ring().ref_at(usize::from(i)).unwrap().load();
                    (e.id() as u16, e.len())
                })
                .collect()
        }

        /// The bytes the device wrote into the receive chain with head `head`.
        fn rx_bytes(&self, head: u16, len: u32) -> Vec<u8> {
            let mut out = Vec::new();
            let mut i = head;
            loop {
                let d = Descriptor::from(self.rxq.desc_table().load(i).unwrap());
                let n = (len as usize - out.len()).min(d.len() as usize);
                let mut b = vec![0u8; n];
                self.mem.read_slice(&mut b, d.addr()).unwrap();
                out.extend(b);
                if !d.has_next() || out.len() == len as usize {
                    return out;
                }
                i = d.next();
            }
        }

        /// Every received packet (header included), merged buffers joined.
        fn received(&self) -> Vec<Vec<u8>> {
            let used = self.used(&self.rxq);
            let mut out = Vec::new();
            let mut k = 0;
            while k < used.len() {
                let first = self.rx_bytes(used[k].0, used[k].1);
                let merged = if self.net.active.as_ref().unwrap().mergeable() {
                    usize::from(le16(&first, HDR_NUM_BUFFERS))
                } else {
                    1
                };
                let mut p = first;
                for &(h, l) in &used[k + 1..k + merged] {
                    p.extend(self.rx_bytes(h, l));
                }
                out.push(p);
                k += merged;
            }
            out
        }

        fn needs_reset(&self) -> bool {
            *self.irq.needs_reset.lock().unwrap()
        }

        fn drops(&self) -> u64 {
            self.net.port.drops.total
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend((f.len()..len).map(|i| (i * 7 + 3) as u8));
        f
    }

    /// The one's-complement sum of `parts`, folded, not inverted.
    fn sum16(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.concat();
        let mut s: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// IPv4/UDP from 0.0.0.0:68 to 255.255.255.255:`port`, UDP checksum left zero.
    fn udp_frame(src: [u8; 6], port: u16, payload: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&BROADCAST);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE_IPV4);
        let total = (20 + 8 + payload) as u16;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 255]);
        let c = !sum16(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&68u16.to_be_bytes());
        f.extend_from_slice(&port.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    #[test]
    fn identity_features_and_config() {
        let (backend, _) = fake(false);
        let mut net = Net::new(backend, VM_MAC, false);
        let ids = net.pci_ids();
        assert_eq!(
            (ids.vendor, ids.device, ids.subsystem_id),
            (0x1af4, 0x1000, 1)
        );
        assert_eq!((ids.class, ids.subclass), (0x02, 0x00));
        assert_eq!(net.device_type(), VIRTIO_ID_NET);
        assert_eq!(net.queue_max_sizes(), &[NET_QUEUE_SIZE, NET_QUEUE_SIZE]);
        let f = net.features();
        for b in [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
        ] {
            assert_ne!(f & bit(b), 0, "feature {b}");
        }
        assert_ne!(f & VIRTIO_F_VERSION_1, 0);
        assert_eq!(f & OFFLOAD_FEATURES, 0, "no offloads without vnet headers");
        let mut cfg = [0xaau8; NET_CONFIG_LEN + 2];
        net.read_config(0, &mut cfg);
        assert_eq!(cfg[..6], VM_MAC);
        assert_eq!(
            le16(&cfg, CFG_STATUS),
            VIRTIO_NET_S_LINK_UP as u16,
            "link up"
        );
        assert_eq!(le16(&cfg, CFG_MAX_VQ_PAIRS), 1);
        assert_eq!(cfg[NET_CONFIG_LEN..], [0, 0], "past the end reads zero");
        let mut far = [0xaau8; 2];
        net.read_config(u64::MAX, &mut far);
        assert_eq!(far, [0, 0]);
        net.write_config(0, &[0; 6]);
        net.read_config(0, &mut cfg[..6]);
        assert_eq!(cfg[..6], VM_MAC, "the MAC is read-only");

        let (backend, _) = fake(true);
        let net = Net::new(backend, VM_MAC, false);
        assert_eq!(net.features() & OFFLOAD_FEATURES, OFFLOAD_FEATURES);
    }

    #[test]
    fn config_through_the_legacy_registers() {
        use crate::pci::PciDevice;
        use crate::virtio::pci::{DEVICE_CFG_OFFSET, LEGACY_BAR, MODERN_BAR};
        use crate::virtio::{PciIrq, VirtioPciDevice};
        let (backend, _) = fake(false);
        let mut dev = VirtioPciDevice::new(
            Arc::new(Mutex::new(Net::new(backend, VM_MAC, true))),
            memory(),
            PciIrq {
                intx: None,
                line: 10,
                msi: None,
            },
        )
        .unwrap();
        let mut id = [0u8; 4];
        dev.config().read(0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x1000_1af4);
        let mut mac = [0u8; 6];
        dev.bar_read(LEGACY_BAR, 20, &mut mac);
        assert_eq!(mac, VM_MAC);
        dev.bar_read(MODERN_BAR, DEVICE_CFG_OFFSET, &mut mac);
        assert_eq!(mac, VM_MAC);
    }

    #[test]
    fn tx_strips_the_legacy_10_byte_header() {
        let mem = memory();
        let mut h = harness(&mem, false, false, LEGACY);
        assert_eq!(h.wire.lock().unwrap().configured, [(10, 0)]);
        let f = frame(BROADCAST, VM_MAC, 60);
        // Header in its own descriptor, the frame split over two.
        h.send(&[&[0; VNET_HDR_LEN_LEGACY], &f[..20], &f[20..]]);
        assert_eq!(h.sent(), [f]);
        assert_eq!(h.used(&h.txq), [(0, 0)]);
        assert_eq!(
            *h.irq.kinds.lock().unwrap(),
            [InterruptKind::Queue(TX_QUEUE as u16)]
        );
    }

    #[test]
    fn tx_strips_the_12_byte_header() {
        for features in [MODERN, MODERN_NO_MRG, LEGACY_MRG] {
            let mem = memory();
            let mut h = harness(&mem, false, false, features);
            assert_eq!(h.wire.lock().unwrap().configured, [(12, 0)]);
            let f = frame(OTHER_MAC, VM_MAC, 1514);
            // Header and frame in one descriptor (any layout).
            h.send(&[&[vec![0; VNET_HDR_LEN], f.clone()].concat()]);
            assert_eq!(h.sent(), [f]);
            assert!(!h.needs_reset());
        }
    }

    #[test]
    fn vnet_backend_gets_the_header_and_the_offloads() {
        let mem = memory();
        let offloads = bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_GUEST_CSUM)
            | bit(VIRTIO_NET_F_GUEST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO4);
        let mut h = harness(&mem, true, false, MODERN | offloads);
        assert_eq!(
            h.wire.lock().unwrap().configured,
            [(12, libc::TUN_F_CSUM | libc::TUN_F_TSO4)]
        );
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[HDR_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        hdr[1] = 1; // GSO TCPv4
        hdr[HDR_CSUM_START] = 34;
        let f = frame(OTHER_MAC, VM_MAC, 9000);
        h.send(&[&hdr, &f]);
        assert_eq!(
            h.sent(),
            [[&hdr[..], &f].concat()],
            "header passed on as is"
        );

        // A tap frame's header reaches the guest, num_buffers filled in.
        h.post_rx(&[&[2048], &[2048]]);
        let mut tap_hdr = [0u8; VNET_HDR_LEN];
        tap_hdr[HDR_FLAGS] = 2; // DATA_VALID
        let g = frame(VM_MAC, OTHER_MAC, 100);
        h.inbound(&[[&tap_hdr[..], &g].concat()]);
        h.net.process_rx();
        tap_hdr[HDR_NUM_BUFFERS] = 1;
        assert_eq!(h.received(), [[&tap_hdr[..], &g].concat()]);

        // Without CSUM negotiated the guest's header flags are not passed on, and without
        // GUEST_CSUM the tap's are not passed in.
        let mem = memory();
        let mut h = harness(&mem, true, false, MODERN);
        assert_eq!(h.wire.lock().unwrap().configured, [(12, 0)]);
        h.send(&[&hdr, &f]);
        assert_eq!(h.sent(), [[&[0u8; VNET_HDR_LEN][..], &f].concat()]);
        h.post_rx(&[&[2048]]);
        h.inbound(&[[&[2u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &g].concat()]);
        h.net.process_rx();
        let mut want = [0u8; VNET_HDR_LEN];
        want[HDR_NUM_BUFFERS] = 1;
        assert_eq!(h.received(), [[&want[..], &g].concat()]);
    }

    #[test]
    fn rx_frame_into_one_buffer() {
        // Legacy: 10-byte header in its own descriptor, as OpenBSD's vio lays it out.
        let mem = memory();
        let mut h = harness(&mem, false, false, LEGACY);
        h.post_rx(&[&[VNET_HDR_LEN_LEGACY as u32, 1514]]);
        let f = frame(VM_MAC, OTHER_MAC, 100);
        h.inbound(std::slice::from_ref(&f));
        h.net.process_rx();
        assert_eq!(h.used(&h.rxq), [(0, 110)]);
        assert_eq!(h.received(), [[&[0u8; 10][..], &f].concat()]);
        assert_eq!(
            *h.irq.kinds.lock().unwrap(),
            [InterruptKind::Queue(RX_QUEUE as u16)]
        );

        // Modern without mergeable buffers: 12 bytes, num_buffers = 1.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN_NO_MRG);
        h.post_rx(&[&[1526]]);
        h.inbound(std::slice::from_ref(&f));
        h.net.process_rx();
        let mut hdr = [0u8; 12];
        hdr[HDR_NUM_BUFFERS] = 1;
        assert_eq!(h.received(), [[&hdr[..], &f].concat()]);
    }

    #[test]
    fn rx_mergeable_frame_spreads_over_buffers() {
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.post_rx(&[&[1024], &[1024], &[1024], &[1024]]);
        let f = frame(VM_MAC, OTHER_MAC, 3000);
        h.inbound(std::slice::from_ref(&f));
        h.net.process_rx();
        assert_eq!(h.used(&h.rxq), [(0, 1024), (1, 1024), (2, 964)]);
        let mut hdr = [0u8; 12];
        hdr[HDR_NUM_BUFFERS] = 3;
        assert_eq!(h.received(), [[&hdr[..], &f].concat()]);
        assert_eq!(
            *h.irq.kinds.lock().unwrap(),
            [InterruptKind::Queue(RX_QUEUE as u16)],
            "one interrupt for the merged frame"
        );
        // The fourth buffer is still the driver's, and takes the next frame.
        let g = frame(BROADCAST, OTHER_MAC, 60);
        h.inbound(std::slice::from_ref(&g));
        h.net.process_rx();
        hdr[HDR_NUM_BUFFERS] = 1;
        assert_eq!(h.received()[1], [&hdr[..], &g].concat());
    }

    #[test]
    fn rx_without_buffers_keeps_frames_until_the_guest_posts_some() {
        let mem = memory();
        let (backend, wire) = fake(false);
        let mut h = harness_with(&mem, Net::new(backend, VM_MAC, false), wire, MODERN, true);
        let frames: Vec<_> = (0..3).map(|i| frame(VM_MAC, OTHER_MAC, 200 + i)).collect();
        h.inbound(&frames);
        h.net.process_rx();
        h.net.process_rx();
        assert!(h.used(&h.rxq).is_empty());
        assert_eq!(
            h.wire.lock().unwrap().inbound.len(),
            2,
            "the rest stay in the tap"
        );
        // The driver is asked to notify once it posts a buffer (avail_event = avail idx).
        let avail_event = mem
            .read_obj::<u16>(
                h.rxq
                    .used_addr()
                    .unchecked_add(4 + 8 * u64::from(NET_QUEUE_SIZE)),
            )
            .unwrap();
        assert_eq!(avail_event, 0);

        h.post_rx(&[&[1024], &[1024]]);
        h.net.process_queue(RX_QUEUE);
        assert_eq!(h.used(&h.rxq).len(), 2);
        h.post_rx(&[&[1024]]);
        let avail_event = mem
            .read_obj::<u16>(
                h.rxq
                    .used_addr()
                    .unchecked_add(4 + 8 * u64::from(NET_QUEUE_SIZE)),
            )
            .unwrap();
        assert_eq!(avail_event, 2, "re-armed past the buffers used");
        h.net.process_queue(RX_QUEUE);
        let got: Vec<_> = h.received().iter().map(|p| p[12..].to_vec()).collect();
        assert_eq!(got, frames, "all delivered, in order");
        assert_eq!(h.drops(), 0);

        // Mergeable buffers too few for a frame: the frame waits for more, whole.
        let big = frame(VM_MAC, OTHER_MAC, 5000);
        h.inbound(std::slice::from_ref(&big));
        h.post_rx(&[&[2048], &[2048]]);
        h.net.process_rx();
        assert_eq!(h.used(&h.rxq).len(), 3, "nothing taken for half a frame");
        h.post_rx(&[&[2048]]);
        h.net.process_queue(RX_QUEUE);
        assert_eq!(h.received()[3][12..], big[..]);
    }

    #[test]
    fn rx_frame_larger_than_the_buffer_is_dropped_and_the_buffer_kept() {
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN_NO_MRG);
        h.post_rx(&[&[200]]);
        let small = frame(VM_MAC, OTHER_MAC, 100);
        h.inbound(&[frame(VM_MAC, OTHER_MAC, 1514), small.clone()]);
        h.net.process_rx();
        assert_eq!(h.drops(), 1);
        assert_eq!(h.received().len(), 1);
        assert_eq!(h.received()[0][12..], small[..]);
        // Mergeable, with a whole ring of buffers that cannot hold it: dropped too, not stuck.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.post_n(usize::from(NET_QUEUE_SIZE), 16);
        h.inbound(&[frame(VM_MAC, OTHER_MAC, 8000), frame(VM_MAC, OTHER_MAC, 20)]);
        h.net.process_rx();
        assert_eq!(h.drops(), 1);
        assert_eq!(h.received()[0].len(), 32, "the next frame got through");
        assert!(!h.needs_reset());
    }

    #[test]
    fn locked_lladdr_drops_spoofed_transmits() {
        let mem = memory();
        let mut h = harness(&mem, false, true, MODERN);
        let hdr = [0u8; VNET_HDR_LEN];
        let spoofed = frame(BROADCAST, OTHER_MAC, 60);
        let own = frame(BROADCAST, VM_MAC, 60);
        h.send(&[&hdr, &spoofed]);
        h.send(&[&hdr, &own]);
        assert_eq!(h.sent(), [own]);
        assert_eq!(h.used(&h.txq).len(), 2, "the spoofed chain is returned too");
        assert_eq!(h.drops(), 1);
        // Unlocked, anything goes.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.send(&[&hdr, &spoofed]);
        assert_eq!(h.sent(), [spoofed]);
    }

    #[test]
    fn locked_lladdr_delivers_own_broadcast_and_multicast_only() {
        let frames = [
            frame(VM_MAC, OTHER_MAC, 60),
            frame(OTHER_MAC, VM_MAC, 60),
            frame(BROADCAST, OTHER_MAC, 60),
            frame([0x01, 0x00, 0x5e, 0, 0, 1], OTHER_MAC, 60),
            frame([0x33, 0x33, 0, 0, 0, 1], OTHER_MAC, 60),
        ];
        for locked in [true, false] {
            let mem = memory();
            let mut h = harness(&mem, false, locked, MODERN);
            h.post_n(8, 2048);
            h.inbound(&frames);
            h.net.process_rx();
            let got: Vec<_> = h.received().iter().map(|p| p[12..].to_vec()).collect();
            if locked {
                let want = [&frames[0], &frames[2], &frames[3], &frames[4]];
                assert_eq!(got.iter().collect::<Vec<_>>(), want);
                assert_eq!(h.drops(), 1);
                assert_eq!(h.net.port.drops.since_log, 0, "not-for-us is not logged");
            } else {
                assert_eq!(got, frames);
            }
        }
    }

    /// A responder answering every request whose payload does not start with 0xee, and
    /// recording what it saw.
    fn responder(seen: Arc<Mutex<Vec<Vec<u8>>>>) -> LocalResponder {
        Box::new(move |f: &[u8]| {
            seen.lock().unwrap().push(f.to_vec());
            (f.get(42) != Some(&0xee)).then(|| frame(VM_MAC, OTHER_MAC, 342))
        })
    }

    #[test]
    fn dhcp_requests_are_answered_inside_the_vm_process() {
        let mem = memory();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (backend, wire) = fake(false);
        let net = Net::new(backend, VM_MAC, true).with_local_responder(responder(seen.clone()));
        let mut h = harness_with(&mem, net, wire, MODERN, false);
        h.post_n(4, 2048);
        let hdr = [0u8; VNET_HDR_LEN];
        let request = udp_frame(VM_MAC, DHCP_SERVER_PORT, 300);
        h.send(&[&hdr, &request]);
        assert!(h.sent().is_empty(), "the request does not reach the tap");
        assert_eq!(*seen.lock().unwrap(), [request]);
        assert_eq!(h.received().len(), 1);
        assert_eq!(h.received()[0][12..], frame(VM_MAC, OTHER_MAC, 342)[..]);
        let kinds = h.irq.kinds.lock().unwrap().clone();
        assert!(kinds.contains(&InterruptKind::Queue(RX_QUEUE as u16)));
        assert!(kinds.contains(&InterruptKind::Queue(TX_QUEUE as u16)));

        // Other UDP is not shown to the responder; requests it declines go to the tap.
        let dns = udp_frame(VM_MAC, 53, 40);
        h.send(&[&hdr, &dns]);
        let mut declined = udp_frame(VM_MAC, DHCP_SERVER_PORT, 300);
        declined[42] = 0xee;
        h.send(&[&hdr, &declined]);
        assert_eq!(h.sent(), [dns, declined]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        // Locked lladdr comes first: a spoofed request is dropped, not answered.
        h.send(&[&hdr, &udp_frame(OTHER_MAC, DHCP_SERVER_PORT, 300)]);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(h.received().len(), 1);
    }

    #[test]
    fn dhcp_replies_wait_for_buffers_and_are_bounded() {
        let mem = memory();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (backend, wire) = fake(false);
        let net = Net::new(backend, VM_MAC, false).with_local_responder(responder(seen.clone()));
        let mut h = harness_with(&mem, net, wire, LEGACY, false);
        let request = udp_frame(VM_MAC, DHCP_SERVER_PORT, 300);
        for _ in 0..MAX_PENDING_FRAMES + 3 {
            h.send(&[&[0; VNET_HDR_LEN_LEGACY], &request]);
        }
        assert!(h.sent().is_empty());
        assert_eq!(h.drops(), 3);
        h.post_n(MAX_PENDING_FRAMES + 3, 2048);
        h.net.process_queue(RX_QUEUE);
        assert_eq!(h.received().len(), MAX_PENDING_FRAMES);
        assert!(h.received().iter().all(|p| p.len() == 10 + 342));
    }

    #[test]
    fn dhcp_request_checksum_is_completed_before_the_responder_sees_it() {
        let mem = memory();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (backend, wire) = fake(true);
        let net = Net::new(backend, VM_MAC, false).with_local_responder(responder(seen.clone()));
        let features = MODERN | bit(VIRTIO_NET_F_CSUM);
        let mut h = harness_with(&mem, net, wire, features, false);
        let mut request = udp_frame(VM_MAC, DHCP_SERVER_PORT, 301);
        // What a guest offloading the checksum sends: the pseudo-header sum in the field.
        let udp_len = (request.len() - 34) as u16;
        let pseudo = sum16(&[&request[26..34], &[0, IPPROTO_UDP], &udp_len.to_be_bytes()]);
        request[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[HDR_FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        hdr[HDR_CSUM_START..HDR_CSUM_START + 2].copy_from_slice(&34u16.to_le_bytes());
        hdr[HDR_CSUM_OFFSET..HDR_CSUM_OFFSET + 2].copy_from_slice(&6u16.to_le_bytes());
        h.send(&[&hdr, &request]);
        let got = seen.lock().unwrap()[0].clone();
        assert_ne!(got[40..42], [0, 0]);
        let check = sum16(&[
            &got[26..34],
            &[0, IPPROTO_UDP],
            &udp_len.to_be_bytes(),
            &got[34..],
        ]);
        assert_eq!(check, 0xffff, "a valid UDP checksum");
        // Fields pointing outside the frame are left alone.
        let mut odd = request.clone();
        finish_checksum(&mut odd, 34, u16::MAX);
        finish_checksum(&mut odd, u16::MAX, 0);
        assert_eq!(odd, request);
    }

    #[test]
    fn malformed_transmits_are_dropped_and_the_device_carries_on() {
        let mem = memory();
        let mut h = harness(&mem, false, true, MODERN);
        let hdr = [0u8; VNET_HDR_LEN];
        h.send(&[&[0; 5]]); // shorter than the header
        h.send(&[&hdr]); // no frame
        h.send(&[&hdr, &[0; 13]]); // no whole Ethernet header
        h.send_raw(&[(BUF_START, 0, 0)]); // one empty buffer
        let w = h.alloc(2048);
        h.send_raw(&[(w, 2048, VRING_DESC_F_WRITE)]); // device-writable only
                                                      // Larger than a header plus 64 KiB and change, in two buffers.
        let big = h.alloc(0x2_0000);
        h.send_raw(&[(big, 12, 0), (big + 12, MAX_FRAME_LEN as u32 + 1, 0)]);
        assert_eq!(h.drops(), 6);
        assert!(h.sent().is_empty());
        // The largest frame allowed goes through.
        let mut max = frame(BROADCAST, VM_MAC, MAX_FRAME_LEN);
        mem.write_slice(&max, GuestAddress(big + 12)).unwrap();
        h.send_raw(&[(big, 12, 0), (big + 12, MAX_FRAME_LEN as u32, 0)]);
        max.truncate(MAX_FRAME_LEN);
        assert_eq!(h.sent(), [max]);
        assert_eq!(h.used(&h.txq).len(), 7, "every chain returned");
        assert!(!h.needs_reset());
        // A flood of bad frames is counted, and logged only once per interval.
        // (Fewer than the ring size: the mock queue does not wrap its available ring.)
        for _ in 0..200 {
            h.send(&[&[0; 5]]);
        }
        assert_eq!(h.drops(), 206);
        assert!(h.net.port.drops.since_log >= 200);
    }

    #[test]
    fn malformed_receive_chains_need_reset() {
        let cases: [&[(u64, u32, u32)]; 4] = [
            // Device-readable receive buffer.
            &[(BUF_START, 2048, 0)],
            &[
                (BUF_START, 12, VRING_DESC_F_WRITE),
                (BUF_START + 12, 2048, 0),
            ],
            // Shorter than the header, and zero-length.
            &[(BUF_START, 8, VRING_DESC_F_WRITE)],
            &[(BUF_START, 0, VRING_DESC_F_WRITE)],
        ];
        for descs in cases {
            let mem = memory();
            let mut h = harness(&mem, false, false, MODERN);
            h.post_rx_raw(descs);
            h.inbound(&[frame(VM_MAC, OTHER_MAC, 100), frame(VM_MAC, OTHER_MAC, 100)]);
            h.net.process_rx();
            assert!(h.needs_reset(), "{descs:?}");
            assert!(h.used(&h.rxq).is_empty());
            // Broken until reset: nothing more is read or sent.
            h.net.process_rx();
            h.send(&[&[0; 12], &frame(BROADCAST, VM_MAC, 60)]);
            assert_eq!(h.wire.lock().unwrap().inbound.len(), 1);
            assert!(h.sent().is_empty());
        }
    }

    #[test]
    fn loops_out_of_range_buffers_and_bad_indices_need_reset() {
        // Transmit chain 0 -> 1 -> 0.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.txq
            .desc_table()
            .store(0, desc(BUF_START, 64, VRING_DESC_F_NEXT, 1))
            .unwrap();
        h.txq
            .desc_table()
            .store(1, desc(BUF_START, 64, VRING_DESC_F_NEXT, 0))
            .unwrap();
        h.txq.avail().ring().ref_at(0).unwrap().store(0);
        h.txq.avail().idx().store(1);
        h.net.process_queue(TX_QUEUE);
        assert!(h.needs_reset());

        // A buffer outside guest memory.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.send_raw(&[(1 << 40, 100, 0)]);
        assert!(h.needs_reset());

        // A receive buffer running past the end of guest memory.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.post_rx_raw(&[(TEST_MEM_SIZE as u64 - 100, 2048, VRING_DESC_F_WRITE)]);
        h.inbound(&[frame(VM_MAC, OTHER_MAC, 100)]);
        h.net.process_rx();
        assert!(h.needs_reset());

        // An available index far ahead of the ring, and a head past the table.
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.rxq.avail().idx().store(1000);
        h.inbound(&[frame(VM_MAC, OTHER_MAC, 100)]);
        h.net.process_rx();
        assert!(h.needs_reset());
        let mem = memory();
        let mut h = harness(&mem, false, false, MODERN);
        h.txq
            .avail()
            .ring()
            .ref_at(0)
            .unwrap()
            .store(NET_QUEUE_SIZE + 5);
        h.txq.avail().idx().store(1);
        h.net.process_queue(TX_QUEUE);
        assert!(h.needs_reset());

        // Reset and a new activation bring it back.
        h.net.reset();
        let rx: Queue = h.rxq.create_queue().unwrap();
        let tx: Queue = h.txq.create_queue().unwrap();
        let irq = Arc::new(Recorder::default());
        h.net
            .activate(mem.clone(), irq.clone(), vec![rx, tx], MODERN);
        h.txq.avail().idx().store(0);
        h.net.process_queue(TX_QUEUE);
        assert!(!*irq.needs_reset.lock().unwrap());
    }

    #[test]
    fn missing_queues_or_a_driver_that_enabled_none() {
        let (backend, wire) = fake(false);
        let mut net = Net::new(backend, VM_MAC, false);
        let irq = Arc::new(Recorder::default());
        net.activate(memory(), irq.clone(), vec![], MODERN);
        assert!(*irq.needs_reset.lock().unwrap());
        net.process_rx();
        net.process_queue(7);
        // Queues the driver never enabled are left alone, frames stay in the tap.
        let mem = memory();
        let irq = Arc::new(Recorder::default());
        let q = || Queue::new(NET_QUEUE_SIZE).unwrap();
        wire.lock()
            .unwrap()
            .inbound
            .push_back(frame(VM_MAC, OTHER_MAC, 60));
        net.activate(mem, irq.clone(), vec![q(), q()], MODERN);
        net.process_rx();
        net.process_queue(TX_QUEUE);
        assert_eq!(wire.lock().unwrap().inbound.len(), 1);
        assert!(!*irq.needs_reset.lock().unwrap());
    }

    #[test]
    fn drop_log_is_rate_limited() {
        let mut log = DropLog::default();
        for _ in 0..1000 {
            log.record(DropReason::Spoofed);
        }
        assert_eq!(log.total, 1000);
        assert_eq!(log.since_log, 999, "only the first was logged");
        log.record(DropReason::NotForVm);
        assert_eq!((log.total, log.since_log), (1001, 999));
        log.last_log = log.last_log.map(|t| t - DROP_LOG_INTERVAL);
        log.record(DropReason::Backend(io::ErrorKind::WouldBlock));
        assert_eq!(log.since_log, 0, "logged again after the interval");
    }

    /// Random descriptor tables, available rings, features and tap frames: the device
    /// delivers, drops or marks itself NEEDS_RESET, and never panics.
    #[test]
    fn fuzz_descriptor_tables() {
        let mut rng = XorShift::new(0x7e7);
        let feature_sets = [MODERN, MODERN_NO_MRG, LEGACY, LEGACY_MRG];
        for round in 0..200 {
            let mem = memory();
            let features = feature_sets[round % 4];
            let (backend, wire) = fake(round % 3 == 0);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let net =
                Net::new(backend, VM_MAC, round % 2 == 0).with_local_responder(responder(seen));
            let mut h = harness_with(&mem, net, wire, features, round % 5 == 0);
            for q in [&h.rxq, &h.txq] {
                for i in 0..NET_QUEUE_SIZE {
                    let r = rng.next();
                    let addr = match r % 4 {
                        0 => BUF_START + (r >> 8) % 0x10_0000,
                        1 => (r >> 8) % (TEST_MEM_SIZE as u64 + 4096),
                        2 => TEST_MEM_SIZE as u64 - (r >> 8) % 64,
                        _ => r >> 3,
                    };
                    let len = match (r >> 16) % 4 {
                        0 => 0,
                        1 => (r >> 20) as u32 % 16,
                        2 => 1 + (r >> 20) as u32 % 4096,
                        _ => (r >> 20) as u32,
                    };
                    let flags = (r >> 40) as u16 & 0x7;
                    let next = (r >> 48) as u16 % (NET_QUEUE_SIZE + 4);
                    q.desc_table()
                        .store(
                            i,
                            RawDescriptor::from(Descriptor::new(addr, len, flags, next)),
                        )
                        .unwrap();
                }
                let n = (rng.next() % 12) as u16;
                for j in 0..n {
                    q.avail()
                        .ring()
                        .ref_at(usize::from(j))
                        .unwrap()
                        .store((rng.next() % 270) as u16);
                }
                q.avail().idx().store(if round % 13 == 0 { 700 } else { n });
            }
            let mut tx_data = vec![0u8; 4096];
            rng.fill(&mut tx_data);
            mem.write_slice(&tx_data, GuestAddress(BUF_START)).unwrap();
            let frames: Vec<Vec<u8>> = (0..4)
                .map(|_| {
                    let mut f = vec![0u8; (rng.next() % 3000) as usize];
                    rng.fill(&mut f);
                    f
                })
                .collect();
            h.inbound(&frames);
            h.net.process_queue(TX_QUEUE);
            h.net.process_rx();
            h.net.process_queue(RX_QUEUE);
            h.net.process_queue(TX_QUEUE);
        }
    }

    /// A real tap in a network namespace only this test's thread enters: an ARP request the
    /// guest transmits reaches the kernel through the vnet header the tap was set up for,
    /// and the kernel's reply comes back into the guest's buffers.
    #[test]
    fn tap_backend_in_a_private_netns() {
        std::thread::spawn(tap_round_trip).join().unwrap();
    }

    fn tap_round_trip() {
        const TAP: &str = "vmdnettest0";
        // SAFETY: unshare(CLONE_NEWNET) only moves this thread into a new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            println!("SKIPPED: tap test: unshare: {}", io::Error::last_os_error());
            return;
        }
        let tun = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
        {
            Ok(f) => f,
            Err(e) => {
                println!("SKIPPED: tap test: /dev/net/tun: {e}");
                return;
            }
        };
        // SAFETY: ifreq is plain old data; all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(TAP.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
        // Children inherit this thread's namespace.
        for args in [
            &["link", "set", TAP, "up"][..],
            &["addr", "add", "10.9.0.1/24", "dev", TAP],
        ] {
            match std::process::Command::new("ip").args(args).status() {
                Ok(s) if s.success() => {}
                other => {
                    println!("SKIPPED: tap test: ip {args:?}: {other:?}");
                    return;
                }
            }
        }
        let backend = TapBackend::new(OwnedFd::from(tun)).unwrap();
        assert!(backend.has_vnet_hdr());
        let fd = backend.raw_fd();
        let mem = memory();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let net = Net::new(Box::new(backend), VM_MAC, true);
        assert_eq!(net.backend_fd(), fd);
        let mut h = harness_with(&mem, net, wire, MODERN, false);
        h.post_n(64, 2048);
        // who-has 10.9.0.1 tell 10.9.0.2
        let mut arp = Vec::new();
        arp.extend_from_slice(&BROADCAST);
        arp.extend_from_slice(&VM_MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&VM_MAC);
        arp.extend_from_slice(&[10, 9, 0, 2, 0, 0, 0, 0, 0, 0, 10, 9, 0, 1]);
        h.send(&[&[0; VNET_HDR_LEN], &arp]);
        assert_eq!(h.drops(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let reply = loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll reads and writes one pollfd, which lives across the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            h.net.process_rx();
            let found = h.received().into_iter().find(|p| {
                let f = &p[VNET_HDR_LEN..];
                f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
            });
            if let Some(p) = found {
                break p;
            }
            assert!(Instant::now() < deadline, "no ARP reply from the kernel");
        };
        assert_eq!(le16(&reply, HDR_NUM_BUFFERS), 1);
        assert_eq!(reply[VNET_HDR_LEN..VNET_HDR_LEN + 6], VM_MAC, "to the VM");
        assert_eq!(
            reply[VNET_HDR_LEN + 32..VNET_HDR_LEN + 38],
            VM_MAC,
            "target MAC"
        );
        assert!(!h.needs_reset());
    }
}
