//! One vCPU's state through KVM's state ioctls, taken from a parked vCPU and loaded into a
//! new one before it first runs. The KVM structures are the kernel's stable ABI and go into
//! the record as their bytes (kvm-bindings' `serde` feature); the MSRs as (index, value).

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// Most MSRs one vCPU record may carry (KVM saves a few hundred at most).
pub const MAX_MSRS: usize = 1024;
/// The TSC deadline: written after the TSC, or the write of the TSC moves the deadline
/// (Firecracker orders them the same way).
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// Everything KVM keeps about a vCPU that the guest can observe.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    /// (index, value) of every MSR KVM would save, the TSC deadline last.
    pub msrs: Vec<(u32, u64)>,
    pub events: kvm_vcpu_events,
    /// The guest TSC's frequency, if KVM reported it.
    pub tsc_khz: Option<u32>,
}

fn kvm(what: &'static str, index: usize) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |source| SnapshotError::Kvm {
        what: format!("vCPU {index}: {what}"),
        source,
    }
}

fn msr_list(entries: &[kvm_msr_entry], index: usize) -> Result<Msrs, SnapshotError> {
    Msrs::from_entries(entries).map_err(|e| SnapshotError::Malformed {
        what: "MSR list",
        reason: format!("vCPU {index}: {e:?}"),
    })
}

/// The MSRs of `indices` that this vCPU lets us read. `KVM_GET_MSRS` stops at the first MSR
/// it refuses (the index list names some the vCPU's CPUID does not enable): that one is
/// skipped and the rest read on.
fn read_msrs(
    vcpu: &VcpuFd,
    indices: &[u32],
    index: usize,
) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = msr_list(&entries, index)?;
        let n = vcpu.get_msrs(&mut msrs).map_err(kvm("get MSRs", index))?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // All of the chunk was read, or entry n was refused.
        let used = if n == chunk.len() { n } else { n + 1 };
        rest = &rest[used..];
    }
    if let Some(pos) = out.iter().position(|&(i, _)| i == MSR_IA32_TSC_DEADLINE) {
        let deadline = out.remove(pos);
        out.push(deadline);
    }
    Ok(out)
}

impl VcpuState {
    /// Read vCPU `index`, which must be parked (not in `KVM_RUN`). The order is the one
    /// KVM needs: the MP state first (reading it may deliver pending INIT/SIPI into the
    /// rest), the events last.
    pub fn capture(
        vcpu: &VcpuFd,
        msr_indices: &[u32],
        index: usize,
    ) -> Result<Self, SnapshotError> {
        let mp_state = vcpu.get_mp_state().map_err(kvm("get MP state", index))?;
        let regs = vcpu.get_regs().map_err(kvm("get registers", index))?;
        let sregs = vcpu
            .get_sregs()
            .map_err(kvm("get special registers", index))?;
        let xsave = vcpu.get_xsave().map_err(kvm("get XSAVE area", index))?;
        let xcrs = vcpu.get_xcrs().map_err(kvm("get XCRs", index))?;
        let debugregs = vcpu
            .get_debug_regs()
            .map_err(kvm("get debug registers", index))?;
        let lapic = vcpu.get_lapic().map_err(kvm("get LAPIC", index))?;
        let msrs = read_msrs(vcpu, msr_indices, index)?;
        let tsc_khz = vcpu.get_tsc_khz().ok();
        let events = vcpu.get_vcpu_events().map_err(kvm("get events", index))?;
        Ok(VcpuState {
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            events,
            tsc_khz,
        })
    }

    /// Load into vCPU `index`, created with this host's CPUID and never run. Special
    /// registers before the XSAVE area and the LAPIC, MSRs after them (the APIC base and
    /// EFER come with the special registers), events last.
    pub fn restore(&self, vcpu: &VcpuFd, index: usize) -> Result<(), SnapshotError> {
        if self.msrs.len() > MAX_MSRS {
            return Err(SnapshotError::TooLarge {
                what: "a vCPU's MSR list",
                len: self.msrs.len() as u64,
                limit: MAX_MSRS as u64,
            });
        }
        if let Some(khz) = self.tsc_khz {
            // A host that cannot scale the TSC (or runs at this rate already) keeps its own.
            if vcpu.get_tsc_khz().ok() != Some(khz) {
                let _ = vcpu.set_tsc_khz(khz);
            }
        }
        vcpu.set_mp_state(self.mp_state)
            .map_err(kvm("set MP state", index))?;
        vcpu.set_regs(&self.regs)
            .map_err(kvm("set registers", index))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(kvm("set special registers", index))?;
        // SAFETY: KVM reads `guest_fpu.uabi_size` bytes, which exceeds the 4 KiB kvm_xsave
        // only for dynamically enabled XSAVE features (AMX), which this VMM never requests
        // (no ARCH_REQ_XCOMP_GUEST_PERM); `self.xsave` is a whole kvm_xsave.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(kvm("set XSAVE area", index))?;
        vcpu.set_xcrs(&self.xcrs).map_err(kvm("set XCRs", index))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(kvm("set debug registers", index))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(kvm("set LAPIC", index))?;
        for chunk in self.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&(index, data)| kvm_msr_entry {
                    index,
                    data,
                    ..Default::default()
                })
                .collect();
            let n = vcpu
                .set_msrs(&msr_list(&entries, index)?)
                .map_err(kvm("set MSRs", index))?;
            if let Some(&(msr, _)) = chunk.get(n) {
                return Err(SnapshotError::Kvm {
                    what: format!("vCPU {index}: set MSR {msr:#x}"),
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                });
            }
        }
        vcpu.set_vcpu_events(&self.events)
            .map_err(kvm("set events", index))
    }
}
