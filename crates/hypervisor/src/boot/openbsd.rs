//! vmd's emulation of the OpenBSD boot loader (spec §5.3, F-BOOT-01..03): load the ELF
//! kernel's segments, build the boot-arguments page, the boot stack, GDT and page tables,
//! and enter in vmd's "flat 64" (or, for i386 kernels, flat 32) state.
//!
//! Symbols are not loaded (vmd loads them for ddb); the kernel's `end` is the end of its
//! last segment.

use vm_memory::GuestMemoryMmap;

use super::elf::{self, ElfInfo};
use super::{write, BootImage};
use crate::cpu::Entry;
use crate::error::Error;
use crate::layout::{MemType, MemoryLayout};

/// vmd's `LOADADDR()` mask: kernels linked high run at the low 28 bits of their address.
const LOADADDR_MASK: u64 = 0x0fff_ffff;
/// Fixed pages of vmd's hand-off.
const BOOTARGS_PAGE: u64 = 0x2000;
const STACK_PAGE: u64 = 0xF000;
const PAGE_SIZE: u64 = 0x1000;
/// Boot argument types (OpenBSD's `biosvar.h`).
const BOOTARG_MEMMAP: u32 = 0;
const BOOTARG_CONSDEV: u32 = 5;
const BOOTARG_END: u32 = 0xFFFF_FFFF;
const BIOS_MAP_END: u32 = 0;
const BIOS_MAP_FREE: u32 = 1;
const BIOS_MAP_RES: u32 = 2;
/// Console: com0 (`makedev(8, 0)`) at 0x3f8, 115200 baud.
const CONSDEV_COM0: u32 = 8 << 8;
const CONSDEV_SPEED: u32 = 115_200;
const CONSDEV_ADDR: u64 = 0x3f8;
/// Boot-argument API version the stack announces.
const BOOTARG_APIVER: u32 = 0x0e;
/// `MAKEBOOTDEV(4, 0, 0, 0, 0)`: sd0a, with the boot device magic.
const BOOTDEV_SD0A: u32 = 0xa000_0004;

/// Load an OpenBSD-style ELF kernel.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
) -> Result<Entry, Error> {
    let what = &image.name;
    let info = elf::parse(&image.bytes).map_err(|e| Error::image(what, e))?;
    let end = load_segments(mem, layout, image, &info)?;
    let bootargs_size = push_bootargs(mem, layout)?;
    let stack_size = push_stack(mem, bootargs_size, end as u32)?;
    let rip = info.entry & LOADADDR_MASK;
    let rsp = STACK_PAGE + PAGE_SIZE - stack_size;
    Ok(if info.is_64 {
        Entry::OpenBsd64 { rip, rsp }
    } else {
        Entry::OpenBsd32 { rip, rsp }
    })
}

/// Copy PT_LOAD segments to their physical addresses; returns the masked end address.
fn load_segments(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
    info: &ElfInfo,
) -> Result<u64, Error> {
    let mut end = 0;
    for (i, s) in info.segments.iter().enumerate() {
        let seg_end = s
            .paddr
            .checked_add(s.memsz)
            .filter(|&e| e <= layout.low_end)
            .ok_or_else(|| {
                Error::image(
                    &image.name,
                    format!(
                        "segment {i} at {:#x} (+{:#x}) lies outside the VM's {:#x} bytes of RAM",
                        s.paddr, s.memsz, layout.low_end
                    ),
                )
            })?;
        // parse() checked the file range.
        let data = &image.bytes[s.offset as usize..(s.offset + s.filesz) as usize];
        write(mem, s.paddr, data, &image.name)?;
        let zeros = vec![0u8; (s.memsz - s.filesz) as usize];
        write(mem, s.paddr + s.filesz, &zeros, &image.name)?;
        end = end.max(seg_end & LOADADDR_MASK);
    }
    Ok(end)
}

fn push_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// The boot-arguments page: memory map, console, end marker. Returns its size.
fn push_bootargs(mem: &GuestMemoryMmap, layout: &MemoryLayout) -> Result<u64, Error> {
    let ranges = layout.vmd_ranges();
    let mut ba = Vec::new();
    // Each bios_memmap_t is {u64 addr, u64 size, u32 type}, packed: 20 bytes.
    let memmap_size = 12 + (ranges.len() as u32 + 1) * 20;
    push_u32(&mut ba, BOOTARG_MEMMAP);
    push_u32(&mut ba, memmap_size);
    push_u32(&mut ba, memmap_size);
    for r in &ranges {
        ba.extend_from_slice(&r.start.to_le_bytes());
        ba.extend_from_slice(&r.len.to_le_bytes());
        push_u32(
            &mut ba,
            if r.kind == MemType::Ram {
                BIOS_MAP_FREE
            } else {
                BIOS_MAP_RES
            },
        );
    }
    ba.extend_from_slice(&[0; 16]);
    push_u32(&mut ba, BIOS_MAP_END);

    // bios_consdev_t (7.x): dev, speed, u64 addr, freq, flags, reg_width, reg_shift.
    let consdev_size = 12 + 32;
    push_u32(&mut ba, BOOTARG_CONSDEV);
    push_u32(&mut ba, consdev_size);
    push_u32(&mut ba, consdev_size);
    push_u32(&mut ba, CONSDEV_COM0);
    push_u32(&mut ba, CONSDEV_SPEED);
    ba.extend_from_slice(&CONSDEV_ADDR.to_le_bytes());
    ba.extend_from_slice(&[0; 16]);

    push_u32(&mut ba, BOOTARG_END);
    if ba.len() as u64 > PAGE_SIZE {
        return Err(Error::image("boot arguments", "do not fit in one page"));
    }
    write(mem, BOOTARGS_PAGE, &ba, "boot arguments")?;
    Ok(ba.len() as u64)
}

/// The boot stack, top down: boot-args address and size, base and extended memory (0:
/// use the map), kernel end, API version, boot device, 0 (spec §5.3). Returns the size
/// vmd subtracts from the top of the page for RSP.
fn push_stack(mem: &GuestMemoryMmap, bootargs_size: u64, end: u32) -> Result<u64, Error> {
    let words = [
        0,
        BOOTDEV_SD0A,
        BOOTARG_APIVER,
        end,
        0,
        0,
        bootargs_size as u32,
        BOOTARGS_PAGE as u32,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let at = STACK_PAGE + PAGE_SIZE - bytes.len() as u64;
    write(mem, at, &bytes, "boot stack")?;
    // vmd leaves RSP one word below the last push.
    Ok(bytes.len() as u64 + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::BootKind;
    use vm_memory::{Bytes, GuestAddress};

    fn mem(layout: &MemoryLayout) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout.low_end as usize)]).unwrap()
    }

    fn image(bytes: Vec<u8>) -> BootImage {
        BootImage {
            bytes,
            kind: BootKind::OpenBsd,
            name: "bsd".into(),
            initrd: None,
            cmdline: String::new(),
        }
    }

    #[test]
    fn hand_off_matches_vmd() {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let m = mem(&layout);
        let img = elf::tests::elf64(0x100_0000, 0xffff_ffff_8100_0010, &[0xf4; 32], None);
        let entry = load(&m, &layout, &image(img)).unwrap();
        assert_eq!(
            entry,
            Entry::OpenBsd64 {
                rip: 0x100_0010,
                rsp: 0xFFDC
            }
        );
        let word = |a: u64| m.read_obj::<u32>(GuestAddress(a)).unwrap();
        assert_eq!(word(0xFFFC), BOOTARGS_PAGE as u32);
        assert_eq!(word(0xFFE8), BOOTARG_APIVER);
        assert_eq!(word(0xFFEC), 0x100_0000 + 32 + 0x100, "kernel end");
        assert_eq!(word(BOOTARGS_PAGE), BOOTARG_MEMMAP);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x100_0000)).unwrap(), 0xf4);
        // First memmap entry: 0..640K free.
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(BOOTARGS_PAGE + 20)).unwrap(),
            0xA_0000
        );
        assert_eq!(word(BOOTARGS_PAGE + 28), BIOS_MAP_FREE);
    }

    #[test]
    fn segment_beyond_ram_is_refused() {
        let layout = MemoryLayout::new(8 << 20).unwrap();
        let m = mem(&layout);
        let img = elf::tests::elf64(0x100_0000, 0x100_0000, &[0xf4; 32], None);
        let err = load(&m, &layout, &image(img)).unwrap_err().to_string();
        assert!(err.contains("outside the VM"), "{err}");
    }
}
