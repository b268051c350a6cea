//! virtio-scsi with one read-only CD-ROM (spec §5.6 vioscsi; F-HW-14, F-HW-16).
//!
//! This module owns the virtio side: the PCI identity, the configuration space (virtio 1.x
//! §5.6.4; the driver may set `sense_size` and `cdb_size`), the three queues and the one
//! target/LUN addressed as target 0 LUN 0. Its submodules own the rest:
//! * `image`: the ISO image, checked at creation ([`CdromError`]) and read in 2048-byte
//!   blocks;
//! * `request` and `control`: the request and control queue formats;
//! * `mmc`, `spc`, `disc` and `sense`: the SCSI/MMC command set of a read-only CD-ROM.
//!
//! The event queue's buffers are left in the ring, never used: no event is ever reported
//! (no hot-plug, no media change), and they go away with the queue at reset.
//!
//! A guest can neither make the device panic nor reach memory outside the chain's buffers:
//! protocol and SCSI errors are answered in the response (VIRTIO_SCSI_S_* and CHECK
//! CONDITION with fixed-format sense), and only a chain that cannot be answered marks the
//! device NEEDS_RESET. Host read errors are MEDIUM ERROR for the guest and logged once.

mod control;
mod disc;
mod image;
mod mmc;
mod request;
mod sense;
mod spc;
#[cfg(test)]
mod tests;

pub use image::CdromError;

use std::fs::File;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_SCSI;
use virtio_bindings::virtio_scsi::{VIRTIO_SCSI_CDB_DEFAULT_SIZE, VIRTIO_SCSI_SENSE_DEFAULT_SIZE};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::blk::{BlockBackend, RawFile};
use super::queue::ActiveQueues;
use super::{transitional_ids, VirtioDevice, VirtioInterrupt, RING_FEATURES};
use crate::pci::config::PciIds;
use image::Image;
use mmc::CdRom;

/// Size of each queue (vmd's VIOSCSI_QUEUE_SIZE).
pub const SCSI_QUEUE_SIZE: u16 = 128;
/// Control, event and one request queue.
const QUEUE_SIZES: [u16; 3] = [SCSI_QUEUE_SIZE; 3];
const CONTROL_QUEUE: usize = 0;
const REQUEST_QUEUE: usize = 2;
/// Request queues (num_queues counts only those).
const NUM_REQUEST_QUEUES: u32 = 1;
/// Data segments per request: the queue size less the request and response descriptors.
/// OpenBSD's vioscsi refuses a device with fewer than 17.
const SEG_MAX: u32 = SCSI_QUEUE_SIZE as u32 - 2;
/// Largest transfer the driver should ask for, in 512-byte sectors (Linux's default when the
/// device gives none). Reads are streamed in bounded chunks, so this is only a hint.
const MAX_SECTORS: u32 = 0xffff;
/// Commands the driver may have outstanding per LUN: as many as the queue holds.
const CMD_PER_LUN: u32 = SCSI_QUEUE_SIZE as u32;
/// Bytes of `virtio_scsi_event`, the size of the event buffers the driver posts.
const EVENT_INFO_SIZE: u32 = 16;
/// Largest sense buffer honoured (SPC-4: sense data are at most 252 bytes).
const MAX_SENSE_SIZE: usize = 252;
/// Largest CDB buffer honoured (SPC-4: the longest CDB is 260 bytes).
const MAX_CDB_SIZE: usize = 260;
/// The one target; with one channel and one LUN, max_channel, max_target and max_lun are 0.
const TARGET: u8 = 0;
const MAX_TARGET: u16 = TARGET as u16;
/// PCI class "mass storage", subclass "SCSI".
const PCI_CLASS_MASS_STORAGE: u8 = 0x01;
const PCI_SUBCLASS_SCSI: u8 = 0x00;

// Offsets in struct virtio_scsi_config.
const CFG_NUM_QUEUES: usize = 0;
const CFG_SEG_MAX: usize = 4;
const CFG_MAX_SECTORS: usize = 8;
const CFG_CMD_PER_LUN: usize = 12;
const CFG_EVENT_INFO_SIZE: usize = 16;
const CFG_SENSE_SIZE: usize = 20;
const CFG_CDB_SIZE: usize = 24;
const CFG_MAX_TARGET: usize = 30;
/// Bytes of struct virtio_scsi_config.
const CONFIG_LEN: usize = 36;
/// The fields the driver may write: sense_size and cdb_size.
const WRITABLE_CONFIG: std::ops::Range<usize> = CFG_SENSE_SIZE..CFG_CDB_SIZE + 4;

/// Bytes of the LUN field of requests.
const LUN_LEN: usize = 8;
/// First LUN byte: the only format virtio-scsi defines.
const LUN_FORMAT: u8 = 1;
/// Third LUN byte: flat space addressing (what Linux, OpenBSD and SeaBIOS send) or
/// peripheral addressing of LUN 0; the LUN's high bits are below it.
const LUN_FLAT_SPACE: u8 = 0x40;

/// Whether the `lun` field of a request addresses the CD-ROM: target 0, LUN 0.
fn addresses_lun0(lun: &[u8]) -> bool {
    lun.len() == LUN_LEN
        && lun[0] == LUN_FORMAT
        && lun[1] == TARGET
        && lun[2] & !LUN_FLAT_SPACE == 0
        && lun[3..].iter().all(|&b| b == 0)
}

/// Where the request and response fields end, as the driver configured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    sense_size: usize,
    cdb_size: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            sense_size: VIRTIO_SCSI_SENSE_DEFAULT_SIZE as usize,
            cdb_size: VIRTIO_SCSI_CDB_DEFAULT_SIZE as usize,
        }
    }
}

/// A virtio-scsi controller with one CD-ROM.
pub struct Scsi {
    cdrom: CdRom,
    image: Image,
    layout: Layout,
    active: Option<ActiveQueues>,
}

impl Scsi {
    /// A CD-ROM serving the ISO image `image` (opened read-only). Refuses an empty file and one
    /// without an ISO 9660 primary volume descriptor (so also anything shorter than 34 KiB);
    /// accepts El Torito and isohybrid images (xorriso, mkisofs). The capacity is the size in
    /// whole 2048-byte blocks, fixed from now on.
    pub fn new(image: File) -> Result<Self, CdromError> {
        Self::with_backend(Box::new(RawFile::new(image, true)?))
    }

    /// A CD-ROM over any backend (only its reads are used), checked as [`Scsi::new`] does.
    pub fn with_backend(backend: Box<dyn BlockBackend>) -> Result<Self, CdromError> {
        let image = Image::open(backend)?;
        Ok(Scsi {
            cdrom: CdRom::new(image.blocks()),
            image,
            layout: Layout::default(),
            active: None,
        })
    }

    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let mut put = |off: usize, b: &[u8]| c[off..off + b.len()].copy_from_slice(b);
        put(CFG_NUM_QUEUES, &NUM_REQUEST_QUEUES.to_le_bytes());
        put(CFG_SEG_MAX, &SEG_MAX.to_le_bytes());
        put(CFG_MAX_SECTORS, &MAX_SECTORS.to_le_bytes());
        put(CFG_CMD_PER_LUN, &CMD_PER_LUN.to_le_bytes());
        put(CFG_EVENT_INFO_SIZE, &EVENT_INFO_SIZE.to_le_bytes());
        put(
            CFG_SENSE_SIZE,
            &(self.layout.sense_size as u32).to_le_bytes(),
        );
        put(CFG_CDB_SIZE, &(self.layout.cdb_size as u32).to_le_bytes());
        put(CFG_MAX_TARGET, &MAX_TARGET.to_le_bytes());
        // max_channel and max_lun stay 0.
        c
    }
}

fn le32(c: &[u8; CONFIG_LEN], off: usize) -> usize {
    u32::from_le_bytes([c[off], c[off + 1], c[off + 2], c[off + 3]]) as usize
}

impl VirtioDevice for Scsi {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_SCSI
    }
    fn pci_ids(&self) -> PciIds {
        transitional_ids(VIRTIO_ID_SCSI, PCI_CLASS_MASS_STORAGE, PCI_SUBCLASS_SCSI)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        RING_FEATURES
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        super::copy_window(&config, offset, data, 0);
    }
    /// sense_size and cdb_size, byte by byte (legacy drivers may write narrowly), each kept
    /// within `MAX_SENSE_SIZE` and `MAX_CDB_SIZE`; reads show what is honoured. Writes
    /// elsewhere are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut config = self.config();
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = usize::try_from(offset).ok().and_then(|o| o.checked_add(i)) else {
                break;
            };
            if WRITABLE_CONFIG.contains(&o) {
                config[o] = b;
            }
        }
        self.layout = Layout {
            sense_size: le32(&config, CFG_SENSE_SIZE).min(MAX_SENSE_SIZE),
            cdb_size: le32(&config, CFG_CDB_SIZE).min(MAX_CDB_SIZE),
        };
    }
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
        _features: u64,
    ) {
        self.active = Some(ActiveQueues::new(mem, interrupt, queues));
    }
    fn process_queue(&mut self, index: usize) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let cdrom = &mut self.cdrom;
        match index {
            CONTROL_QUEUE => a.process(index, &mut |mem, descs| control::serve(cdrom, mem, descs)),
            REQUEST_QUEUE => {
                let (image, layout) = (&mut self.image, self.layout);
                a.process(index, &mut |mem, descs| {
                    request::serve(cdrom, image, layout, mem, descs)
                })
            }
            // The event queue: its buffers wait for events that never come.
            _ => {}
        }
    }
    fn reset(&mut self) {
        self.active = None;
        self.layout = Layout::default();
        self.cdrom.reset();
    }
}
