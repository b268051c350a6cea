//! The host bridge at 00:00.0 with OpenBSD's "VMM Host" IDs, so OpenBSD guests print
//! `pchb0 ... "OpenBSD VMM Host"` as under vmd (spec §5.5, F-HW-08). No BARs, no interrupt.

use super::config::{ConfigSpace, PciIds};
use super::{PciDevice, PCI_PRODUCT_OPENBSD_PCHB, PCI_VENDOR_OPENBSD};

/// PCI class code: bridge device.
pub const PCI_CLASS_BRIDGE: u8 = 0x06;
/// PCI subclass: host bridge.
pub const PCI_SUBCLASS_BRIDGE_HOST: u8 = 0x00;

/// Device 0 on bus 0.
pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    /// The bridge vmd presents.
    pub fn new() -> Self {
        HostBridge {
            config: ConfigSpace::new(PciIds {
                vendor: PCI_VENDOR_OPENBSD,
                device: PCI_PRODUCT_OPENBSD_PCHB,
                class: PCI_CLASS_BRIDGE,
                subclass: PCI_SUBCLASS_BRIDGE_HOST,
                subsystem_vendor: PCI_VENDOR_OPENBSD,
                ..Default::default()
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    // The bridge has no BARs: nothing is ever routed here.
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}
