//! Reads arbitrary bytes as a snapshot stream, the way `vmctl receive` hands vmd a file from
//! anyone (issue 8, spec §4.11): errors are fine; panics, unbounded allocations, memory
//! chunks outside the machine's RAM handed on and memory-image tables that do not lay out the
//! machine's RAM back to back are not. The first byte picks how much of a valid stream goes in
//! front of the rest — nothing, the header, the header and a machine record, or those and a
//! memory image's table — so that mutations reach the CPU check, the memory passes, the image
//! and the records; one of its bits makes the sink map the image (the reader then skips it).

#![no_main]

use hypervisor::snapshot::header::{CpuidLeaf, Header, LEAVES};
use hypervisor::snapshot::stream::{Writer, MAX_MEMORY_CHUNK, PAGE_SIZE, TAG_MACHINE};
use hypervisor::snapshot::{
    read_stream, Machine, MemoryImage, PciFunction, SnapshotError, StreamSink,
};
use libfuzzer_sys::fuzz_target;

/// RAM of the machine in the valid prefix.
const MEMORY: u64 = 2 << 20;
/// Mode bit: the sink maps a memory image instead of reading it.
const MAP_IMAGE: u8 = 8;

fn cpuid() -> [CpuidLeaf; 5] {
    LEAVES.map(|leaf| CpuidLeaf {
        leaf,
        eax: 0x16,
        ebx: 0x0000_0209,
        ecx: 0x8000_2201,
        edx: 0x078b_fbff,
        subleaf: 0,
    })
}

/// Checks what `read_stream` promises about what it hands on.
struct Sink {
    machine: Option<Machine>,
    map_image: bool,
}

impl StreamSink for Sink {
    fn machine(&mut self, header: &Header, machine: &Machine) -> Result<(), SnapshotError> {
        // Checked, but not required to pass, so that streams with any CPU reach the rest.
        let _ = header.check_cpu(&cpuid());
        self.machine = Some(machine.clone());
        Ok(())
    }

    fn image(&mut self, image: &MemoryImage) -> Result<bool, SnapshotError> {
        let m = self
            .machine
            .as_ref()
            .expect("an image after the machine record");
        let ram: u64 = image.regions.iter().map(|r| r.len).sum();
        let bios = if m.bios_copy { 2 << 20 } else { 0 };
        assert_eq!(ram, m.memory + bios, "the image is the machine's RAM");
        let mut next = None;
        for r in &image.regions {
            assert!(r.len % PAGE_SIZE == 0);
            assert!(next.is_none_or(|at| r.offset == at), "regions back to back");
            next = Some(r.offset + r.len);
        }
        Ok(self.map_image)
    }

    fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let m = self
            .machine
            .as_ref()
            .expect("memory after the machine record");
        let len = bytes.len() as u64;
        assert!(len > 0 && len <= MAX_MEMORY_CHUNK && len % PAGE_SIZE == 0);
        assert!(addr % PAGE_SIZE == 0);
        // Below 4 GiB RAM ends at the memory size (the machine's RAM is small), or it is
        // the 2 MiB BIOS copy below 4 GiB; above, the rest of RAM.
        let end = addr + len;
        let low = end <= m.memory.min(0xf000_0000);
        let bios = m.bios_copy && addr >= 0xffe0_0000 && end <= 1 << 32;
        let high = addr >= 1 << 32 && end <= (1 << 32) + m.memory.saturating_sub(0xf000_0000);
        assert!(
            low || bios || high,
            "{len:#x} bytes at {addr:#x} outside RAM"
        );
        Ok(())
    }
}

fn prefix(mode: u8) -> Vec<u8> {
    let mut out = Vec::new();
    if mode % 4 == 0 {
        return out;
    }
    // The writer borrows `out` until it is dropped.
    {
        let mut w = Writer::new(&mut out);
        w.header(&Header { cpuid: cpuid() }).unwrap();
        if mode % 4 >= 2 {
            let machine = Machine {
                memory: MEMORY,
                vcpus: 1,
                bios_copy: mode & 4 != 0,
                devices: vec![PciFunction {
                    slot: 1,
                    device_type: 4,
                    features: 1 << 32,
                }],
            };
            w.record(TAG_MACHINE, "machine", &machine).unwrap();
            if mode % 4 == 3 {
                let mut regions = vec![(0, MEMORY)];
                if machine.bios_copy {
                    regions.push((0xffe0_0000, 2 << 20));
                }
                w.image(&regions).unwrap();
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = prefix(mode);
    input.extend_from_slice(rest);
    let mut sink = Sink {
        machine: None,
        map_image: mode & MAP_IMAGE != 0,
    };
    if let Ok(contents) = read_stream(&mut &input[..], &mut sink) {
        assert_eq!(contents.vcpus.len() as u32, contents.machine.vcpus);
    }
});
