//! The stream header (docs/snapshot.md): vmd's dump header in our own signature — magic,
//! version and the CPUID leaves the guest was shown — and the receiver's check that this host
//! can show it the same CPU (spec §4.11).

use kvm_bindings::CpuId;

use super::SnapshotError;

/// First bytes of every stream (vmd's is `OpenBSDVMM58`).
pub const SIGNATURE: [u8; 12] = *b"vmd-LinuxKVM";
/// The stream layout this build writes and the only one it reads. Any change to the framing
/// or to a state record (ours or a device's) makes a new version. Version 2 added memory
/// passes (live migration), the memory image (snapshot files) and the end-of-memory marker.
pub const VERSION: u8 = 2;
/// The CPUID leaves the header carries, each with subleaf 0 (vmd's five).
pub const LEAVES: [u32; 5] = [0, 1, 7, 0xd, 0x8000_0001];
/// Bytes of one CPUID record: leaf, subleaf, EAX, EBX, ECX, EDX.
const RECORD_LEN: usize = 24;
/// Bytes before the records: signature, three reserved zero bytes, version.
const PREFIX_LEN: usize = 16;
/// Bytes of the header.
pub const HEADER_LEN: usize = PREFIX_LEN + LEAVES.len() * RECORD_LEN;

/// One CPUID leaf as the guest saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidLeaf {
    pub leaf: u32,
    pub subleaf: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The header of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The leaves of [`LEAVES`], in that order.
    pub cpuid: [CpuidLeaf; LEAVES.len()],
}

/// The [`LEAVES`] of a vCPU's CPUID (zeros for a leaf it does not have).
pub fn leaves(cpuid: &CpuId) -> [CpuidLeaf; LEAVES.len()] {
    LEAVES.map(|leaf| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == leaf && e.index == 0)
            .map_or(
                CpuidLeaf {
                    leaf,
                    ..Default::default()
                },
                |e| CpuidLeaf {
                    leaf,
                    subleaf: 0,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                },
            )
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// The header's bytes: little-endian, packed.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..SIGNATURE.len()].copy_from_slice(&SIGNATURE);
        b[PREFIX_LEN - 1] = VERSION;
        for (i, l) in self.cpuid.iter().enumerate() {
            let at = PREFIX_LEN + i * RECORD_LEN;
            for (j, v) in [l.leaf, l.subleaf, l.eax, l.ebx, l.ecx, l.edx]
                .iter()
                .enumerate()
            {
                b[at + 4 * j..at + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    /// Parse a header: our signature, a version we know, zero reserved bytes and the CPUID
    /// records of [`LEAVES`] in order, subleaf 0.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, SnapshotError> {
        if b[..SIGNATURE.len()] != SIGNATURE {
            return Err(SnapshotError::BadSignature {
                found: b[..SIGNATURE.len()].escape_ascii().to_string(),
            });
        }
        let version = b[PREFIX_LEN - 1];
        if version != VERSION {
            return Err(SnapshotError::UnknownVersion {
                found: version,
                supported: VERSION,
            });
        }
        if b[SIGNATURE.len()..PREFIX_LEN - 1].iter().any(|&x| x != 0) {
            return Err(SnapshotError::BadHeader(
                "reserved bytes are not zero".into(),
            ));
        }
        let mut cpuid = [CpuidLeaf::default(); LEAVES.len()];
        for (i, (l, want)) in cpuid.iter_mut().zip(LEAVES).enumerate() {
            let at = PREFIX_LEN + i * RECORD_LEN;
            let r = |j: usize| u32_at(b, at + 4 * j);
            *l = CpuidLeaf {
                leaf: r(0),
                subleaf: r(1),
                eax: r(2),
                ebx: r(3),
                ecx: r(4),
                edx: r(5),
            };
            if l.leaf != want || l.subleaf != 0 {
                return Err(SnapshotError::BadHeader(format!(
                    "CPUID record {i} is leaf {:#x} subleaf {:#x}, expected leaf {want:#x} subleaf 0",
                    l.leaf, l.subleaf
                )));
            }
        }
        Ok(Header { cpuid })
    }

    /// Refuse a stream whose guest was shown a CPU this host cannot show it (`offered`: what
    /// this host's vCPUs of the same VM get), with vmd's rules (spec §4.11): the same vendor
    /// and at least the same highest leaf (leaf 0); every feature bit of leaves 1, 7 and
    /// 0x80000001; the XSAVE features and area sizes of leaf 0xd.
    pub fn check_cpu(&self, offered: &[CpuidLeaf; LEAVES.len()]) -> Result<(), SnapshotError> {
        for (sent, here) in self.cpuid.iter().zip(offered) {
            let regs = [
                ("EAX", sent.eax, here.eax),
                ("EBX", sent.ebx, here.ebx),
                ("ECX", sent.ecx, here.ecx),
                ("EDX", sent.edx, here.edx),
            ];
            for (register, needed, has) in regs {
                let reason = match (sent.leaf, register) {
                    (0, "EAX") => (needed > has).then(|| {
                        format!("the stream's CPU has leaves up to {needed:#x}, this host up to {has:#x}")
                    }),
                    (0, _) => (needed != has).then(|| {
                        format!("vendor string differs ({needed:#010x} here {has:#010x})")
                    }),
                    (0xd, "EBX" | "ECX") => (needed > has).then(|| {
                        format!("the stream's CPU needs an XSAVE area of {needed} bytes, this host offers {has}")
                    }),
                    // Leaf 1 EAX (signature) and EBX (APIC id, counts) are no features.
                    (1, "EAX" | "EBX") | (7, "EAX") => None,
                    _ => (needed & !has != 0).then(|| {
                        format!(
                            "the stream's CPU has feature bits {:#010x} this host does not offer (it offers {has:#010x})",
                            needed & !has
                        )
                    }),
                };
                if let Some(reason) = reason {
                    return Err(SnapshotError::CpuidMismatch {
                        leaf: sent.leaf,
                        register,
                        reason,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let mut cpuid = LEAVES.map(|leaf| CpuidLeaf {
            leaf,
            ..Default::default()
        });
        cpuid[0] = CpuidLeaf {
            leaf: 0,
            eax: 0x16,
            ebx: 0x756e_6547,
            ecx: 0x6c65_746e,
            edx: 0x4965_6e69,
            subleaf: 0,
        };
        cpuid[1].ecx = 0x8000_2201;
        cpuid[1].edx = 0x078b_fbff;
        cpuid[2].ebx = 0x0000_0209;
        cpuid[3].ebx = 0x240;
        cpuid[3].ecx = 0x340;
        Header { cpuid }
    }

    #[test]
    fn encodes_and_decodes_like_vmds_layout() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[..12], b"vmd-LinuxKVM");
        assert_eq!(b[15], VERSION);
        assert_eq!(HEADER_LEN, 136);
        assert_eq!(u32_at(&b, 16 + 24 * 2), 7, "third record is leaf 7");
        assert_eq!(Header::decode(&b).unwrap(), h);
    }

    #[test]
    fn bad_signature_version_and_records_are_refused() {
        let good = sample().encode();
        let mut b = good;
        b[0] = b'V';
        assert!(matches!(
            Header::decode(&b),
            Err(SnapshotError::BadSignature { .. })
        ));
        let mut b = good;
        b[15] = VERSION + 1;
        let e = Header::decode(&b).unwrap_err();
        assert!(matches!(e, SnapshotError::UnknownVersion { found, .. } if found == VERSION + 1));
        assert!(e.to_string().contains("version 2"), "{e}");
        let mut b = good;
        b[13] = 1;
        assert!(matches!(
            Header::decode(&b),
            Err(SnapshotError::BadHeader(_))
        ));
        let mut b = good;
        b[16 + 24 * 2] = 8;
        let e = Header::decode(&b).unwrap_err();
        assert!(e.to_string().contains("leaf 0x8"), "{e}");
        let mut b = good;
        b[16 + 24 + 4] = 1;
        assert!(Header::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("subleaf 0x1"));
    }

    #[test]
    fn cpu_checks_follow_vmds_rules() {
        let sent = sample();
        let same = sent.cpuid;
        sent.check_cpu(&same).unwrap();
        // More on the receiver is fine.
        let mut more = same;
        more[0].eax += 4;
        more[2].ebx |= 1 << 18;
        more[3].ecx += 64;
        sent.check_cpu(&more).unwrap();
        let refused = |f: fn(&mut [CpuidLeaf; 5])| {
            let mut here = same;
            f(&mut here);
            sent.check_cpu(&here).unwrap_err().to_string()
        };
        let e = refused(|h| h[2].ebx &= !(1 << 9));
        assert!(
            e.contains("leaf 0x7 EBX") && e.contains("0x00000200"),
            "{e}"
        );
        let e = refused(|h| h[0].ebx ^= 1);
        assert!(e.contains("leaf 0x0 EBX") && e.contains("vendor"), "{e}");
        let e = refused(|h| h[0].eax = 0xd);
        assert!(e.contains("leaf 0x0 EAX"), "{e}");
        let e = refused(|h| h[3].ecx = 0x240);
        assert!(e.contains("leaf 0xd ECX") && e.contains("XSAVE"), "{e}");
        let e = refused(|h| h[1].edx &= !1);
        assert!(e.contains("leaf 0x1 EDX"), "{e}");
        // The APIC id and signature of leaf 1 are no features.
        let mut other_cpu = same;
        other_cpu[1].ebx = 0x0100_0800;
        other_cpu[1].eax = 0x906ea;
        sent.check_cpu(&other_cpu).unwrap();
    }
}
