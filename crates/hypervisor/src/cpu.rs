//! Initial vCPU state for each way of entering a guest: segment registers, control
//! registers, boot page tables and GDTs in guest memory, MSRs, FPU and the local APIC.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::Error;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_PS: u64 = 1 << 7;
const PAGE: u64 = 0x1000;
const ENTRIES_PER_TABLE: u64 = 512;
const HUGE_2M: u64 = 2 << 20;
const HUGE_4M: u64 = 4 << 20;

/// GDT descriptors (flags/limit/base packed as the CPU reads them).
const GDT_NULL: u64 = 0;
const GDT_CODE64: u64 = 0x00AF_9B00_0000_FFFF;
const GDT_CODE32: u64 = 0x00CF_9B00_0000_FFFF;
const GDT_DATA: u64 = 0x00CF_9300_0000_FFFF;

const RFLAGS_RESERVED: u64 = 2;

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;

const FPU_CONTROL_WORD: u16 = 0x37f;
const MXCSR_DEFAULT: u32 = 0x1f80;

/// Local APIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// How the boot processor enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit long mode with the first 4 GiB identity-mapped (Linux 64-bit boot protocol):
    /// RSI points at the zero page.
    Linux64 { rip: u64, zero_page: u64 },
    /// 32-bit protected mode, paging off (PVH): EBX points at `hvm_start_info`.
    Pvh32 { rip: u64, start_info: u64 },
    /// vmd's "flat 64" hand-off to an OpenBSD/amd64 kernel (spec §5.3).
    OpenBsd64 { rip: u64, rsp: u64 },
    /// vmd's hand-off to an OpenBSD/i386 kernel: 32-bit, 4 MiB pages, no long mode.
    OpenBsd32 { rip: u64, rsp: u64 },
    /// Real mode at the reset vector: KVM's reset state, left untouched.
    ResetVector,
}

/// Where vmd's OpenBSD boot-loader emulation puts its GDT and page tables (spec §5.3).
pub const OPENBSD_GDT_ADDR: u64 = 0x1_0000;
const OPENBSD_PML4_ADDR: u64 = 0x1_1000;
const OPENBSD_PML3_ADDR: u64 = 0x1_2000;
const OPENBSD_PML2_ADDR: u64 = 0x1_3000;

fn write_u64s(mem: &GuestMemoryMmap, addr: u64, vals: &[u64]) -> Result<(), Error> {
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|e| Error::GuestMemory {
            size: bytes.len() as u64,
            reason: format!("writing boot structures at {addr:#x}: {e}"),
        })
}

/// Identity map of the first 4 GiB with 2 MiB pages: PML4, PDPT, then four PDs.
fn write_linux_page_tables(mem: &GuestMemoryMmap, pml4: u64) -> Result<(), Error> {
    let pdpt = pml4 + PAGE;
    let pd = pdpt + PAGE;
    write_u64s(mem, pml4, &[pdpt | PTE_PRESENT | PTE_WRITE])?;
    let pdpt_entries: Vec<u64> = (0..4)
        .map(|i| (pd + i * PAGE) | PTE_PRESENT | PTE_WRITE)
        .collect();
    write_u64s(mem, pdpt, &pdpt_entries)?;
    let pds: Vec<u64> = (0..4 * ENTRIES_PER_TABLE)
        .map(|i| (i * HUGE_2M) | PTE_PRESENT | PTE_WRITE | PTE_PS)
        .collect();
    write_u64s(mem, pd, &pds)
}

/// vmd's `push_pt_64`: the first 1 GiB in 2 MiB pages.
fn write_openbsd_pt64(mem: &GuestMemoryMmap) -> Result<(), Error> {
    write_u64s(mem, OPENBSD_PML4_ADDR, &[OPENBSD_PML3_ADDR | PTE_PRESENT])?;
    write_u64s(
        mem,
        OPENBSD_PML3_ADDR,
        &[OPENBSD_PML2_ADDR | PTE_PRESENT | PTE_WRITE | PTE_USER],
    )?;
    let pd: Vec<u64> = (0..ENTRIES_PER_TABLE)
        .map(|i| (i * HUGE_2M) | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_PS)
        .collect();
    write_u64s(mem, OPENBSD_PML2_ADDR, &pd)
}

/// vmd's `push_pt_32`: the first 4 GiB in 4 MiB PSE pages, one page directory.
fn write_openbsd_pt32(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let bytes: Vec<u8> = (0..1024u64)
        .flat_map(|i| {
            (((i * HUGE_4M) | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_PS) as u32).to_le_bytes()
        })
        .collect();
    mem.write_slice(&bytes, GuestAddress(OPENBSD_PML3_ADDR))
        .map_err(|e| Error::GuestMemory {
            size: bytes.len() as u64,
            reason: format!("writing i386 page directory: {e}"),
        })
}

/// A segment register loaded from GDT descriptor `desc` with selector `sel`.
fn segment(desc: u64, sel: u16) -> kvm_segment {
    let flags = (desc >> 40) & 0xF0FF;
    kvm_segment {
        base: ((desc >> 16) & 0xFF_FFFF) | (((desc >> 56) & 0xFF) << 24),
        limit: {
            let raw = (desc & 0xFFFF) | (((desc >> 48) & 0xF) << 16);
            if flags & 0x8000 != 0 {
                (raw << 12 | 0xFFF) as u32
            } else {
                raw as u32
            }
        },
        selector: sel,
        type_: (flags & 0xF) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g: ((flags >> 15) & 1) as u8,
        avl: ((flags >> 12) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

/// Write `gdt` at `addr` and load flat segments from it: CS from `code`, the rest from
/// `data` (indices into `gdt`).
fn load_gdt(
    mem: &GuestMemoryMmap,
    sregs: &mut kvm_sregs,
    addr: u64,
    gdt: &[u64],
    code: usize,
    data: usize,
) -> Result<(), Error> {
    write_u64s(mem, addr, gdt)?;
    sregs.gdt.base = addr;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.cs = segment(gdt[code], (code * 8) as u16);
    let ds = segment(gdt[data], (data * 8) as u16);
    sregs.ds = ds;
    sregs.es = ds;
    sregs.fs = ds;
    sregs.gs = ds;
    sregs.ss = ds;
    Ok(())
}

/// Put the boot processor in the state `entry` describes, writing the GDT and page
/// tables that state needs into guest memory.
pub fn setup_boot_cpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: Entry) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(Error::kvm("get sregs"))?;
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    match entry {
        Entry::ResetVector => return Ok(()),
        Entry::Linux64 { rip, zero_page } => {
            let gdt = [GDT_NULL, GDT_NULL, GDT_CODE64, GDT_DATA];
            load_gdt(mem, &mut sregs, crate::layout::BOOT_GDT_ADDR, &gdt, 2, 3)?;
            write_linux_page_tables(mem, crate::layout::BOOT_PML4_ADDR)?;
            long_mode(&mut sregs, crate::layout::BOOT_PML4_ADDR);
            regs.rip = rip;
            regs.rsi = zero_page;
        }
        Entry::Pvh32 { rip, start_info } => {
            let gdt = [GDT_NULL, GDT_CODE32, GDT_DATA];
            load_gdt(mem, &mut sregs, crate::layout::BOOT_GDT_ADDR, &gdt, 1, 2)?;
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = rip;
            regs.rbx = start_info;
        }
        Entry::OpenBsd64 { rip, rsp } => {
            // vmd's GDT: null, 32-bit code (0x8), data (0x10), 64-bit code (0x18); its
            // "flat 64" state runs with selector 0x8 holding long-mode attributes.
            let gdt = [GDT_NULL, GDT_CODE32, GDT_DATA, GDT_CODE64];
            load_gdt(mem, &mut sregs, OPENBSD_GDT_ADDR, &gdt, 1, 2)?;
            sregs.cs = kvm_segment {
                selector: 0x8,
                ..segment(GDT_CODE64, 0x8)
            };
            write_openbsd_pt64(mem)?;
            long_mode(&mut sregs, OPENBSD_PML4_ADDR);
            sregs.cr4 |= CR4_PSE;
            regs.rip = rip;
            regs.rsp = rsp;
        }
        Entry::OpenBsd32 { rip, rsp } => {
            let gdt = [GDT_NULL, GDT_CODE32, GDT_DATA, GDT_CODE64];
            load_gdt(mem, &mut sregs, OPENBSD_GDT_ADDR, &gdt, 1, 2)?;
            write_openbsd_pt32(mem)?;
            sregs.cr3 = OPENBSD_PML3_ADDR;
            sregs.cr4 = CR4_PSE;
            sregs.cr0 = CR0_PE | CR0_PG | CR0_ET;
            sregs.efer = 0;
            regs.rip = rip;
            regs.rsp = rsp;
        }
    }
    vcpu.set_sregs(&sregs).map_err(Error::kvm("set sregs"))?;
    vcpu.set_regs(&regs).map_err(Error::kvm("set regs"))
}

fn long_mode(sregs: &mut kvm_sregs, cr3: u64) {
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_PG | CR0_ET | CR0_NE;
    sregs.efer = EFER_LME | EFER_LMA;
}

/// FPU, MSR and LAPIC state every vCPU starts with. LINT0 delivers the PIC's ExtINT and
/// LINT1 NMIs (virtual-wire mode), which guests that never program the APIC rely on.
pub fn setup_common(vcpu: &VcpuFd) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::kvm("set FPU"))?;

    let entries = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&entries).map_err(|e| Error::Device {
        what: "MSR list",
        reason: format!("{e:?}"),
    })?;
    // Hosts may refuse some MSRs (PVM does not virtualise all of them); a guest copes
    // without each one, so a partial write is not fatal.
    vcpu.set_msrs(&msrs).map_err(Error::kvm("set MSRs"))?;

    let mut lapic = vcpu.get_lapic().map_err(Error::kvm("get LAPIC"))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT_LINT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(Error::kvm("set LAPIC"))
}

fn set_lvt_mode(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut raw = [0u8; 4];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = regs[offset + i] as u8;
    }
    let val = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (i, b) in val.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *b as std::os::raw::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_decodes_flat_descriptors() {
        let cs = segment(GDT_CODE64, 0x10);
        assert_eq!(
            (cs.base, cs.limit, cs.l, cs.db, cs.g, cs.type_),
            (0, 0xFFFF_FFFF, 1, 0, 1, 0xB)
        );
        let ds = segment(GDT_DATA, 0x18);
        assert_eq!(
            (ds.limit, ds.db, ds.s, ds.present, ds.type_),
            (0xFFFF_FFFF, 1, 1, 1, 3)
        );
        let c32 = segment(GDT_CODE32, 8);
        assert_eq!((c32.l, c32.db), (0, 1));
    }

    #[test]
    fn lvt_mode_is_set_without_touching_other_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT_LINT0] = 0x30;
        regs[APIC_LVT_LINT0 + 2] = 1; // mask bit (16)
        set_lvt_mode(&mut regs, APIC_LVT_LINT0, APIC_MODE_EXTINT);
        assert_eq!(regs[APIC_LVT_LINT0 + 1] as u8, 0x07);
        assert_eq!(regs[APIC_LVT_LINT0] as u8, 0x30);
        assert_eq!(regs[APIC_LVT_LINT0 + 2], 1);
    }
}
