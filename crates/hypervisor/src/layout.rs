//! The guest physical memory map (spec §5.2, F-HW-02) and the fixed addresses the
//! direct-boot paths use. `docs/platform.md` lists the same numbers for humans.

use crate::error::Error;

/// End of conventional low memory (640 KiB, vmd's `LOWMEM_KB`).
pub const LOWMEM_END: u64 = 0xA_0000;
/// Start of extended memory, and where the BIOS image ends.
pub const HIGHMEM_START: u64 = 0x10_0000;
/// Start of the PCI/MMIO hole below 4 GiB (vmd's `VMM_PCI_MMIO_BAR_BASE`).
pub const MMIO_HOLE_START: u64 = 0xF000_0000;
/// Size of the BIOS copy that ends at 4 GiB (reset vector).
pub const BIOS_TOP_SIZE: u64 = 2 << 20;
/// Start of the BIOS copy below 4 GiB.
pub const BIOS_TOP_START: u64 = FOUR_GIB - BIOS_TOP_SIZE;
/// 4 GiB: RAM that does not fit below the hole continues here.
pub const FOUR_GIB: u64 = 1 << 32;
/// KVM's real-mode TSS (three pages) and EPT identity-map page, in the hole, clear of the
/// IOAPIC, the LAPIC and the BIOS copy.
pub const KVM_TSS_ADDR: u64 = 0xFEFF_D000;
/// See [`KVM_TSS_ADDR`].
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xFEFF_C000;

/// Smallest guest: 1 MiB, as vmd allows.
pub const MIN_MEMORY: u64 = 1 << 20;
/// Largest guest we accept. KVM's own limit is the host's physical address width.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Memory sizes are whole MiB.
pub const MEMORY_GRANULE: u64 = 1 << 20;

/// GDT used by the Linux and PVH entries.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// PVH `hvm_start_info`, followed by its memory map and module list.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// PML4 of the identity map used by 64-bit entries; the PDPT and four page directories
/// follow it, mapping the first 4 GiB with 2 MiB pages.
pub const BOOT_PML4_ADDR: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line, including its NUL.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// Initrds are placed below this address (Linux's default `initrd_addr_max` + 1).
pub const INITRD_ADDR_MAX: u64 = 0x3800_0000;

/// E820 / boot memory-map entry types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemType {
    /// Usable RAM.
    Ram = 1,
    /// Reserved (backed or not).
    Reserved = 2,
}

/// One entry of the memory map a boot loader hands to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRange {
    /// Guest physical start.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: MemType,
}

/// Where a VM's RAM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    /// Total RAM in bytes (a whole number of MiB).
    pub size: u64,
    /// End of the contiguous RAM that starts at 0 (at most [`MMIO_HOLE_START`]).
    pub low_end: u64,
    /// Bytes of RAM above 4 GiB.
    pub high_size: u64,
}

impl MemoryLayout {
    /// Lay out `size` bytes of RAM; rejects sizes we cannot or will not build.
    pub fn new(size: u64) -> Result<Self, Error> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) {
            return Err(Error::MemorySize {
                size,
                reason: "must be between 1 MiB and 1 TiB",
            });
        }
        let size = size - size % MEMORY_GRANULE;
        let low_end = size.min(MMIO_HOLE_START);
        Ok(MemoryLayout {
            size,
            low_end,
            high_size: size - low_end,
        })
    }

    /// The backed regions to create, as (guest address, length): RAM from 0, the BIOS copy
    /// below 4 GiB when a BIOS boots (each memory slot costs KVM a grace period at start,
    /// so direct boots go without it), and RAM above 4 GiB if any.
    pub fn regions(&self, bios_copy: bool) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.low_end)];
        if bios_copy {
            r.push((BIOS_TOP_START, BIOS_TOP_SIZE));
        }
        if self.high_size > 0 {
            r.push((FOUR_GIB, self.high_size));
        }
        r
    }

    /// The memory map as a direct-boot loader reports it (e820). The 640 KiB–1 MiB hole is
    /// backed but reserved; the MMIO hole is left out; the BIOS copy is reserved.
    pub fn e820(&self) -> Vec<MemRange> {
        let mut map = vec![MemRange {
            start: 0,
            len: LOWMEM_END.min(self.low_end),
            kind: MemType::Ram,
        }];
        if self.low_end > LOWMEM_END {
            map.push(MemRange {
                start: LOWMEM_END,
                len: self.low_end.min(HIGHMEM_START) - LOWMEM_END,
                kind: MemType::Reserved,
            });
        }
        if self.low_end > HIGHMEM_START {
            map.push(MemRange {
                start: HIGHMEM_START,
                len: self.low_end - HIGHMEM_START,
                kind: MemType::Ram,
            });
        }
        map.push(MemRange {
            start: BIOS_TOP_START,
            len: BIOS_TOP_SIZE,
            kind: MemType::Reserved,
        });
        if self.high_size > 0 {
            map.push(MemRange {
                start: FOUR_GIB,
                len: self.high_size,
                kind: MemType::Ram,
            });
        }
        map
    }

    /// vmd's own range list (used for the OpenBSD boot-args memory map): like [`Self::e820`]
    /// but with the MMIO hole listed as reserved, as vmd's `create_bios_memmap` does.
    pub fn vmd_ranges(&self) -> Vec<MemRange> {
        let mut map = self.e820();
        if self.low_end > HIGHMEM_START {
            let pos = map
                .iter()
                .position(|r| r.start == BIOS_TOP_START)
                .unwrap_or(map.len());
            map.insert(
                pos,
                MemRange {
                    start: MMIO_HOLE_START,
                    len: BIOS_TOP_START - MMIO_HOLE_START,
                    kind: MemType::Reserved,
                },
            );
        }
        map
    }

    /// RAM bytes below 4 GiB (what the CMOS low-memory registers describe).
    pub fn ram_below_4g(&self) -> u64 {
        self.low_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(l: &MemoryLayout) -> Vec<(u64, u64, MemType)> {
        l.e820().iter().map(|r| (r.start, r.len, r.kind)).collect()
    }

    #[test]
    fn small_guest_has_low_ram_hole_and_bios_copy() {
        let l = MemoryLayout::new(256 << 20).unwrap();
        assert_eq!(l.low_end, 256 << 20);
        assert_eq!(
            kinds(&l),
            vec![
                (0, 0xA_0000, MemType::Ram),
                (0xA_0000, 0x6_0000, MemType::Reserved),
                (0x10_0000, (256 << 20) - 0x10_0000, MemType::Ram),
                (0xFFE0_0000, 2 << 20, MemType::Reserved),
            ]
        );
    }

    #[test]
    fn one_mib_guest_has_only_three_ranges() {
        let l = MemoryLayout::new(1 << 20).unwrap();
        assert_eq!(l.e820().len(), 3);
        assert_eq!(
            l.regions(true),
            vec![(0, 1 << 20), (BIOS_TOP_START, BIOS_TOP_SIZE)]
        );
        assert_eq!(l.regions(false), vec![(0, 1 << 20)]);
    }

    #[test]
    fn big_guest_splits_around_the_hole() {
        let l = MemoryLayout::new(64 << 30).unwrap();
        assert_eq!(l.low_end, MMIO_HOLE_START);
        assert_eq!(l.high_size, (64 << 30) - MMIO_HOLE_START);
        let e = l.e820();
        let ram: u64 = e
            .iter()
            .filter(|r| r.kind == MemType::Ram)
            .map(|r| r.len)
            .sum();
        assert_eq!(
            ram + 0x6_0000,
            64 << 30,
            "RAM plus the backed legacy hole is the size"
        );
        assert_eq!(e.last().unwrap().start, FOUR_GIB);
        assert!(l.vmd_ranges().iter().any(|r| r.start == MMIO_HOLE_START));
    }

    #[test]
    fn rounds_down_to_mib_and_rejects_out_of_range() {
        assert_eq!(MemoryLayout::new((3 << 20) + 5).unwrap().size, 3 << 20);
        assert!(matches!(
            MemoryLayout::new(1000),
            Err(Error::MemorySize { .. })
        ));
        assert!(MemoryLayout::new(MAX_MEMORY + 1).is_err());
    }
}
