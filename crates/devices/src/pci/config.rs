//! A type-0 configuration header with capabilities, write masks and BAR sizing.

use serde::{Deserialize, Serialize};

use crate::state::{check_len, StateError};

/// Bytes of conventional configuration space a device implements. ECAM exposes 4 KiB per
/// function; the extended part reads as zero, which tells the guest there are no extended
/// capabilities.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of a function's ECAM window.
pub const EXTENDED_CONFIG_SIZE: usize = 4096;
/// BARs in a type-0 header.
pub const BAR_COUNT: usize = 6;

pub(crate) const VENDOR_ID: usize = 0x00;
const DEVICE_ID: usize = 0x02;
pub(crate) const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const REVISION: usize = 0x08;
const PROG_IF: usize = 0x09;
const SUBCLASS: usize = 0x0a;
const CLASS: usize = 0x0b;
const CACHE_LINE: usize = 0x0c;
const LATENCY: usize = 0x0d;
pub(crate) const BAR0: usize = 0x10;
const SUBSYSTEM_VENDOR: usize = 0x2c;
const SUBSYSTEM_ID: usize = 0x2e;
const CAP_PTR: usize = 0x34;
pub(crate) const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
/// Capabilities start right after the header.
const FIRST_CAP: usize = 0x40;

/// COMMAND: the function decodes its I/O BARs.
pub const COMMAND_IO: u16 = 1 << 0;
/// COMMAND: the function decodes its memory BARs.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// COMMAND: the function may master the bus (DMA); kept for the guest to read back.
const COMMAND_MASTER: u16 = 1 << 2;
/// COMMAND: INTx disabled (drivers set it when they switch to MSI-X).
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
const COMMAND_WRITABLE: u16 = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_INTX_DISABLE;
/// STATUS: a capability list is present.
const STATUS_CAP_LIST: u16 = 1 << 4;

/// BAR low bits: bit 0 set for I/O space.
const BAR_IO_FLAG: u32 = 1;
/// Address bits of an I/O BAR register.
const BAR_IO_ADDR_MASK: u32 = !0x3;
/// Address bits of a memory BAR register (bits 0-3 are type and prefetch flags).
const BAR_MEM_ADDR_MASK: u32 = !0xf;
/// Smallest I/O BAR the PCI specification allows.
const MIN_IO_BAR: u64 = 4;
/// Smallest memory BAR the PCI specification allows.
const MIN_MEM_BAR: u64 = 16;

/// Which address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarSpace {
    /// x86 port I/O.
    Io,
    /// 32-bit, non-prefetchable memory.
    Memory,
}

#[derive(Debug, Clone, Copy)]
struct Bar {
    space: BarSpace,
    size: u64,
    /// The address the guest last committed (not the all-ones sizing pattern).
    addr: u64,
}

/// Identity of a function: the header fields that never change.
#[derive(Debug, Clone, Copy, Default)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsystem_vendor: u16,
    pub subsystem_id: u16,
}

/// A BAR whose committed address changed: (index, old, new).
pub type BarChange = (usize, u64, u64);

/// Conventional configuration space of one function.
#[derive(Clone)]
pub struct ConfigSpace {
    regs: [u8; CONFIG_SPACE_SIZE],
    /// Bits the guest may change, byte by byte.
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [Option<Bar>; BAR_COUNT],
    /// Offset of the last capability, whose next pointer a new one is linked into.
    last_cap: Option<usize>,
    next_cap: usize,
}

impl ConfigSpace {
    /// A header with `ids`, no BARs, no interrupt, I/O and memory decoding on (what firmware
    /// leaves behind; guests booted without firmware expect a usable device).
    pub fn new(ids: PciIds) -> Self {
        let mut c = ConfigSpace {
            regs: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [None; BAR_COUNT],
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.set_u16(VENDOR_ID, ids.vendor);
        c.set_u16(DEVICE_ID, ids.device);
        c.regs[REVISION] = ids.revision;
        c.regs[PROG_IF] = ids.prog_if;
        c.regs[SUBCLASS] = ids.subclass;
        c.regs[CLASS] = ids.class;
        c.set_u16(SUBSYSTEM_VENDOR, ids.subsystem_vendor);
        c.set_u16(SUBSYSTEM_ID, ids.subsystem_id);
        c.set_u16(COMMAND, COMMAND_IO | COMMAND_MEMORY);
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&COMMAND_WRITABLE.to_le_bytes());
        c.wmask[CACHE_LINE] = 0xff;
        c.wmask[LATENCY] = 0xff;
        c
    }

    /// Declare BAR `index` of `size` bytes (a power of two; raised to the PCI minimum).
    pub fn add_bar(&mut self, index: usize, space: BarSpace, size: u64) {
        let (min, addr_mask, flags) = match space {
            BarSpace::Io => (MIN_IO_BAR, BAR_IO_ADDR_MASK, BAR_IO_FLAG),
            BarSpace::Memory => (MIN_MEM_BAR, BAR_MEM_ADDR_MASK, 0),
        };
        let size = size.max(min).next_power_of_two();
        let off = BAR0 + 4 * index;
        // Sizing works by the write mask alone: all-ones written reads back as the size mask.
        let mask = !((size - 1) as u32) & addr_mask;
        self.wmask[off..off + 4].copy_from_slice(&mask.to_le_bytes());
        self.set_u32(off, flags);
        self.bars[index] = Some(Bar {
            space,
            size,
            addr: 0,
        });
    }

    /// Place BAR `index` at `addr` (by the allocator, before the guest runs).
    pub fn set_bar_addr(&mut self, index: usize, addr: u64) {
        if let Some(bar) = self.bars.get_mut(index).and_then(|b| b.as_mut()) {
            bar.addr = addr;
            let off = BAR0 + 4 * index;
            let flags = self.u32_at(off) & !u32::from_le_bytes(self.wmask_u32(off));
            self.set_u32(off, (addr as u32 & self.bar_mask(index)) | flags);
        }
    }

    /// BAR `index`: its space, committed address and size.
    pub fn bar(&self, index: usize) -> Option<(BarSpace, u64, u64)> {
        self.bars
            .get(index)
            .copied()
            .flatten()
            .map(|b| (b.space, b.addr, b.size))
    }

    /// Whether the command register lets BARs of `space` decode.
    pub fn decodes(&self, space: BarSpace) -> bool {
        let cmd = self.u16_at(COMMAND);
        match space {
            BarSpace::Io => cmd & COMMAND_IO != 0,
            BarSpace::Memory => cmd & COMMAND_MEMORY != 0,
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// Interrupt pin (1 = INTA#) and the line number the guest reads initially: the GSI the
    /// caller wired the pin to.
    pub fn set_interrupt(&mut self, pin: u8, line: u8) {
        self.regs[INTERRUPT_PIN] = pin;
        self.regs[INTERRUPT_LINE] = line;
        self.wmask[INTERRUPT_LINE] = 0xff;
    }

    /// Append a capability. `cap` starts with the id byte; its next pointer (byte 1) is filled
    /// in here. `wmask` gives the guest-writable bits of each byte. Returns its offset.
    pub fn add_capability(&mut self, cap: &[u8], wmask: &[u8]) -> usize {
        let off = self.next_cap;
        let end = off + cap.len();
        assert!(
            end <= CONFIG_SPACE_SIZE && cap.len() >= 2,
            "capabilities are built by the VMM, not the guest"
        );
        self.regs[off..end].copy_from_slice(cap);
        self.regs[off + 1] = 0;
        let n = wmask.len().min(cap.len());
        self.wmask[off..off + n].copy_from_slice(&wmask[..n]);
        match self.last_cap {
            Some(prev) => self.regs[prev + 1] = off as u8,
            None => {
                self.regs[CAP_PTR] = off as u8;
                let st = self.u16_at(STATUS) | STATUS_CAP_LIST;
                self.set_u16(STATUS, st);
            }
        }
        self.last_cap = Some(off);
        self.next_cap = (end + 3) & !3;
        off
    }

    /// Copy `data.len()` bytes from `offset`; beyond the conventional space reads zero and
    /// beyond the 4 KiB ECAM window all-ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i);
            *b = if o < CONFIG_SPACE_SIZE {
                self.regs[o]
            } else if o < EXTENDED_CONFIG_SIZE {
                0
            } else {
                0xff
            };
        }
    }

    /// Apply a guest write through the write mask. Returns the BARs whose committed address
    /// changed (sizing writes of all-ones commit nothing).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Vec<BarChange> {
        for (i, &v) in data.iter().enumerate() {
            let o = offset.saturating_add(i);
            if o < CONFIG_SPACE_SIZE {
                let m = self.wmask[o];
                self.regs[o] = (self.regs[o] & !m) | (v & m);
            }
        }
        let mut changes = Vec::new();
        for index in 0..BAR_COUNT {
            let reg = BAR0 + 4 * index;
            let touched = offset < reg + 4 && offset.saturating_add(data.len()) > reg;
            let Some(bar) = self.bars[index].filter(|_| touched) else {
                continue;
            };
            let mask = self.bar_mask(index);
            let addr = u64::from(self.u32_at(reg) & mask);
            if addr == u64::from(mask) {
                continue;
            }
            if addr != bar.addr {
                changes.push((index, bar.addr, addr));
                if let Some(b) = self.bars[index].as_mut() {
                    b.addr = addr;
                }
            }
        }
        changes
    }

    /// Little-endian 16-bit register at `off` (inside the conventional space).
    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.regs[off], self.regs[off + 1]])
    }

    /// Little-endian 32-bit register at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.regs[off..off + 4].try_into().unwrap_or([0; 4]))
    }

    /// Set a 16-bit register regardless of the write mask (device-maintained state).
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.regs[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Set a 32-bit register regardless of the write mask.
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.regs[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn wmask_u32(&self, off: usize) -> [u8; 4] {
        self.wmask[off..off + 4].try_into().unwrap_or([0; 4])
    }

    fn bar_mask(&self, index: usize) -> u32 {
        u32::from_le_bytes(self.wmask_u32(BAR0 + 4 * index))
    }
}

/// Configuration space as the guest left it, for a snapshot ([`crate::state`]): every
/// register byte and each BAR's committed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    /// All [`CONFIG_SPACE_SIZE`] bytes.
    pub regs: Vec<u8>,
    /// The committed address of each of the [`BAR_COUNT`] BARs the function has.
    pub bars: Vec<Option<u64>>,
}

impl ConfigSpace {
    /// The guest-visible state.
    pub fn state(&self) -> ConfigSpaceState {
        ConfigSpaceState {
            regs: self.regs.to_vec(),
            bars: self.bars.iter().map(|b| b.map(|b| b.addr)).collect(),
        }
    }

    /// Load `s` into the configuration space of the same function, freshly built: the bytes a
    /// guest cannot write (ids, class, capability layout, BAR types) must be the ones this
    /// function has, and so must its set of BARs.
    pub fn restore(&mut self, s: &ConfigSpaceState) -> Result<(), StateError> {
        const WHAT: &str = "PCI configuration space";
        check_len(WHAT, "registers", s.regs.len(), CONFIG_SPACE_SIZE)?;
        if s.bars.len() != BAR_COUNT {
            return Err(StateError::new(
                WHAT,
                format!("{} BARs, expected {BAR_COUNT}", s.bars.len()),
            ));
        }
        let foreign =
            (0..CONFIG_SPACE_SIZE).find(|&o| (self.regs[o] ^ s.regs[o]) & !self.wmask[o] != 0);
        if let Some(o) = foreign {
            return Err(StateError::new(
                WHAT,
                format!(
                    "read-only byte {o:#04x} is {:#04x}, this function ({:04x}:{:04x}) has {:#04x}",
                    s.regs[o],
                    self.u16_at(VENDOR_ID),
                    self.u16_at(DEVICE_ID),
                    self.regs[o]
                ),
            ));
        }
        for (i, (bar, addr)) in self.bars.iter().zip(&s.bars).enumerate() {
            if bar.is_some() != addr.is_some() {
                return Err(StateError::new(
                    WHAT,
                    format!("BAR {i} does not match the function's"),
                ));
            }
        }
        self.regs.copy_from_slice(&s.regs);
        for (bar, addr) in self.bars.iter_mut().zip(&s.bars) {
            if let (Some(bar), Some(addr)) = (bar.as_mut(), addr) {
                bar.addr = *addr;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> ConfigSpace {
        let mut c = ConfigSpace::new(PciIds {
            vendor: 0x1af4,
            device: 0x1001,
            ..Default::default()
        });
        c.add_bar(0, BarSpace::Io, 0x1000);
        c.add_bar(1, BarSpace::Memory, 0x4000);
        c.set_bar_addr(0, 0x1000);
        c.set_bar_addr(1, 0xf010_0000);
        c
    }

    fn rd32(c: &ConfigSpace, off: usize) -> u32 {
        let mut b = [0; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn bar_sizing_and_programming() {
        let mut c = dev();
        assert_eq!(rd32(&c, BAR0), 0x1001);
        assert!(c.write(BAR0, &u32::MAX.to_le_bytes()).is_empty());
        assert_eq!(rd32(&c, BAR0), 0xffff_f001, "4 KiB I/O BAR");
        assert!(c.write(BAR0 + 4, &u32::MAX.to_le_bytes()).is_empty());
        assert_eq!(rd32(&c, BAR0 + 4), 0xffff_c000, "16 KiB memory BAR");
        // Restoring the old address is not a move; a new one is.
        assert!(c.write(BAR0, &0x1000u32.to_le_bytes()).is_empty());
        assert_eq!(
            c.write(BAR0 + 4, &0xf020_0000u32.to_le_bytes()),
            vec![(1, 0xf010_0000, 0xf020_0000)]
        );
        assert_eq!(c.bar(1), Some((BarSpace::Memory, 0xf020_0000, 0x4000)));
        // Unimplemented BARs and the expansion ROM ignore writes.
        c.write(BAR0 + 8, &u32::MAX.to_le_bytes());
        assert_eq!(rd32(&c, BAR0 + 8), 0);
        c.write(0x30, &u32::MAX.to_le_bytes());
        assert_eq!(rd32(&c, 0x30), 0);
    }

    #[test]
    fn read_only_ids_and_capability_chain() {
        let mut c = dev();
        c.write(0, &[0; 4]);
        assert_eq!(rd32(&c, 0), 0x1001_1af4);
        let a = c.add_capability(&[0x09, 0xaa, 3], &[]);
        let b = c.add_capability(&[0x11, 0xaa, 0, 0], &[0, 0, 0xff, 0xff]);
        assert_eq!((a, b), (0x40, 0x44));
        assert_eq!(rd32(&c, 0x34) & 0xff, 0x40);
        assert_ne!(c.u16_at(STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(c.u16_at(0x40) >> 8, 0x44);
        assert_eq!(c.u16_at(0x44) >> 8, 0);
        c.write(0x46, &[0x34, 0x12]);
        assert_eq!(c.u16_at(0x46), 0x1234);
        let mut ext = [0xaa; 4];
        c.read(0x100, &mut ext);
        assert_eq!(ext, [0; 4]);
    }

    #[test]
    fn state_round_trips_and_another_function_is_refused() {
        let mut c = dev();
        c.write(BAR0, &0xc000u32.to_le_bytes());
        c.write(COMMAND, &[0x07]);
        c.write(INTERRUPT_LINE, &[0x0b]);
        let state = c.state();
        let mut fresh = dev();
        fresh.restore(&state).unwrap();
        assert_eq!(fresh.state(), state);
        assert_eq!(fresh.bar(0), Some((BarSpace::Io, 0xc000, 0x1000)));
        assert_eq!(rd32(&fresh, BAR0), 0xc001);

        let mut other = ConfigSpace::new(PciIds {
            vendor: 0x1af4,
            device: 0x1005,
            ..Default::default()
        });
        other.add_bar(0, BarSpace::Io, 0x1000);
        other.add_bar(1, BarSpace::Memory, 0x4000);
        let err = other.restore(&state).unwrap_err();
        assert!(err.reason.contains("read-only byte 0x02"), "{err}");
        let mut short = state.clone();
        short.regs.truncate(64);
        assert!(fresh.restore(&short).is_err());
        let mut bars = state;
        bars.bars[2] = Some(0x1000);
        assert!(fresh.restore(&bars).is_err());
    }
}
