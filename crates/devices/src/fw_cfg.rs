//! QEMU's firmware configuration device (fw_cfg), as SeaBIOS reads it (spec §5.3 item 4,
//! F-HW-10): the selector at `0x510`, the byte-wide data port at `0x511` and the DMA address
//! registers at `0x514` (high half) and `0x518` (low half; writing it starts the transfer).
//!
//! Items are byte strings selected by a 16-bit key. Besides the fixed items (signature, id,
//! RAM size, …) the caller adds named files, listed in the file directory item; SeaBIOS finds
//! `etc/e820`, `bootorder` and friends by name there. Keys nobody set read as zeros.
//!
//! DMA descriptors and buffers live in guest memory; every access is bounds-checked and a bad
//! address only sets the descriptor's error bit (when the descriptor itself can be written).
//! Guest writes to items are refused, as in QEMU since 2.4.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::state::StateError;

/// First I/O port of the device: the 16-bit selector.
pub const FW_CFG_BASE: u16 = 0x510;
/// Ports the device claims: selector, data, padding, DMA address high and low.
pub const FW_CFG_PORT_LEN: u64 = 0xC;

/// Offset of the selector register (16-bit writes).
const SELECTOR: u64 = 0;
/// Offset of the data register (byte reads, auto-increment).
const DATA: u64 = 1;
/// Offset of the high half of the big-endian DMA address (port `0x514`).
const DMA_HIGH: u64 = 4;
/// Offset of the low half (port `0x518`); writing it runs the transfer.
const DMA_LOW: u64 = 8;
/// What a read of the DMA address registers returns: "QEMU CFG", so drivers can probe DMA.
const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// The signature item, "QEMU".
pub const FW_CFG_SIGNATURE: u16 = 0x0000;
/// The interface id item: which interfaces exist.
pub const FW_CFG_ID: u16 = 0x0001;
/// RAM size in bytes, little-endian u64.
pub const FW_CFG_RAM_SIZE: u16 = 0x0003;
/// Whether the VM has no display (u16).
pub const FW_CFG_NOGRAPHIC: u16 = 0x0004;
/// Number of CPUs at boot (u16).
pub const FW_CFG_NB_CPUS: u16 = 0x0005;
/// NUMA node count followed by the maps; a zero count means no NUMA.
pub const FW_CFG_NUMA: u16 = 0x000d;
/// Most CPUs the VM can have (u16).
pub const FW_CFG_MAX_CPUS: u16 = 0x000f;
/// The file directory.
pub const FW_CFG_FILE_DIR: u16 = 0x0019;
/// Key of the first named file.
pub const FW_CFG_FILE_FIRST: u16 = 0x0020;
/// Last key a file may take (keys from `0x4000` carry the write flag, `0x8000` are
/// architecture-local).
const FW_CFG_FILE_LAST: u16 = 0x3fff;

/// Id bit: the traditional port interface.
pub const FW_CFG_VERSION: u32 = 0x01;
/// Id bit: the DMA interface.
pub const FW_CFG_VERSION_DMA: u32 = 0x02;

/// DMA control: the transfer failed (the only bit left set on failure).
pub const FW_CFG_DMA_CTL_ERROR: u32 = 0x01;
/// DMA control: copy the selected item into guest memory.
pub const FW_CFG_DMA_CTL_READ: u32 = 0x02;
/// DMA control: advance the item offset without copying.
pub const FW_CFG_DMA_CTL_SKIP: u32 = 0x04;
/// DMA control: select the item in the upper 16 bits first.
pub const FW_CFG_DMA_CTL_SELECT: u32 = 0x08;
/// DMA control: write guest memory into the item (refused: items are read-only).
pub const FW_CFG_DMA_CTL_WRITE: u32 = 0x10;

/// Bytes of a file name in the directory, NUL terminator included.
pub const FW_CFG_MAX_FILE_NAME: usize = 56;
/// Bytes of one directory entry: size (be32), select (be16), reserved (u16), name.
const DIR_ENTRY_LEN: usize = 8 + FW_CFG_MAX_FILE_NAME;
/// Bytes of a DMA descriptor: control (be32), length (be32), address (be64).
const DMA_DESCRIPTOR_LEN: usize = 16;
/// Zero-fill chunk for reads past the end of an item (bounds a guest-sized allocation).
const ZERO_CHUNK: usize = 4096;

/// e820 entry type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 entry type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// Why a file cannot be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// The name does not fit the directory entry (55 bytes and a NUL at most).
    #[error("fw_cfg file name {0:?} is empty or longer than 55 bytes")]
    BadName(String),
    /// A file of that name exists.
    #[error("fw_cfg file {0:?} already exists")]
    Duplicate(String),
    /// Every file key is taken.
    #[error("fw_cfg has no free file key for {0:?}")]
    Full(String),
}

/// One entry of an e820 memory map as the `etc/e820` file carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest physical start.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Encode an e820 map as the `etc/e820` file: entries of little-endian {addr u64, size u64,
/// type u32}, packed.
pub fn e820_file(entries: &[E820Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 20);
    for e in entries {
        out.extend_from_slice(&e.addr.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.kind.to_le_bytes());
    }
    out
}

/// The fw_cfg device.
pub struct FwCfg {
    mem: GuestMemoryMmap,
    /// Fixed items by key.
    items: BTreeMap<u16, Vec<u8>>,
    /// Named files in key order (key = [`FW_CFG_FILE_FIRST`] + index).
    files: Vec<(String, Vec<u8>)>,
    selected: u16,
    offset: usize,
    /// The DMA address's high half, kept until the low half is written.
    dma_high: u32,
}

impl FwCfg {
    /// A device for a VM with `ram_size` bytes of RAM and `cpus` vCPUs, DMA into `mem`.
    pub fn new(mem: GuestMemoryMmap, ram_size: u64, cpus: u16) -> Self {
        let mut items = BTreeMap::new();
        items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        items.insert(
            FW_CFG_ID,
            (FW_CFG_VERSION | FW_CFG_VERSION_DMA).to_le_bytes().to_vec(),
        );
        items.insert(FW_CFG_RAM_SIZE, ram_size.to_le_bytes().to_vec());
        // No display: the console is COM1 (spec §5.9).
        items.insert(FW_CFG_NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.insert(FW_CFG_NB_CPUS, cpus.to_le_bytes().to_vec());
        items.insert(FW_CFG_MAX_CPUS, cpus.to_le_bytes().to_vec());
        // A zero node count: SeaBIOS reads it before the (absent) maps.
        items.insert(FW_CFG_NUMA, 0u64.to_le_bytes().to_vec());
        FwCfg {
            mem,
            items,
            files: Vec::new(),
            selected: FW_CFG_SIGNATURE,
            offset: 0,
            dma_high: 0,
        }
    }

    /// Add the file `name` with contents `bytes`; it appears in the directory.
    pub fn add_file(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), FwCfgError> {
        if name.is_empty() || name.len() >= FW_CFG_MAX_FILE_NAME || name.contains('\0') {
            return Err(FwCfgError::BadName(name.into()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if self.files.len() > usize::from(FW_CFG_FILE_LAST - FW_CFG_FILE_FIRST) {
            return Err(FwCfgError::Full(name.into()));
        }
        self.files.push((name.into(), bytes));
        Ok(())
    }

    /// The directory: big-endian count, then one entry per file.
    fn directory(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.files.len() * DIR_ENTRY_LEN);
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (i, (name, bytes)) in self.files.iter().enumerate() {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&(FW_CFG_FILE_FIRST + i as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FW_CFG_MAX_FILE_NAME];
            field[..name.len()].copy_from_slice(name.as_bytes());
            out.extend_from_slice(&field);
        }
        out
    }

    /// The bytes of the selected item (empty for keys nobody set).
    fn item(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.selected == FW_CFG_FILE_DIR {
            return self.directory().into();
        }
        if let Some(i) = self.selected.checked_sub(FW_CFG_FILE_FIRST) {
            if let Some((_, bytes)) = self.files.get(usize::from(i)) {
                return bytes.as_slice().into();
            }
        }
        self.items
            .get(&self.selected)
            .map_or(&[][..], Vec::as_slice)
            .into()
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    /// Run the DMA descriptor at `addr`, then write its control word back.
    fn dma(&mut self, addr: u64) {
        let mut desc = [0u8; DMA_DESCRIPTOR_LEN];
        let control_at = GuestAddress(addr);
        if self.mem.read_slice(&mut desc, control_at).is_err() {
            // A descriptor straddling the end of RAM may still take the error bit; one
            // wholly outside has nowhere to report it, as on QEMU.
            let _ = self
                .mem
                .write_slice(&FW_CFG_DMA_CTL_ERROR.to_be_bytes(), control_at);
            return;
        }
        let control = u32::from_be_bytes(desc[0..4].try_into().unwrap_or_default());
        let length = u32::from_be_bytes(desc[4..8].try_into().unwrap_or_default());
        let address = u64::from_be_bytes(desc[8..16].try_into().unwrap_or_default());
        if control & FW_CFG_DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let status = if control & FW_CFG_DMA_CTL_READ != 0 {
            self.dma_read(address, length)
        } else if control & FW_CFG_DMA_CTL_WRITE != 0 {
            // Items are read-only (QEMU refuses writes since 2.4).
            if length > 0 {
                FW_CFG_DMA_CTL_ERROR
            } else {
                0
            }
        } else if control & FW_CFG_DMA_CTL_SKIP != 0 {
            self.offset = self.offset.saturating_add(length as usize);
            0
        } else {
            0
        };
        let _ = self.mem.write_slice(&status.to_be_bytes(), control_at);
    }

    /// Copy `length` bytes of the item to guest `address`, zeros past its end.
    fn dma_read(&mut self, address: u64, length: u32) -> u32 {
        let length = length as usize;
        let Some(end) = address.checked_add(length as u64) else {
            return FW_CFG_DMA_CTL_ERROR;
        };
        let item = self.item();
        let start = self.offset.min(item.len());
        let data = &item[start..item.len().min(start.saturating_add(length))];
        if self.mem.write_slice(data, GuestAddress(address)).is_err() {
            return FW_CFG_DMA_CTL_ERROR;
        }
        let copied = data.len();
        let zeros = [0u8; ZERO_CHUNK];
        let mut at = address + copied as u64;
        while at < end {
            let n = ((end - at) as usize).min(ZERO_CHUNK);
            if self.mem.write_slice(&zeros[..n], GuestAddress(at)).is_err() {
                return FW_CFG_DMA_CTL_ERROR;
            }
            at += n as u64;
        }
        self.offset = self.offset.saturating_add(length);
        0
    }

    /// The next byte of the selected item, zero past its end.
    fn read_byte(&mut self) -> u8 {
        let b = self.item().get(self.offset).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }
}

/// Where the guest's reading of fw_cfg stands, for a snapshot ([`crate::state`]). The items
/// themselves are not part of it: the VMM rebuilds them from the VM's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwCfgState {
    pub selected: u16,
    pub offset: u64,
    pub dma_high: u32,
}

impl FwCfg {
    /// The guest-visible state.
    pub fn state(&self) -> FwCfgState {
        FwCfgState {
            selected: self.selected,
            offset: self.offset as u64,
            dma_high: self.dma_high,
        }
    }

    /// Load `s`; an offset past the selected item just reads zeros, as it would for a guest.
    pub fn restore(&mut self, s: &FwCfgState) -> Result<(), StateError> {
        self.selected = s.selected;
        self.offset = usize::try_from(s.offset)
            .map_err(|_| StateError::new("fw_cfg", format!("offset {} too large", s.offset)))?;
        self.dma_high = s.dma_high;
        Ok(())
    }
}

impl crate::BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            DATA => data.iter_mut().for_each(|b| *b = self.read_byte()),
            DMA_HIGH.. => {
                for (i, b) in data.iter_mut().enumerate() {
                    let at = (offset - DMA_HIGH) as usize + i;
                    *b = DMA_SIGNATURE.get(at).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (SELECTOR, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (SELECTOR, 1) => self.select(u16::from(data[0])),
            // The address is big-endian: the guest stores the byte-swapped value.
            (DMA_HIGH, 4) => {
                self.dma_high = u32::from_be_bytes(data.try_into().unwrap_or_default());
            }
            (DMA_LOW, 4) => {
                let low = u32::from_be_bytes(data.try_into().unwrap_or_default());
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                // Each transfer starts from a fresh high half, as in QEMU.
                self.dma_high = 0;
                self.dma(addr);
            }
            // Data-port writes are ignored (items are read-only); other widths are noise.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BusDevice;

    const RAM: u64 = 1 << 20;

    fn device() -> FwCfg {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        FwCfg::new(mem, RAM, 2)
    }

    fn select(d: &mut FwCfg, key: u16) {
        d.write(SELECTOR, &key.to_le_bytes());
    }

    fn read_bytes(d: &mut FwCfg, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                d.read(DATA, &mut b);
                b[0]
            })
            .collect()
    }

    /// Write a descriptor at `at` and ring the doorbell the way SeaBIOS does (low half only).
    fn dma(d: &mut FwCfg, at: u64, control: u32, length: u32, address: u64) -> u32 {
        let mut desc = Vec::new();
        desc.extend_from_slice(&control.to_be_bytes());
        desc.extend_from_slice(&length.to_be_bytes());
        desc.extend_from_slice(&address.to_be_bytes());
        d.mem.write_slice(&desc, GuestAddress(at)).unwrap();
        d.write(DMA_HIGH, &((at >> 32) as u32).to_be_bytes());
        d.write(DMA_LOW, &(at as u32).to_be_bytes());
        let mut c = [0u8; 4];
        d.mem.read_slice(&mut c, GuestAddress(at)).unwrap();
        u32::from_be_bytes(c)
    }

    #[test]
    fn state_round_trips_mid_item() {
        let mut d = device();
        select(&mut d, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&mut d, 2), b"QE");
        let state = d.state();
        let mut other = device();
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        assert_eq!(
            read_bytes(&mut other, 2),
            b"MU",
            "reading goes on where it was"
        );
    }

    #[test]
    fn signature_and_id_over_the_data_port() {
        let mut d = device();
        select(&mut d, FW_CFG_SIGNATURE);
        assert_eq!(read_bytes(&mut d, 4), b"QEMU");
        assert_eq!(read_bytes(&mut d, 2), [0, 0], "zeros past the end");
        select(&mut d, FW_CFG_ID);
        assert_eq!(read_bytes(&mut d, 4), [3, 0, 0, 0]);
        select(&mut d, FW_CFG_RAM_SIZE);
        assert_eq!(read_bytes(&mut d, 8), RAM.to_le_bytes());
        select(&mut d, FW_CFG_NB_CPUS);
        assert_eq!(read_bytes(&mut d, 2), [2, 0]);
        let mut sig = [0u8; 4];
        d.read(DMA_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU");
        d.read(DMA_LOW, &mut sig);
        assert_eq!(&sig, b" CFG");
    }

    #[test]
    fn unknown_items_read_zeros() {
        let mut d = device();
        select(&mut d, 0x1234);
        assert_eq!(read_bytes(&mut d, 8), [0; 8]);
        select(&mut d, FW_CFG_FILE_FIRST + 5);
        assert_eq!(read_bytes(&mut d, 4), [0; 4]);
        select(&mut d, 0x8000);
        assert_eq!(read_bytes(&mut d, 2), [0; 2]);
    }

    #[test]
    fn file_directory_lists_the_files() {
        let mut d = device();
        d.add_file("bootorder", b"/pci@i0cf8/*@2\nHALT\0".to_vec())
            .unwrap();
        d.add_file("etc/e820", vec![7; 40]).unwrap();
        assert_eq!(
            d.add_file("bootorder", vec![]),
            Err(FwCfgError::Duplicate("bootorder".into()))
        );
        assert!(matches!(
            d.add_file(&"x".repeat(56), vec![]),
            Err(FwCfgError::BadName(_))
        ));
        select(&mut d, FW_CFG_FILE_DIR);
        let count = u32::from_be_bytes(read_bytes(&mut d, 4).try_into().unwrap());
        assert_eq!(count, 2);
        let mut found = Vec::new();
        for _ in 0..count {
            let e = read_bytes(&mut d, DIR_ENTRY_LEN);
            let size = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let key = u16::from_be_bytes(e[4..6].try_into().unwrap());
            let name = &e[8..];
            let name = std::str::from_utf8(&name[..name.iter().position(|&b| b == 0).unwrap()])
                .unwrap()
                .to_string();
            found.push((name, size, key));
        }
        assert_eq!(
            found,
            [
                ("bootorder".to_string(), 20, FW_CFG_FILE_FIRST),
                ("etc/e820".to_string(), 40, FW_CFG_FILE_FIRST + 1)
            ]
        );
        select(&mut d, FW_CFG_FILE_FIRST);
        assert_eq!(read_bytes(&mut d, 14), b"/pci@i0cf8/*@2");
    }

    #[test]
    fn dma_reads_a_file_into_guest_memory() {
        let mut d = device();
        let map = e820_file(&[
            E820Entry {
                addr: 0,
                size: 0xA_0000,
                kind: E820_RAM,
            },
            E820Entry {
                addr: 0x10_0000,
                size: 0x40_0000,
                kind: E820_RAM,
            },
        ]);
        assert_eq!(map.len(), 40);
        d.add_file("etc/e820", map.clone()).unwrap();
        d.mem
            .write_slice(&[0xAA; 48], GuestAddress(0x2000))
            .unwrap();
        // Select and read in one go, asking for more than the file holds.
        let control = (u32::from(FW_CFG_FILE_FIRST) << 16) | FW_CFG_DMA_CTL_SELECT;
        assert_eq!(
            dma(&mut d, 0x1000, control | FW_CFG_DMA_CTL_READ, 44, 0x2000),
            0
        );
        let mut got = [0u8; 48];
        d.mem.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(&got[..40], &map[..]);
        assert_eq!(&got[40..44], &[0; 4], "zero-filled past the end");
        assert_eq!(&got[44..], &[0xAA; 4], "nothing beyond the length");

        // Skip then read continues from the offset.
        assert_eq!(dma(&mut d, 0x1000, control | FW_CFG_DMA_CTL_SKIP, 20, 0), 0);
        assert_eq!(dma(&mut d, 0x1000, FW_CFG_DMA_CTL_READ, 8, 0x3000), 0);
        let mut addr = [0u8; 8];
        d.mem.read_slice(&mut addr, GuestAddress(0x3000)).unwrap();
        assert_eq!(u64::from_le_bytes(addr), 0x10_0000);
        // The data port carries on from where DMA stopped.
        assert_eq!(read_bytes(&mut d, 8), 0x40_0000u64.to_le_bytes());
    }

    #[test]
    fn bad_dma_sets_the_error_bit() {
        let mut d = device();
        d.add_file("f", vec![1; 16]).unwrap();
        let control = (u32::from(FW_CFG_FILE_FIRST) << 16) | FW_CFG_DMA_CTL_SELECT;
        let read = control | FW_CFG_DMA_CTL_READ;
        // Buffer outside guest RAM, straddling its end, wrapping the address space.
        assert_eq!(dma(&mut d, 0x1000, read, 16, RAM + 0x1000), 1);
        assert_eq!(dma(&mut d, 0x1000, read, 32, RAM - 8), 1);
        assert_eq!(dma(&mut d, 0x1000, read, 16, u64::MAX - 4), 1);
        // Zero-fill past the item running off the end of RAM.
        assert_eq!(dma(&mut d, 0x1000, read, u32::MAX, RAM - 0x100), 1);
        // Writes are refused.
        assert_eq!(
            dma(&mut d, 0x1000, control | FW_CFG_DMA_CTL_WRITE, 4, 0x2000),
            1
        );
        // A descriptor outside RAM (and beyond 4 GiB) is ignored without a panic.
        d.write(DMA_HIGH, &1u32.to_be_bytes());
        d.write(DMA_LOW, &0u32.to_be_bytes());
        d.write(DMA_LOW, &(RAM as u32 - 4).to_be_bytes());
        // The device still works afterwards.
        assert_eq!(dma(&mut d, 0x1000, read, 16, 0x2000), 0);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut d = device();
        for off in 0..FW_CFG_PORT_LEN {
            for len in [1usize, 2, 4] {
                let mut b = vec![0u8; len];
                d.read(off, &mut b);
                d.write(off, &b);
            }
        }
    }
}
