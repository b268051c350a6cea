//! Xen PVH boot: an ELF kernel entered in 32-bit protected mode with `hvm_start_info`.

use std::io::Cursor;

use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::GuestMemoryMmap;

use super::{place_initrd, write, write_cmdline, BootImage};
use crate::cpu::Entry;
use crate::error::Error;
use crate::layout::{self, MemoryLayout, CMDLINE_ADDR, PVH_INFO_ADDR};

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version 1 adds the memory map fields.
const START_INFO_VERSION: u32 = 1;
const START_INFO_SIZE: u64 = 56;
/// The module list follows the start info; the memory map follows the module list.
const MODLIST_ADDR: u64 = PVH_INFO_ADDR + 0x40;
const MEMMAP_ADDR: u64 = PVH_INFO_ADDR + 0x100;
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// Room for the memory map before the next fixed structure (the zero page).
const MEMMAP_MAX_ENTRIES: usize =
    ((layout::ZERO_PAGE_ADDR - MEMMAP_ADDR) / MEMMAP_ENTRY_SIZE) as usize;

/// Load a PVH kernel, its initrd (as module 0) and command line; fill `hvm_start_info`.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
) -> Result<Entry, Error> {
    let what = &image.name;
    let loaded = Elf::load(mem, None, &mut Cursor::new(&image.bytes), None)
        .map_err(|e| Error::image(what, format!("not a loadable ELF kernel: {e}")))?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(Error::image(
            what,
            "ELF kernel has no usable PVH entry note",
        ));
    };

    write_cmdline(mem, &image.cmdline, layout::CMDLINE_MAX)?;

    let mut nr_modules = 0u32;
    if let Some(initrd) = &image.initrd {
        let floor = loaded.kernel_end.max(layout::HIGHMEM_START);
        let addr = place_initrd(
            mem,
            initrd,
            floor,
            layout::INITRD_ADDR_MAX.min(layout.low_end),
        )?;
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&(initrd.len() as u64).to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        write(mem, MODLIST_ADDR, &m, "PVH module list")?;
        nr_modules = 1;
    }

    let map = layout.e820();
    if map.len() > MEMMAP_MAX_ENTRIES {
        return Err(Error::image(
            what,
            "memory map does not fit the PVH start info area",
        ));
    }
    let mut mm = Vec::new();
    for r in &map {
        mm.extend_from_slice(&r.start.to_le_bytes());
        mm.extend_from_slice(&r.len.to_le_bytes());
        mm.extend_from_slice(&(r.kind as u32).to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
    }
    write(mem, MEMMAP_ADDR, &mm, "PVH memory map")?;

    let mut si = Vec::with_capacity(START_INFO_SIZE as usize);
    si.extend_from_slice(&XEN_HVM_START_MAGIC.to_le_bytes());
    si.extend_from_slice(&START_INFO_VERSION.to_le_bytes());
    si.extend_from_slice(&0u32.to_le_bytes());
    si.extend_from_slice(&nr_modules.to_le_bytes());
    si.extend_from_slice(&(if nr_modules > 0 { MODLIST_ADDR } else { 0 }).to_le_bytes());
    si.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    si.extend_from_slice(&crate::firmware::ACPI_RSDP_ADDR.to_le_bytes());
    si.extend_from_slice(&MEMMAP_ADDR.to_le_bytes());
    si.extend_from_slice(&(map.len() as u32).to_le_bytes());
    si.extend_from_slice(&0u32.to_le_bytes());
    debug_assert_eq!(si.len() as u64, START_INFO_SIZE);
    write(mem, PVH_INFO_ADDR, &si, "PVH start info")?;

    Ok(Entry::Pvh32 {
        rip: entry.0,
        start_info: PVH_INFO_ADDR,
    })
}
