//! VM-wide KVM state: the in-kernel PICs and IOAPIC, the PIT and the kvm-clock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// The interrupt controllers, the PIT and the guest clock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    /// kvm-clock when the VM was paused.
    pub clock: kvm_clock_data,
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm {
        what: what.into(),
        source,
    }
}

fn chip(vm: &VmFd, id: u32, what: &'static str) -> Result<kvm_irqchip, SnapshotError> {
    let mut c = kvm_irqchip {
        chip_id: id,
        ..Default::default()
    };
    vm.get_irqchip(&mut c).map_err(kvm(what))?;
    Ok(c)
}

impl VmState {
    /// Read the VM's state; `clock` is the guest clock when the VM was paused.
    pub fn capture(vm: &VmFd, clock: kvm_clock_data) -> Result<Self, SnapshotError> {
        Ok(VmState {
            pic_master: chip(vm, KVM_IRQCHIP_PIC_MASTER, "get master PIC")?,
            pic_slave: chip(vm, KVM_IRQCHIP_PIC_SLAVE, "get slave PIC")?,
            ioapic: chip(vm, KVM_IRQCHIP_IOAPIC, "get IOAPIC")?,
            pit: vm.get_pit2().map_err(kvm("get PIT"))?,
            clock,
        })
    }

    /// Load the interrupt controllers and the PIT (before the vCPUs' LAPICs).
    pub fn restore_chips(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        for (mut c, id, what) in [
            (self.pic_master, KVM_IRQCHIP_PIC_MASTER, "set master PIC"),
            (self.pic_slave, KVM_IRQCHIP_PIC_SLAVE, "set slave PIC"),
            (self.ioapic, KVM_IRQCHIP_IOAPIC, "set IOAPIC"),
        ] {
            // The record says which chip by its place, not by what its bytes claim.
            c.chip_id = id;
            vm.set_irqchip(&c).map_err(kvm(what))?;
        }
        vm.set_pit2(&self.pit).map_err(kvm("set PIT"))
    }

    /// Set the guest clock to where it was paused: the guest sees no time pass while it
    /// was in the stream, as after an unpause.
    pub fn restore_clock(&self, vm: &VmFd) -> Result<(), SnapshotError> {
        let clock = kvm_clock_data {
            flags: 0,
            ..self.clock
        };
        vm.set_clock(&clock).map_err(kvm("set clock"))
    }
}
