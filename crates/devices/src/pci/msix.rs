//! MSI-X: the capability, the vector table and the pending-bit array (F-HW-16; beyond vmd,
//! which has only PIC lines, and needed for more than ten devices).
//!
//! Messages leave through the caller's [`MsiTrigger`]: the hypervisor either keeps one KVM
//! GSI route plus irqfd per vector (updated from [`MsiTrigger::configure`]) or signals each
//! message directly. Masking is honoured here: a vector that fires while masked (itself or
//! by the function mask) sets its pending bit and is delivered when unmasked.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::ConfigSpace;
use crate::state::StateError;

/// Capability id of MSI-X.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Bytes of one table entry: address low, address high, data, vector control.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Bytes of the capability structure.
const MSIX_CAP_LEN: usize = 12;
/// Message control: MSI-X enable.
const MSG_CTRL_ENABLE: u16 = 1 << 15;
/// Message control: all vectors masked.
const MSG_CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: this vector masked (its reset state).
const VECTOR_MASKED: u32 = 1;
/// Table entries per pending-bit qword.
const PBA_BITS: usize = 64;
/// Dwords in one table entry.
const ENTRY_DWORDS: usize = 4;
const DWORD: usize = 4;

/// An MSI message: where the device writes and what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Delivers MSI messages to the guest (implemented by the hypervisor).
pub trait MsiTrigger: Send + Sync {
    /// Vector `vector` was reprogrammed or (un)masked; a caller with per-vector KVM routes
    /// updates the route here. The default does nothing.
    fn configure(&self, vector: u16, msg: MsiMessage, masked: bool) {
        let _ = (vector, msg, masked);
    }
    /// Deliver `msg` (vector `vector`, currently unmasked).
    fn trigger(&self, vector: u16, msg: MsiMessage);
}

/// MSI-X state of one function.
pub struct Msix {
    /// Each entry as four dwords: address low, address high, data, control.
    table: Vec<[u32; ENTRY_DWORDS]>,
    pending: Vec<u64>,
    enabled: bool,
    function_mask: bool,
    cap_offset: Option<usize>,
    trigger: Arc<dyn MsiTrigger>,
}

impl Msix {
    /// `vectors` entries (1-2048), all masked, delivering through `trigger`.
    pub fn new(vectors: u16, trigger: Arc<dyn MsiTrigger>) -> Self {
        let n = usize::from(vectors.clamp(1, 2048));
        Msix {
            table: vec![[0, 0, 0, VECTOR_MASKED]; n],
            pending: vec![0; n.div_ceil(PBA_BITS)],
            enabled: false,
            function_mask: false,
            cap_offset: None,
            trigger,
        }
    }

    /// Bytes of the table, rounded to whole entries.
    pub fn table_len(&self) -> u64 {
        self.table.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Bytes of the pending-bit array.
    pub fn pba_len(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// Add the capability to `config`: table at `table_offset` and PBA at `pba_offset`
    /// inside BAR `bar` (offsets 8-byte aligned).
    pub fn install(
        &mut self,
        config: &mut ConfigSpace,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) {
        let mut cap = [0u8; MSIX_CAP_LEN];
        cap[0] = MSIX_CAP_ID;
        let ctrl = (self.table.len() - 1) as u16;
        cap[2..4].copy_from_slice(&ctrl.to_le_bytes());
        cap[4..8].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        cap[8..12].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        // Only the enable and function-mask bits of message control are writable.
        let wmask = [0, 0, 0, 0xc0];
        self.cap_offset = Some(config.add_capability(&cap, &wmask));
    }

    /// Re-read message control after a guest configuration write.
    pub fn update_from_config(&mut self, config: &ConfigSpace) {
        self.read_control(config);
        self.deliver_pending();
    }

    fn read_control(&mut self, config: &ConfigSpace) {
        let Some(off) = self.cap_offset else { return };
        let ctrl = config.u16_at(off + 2);
        self.enabled = ctrl & MSG_CTRL_ENABLE != 0;
        self.function_mask = ctrl & MSG_CTRL_FUNCTION_MASK != 0;
    }

    /// Whether the guest enabled MSI-X (INTx is then off for this function).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn message(&self, v: usize) -> MsiMessage {
        let e = self.table[v];
        MsiMessage {
            address: u64::from(e[0]) | (u64::from(e[1]) << 32),
            data: e[2],
        }
    }

    fn masked(&self, v: usize) -> bool {
        self.function_mask || self.table[v][3] & VECTOR_MASKED != 0
    }

    /// Fire `vector`: delivered now, or left pending while masked. Out-of-range vectors
    /// (a guest's bad vector number) are dropped.
    pub fn signal(&mut self, vector: u16) {
        let v = usize::from(vector);
        if !self.enabled || v >= self.table.len() {
            return;
        }
        if self.masked(v) {
            self.pending[v / PBA_BITS] |= 1 << (v % PBA_BITS);
        } else {
            self.trigger.trigger(vector, self.message(v));
        }
    }

    fn deliver_pending(&mut self) {
        if !self.enabled {
            return;
        }
        for v in 0..self.table.len() {
            let bit = 1u64 << (v % PBA_BITS);
            if self.pending[v / PBA_BITS] & bit != 0 && !self.masked(v) {
                self.pending[v / PBA_BITS] &= !bit;
                self.trigger.trigger(v as u16, self.message(v));
            }
        }
    }

    /// Guest read of the table at `offset` (from the table start).
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64) as usize;
            let (entry, dword, byte) = (o / 16, (o % 16) / DWORD, o % DWORD);
            *b = match self.table.get(entry) {
                Some(e) => e[dword].to_le_bytes()[byte],
                None => 0xff,
            };
        }
    }

    /// Guest write of the table; the specification allows only dword and qword accesses.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        if !offset.is_multiple_of(DWORD as u64) || (data.len() != 4 && data.len() != 8) {
            return;
        }
        let mut touched = None;
        for (i, chunk) in data.chunks_exact(DWORD).enumerate() {
            let o = offset.saturating_add((i * DWORD) as u64) as usize;
            let (entry, dword) = (o / 16, (o % 16) / DWORD);
            if let Some(e) = self.table.get_mut(entry) {
                e[dword] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                touched = Some(entry);
            }
        }
        if let Some(v) = touched {
            self.trigger
                .configure(v as u16, self.message(v), self.masked(v));
            self.deliver_pending();
        }
    }

    /// Guest read of the pending-bit array (read-only).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64) as usize;
            *b = match self.pending.get(o / 8) {
                Some(q) => q.to_le_bytes()[o % 8],
                None => 0xff,
            };
        }
    }
}

/// The vector table and pending bits, for a snapshot ([`crate::state`]); enable and
/// function mask live in configuration space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    /// Each entry as address low, address high, data, vector control.
    pub table: Vec<[u32; ENTRY_DWORDS]>,
    pub pending: Vec<u64>,
}

impl Msix {
    /// The guest-visible state.
    pub fn state(&self) -> MsixState {
        MsixState {
            table: self.table.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Load `s` into a function with as many vectors, its enable and mask bits from the
    /// already restored `config`. Nothing is delivered: messages pending in `s` go out when
    /// the guest unmasks them, and those the interrupt controller had taken are in its own
    /// restored state.
    pub fn restore(&mut self, s: &MsixState, config: &ConfigSpace) -> Result<(), StateError> {
        if s.table.len() != self.table.len() || s.pending.len() != self.pending.len() {
            return Err(StateError::new(
                "MSI-X",
                format!(
                    "{} vectors and {} pending words, the function has {} and {}",
                    s.table.len(),
                    s.pending.len(),
                    self.table.len(),
                    self.pending.len()
                ),
            ));
        }
        self.table.copy_from_slice(&s.table);
        self.pending.copy_from_slice(&s.pending);
        self.read_control(config);
        for v in 0..self.table.len() {
            self.trigger
                .configure(v as u16, self.message(v), self.masked(v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::PciIds;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<(u16, MsiMessage)>>);
    impl MsiTrigger for Log {
        fn trigger(&self, vector: u16, msg: MsiMessage) {
            self.0.lock().unwrap().push((vector, msg));
        }
    }

    #[test]
    fn masking_pends_and_unmask_delivers() {
        let log = Arc::new(Log::default());
        let mut m = Msix::new(3, log.clone());
        let mut cfg = ConfigSpace::new(PciIds::default());
        m.install(&mut cfg, 2, 0, 0x800);
        let cap = 0x40;
        assert_eq!(cfg.u16_at(cap) & 0xff, u16::from(MSIX_CAP_ID));
        assert_eq!(cfg.u16_at(cap + 2), 2, "table size - 1");
        assert_eq!(cfg.u32_at(cap + 4), 2);
        assert_eq!(cfg.u32_at(cap + 8), 0x802);
        // Program vector 1 (still masked), enable MSI-X.
        m.table_write(16, &0xfee0_0000u32.to_le_bytes());
        m.table_write(24, &0x4041u32.to_le_bytes());
        cfg.write(cap + 2, &(MSG_CTRL_ENABLE | 0x7ff).to_le_bytes());
        m.update_from_config(&cfg);
        assert!(m.enabled());
        m.signal(1);
        assert!(log.0.lock().unwrap().is_empty());
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        // Unmask: the pending message goes out.
        m.table_write(28, &0u32.to_le_bytes());
        let msg = MsiMessage {
            address: 0xfee0_0000,
            data: 0x4041,
        };
        assert_eq!(*log.0.lock().unwrap(), vec![(1, msg)]);
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        // Function mask holds everything back.
        cfg.write(
            cap + 2,
            &(MSG_CTRL_ENABLE | MSG_CTRL_FUNCTION_MASK).to_le_bytes(),
        );
        m.update_from_config(&cfg);
        m.signal(1);
        assert_eq!(log.0.lock().unwrap().len(), 1);
        cfg.write(cap + 2, &MSG_CTRL_ENABLE.to_le_bytes());
        m.update_from_config(&cfg);
        assert_eq!(log.0.lock().unwrap().len(), 2);
        m.signal(7);
        let mut e = [0u8; 4];
        m.table_read(16, &mut e);
        assert_eq!(u32::from_le_bytes(e), 0xfee0_0000);
    }

    #[test]
    fn state_round_trips_without_delivering() {
        let log = Arc::new(Log::default());
        let mut m = Msix::new(3, log.clone());
        let mut cfg = ConfigSpace::new(PciIds::default());
        m.install(&mut cfg, 2, 0, 0x800);
        m.table_write(16, &0xfee0_0000u32.to_le_bytes());
        m.table_write(24, &0x4041u32.to_le_bytes());
        cfg.write(0x42, &MSG_CTRL_ENABLE.to_le_bytes());
        m.update_from_config(&cfg);
        m.signal(1);
        let state = m.state();
        let other_log = Arc::new(Log::default());
        let mut other = Msix::new(3, other_log.clone());
        let mut other_cfg = ConfigSpace::new(PciIds::default());
        other.install(&mut other_cfg, 2, 0, 0x800);
        other_cfg.restore(&cfg.state()).unwrap();
        other.restore(&state, &other_cfg).unwrap();
        assert!(other.enabled());
        assert_eq!(other.state(), state);
        assert!(other_log.0.lock().unwrap().is_empty(), "nothing delivered");
        // Unmasking delivers what was pending, with the restored message.
        other.table_write(28, &0u32.to_le_bytes());
        assert_eq!(other_log.0.lock().unwrap()[0].1.data, 0x4041);
        let small = Msix::new(2, log);
        assert!(Msix::new(3, other_log)
            .restore(&small.state(), &cfg)
            .is_err());
    }
}
