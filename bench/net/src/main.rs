//! virtio-net benchmark: frames through our virtio-net over a real tap against the same
//! frames on the same tap fd with plain read(2)/write(2) (the limit), as ratios of medians.
//!
//! Our side is an in-process synthetic driver, no guest: a split virtqueue pair in
//! vm-memory guest memory, `devices::virtio::net::Net` over a `TapBackend` on a vnet-header
//! tap (as vmd creates them), in a private network namespace the benchmark makes
//! (`unshare(CLONE_NEWNET)`, so root). The driver negotiates VERSION_1, EVENT_IDX,
//! MRG_RXBUF, MAC and STATUS and no offloads: every frame carries a zeroed 12-byte
//! `virtio_net_hdr`. The device's interrupt is an eventfd write, as through an irqfd; the
//! guest's queue notification (ioeventfd, epoll wake-up) is not measured.
//!
//! - TX (guest → host): the driver posts a batch of frames, one descriptor each (header and
//!   frame together, as Linux does), calls `process_queue(TX)` and reaps the used ring; the
//!   device copies each frame out of guest memory and write(2)s it to the tap. The limit:
//!   write(2) of the same header + frame on the same tap fd. Either way the kernel takes the
//!   frame in as received on the tap and drops it (it is for another host and of a local
//!   experimental EtherType), the same work on both sides.
//! - RX (host → guest): a batch of frames is transmitted on the tap through an AF_PACKET
//!   socket (not timed), which queues them for the tap's reader. Ours: the driver tops its
//!   receive buffers (2 KiB, one descriptor each) up to the batch size, calls `process_rx`
//!   as the VM's event loop does when the tap becomes readable, and reaps; the device reads
//!   the frames until the tap is empty. The limit: read(2) on the same tap fd until EAGAIN.
//!
//! Frames are 1514 bytes (a 1500-byte MTU payload behind the Ethernet header) and 64 bytes.
//! A third row runs the device over a backend that moves nothing through the kernel (sends
//! dropped, receives copied from memory): the device path's own cost per frame.
//!
//! Usage: bench-net [--quick] [RUNS]

#[path = "../../blk/src/vring.rs"]
mod vring;

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_common::median;
use devices::virtio::net::{Net, NetBackend, TapBackend, NET_QUEUE_SIZE, TX_QUEUE, VNET_HDR_LEN};
use devices::virtio::{VirtioDevice, RING_FEATURES};
use net::netlink::Netlink;
use net::tap::{Tap, TapOptions};
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vring::{Buf, Irq, Vring, RING_AREA};

/// The tap, inside the benchmark's own network namespace.
const TAP: &str = "vmdbench0";
/// The VM's MAC, and the host the frames are for (neither is the tap's).
const VM_MAC: [u8; 6] = [0xfe, 0xe1, 0xba, 0xd0, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// IEEE 802 local experimental EtherType: no protocol handler takes it.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// Frames per batch: one ring's worth, below the tap's queue of 500.
const BATCH: usize = NET_QUEUE_SIZE as usize;
/// Receive and transmit buffers: one 2 KiB buffer per ring slot.
const BUF_LEN: u32 = 2048;
/// Guest memory: receive ring at 0, transmit ring after it, then the buffers.
const TX_RING: u64 = RING_AREA;
const RX_BUFS: u64 = 1 << 20;
const TX_BUFS: u64 = 2 << 20;
const MEM_SIZE: usize = 4 << 20;
/// Frames per run.
const FRAMES: usize = 256 * BATCH;
const QUICK_FRAMES: usize = 16 * BATCH;
/// Runs per case unless given on the command line.
const DEFAULT_RUNS: usize = 7;
const QUICK_RUNS: usize = 3;
/// The target for 1514-byte frames: our frames per second over the raw tap's.
const TARGET: f64 = 0.70;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Guest → host.
    Tx,
    /// Host → guest.
    Rx,
}

/// One workload: direction and frame size (Ethernet header included, no FCS).
struct Case {
    dir: Dir,
    frame: usize,
}

impl Case {
    fn name(&self) -> String {
        let dir = match self.dir {
            Dir::Tx => "tx guest->host",
            Dir::Rx => "rx host->guest",
        };
        format!("{dir} {}B", self.frame)
    }

    /// The Ethernet frame every side sends.
    fn frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(self.frame);
        let (dst, src) = match self.dir {
            Dir::Tx => (PEER_MAC, VM_MAC),
            Dir::Rx => (VM_MAC, PEER_MAC),
        };
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE);
        f.extend((f.len()..self.frame).map(|i| i as u8));
        f
    }
}

/// Everything the benchmark needs in its namespace.
struct Setup {
    /// The tap's fd for the device (handed over at each run).
    tap: File,
    /// The same tap, for the raw side.
    raw: File,
    /// Transmits frames on the tap, for the receive cases.
    inject: OwnedFd,
}

/// Moves into a private network namespace and makes the tap there, up, without IPv6 (whose
/// router solicitations would add frames); `Err` says why the benchmark cannot run here.
fn setup() -> Result<Setup, String> {
    // SAFETY: unshare(CLONE_NEWNET) takes no pointers; it moves this (only) thread into a new
    // network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {} (needs root)",
            io::Error::last_os_error()
        ));
    }
    let tap = Tap::create(Some(TAP), TapOptions { vnet_hdr: true }).map_err(|e| e.to_string())?;
    // /proc/sys/net shows the namespace of whoever opens it: this one.
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1")
        .map_err(|e| format!("disable IPv6 on {TAP}: {e}"))?;
    let mut nl = Netlink::connect().map_err(|e| e.to_string())?;
    nl.set_up(TAP, true).map_err(|e| e.to_string())?;
    let index = nl
        .link(TAP)
        .map_err(|e| e.to_string())?
        .ok_or(format!("{TAP} vanished"))?
        .index;
    let raw = tap.file().try_clone().map_err(|e| e.to_string())?;
    // Non-blocking, as the device's TapBackend makes it too (the fds share one description).
    // SAFETY: F_GETFL and F_SETFL only read and set the status flags of an fd we own.
    let rc = unsafe {
        let fl = libc::fcntl(raw.as_raw_fd(), libc::F_GETFL);
        if fl < 0 {
            fl
        } else {
            libc::fcntl(raw.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(format!(
            "O_NONBLOCK on {TAP}: {}",
            io::Error::last_os_error()
        ));
    }
    let inject = packet_socket(index).map_err(|e| format!("AF_PACKET socket: {e}"))?;
    Ok(Setup {
        tap: File::from(tap.into_fd()),
        raw,
        inject,
    })
}

/// An AF_PACKET socket that transmits raw frames on interface `index` and receives nothing
/// (protocol 0), so it adds no work to the frames the benchmark measures.
fn packet_socket(index: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes only integers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all-zero bytes are a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = index as i32;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: bind reads `len` bytes of one sockaddr_ll, which `sll` is and which lives
    // across the call.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: PACKET_QDISC_BYPASS reads one int through the pointer, which lives across the
    // call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Transmits `n` copies of `frame` on the tap (not timed): the tap queues them for its reader.
fn inject(sock: &OwnedFd, frame: &[u8], n: usize) {
    for _ in 0..n {
        // SAFETY: send reads `frame.len()` bytes from `frame`, which lives across the call.
        let rc = unsafe {
            libc::send(
                sock.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            rc,
            frame.len() as isize,
            "inject frame: {}",
            io::Error::last_os_error()
        );
    }
}

/// Reads frames off the tap until it is empty; how many there were.
fn drain(tap: &File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        match (&*tap).read(buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("read tap: {e}"),
        }
    }
}

/// A backend that moves no frames through the kernel: sends are dropped, and receives copy
/// `packet` while `waiting` says frames are queued. What remains is the device path alone.
struct NoIo {
    packet: Vec<u8>,
    waiting: Arc<AtomicUsize>,
}

impl NetBackend for NoIo {
    fn has_vnet_hdr(&self) -> bool {
        true
    }
    fn send(&mut self, _bufs: &[IoSlice<'_>]) -> io::Result<()> {
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return Ok(None);
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        buf[..self.packet.len()].copy_from_slice(&self.packet);
        Ok(Some(self.packet.len()))
    }
    fn raw_fd(&self) -> RawFd {
        -1
    }
}

/// Who moves the frames.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// read(2)/write(2) on the tap fd.
    Raw,
    /// Our device over the tap.
    Ours,
    /// Our device over [`NoIo`].
    NoIo,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Raw => "raw tap",
            Side::Ours => "ours",
            Side::NoIo => "ours, no-I/O backend",
        }
    }
}

/// The raw tap: write(2) or read(2) on the tap fd. Returns the time and the frames moved.
fn run_raw(case: &Case, s: &Setup, frames: usize) -> (Duration, usize) {
    let mut packet = vec![0u8; VNET_HDR_LEN];
    packet.extend_from_slice(&case.frame());
    let mut buf = vec![0u8; 1 << 16];
    let mut time = Duration::ZERO;
    let mut moved = 0;
    for _ in 0..frames / BATCH {
        match case.dir {
            Dir::Tx => {
                let start = Instant::now();
                for _ in 0..BATCH {
                    let n = (&s.raw).write(&packet).expect("write tap");
                    assert_eq!(n, packet.len(), "short tap write");
                }
                time += start.elapsed();
                moved += BATCH;
            }
            Dir::Rx => {
                inject(&s.inject, &packet[VNET_HDR_LEN..], BATCH);
                let start = Instant::now();
                moved += drain(&s.raw, &mut buf);
                time += start.elapsed();
            }
        }
    }
    (time, moved)
}

/// The same frames through a virtio-net device freshly activated (not timed) over the tap,
/// or over [`NoIo`] when `no_io`.
fn run_ours(
    case: &Case,
    s: &Setup,
    mem: &GuestMemoryMmap,
    frames: usize,
    no_io: bool,
) -> (Duration, usize) {
    let frame = case.frame();
    let waiting = Arc::new(AtomicUsize::new(0));
    let backend: Box<dyn NetBackend> = if no_io {
        let mut packet = vec![0u8; VNET_HDR_LEN];
        packet.extend_from_slice(&frame);
        Box::new(NoIo {
            packet,
            waiting: waiting.clone(),
        })
    } else {
        let fd = OwnedFd::from(s.tap.try_clone().expect("dup tap fd"));
        Box::new(TapBackend::new(fd).expect("tap backend"))
    };
    let mut net = Net::new(backend, VM_MAC, false);
    let mut rx = Vring::<1>::new(mem, 0, NET_QUEUE_SIZE);
    let mut tx = Vring::<1>::new(mem, TX_RING, NET_QUEUE_SIZE);
    let irq = Arc::new(Irq::new());
    let bit = |b: u32| 1u64 << b;
    let features = RING_FEATURES
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_STATUS)
        | bit(VIRTIO_NET_F_MRG_RXBUF);
    assert_eq!(net.features() & features, features, "features offered");
    net.activate(
        mem.clone(),
        irq.clone(),
        vec![rx.queue(mem), tx.queue(mem)],
        features,
    );
    // Every transmit buffer holds the packet (zeroed header, frame) from the start: the
    // guest's stack filling it is not the device's work.
    let tx_len = (VNET_HDR_LEN + frame.len()) as u32;
    for slot in 0..u64::from(NET_QUEUE_SIZE) {
        let at = TX_BUFS + slot * u64::from(BUF_LEN);
        mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(at))
            .expect("tx buffer");
        mem.write_slice(&frame, GuestAddress(at + VNET_HDR_LEN as u64))
            .expect("tx buffer");
    }
    let rx_len = tx_len;
    let mut time = Duration::ZERO;
    let mut moved = 0;
    for _ in 0..frames / BATCH {
        match case.dir {
            Dir::Tx => {
                let start = Instant::now();
                for _ in 0..BATCH {
                    tx.push(|slot| {
                        [Buf {
                            addr: TX_BUFS + u64::from(slot) * u64::from(BUF_LEN),
                            len: tx_len,
                            device_writes: false,
                        }]
                    });
                }
                tx.publish();
                net.process_queue(TX_QUEUE);
                moved += usize::from(tx.reap(|_, _| {}));
                time += start.elapsed();
                assert_eq!(tx.in_flight(), 0, "frames left in the ring");
            }
            Dir::Rx => {
                if no_io {
                    waiting.store(BATCH, Ordering::Relaxed);
                } else {
                    inject(&s.inject, &frame, BATCH);
                }
                let start = Instant::now();
                while usize::from(rx.in_flight()) < BATCH {
                    rx.push(|slot| {
                        [Buf {
                            addr: RX_BUFS + u64::from(slot) * u64::from(BUF_LEN),
                            len: BUF_LEN,
                            device_writes: true,
                        }]
                    });
                }
                rx.publish();
                net.process_rx();
                moved += usize::from(rx.reap(|_, len| {
                    assert_eq!(len, rx_len, "received frame of another size");
                }));
                time += start.elapsed();
            }
        }
    }
    let interrupts = irq.take();
    assert!(interrupts > 0, "no interrupt");
    if case.dir == Dir::Tx {
        assert_eq!(
            interrupts as usize,
            frames / BATCH,
            "one interrupt per batch"
        );
    }
    (time, moved)
}

/// Frames the tap's interface received (written to the tap fd) and transmitted (queued for
/// its reader), from this namespace's /proc/net/dev.
fn tap_counters() -> (u64, u64) {
    let dev = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev");
    let line = dev
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{TAP}:")))
        .expect("tap in /proc/net/dev");
    // bytes packets errs drop fifo frame compressed multicast, received then transmitted.
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().expect("counter"))
        .collect();
    (n[1], n[9])
}

fn main() {
    let (quick, runs) = bench_common::args("bench-net", DEFAULT_RUNS, QUICK_RUNS);
    let frames = if quick { QUICK_FRAMES } else { FRAMES };

    let s = match setup() {
        Ok(s) => s,
        Err(why) => {
            println!("SKIPPED: bench-net: {why}");
            return;
        }
    };
    // Whatever the kernel sent while the tap came up.
    drain(&s.raw, &mut vec![0u8; 1 << 16]);

    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    // Touch every page now, so no run pays for first-touch page faults.
    mem.write_slice(&vec![0; MEM_SIZE], GuestAddress(0))
        .expect("guest memory");
    println!("bench-net: frames through our virtio-net vs read(2)/write(2) on the same tap");
    println!(
        "  ours: in-process synthetic driver (split rings of {NET_QUEUE_SIZE} in vm-memory guest memory, \
         batches of {BATCH}, process_queue(TX) / process_rx, reap; interrupt = eventfd write)"
    );
    println!(
        "  tap: {TAP}, IFF_VNET_HDR (12-byte header, no offloads), in a private netns; \
         tx frames are dropped by the kernel (other host, experimental EtherType)"
    );
    println!(
        "  rx: frames queued on the tap through an AF_PACKET socket before each batch (not timed)"
    );
    println!(
        "  no-I/O backend: the device path alone (sends dropped, frames received from memory)"
    );
    println!(
        "  {runs} runs per case of {frames} frames, sides in rotating order; medians; \
         MB = 10^6 bytes of frame; vs raw = ours frames/s / raw tap frames/s"
    );
    println!();
    println!(
        "{:<20} {:<20} {:>10} {:>9} {:>8} {:>7}",
        "case", "side", "frames/s", "MB/s", "us/frame", "vs raw"
    );

    let sides = [Side::Raw, Side::Ours, Side::NoIo];
    let mut target = Vec::new();
    for dir in [Dir::Tx, Dir::Rx] {
        for size in [1514, 64] {
            let case = Case { dir, frame: size };
            let mut rates = vec![Vec::with_capacity(runs); sides.len()];
            for run in 0..runs {
                for k in 0..sides.len() {
                    let i = (run + k) % sides.len();
                    let (rx_before, tx_before) = tap_counters();
                    let (t, moved) = match sides[i] {
                        Side::Raw => run_raw(&case, &s, frames),
                        Side::Ours => run_ours(&case, &s, &mem, frames, false),
                        Side::NoIo => run_ours(&case, &s, &mem, frames, true),
                    };
                    let (rx_after, tx_after) = tap_counters();
                    // The kernel saw every frame: a write the tap refused would not count.
                    let seen = match dir {
                        Dir::Tx => rx_after - rx_before,
                        Dir::Rx => tx_after - tx_before,
                    };
                    let expected = if sides[i] == Side::NoIo { 0 } else { frames };
                    assert_eq!(seen as usize, expected, "frames through the tap");
                    assert!(moved >= frames, "{moved} frames of {frames} arrived");
                    rates[i].push(moved as f64 / t.as_secs_f64());
                }
            }
            let raw = median(&rates[0]);
            let ours = median(&rates[1]);
            for (i, side) in sides.iter().enumerate() {
                let rate = median(&rates[i]);
                println!(
                    "{:<20} {:<20} {:>10.0} {:>9.1} {:>8.2} {:>7}",
                    if i == 0 { case.name() } else { String::new() },
                    side.label(),
                    rate,
                    rate * size as f64 / 1e6,
                    1e6 / rate,
                    if *side == Side::Ours {
                        format!("{:.3}", ours / raw)
                    } else {
                        String::new()
                    }
                );
            }
            if size == 1514 {
                target.push((case.name(), ours / raw));
            }
        }
    }

    println!();
    let met = target.iter().all(|(_, r)| *r >= TARGET);
    let detail: Vec<String> = target.iter().map(|(n, r)| format!("{n} {r:.3}")).collect();
    println!(
        "target (1514-byte frames through virtio-net >= {TARGET:.2} of the raw tap, both ways): {} ({})",
        if met { "MET" } else { "NOT MET" },
        detail.join(", ")
    );
}
