//! GSI routing for the in-kernel irqchip: ISA IRQs to both PICs and the IOAPIC, with IRQ0
//! (the PIT) on IOAPIC pin 2, as the MADT and MP table's interrupt source override say.
//! KVM's default table puts GSI 0 on pin 0, which guests that trust the override never see.

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQ_ROUTING_IRQCHIP,
};
use kvm_ioctls::VmFd;

use crate::error::Error;

/// Pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u32 = 24;
/// ISA IRQs, served by the PIC pair.
const ISA_IRQS: u32 = 16;
/// The slave PIC cascades into master IRQ 2, so no device owns it.
const PIC_CASCADE: u32 = 2;
/// Where the PIT's IRQ0 enters the IOAPIC.
const PIT_IOAPIC_PIN: u32 = 2;
const PICS_PER_CHIP: u32 = 8;

fn route(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip: chip, pin },
        },
        ..Default::default()
    }
}

/// The routing table: (gsi, chip, pin) triples.
fn table() -> Vec<kvm_irq_routing_entry> {
    let mut t = Vec::new();
    for irq in (0..ISA_IRQS).filter(|&i| i != PIC_CASCADE) {
        let chip = if irq < PICS_PER_CHIP {
            KVM_IRQCHIP_PIC_MASTER
        } else {
            KVM_IRQCHIP_PIC_SLAVE
        };
        t.push(route(irq, chip, irq % PICS_PER_CHIP));
    }
    for gsi in 0..IOAPIC_PINS {
        match gsi {
            0 => t.push(route(0, KVM_IRQCHIP_IOAPIC, PIT_IOAPIC_PIN)),
            PIT_IOAPIC_PIN => {}
            _ => t.push(route(gsi, KVM_IRQCHIP_IOAPIC, gsi)),
        }
    }
    t
}

/// Install the routing table on `vm`. Call before registering irqfds.
pub fn setup_routing(vm: &VmFd) -> Result<(), Error> {
    let routing = KvmIrqRouting::from_entries(&table()).map_err(|e| Error::Device {
        what: "GSI routing",
        reason: format!("{e:?}"),
    })?;
    vm.set_gsi_routing(&routing)
        .map_err(Error::kvm("set GSI routing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ioapic_pin(gsi: u32) -> Option<u32> {
        table().iter().find_map(|e| {
            // SAFETY: every entry of `table()` is built with the irqchip variant.
            let ic = unsafe { e.u.irqchip };
            (e.gsi == gsi && ic.irqchip == KVM_IRQCHIP_IOAPIC).then_some(ic.pin)
        })
    }

    #[test]
    fn pit_goes_to_pin_2_and_nothing_else_does() {
        assert_eq!(ioapic_pin(0), Some(2));
        assert_eq!(ioapic_pin(2), None);
        assert_eq!(ioapic_pin(4), Some(4));
        assert_eq!(ioapic_pin(23), Some(23));
        let t = table();
        let pic_routes = t.iter().filter(|e| {
            // SAFETY: as above.
            let chip = unsafe { e.u.irqchip.irqchip };
            chip != KVM_IRQCHIP_IOAPIC
        });
        assert_eq!(pic_routes.count(), 15);
    }
}
