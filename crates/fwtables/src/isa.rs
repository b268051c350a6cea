//! How the 16 ISA IRQs reach the I/O APIC. The MADT's interrupt source overrides and the MP
//! table's I/O interrupt entries are both derived from [`isa_routes`], so the two tables
//! cannot disagree.

use crate::layout::{ISA_IRQS, PIC_CASCADE_IRQ, PIT_GSI, PIT_IRQ, SCI_IRQ};

/// MPS INTI flags (same encoding in the MADT and the MP table): polarity and trigger mode as
/// the bus defines them, which for ISA is active high, edge.
pub(crate) const INTI_CONFORMS: u16 = 0;
/// MPS INTI polarity field: active high.
const INTI_ACTIVE_HIGH: u16 = 0b01;
/// MPS INTI trigger mode field (bits 2-3): level.
const INTI_LEVEL: u16 = 0b11 << 2;

/// One ISA IRQ's wiring to the I/O APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IsaRoute {
    pub(crate) irq: u8,
    /// GSI, equal to the I/O APIC input pin: there is one I/O APIC with GSI base 0.
    pub(crate) gsi: u8,
    pub(crate) flags: u16,
}

impl IsaRoute {
    /// Whether this route differs from the ISA default (identity, edge, active high) and so
    /// needs a MADT interrupt source override.
    pub(crate) fn overrides_default(&self) -> bool {
        self.gsi != self.irq || self.flags != INTI_CONFORMS
    }
}

/// Every ISA IRQ except the 8259 cascade input, which never fires.
pub(crate) fn isa_routes() -> impl Iterator<Item = IsaRoute> {
    (0..ISA_IRQS)
        .filter(|&irq| irq != PIC_CASCADE_IRQ)
        .map(|irq| match irq {
            PIT_IRQ => IsaRoute {
                irq,
                gsi: PIT_GSI,
                flags: INTI_CONFORMS,
            },
            // The SCI is level-triggered, active high: ACPI requires a shareable, level
            // interrupt, and the devices crate holds the line while an enabled status is set.
            SCI_IRQ => IsaRoute {
                irq,
                gsi: irq,
                flags: INTI_ACTIVE_HIGH | INTI_LEVEL,
            },
            _ => IsaRoute {
                irq,
                gsi: irq,
                flags: INTI_CONFORMS,
            },
        })
}
