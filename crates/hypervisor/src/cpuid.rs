//! The CPUID a vCPU reports: KVM's supported set with our topology, the KVM paravirtual
//! leaves (kvm-clock), and — on a PVM host — without the instructions its emulator lacks.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 ECX bits.
const L1_ECX_CX16: u32 = 1 << 13;
const L1_ECX_PCID: u32 = 1 << 17;
const L1_ECX_MOVBE: u32 = 1 << 22;
const L1_ECX_POPCNT: u32 = 1 << 23;
const L1_ECX_XSAVE: u32 = 1 << 26;
const L1_ECX_OSXSAVE: u32 = 1 << 27;
const L1_ECX_AVX: u32 = 1 << 28;
const L1_ECX_F16C: u32 = 1 << 29;
const L1_ECX_RDRAND: u32 = 1 << 30;
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
const L1_ECX_FMA: u32 = 1 << 12;
/// Leaf 1 EDX: hyper-threading (more than one logical CPU per package).
const L1_EDX_HTT: u32 = 1 << 28;
/// Leaf 7 subleaf 0 EBX bits.
const L7_EBX_FSGSBASE: u32 = 1 << 0;
const L7_EBX_AVX2: u32 = 1 << 5;
const L7_EBX_SMEP: u32 = 1 << 7;
const L7_EBX_ERMS: u32 = 1 << 9;
const L7_EBX_INVPCID: u32 = 1 << 10;
const L7_EBX_AVX512_MASK: u32 =
    (1 << 16) | (1 << 17) | (1 << 21) | (0xF << 26) | (1 << 30) | (1 << 31);
const L7_EBX_RDSEED: u32 = 1 << 18;
const L7_EBX_SMAP: u32 = 1 << 20;
const L7_EBX_CLFLUSHOPT: u32 = 1 << 23;
const L7_EBX_CLWB: u32 = 1 << 24;
const L7_ECX_RDPID: u32 = 1 << 22;
const L7_EDX_FSRM: u32 = 1 << 4;
const L7_EDX_SERIALIZE: u32 = 1 << 14;
/// Leaf 0x80000001 EDX: RDTSCP.
const LX1_EDX_RDTSCP: u32 = 1 << 27;
/// KVM_FEATURE_PV_SEND_IPI in leaf 0x40000001 EAX.
const KVM_FEATURE_PV_SEND_IPI: u32 = 1 << 11;

const LEAF_BASIC: u32 = 1;
const LEAF_CACHE: u32 = 4;
const LEAF_EXT_FEATURES: u32 = 7;
const LEAF_TOPOLOGY: u32 = 0xB;
const LEAF_XSAVE: u32 = 0xD;
const LEAF_TOPOLOGY_V2: u32 = 0x1F;
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;
const LEAF_EXT_BASIC: u32 = 0x8000_0001;
const LEAF_AMD_SIZE: u32 = 0x8000_0008;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001E;

/// Topology levels in leaf 0xB/0x1F ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Whether this host's `/dev/kvm` is PVM (guest ring 0 emulated). Its emulator lacks some
/// instructions; a guest must not be told they exist (shared/guest-linux/README.md).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Bits needed to number `n` things (APIC id shift widths).
fn bits_for(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

/// Adjust KVM's supported CPUID for vCPU `index` of `count` (one core per vCPU, one thread
/// per core, one package), hiding what `pvm` says the host cannot run.
pub fn for_vcpu(supported: &CpuId, index: u32, count: u32, pvm: bool) -> CpuId {
    let mut cpuid = supported.clone();
    let core_bits = bits_for(count);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_BASIC => basic(e, index, count, pvm),
            LEAF_CACHE => {
                // EAX[31:26]: cores per package − 1; EAX[25:14]: threads sharing − 1.
                e.eax &= 0x3FF;
                e.eax |= (count - 1) << 26;
                if (e.eax >> 5) & 0x7 >= 3 {
                    e.eax |= (count - 1) << 14;
                }
            }
            LEAF_EXT_FEATURES if e.index == 0 && pvm => {
                e.ebx &= !(L7_EBX_FSGSBASE
                    | L7_EBX_AVX2
                    | L7_EBX_SMEP
                    | L7_EBX_ERMS
                    | L7_EBX_INVPCID
                    | L7_EBX_AVX512_MASK
                    | L7_EBX_RDSEED
                    | L7_EBX_SMAP
                    | L7_EBX_CLFLUSHOPT
                    | L7_EBX_CLWB);
                e.ecx &= !L7_ECX_RDPID;
                e.edx &= !(L7_EDX_FSRM | L7_EDX_SERIALIZE);
            }
            LEAF_XSAVE if pvm => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => topology(e, index, count, core_bits),
            LEAF_KVM_FEATURES if pvm => e.eax &= !KVM_FEATURE_PV_SEND_IPI,
            LEAF_EXT_BASIC if pvm => e.edx &= !LX1_EDX_RDTSCP,
            LEAF_AMD_SIZE => {
                // ECX[7:0]: cores − 1; ECX[15:12]: APIC id bits for cores.
                e.ecx = (e.ecx & !0xF0FF) | (count - 1) | (core_bits << 12);
            }
            LEAF_AMD_TOPOLOGY => {
                e.eax = index;
                e.ebx = index & 0xFF;
                e.ecx = 0;
            }
            _ => {}
        }
    }
    cpuid
}

fn basic(e: &mut kvm_cpuid_entry2, index: u32, count: u32, pvm: bool) {
    // EBX[31:24] initial APIC id, EBX[23:16] logical processors per package.
    e.ebx = (e.ebx & 0xFFFF) | (index << 24) | ((count & 0xFF) << 16);
    e.ecx |= L1_ECX_HYPERVISOR;
    if count > 1 {
        e.edx |= L1_EDX_HTT;
    } else {
        e.edx &= !L1_EDX_HTT;
    }
    if pvm {
        e.ecx &= !(L1_ECX_CX16
            | L1_ECX_PCID
            | L1_ECX_MOVBE
            | L1_ECX_POPCNT
            | L1_ECX_XSAVE
            | L1_ECX_OSXSAVE
            | L1_ECX_AVX
            | L1_ECX_F16C
            | L1_ECX_FMA
            | L1_ECX_RDRAND);
    }
}

fn topology(e: &mut kvm_cpuid_entry2, index: u32, count: u32, core_bits: u32) {
    let (shift, logical, level) = match e.index {
        0 => (0, 1, LEVEL_SMT),
        1 => (core_bits, count, LEVEL_CORE),
        _ => (0, 0, 0),
    };
    e.eax = shift;
    e.ebx = logical;
    e.ecx = (level << 8) | (e.index & 0xFF);
    e.edx = index;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        }
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(LEAF_BASIC, 0),
            entry(LEAF_EXT_FEATURES, 0),
            entry(LEAF_TOPOLOGY, 0),
            entry(LEAF_TOPOLOGY, 1),
            entry(LEAF_KVM_FEATURES, 0),
            entry(LEAF_EXT_BASIC, 0),
        ])
        .unwrap()
    }

    #[test]
    fn apic_id_and_topology_per_vcpu() {
        let c = for_vcpu(&sample(), 3, 4, false);
        assert_eq!(find(&c, LEAF_BASIC, 0).ebx >> 24, 3);
        assert_eq!((find(&c, LEAF_BASIC, 0).ebx >> 16) & 0xFF, 4);
        assert_eq!(find(&c, LEAF_TOPOLOGY, 1).edx, 3);
        assert_eq!(find(&c, LEAF_TOPOLOGY, 1).ebx, 4);
        assert_eq!(
            find(&c, LEAF_TOPOLOGY, 1).eax,
            2,
            "4 cores need 2 APIC id bits"
        );
        assert_ne!(find(&c, LEAF_BASIC, 0).ecx & L1_ECX_CX16, 0, "kept off PVM");
    }

    #[test]
    fn pvm_hides_what_its_emulator_lacks() {
        let c = for_vcpu(&sample(), 0, 1, true);
        let l1 = find(&c, LEAF_BASIC, 0);
        assert_eq!(
            l1.ecx & (L1_ECX_CX16 | L1_ECX_POPCNT | L1_ECX_XSAVE | L1_ECX_RDRAND),
            0
        );
        assert_ne!(l1.ecx & L1_ECX_HYPERVISOR, 0);
        assert_eq!(
            find(&c, LEAF_EXT_FEATURES, 0).ebx & (L7_EBX_ERMS | L7_EBX_SMAP),
            0
        );
        assert_eq!(find(&c, LEAF_EXT_FEATURES, 0).edx & L7_EDX_FSRM, 0);
        assert_eq!(
            find(&c, LEAF_KVM_FEATURES, 0).eax & KVM_FEATURE_PV_SEND_IPI,
            0
        );
        assert_eq!(find(&c, LEAF_EXT_BASIC, 0).edx & LX1_EDX_RDTSCP, 0);
    }

    #[test]
    fn bit_widths() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }
}
