//! 16550A UART for COM1, the console (spec §5.9, F-HW-07).
//!
//! Written here rather than taken from vm-superio because the console needs two things that
//! crate does not give: a BREAK condition the daemon can inject (OpenBSD guests enter ddb on
//! it), and exact control over input flow — the VMM must only take bytes from the console when
//! the guest has room for them, so that nothing typed is ever dropped.
//!
//! Unlike vmd's 8250 we model a 16550A (FIFO bits in IIR, a working scratch register, loopback)
//! because Linux's 8250 driver probes for exactly that and then uses the 16-byte TX FIFO.
//! Transmission is instantaneous: every THR write reaches the output at once, so THR and the
//! transmitter are always empty and no baud-rate timing is simulated.

use std::collections::VecDeque;
use std::io::Write;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{read_bytes, write_bytes, BusDevice};
use crate::state::StateError;

/// First I/O port of COM1 (docs/platform.md).
pub const COM1_BASE: u16 = 0x3f8;
/// Number of ports the UART decodes.
pub const SERIAL_PORT_LEN: u64 = 8;
/// ISA IRQ of COM1.
pub const COM1_IRQ: u32 = 4;
/// Bytes of guest input the UART holds before the VMM must stop feeding it. A 16550A has a
/// 16-byte FIFO; holding more costs nothing and lets a paste arrive in fewer wake-ups, while
/// still bounding what a guest that never reads can make us buffer.
pub const SERIAL_INPUT_CAPACITY: usize = 64;

// Register offsets from the base port.
const DATA: u64 = 0; // RBR (read) / THR (write); DLL with DLAB
const IER: u64 = 1; // DLM with DLAB
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const IER_RDI: u8 = 0x01; // received data available
const IER_THRI: u8 = 0x02; // transmitter holding register empty
const IER_RLSI: u8 = 0x04; // receiver line status
const IER_MSI: u8 = 0x08; // modem status
                          // The upper IER bits do not exist on a 16550A; Linux writes them to detect other chips and
                          // must read back zeros.
const IER_MASK: u8 = 0x0f;

const IIR_NONE: u8 = 0x01;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_FIFO_ENABLED: u8 = 0xc0;

const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1f;

const LSR_DR: u8 = 0x01;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

const MSR_DCTS: u8 = 0x01;
const MSR_DDSR: u8 = 0x02;
const MSR_TERI: u8 = 0x04;
const MSR_DDCD: u8 = 0x08;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;
/// What the line reports outside loopback: a peer is always attached and ready (spec §5.9).
const MSR_CONNECTED: u8 = MSR_DCD | MSR_DSR | MSR_CTS;

const LCR_8N1: u8 = 0x03;
/// 9600 baud, the divisor firmware conventionally finds after power-on.
const DEFAULT_DIVISOR: u16 = 12;

/// The COM1 UART. Map it at [`COM1_BASE`] with length [`SERIAL_PORT_LEN`].
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    /// The THR-empty interrupt is latched until the guest reads IIR or writes THR, as on a
    /// real 16550; it is not simply "THR is empty" (that is always true here).
    thr_interrupt: bool,
    break_pending: bool,
    msr_delta: u8,
    input: VecDeque<u8>,
    out: Box<dyn Write + Send>,
    irq: EventFd,
}

impl Serial {
    /// A UART writing transmitted bytes to `out` and signalling IRQ 4 through `irq`, which
    /// the hypervisor binds to an edge-triggered KVM irqfd.
    pub fn new(out: Box<dyn Write + Send>, irq: EventFd) -> Self {
        Serial {
            ier: 0,
            lcr: LCR_8N1,
            mcr: 0,
            scr: 0,
            divisor: DEFAULT_DIVISOR,
            fifo_enabled: false,
            thr_interrupt: false,
            break_pending: false,
            msr_delta: 0,
            input: VecDeque::with_capacity(SERIAL_INPUT_CAPACITY),
            out,
            irq,
        }
    }

    /// Queue bytes typed on the console. Returns how many were taken; the rest must be offered
    /// again once [`Serial::input_space`] is non-zero.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        // In loopback the receiver is disconnected from the line: bytes would be lost.
        if self.loopback() {
            return 0;
        }
        let n = bytes.len().min(self.input_space());
        self.input.extend(&bytes[..n]);
        if n > 0 {
            self.raise_if(self.ier & IER_RDI != 0);
        }
        n
    }

    /// How many more input bytes the guest can take now; the VMM only reads its console source
    /// while this is non-zero.
    pub fn input_space(&self) -> usize {
        if self.loopback() {
            return 0;
        }
        SERIAL_INPUT_CAPACITY - self.input.len()
    }

    /// Signal a BREAK on the line: sets LSR.BI until the guest reads LSR.
    pub fn send_break(&mut self) {
        self.break_pending = true;
        self.raise_if(self.ier & IER_RLSI != 0);
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// The modem input lines: in loopback they are wired to the MCR outputs, which is what
    /// Linux's probe checks.
    fn modem_status(&self) -> u8 {
        if !self.loopback() {
            return MSR_CONNECTED;
        }
        let mut s = 0;
        if self.mcr & MCR_RTS != 0 {
            s |= MSR_CTS;
        }
        if self.mcr & MCR_DTR != 0 {
            s |= MSR_DSR;
        }
        if self.mcr & MCR_OUT1 != 0 {
            s |= MSR_RI;
        }
        if self.mcr & MCR_OUT2 != 0 {
            s |= MSR_DCD;
        }
        s
    }

    fn line_status(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.input.is_empty() {
            lsr |= LSR_DR;
        }
        if self.break_pending {
            lsr |= LSR_BI;
        }
        lsr
    }

    /// The highest-priority pending interrupt, as IIR reports it (without the FIFO bits).
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLSI != 0 && self.break_pending {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && !self.input.is_empty() {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thr_interrupt {
            IIR_THRI
        } else if self.ier & IER_MSI != 0 && self.msr_delta != 0 {
            IIR_MSI
        } else {
            IIR_NONE
        }
    }

    /// The irqfd is edge-triggered, so each new event must pulse it again; pulsing only while
    /// IIR really reports an interrupt keeps the guest from counting spurious IRQs (Linux
    /// disables a line that keeps firing with nothing to handle).
    fn raise_if(&mut self, event_enabled: bool) {
        if event_enabled && self.interrupt_id() != IIR_NONE {
            // A full counter (after 2^64-2 pulses) still leaves the fd readable: nothing lost.
            let _ = self.irq.write(1);
        }
    }

    fn read_reg(&mut self, reg: u64) -> u8 {
        match reg {
            DATA if self.dlab() => self.divisor as u8,
            // No new edge while data remains: a real UART holds its line high, giving no new
            // edge either, and drivers drain until LSR.DR clears.
            DATA => self.input.pop_front().unwrap_or(0),
            IER if self.dlab() => (self.divisor >> 8) as u8,
            IER => self.ier,
            IIR_FCR => {
                let id = self.interrupt_id();
                // Reading IIR acknowledges a THR-empty interrupt it reports.
                if id == IIR_THRI {
                    self.thr_interrupt = false;
                }
                let fifo = if self.fifo_enabled {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                id | fifo
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let lsr = self.line_status();
                self.break_pending = false;
                lsr
            }
            MSR => {
                let msr = self.modem_status() | self.msr_delta;
                self.msr_delta = 0;
                msr
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    fn write_reg(&mut self, reg: u64, v: u8) {
        match reg {
            DATA if self.dlab() => self.divisor = (self.divisor & 0xff00) | u16::from(v),
            DATA => self.transmit(v),
            IER if self.dlab() => self.divisor = (self.divisor & 0x00ff) | (u16::from(v) << 8),
            IER => {
                let newly = v & IER_MASK & !self.ier;
                self.ier = v & IER_MASK;
                // A 16550 asserts THRI whenever it becomes enabled while THR is empty; Linux's
                // start-up test and its TX path both rely on that.
                if newly & IER_THRI != 0 {
                    self.thr_interrupt = true;
                }
                self.raise_if(newly != 0);
            }
            IIR_FCR => {
                let enable = v & FCR_ENABLE != 0;
                // Toggling FIFO mode resets the FIFOs on real hardware, as does the explicit
                // clear; rewriting the same mode keeps what the guest has not read yet.
                if v & FCR_CLEAR_RX != 0 || enable != self.fifo_enabled {
                    self.input.clear();
                }
                self.fifo_enabled = enable;
            }
            LCR => self.lcr = v,
            MCR => {
                let before = self.modem_status();
                self.mcr = v & MCR_MASK;
                let after = self.modem_status();
                let changed = before ^ after;
                let mut delta = 0;
                if changed & MSR_CTS != 0 {
                    delta |= MSR_DCTS;
                }
                if changed & MSR_DSR != 0 {
                    delta |= MSR_DDSR;
                }
                if changed & MSR_DCD != 0 {
                    delta |= MSR_DDCD;
                }
                // TERI flags only the trailing edge of RI.
                if before & MSR_RI != 0 && after & MSR_RI == 0 {
                    delta |= MSR_TERI;
                }
                self.msr_delta |= delta;
                self.raise_if(delta != 0 && self.ier & IER_MSI != 0);
            }
            SCR => self.scr = v,
            // LSR and MSR are read-only.
            _ => {}
        }
    }

    fn transmit(&mut self, v: u8) {
        if self.loopback() {
            // The transmitter feeds the receiver; the line stays quiet. A full FIFO overruns,
            // dropping the byte, as the hardware would.
            if self.input.len() < SERIAL_INPUT_CAPACITY {
                self.input.push_back(v);
            }
        } else {
            // A console that cannot be written (closed pty, full pipe) must not stop the guest.
            let _ = self.out.write_all(&[v]);
            let _ = self.out.flush();
        }
        self.thr_interrupt = true;
        let looped = self.loopback() && self.ier & IER_RDI != 0;
        self.raise_if(self.ier & IER_THRI != 0 || looped);
    }
}

/// The UART's registers and unread input, for a snapshot ([`crate::state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub ier: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub scr: u8,
    pub divisor: u16,
    pub fifo_enabled: bool,
    pub thr_interrupt: bool,
    pub break_pending: bool,
    pub msr_delta: u8,
    /// Input the guest has not read yet (at most [`SERIAL_INPUT_CAPACITY`] bytes).
    pub input: Vec<u8>,
}

impl Serial {
    /// The guest-visible state.
    pub fn state(&self) -> SerialState {
        SerialState {
            ier: self.ier,
            lcr: self.lcr,
            mcr: self.mcr,
            scr: self.scr,
            divisor: self.divisor,
            fifo_enabled: self.fifo_enabled,
            thr_interrupt: self.thr_interrupt,
            break_pending: self.break_pending,
            msr_delta: self.msr_delta,
            input: self.input.iter().copied().collect(),
        }
    }

    /// Load `s`. A pending interrupt is not raised again: the interrupt controller's own
    /// state, restored with it, already holds it.
    pub fn restore(&mut self, s: &SerialState) -> Result<(), StateError> {
        if s.input.len() > SERIAL_INPUT_CAPACITY {
            return Err(StateError::new(
                "serial",
                format!(
                    "{} bytes of input, the UART holds {SERIAL_INPUT_CAPACITY}",
                    s.input.len()
                ),
            ));
        }
        self.ier = s.ier & IER_MASK;
        self.lcr = s.lcr;
        self.mcr = s.mcr & MCR_MASK;
        self.scr = s.scr;
        self.divisor = s.divisor;
        self.fifo_enabled = s.fifo_enabled;
        self.thr_interrupt = s.thr_interrupt;
        self.break_pending = s.break_pending;
        self.msr_delta = s.msr_delta & 0x0f;
        self.input.clear();
        self.input.extend(&s.input);
        Ok(())
    }
}

impl BusDevice for Serial {
    // A wide access to an 8-bit ISA device is split by the bus into byte accesses at
    // consecutive ports; do the same.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        read_bytes(offset, data, |reg| {
            if reg < SERIAL_PORT_LEN {
                self.read_reg(reg)
            } else {
                0xff
            }
        });
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        write_bytes(offset, data, |reg, b| {
            if reg < SERIAL_PORT_LEN {
                self.write_reg(reg, b);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::XorShift;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    fn uart() -> (Serial, Sink, EventFd) {
        let sink = Sink::default();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let s = Serial::new(Box::new(sink.clone()), irq.try_clone().unwrap());
        (s, sink, irq)
    }

    fn inb(s: &mut Serial, reg: u64) -> u8 {
        let mut b = [0];
        s.read(reg, &mut b);
        b[0]
    }

    fn outb(s: &mut Serial, reg: u64, v: u8) {
        s.write(reg, &[v]);
    }

    /// Number of pulses since the last call.
    fn pulses(irq: &EventFd) -> u64 {
        irq.read().unwrap_or(0)
    }

    #[test]
    fn transmits_each_thr_write() {
        let (mut s, sink, _) = uart();
        for &b in b"hi\n" {
            assert_ne!(inb(&mut s, LSR) & LSR_THRE, 0);
            outb(&mut s, DATA, b);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
        assert_eq!(
            inb(&mut s, LSR) & (LSR_THRE | LSR_TEMT),
            LSR_THRE | LSR_TEMT
        );
    }

    #[test]
    fn output_errors_are_ignored() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(Box::new(Broken), irq);
        outb(&mut s, DATA, b'x');
        assert_ne!(inb(&mut s, LSR) & LSR_THRE, 0);
    }

    #[test]
    fn divisor_latch_is_behind_dlab() {
        let (mut s, sink, _) = uart();
        outb(&mut s, LCR, LCR_DLAB | LCR_8N1);
        outb(&mut s, DATA, 0x01); // 115200 baud
        outb(&mut s, IER, 0x00);
        assert_eq!(inb(&mut s, DATA), 0x01);
        assert_eq!(inb(&mut s, IER), 0x00);
        outb(&mut s, LCR, LCR_8N1);
        assert_eq!(s.divisor, 1);
        assert_eq!(inb(&mut s, LCR), LCR_8N1);
        assert!(sink.0.lock().unwrap().is_empty(), "DLL write is not data");
        assert_eq!(inb(&mut s, IER), 0, "IER untouched by DLM write");
    }

    #[test]
    fn identifies_as_16550a() {
        let (mut s, _, _) = uart();
        // Linux's autoconfig: IER keeps only the low nibble.
        outb(&mut s, IER, 0xff);
        assert_eq!(inb(&mut s, IER), 0x0f);
        outb(&mut s, IER, 0);
        // Scratch register works.
        outb(&mut s, SCR, 0xa5);
        assert_eq!(inb(&mut s, SCR), 0xa5);
        // FIFO enable shows in IIR bits 6-7 (== 3 means 16550A).
        assert_eq!(inb(&mut s, IIR_FCR), IIR_NONE);
        outb(&mut s, IIR_FCR, 0x07);
        assert_eq!(inb(&mut s, IIR_FCR) >> 6, 3);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
        outb(&mut s, IIR_FCR, 0);
        assert_eq!(inb(&mut s, IIR_FCR) >> 6, 0);
    }

    #[test]
    fn loopback_as_linux_probes_it() {
        let (mut s, sink, _) = uart();
        assert_eq!(inb(&mut s, MSR) & 0xf0, MSR_CONNECTED);
        // serial8250 probe: MCR = LOOP | OUT2 | RTS must read MSR = DCD | CTS.
        outb(&mut s, MCR, MCR_LOOP | 0x0a);
        assert_eq!(inb(&mut s, MSR) & 0xf0, 0x90);
        outb(&mut s, MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
        assert_eq!(inb(&mut s, MSR) & 0xf0, MSR_DSR | MSR_RI);
        // Bytes written come back on the receiver and never reach the line.
        outb(&mut s, DATA, 0x5a);
        assert_ne!(inb(&mut s, LSR) & LSR_DR, 0);
        assert_eq!(inb(&mut s, DATA), 0x5a);
        assert_eq!(inb(&mut s, LSR) & LSR_DR, 0);
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(s.input_space(), 0, "no console input while in loopback");
        assert_eq!(s.enqueue_input(b"x"), 0);
        outb(&mut s, MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
        assert_eq!(inb(&mut s, MSR) & 0xf0, MSR_CONNECTED);
        assert_eq!(s.input_space(), SERIAL_INPUT_CAPACITY);
    }

    #[test]
    fn modem_status_deltas_clear_on_read_and_interrupt() {
        let (mut s, _, irq) = uart();
        outb(&mut s, IER, IER_MSI);
        pulses(&irq);
        outb(&mut s, MCR, MCR_LOOP | MCR_RTS | MCR_OUT1);
        assert_eq!(pulses(&irq), 1);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_MSI);
        outb(&mut s, MCR, MCR_LOOP | MCR_RTS);
        let msr = inb(&mut s, MSR);
        // CTS stayed up throughout; DSR and DCD dropped on entering loopback, RI rose and fell.
        assert_eq!(msr & 0x0f, MSR_DDSR | MSR_DDCD | MSR_TERI);
        assert_eq!(msr & 0xf0, MSR_CTS);
        assert_eq!(inb(&mut s, MSR) & 0x0f, 0);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
    }

    #[test]
    fn input_is_bounded_and_read_in_order() {
        let (mut s, _, irq) = uart();
        let data: Vec<u8> = (0..100).collect();
        assert_eq!(s.enqueue_input(&data), SERIAL_INPUT_CAPACITY);
        assert_eq!(s.input_space(), 0);
        assert_eq!(s.enqueue_input(&data), 0);
        assert_eq!(pulses(&irq), 0, "no interrupt while ERBFI is clear");
        let mut got = vec![];
        while inb(&mut s, LSR) & LSR_DR != 0 {
            got.push(inb(&mut s, DATA));
        }
        assert_eq!(got, &data[..SERIAL_INPUT_CAPACITY]);
        assert_eq!(s.input_space(), SERIAL_INPUT_CAPACITY);
    }

    #[test]
    fn fifo_reset_drops_input() {
        let (mut s, _, _) = uart();
        s.enqueue_input(b"abc");
        outb(&mut s, IIR_FCR, FCR_ENABLE);
        assert_eq!(inb(&mut s, LSR) & LSR_DR, 0, "entering FIFO mode resets it");
        s.enqueue_input(b"abc");
        outb(&mut s, IIR_FCR, FCR_ENABLE);
        assert_eq!(inb(&mut s, DATA), b'a', "same mode again keeps the data");
        outb(&mut s, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(inb(&mut s, LSR) & LSR_DR, 0);
    }

    #[test]
    fn receive_interrupt_follows_erbfi() {
        let (mut s, _, irq) = uart();
        outb(&mut s, IER, IER_RDI);
        assert_eq!(pulses(&irq), 0, "enabling with nothing pending is silent");
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert_eq!(pulses(&irq), 1);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_RDI);
        assert_eq!(inb(&mut s, DATA), b'a');
        assert_eq!(inb(&mut s, DATA), b'b');
        assert_eq!(pulses(&irq), 0);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
        // Each new arrival is a new edge.
        s.enqueue_input(b"c");
        s.enqueue_input(b"d");
        assert_eq!(pulses(&irq), 2);
    }

    #[test]
    fn data_pending_before_erbfi_interrupts_when_enabled() {
        let (mut s, _, irq) = uart();
        s.enqueue_input(b"a");
        assert_eq!(pulses(&irq), 0);
        outb(&mut s, IER, IER_RDI);
        assert_eq!(pulses(&irq), 1);
    }

    #[test]
    fn thr_empty_interrupt_as_linux_uses_it() {
        let (mut s, _, irq) = uart();
        // serial8250_do_startup: enabling THRI with THR empty must show THRI in IIR, and again
        // after a disable/enable cycle.
        for _ in 0..2 {
            outb(&mut s, IER, IER_THRI);
            assert_eq!(pulses(&irq), 1);
            assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_THRI);
            // Reading IIR acknowledged it.
            assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
            outb(&mut s, IER, 0);
        }
        // TX path: every byte written re-arms THRI.
        outb(&mut s, IER, IER_THRI);
        inb(&mut s, IIR_FCR);
        pulses(&irq);
        outb(&mut s, DATA, b'x');
        assert_eq!(pulses(&irq), 1);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_THRI);
        // Masked: no pulse, nothing reported.
        outb(&mut s, IER, 0);
        outb(&mut s, DATA, b'y');
        assert_eq!(pulses(&irq), 0);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
    }

    #[test]
    fn break_sets_bi_until_lsr_read() {
        let (mut s, _, irq) = uart();
        s.send_break();
        assert_eq!(pulses(&irq), 0, "line status interrupt disabled");
        assert_ne!(inb(&mut s, LSR) & LSR_BI, 0);
        assert_eq!(inb(&mut s, LSR) & LSR_BI, 0);
        outb(&mut s, IER, IER_RLSI | IER_RDI);
        s.send_break();
        s.enqueue_input(b"z");
        assert_eq!(pulses(&irq), 2);
        // Line status outranks received data.
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_RLSI);
        assert_eq!(inb(&mut s, LSR) & (LSR_BI | LSR_DR), LSR_BI | LSR_DR);
        assert_eq!(inb(&mut s, IIR_FCR) & 0x0f, IIR_RDI);
    }

    #[test]
    fn wide_and_stray_accesses() {
        let (mut s, sink, _) = uart();
        // outw to THR is two byte writes: THR then IER.
        s.write(DATA, &[b'A', IER_RDI]);
        assert_eq!(&*sink.0.lock().unwrap(), b"A");
        assert_eq!(inb(&mut s, IER), IER_RDI);
        let mut q = [0u8; 8];
        s.read(4, &mut q);
        assert_eq!(q[4..], [0xff; 4], "beyond the UART");
        s.read(u64::MAX, &mut q);
        assert_eq!(q, [0xff; 8]);
        s.write(u64::MAX - 1, &[1; 8]);
        s.write(SERIAL_PORT_LEN, &[1]);
    }

    #[test]
    fn state_round_trips_and_bad_input_is_refused() {
        let (mut s, _, _) = uart();
        outb(&mut s, LCR, LCR_DLAB | LCR_8N1);
        outb(&mut s, DATA, 1);
        outb(&mut s, LCR, LCR_8N1);
        outb(&mut s, IER, IER_RDI | IER_THRI);
        outb(&mut s, SCR, 0x5a);
        s.enqueue_input(b"typed");
        let state = s.state();
        let (mut t, _, _) = uart();
        t.restore(&state).unwrap();
        assert_eq!(t.state(), state);
        assert_eq!(inb(&mut t, SCR), 0x5a);
        assert_eq!(inb(&mut t, DATA), b't');
        let mut big = state.clone();
        big.input = vec![0; SERIAL_INPUT_CAPACITY + 1];
        assert!(t.restore(&big).is_err());
        let mut masked = state;
        masked.ier = 0xff;
        t.restore(&masked).unwrap();
        assert_eq!(inb(&mut t, IER), IER_MASK);
    }

    #[test]
    fn fuzz_registers() {
        let (mut s, _, irq) = uart();
        let mut rng = XorShift::new(0x3f8);
        for _ in 0..100_000 {
            let r = rng.next();
            let offset = rng.offset(SERIAL_PORT_LEN + 2);
            let mut data = [0u8; 8];
            let width = rng.width();
            match r % 8 {
                0..=2 => s.read(offset, &mut data[..width]),
                3..=5 => {
                    rng.fill(&mut data);
                    s.write(offset, &data[..width]);
                }
                6 => {
                    let n = (r >> 8) as usize % 100;
                    let took = s.enqueue_input(&vec![0x41; n]);
                    assert!(took <= n);
                }
                _ => s.send_break(),
            }
            assert!(s.input.len() <= SERIAL_INPUT_CAPACITY);
            assert!(s.input_space() <= SERIAL_INPUT_CAPACITY - s.input.len());
            assert_eq!(s.ier & !IER_MASK, 0);
            if r.is_multiple_of(1024) {
                let _ = irq.read();
            }
        }
    }
}
