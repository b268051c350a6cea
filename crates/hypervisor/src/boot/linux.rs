//! Linux boot protocol: a bzImage entered at its 64-bit entry with a zero page.

use std::io::Cursor;

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{place_initrd, write_cmdline, BootImage};
use crate::cpu::Entry;
use crate::error::Error;
use crate::layout::{self, MemoryLayout, CMDLINE_ADDR, ZERO_PAGE_ADDR};

/// The 64-bit entry sits 0x200 bytes into the protected-mode kernel.
const ENTRY_64_OFFSET: u64 = 0x200;
/// `xloadflags` bit: the kernel has a 64-bit entry point.
const XLF_KERNEL_64: u16 = 1;
/// `loadflags` bit: the heap after the setup code may be used.
const CAN_USE_HEAP: u8 = 0x80;
/// Boot loader id "undefined" (no registered id).
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const HEAP_END_PTR: u16 = 0xfe00;
/// Protocol versions that introduced the fields we fill.
const PROTO_INITRD_MAX: u16 = 0x0203;
const PROTO_CMDLINE_SIZE: u16 = 0x0206;
const PROTO_64BIT: u16 = 0x020C;
/// Command-line limit of kernels older than 2.06.
const OLD_CMDLINE_MAX: usize = 256;
const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;

/// Load a bzImage, its initrd and command line; fill the zero page.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
) -> Result<Entry, Error> {
    let what = &image.name;
    let loaded = BzImage::load(
        mem,
        None,
        &mut Cursor::new(&image.bytes),
        Some(GuestAddress(layout::HIGHMEM_START)),
    )
    .map_err(|e| Error::image(what, format!("not a loadable bzImage: {e}")))?;
    let hdr = loaded
        .setup_header
        .ok_or_else(|| Error::image(what, "bzImage without a setup header"))?;
    let version = hdr.version;
    if version < PROTO_64BIT || hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(Error::image(
            what,
            format!("boot protocol {version:#x} kernel has no 64-bit entry point"),
        ));
    }
    let kernel_end = loaded.kernel_load.0.max(loaded.kernel_end) + u64::from(hdr.init_size);
    if kernel_end > layout.low_end {
        return Err(Error::image(
            what,
            format!(
                "kernel needs RAM up to {kernel_end:#x}; the VM has {:#x}",
                layout.low_end
            ),
        ));
    }

    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END_PTR;

    let cmdline_max = if version >= PROTO_CMDLINE_SIZE {
        (hdr.cmdline_size as usize + 1).min(layout::CMDLINE_MAX)
    } else {
        OLD_CMDLINE_MAX
    };
    write_cmdline(mem, &image.cmdline, cmdline_max)?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = image.cmdline.len() as u32;

    if let Some(initrd) = &image.initrd {
        let addr_max = if version >= PROTO_INITRD_MAX && hdr.initrd_addr_max != 0 {
            u64::from(hdr.initrd_addr_max) + 1
        } else {
            layout::INITRD_ADDR_MAX
        };
        let addr = place_initrd(mem, initrd, kernel_end, addr_max.min(layout.low_end))?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = initrd.len() as u32;
    }

    let e820 = layout.e820();
    if e820.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(Error::image(what, "memory map does not fit the zero page"));
    }
    for (slot, r) in params.e820_table.iter_mut().zip(&e820) {
        *slot = boot_e820_entry {
            addr: r.start,
            size: r.len,
            r#type: r.kind as u32,
        };
    }
    params.e820_entries = e820.len() as u8;
    params.acpi_rsdp_addr = crate::firmware::ACPI_RSDP_ADDR;

    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| Error::image(what, format!("writing the zero page: {e}")))?;
    Ok(Entry::Linux64 {
        rip: loaded.kernel_load.0 + ENTRY_64_OFFSET,
        zero_page: ZERO_PAGE_ADDR,
    })
}
