//! ACPI fixed hardware: PM1a event and control blocks, PM timer and reset register
//! (docs/platform.md, spec §5.4 [cur], F-HW-17).
//!
//! vmd never had these; KVM guests expect them: Linux powers off through `\_S5` and
//! PM1a_CNT, reboots through the FADT reset register, and the daemon's graceful stop presses
//! the fixed-feature power button (spec §5.7: Linux has no vmmci driver).
//!
//! One device serves the whole block `0x600..=0x60C` because the registers share state (the
//! SCI depends on PM1_STS and PM1_EN) and sit at fixed offsets from one base. The numbers
//! must match what the `fwtables` crate writes into the FADT.
//!
//! Not emulated: TMR_STS/TMR_EN (the timer-carry SCI; guests use the PM timer only as a
//! clocksource), sleep states other than S5 (their SLP_EN writes are ignored, so the guest
//! simply keeps running), and the sleep and RTC buttons.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{read_bytes, write_bytes, BusDevice};
use crate::exit::{ExitRequest, ExitSignal};
use crate::state::StateError;

/// First port of the block.
pub const PM_BASE: u16 = 0x600;
/// PM1a event block: PM1_STS (2 bytes) then PM1_EN (2 bytes).
pub const PM1A_EVT: u16 = 0x600;
/// PM1a control block (2 bytes).
pub const PM1A_CNT: u16 = 0x604;
/// PM timer (4 bytes, 24 significant bits).
pub const PM_TMR: u16 = 0x608;
/// ACPI reset register (1 byte).
pub const RESET_PORT: u16 = 0x60c;
/// Writing this to [`RESET_PORT`] reboots the VM.
pub const RESET_VALUE: u8 = 0x06;
/// Map the device at [`PM_BASE`] with this length (through the reset register).
pub const PM_PORT_LEN: u64 = (RESET_PORT - PM_BASE + 1) as u64;
/// SLP_TYP that means S5 (soft off); the DSDT's `\_S5` package carries it.
pub const S5_SLP_TYP: u8 = 5;
/// ISA IRQ of the System Control Interrupt (level-triggered, active high).
pub const SCI_IRQ: u32 = 9;
/// PM timer frequency fixed by the ACPI specification.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The PM timer is 24 bits wide (the FADT does not set TMR_VAL_EXT).
pub const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// PM1_STS / PM1_EN bit of the fixed-feature power button.
pub const PWRBTN: u16 = 1 << 8;
/// PM1_CNT: SCI_EN, reported set because the platform is always in ACPI mode (no SMI_CMD).
pub const SCI_EN: u16 = 1 << 0;
/// PM1_CNT: SLP_EN, write-only: starts the sleep transition SLP_TYP selects.
pub const SLP_EN: u16 = 1 << 13;
/// PM1_CNT: shift of the 3-bit SLP_TYP field.
pub const SLP_TYP_SHIFT: u32 = 10;
const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
/// PM1_CNT: bus-master reload, kept only so the guest reads back what it wrote.
const BM_RLD: u16 = 1 << 1;
/// The PM1_CNT bits that hold state; GBL_RLS and SLP_EN are write-only strobes.
const CNT_STORED: u16 = BM_RLD | SLP_TYP_MASK;

/// PM1_EN bits a guest may set: every enable bit the ACPI spec defines (timer, global lock,
/// power button, sleep button, RTC). Only the power button ever raises its status here, but
/// ACPICA reads each enable back after writing it and logs an error when it does not stick.
const EN_WRITABLE: u16 = (1 << 0) | (1 << 5) | PWRBTN | (1 << 9) | (1 << 10);

const NANOS_PER_SEC: u128 = 1_000_000_000;

// Offsets of each byte from PM_BASE.
const STS_LO: u64 = (PM1A_EVT - PM_BASE) as u64;
const STS_HI: u64 = STS_LO + 1;
const EN_LO: u64 = STS_LO + 2;
const EN_HI: u64 = STS_LO + 3;
const CNT_LO: u64 = (PM1A_CNT - PM_BASE) as u64;
const CNT_HI: u64 = CNT_LO + 1;
const TMR_FIRST: u64 = (PM_TMR - PM_BASE) as u64;
const TMR_LAST: u64 = TMR_FIRST + 3;
const RESET: u64 = (RESET_PORT - PM_BASE) as u64;

/// Time since the device was created; injectable so tests control time.
type MonotonicClock = Box<dyn Fn() -> Duration + Send>;

/// The ACPI PM block. Map it at [`PM_BASE`] with length [`PM_PORT_LEN`].
pub struct AcpiPm {
    sts: u16,
    en: u16,
    cnt: u16,
    exit: ExitSignal,
    sci: EventFd,
    clock: MonotonicClock,
    /// Added to `clock` so that a restored PM timer continues from its recorded value.
    timer_base: Duration,
}

impl AcpiPm {
    /// A PM block that reports power-off and reset through `exit` and raises the SCI
    /// (IRQ 9) through `sci`. The SCI is level-triggered: bind `sci` to a KVM irqfd with a
    /// resample fd and call [`AcpiPm::resample`] whenever that fd fires.
    pub fn new(exit: ExitSignal, sci: EventFd) -> Self {
        let start = Instant::now();
        Self::with_clock(exit, sci, Box::new(move || start.elapsed()))
    }

    fn with_clock(exit: ExitSignal, sci: EventFd, clock: MonotonicClock) -> Self {
        AcpiPm {
            sts: 0,
            en: 0,
            cnt: 0,
            exit,
            sci,
            clock,
            timer_base: Duration::ZERO,
        }
    }

    /// Whether the guest listens to the power button (its ACPI driver set PWRBTN_EN): a
    /// graceful stop is only worth waiting for when it does.
    pub fn power_button_enabled(&self) -> bool {
        self.en & PWRBTN != 0
    }

    /// Press the fixed-feature power button: the guest's ACPI driver sees PWRBTN_STS and
    /// starts an orderly shutdown, ending in S5.
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN;
        self.raise_sci();
    }

    /// Re-assert the SCI if an enabled event is still pending: the guest acknowledged the
    /// interrupt (EOI) without clearing its cause.
    pub fn resample(&mut self) {
        self.raise_sci();
    }

    fn sci_asserted(&self) -> bool {
        self.sts & self.en != 0
    }

    fn raise_sci(&mut self) {
        if self.sci_asserted() {
            // A full counter still leaves the fd readable: nothing is lost.
            let _ = self.sci.write(1);
        }
    }

    /// Time the PM timer has counted.
    fn elapsed(&self) -> Duration {
        self.timer_base.saturating_add((self.clock)())
    }

    fn timer(&self) -> u32 {
        let ticks = self.elapsed().as_nanos() * u128::from(PM_TIMER_HZ) / NANOS_PER_SEC;
        // Wrapping is the register's nature; the low 24 bits are all a guest sees.
        (ticks as u32) & PM_TIMER_MASK
    }

    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        let cnt = self.cnt | SCI_EN;
        match offset {
            STS_LO => self.sts as u8,
            STS_HI => (self.sts >> 8) as u8,
            EN_LO => self.en as u8,
            EN_HI => (self.en >> 8) as u8,
            CNT_LO => cnt as u8,
            CNT_HI => (cnt >> 8) as u8,
            TMR_FIRST..=TMR_LAST => (timer >> (8 * (offset - TMR_FIRST))) as u8,
            // The reset register's read value is undefined (ACPI 6.5 §4.8.3.6).
            RESET => 0,
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, v: u8) {
        let lo = u16::from(v);
        let hi = u16::from(v) << 8;
        match offset {
            // Write-one-to-clear: software acknowledges exactly the events it saw.
            STS_LO => self.sts &= !lo,
            STS_HI => self.sts &= !hi,
            EN_LO => self.en = (self.en & 0xff00) | (lo & EN_WRITABLE),
            EN_HI => self.en = (self.en & 0x00ff) | (hi & EN_WRITABLE),
            CNT_LO => self.cnt = (self.cnt & 0xff00) | (lo & CNT_STORED),
            CNT_HI => {
                self.cnt = (self.cnt & 0x00ff) | (hi & CNT_STORED);
                let slp_typ = (hi & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                if hi & SLP_EN != 0 && slp_typ == u16::from(S5_SLP_TYP) {
                    self.exit.request(ExitRequest::Poweroff);
                }
            }
            RESET if v == RESET_VALUE => self.exit.request(ExitRequest::Reboot),
            // The PM timer is read-only; the rest of the block is unassigned.
            _ => {}
        }
    }
}

/// The PM block's registers and timer, for a snapshot ([`crate::state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmState {
    pub sts: u16,
    pub en: u16,
    pub cnt: u16,
    /// Time the PM timer had counted, in nanoseconds: it continues from there.
    pub timer_nanos: u64,
}

impl AcpiPm {
    /// The guest-visible state.
    pub fn state(&self) -> PmState {
        PmState {
            sts: self.sts,
            en: self.en,
            cnt: self.cnt,
            timer_nanos: u64::try_from(self.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Load `s`. An asserted SCI is asserted again through [`AcpiPm::resample`], which the
    /// VMM calls once the interrupt controller is restored.
    pub fn restore(&mut self, s: &PmState) -> Result<(), StateError> {
        self.sts = s.sts;
        self.en = s.en & EN_WRITABLE;
        self.cnt = s.cnt & CNT_STORED;
        self.timer_base = Duration::from_nanos(s.timer_nanos).saturating_sub((self.clock)());
        Ok(())
    }
}

impl BusDevice for AcpiPm {
    // Registers are little-endian byte sequences; an access of any width at any offset is
    // the same bytes one at a time, except that the timer is sampled once per access so a
    // 32-bit read cannot tear across a carry.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let timer = self.timer();
        read_bytes(offset, data, |o| self.read_byte(o, timer));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let was_asserted = self.sci_asserted();
        write_bytes(offset, data, |o, b| self.write_byte(o, b));
        // Enabling an event that is already pending asserts the SCI.
        if !was_asserted {
            self.raise_sci();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const STS: u64 = STS_LO;
    const EN: u64 = EN_LO;
    const CNT: u64 = CNT_LO;
    const TMR: u64 = TMR_FIRST;

    struct Rig {
        pm: AcpiPm,
        exit: ExitSignal,
        sci: EventFd,
        nanos: Arc<AtomicU64>,
    }

    fn rig() -> Rig {
        let exit = ExitSignal::new().unwrap();
        let sci = EventFd::new(EFD_NONBLOCK).unwrap();
        let nanos = Arc::new(AtomicU64::new(0));
        let n = nanos.clone();
        let pm = AcpiPm::with_clock(
            exit.clone(),
            sci.try_clone().unwrap(),
            Box::new(move || Duration::from_nanos(n.load(Ordering::SeqCst))),
        );
        Rig {
            pm,
            exit,
            sci,
            nanos,
        }
    }

    fn inw(pm: &mut AcpiPm, offset: u64) -> u16 {
        let mut b = [0; 2];
        pm.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    fn outw(pm: &mut AcpiPm, offset: u64, v: u16) {
        pm.write(offset, &v.to_le_bytes());
    }

    fn inl(pm: &mut AcpiPm, offset: u64) -> u32 {
        let mut b = [0; 4];
        pm.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn pulses(sci: &EventFd) -> u64 {
        sci.read().unwrap_or(0)
    }

    #[test]
    fn state_round_trips_and_the_timer_continues() {
        let mut r = rig();
        outw(&mut r.pm, EN, PWRBTN);
        r.pm.press_power_button();
        r.nanos.store(2_000_000_000, Ordering::SeqCst);
        let before = inl(&mut r.pm, TMR);
        let state = r.pm.state();
        let mut other = rig();
        other.nanos.store(1_000, Ordering::SeqCst);
        other.pm.restore(&state).unwrap();
        assert_eq!(other.pm.state(), state);
        assert_eq!(inw(&mut other.pm, STS), PWRBTN);
        assert_eq!(
            inl(&mut other.pm, TMR),
            before,
            "the timer goes on from its value"
        );
        other.pm.resample();
        assert_eq!(
            pulses(&other.sci),
            1,
            "the pending power button asserts the SCI"
        );
    }

    #[test]
    fn layout_matches_platform_doc() {
        assert_eq!(
            (PM1A_EVT, PM1A_CNT, PM_TMR, RESET_PORT),
            (0x600, 0x604, 0x608, 0x60c)
        );
        assert_eq!(PM_PORT_LEN, 13);
        assert_eq!((RESET_VALUE, S5_SLP_TYP, SCI_IRQ), (6, 5, 9));
    }

    #[test]
    fn power_button_as_linux_handles_it() {
        let mut r = rig();
        // Not enabled yet: status is visible, no SCI.
        r.pm.press_power_button();
        assert_eq!(pulses(&r.sci), 0);
        assert_eq!(inw(&mut r.pm, STS), PWRBTN);
        // Clearing stale status, then enabling (acpi_enable_event).
        outw(&mut r.pm, STS, PWRBTN);
        assert_eq!(inw(&mut r.pm, STS), 0);
        outw(&mut r.pm, EN, PWRBTN);
        assert_eq!(inw(&mut r.pm, EN), PWRBTN);
        assert_eq!(pulses(&r.sci), 0);
        r.pm.press_power_button();
        assert_eq!(pulses(&r.sci), 1);
        // The handler has not cleared it yet: a resample re-asserts.
        r.pm.resample();
        assert_eq!(pulses(&r.sci), 1);
        // Writing zeros clears nothing.
        outw(&mut r.pm, STS, 0);
        assert_eq!(inw(&mut r.pm, STS), PWRBTN);
        outw(&mut r.pm, STS, 0xffff);
        assert_eq!(inw(&mut r.pm, STS), 0);
        r.pm.resample();
        assert_eq!(pulses(&r.sci), 0);
    }

    #[test]
    fn enabling_a_pending_event_raises_sci() {
        let mut r = rig();
        r.pm.press_power_button();
        outw(&mut r.pm, EN, PWRBTN);
        assert_eq!(pulses(&r.sci), 1);
        // Reserved enable bits read back as zero.
        outw(&mut r.pm, EN, 0xffff);
        assert_eq!(inw(&mut r.pm, EN), EN_WRITABLE);
        assert_eq!(pulses(&r.sci), 0, "already asserted: no new edge");
    }

    #[test]
    fn s5_powers_off_like_linux() {
        let mut r = rig();
        assert_eq!(inw(&mut r.pm, CNT) & SCI_EN, SCI_EN);
        // acpi_hw_legacy_sleep: SLP_TYP first, then SLP_TYP | SLP_EN.
        let typ = u16::from(S5_SLP_TYP) << SLP_TYP_SHIFT;
        outw(&mut r.pm, CNT, typ | SCI_EN);
        assert_eq!(r.exit.pending(), None);
        assert_eq!(inw(&mut r.pm, CNT), typ | SCI_EN, "SLP_TYP reads back");
        outw(&mut r.pm, CNT, typ | SLP_EN | SCI_EN);
        assert_eq!(r.exit.pending(), Some(ExitRequest::Poweroff));
        assert_eq!(inw(&mut r.pm, CNT) & SLP_EN, 0, "SLP_EN is write-only");
    }

    #[test]
    fn s5_by_byte_write() {
        let mut r = rig();
        let v = (u16::from(S5_SLP_TYP) << SLP_TYP_SHIFT) | SLP_EN;
        r.pm.write(CNT_HI, &[(v >> 8) as u8]);
        assert_eq!(r.exit.pending(), Some(ExitRequest::Poweroff));
    }

    #[test]
    fn other_sleep_states_are_ignored() {
        let mut r = rig();
        for typ in (0..8).filter(|&t| t != S5_SLP_TYP) {
            outw(&mut r.pm, CNT, (u16::from(typ) << SLP_TYP_SHIFT) | SLP_EN);
        }
        // SCI_EN can't be cleared.
        outw(&mut r.pm, CNT, 0);
        assert_eq!(inw(&mut r.pm, CNT), SCI_EN);
        assert_eq!(r.exit.pending(), None);
    }

    #[test]
    fn reset_register() {
        let mut r = rig();
        r.pm.write(RESET, &[0x07]);
        r.pm.write(RESET, &[0x00]);
        assert_eq!(r.exit.pending(), None);
        r.pm.write(RESET, &[RESET_VALUE]);
        assert_eq!(r.exit.pending(), Some(ExitRequest::Reboot));
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_and_wraps() {
        let mut r = rig();
        assert_eq!(inl(&mut r.pm, TMR), 0);
        r.nanos.store(1_000_000_000, Ordering::SeqCst);
        assert_eq!(inl(&mut r.pm, TMR), 3_579_545);
        // 5 s = 17_897_725 ticks: past 2^24.
        r.nanos.store(5_000_000_000, Ordering::SeqCst);
        assert_eq!(inl(&mut r.pm, TMR), 17_897_725 & PM_TIMER_MASK);
        let mut b = [0u8; 1];
        r.pm.read(TMR + 2, &mut b);
        assert_eq!(b[0], ((17_897_725 & PM_TIMER_MASK) >> 16) as u8);
        r.pm.read(TMR + 3, &mut b);
        assert_eq!(b[0], 0, "upper byte of a 24-bit timer");
        // Writes do nothing.
        r.pm.write(TMR, &[0; 4]);
        assert_eq!(inl(&mut r.pm, TMR), 17_897_725 & PM_TIMER_MASK);
    }

    #[test]
    fn real_clock_is_monotonic() {
        let exit = ExitSignal::new().unwrap();
        let mut pm = AcpiPm::new(exit, EventFd::new(EFD_NONBLOCK).unwrap());
        let a = inl(&mut pm, TMR);
        std::thread::sleep(Duration::from_millis(2));
        let b = inl(&mut pm, TMR);
        assert!(b.wrapping_sub(a) & PM_TIMER_MASK > 0);
    }

    #[test]
    fn power_button_listener_is_visible() {
        let mut r = rig();
        assert!(!r.pm.power_button_enabled());
        outw(&mut r.pm, EN, PWRBTN);
        assert!(r.pm.power_button_enabled());
    }

    #[test]
    fn defined_enable_bits_read_back_and_never_raise_sci() {
        let mut r = rig();
        // ACPICA enables the global-lock and RTC events and checks they stuck.
        let gbl_rtc = (1 << 5) | (1 << 10);
        outw(&mut r.pm, EN, gbl_rtc | 0x8000);
        assert_eq!(inw(&mut r.pm, EN), gbl_rtc, "reserved bit 15 is dropped");
        assert!(r.sci.read().is_err(), "no event pending, no SCI");
    }

    #[test]
    fn odd_widths_and_offsets() {
        let mut r = rig();
        r.pm.press_power_button();
        outw(&mut r.pm, EN, PWRBTN);
        // One dword over PM1_STS and PM1_EN.
        assert_eq!(
            inl(&mut r.pm, STS),
            u32::from(PWRBTN) | u32::from(PWRBTN) << 16
        );
        // The gap between PM1_CNT and the timer.
        assert_eq!(inw(&mut r.pm, 6), 0xffff);
        let mut q = [0u8; 8];
        r.pm.read(8, &mut q);
        assert_eq!(q[5..], [0xff; 3], "past the reset register");
        r.pm.read(u64::MAX - 3, &mut q);
        assert_eq!(q, [0xff; 8]);
        r.pm.write(u64::MAX, &[RESET_VALUE; 8]);
        r.pm.write(PM_PORT_LEN, &[RESET_VALUE]);
        assert_eq!(r.exit.pending(), None);
    }

    #[test]
    fn fuzz_registers() {
        let mut r = rig();
        let mut rng = XorShift::new(0x600);
        for i in 0..100_000u32 {
            let x = rng.next();
            let offset = rng.offset(PM_PORT_LEN + 2);
            let mut data = [0u8; 8];
            let width = rng.width();
            if x & 1 == 0 {
                r.pm.read(offset, &mut data[..width]);
            } else {
                rng.fill(&mut data);
                r.pm.write(offset, &data[..width]);
            }
            if i % 97 == 0 {
                r.pm.press_power_button();
                r.pm.resample();
            }
            r.nanos.fetch_add(x % 1_000_000, Ordering::SeqCst);
            assert_eq!(inw(&mut r.pm, CNT) & SCI_EN, SCI_EN);
            assert_eq!(r.pm.sts & !PWRBTN, 0, "only the power button sets status");
            assert_eq!(r.pm.en & !EN_WRITABLE, 0);
            assert_eq!(inl(&mut r.pm, TMR) & !PM_TIMER_MASK, 0);
            let _ = r.sci.read();
        }
    }
}
