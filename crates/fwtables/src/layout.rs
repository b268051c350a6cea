//! Where the tables go and the platform numbers they advertise.
//!
//! `docs/platform.md` is the contract; these constants are its machine-readable copy. The
//! devices crate implements the registers at these ports and must use the same values: a
//! mismatch shows up only as a guest that cannot power off or reboot.

/// The ACPI Root System Description Pointer. It is on a 16-byte boundary inside
/// `0xE0000..0xFFFFF` because that is where a guest without boot-protocol help (BIOS-style
/// scan) looks for it; the direct-boot paths hand the same address over explicitly.
pub const ACPI_RSDP_ADDR: u64 = 0x000E_0000;

/// End (exclusive) of the region the ACPI tables may occupy: the MP table owns what follows.
pub const ACPI_REGION_END: u64 = 0x000F_0000;

/// The MP floating pointer structure, followed by the MP configuration table. Linux scans
/// `0xF0000..0xFFFFF` for it when ACPI is disabled or absent.
pub const MPTABLE_ADDR: u64 = 0x000F_0000;

/// End (exclusive) of the MP table region: the top of the legacy hole (1 MiB).
pub const MPTABLE_REGION_END: u64 = 0x0010_0000;

/// Most vCPUs a VM may have: vmd's kernel limit (spec §5.1). APIC ids stay below 0xFF (the
/// xAPIC broadcast id) with room for the I/O APIC id that follows the last vCPU.
pub const MAX_CPUS: u8 = 64;

/// PM1a event block: PM1_STS (2 bytes) then PM1_EN (2 bytes).
pub const PM1A_EVT_BLK: u16 = 0x600;
/// Length in bytes of [`PM1A_EVT_BLK`].
pub const PM1_EVT_LEN: u8 = 4;

/// PM1a control block: SLP_TYP (bits 10-12) and SLP_EN (bit 13) live here.
pub const PM1A_CNT_BLK: u16 = 0x604;
/// Length in bytes of [`PM1A_CNT_BLK`].
pub const PM1_CNT_LEN: u8 = 2;

/// ACPI PM timer, 3.579545 MHz, 24 bits wide (the FADT does not set TMR_VAL_EXT).
pub const PM_TMR_BLK: u16 = 0x608;
/// Length in bytes of [`PM_TMR_BLK`].
pub const PM_TMR_LEN: u8 = 4;

/// ACPI reset register (an 8-bit I/O port).
pub const RESET_REG_PORT: u16 = 0x60C;
/// Writing this to [`RESET_REG_PORT`] reboots the VM.
pub const RESET_VALUE: u8 = 0x06;

/// ISA IRQ (and GSI: identity-mapped) of the ACPI System Control Interrupt.
pub const SCI_IRQ: u8 = 9;

/// SLP_TYP value that means S5 (soft off) on this platform, advertised by `\_S5`.
pub const S5_SLP_TYP: u8 = 5;

/// CMOS RTC register holding the century (BCD), advertised in the FADT's CENTURY field so
/// guests read four-digit years instead of guessing the century.
pub const RTC_CENTURY_INDEX: u8 = 0x32;

/// I/O APIC MMIO base. 32-bit because both the MADT and the MP table store it in 32 bits.
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;

/// Local APIC MMIO base (the architectural default).
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;

/// ISA IRQ of the PIT.
pub const PIT_IRQ: u8 = 0;
/// GSI (= I/O APIC pin) the PIT's IRQ 0 arrives on: pin 0, identity, so no interrupt source
/// override. KVM's in-kernel PIT raises GSI 0 and KVM's default routing delivers GSI 0 to
/// pin 0; describing that wiring (as Firecracker does) spares every VM start a GSI-routing
/// update, which costs an SRCU grace period (milliseconds) inside KVM. QEMU's PC instead
/// reroutes GSI 0 to pin 2 to copy old chipsets; guests accept either.
pub const PIT_GSI: u8 = 0;

/// Number of ISA IRQs (two cascaded 8259s).
pub const ISA_IRQS: u8 = 16;

/// The master 8259's input the slave is cascaded on: it never raises an interrupt itself.
pub const PIC_CASCADE_IRQ: u8 = 2;

/// Configuration mechanism 1 ports (address 0xCF8, data 0xCFC..0xCFF), claimed by the PCI root.
pub const PCI_CONFIG_PORT: u16 = 0xCF8;
/// Number of ports of [`PCI_CONFIG_PORT`].
pub const PCI_CONFIG_PORT_LEN: u8 = 8;
/// Port range PCI I/O BARs are allocated from (vmd's 0x1000 upwards, spec §5.4).
pub const PCI_IO_WINDOW: core::ops::RangeInclusive<u32> = 0x1000..=0xFFFF;
/// Memory range PCI memory BARs are allocated from: the MMIO hole above bus 0's 1 MiB ECAM
/// window at 0xF000_0000, up to the I/O APIC.
pub const PCI_MEM_WINDOW: core::ops::RangeInclusive<u32> = 0xF010_0000..=0xFEBF_FFFF;

/// Bus 0's ECAM (memory-mapped configuration) window, described by the MCFG and reserved by
/// a motherboard-resource device so Linux trusts it: 1 MiB (32 devices x 8 functions x 4 KiB)
/// at the bottom of the MMIO hole, below [`PCI_MEM_WINDOW`].
pub const PCI_ECAM_BASE: u32 = 0xF000_0000;
/// Length in bytes of [`PCI_ECAM_BASE`]'s window.
pub const PCI_ECAM_LEN: u32 = 1 << 20;
const _: () = assert!(PCI_ECAM_BASE + PCI_ECAM_LEN <= *PCI_MEM_WINDOW.start());

/// Devices on bus 0 (slot 0 is the host bridge).
pub const PCI_SLOTS: u8 = 32;
/// The ISA IRQs PCI INTx lines take, in vmd's order (spec §5.5) without the SCI's 9.
pub const PCI_INTX_IRQS: [u8; 9] = [3, 5, 6, 7, 10, 11, 12, 14, 15];

/// The GSI of the INTx line of the device in `slot` (INTA; devices here have no other pin):
/// slots take [`PCI_INTX_IRQS`] in turn from slot 1, sharing once there are more devices
/// than lines. The host bridge (slot 0) has none. The `_PRT` and the hypervisor's irqfds both
/// follow this rule.
pub fn pci_intx_gsi(slot: u8) -> Option<u8> {
    match slot {
        0 => None,
        s if s >= PCI_SLOTS => None,
        s => Some(PCI_INTX_IRQS[usize::from(s - 1) % PCI_INTX_IRQS.len()]),
    }
}
