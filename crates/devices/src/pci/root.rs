//! Bus 0: slot table, configuration access (mechanism 1 and ECAM) and BAR decoding.

use std::sync::{Arc, Mutex, MutexGuard};

use super::alloc::BarAllocator;
use super::config::{BarSpace, BAR_COUNT, EXTENDED_CONFIG_SIZE};
use super::host_bridge::HostBridge;
use super::{BarMove, PciDevice, PciError, PCI_SLOTS};
use crate::bus::{Bus, BusDevice, BusError};

/// A device on the bus, shared with whoever runs its queues.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;
/// Called (with the root locked: it must not touch the root) after the guest moved a BAR.
pub type BarMoveHandler = Box<dyn FnMut(&BarMove) + Send>;

/// Mechanism 1 address register: enable bit.
const CONFIG_ENABLE: u32 = 1 << 31;
/// Mechanism 1 address register: the bits that hold state (enable, bus, device, function,
/// dword register); reserved bits 24-30 and the byte bits 0-1 read as zero.
const CONFIG_ADDRESS_MASK: u32 = CONFIG_ENABLE | 0x00ff_fffc;
/// Bytes of the address register at the start of [`PciConfigIo`]'s range.
const CONFIG_ADDRESS_LEN: u64 = 4;
/// Functions per device (only 0 exists: spec §5.4, bus 0 function 0 only).
const FUNCTIONS: u64 = 8;
/// ECAM offset bits: bus 27:20, device 19:15, function 14:12, register 11:0.
const ECAM_BUS_SHIFT: u64 = 20;
const ECAM_DEVICE_SHIFT: u64 = 15;
const ECAM_FUNCTION_SHIFT: u64 = 12;

#[derive(Debug, Clone, Copy)]
struct Decode {
    space: BarSpace,
    start: u64,
    len: u64,
    slot: usize,
    bar: usize,
}

/// What decides where a device's BARs decode: its command register and BARs.
struct Decoding {
    command: u16,
    bars: [Option<(BarSpace, u64, u64)>; BAR_COUNT],
}

impl Decoding {
    fn of(d: &dyn PciDevice) -> Self {
        Decoding {
            command: d.config().command(),
            bars: std::array::from_fn(|b| d.config().bar(b)),
        }
    }
}

/// The root complex of bus 0 with the host bridge in slot 0.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    allocator: BarAllocator,
    /// Where each enabled BAR currently decodes; rebuilt on every config change that can
    /// move one, so BAR accesses never lock every device to find their owner.
    decode: Vec<Decode>,
    on_bar_move: Option<BarMoveHandler>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Device state is plain register data: serve it even after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PciRoot {
    /// Bus 0 with only the host bridge; BARs of added devices come from `allocator`.
    pub fn new(allocator: BarAllocator) -> Self {
        let mut slots: Vec<Option<SharedPciDevice>> = vec![None; PCI_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        PciRoot {
            slots,
            allocator,
            decode: Vec::new(),
            on_bar_move: None,
        }
    }

    /// Put `dev` in the next free slot (creation order, as vmd does: spec §5.5), assign its
    /// BARs and return the slot number.
    pub fn add_device(&mut self, dev: SharedPciDevice) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::NoSlot)?;
        {
            let mut d = lock(&dev);
            for bar in 0..BAR_COUNT {
                if let Some((space, _, size)) = d.config().bar(bar) {
                    let addr = self.allocator.allocate(space, size)?;
                    d.config_mut().set_bar_addr(bar, addr);
                }
            }
        }
        self.slots[slot] = Some(dev);
        self.rebuild_decode();
        Ok(slot as u8)
    }

    /// The device in `slot`.
    pub fn device(&self, slot: u8) -> Option<SharedPciDevice> {
        self.slots.get(usize::from(slot)).cloned().flatten()
    }

    /// Be told when the guest moves a BAR (to re-register ioeventfds).
    pub fn set_bar_move_handler(&mut self, handler: BarMoveHandler) {
        self.on_bar_move = Some(handler);
    }

    fn function(&self, slot: u64, func: u64) -> Option<&SharedPciDevice> {
        if func != 0 {
            return None;
        }
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Configuration read of bus 0; absent functions read all-ones.
    pub fn config_read(&self, slot: u64, func: u64, offset: usize, data: &mut [u8]) {
        match self.function(slot, func) {
            Some(d) if offset + data.len() <= EXTENDED_CONFIG_SIZE => {
                lock(d).read_config(offset, data)
            }
            _ => data.fill(0xff),
        }
    }

    /// Configuration write of bus 0; writes to absent functions are dropped.
    pub fn config_write(&mut self, slot: u64, func: u64, offset: usize, data: &[u8]) {
        let Some(dev) = self.function(slot, func).cloned() else {
            return;
        };
        if offset + data.len() > EXTENDED_CONFIG_SIZE {
            return;
        }
        let (before, after) = {
            let mut d = lock(&dev);
            let before = Decoding::of(&*d);
            d.write_config(offset, data);
            (before, Decoding::of(&*d))
        };
        self.follow(slot as u8, before, after);
    }

    /// Let `change` replace the configuration of the device in `slot` from outside the guest
    /// (loading a snapshot), then decode its BARs where they now are and report each BAR that
    /// moved to the BAR-move handler, as after a guest write. The root does not hold the
    /// device's lock while `change` runs, so `change` may take it. Returns `None` (without
    /// running `change`) when the slot is empty.
    pub fn reconfigure<R>(&mut self, slot: u8, change: impl FnOnce() -> R) -> Option<R> {
        let dev = self.device(slot)?;
        let before = Decoding::of(&*lock(&dev));
        let r = change();
        let after = Decoding::of(&*lock(&dev));
        self.follow(slot, before, after);
        Some(r)
    }

    /// Decode and report what changed in the device in `slot` from `before` to `after`.
    fn follow(&mut self, slot: u8, before: Decoding, after: Decoding) {
        let mut moves = Vec::new();
        for (bar, (old, new)) in before.bars.iter().zip(&after.bars).enumerate() {
            if let (Some((space, old, size)), Some((_, new, _))) = (*old, *new) {
                if old != new {
                    moves.push(BarMove {
                        slot,
                        bar,
                        space,
                        old,
                        new,
                        size,
                    });
                }
            }
        }
        if before.command != after.command || !moves.is_empty() {
            self.rebuild_decode();
        }
        if let Some(h) = self.on_bar_move.as_mut() {
            moves.iter().for_each(h);
        }
    }

    fn rebuild_decode(&mut self) {
        self.decode.clear();
        for (slot, dev) in self.slots.iter().enumerate() {
            let Some(dev) = dev else { continue };
            let d = lock(dev);
            for bar in 0..BAR_COUNT {
                if let Some((space, start, len)) = d.config().bar(bar) {
                    if d.config().decodes(space) {
                        self.decode.push(Decode {
                            space,
                            start,
                            len,
                            slot,
                            bar,
                        });
                    }
                }
            }
        }
    }

    /// The device, BAR and offset that decode `[addr, addr + len)` in `space`.
    fn lookup(
        &self,
        space: BarSpace,
        addr: u64,
        len: usize,
    ) -> Option<(SharedPciDevice, usize, u64)> {
        let d = self.decode.iter().find(|d| {
            d.space == space
                && addr >= d.start
                && addr
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= d.start + d.len)
        })?;
        Some((self.slots[d.slot].clone()?, d.bar, addr - d.start))
    }
}

/// Configuration mechanism 1: map at [`super::PCI_CONFIG_IO_BASE`], length
/// [`super::PCI_CONFIG_IO_LEN`].
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    /// Access to `root` through ports 0xCF8-0xCFF.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// (slot, function, register) selected, or None when disabled or not on bus 0.
    fn target(&self) -> Option<(u64, u64, usize)> {
        let a = self.address;
        let bus = (a >> 16) & 0xff;
        (a & CONFIG_ENABLE != 0 && bus == 0).then_some((
            u64::from((a >> 11) & 0x1f),
            u64::from((a >> 8) & 0x7),
            (a & 0xfc) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset < CONFIG_ADDRESS_LEN {
            let bytes = self.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        match self.target() {
            Some((slot, func, reg)) => {
                let byte = (offset - CONFIG_ADDRESS_LEN) as usize;
                lock(&self.root).config_read(slot, func, reg + byte, data)
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset < CONFIG_ADDRESS_LEN {
            // Only a full dword write at 0xCF8 is the address register; byte writes there
            // (0xCF9 is a reset register on Intel chipsets) are not decoded.
            if offset == 0 && data.len() == 4 {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = v & CONFIG_ADDRESS_MASK;
            }
            return;
        }
        if let Some((slot, func, reg)) = self.target() {
            let byte = (offset - CONFIG_ADDRESS_LEN) as usize;
            lock(&self.root).config_write(slot, func, reg + byte, data);
        }
    }
}

/// ECAM (MMCONFIG) for bus 0: map at the base the ACPI MCFG table names, length
/// [`super::ECAM_SIZE`].
pub struct PciEcam {
    root: Arc<Mutex<PciRoot>>,
}

impl PciEcam {
    /// Memory-mapped configuration access to `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciEcam { root }
    }

    fn target(offset: u64, len: usize) -> Option<(u64, u64, usize)> {
        let reg = (offset & (EXTENDED_CONFIG_SIZE as u64 - 1)) as usize;
        (offset >> ECAM_BUS_SHIFT == 0 && reg + len <= EXTENDED_CONFIG_SIZE).then_some((
            (offset >> ECAM_DEVICE_SHIFT) & (super::PCI_SLOTS as u64 - 1),
            (offset >> ECAM_FUNCTION_SHIFT) & (FUNCTIONS - 1),
            reg,
        ))
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::target(offset, data.len()) {
            Some((slot, func, reg)) => lock(&self.root).config_read(slot, func, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((slot, func, reg)) = Self::target(offset, data.len()) {
            lock(&self.root).config_write(slot, func, reg, data);
        }
    }
}

/// The I/O or memory window BARs are allocated from: map it over the whole window (for I/O
/// [`super::PCI_IO_START`]..[`super::PCI_IO_END`]; for memory the hole minus the ECAM
/// range) with `base` = where it is mapped. Accesses go to whichever BAR decodes the address
/// now; others read all-ones.
pub struct PciBarWindow {
    root: Arc<Mutex<PciRoot>>,
    space: BarSpace,
    base: u64,
}

impl PciBarWindow {
    /// A window of `space` mapped at `base`.
    pub fn new(root: Arc<Mutex<PciRoot>>, space: BarSpace, base: u64) -> Self {
        PciBarWindow { root, space, base }
    }

    fn find(&self, offset: u64, len: usize) -> Option<(SharedPciDevice, usize, u64)> {
        let addr = self.base.checked_add(offset)?;
        // The root lock is dropped before the device is locked: a device's own work never
        // waits on the whole bus.
        lock(&self.root).lookup(self.space, addr, len)
    }
}

impl BusDevice for PciBarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.find(offset, data.len()) {
            Some((dev, bar, off)) => lock(&dev).bar_read(bar, off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((dev, bar, off)) = self.find(offset, data.len()) {
            lock(&dev).bar_write(bar, off, data);
        }
    }
}

/// Map bus 0 the way a VMM presents it: configuration mechanism 1 at 0xCF8 and the I/O BAR
/// window on `pio`; the ECAM window at `ecam_base` and the memory BAR window above it, up to
/// the I/O APIC, on `mmio`.
pub fn map_root(
    root: &Arc<Mutex<PciRoot>>,
    pio: &mut Bus,
    mmio: &mut Bus,
    ecam_base: u64,
) -> Result<(), BusError> {
    let mem_base = ecam_base + super::ECAM_SIZE;
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        u64::from(super::PCI_CONFIG_IO_BASE),
        super::PCI_CONFIG_IO_LEN,
    )?;
    pio.insert(
        Arc::new(Mutex::new(PciBarWindow::new(
            root.clone(),
            BarSpace::Io,
            super::PCI_IO_START,
        ))),
        super::PCI_IO_START,
        super::PCI_IO_END - super::PCI_IO_START,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(PciEcam::new(root.clone()))),
        ecam_base,
        super::ECAM_SIZE,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(PciBarWindow::new(
            root.clone(),
            BarSpace::Memory,
            mem_base,
        ))),
        mem_base,
        super::PCI_MMIO_HOLE_END - mem_base,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{ConfigSpace, PciIds};
    use crate::pci::{
        ECAM_SIZE, PCI_IO_END, PCI_IO_START, PCI_MMIO_HOLE_END, PCI_MMIO_HOLE_START,
        PCI_PRODUCT_OPENBSD_PCHB, PCI_VENDOR_OPENBSD,
    };
    use crate::testutil::XorShift;
    use crate::Bus;

    /// A function with one I/O and one memory BAR whose registers echo the offset.
    struct Echo {
        config: ConfigSpace,
        writes: Vec<(usize, u64, Vec<u8>)>,
    }
    impl Echo {
        fn new() -> Self {
            let mut config = ConfigSpace::new(PciIds {
                vendor: 0x1af4,
                device: 0x1005,
                class: 0xff,
                ..Default::default()
            });
            config.add_bar(0, BarSpace::Io, 0x40);
            config.add_bar(1, BarSpace::Memory, 0x1000);
            Echo {
                config,
                writes: vec![],
            }
        }
    }
    impl PciDevice for Echo {
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.config
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill((bar as u8) << 4 | offset as u8);
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.writes.push((bar, offset, data.to_vec()));
        }
    }

    const ECAM_BASE: u64 = PCI_MMIO_HOLE_START;

    struct Machine {
        root: Arc<Mutex<PciRoot>>,
        pio: Bus,
        mmio: Bus,
        echo: Arc<Mutex<Echo>>,
        moves: Arc<Mutex<Vec<BarMove>>>,
    }

    fn machine() -> Machine {
        let ecam = ECAM_BASE..ECAM_BASE + ECAM_SIZE;
        let alloc = BarAllocator::new(
            PCI_IO_START..PCI_IO_END,
            PCI_MMIO_HOLE_START..PCI_MMIO_HOLE_END,
            ecam.clone(),
        );
        let root = Arc::new(Mutex::new(PciRoot::new(alloc)));
        let echo = Arc::new(Mutex::new(Echo::new()));
        assert_eq!(root.lock().unwrap().add_device(echo.clone()), Ok(1));
        let moves = Arc::new(Mutex::new(Vec::new()));
        let m = moves.clone();
        root.lock()
            .unwrap()
            .set_bar_move_handler(Box::new(move |mv| m.lock().unwrap().push(*mv)));
        let (mut pio, mut mmio) = (Bus::new(), Bus::new());
        map_root(&root, &mut pio, &mut mmio, ECAM_BASE).unwrap();
        Machine {
            root,
            pio,
            mmio,
            echo,
            moves,
        }
    }

    fn cf8_read(pio: &Bus, slot: u32, func: u32, reg: u32) -> u32 {
        let addr = CONFIG_ENABLE | slot << 11 | func << 8 | reg;
        pio.write(0xcf8, &addr.to_le_bytes());
        let mut d = [0u8; 4];
        pio.read(0xcfc, &mut d);
        u32::from_le_bytes(d)
    }

    fn cf8_write(pio: &Bus, slot: u32, reg: u32, v: u32) {
        pio.write(0xcf8, &(CONFIG_ENABLE | slot << 11 | reg).to_le_bytes());
        pio.write(0xcfc, &v.to_le_bytes());
    }

    fn ecam_read(mmio: &Bus, slot: u64, func: u64, reg: u64) -> u32 {
        let mut d = [0u8; 4];
        mmio.read(ECAM_BASE + (slot << 15 | func << 12 | reg), &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn reconfigure_decodes_moved_bars_and_reports_them() {
        let m = machine();
        let mut state = m.echo.lock().unwrap().config.state();
        let mut moved = m.echo.lock().unwrap().config.clone();
        moved.write(0x10, &0xc000u32.to_le_bytes());
        state.regs = moved.state().regs;
        state.bars[0] = Some(0xc000);
        let echo = m.echo.clone();
        let done = m
            .root
            .lock()
            .unwrap()
            .reconfigure(1, || echo.lock().unwrap().config.restore(&state));
        assert_eq!(done, Some(Ok(())));
        let mv = m.moves.lock().unwrap()[0];
        assert_eq!((mv.slot, mv.bar, mv.old, mv.new), (1, 0, 0x1000, 0xc000));
        let mut b = [0u8; 1];
        m.pio.read(0xc003, &mut b);
        assert_eq!(b[0], 0x03, "decoded at the restored address");
        m.pio.read(0x1003, &mut b);
        assert_eq!(b[0], 0xff, "not at the old one");
        assert_eq!(m.root.lock().unwrap().reconfigure(9, || ()), None);
    }

    #[test]
    fn enumerate_through_cf8_cfc() {
        let m = machine();
        let id = cf8_read(&m.pio, 0, 0, 0);
        assert_eq!(id & 0xffff, u32::from(PCI_VENDOR_OPENBSD));
        assert_eq!(id >> 16, u32::from(PCI_PRODUCT_OPENBSD_PCHB));
        assert_eq!(cf8_read(&m.pio, 0, 0, 8) >> 16, 0x0600, "host bridge class");
        assert_eq!(cf8_read(&m.pio, 1, 0, 0), 0x1005_1af4);
        for slot in 2..32 {
            assert_eq!(cf8_read(&m.pio, slot, 0, 0), u32::MAX);
        }
        assert_eq!(cf8_read(&m.pio, 1, 1, 0), u32::MAX, "function 1 absent");
        // Bus 1 does not exist; with the enable bit clear nothing is selected.
        m.pio.write(0xcf8, &(CONFIG_ENABLE | 1 << 16).to_le_bytes());
        let mut d = [0u8; 4];
        m.pio.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        m.pio.write(0xcf8, &0u32.to_le_bytes());
        m.pio.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4]);
        // The address register reads back without reserved bits; byte reads of the data
        // port pick the byte.
        m.pio.write(0xcf8, &0xffff_ffffu32.to_le_bytes());
        m.pio.read(0xcf8, &mut d);
        assert_eq!(u32::from_le_bytes(d), CONFIG_ADDRESS_MASK);
        m.pio.write(0xcf8, &CONFIG_ENABLE.to_le_bytes());
        let mut b = [0u8; 1];
        m.pio.read(0xcfe, &mut b);
        assert_eq!(b[0], PCI_PRODUCT_OPENBSD_PCHB as u8);
    }

    #[test]
    fn bar_sizing_allocation_and_moves() {
        let m = machine();
        assert_eq!(
            cf8_read(&m.pio, 1, 0, 0x10),
            0x1001,
            "first I/O BAR at 0x1000"
        );
        assert_eq!(
            cf8_read(&m.pio, 1, 0, 0x14) as u64,
            ECAM_BASE + ECAM_SIZE,
            "memory BARs start past the ECAM window"
        );
        cf8_write(&m.pio, 1, 0x10, u32::MAX);
        assert_eq!(cf8_read(&m.pio, 1, 0, 0x10), 0xffff_ffc1, "64-byte I/O BAR");
        cf8_write(&m.pio, 1, 0x10, 0x1000);
        cf8_write(&m.pio, 1, 0x14, u32::MAX);
        assert_eq!(cf8_read(&m.pio, 1, 0, 0x14), 0xffff_f000);
        assert!(m.moves.lock().unwrap().is_empty(), "sizing moves nothing");
        // BAR accesses reach the device through the windows.
        let mut b = [0u8; 2];
        assert!(m.pio.read(0x1004, &mut b));
        assert_eq!(b, [0x04; 2]);
        let mem = ECAM_BASE + ECAM_SIZE;
        assert!(m.mmio.read(mem + 8, &mut b));
        assert_eq!(b, [0x18; 2]);
        // Move the memory BAR: the handler hears it and decoding follows.
        cf8_write(&m.pio, 1, 0x14, 0xfe00_0000);
        assert_eq!(
            *m.moves.lock().unwrap(),
            vec![BarMove {
                slot: 1,
                bar: 1,
                space: BarSpace::Memory,
                old: mem,
                new: 0xfe00_0000,
                size: 0x1000
            }]
        );
        m.mmio.read(mem + 8, &mut b);
        assert_eq!(b, [0xff; 2], "old address no longer decodes");
        m.mmio.write(0xfe00_0010, &[7]);
        assert_eq!(m.echo.lock().unwrap().writes, vec![(1, 0x10, vec![7])]);
        // Decoding off in COMMAND: BARs vanish.
        cf8_write(&m.pio, 1, 0x04, 0);
        m.pio.read(0x1004, &mut b);
        assert_eq!(b, [0xff; 2]);
        assert!(m.root.lock().unwrap().device(1).is_some());
    }

    #[test]
    fn enumerate_through_ecam() {
        let m = machine();
        assert_eq!(
            ecam_read(&m.mmio, 0, 0, 0),
            u32::from(PCI_PRODUCT_OPENBSD_PCHB) << 16 | u32::from(PCI_VENDOR_OPENBSD)
        );
        assert_eq!(ecam_read(&m.mmio, 1, 0, 0), 0x1005_1af4);
        assert_eq!(ecam_read(&m.mmio, 5, 0, 0), u32::MAX);
        assert_eq!(ecam_read(&m.mmio, 1, 3, 0), u32::MAX);
        assert_eq!(
            ecam_read(&m.mmio, 1, 0, 0x100),
            0,
            "no extended capabilities"
        );
        let mut q = [0u8; 8];
        m.mmio.read(ECAM_BASE + (1 << 15), &mut q);
        assert_eq!(&q[..4], &0x1005_1af4u32.to_le_bytes());
        m.mmio
            .write(ECAM_BASE + (1 << 15) + 0x14, &u32::MAX.to_le_bytes());
        assert_eq!(ecam_read(&m.mmio, 1, 0, 0x14), 0xffff_f000);
    }

    #[test]
    fn fuzz_config_and_windows() {
        let m = machine();
        let mut rng = XorShift::new(0xcf8);
        for _ in 0..50_000 {
            let r = rng.next();
            let width = rng.width();
            let mut data = [0u8; 8];
            rng.fill(&mut data);
            let (bus, base, len) = match r % 4 {
                0 => (&m.pio, 0xcf8, 8),
                1 => (&m.pio, PCI_IO_START, 0x4000),
                2 => (&m.mmio, ECAM_BASE, ECAM_SIZE),
                _ => (&m.mmio, ECAM_BASE + ECAM_SIZE, 0x10_0000),
            };
            let addr = base + rng.offset(len) % len;
            if r & 0x100 != 0 {
                bus.read(addr, &mut data[..width]);
            } else {
                bus.write(addr, &data[..width]);
            }
        }
    }
}
