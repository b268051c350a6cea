//! The FADT (fixed ACPI hardware: PM registers, SCI, reset register) and the FACS it points to.

use ::acpi_tables::fadt::{FADTBuilder, Flags};
use ::acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use ::acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    PM1A_CNT_BLK, PM1A_EVT_BLK, PM1_CNT_LEN, PM1_EVT_LEN, PM_TMR_BLK, PM_TMR_LEN, RESET_REG_PORT,
    RESET_VALUE, RTC_CENTURY_INDEX, SCI_IRQ,
};

/// Length of a revision 6 FADT.
pub(super) const FADT_LEN: usize = 276;
/// ACPI 6.0: the newest layout Linux 6.1's ACPICA and our iasl both know fully.
const FADT_REVISION: u8 = 6;
const FADT_MINOR_REVISION: u8 = 0;

/// P_LVL2_LAT above 100 µs tells the OS there is no C2 state to enter.
const NO_C2_LATENCY: u16 = 101;
/// P_LVL3_LAT above 1000 µs tells the OS there is no C3 state to enter.
const NO_C3_LATENCY: u16 = 1001;

/// IAPC_BOOT_ARCH: ISA-style legacy devices (COM1, RTC, PIC, PIT) are present.
const BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
/// IAPC_BOOT_ARCH: an 8042 keyboard controller is present (our reboot path uses it).
const BOOT_ARCH_8042: u16 = 1 << 1;
/// IAPC_BOOT_ARCH: no VGA. There is none on this platform (the console is COM1), and the
/// flag spares a guest from probing legacy VGA ports and memory.
const BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;

const BITS_PER_BYTE: u8 = 8;
/// The reset register must be 8 bits wide (ACPI 6.0 §4.8.3.6).
const RESET_REG_LEN: u8 = 1;

/// A FADT pointing at the FACS and DSDT. The DSDT pointer and every register block are
/// given in both their 32-bit legacy field and their 64-bit `X_` field with equal values,
/// which ACPICA accepts without a mismatch warning and which ACPI 1.0 guests can still read.
pub(super) fn build(facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // WBINVD: the spec requires it of every ACPI 2.0+ x86 system. PROC_C1: HLT works.
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // Set = *no* fixed-feature sleep button. PWR_BUTTON is left clear on purpose: that
        // advertises the fixed-feature power button the daemon presses for a graceful stop.
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    f.major_version = FADT_REVISION;
    f.fadt_minor_version = FADT_MINOR_REVISION;

    // Only the 32-bit FACS pointer: ACPI 6.0 §5.2.9 wants X_FIRMWARE_CTRL zero when
    // FIRMWARE_CTRL is set (Linux would otherwise install the same FACS twice).
    f.firmware_ctrl = (facs_addr as u32).into();
    f.dsdt = (dsdt_addr as u32).into();
    f.x_dsdt = dsdt_addr.into();

    f.sci_int = u16::from(SCI_IRQ).into();
    // SMI_CMD = 0 (the builder's default) declares the platform always in ACPI mode, so the
    // OS never tries an SMM handshake we do not emulate.

    f.pm1a_evt_blk = u32::from(PM1A_EVT_BLK).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.x_pm1a_evt_blk = io_register(PM1A_EVT_BLK, PM1_EVT_LEN, AccessSize::WordAccess);
    f.pm1a_cnt_blk = u32::from(PM1A_CNT_BLK).into();
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.x_pm1a_cnt_blk = io_register(PM1A_CNT_BLK, PM1_CNT_LEN, AccessSize::WordAccess);
    f.pm_tmr_blk = u32::from(PM_TMR_BLK).into();
    f.pm_tmr_len = PM_TMR_LEN;
    f.x_pm_tmr_blk = io_register(PM_TMR_BLK, PM_TMR_LEN, AccessSize::DwordAccess);

    f.p_lvl2_lat = NO_C2_LATENCY.into();
    f.p_lvl3_lat = NO_C3_LATENCY.into();
    f.century = RTC_CENTURY_INDEX;
    f.iapc_boot_arch =
        (BOOT_ARCH_LEGACY_DEVICES | BOOT_ARCH_8042 | BOOT_ARCH_VGA_NOT_PRESENT).into();

    f.reset_reg = io_register(RESET_REG_PORT, RESET_REG_LEN, AccessSize::ByteAccess);
    f.reset_value = RESET_VALUE;

    let mut bytes = Vec::with_capacity(FADT_LEN);
    f.finalize().to_aml_bytes(&mut bytes);
    bytes
}

/// A GAS for `len` bytes of I/O ports at `port`, accessed `access` at a time.
fn io_register(port: u16, len: u8, access: AccessSize) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        len * BITS_PER_BYTE,
        0,
        access,
        u64::from(port),
    )
}

/// Length of the FACS (fixed by the spec).
const FACS_LEN: usize = 64;
/// ACPI 6.0 FACS version.
const FACS_VERSION: u8 = 2;
const FACS_LENGTH_AT: usize = 4;
const FACS_VERSION_AT: usize = 32;

/// The FACS. Required for a full-ACPI FADT (Linux complains without one) even though we
/// offer no S1-S4 resume and no global lock users: hardware signature, waking vectors, lock
/// and flags all stay zero.
pub(super) fn facs() -> Vec<u8> {
    let mut b = vec![0u8; FACS_LEN];
    b[..4].copy_from_slice(b"FACS");
    b[FACS_LENGTH_AT..FACS_LENGTH_AT + 4].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    b[FACS_VERSION_AT] = FACS_VERSION;
    b
}
