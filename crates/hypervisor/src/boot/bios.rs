//! BIOS images: copied so they end at 1 MiB and again so they end at 4 GiB (spec §5.3),
//! entered at the reset vector.

use vm_memory::GuestMemoryMmap;

use super::{write, BootImage};
use crate::cpu::Entry;
use crate::error::Error;
use crate::layout::{MemoryLayout, BIOS_TOP_SIZE, FOUR_GIB, HIGHMEM_START};

/// A BIOS may fill the whole first MiB, no more (its top copy has 2 MiB).
pub const MAX_BIOS_SIZE: u64 = HIGHMEM_START;

/// Place a BIOS image at the top of the first MiB and below 4 GiB.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    image: &BootImage,
) -> Result<Entry, Error> {
    let size = image.bytes.len() as u64;
    if size > MAX_BIOS_SIZE.min(BIOS_TOP_SIZE) {
        return Err(Error::image(
            &image.name,
            format!("BIOS image of {size} bytes is larger than 1 MiB"),
        ));
    }
    let low = HIGHMEM_START - size;
    if HIGHMEM_START > layout.low_end {
        return Err(Error::image(
            &image.name,
            "the VM has less than 1 MiB of RAM",
        ));
    }
    write(mem, low, &image.bytes, &image.name)?;
    write(mem, FOUR_GIB - size, &image.bytes, &image.name)?;
    Ok(Entry::ResetVector)
}
