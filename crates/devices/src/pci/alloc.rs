//! Initial BAR addresses, assigned before the guest runs (what firmware would do; vmd does
//! it the same way for its direct-boot guests).

use std::ops::Range;

use super::config::BarSpace;
use super::{PciError, PCI_IO_BAR_STEP};

/// Hands out I/O BARs from the bottom of the I/O window in [`PCI_IO_BAR_STEP`] slots (spec
/// §5.4: 0x1000, 0x2000, ...) and naturally aligned memory BARs bottom-up from the memory
/// window, skipping the ECAM range.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    io: Range<u64>,
    mem: Range<u64>,
    ecam: Range<u64>,
}

impl BarAllocator {
    /// Allocate from `io` and `mem`, never inside `ecam`.
    pub fn new(io: Range<u64>, mem: Range<u64>, ecam: Range<u64>) -> Self {
        BarAllocator { io, mem, ecam }
    }

    /// The base for a BAR of `size` bytes (a power of two).
    pub fn allocate(&mut self, space: BarSpace, size: u64) -> Result<u64, PciError> {
        let no_space = PciError::NoSpace { space, size };
        match space {
            BarSpace::Io => {
                let step = size.max(PCI_IO_BAR_STEP);
                let base = align_up(self.io.start, step).ok_or(no_space.clone())?;
                let end = base.checked_add(step).filter(|&e| e <= self.io.end);
                self.io.start = end.ok_or(no_space)?;
                Ok(base)
            }
            BarSpace::Memory => {
                let mut base = align_up(self.mem.start, size).ok_or(no_space.clone())?;
                let overlaps =
                    |b: u64| b < self.ecam.end && b.saturating_add(size) > self.ecam.start;
                if overlaps(base) {
                    base = align_up(self.ecam.end, size).ok_or(no_space.clone())?;
                }
                let end = base.checked_add(size).filter(|&e| e <= self.mem.end);
                self.mem.start = end.ok_or(no_space)?;
                Ok(base)
            }
        }
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    let a = align.max(1);
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_in_4k_steps_and_memory_aligned_around_ecam() {
        let mut a = BarAllocator::new(
            0x1000..0x3000,
            0xf000_0000..0xf030_0000,
            0xf000_0000..0xf010_0000,
        );
        assert_eq!(a.allocate(BarSpace::Io, 0x100), Ok(0x1000));
        assert_eq!(a.allocate(BarSpace::Io, 0x40), Ok(0x2000));
        assert!(a.allocate(BarSpace::Io, 0x40).is_err());
        assert_eq!(a.allocate(BarSpace::Memory, 0x1000), Ok(0xf010_0000));
        assert_eq!(a.allocate(BarSpace::Memory, 0x4000), Ok(0xf010_4000));
        assert_eq!(a.allocate(BarSpace::Memory, 0x10_0000), Ok(0xf020_0000));
        assert_eq!(
            a.allocate(BarSpace::Memory, 0x1000),
            Err(PciError::NoSpace {
                space: BarSpace::Memory,
                size: 0x1000
            })
        );
    }
}
