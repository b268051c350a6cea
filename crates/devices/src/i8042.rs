//! A keyboard controller with no keyboard or mouse behind it (F-HW-17).
//!
//! It exists for two reasons: guests reset the machine through it (command 0xFE pulses the
//! CPU reset line), and Linux's i8042 driver probes it and must get answers rather than wait
//! out its timeouts. Commands meant for a keyboard or mouse are dropped, so the guest's
//! drivers conclude nothing is attached. There is no IRQ 1: nothing here ever produces
//! unsolicited data, and controller command answers are polled.

use serde::{Deserialize, Serialize};

use crate::bus::{read_bytes, write_bytes, BusDevice};
use crate::exit::{ExitRequest, ExitSignal};
use crate::state::StateError;

/// The data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The status (read) / command (write) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// Map the controller at [`I8042_DATA_PORT`] with this length so one device sees both ports;
/// 0x61 between them is the PIT's speaker gate, which KVM's in-kernel PIT serves before it can
/// reach this device.
pub const I8042_PORT_LEN: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT + 1) as u64;
/// ISA IRQ of the keyboard port (not raised: see the module comment).
pub const I8042_IRQ: u32 = 1;
/// The reset-pulse command (docs/platform.md).
pub const I8042_CMD_RESET: u8 = 0xfe;

const DATA: u64 = 0;
const COMMAND: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT) as u64;

const STS_OBF: u8 = 0x01;
const STS_SYS: u8 = 0x04;
const STS_CMD: u8 = 0x08;
/// Keyboard not inhibited (the key lock is open).
const STS_UNLOCKED: u8 = 0x10;
const STS_AUX_DATA: u8 = 0x20;

const CTR_SYS: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;
/// After POST: keyboard translation on, no mouse, both interrupts off.
const CTR_DEFAULT: u8 = CTR_XLATE | CTR_AUX_DISABLE | CTR_SYS;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT: u8 = 0xc0;
const CMD_READ_OUTPUT: u8 = 0xd0;
const CMD_WRITE_OUTPUT: u8 = 0xd1;
const CMD_WRITE_KBD_OBUF: u8 = 0xd2;
const CMD_WRITE_AUX_OBUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
/// 0xF0-0xFF pulse the low output-port lines whose bits are clear in the command.
const CMD_PULSE_MASK: u8 = 0xf0;

const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// "Clock line stuck low": the answer that makes Linux decide there is no AUX port.
const PORT_TEST_NO_DEVICE: u8 = 0x01;
/// Output port bit 0 is the CPU reset line (active low); bit 1 is A20.
const OUTPUT_RESET_LINE: u8 = 0x01;
const OUTPUT_A20: u8 = 0x02;
/// Input port: keyboard not inhibited.
const INPUT_DEFAULT: u8 = 0x80;

/// Which data byte, if any, the previous command is waiting for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    WriteCtr,
    WriteOutput,
    WriteKbdObuf,
    WriteAuxObuf,
    WriteAux,
}

/// The i8042. Map it at [`I8042_DATA_PORT`] with length [`I8042_PORT_LEN`].
pub struct I8042 {
    ctr: u8,
    output_port: u8,
    /// The one-byte output buffer and whether its byte came from the AUX side.
    obuf: Option<(u8, bool)>,
    pending: Pending,
    last_was_command: bool,
    exit: ExitSignal,
}

impl I8042 {
    /// A controller that reports guest resets through `exit`.
    pub fn new(exit: ExitSignal) -> Self {
        I8042 {
            ctr: CTR_DEFAULT,
            output_port: OUTPUT_RESET_LINE | OUTPUT_A20,
            obuf: None,
            pending: Pending::None,
            last_was_command: false,
            exit,
        }
    }

    fn status(&self) -> u8 {
        let mut s = STS_UNLOCKED;
        if self.ctr & CTR_SYS != 0 {
            s |= STS_SYS;
        }
        if self.last_was_command {
            s |= STS_CMD;
        }
        match self.obuf {
            Some((_, true)) => s |= STS_OBF | STS_AUX_DATA,
            Some((_, false)) => s |= STS_OBF,
            None => {}
        }
        s
    }

    /// A new answer replaces an unread one: the real buffer is a single byte.
    fn answer(&mut self, v: u8) {
        self.obuf = Some((v, false));
    }

    fn command(&mut self, cmd: u8) {
        self.pending = Pending::None;
        match cmd {
            CMD_READ_CTR => self.answer(self.ctr),
            CMD_WRITE_CTR => self.pending = Pending::WriteCtr,
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.answer(PORT_TEST_NO_DEVICE),
            CMD_SELF_TEST => {
                self.ctr |= CTR_SYS;
                self.answer(SELF_TEST_OK);
            }
            CMD_KBD_TEST => self.answer(PORT_TEST_OK),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_INPUT => self.answer(INPUT_DEFAULT),
            CMD_READ_OUTPUT => self.answer(self.output_port),
            CMD_WRITE_OUTPUT => self.pending = Pending::WriteOutput,
            CMD_WRITE_KBD_OBUF => self.pending = Pending::WriteKbdObuf,
            CMD_WRITE_AUX_OBUF => self.pending = Pending::WriteAuxObuf,
            CMD_WRITE_AUX => self.pending = Pending::WriteAux,
            c if c & CMD_PULSE_MASK == CMD_PULSE_MASK && c & OUTPUT_RESET_LINE == 0 => {
                self.exit.request(ExitRequest::Reboot);
            }
            // Pulses sparing the reset line, vendor and undocumented commands: a real
            // controller ignores what it does not know, and so do we.
            _ => {}
        }
    }

    fn data(&mut self, v: u8) {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::WriteCtr => self.ctr = v,
            Pending::WriteOutput => {
                self.output_port = v;
                if v & OUTPUT_RESET_LINE == 0 {
                    self.exit.request(ExitRequest::Reboot);
                }
            }
            Pending::WriteKbdObuf => self.obuf = Some((v, false)),
            // Linux's AUX loopback probe: without the AUX flag in the status register it
            // concludes the loop failed and goes on to the AUX test, which reports no device.
            Pending::WriteAuxObuf => self.answer(v),
            // No keyboard and no mouse: bytes sent to them go nowhere and get no reply.
            Pending::WriteAux | Pending::None => {}
        }
    }
}

impl I8042 {
    fn read_port(&mut self, port: u64) -> u8 {
        match port {
            // An empty buffer reads back its stale byte on real hardware; 0 is as good.
            DATA => self.obuf.take().map_or(0, |(v, _)| v),
            COMMAND => self.status(),
            _ => 0xff,
        }
    }

    fn write_port(&mut self, port: u64, v: u8) {
        match port {
            DATA => {
                self.last_was_command = false;
                self.data(v);
            }
            COMMAND => {
                self.last_was_command = true;
                self.command(v);
            }
            _ => {}
        }
    }
}

/// The controller's registers, for a snapshot ([`crate::state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042State {
    pub ctr: u8,
    pub output_port: u8,
    /// The unread output byte and whether it came from the AUX side.
    pub obuf: Option<(u8, bool)>,
    /// The command whose data byte the controller waits for (`0x60`, `0xd1`-`0xd4`).
    pub pending: Option<u8>,
    pub last_was_command: bool,
}

impl Pending {
    fn command(self) -> Option<u8> {
        match self {
            Pending::None => None,
            Pending::WriteCtr => Some(CMD_WRITE_CTR),
            Pending::WriteOutput => Some(CMD_WRITE_OUTPUT),
            Pending::WriteKbdObuf => Some(CMD_WRITE_KBD_OBUF),
            Pending::WriteAuxObuf => Some(CMD_WRITE_AUX_OBUF),
            Pending::WriteAux => Some(CMD_WRITE_AUX),
        }
    }

    fn from_command(cmd: Option<u8>) -> Option<Self> {
        Some(match cmd {
            None => Pending::None,
            Some(CMD_WRITE_CTR) => Pending::WriteCtr,
            Some(CMD_WRITE_OUTPUT) => Pending::WriteOutput,
            Some(CMD_WRITE_KBD_OBUF) => Pending::WriteKbdObuf,
            Some(CMD_WRITE_AUX_OBUF) => Pending::WriteAuxObuf,
            Some(CMD_WRITE_AUX) => Pending::WriteAux,
            Some(_) => return None,
        })
    }
}

impl I8042 {
    /// The guest-visible state.
    pub fn state(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            output_port: self.output_port,
            obuf: self.obuf,
            pending: self.pending.command(),
            last_was_command: self.last_was_command,
        }
    }

    /// Load `s`. Restoring a cleared reset line does not reset the VM: only a guest write
    /// pulses it.
    pub fn restore(&mut self, s: &I8042State) -> Result<(), StateError> {
        let pending = Pending::from_command(s.pending).ok_or_else(|| {
            StateError::new(
                "i8042",
                format!("no command {:#04x?} takes a data byte", s.pending),
            )
        })?;
        self.ctr = s.ctr;
        self.output_port = s.output_port;
        self.obuf = s.obuf;
        self.pending = pending;
        self.last_was_command = s.last_was_command;
        Ok(())
    }
}

impl BusDevice for I8042 {
    // Wide accesses split into byte accesses at consecutive ports, as on the ISA bus.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, data, |port| self.read_port(port));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, data, |port, b| self.write_port(port, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;

    fn kbc() -> (I8042, ExitSignal) {
        let exit = ExitSignal::new().unwrap();
        (I8042::new(exit.clone()), exit)
    }

    fn status(k: &mut I8042) -> u8 {
        let mut b = [0];
        k.read(COMMAND, &mut b);
        b[0]
    }

    fn command(k: &mut I8042, cmd: u8) {
        k.write(COMMAND, &[cmd]);
    }

    /// Like Linux's i8042_wait_read + i8042_read_data.
    fn read_answer(k: &mut I8042) -> Option<u8> {
        if status(k) & STS_OBF == 0 {
            return None;
        }
        let mut b = [0];
        k.read(DATA, &mut b);
        Some(b[0])
    }

    #[test]
    fn state_round_trips_and_an_unknown_pending_command_is_refused() {
        let (mut k, exit) = kbc();
        command(&mut k, CMD_READ_CTR);
        command(&mut k, CMD_WRITE_OUTPUT);
        let state = k.state();
        assert_eq!(state.pending, Some(CMD_WRITE_OUTPUT));
        let (mut other, other_exit) = kbc();
        other.restore(&state).unwrap();
        assert_eq!(other.state(), state);
        assert_eq!(read_answer(&mut other), Some(CTR_DEFAULT));
        // The pending output-port write carries on: clearing the reset line resets.
        other.write(DATA, &[0]);
        assert_eq!(other_exit.pending(), Some(ExitRequest::Reboot));
        assert_eq!(exit.pending(), None);
        let mut bad = state;
        bad.pending = Some(0x42);
        assert!(other.restore(&bad).is_err());
    }

    #[test]
    fn idle_status_is_sane() {
        let (mut k, _) = kbc();
        let s = status(&mut k);
        assert_eq!(s & STS_OBF, 0, "no data");
        assert_eq!(s & 0x02, 0, "input buffer empty: ready for a command");
        assert_eq!(read_answer(&mut k), None);
    }

    #[test]
    fn reset_pulse_requests_reboot() {
        let (mut k, exit) = kbc();
        command(&mut k, 0xff); // pulse nothing
        assert_eq!(exit.pending(), None);
        command(&mut k, I8042_CMD_RESET);
        assert_eq!(exit.pending(), Some(ExitRequest::Reboot));
    }

    #[test]
    fn output_port_reset_line() {
        let (mut k, exit) = kbc();
        command(&mut k, CMD_READ_OUTPUT);
        assert_eq!(read_answer(&mut k), Some(OUTPUT_RESET_LINE | OUTPUT_A20));
        command(&mut k, CMD_WRITE_OUTPUT);
        k.write(DATA, &[0xdf]); // A20 gate on: no reset
        assert_eq!(exit.pending(), None);
        command(&mut k, CMD_WRITE_OUTPUT);
        k.write(DATA, &[0xfe]);
        assert_eq!(exit.pending(), Some(ExitRequest::Reboot));
    }

    #[test]
    fn linux_probe_sequence() {
        let (mut k, exit) = kbc();
        // i8042_controller_selftest
        command(&mut k, CMD_SELF_TEST);
        assert_eq!(read_answer(&mut k), Some(SELF_TEST_OK));
        // i8042_controller_init: read, then write back the command byte.
        command(&mut k, CMD_READ_CTR);
        let ctr = read_answer(&mut k).unwrap();
        assert_eq!(ctr, CTR_DEFAULT);
        command(&mut k, CMD_WRITE_CTR);
        assert_ne!(status(&mut k) & STS_CMD, 0);
        k.write(DATA, &[ctr | 0x01]);
        assert_eq!(status(&mut k) & STS_CMD, 0);
        command(&mut k, CMD_READ_CTR);
        assert_eq!(read_answer(&mut k), Some(ctr | 0x01));
        // i8042_check_aux: loopback answer without the AUX flag, then "no device".
        command(&mut k, CMD_WRITE_AUX_OBUF);
        k.write(DATA, &[0x5a]);
        let s = status(&mut k);
        assert_eq!(s & (STS_OBF | STS_AUX_DATA), STS_OBF);
        command(&mut k, CMD_AUX_TEST);
        assert_eq!(read_answer(&mut k), Some(PORT_TEST_NO_DEVICE));
        // Port enable/disable shows in the command byte.
        command(&mut k, CMD_KBD_DISABLE);
        command(&mut k, CMD_AUX_ENABLE);
        command(&mut k, CMD_READ_CTR);
        let c = read_answer(&mut k).unwrap();
        assert_eq!(c & (CTR_KBD_DISABLE | CTR_AUX_DISABLE), CTR_KBD_DISABLE);
        command(&mut k, CMD_KBD_ENABLE);
        command(&mut k, CMD_AUX_DISABLE);
        command(&mut k, CMD_READ_CTR);
        let c = read_answer(&mut k).unwrap();
        assert_eq!(c & (CTR_KBD_DISABLE | CTR_AUX_DISABLE), CTR_AUX_DISABLE);
        command(&mut k, CMD_KBD_TEST);
        assert_eq!(read_answer(&mut k), Some(PORT_TEST_OK));
        // atkbd's GET ID to the (absent) keyboard: no answer, so the driver times out.
        k.write(DATA, &[0xf2]);
        assert_eq!(read_answer(&mut k), None);
        command(&mut k, CMD_WRITE_AUX);
        k.write(DATA, &[0xff]);
        assert_eq!(read_answer(&mut k), None);
        assert_eq!(exit.pending(), None);
    }

    #[test]
    fn odd_widths_and_offsets() {
        let (mut k, exit) = kbc();
        let mut q = [0u8; 4];
        k.read(DATA, &mut q);
        assert_eq!(q[1..], [0xff; 3]);
        k.read(2, &mut q[..1]);
        assert_eq!(q[0], 0xff);
        k.write(COMMAND, &[I8042_CMD_RESET, 0, 0, 0]);
        assert_eq!(exit.pending(), Some(ExitRequest::Reboot));
        k.write(1, &[I8042_CMD_RESET]);
        k.read(u64::MAX, &mut q);
        k.write(DATA, &[]);
        k.read(DATA, &mut []);
    }

    #[test]
    fn fuzz_registers() {
        let (mut k, _) = kbc();
        let mut rng = XorShift::new(0x64);
        for _ in 0..100_000 {
            let r = rng.next();
            let offset = rng.offset(I8042_PORT_LEN + 2);
            let mut data = [0u8; 8];
            let width = rng.width();
            if r & 1 == 0 {
                k.read(offset, &mut data[..width]);
            } else {
                rng.fill(&mut data);
                k.write(offset, &data[..width]);
            }
            let s = status(&mut k);
            assert_eq!(s & STS_OBF != 0, k.obuf.is_some());
            assert_eq!(s & 0x02, 0, "always ready for input");
        }
    }
}
