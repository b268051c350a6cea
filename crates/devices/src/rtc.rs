//! MC146818 CMOS RTC and NVRAM at ports 0x70/0x71 (spec §5.4, §5.8, F-HW-06).
//!
//! The clock is not a counter we advance: every read derives the time from the host's
//! realtime clock plus an offset, so it keeps ticking while the VM is paused or descheduled
//! and needs no timer thread. A guest that sets the time only changes the offset.
//!
//! Interrupts: update-ended and alarm interrupts are supported; their flags are computed
//! lazily on each access and by [`Rtc::tick`], which the VMM calls periodically so that a
//! guest waiting for IRQ 8 gets it without touching the RTC. The periodic interrupt (PIE,
//! register A rate) is not emulated: Linux and OpenBSD keep time with the PIT, LAPIC timer or
//! kvm-clock, and ticking it would need a host timer at up to 8 kHz.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{read_bytes, write_bytes, BusDevice};
use crate::state::{check_len, StateError};

/// First I/O port: the index register; the data register follows it.
pub const RTC_BASE: u16 = 0x70;
/// Number of ports the RTC decodes.
pub const RTC_PORT_LEN: u64 = 2;
/// ISA IRQ of the RTC.
pub const RTC_IRQ: u32 = 8;
/// Bytes of CMOS memory, clock registers included.
pub const CMOS_SIZE: usize = 128;

const INDEX_PORT: u64 = 0;
const DATA_PORT: u64 = 1;
/// Bit 7 of the index port gates NMI on real boards; there is nothing to gate here.
const INDEX_MASK: u8 = 0x7f;

const SECONDS: u8 = 0x00;
const SECONDS_ALARM: u8 = 0x01;
const MINUTES: u8 = 0x02;
const MINUTES_ALARM: u8 = 0x03;
const HOURS: u8 = 0x04;
const HOURS_ALARM: u8 = 0x05;
const DAY_OF_WEEK: u8 = 0x06;
const DAY_OF_MONTH: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Where QEMU, SeaBIOS and the ACPI FADT `CENTURY` field put the century.
pub const CMOS_CENTURY: u8 = 0x32;

// Memory-size registers the BIOS reads, in the QEMU/SeaBIOS layout.
/// Conventional memory in KiB (2 bytes).
pub const CMOS_BASE_MEM: u8 = 0x15;
/// Memory above 1 MiB in KiB, saturating (2 bytes).
pub const CMOS_EXT_MEM: u8 = 0x17;
/// Copy of [`CMOS_EXT_MEM`] (2 bytes).
pub const CMOS_EXT_MEM2: u8 = 0x30;
/// Memory between 16 MiB and 4 GiB in 64 KiB units, saturating (2 bytes).
pub const CMOS_MEM_ABOVE_16M: u8 = 0x34;
/// Memory above 4 GiB in 64 KiB units, saturating (3 bytes).
pub const CMOS_MEM_ABOVE_4G: u8 = 0x5b;

const A_UIP: u8 = 0x80;
/// 32.768 kHz time base, 1024 Hz rate: the value firmware programs.
const A_DEFAULT: u8 = 0x26;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
/// Valid RAM and time: the battery never runs down.
const D_VRT: u8 = 0x80;
const HOUR_PM: u8 = 0x80;
/// An alarm byte with both top bits set matches every value.
const ALARM_DONT_CARE: u8 = 0xc0;

/// The update cycle takes 244 µs at the end of each second; UIP is set that long before the
/// registers change, which is what guests poll before reading the time.
const UPDATE_CYCLE: Duration = Duration::from_micros(244);
/// The alarm pattern (hour, minute, second) repeats daily: a gap longer than this between
/// accesses certainly passed a match, so scanning more seconds tells nothing new.
const ALARM_SCAN_LIMIT_SECS: i64 = 86_400;

const SECS_PER_DAY: i64 = 86_400;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// 640 KiB of conventional memory below the legacy hole (docs/platform.md).
const BASE_MEM_KIB: u16 = 640;
const ABOVE_16M_UNIT: u64 = 64 * KIB;
const ABOVE_4G_UNIT: u64 = 64 * KIB;
/// The two-byte memory registers saturate at this value.
const MAX_U16_FIELD: u64 = 0xffff;
/// 0x5b-0x5d is a three-byte field.
const MAX_U24_FIELD: u64 = 0xff_ffff;

/// The host's wall clock as time since the Unix epoch; injectable so tests control time.
type WallClock = Box<dyn Fn() -> Duration + Send>;

fn host_realtime() -> Duration {
    // A host clock before 1970 is misconfigured; the epoch is as good an answer as any.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The CMOS RTC/NVRAM. Map it at [`RTC_BASE`] with length [`RTC_PORT_LEN`].
pub struct Rtc {
    index: u8,
    /// NVRAM, plus the time registers as written while SET is held.
    cmos: [u8; CMOS_SIZE],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// Last guest second whose update-ended and alarm events are already in register C.
    last_update: i64,
    irq: Option<EventFd>,
    clock: WallClock,
}

impl Rtc {
    /// An RTC showing host UTC, with the memory registers filled for a VM with
    /// `mem_below_4g` bytes of RAM address space below 4 GiB (the legacy hole included, as
    /// docs/platform.md counts it) and `mem_above_4g` bytes above. `irq`, if given, is pulsed
    /// on IRQ 8 (edge) when an enabled update-ended or alarm event occurs.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64, irq: Option<EventFd>) -> Self {
        Self::with_clock(mem_below_4g, mem_above_4g, irq, Box::new(host_realtime))
    }

    fn with_clock(
        mem_below_4g: u64,
        mem_above_4g: u64,
        irq: Option<EventFd>,
        clock: WallClock,
    ) -> Self {
        let mut rtc = Rtc {
            index: 0,
            cmos: [0; CMOS_SIZE],
            offset: 0,
            last_update: 0,
            irq,
            clock,
        };
        rtc.cmos[REG_A as usize] = A_DEFAULT;
        rtc.cmos[REG_B as usize] = B_24H;
        rtc.set_u16(CMOS_BASE_MEM, BASE_MEM_KIB);
        let ext_kib = (mem_below_4g.saturating_sub(MIB) / KIB).min(MAX_U16_FIELD) as u16;
        rtc.set_u16(CMOS_EXT_MEM, ext_kib);
        rtc.set_u16(CMOS_EXT_MEM2, ext_kib);
        let above_16m =
            (mem_below_4g.saturating_sub(16 * MIB) / ABOVE_16M_UNIT).min(MAX_U16_FIELD) as u16;
        rtc.set_u16(CMOS_MEM_ABOVE_16M, above_16m);
        let above_4g = (mem_above_4g / ABOVE_4G_UNIT).min(MAX_U24_FIELD);
        let base = CMOS_MEM_ABOVE_4G as usize;
        rtc.cmos[base..base + 3].copy_from_slice(&above_4g.to_le_bytes()[..3]);
        rtc.last_update = rtc.guest_now().secs;
        rtc
    }

    /// Deliver update-ended and alarm interrupts that came due since the last access. Call it
    /// a few times a second; it is cheap when nothing is enabled.
    pub fn tick(&mut self) {
        self.update_flags();
    }

    fn set_u16(&mut self, reg: u8, v: u16) {
        let r = reg as usize;
        self.cmos[r..r + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn reg_b(&self) -> u8 {
        self.cmos[REG_B as usize]
    }

    fn guest_now(&self) -> GuestTime {
        let host = (self.clock)();
        let secs = i64::try_from(host.as_secs()).unwrap_or(i64::MAX);
        GuestTime {
            secs: secs.saturating_add(self.offset),
            nanos: host.subsec_nanos(),
        }
    }

    fn format(&self) -> Format {
        let b = self.reg_b();
        Format {
            binary: b & B_DM_BINARY != 0,
            h24: b & B_24H != 0,
        }
    }

    /// Fold every update-ended and alarm event since the last call into register C.
    fn update_flags(&mut self) {
        let now = self.guest_now().secs;
        // While SET is held the chip does no update cycles; a clock that moved backwards
        // (time set into the past) has no events to report.
        if self.reg_b() & B_SET != 0 || now <= self.last_update {
            self.last_update = now;
            return;
        }
        let mut flags = C_UF;
        let fmt = self.format();
        let alarm = [
            self.cmos[HOURS_ALARM as usize],
            self.cmos[MINUTES_ALARM as usize],
            self.cmos[SECONDS_ALARM as usize],
        ];
        let first = (self.last_update + 1).max(now - ALARM_SCAN_LIMIT_SECS + 1);
        if (first..=now).any(|t| fmt.alarm_matches(alarm, t)) {
            flags |= C_AF;
        }
        self.last_update = now;
        self.cmos[REG_C as usize] |= flags;
        self.update_irqf();
    }

    /// IRQF follows the enabled flags; its rising edge is the interrupt.
    fn update_irqf(&mut self) {
        let b = self.reg_b();
        let c = self.cmos[REG_C as usize];
        let enabled = (c & C_UF != 0 && b & B_UIE != 0)
            || (c & C_AF != 0 && b & B_AIE != 0)
            || (c & C_PF != 0 && b & B_PIE != 0);
        if enabled && c & C_IRQF == 0 {
            self.cmos[REG_C as usize] = c | C_IRQF;
            if let Some(irq) = &self.irq {
                // A full counter still leaves the fd readable: nothing is lost.
                let _ = irq.write(1);
            }
        }
    }

    /// Copy the running time into the time registers, in the current format.
    fn latch_time(&mut self) {
        let t = self.guest_now().secs;
        let fmt = self.format();
        for (reg, v) in fmt.encode_time(t) {
            self.cmos[reg as usize] = v;
        }
    }

    /// Make the time registers' contents the running time. Registers holding nonsense leave
    /// the clock as it was, as a guest can write anything there.
    fn commit_time(&mut self) {
        let Some(t) = self.format().decode_time(&self.cmos) else {
            return;
        };
        let host = i64::try_from((self.clock)().as_secs()).unwrap_or(i64::MAX);
        self.offset = t.saturating_sub(host);
        self.last_update = t;
    }

    fn read_data(&mut self) -> u8 {
        let set = self.reg_b() & B_SET != 0;
        match self.index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR
            | CMOS_CENTURY
                if !set =>
            {
                let t = self.guest_now().secs;
                let fmt = self.format();
                fmt.encode_time(t)
                    .into_iter()
                    .find(|&(reg, _)| reg == self.index)
                    .map_or(0, |(_, v)| v)
            }
            REG_A => {
                let now = self.guest_now();
                let updating =
                    !set && now.nanos >= (Duration::from_secs(1) - UPDATE_CYCLE).subsec_nanos();
                self.cmos[REG_A as usize] | if updating { A_UIP } else { 0 }
            }
            REG_C => std::mem::take(&mut self.cmos[REG_C as usize]),
            REG_D => D_VRT,
            i => self.cmos[i as usize],
        }
    }

    fn write_data(&mut self, v: u8) {
        let set = self.reg_b() & B_SET != 0;
        match self.index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR
            | CMOS_CENTURY => {
                if set {
                    self.cmos[self.index as usize] = v;
                } else {
                    // A write to a running clock changes one field and the clock runs on.
                    self.latch_time();
                    self.cmos[self.index as usize] = v;
                    self.commit_time();
                }
            }
            REG_A => self.cmos[REG_A as usize] = v & !A_UIP,
            REG_B => {
                // The data sheet: setting SET clears UIE.
                let v = if v & B_SET != 0 { v & !B_UIE } else { v };
                self.cmos[REG_B as usize] = v;
                match (set, v & B_SET != 0) {
                    (false, true) => self.latch_time(),
                    (true, false) => self.commit_time(),
                    _ => {}
                }
                self.update_irqf();
            }
            REG_C | REG_D => {}
            i => self.cmos[i as usize] = v,
        }
    }

    fn read_port(&mut self, port: u64) -> u8 {
        match port {
            DATA_PORT => {
                self.update_flags();
                self.read_data()
            }
            // The index register is write-only.
            _ => 0xff,
        }
    }

    fn write_port(&mut self, port: u64, v: u8) {
        match port {
            INDEX_PORT => self.index = v & INDEX_MASK,
            DATA_PORT => {
                self.update_flags();
                self.write_data(v);
            }
            _ => {}
        }
    }
}

/// The RTC's index register, CMOS bytes and clock offset, for a snapshot
/// ([`crate::state`]). The clock is kept as an offset from the host's wall clock, so a
/// restored guest's RTC shows the time of the restore, as a real clock battery would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcState {
    pub index: u8,
    /// All [`CMOS_SIZE`] bytes.
    pub cmos: Vec<u8>,
    /// Guest time minus host time, in seconds.
    pub offset: i64,
    /// Last guest second whose events are in register C.
    pub last_update: i64,
}

impl Rtc {
    /// The guest-visible state.
    pub fn state(&self) -> RtcState {
        RtcState {
            index: self.index,
            cmos: self.cmos.to_vec(),
            offset: self.offset,
            last_update: self.last_update,
        }
    }

    /// Load `s` (the memory-size registers come with it, as the guest last saw them).
    pub fn restore(&mut self, s: &RtcState) -> Result<(), StateError> {
        check_len("RTC", "CMOS", s.cmos.len(), CMOS_SIZE)?;
        self.index = s.index & INDEX_MASK;
        self.cmos.copy_from_slice(&s.cmos);
        self.offset = s.offset;
        self.last_update = s.last_update;
        Ok(())
    }
}

impl BusDevice for Rtc {
    // Wide accesses split into byte accesses at consecutive ports, as on the ISA bus; some
    // firmware sets index and data with a single 16-bit OUT.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, data, |port| self.read_port(port));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, data, |port, b| self.write_port(port, b));
    }
}

struct GuestTime {
    secs: i64,
    nanos: u32,
}

/// How register B says values are encoded.
#[derive(Clone, Copy)]
struct Format {
    binary: bool,
    h24: bool,
}

impl Format {
    fn encode(self, v: u32) -> u8 {
        let v = v % 100;
        if self.binary {
            v as u8
        } else {
            (((v / 10) << 4) | (v % 10)) as u8
        }
    }

    fn decode(self, v: u8) -> Option<u32> {
        if self.binary {
            return Some(u32::from(v));
        }
        let (hi, lo) = (v >> 4, v & 0x0f);
        (hi <= 9 && lo <= 9).then_some(u32::from(hi) * 10 + u32::from(lo))
    }

    fn encode_hour(self, h: u32) -> u8 {
        if self.h24 {
            return self.encode(h);
        }
        let h12 = match h % 12 {
            0 => 12,
            x => x,
        };
        self.encode(h12) | if h >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(self, v: u8) -> Option<u32> {
        if self.h24 {
            return self.decode(v).filter(|&h| h < 24);
        }
        let h12 = self.decode(v & !HOUR_PM).filter(|h| (1..=12).contains(h))?;
        Some(h12 % 12 + if v & HOUR_PM != 0 { 12 } else { 0 })
    }

    /// The clock registers for Unix time `t`.
    fn encode_time(self, t: i64) -> [(u8, u8); 8] {
        let days = t.div_euclid(SECS_PER_DAY);
        let sod = t.rem_euclid(SECS_PER_DAY) as u32;
        let (y, m, d) = civil_from_days(days);
        // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
        let dow = (days + 4).rem_euclid(7) as u32 + 1;
        let y = y.rem_euclid(10_000) as u32;
        [
            (SECONDS, self.encode(sod % 60)),
            (MINUTES, self.encode(sod / 60 % 60)),
            (HOURS, self.encode_hour(sod / 3600)),
            (DAY_OF_WEEK, self.encode(dow)),
            (DAY_OF_MONTH, self.encode(d)),
            (MONTH, self.encode(m)),
            (YEAR, self.encode(y % 100)),
            (CMOS_CENTURY, self.encode(y / 100)),
        ]
    }

    /// Unix time from the clock registers in `cmos`, if they hold a valid time.
    fn decode_time(self, cmos: &[u8; CMOS_SIZE]) -> Option<i64> {
        let r = |reg: u8| cmos[reg as usize];
        let century = self.decode(r(CMOS_CENTURY)).filter(|&c| c < 100)?;
        let year = self.decode(r(YEAR)).filter(|&y| y < 100)?;
        let month = self.decode(r(MONTH)).filter(|m| (1..=12).contains(m))?;
        let day = self
            .decode(r(DAY_OF_MONTH))
            .filter(|d| (1..=31).contains(d))?;
        let hour = self.decode_hour(r(HOURS))?;
        let min = self.decode(r(MINUTES)).filter(|&m| m < 60)?;
        let sec = self.decode(r(SECONDS)).filter(|&s| s < 60)?;
        let days = days_from_civil(i64::from(century * 100 + year), month, day);
        Some(days * SECS_PER_DAY + i64::from(hour * 3600 + min * 60 + sec))
    }

    /// Whether the alarm bytes (hour, minute, second) match Unix time `t`.
    fn alarm_matches(self, alarm: [u8; 3], t: i64) -> bool {
        let sod = t.rem_euclid(SECS_PER_DAY) as u32;
        let now = [
            self.encode_hour(sod / 3600),
            self.encode(sod / 60 % 60),
            self.encode(sod % 60),
        ];
        alarm
            .iter()
            .zip(now)
            .all(|(&a, n)| a & ALARM_DONT_CARE == ALARM_DONT_CARE || a == n)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days_from_civil): years
/// start in March so the leap day is last, and 400-year eras repeat exactly.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// 2026-11-27 23:59:58 UTC, a Friday.
    const T0: u64 = 1_795_823_998;
    const GIB: u64 = 1024 * MIB;

    /// A host clock the test moves by hand, in nanoseconds since the epoch.
    #[derive(Clone)]
    struct FakeClock(Arc<AtomicU64>);
    impl FakeClock {
        fn advance(&self, d: Duration) {
            self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    fn rtc_at(t: u64, irq: Option<EventFd>) -> (Rtc, FakeClock) {
        let clock = FakeClock(Arc::new(AtomicU64::new(t * 1_000_000_000)));
        let c = clock.clone();
        let rtc = Rtc::with_clock(
            2 * GIB,
            0,
            irq,
            Box::new(move || Duration::from_nanos(c.0.load(Ordering::SeqCst))),
        );
        (rtc, clock)
    }

    fn cmos_read(rtc: &mut Rtc, reg: u8) -> u8 {
        rtc.write(INDEX_PORT, &[reg]);
        let mut b = [0];
        rtc.read(DATA_PORT, &mut b);
        b[0]
    }

    fn cmos_write(rtc: &mut Rtc, reg: u8, v: u8) {
        rtc.write(INDEX_PORT, &[reg]);
        rtc.write(DATA_PORT, &[v]);
    }

    /// (century, year, month, day, hour, min, sec) as the guest reads them.
    fn read_clock(rtc: &mut Rtc) -> [u8; 7] {
        [
            cmos_read(rtc, CMOS_CENTURY),
            cmos_read(rtc, YEAR),
            cmos_read(rtc, MONTH),
            cmos_read(rtc, DAY_OF_MONTH),
            cmos_read(rtc, HOURS),
            cmos_read(rtc, MINUTES),
            cmos_read(rtc, SECONDS),
        ]
    }

    #[test]
    fn state_round_trips_and_a_short_cmos_is_refused() {
        let (mut rtc, clock) = rtc_at(T0, None);
        cmos_write(&mut rtc, 0x40, 0xab);
        cmos_write(&mut rtc, YEAR, 0x27);
        let state = rtc.state();
        let (mut other, other_clock) = rtc_at(T0, None);
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        clock.advance(Duration::from_secs(5));
        other_clock.advance(Duration::from_secs(5));
        assert_eq!(read_clock(&mut other), read_clock(&mut rtc));
        assert_eq!(cmos_read(&mut other, 0x40), 0xab);
        let mut short = state;
        short.cmos.pop();
        assert!(other.restore(&short).is_err());
    }

    #[test]
    fn civil_date_conversion() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 27), 20_784);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for z in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn reads_host_time_in_bcd_and_ticks() {
        let (mut rtc, clock) = rtc_at(T0, None);
        assert_eq!(
            read_clock(&mut rtc),
            [0x20, 0x26, 0x11, 0x27, 0x23, 0x59, 0x58]
        );
        assert_eq!(cmos_read(&mut rtc, DAY_OF_WEEK), 6, "Friday");
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            read_clock(&mut rtc),
            [0x20, 0x26, 0x11, 0x28, 0x00, 0x00, 0x00]
        );
        assert_eq!(cmos_read(&mut rtc, DAY_OF_WEEK), 7);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let (mut rtc, _) = rtc_at(T0, None);
        cmos_write(&mut rtc, REG_B, B_DM_BINARY);
        assert_eq!(read_clock(&mut rtc), [20, 26, 11, 27, 11 | HOUR_PM, 59, 58]);
        cmos_write(&mut rtc, REG_B, 0);
        assert_eq!(cmos_read(&mut rtc, HOURS), 0x11 | HOUR_PM);
        let (mut rtc, _) = rtc_at(T0 - 23 * 3600, None);
        cmos_write(&mut rtc, REG_B, 0);
        assert_eq!(cmos_read(&mut rtc, HOURS), 0x12, "00:59 is 12 AM");
    }

    #[test]
    fn uip_is_set_just_before_each_update() {
        let (mut rtc, clock) = rtc_at(T0, None);
        assert_eq!(cmos_read(&mut rtc, REG_A), A_DEFAULT);
        clock.advance(Duration::from_micros(999_900));
        assert_eq!(cmos_read(&mut rtc, REG_A), A_DEFAULT | A_UIP);
        clock.advance(Duration::from_micros(200));
        assert_eq!(cmos_read(&mut rtc, REG_A), A_DEFAULT);
        assert_eq!(cmos_read(&mut rtc, REG_D), D_VRT);
    }

    #[test]
    fn guest_sets_time_like_linux() {
        let (mut rtc, clock) = rtc_at(T0, None);
        // mc146818_set_time: SET, write BCD fields, release SET.
        let b = cmos_read(&mut rtc, REG_B);
        cmos_write(&mut rtc, REG_B, b | B_SET);
        for (reg, v) in [
            (YEAR, 0x99),
            (MONTH, 0x12),
            (DAY_OF_MONTH, 0x31),
            (HOURS, 0x23),
            (MINUTES, 0x59),
            (SECONDS, 0x30),
            (CMOS_CENTURY, 0x19),
        ] {
            cmos_write(&mut rtc, reg, v);
        }
        // Frozen while SET is held.
        clock.advance(Duration::from_secs(5));
        assert_eq!(cmos_read(&mut rtc, SECONDS), 0x30);
        cmos_write(&mut rtc, REG_B, b);
        assert_eq!(
            read_clock(&mut rtc),
            [0x19, 0x99, 0x12, 0x31, 0x23, 0x59, 0x30]
        );
        // And it runs from there.
        clock.advance(Duration::from_secs(31));
        assert_eq!(
            read_clock(&mut rtc),
            [0x20, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01]
        );
    }

    #[test]
    fn writing_a_running_field_moves_the_clock() {
        let (mut rtc, _) = rtc_at(T0, None);
        cmos_write(&mut rtc, MINUTES, 0x10);
        assert_eq!(
            read_clock(&mut rtc),
            [0x20, 0x26, 0x11, 0x27, 0x23, 0x10, 0x58]
        );
    }

    #[test]
    fn invalid_time_is_ignored() {
        let (mut rtc, _) = rtc_at(T0, None);
        cmos_write(&mut rtc, REG_B, B_24H | B_SET);
        cmos_write(&mut rtc, MONTH, 0x13);
        cmos_write(&mut rtc, REG_B, B_24H);
        assert_eq!(
            read_clock(&mut rtc),
            [0x20, 0x26, 0x11, 0x27, 0x23, 0x59, 0x58]
        );
        cmos_write(&mut rtc, SECONDS, 0x5a);
        assert_eq!(cmos_read(&mut rtc, SECONDS), 0x58);
    }

    #[test]
    fn nvram_and_index_nmi_bit() {
        let (mut rtc, _) = rtc_at(T0, None);
        cmos_write(&mut rtc, 0x40 | 0x80, 0xab);
        assert_eq!(cmos_read(&mut rtc, 0x40), 0xab);
        let mut b = [0];
        rtc.read(INDEX_PORT, &mut b);
        assert_eq!(b, [0xff]);
        // outw 0x70: index then data in one access.
        rtc.write(INDEX_PORT, &[0x41, 0xcd]);
        assert_eq!(cmos_read(&mut rtc, 0x41), 0xcd);
        // C and D are read-only.
        cmos_write(&mut rtc, REG_D, 0);
        assert_eq!(cmos_read(&mut rtc, REG_D), D_VRT);
        cmos_write(&mut rtc, REG_C, 0xff);
        assert_eq!(cmos_read(&mut rtc, REG_C), 0);
    }

    fn mem_regs(below: u64, above: u64) -> [u8; 11] {
        let mut rtc = Rtc::new(below, above, None);
        let mut out = [0; 11];
        for (o, reg) in out.iter_mut().zip([
            0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5b, 0x5c, 0x5d,
        ]) {
            *o = cmos_read(&mut rtc, reg);
        }
        out
    }

    #[test]
    fn memory_size_registers() {
        // 128 MiB: 127 MiB extended = 0x1fc00 KiB -> capped; 112 MiB above 16 MiB = 0x700.
        assert_eq!(
            mem_regs(128 * MIB, 0),
            [0x80, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07, 0, 0, 0]
        );
        // 32 MiB: 31 MiB = 0x7c00 KiB; 16 MiB above 16 MiB = 0x100 units.
        assert_eq!(
            mem_regs(32 * MIB, 0),
            [0x80, 0x02, 0x00, 0x7c, 0x00, 0x7c, 0x00, 0x01, 0, 0, 0]
        );
        // 8 MiB: nothing above 16 MiB.
        assert_eq!(mem_regs(8 * MIB, 0)[6..8], [0, 0]);
        // 0xF000_0000 below 4 GiB, 4 GiB above (0x10000 units).
        let r = mem_regs(0xf000_0000, 4 * GIB);
        assert_eq!(r[6..11], [0x00, 0xef, 0x00, 0x00, 0x01]);
        // Above 4 GiB saturates at 24 bits.
        assert_eq!(mem_regs(GIB, u64::MAX)[8..11], [0xff; 3]);
    }

    #[test]
    fn update_ended_interrupt() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (mut rtc, clock) = rtc_at(T0, Some(irq.try_clone().unwrap()));
        cmos_write(&mut rtc, REG_B, B_24H | B_UIE);
        rtc.tick();
        assert!(irq.read().is_err(), "no second boundary yet");
        clock.advance(Duration::from_secs(1));
        rtc.tick();
        rtc.tick();
        assert_eq!(irq.read().unwrap(), 1, "one edge until C is read");
        assert_eq!(cmos_read(&mut rtc, REG_C), C_IRQF | C_UF);
        assert_eq!(cmos_read(&mut rtc, REG_C), 0);
        clock.advance(Duration::from_secs(1));
        rtc.tick();
        assert_eq!(irq.read().unwrap(), 1);
        // SET clears UIE.
        cmos_write(&mut rtc, REG_B, B_24H | B_UIE | B_SET);
        assert_eq!(cmos_read(&mut rtc, REG_B) & B_UIE, 0);
    }

    #[test]
    fn flags_without_enable_do_not_interrupt() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        // An hour before T0, so the all-zero alarm (midnight) does not match.
        let (mut rtc, clock) = rtc_at(T0 - 3600, Some(irq.try_clone().unwrap()));
        clock.advance(Duration::from_secs(3));
        rtc.tick();
        assert!(irq.read().is_err());
        // UF is visible for polling; enabling it then raises the line.
        cmos_write(&mut rtc, REG_B, B_24H | B_UIE);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(cmos_read(&mut rtc, REG_C), C_IRQF | C_UF);
    }

    #[test]
    fn alarm_interrupt() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (mut rtc, clock) = rtc_at(T0, Some(irq.try_clone().unwrap()));
        // Alarm at 00:00:10 the next day; any hour via don't-care would also match.
        cmos_write(&mut rtc, HOURS_ALARM, 0x00);
        cmos_write(&mut rtc, MINUTES_ALARM, 0x00);
        cmos_write(&mut rtc, SECONDS_ALARM, 0x10);
        cmos_write(&mut rtc, REG_B, B_24H | B_AIE);
        clock.advance(Duration::from_secs(5));
        rtc.tick();
        assert!(irq.read().is_err());
        assert_eq!(cmos_read(&mut rtc, REG_C), C_UF);
        // Passed over without an access in between: still reported.
        clock.advance(Duration::from_secs(20));
        rtc.tick();
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(cmos_read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
        // Every-second alarm.
        cmos_write(&mut rtc, HOURS_ALARM, ALARM_DONT_CARE);
        cmos_write(&mut rtc, MINUTES_ALARM, ALARM_DONT_CARE);
        cmos_write(&mut rtc, SECONDS_ALARM, ALARM_DONT_CARE);
        clock.advance(Duration::from_secs(1));
        assert_eq!(cmos_read(&mut rtc, REG_C), C_IRQF | C_AF | C_UF);
    }

    #[test]
    fn fuzz_registers() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let (mut rtc, clock) = rtc_at(T0, Some(irq.try_clone().unwrap()));
        let mut rng = XorShift::new(0x70);
        for i in 0..100_000u32 {
            let r = rng.next();
            let offset = rng.offset(RTC_PORT_LEN + 2);
            let mut data = [0u8; 8];
            let width = rng.width();
            if r & 1 == 0 {
                rtc.read(offset, &mut data[..width]);
            } else {
                rng.fill(&mut data);
                rtc.write(offset, &data[..width]);
            }
            if i % 7 == 0 {
                clock.advance(Duration::from_millis(r % 5000));
                rtc.tick();
            }
            assert!((rtc.index as usize) < CMOS_SIZE);
            let _ = irq.read();
        }
        // Whatever the guest did, releasing SET leaves a readable clock.
        cmos_write(&mut rtc, REG_B, B_24H);
        let c = read_clock(&mut rtc);
        assert!(c.iter().all(|&v| v >> 4 <= 9 && v & 0xf <= 9), "{c:x?}");
    }
}
