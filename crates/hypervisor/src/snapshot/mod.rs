//! Snapshots (issue 8 item 1; spec §4.11, F-LIFE-22): the state of a paused VM as a byte
//! stream — every vCPU, the in-kernel interrupt controllers, PIT and clock, guest memory and
//! every device — and a new VM built from one that continues where the old one stopped.
//!
//! [`VmHandle::snapshot`] writes a stream; [`Vm::restore`] builds the VM its configuration
//! describes and loads a stream into it instead of booting; [`read_stream`] parses and checks
//! a stream without KVM (what restore and the fuzz target use). docs/snapshot.md describes
//! the format: a header like vmd's (signature, version, the guest's CPUID leaves, checked
//! against this host's), then length-prefixed sections, then a CRC-32. Streams are
//! untrusted: every length, count and address is checked against the limits in [`stream`]
//! before use, and a restore that fails anywhere leaves no VM behind.
//!
//! The same stream written while the guest runs is a live migration ([`VmHandle::migrate`],
//! `migrate.rs`, with dirty tracking in `dirty.rs`); written to a regular file with guest RAM
//! page-aligned ([`VmHandle::snapshot_file`]) it is a snapshot file whose RAM
//! [`Vm::restore_file`] maps instead of reading (`file.rs`). [`PendingDisk`] and
//! [`Vm::attach_disks`] let a receiver open the disk images only once the stream is complete
//! (`handover.rs`).

mod devices;
mod dirty;
mod file;
mod handover;
pub mod header;
mod migrate;
pub mod stream;
mod vcpu;
mod vm_state;

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::devices::pci::PciRoot;
use ::devices::virtio::VirtioPciDevice;
use ::devices::{AcpiPm, FwCfg, Rtc, Serial, StateError, I8042};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

pub use self::devices::DevicesState;
pub use handover::PendingDisk;
pub use header::{CpuidLeaf, Header};
pub use migrate::{MigrateOptions, MigrateStats, MAX_ROUNDS, STOP_PAGES};
pub use stream::MemoryImage;
pub use vcpu::VcpuState;
pub use vm_state::VmState;

use crate::disk::DiskBackend;
use crate::error::Error;
use crate::layout::MemoryLayout;
use crate::pci::PciDevices;
use crate::platform::Platform;
use crate::vcpu::Shared;
use crate::{cpuid, firmware, lock, Vm, VmConfig, VmHandle};
use stream::{
    Reader, Writer, MAX_MEMORY_CHUNK, MAX_MEMORY_PASSES, PAGE_SIZE, TAG_DEVICES, TAG_END,
    TAG_IMAGE, TAG_MACHINE, TAG_MEMORY, TAG_MEMORY_END, TAG_PASS, TAG_VCPU, TAG_VM,
};

/// Why a snapshot could not be written or a stream not restored, naming the part.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The stream does not start with our signature.
    #[error("not a VM snapshot stream (it starts with \"{found}\")")]
    BadSignature { found: String },
    /// A stream version this build does not read.
    #[error("snapshot stream version {found}: this vmd reads version {supported} only")]
    UnknownVersion { found: u8, supported: u8 },
    /// The header's other fields are wrong.
    #[error("snapshot header: {0}")]
    BadHeader(String),
    /// The guest was shown a CPU this host cannot show it.
    #[error("incompatible CPU: CPUID leaf {leaf:#x} {register}: {reason}")]
    CpuidMismatch {
        leaf: u32,
        register: &'static str,
        reason: String,
    },
    /// The stream ends in the middle of `what`.
    #[error("snapshot stream truncated in {what}")]
    Truncated { what: &'static str },
    /// A length or count beyond its limit.
    #[error("snapshot stream: {what} of {len} is over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        len: u64,
        limit: u64,
    },
    /// A section or record that does not parse or is out of place.
    #[error("snapshot stream: {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// The stream's checksum does not match its bytes.
    #[error(
        "snapshot stream corrupted: checksum {recorded:#010x}, the bytes give {computed:#010x}"
    )]
    Checksum { recorded: u32, computed: u32 },
    /// The stream is of a VM other than the one configured to receive it.
    #[error("snapshot does not fit this VM: {0}")]
    Mismatch(String),
    /// A device refused its record.
    #[error("snapshot: {0}")]
    Device(#[from] StateError),
    /// A KVM state ioctl failed.
    #[error("snapshot: KVM {what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The VM's vCPUs are not all parked (it was never run, or it is ending).
    #[error("snapshot: the VM is not paused")]
    NotPaused,
    /// Building or pausing the VM failed.
    #[error(transparent)]
    Vm(#[from] Error),
    /// Reading the stream failed.
    #[error("reading the snapshot stream: {0}")]
    Read(#[source] io::Error),
    /// Writing the stream failed.
    #[error("writing the snapshot stream: {0}")]
    Write(#[source] io::Error),
}

/// A virtio function on bus 0, as the machine record lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciFunction {
    pub slot: u8,
    /// Virtio device type (2 block, 4 entropy, 0xffff vmmci, ...).
    pub device_type: u32,
    /// The feature bits the device offers.
    pub features: u64,
}

impl fmt::Display for PciFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {} virtio type {:#x}", self.slot, self.device_type)
    }
}

/// The shape of the VM: what a receiver must build before loading the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Guest RAM in bytes.
    pub memory: u64,
    pub vcpus: u32,
    /// Whether the BIOS copy below 4 GiB is backed (a BIOS boot).
    pub bios_copy: bool,
    /// The virtio functions in slot order.
    pub devices: Vec<PciFunction>,
}

impl Machine {
    /// The guest memory regions, after checking the record against the limits.
    fn regions(&self) -> Result<Vec<(u64, u64)>, SnapshotError> {
        let malformed = |reason: String| SnapshotError::Malformed {
            what: "the machine record",
            reason,
        };
        let layout = MemoryLayout::new(self.memory).map_err(|e| malformed(e.to_string()))?;
        if layout.size != self.memory {
            return Err(malformed(format!(
                "{} bytes of memory is no whole MiB",
                self.memory
            )));
        }
        if self.vcpus == 0 || self.vcpus > firmware::MAX_CPUS {
            return Err(malformed(format!(
                "{} vCPUs (1 to {})",
                self.vcpus,
                firmware::MAX_CPUS
            )));
        }
        if self.devices.len() >= ::devices::pci::PCI_SLOTS {
            return Err(SnapshotError::TooLarge {
                what: "the PCI function list",
                len: self.devices.len() as u64,
                limit: ::devices::pci::PCI_SLOTS as u64 - 1,
            });
        }
        Ok(layout.regions(self.bios_copy))
    }
}

/// Everything in a stream besides guest memory, read and checked.
pub struct Contents {
    pub header: Header,
    pub machine: Machine,
    pub vcpus: Vec<VcpuState>,
    pub vm: VmState,
    pub devices: DevicesState,
}

/// What [`read_stream`] hands over as it reads.
pub trait StreamSink {
    /// The header and machine record, checked against the limits: refuse them, or get ready
    /// for guest memory.
    fn machine(&mut self, header: &Header, machine: &Machine) -> Result<(), SnapshotError>;
    /// A memory image (a snapshot file's RAM), its table checked against the machine: return
    /// true to map its bytes from the file yourself (the reader then skips them), false to get
    /// its non-zero pages through [`StreamSink::memory`].
    fn image(&mut self, _image: &MemoryImage) -> Result<bool, SnapshotError> {
        Ok(false)
    }
    /// Guest memory at `addr`: whole pages inside one of the machine's RAM regions, above
    /// every earlier chunk of the same pass (a later pass overrides earlier ones).
    fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError>;
}

/// Read a whole stream: header, machine record, guest memory (to `sink` as it comes, so no
/// more than [`MAX_MEMORY_CHUNK`] of it is held), one record per vCPU, the VM and devices
/// records, and the end with its checksum. Nothing after the end is read.
pub fn read_stream(
    input: &mut dyn Read,
    sink: &mut dyn StreamSink,
) -> Result<Contents, SnapshotError> {
    read_from(Reader::new(input), sink)
}

fn read_from(mut r: Reader<'_>, sink: &mut dyn StreamSink) -> Result<Contents, SnapshotError> {
    let header = r.header()?;
    let s = r.expect(TAG_MACHINE, "the machine record")?;
    let machine: Machine = r.record(s, "the machine record")?;
    let regions = machine.regions()?;
    sink.machine(&header, &machine)?;

    let mut buf = Vec::new();
    let mut next_free = 0u64;
    let mut passes = 1;
    let mut s = r.section("guest memory")?;
    if s.tag == TAG_IMAGE {
        let image = r.image(s, &regions)?;
        if sink.image(&image)? {
            let left = image.payload_at + image.payload_len() - r.position();
            r.skip(left, "the memory image")?;
        } else {
            read_image(&mut r, &image, sink)?;
        }
        // The image was the first pass, whole: more memory needs a new pass.
        next_free = u64::MAX;
        s = r.section("guest memory")?;
    }
    loop {
        match s.tag {
            TAG_MEMORY => {
                let (addr, bytes) = r.memory(s, &mut buf)?;
                let len = bytes.len() as u64;
                let end = addr.checked_add(len).filter(|_| len > 0);
                let inside = end.is_some_and(|end| {
                    regions
                        .iter()
                        .any(|&(start, size)| addr >= start && end <= start + size)
                });
                if !addr.is_multiple_of(PAGE_SIZE)
                    || !len.is_multiple_of(PAGE_SIZE)
                    || !inside
                    || addr < next_free
                {
                    return Err(SnapshotError::Malformed {
                        what: "guest memory",
                        reason: format!(
                            "{len:#x} bytes at {addr:#x}: not whole pages of RAM above \
                             {next_free:#x}"
                        ),
                    });
                }
                sink.memory(addr, bytes)?;
                next_free = end.unwrap_or(u64::MAX);
            }
            TAG_PASS => {
                r.marker(s, "a memory pass")?;
                passes += 1;
                if passes > MAX_MEMORY_PASSES {
                    return Err(SnapshotError::TooLarge {
                        what: "the number of memory passes",
                        len: passes.into(),
                        limit: MAX_MEMORY_PASSES.into(),
                    });
                }
                next_free = 0;
            }
            TAG_MEMORY_END => {
                r.marker(s, "the end of memory")?;
                break;
            }
            other => {
                return Err(SnapshotError::Malformed {
                    what: "guest memory",
                    reason: format!("a section with tag {other:#x} before the end of memory"),
                })
            }
        }
        s = r.section("guest memory")?;
    }
    let mut s = r.section("the vCPU records")?;
    let mut vcpus = Vec::with_capacity(machine.vcpus as usize);
    for _ in 0..machine.vcpus {
        if s.tag != TAG_VCPU {
            return Err(SnapshotError::Malformed {
                what: "the vCPU records",
                reason: format!(
                    "{} of {} vCPUs, then tag {:#x}",
                    vcpus.len(),
                    machine.vcpus,
                    s.tag
                ),
            });
        }
        vcpus.push(r.record(s, "a vCPU record")?);
        s = r.section("the vCPU records")?;
    }
    if s.tag != TAG_VM {
        return Err(SnapshotError::Malformed {
            what: "the VM record",
            reason: format!("found tag {:#x} instead", s.tag),
        });
    }
    let vm = r.record(s, "the VM record")?;
    let s = r.expect(TAG_DEVICES, "the devices record")?;
    let devices = r.record(s, "the devices record")?;
    let s = r.expect(TAG_END, "the end")?;
    r.end(s)?;
    Ok(Contents {
        header,
        machine,
        vcpus,
        vm,
        devices,
    })
}

/// Read a memory image's RAM in chunks and hand its non-zero pages to `sink`.
fn read_image(
    r: &mut Reader<'_>,
    image: &MemoryImage,
    sink: &mut dyn StreamSink,
) -> Result<(), SnapshotError> {
    let page = PAGE_SIZE as usize;
    let mut buf = vec![0u8; MAX_MEMORY_CHUNK as usize];
    for region in &image.regions {
        let mut off = 0;
        while off < region.len {
            let n = (region.len - off).min(MAX_MEMORY_CHUNK) as usize;
            let chunk = &mut buf[..n];
            r.image_bytes(chunk)?;
            for_nonzero_runs(chunk, page, |at, run| {
                sink.memory(region.addr + off + at as u64, run)
            })?;
            off += n as u64;
        }
    }
    Ok(())
}

/// Call `f` with the offset and bytes of every run of pages of `chunk` that are not all
/// zeros (the last page may be short).
fn for_nonzero_runs(
    chunk: &[u8],
    page: usize,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), SnapshotError>,
) -> Result<(), SnapshotError> {
    let n = chunk.len();
    let zero = |p: usize| stream::is_zero(&chunk[p..(p + page).min(n)]);
    let mut p = 0;
    while p < n {
        if zero(p) {
            p += page;
            continue;
        }
        let run = p;
        while p < n && !zero(p) {
            p += page;
        }
        f(run, &chunk[run..p.min(n)])?;
    }
    Ok(())
}

/// How a VM was built, as a snapshot records it.
pub(crate) struct Shape {
    pub layout: MemoryLayout,
    pub vcpus: u32,
    pub bios_copy: bool,
    /// What vCPU 0 was given: the header's CPUID leaves come from it.
    pub vcpu0_cpuid: CpuId,
    /// The disk images behind the virtio-blk devices.
    pub disks: Vec<DiskBackend>,
}

/// What a snapshot reads and a restore loads, shared by a [`Vm`] and its handles.
pub(crate) struct Parts {
    pub vm: Arc<VmFd>,
    pub shared: Arc<Shared>,
    pub machine: Machine,
    pub cpuid: [CpuidLeaf; header::LEAVES.len()],
    /// The MSRs KVM saves (`KVM_GET_MSR_INDEX_LIST`).
    pub msr_indices: Vec<u32>,
    pub serial: Arc<Mutex<Serial>>,
    pub rtc: Arc<Mutex<Rtc>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub pm: Arc<Mutex<AcpiPm>>,
    pub fw_cfg: Arc<Mutex<FwCfg>>,
    pub pci_root: Arc<Mutex<PciRoot>>,
    pub transports: Vec<(u8, Arc<Mutex<VirtioPciDevice>>)>,
    /// The disk images, flushed before a stream ends and swapped in by
    /// [`Vm::attach_disks`].
    pub disks: Vec<DiskBackend>,
}

impl Parts {
    pub fn new(
        kvm: &Kvm,
        vm: &Arc<VmFd>,
        shared: &Arc<Shared>,
        platform: &Platform,
        fw_cfg: Arc<Mutex<FwCfg>>,
        pci: &PciDevices,
        shape: Shape,
    ) -> Result<Self, Error> {
        let msr_indices = kvm
            .get_msr_index_list()
            .map_err(Error::kvm("get MSR index list"))?
            .as_slice()
            .to_vec();
        let devices = pci
            .transports
            .iter()
            .map(|(slot, t)| {
                let d = lock(t).device();
                let d = lock(&d);
                PciFunction {
                    slot: *slot,
                    device_type: d.device_type(),
                    features: d.features(),
                }
            })
            .collect();
        Ok(Parts {
            vm: vm.clone(),
            shared: shared.clone(),
            machine: Machine {
                memory: shape.layout.size,
                vcpus: shape.vcpus,
                bios_copy: shape.bios_copy,
                devices,
            },
            cpuid: header::leaves(&shape.vcpu0_cpuid),
            msr_indices,
            serial: platform.serial(),
            rtc: platform.rtc(),
            i8042: platform.i8042(),
            pm: platform.pm(),
            fw_cfg,
            pci_root: pci.root.clone(),
            transports: pci.transports.clone(),
            disks: shape.disks,
        })
    }
}

/// Write every RAM region's pages that are not all zeros, in address order, in runs of at
/// most [`MAX_MEMORY_CHUNK`]; returns how many pages that was.
fn write_memory(w: &mut Writer<'_>, mem: &GuestMemoryMmap) -> Result<u64, SnapshotError> {
    let mut buf = vec![0u8; MAX_MEMORY_CHUNK as usize];
    let mut pages = 0;
    for region in mem.iter() {
        let start = region.start_addr().0;
        let len = region.len();
        let mut off = 0;
        while off < len {
            let n = (len - off).min(MAX_MEMORY_CHUNK) as usize;
            let chunk = &mut buf[..n];
            read_guest(mem, start + off, chunk)?;
            for_nonzero_runs(chunk, PAGE_SIZE as usize, |at, run| {
                pages += (run.len() as u64).div_ceil(PAGE_SIZE);
                w.memory(start + off + at as u64, run)
            })?;
            off += n as u64;
        }
    }
    Ok(pages)
}

/// Copy guest memory at `addr` into `buf`.
fn read_guest(mem: &GuestMemoryMmap, addr: u64, buf: &mut [u8]) -> Result<(), SnapshotError> {
    mem.read_slice(buf, GuestAddress(addr))
        .map_err(|e| SnapshotError::Read(io::Error::other(e.to_string())))
}

/// A paused VM's state besides its memory, read with every device locked: while the
/// [`devices::Quiesced`] guards live, nothing changes guest memory.
struct Captured {
    vcpus: Vec<VcpuState>,
    vm: VmState,
    devices: DevicesState,
    /// How long the vCPUs took to stop.
    pause: Duration,
}

impl Parts {
    /// Flush every disk image: what the guest wrote is in the files before a stream that
    /// includes it is complete.
    fn flush_disks(&self) -> Result<(), SnapshotError> {
        for d in &self.disks {
            d.flush()
                .map_err(|e| SnapshotError::Vm(Error::host("flushing a disk image")(e)))?;
        }
        Ok(())
    }

    /// Write the records that follow guest memory, then the end; returns the stream's size.
    fn write_state(&self, mut w: Writer<'_>, c: &Captured) -> Result<u64, SnapshotError> {
        for v in &c.vcpus {
            w.record(TAG_VCPU, "a vCPU record", v)?;
        }
        w.record(TAG_VM, "the VM record", &c.vm)?;
        w.record(TAG_DEVICES, "the devices record", &c.devices)?;
        w.finish()
    }
}

impl VmHandle {
    /// Pause the VM (if it runs) and call `f` with its state while every device is locked
    /// and every disk image flushed; the VM stays paused.
    fn with_captured<R>(
        &self,
        f: impl FnOnce(&Captured) -> Result<R, SnapshotError>,
    ) -> Result<R, SnapshotError> {
        let asked = Instant::now();
        self.pause()?;
        let pause = asked.elapsed();
        let parts = &self.parts;
        let paused_clock = *lock(&self.clock);
        let clock = match paused_clock {
            Some(c) => c,
            None => parts.vm.get_clock().map_err(|source| SnapshotError::Kvm {
                what: "get clock".into(),
                source,
            })?,
        };
        let vcpus = parts
            .shared
            .pause
            .with_parked(parts.machine.vcpus, |fds| {
                fds.iter()
                    .enumerate()
                    .map(|(i, fd)| VcpuState::capture(fd, &parts.msr_indices, i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .ok_or(SnapshotError::NotPaused)??;
        let virtio = parts.virtio_devices();
        let quiet = parts.quiesce(&virtio);
        let vm = VmState::capture(&parts.vm, clock)?;
        let devices = quiet.state(parts);
        parts.flush_disks()?;
        f(&Captured {
            vcpus,
            vm,
            devices,
            pause,
        })
    }

    /// The header and machine record every stream starts with.
    fn start_stream<'w>(&self, mut w: Writer<'w>) -> Result<Writer<'w>, SnapshotError> {
        w.header(&Header {
            cpuid: self.parts.cpuid,
        })?;
        w.record(TAG_MACHINE, "the machine record", &self.parts.machine)?;
        Ok(w)
    }

    /// Write the VM's state to `out` (docs/snapshot.md). Pauses the VM if it runs and leaves
    /// it paused: the caller stops it (`vmctl send`) or unpauses it (a checkpoint). While the
    /// stream is written the devices do no work (console input and queue notifications wait),
    /// and the disk images are flushed before it ends.
    pub fn snapshot(&self, out: &mut dyn Write) -> Result<(), SnapshotError> {
        self.with_captured(|c| {
            let mut w = self.start_stream(Writer::new(out))?;
            write_memory(&mut w, &self.parts.shared.mem)?;
            w.marker(TAG_MEMORY_END)?;
            self.parts.write_state(w, c)
        })
        .map(drop)
    }

    /// [`VmHandle::snapshot`] into a regular file, from its current position (anything after
    /// it is cut off), with guest RAM as a memory image: whole, uncompressed, page-aligned in
    /// the file, zero pages left as holes, so that [`Vm::restore_file`] maps it instead of
    /// reading it. `after_header` is the caller's own framing, written as it is right after
    /// the header (vmd's VM definition block; empty for a plain stream). [`Vm::restore`]
    /// reads such a stream too (from a pipe, say).
    pub fn snapshot_file(&self, file: &File, after_header: &[u8]) -> Result<(), SnapshotError> {
        self.with_captured(|c| {
            let mut w = Writer::for_file(file)?;
            w.header(&Header {
                cpuid: self.parts.cpuid,
            })?;
            w.framing(after_header)?;
            w.record(TAG_MACHINE, "the machine record", &self.parts.machine)?;
            let mem = &self.parts.shared.mem;
            let regions: Vec<(u64, u64)> =
                mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
            w.image(&regions)?;
            let mut buf = vec![0u8; MAX_MEMORY_CHUNK as usize];
            for &(start, len) in &regions {
                let mut off = 0;
                while off < len {
                    let n = (len - off).min(MAX_MEMORY_CHUNK) as usize;
                    read_guest(mem, start + off, &mut buf[..n])?;
                    w.image_bytes(&buf[..n])?;
                    off += n as u64;
                }
            }
            w.marker(TAG_MEMORY_END)?;
            self.parts.write_state(w, c)
        })
        .map(drop)
    }
}

/// Builds the VM the stream describes, once it knows where guest memory comes from, and
/// fills its memory.
struct Restorer<'f> {
    cfg: Option<VmConfig>,
    /// The machine record, checked against `cfg` and this host.
    machine: Option<Machine>,
    vm: Option<Vm>,
    /// Restoring from a file: a memory image in it is mapped, not read.
    file: Option<file::Source<'f>>,
}

impl Restorer<'_> {
    /// Build the VM on `mem` (fresh memory if `None`) and check its devices against the
    /// stream's.
    fn build(&mut self, mem: Option<GuestMemoryMmap>) -> Result<&Vm, SnapshotError> {
        let (Some(cfg), Some(machine)) = (self.cfg.take(), self.machine.as_ref()) else {
            return Err(SnapshotError::Malformed {
                what: "guest memory",
                reason: "before the machine record".into(),
            });
        };
        let vm = Vm::build_with(cfg, false, mem)?;
        let here = &vm.parts.machine.devices;
        if *here != machine.devices {
            let list = |d: &[PciFunction]| {
                d.iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(SnapshotError::Mismatch(format!(
                "the stream's PCI devices are [{}], this VM's [{}]",
                list(&machine.devices),
                list(here)
            )));
        }
        Ok(self.vm.insert(vm))
    }

    /// The VM, built on fresh memory if it is not yet.
    fn vm(&mut self) -> Result<&Vm, SnapshotError> {
        if self.vm.is_none() {
            self.build(None)?;
        }
        self.vm.as_ref().ok_or(SnapshotError::Malformed {
            what: "the machine record",
            reason: "missing".into(),
        })
    }
}

impl StreamSink for Restorer<'_> {
    fn machine(&mut self, header: &Header, machine: &Machine) -> Result<(), SnapshotError> {
        let (Some(cfg), None) = (self.cfg.as_mut(), &self.machine) else {
            return Err(SnapshotError::Malformed {
                what: "the machine record",
                reason: "a second one".into(),
            });
        };
        let memory = MemoryLayout::new(cfg.memory)?.size;
        if (memory, cfg.vcpus) != (machine.memory, machine.vcpus) {
            return Err(SnapshotError::Mismatch(format!(
                "the stream's VM has {} MiB and {} vCPUs, this one {} MiB and {}",
                machine.memory >> 20,
                machine.vcpus,
                memory >> 20,
                cfg.vcpus
            )));
        }
        let bios = cfg.boot.kind == crate::BootKind::Bios;
        if bios != machine.bios_copy {
            return Err(SnapshotError::Mismatch(format!(
                "the stream's VM {} from a BIOS, this one {}",
                if machine.bios_copy {
                    "booted"
                } else {
                    "did not boot"
                },
                if bios { "does" } else { "does not" }
            )));
        }
        let kvm = match cfg.kvm.take() {
            Some(k) => k,
            None => Kvm::new().map_err(Error::Kvm)?,
        };
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("get supported CPUID"))?;
        cfg.kvm = Some(kvm);
        let offered = header::leaves(&cpuid::for_vcpu(
            &supported,
            0,
            machine.vcpus,
            cpuid::host_is_pvm(),
        ));
        header.check_cpu(&offered)?;
        self.machine = Some(machine.clone());
        // A stream's memory is read into fresh memory: build now, so that a VM this host
        // cannot build is refused before its memory is read. A file waits for its image.
        if self.file.is_none() {
            self.build(None)?;
        }
        Ok(())
    }

    fn image(&mut self, image: &MemoryImage) -> Result<bool, SnapshotError> {
        match self.file.as_ref() {
            Some(source) => {
                let mem = source.map(image)?;
                self.build(Some(mem))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mem = &self.vm()?.parts.shared.mem;
        // Fresh memory faults a page at a time as it is written; populating the chunk in one
        // call first is about twice as fast (Linux 5.14; a hint: an older kernel refuses it
        // and the copy faults the pages in).
        if let Ok(host) = mem.get_host_address(GuestAddress(addr)) {
            // SAFETY: the reader checked that the chunk lies inside one region of `mem`,
            // which `host` points into; populating changes no contents.
            unsafe { libc::madvise(host.cast(), bytes.len(), libc::MADV_POPULATE_WRITE) };
        }
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|e| SnapshotError::Malformed {
                what: "guest memory",
                reason: format!("{:#x} bytes at {addr:#x}: {e}", bytes.len()),
            })
    }
}

impl Vm {
    /// Build the VM `cfg` describes and load the stream `input` into it instead of booting
    /// `cfg.boot` (whose kind must still say whether the VM booted from a BIOS): the
    /// returned VM [`Vm::run`]s on from where the snapshot was taken. `cfg.memory` and
    /// `cfg.vcpus` must be the stream's, and its devices (disks, NICs, CD-ROM) the same kinds
    /// in the same order; their backing files are the caller's, as in vmd, which re-opens
    /// them (the stream holds no disk data; [`PendingDisk`] stands in for an image that may
    /// only be opened once the stream is complete). Any error leaves nothing behind.
    pub fn restore(cfg: VmConfig, input: &mut dyn Read) -> Result<Vm, SnapshotError> {
        Self::restore_from(cfg, Reader::new(input), None)
    }

    /// [`Vm::restore`] from a regular file: the stream starts with `read`, the bytes of it
    /// the caller read already (vmd reads and checks the header, then its own block; empty
    /// if none), and goes on in `file` from its current position. A memory image
    /// ([`VmHandle::snapshot_file`]) is checked (the machine's RAM, page-aligned in the file,
    /// inside it) and mapped copy-on-write (`MAP_PRIVATE`) instead of read, so the VM is ready
    /// at once and pages come in from the file as the guest touches them; the guest's writes
    /// never reach the file. The file must not shrink while the VM runs (the guest would
    /// fault on the pages gone). Other streams are read as by [`Vm::restore`].
    pub fn restore_file(cfg: VmConfig, read: &[u8], file: &File) -> Result<Vm, SnapshotError> {
        let source = file::Source::new(file, read.len())?;
        Self::restore_from(cfg, Reader::for_file(read, file), Some(source))
    }

    fn restore_from(
        cfg: VmConfig,
        reader: Reader<'_>,
        file: Option<file::Source<'_>>,
    ) -> Result<Vm, SnapshotError> {
        let mut r = Restorer {
            cfg: Some(cfg),
            machine: None,
            vm: None,
            file,
        };
        let contents = read_from(reader, &mut r)?;
        r.vm()?;
        let vm = r.vm.take().ok_or(SnapshotError::Malformed {
            what: "the machine record",
            reason: "missing".into(),
        })?;
        let parts = vm.parts.clone();
        contents.vm.restore_chips(&parts.vm)?;
        for (i, (fd, state)) in vm.vcpus.iter().zip(&contents.vcpus).enumerate() {
            state.restore(fd, i)?;
        }
        devices::restore(&parts, &contents.devices)?;
        contents.vm.restore_clock(&parts.vm)?;
        Ok(vm)
    }
}
