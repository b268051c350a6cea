//! The devices' record: the legacy platform devices, PCI bus 0's host bridge and every
//! virtio-pci function in slot order, each as its own versioned state ([`devices::state`]).

use std::sync::{Arc, Mutex, MutexGuard};

use devices::fw_cfg::FwCfgState;
use devices::i8042::I8042State;
use devices::pci::config::ConfigSpaceState;
use devices::pm::PmState;
use devices::rtc::RtcState;
use devices::serial::SerialState;
use devices::virtio::pci::TransportState;
use devices::virtio::{VirtioDevice, VirtioPciDevice};
use devices::{AcpiPm, FwCfg, Rtc, Serial, I8042};
use serde::{Deserialize, Serialize};

use super::{Parts, SnapshotError};
use crate::lock;

/// Every device's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialState,
    pub rtc: RtcState,
    pub i8042: I8042State,
    pub pm: PmState,
    pub fw_cfg: FwCfgState,
    pub host_bridge: ConfigSpaceState,
    /// The virtio functions, in the order of [`super::Machine::devices`].
    pub pci: Vec<TransportState>,
}

/// The devices of a paused VM, locked: while these guards live no device does any work
/// (the supervisor thread waits to run queues or feed the console), so guest memory, the
/// interrupt controllers and the device records read meanwhile agree.
pub struct Quiesced<'a> {
    virtio: Vec<MutexGuard<'a, dyn VirtioDevice + 'static>>,
    serial: MutexGuard<'a, Serial>,
    rtc: MutexGuard<'a, Rtc>,
    i8042: MutexGuard<'a, I8042>,
    pm: MutexGuard<'a, AcpiPm>,
    fw_cfg: MutexGuard<'a, FwCfg>,
}

impl Parts {
    /// Lock every device (virtio devices first, in slot order, as nothing else takes two).
    pub fn quiesce<'a>(&'a self, virtio: &'a [Arc<Mutex<dyn VirtioDevice>>]) -> Quiesced<'a> {
        Quiesced {
            virtio: virtio.iter().map(|d| lock(d)).collect(),
            serial: lock(&self.serial),
            rtc: lock(&self.rtc),
            i8042: lock(&self.i8042),
            pm: lock(&self.pm),
            fw_cfg: lock(&self.fw_cfg),
        }
    }

    /// The devices behind the virtio functions, in slot order.
    pub fn virtio_devices(&self) -> Vec<Arc<Mutex<dyn VirtioDevice>>> {
        self.transports
            .iter()
            .map(|(_, t)| lock(t).device())
            .collect()
    }
}

impl Quiesced<'_> {
    /// Every device's state.
    pub fn state(&self, parts: &Parts) -> DevicesState {
        let host_bridge = lock(&parts.pci_root)
            .device(0)
            .map(|d| lock(&d).config().state())
            .unwrap_or_else(|| ConfigSpaceState {
                regs: Vec::new(),
                bars: Vec::new(),
            });
        DevicesState {
            serial: self.serial.state(),
            rtc: self.rtc.state(),
            i8042: self.i8042.state(),
            pm: self.pm.state(),
            fw_cfg: self.fw_cfg.state(),
            host_bridge,
            pci: parts
                .transports
                .iter()
                .zip(&self.virtio)
                .map(|((_, t), d)| lock(t).state(&**d))
                .collect(),
        }
    }
}

/// Load `s` into the devices of a VM built from the same configuration, after guest memory
/// and the interrupt controllers. Moved BARs are decoded at their restored addresses and
/// their queue-notify ioeventfds follow them.
pub fn restore(parts: &Parts, s: &DevicesState) -> Result<(), SnapshotError> {
    if s.pci.len() != parts.transports.len() {
        return Err(SnapshotError::Mismatch(format!(
            "the stream has {} virtio functions, this VM {}",
            s.pci.len(),
            parts.transports.len()
        )));
    }
    lock(&parts.serial).restore(&s.serial)?;
    lock(&parts.rtc).restore(&s.rtc)?;
    lock(&parts.i8042).restore(&s.i8042)?;
    lock(&parts.fw_cfg).restore(&s.fw_cfg)?;
    {
        let mut pm = lock(&parts.pm);
        pm.restore(&s.pm)?;
        // A pending enabled event asserts the (level-triggered) SCI again.
        pm.resample();
    }
    let mut root = lock(&parts.pci_root);
    if let Some(bridge) = root.device(0) {
        root.reconfigure(0, || lock(&bridge).config_mut().restore(&s.host_bridge))
            .unwrap_or(Ok(()))?;
    }
    for ((slot, transport), state) in parts.transports.iter().zip(&s.pci) {
        let t: &Arc<Mutex<VirtioPciDevice>> = transport;
        root.reconfigure(*slot, || lock(t).restore(state))
            .unwrap_or(Ok(()))?;
    }
    Ok(())
}
