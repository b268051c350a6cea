//! Address-range dispatch for port I/O and MMIO exits.
//!
//! A guest may access any address with any width; the bus must answer every access.
//! Unclaimed reads return all-ones and unclaimed writes are dropped (spec §5.4, F-HW-17).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device mapped on a bus. `offset` is relative to the base the device was inserted at.
pub trait BusDevice: Send {
    /// Fill `data` (1, 2, 4 or 8 bytes) from the register at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Apply a guest write of `data` to the register at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    BadRange { base: u64, len: u64 },
    /// The new range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    Overlap { base: u64, len: u64, other: u64 },
}

type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Serve a read of any width on an 8-bit device as the ISA bus does: one byte access per
/// consecutive offset. Offsets that overflow read all-ones.
pub fn read_bytes(offset: u64, data: &mut [u8], mut read: impl FnMut(u64) -> u8) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset.checked_add(i as u64).map_or(0xff, &mut read);
    }
}

/// The write counterpart of [`read_bytes`]; bytes at overflowing offsets are dropped.
pub fn write_bytes(offset: u64, data: &[u8], mut write: impl FnMut(u64, u8)) {
    for (i, &b) in data.iter().enumerate() {
        if let Some(o) = offset.checked_add(i as u64) {
            write(o, b);
        }
    }
}

/// Non-overlapping ranges, each served by one device.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if let Some((&other, &(olen, _))) = self.ranges.range(..end).next_back() {
            if other + olen > base {
                return Err(BusError::Overlap { base, len, other });
            }
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (&base, (len, dev)) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(size as u64)? <= *len).then_some((offset, dev))
    }

    /// Dispatch a read; returns false (with `data` all-ones) when nothing claims it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatch a write; returns false when nothing claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// A device that panicked while holding its lock is still served: its state is plain
/// register data, and refusing every later access would hang the guest instead.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_and_offset() {
        let dev = Arc::new(Mutex::new(Reg(vec![])));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert_eq!(dev.lock().unwrap().0, vec![(0, vec![0x41])]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones() {
        let bus = Bus::new();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x80, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!bus.write(0x80, &[1]));
    }

    #[test]
    fn access_straddling_the_end_is_unclaimed() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Reg(vec![]))), 0x70, 2)
            .unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x71, &mut b));
        assert!(!bus.read(u64::MAX, &mut b));
    }

    #[test]
    fn rejects_overlap_and_empty_ranges() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Reg(vec![])));
        bus.insert(d(), 0x60, 1).unwrap();
        bus.insert(d(), 0x64, 1).unwrap();
        assert!(matches!(
            bus.insert(d(), 0x5f, 2),
            Err(BusError::Overlap { other: 0x60, .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0x64, 1),
            Err(BusError::Overlap { other: 0x64, .. })
        ));
        assert_eq!(
            bus.insert(d(), 0x10, 0),
            Err(BusError::BadRange { base: 0x10, len: 0 })
        );
        assert!(bus.insert(d(), u64::MAX, 2).is_err());
        bus.insert(d(), 0x61, 3).unwrap();
    }
}
