//! PCI bus 0: configuration mechanism 1 and ECAM, the host bridge, BAR allocation and
//! decoding, legacy INTx and MSI-X (spec §5.5, F-HW-08, F-HW-16).
//!
//! The hypervisor builds one [`PciRoot`], adds devices to it (each gets the next free slot
//! and BAR addresses from the root's [`BarAllocator`]), shares it as `Arc<Mutex<PciRoot>>`
//! and maps four bus devices that all forward into it:
//!
//! * [`PciConfigIo`] on the port-I/O bus at [`PCI_CONFIG_IO_BASE`] (length [`PCI_CONFIG_IO_LEN`]);
//! * [`PciEcam`] on the MMIO bus at a base of its choosing, length [`ECAM_SIZE`];
//! * [`PciBarWindow`]s covering the I/O and memory windows BARs are allocated from: the root
//!   decodes BAR addresses itself, like a real host bridge, so a guest that moves a BAR needs
//!   no bus remapping. [`BarMove`] notifications exist for what KVM matches by address
//!   (ioeventfds).

mod alloc;
pub mod config;
mod host_bridge;
pub mod msix;
mod root;

pub use alloc::BarAllocator;
pub use config::{BarSpace, ConfigSpace, BAR_COUNT, CONFIG_SPACE_SIZE};
pub use host_bridge::HostBridge;
pub use msix::{MsiMessage, MsiTrigger, Msix};
pub use root::{
    map_root, BarMoveHandler, PciBarWindow, PciConfigIo, PciEcam, PciRoot, SharedPciDevice,
};

/// PCI vendor id of the OpenBSD project (spec §5.5).
pub const PCI_VENDOR_OPENBSD: u16 = 0x0b5d;
/// OpenBSD's product id for the host bridge, "VMM Host" (OpenBSD pcidevs).
pub const PCI_PRODUCT_OPENBSD_PCHB: u16 = 0x0666;
/// OpenBSD's product id for the control device, "VMM Control" (OpenBSD pcidevs).
pub const PCI_PRODUCT_OPENBSD_CONTROL: u16 = 0x0777;

/// Ports of configuration mechanism 1: the address register at 0xCF8, data at 0xCFC-0xCFF.
pub const PCI_CONFIG_IO_BASE: u16 = 0xcf8;
/// Number of ports [`PciConfigIo`] decodes.
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// ECAM covers 4 KiB per function, 8 functions, 32 devices: 1 MiB for bus 0 alone.
pub const ECAM_SIZE: u64 = 1 << 20;
/// Slots (devices) on one bus.
pub const PCI_SLOTS: usize = 32;

/// The MMIO hole below 4 GiB (docs/platform.md) up to the IOAPIC: memory BARs and the ECAM
/// window live here.
pub const PCI_MMIO_HOLE_START: u64 = 0xf000_0000;
/// End (exclusive) of the part of the hole PCI may use: the IOAPIC sits at `0xFEC0_0000`.
pub const PCI_MMIO_HOLE_END: u64 = 0xfec0_0000;
/// First port handed to I/O BARs, as vmd does (spec §5.4); legacy devices all sit below.
pub const PCI_IO_START: u64 = 0x1000;
/// End (exclusive) of the x86 port space.
pub const PCI_IO_END: u64 = 0x1_0000;
/// Every I/O BAR takes a 4 KiB slot of port space (spec §5.4).
pub const PCI_IO_BAR_STEP: u64 = 0x1000;

/// A BAR the guest moved. The root has already switched its own decoding to `new`; the
/// caller re-registers whatever KVM matches by address (ioeventfds) inside the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    /// Device number on bus 0.
    pub slot: u8,
    /// BAR index (0-5).
    pub bar: usize,
    /// Port or memory space.
    pub space: BarSpace,
    /// Previous base address.
    pub old: u64,
    /// New base address.
    pub new: u64,
    /// Length of the BAR.
    pub size: u64,
}

/// A function on bus 0. The generic header behaviour (IDs, command, BARs, sizing) lives in
/// [`ConfigSpace`]; devices add capabilities and BAR contents.
pub trait PciDevice: Send {
    /// The device's configuration space.
    fn config(&self) -> &ConfigSpace;
    /// Mutable access, for the root to assign BAR addresses.
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// A guest read of configuration space at `offset` (any width, inside 4 KiB).
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// A guest write of configuration space; devices with capabilities that have side
    /// effects (MSI-X enable and mask) override this and call [`ConfigSpace::write`].
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }
    /// A guest read inside BAR `bar` at `offset` from its base.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]);
    /// A guest write inside BAR `bar` at `offset` from its base.
    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]);
}

/// Errors building the bus.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// All 32 slots are taken.
    #[error("no free PCI slot on bus 0")]
    NoSlot,
    /// A BAR does not fit in what is left of its window.
    #[error("no room for a {size:#x}-byte {space:?} BAR")]
    NoSpace { space: BarSpace, size: u64 },
}
