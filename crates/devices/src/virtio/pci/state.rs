//! The transport's registers as a snapshot record ([`crate::state`]), and loading one into a
//! freshly built transport of the same device.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{lock, QueueConfig, VirtioPciDevice, COMMAND_INTX_DISABLE, STATUS_NEEDS_RESET};
use crate::pci::config::ConfigSpaceState;
use crate::pci::msix::MsixState;
use crate::state::StateError;
use crate::virtio::{DeviceState, VirtioDevice};

const WHAT: &str = "virtio transport";

/// One queue's registers as the driver programmed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub size: u16,
    pub ready: bool,
    /// Guest addresses of the descriptor table, available ring and used ring.
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// The queue's MSI-X vector.
    pub vector: u16,
}

/// A virtio-pci function: configuration space, MSI-X, the common registers, each queue's
/// registers, the interrupt status and the device's own state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub config: ConfigSpaceState,
    pub msix: Option<MsixState>,
    /// The features the device offers (checked: a restore needs the same device).
    pub device_features: u64,
    pub driver_features: u64,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub queue_select: u16,
    pub status: u8,
    pub queues: Vec<QueueState>,
    /// The driver set DRIVER_OK and the device took its queues.
    pub activated: bool,
    pub isr: u8,
    pub needs_reset: bool,
    pub generation: u8,
    pub config_vector: u16,
    pub device: DeviceState,
}

impl VirtioPciDevice {
    /// The guest-visible state of the transport and of `device`, the device behind it,
    /// which the caller has locked (to keep it from running its queues meanwhile).
    pub fn state(&self, device: &dyn VirtioDevice) -> TransportState {
        let irq = &self.irq;
        TransportState {
            config: self.config.state(),
            msix: irq.msix.as_ref().map(|m| lock(m).state()),
            device_features: self.device_features,
            driver_features: self.driver_features,
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            queue_select: self.queue_select,
            status: self.status,
            queues: self
                .queues
                .iter()
                .zip(&irq.queue_vectors)
                .map(|(q, v)| QueueState {
                    size: q.size,
                    ready: q.ready,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    vector: v.load(Ordering::SeqCst),
                })
                .collect(),
            activated: self.activated,
            isr: irq.isr.load(Ordering::SeqCst),
            needs_reset: irq.needs_reset.load(Ordering::SeqCst),
            generation: irq.generation.load(Ordering::SeqCst),
            config_vector: irq.config_vector.load(Ordering::SeqCst),
            device: device.state(),
        }
    }

    /// Load `s` into this transport, built for the same device and not yet used by a guest.
    /// A device the driver had started is started again on its rings, which guest memory
    /// (restored first) holds; an interrupt the ISR still reports is asserted again on INTx.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), StateError> {
        if s.device_features != self.device_features {
            return Err(StateError::new(
                WHAT,
                format!(
                    "device features {:#x}, this device offers {:#x}",
                    s.device_features, self.device_features
                ),
            ));
        }
        if s.queues.len() != self.queues.len() {
            return Err(StateError::new(
                WHAT,
                format!(
                    "{} queues, the device has {}",
                    s.queues.len(),
                    self.queues.len()
                ),
            ));
        }
        if let Some((i, (q, c))) = s
            .queues
            .iter()
            .zip(&self.queues)
            .enumerate()
            .find(|(_, (q, c))| q.size == 0 || q.size > c.max)
        {
            return Err(StateError::new(
                WHAT,
                format!("queue {i} has {} entries, at most {}", q.size, c.max),
            ));
        }
        if s.msix.is_some() != self.irq.msix.is_some() {
            return Err(StateError::new(
                WHAT,
                "MSI-X present in one and not the other",
            ));
        }
        if self.activated {
            self.reset();
        }
        self.config.restore(&s.config)?;
        if let (Some(m), Some(state)) = (&self.irq.msix, &s.msix) {
            lock(m).restore(state, &self.config)?;
        }
        self.driver_features = s.driver_features & self.device_features;
        self.device_feature_select = s.device_feature_select;
        self.driver_feature_select = s.driver_feature_select;
        self.queue_select = s.queue_select;
        self.status = s.status & !STATUS_NEEDS_RESET;
        for ((c, q), v) in self
            .queues
            .iter_mut()
            .zip(&s.queues)
            .zip(&self.irq.queue_vectors)
        {
            *c = QueueConfig {
                max: c.max,
                size: q.size,
                ready: q.ready,
                desc: q.desc,
                avail: q.avail,
                used: q.used,
            };
            v.store(q.vector, Ordering::SeqCst);
        }
        let irq = &self.irq;
        irq.isr.store(s.isr, Ordering::SeqCst);
        irq.needs_reset.store(s.needs_reset, Ordering::SeqCst);
        irq.generation.store(s.generation, Ordering::SeqCst);
        irq.config_vector.store(s.config_vector, Ordering::SeqCst);
        let intx_disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
        irq.intx_disabled.store(intx_disabled, Ordering::SeqCst);
        if s.activated {
            self.activate(true);
        }
        lock(&self.device).restore(&s.device)?;
        self.intx_resample();
        Ok(())
    }
}
