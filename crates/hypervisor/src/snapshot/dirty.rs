//! Which guest pages were written since the last look, for live migration's pre-copy.
//!
//! Two sources, merged:
//! - KVM's dirty page log (`KVM_MEM_LOG_DIRTY_PAGES` on every memory slot, read and cleared
//!   with `KVM_GET_DIRTY_LOG`): the guest's own writes and KVM's (kvm-clock pages). It works
//!   on PVM hosts too. It does not see writes through the VMM's own mapping of guest memory —
//!   and the devices write there: a virtio used ring, a status byte, a block read's data,
//!   a received frame, fw_cfg DMA.
//! - The write watch: userfaultfd's asynchronous write protection (`UFFD_FEATURE_WP_ASYNC`,
//!   with `WP_UNPOPULATED` so that never-touched pages count too; Linux 6.7) on the guest
//!   memory mapping, read and re-armed with the `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`
//!   (`PAGE_IS_WRITTEN`, `PM_SCAN_WP_MATCHING`). The kernel resolves each first write to a
//!   protected page itself (no fault reaches this process) and records it, whoever wrote:
//!   a device thread, or the guest through KVM (which faults the page in through the same
//!   mapping). It needs `UFFD_USER_MODE_ONLY` only (no privilege) and an open pagemap.
//!
//! It covers a VM mapped from a snapshot file too (`MAP_PRIVATE` of a regular file: Linux
//! 6.18 write-protects and reports its pages, never-touched ones included). Without the
//! watch, device writes would be lost, so live migration then copies memory while the VM is
//! paused (see `migrate`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::stream::{MAX_MEMORY_CHUNK, PAGE_SIZE};
use super::SnapshotError;
use crate::vm::register_memory;

/// `UFFD_USER_MODE_ONLY`: unprivileged userfaultfd (faults of the kernel itself are not
/// delivered; asynchronous write protection resolves them in the kernel anyway).
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// `UFFD_API` and the features the watch needs.
const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `UFFDIO_REGISTER_MODE_WP`.
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)` and `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `_IOWR('f', 16, struct pm_scan_arg)` on `/proc/<pid>/pagemap`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Written ranges one `PAGEMAP_SCAN` call returns at most (it resumes where it stopped).
const SCAN_BATCH: usize = 512;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// One bit per guest page, per memory region (slot).
pub(crate) struct DirtyPages {
    /// Guest address, length and bitmap of each region, in slot order.
    regions: Vec<(u64, u64, Vec<u64>)>,
}

impl DirtyPages {
    fn new(mem: &GuestMemoryMmap) -> Self {
        DirtyPages {
            regions: mem
                .iter()
                .map(|r| {
                    let pages = r.len().div_ceil(PAGE_SIZE);
                    (
                        r.start_addr().0,
                        r.len(),
                        vec![0; pages.div_ceil(64) as usize],
                    )
                })
                .collect(),
        }
    }

    /// Pages marked.
    pub fn count(&self) -> u64 {
        self.regions
            .iter()
            .flat_map(|(_, _, bits)| bits)
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Add the pages marked in `other` (of the same memory).
    pub fn merge(&mut self, other: &DirtyPages) {
        for ((_, _, a), (_, _, b)) in self.regions.iter_mut().zip(&other.regions) {
            for (x, y) in a.iter_mut().zip(b) {
                *x |= y;
            }
        }
    }

    /// Mark the pages of `slot` whose bits are set in `bitmap` (KVM's layout: bit `i` of
    /// word `i / 64` is page `i`).
    fn or_bitmap(&mut self, slot: usize, bitmap: &[u64]) {
        if let Some((_, _, bits)) = self.regions.get_mut(slot) {
            for (x, y) in bits.iter_mut().zip(bitmap) {
                *x |= y;
            }
        }
    }

    /// Mark pages `first..end` of `slot`.
    fn mark(&mut self, slot: usize, first: u64, end: u64) {
        if let Some((_, len, bits)) = self.regions.get_mut(slot) {
            for p in first..end.min(len.div_ceil(PAGE_SIZE)) {
                bits[(p / 64) as usize] |= 1 << (p % 64);
            }
        }
    }

    /// The marked pages as runs of (guest address, bytes), in address order, each at most
    /// [`MAX_MEMORY_CHUNK`] and inside one region.
    pub fn runs(&self) -> Vec<(u64, u64)> {
        let max = MAX_MEMORY_CHUNK / PAGE_SIZE;
        let mut out = Vec::new();
        for (start, len, bits) in &self.regions {
            let pages = len.div_ceil(PAGE_SIZE);
            let set = |p: u64| bits[(p / 64) as usize] >> (p % 64) & 1 == 1;
            let mut p = 0;
            while p < pages {
                if bits[(p / 64) as usize] == 0 {
                    p = (p / 64 + 1) * 64;
                    continue;
                }
                if !set(p) {
                    p += 1;
                    continue;
                }
                let first = p;
                while p < pages && p - first < max && set(p) {
                    p += 1;
                }
                let end = (p * PAGE_SIZE).min(*len);
                out.push((start + first * PAGE_SIZE, end - first * PAGE_SIZE));
            }
        }
        out
    }
}

/// The write watch over guest memory (see the module documentation).
struct WriteWatch {
    /// Keeps the registration; closing it ends the watch and unprotects the memory.
    _uffd: OwnedFd,
    pagemap: File,
    /// Host address and length of each region, in slot order.
    ranges: Vec<(u64, u64)>,
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

impl WriteWatch {
    /// Protect every region of `mem`; `pagemap` is this process's `/proc/self/pagemap`.
    /// The reason it cannot, for a message, if this host or sandbox does not allow it.
    fn new(mem: &GuestMemoryMmap, pagemap: File) -> Result<Self, String> {
        // SAFETY: userfaultfd takes only flags and returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            return Err(os_error("userfaultfd"));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let want = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: want,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes exactly a `struct uffdio_api`, which `api` is.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, &mut api) } < 0 {
            return Err(os_error(
                "userfaultfd asynchronous write protection (Linux 6.7 or later)",
            ));
        }
        let ranges: Vec<(u64, u64)> = mem.iter().map(|r| (r.as_ptr() as u64, r.len())).collect();
        for &(start, len) in &ranges {
            let mut reg = UffdioRegister {
                start,
                len,
                mode: UFFDIO_REGISTER_MODE_WP,
                ioctls: 0,
            };
            // SAFETY: UFFDIO_REGISTER reads and writes exactly a `struct uffdio_register`;
            // the range is guest memory this process maps for as long as `mem` lives, and the
            // watch only changes how the kernel tracks writes to it.
            if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } < 0 {
                return Err(os_error("write-protecting guest memory"));
            }
        }
        let watch = WriteWatch {
            _uffd: uffd,
            pagemap,
            ranges,
        };
        // Protect everything: what was written before now is of no interest.
        watch
            .scan(|_, _, _| ())
            .map_err(|e| format!("PAGEMAP_SCAN: {e}"))?;
        Ok(watch)
    }

    /// Call `f(slot, first page, end page)` for every range of pages written since the last
    /// scan, protecting them again.
    fn scan(&self, mut f: impl FnMut(usize, u64, u64)) -> io::Result<()> {
        let mut vec = [PageRegion::default(); SCAN_BATCH];
        for (slot, &(base, len)) in self.ranges.iter().enumerate() {
            let end = base + len;
            let mut at = base;
            while at < end {
                let mut arg = PmScanArg {
                    size: std::mem::size_of::<PmScanArg>() as u64,
                    flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                    start: at,
                    end,
                    vec: vec.as_mut_ptr() as u64,
                    vec_len: SCAN_BATCH as u64,
                    category_mask: PAGE_IS_WRITTEN,
                    return_mask: PAGE_IS_WRITTEN,
                    ..Default::default()
                };
                // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` entries to
                // `vec`, which has room for them, and `walk_end` in `arg`; it changes only the
                // write protection of the range, which this watch registered.
                let n = unsafe { libc::ioctl(self.pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                for r in &vec[..(n as usize).min(SCAN_BATCH)] {
                    let first = r.start.saturating_sub(base) / PAGE_SIZE;
                    let last = r.end.saturating_sub(base).div_ceil(PAGE_SIZE);
                    f(slot, first, last);
                }
                if arg.walk_end <= at {
                    break;
                }
                at = arg.walk_end;
            }
        }
        Ok(())
    }
}

/// Dirty tracking of a running VM's memory, on from [`DirtyLog::start`] until dropped.
pub(crate) struct DirtyLog<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    watch: WriteWatch,
}

impl<'a> DirtyLog<'a> {
    /// Start tracking every write to `mem` (the memory slots of `vm`): the write watch over
    /// `pagemap`, and KVM's dirty log. The reason it cannot, for a message.
    pub fn start(vm: &'a VmFd, mem: &'a GuestMemoryMmap, pagemap: File) -> Result<Self, String> {
        let watch = WriteWatch::new(mem, pagemap)?;
        if let Err(e) = register_memory(vm, mem, true) {
            // Some slots may have it on already.
            let _ = register_memory(vm, mem, false);
            return Err(format!("turning on KVM's dirty page log: {e}"));
        }
        Ok(DirtyLog { vm, mem, watch })
    }

    /// The pages written since the last call (or the start); tracking goes on.
    pub fn collect(&mut self) -> Result<DirtyPages, SnapshotError> {
        let mut dirty = DirtyPages::new(self.mem);
        for (slot, region) in self.mem.iter().enumerate() {
            let bitmap = self
                .vm
                .get_dirty_log(slot as u32, region.len() as usize)
                .map_err(|source| SnapshotError::Kvm {
                    what: format!("get dirty log of memory slot {slot}"),
                    source,
                })?;
            dirty.or_bitmap(slot, &bitmap);
        }
        self.watch
            .scan(|slot, first, end| dirty.mark(slot, first, end))
            .map_err(|e| {
                SnapshotError::Read(io::Error::new(e.kind(), format!("PAGEMAP_SCAN: {e}")))
            })?;
        Ok(dirty)
    }
}

impl Drop for DirtyLog<'_> {
    fn drop(&mut self) {
        // The slots stay as they are if KVM refuses (it never does for a flag change): the
        // log then only costs the guest some speed.
        let _ = register_memory(self.vm, self.mem, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn runs_split_at_gaps_regions_and_the_chunk_limit() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 8 << 20),
            (GuestAddress(1 << 32), 1 << 20),
        ])
        .unwrap();
        let mut d = DirtyPages::new(&mem);
        assert_eq!(d.count(), 0);
        assert!(d.runs().is_empty());
        d.mark(0, 1, 3);
        d.mark(0, 100, 100 + 300);
        d.mark(1, 255, 256);
        d.mark(1, 250, 1000); // clipped to the region's 256 pages
        assert_eq!(d.count(), 2 + 300 + 6);
        assert_eq!(
            d.runs(),
            vec![
                (0x1000, 0x2000),
                (100 * 4096, 256 * 4096),
                (356 * 4096, 44 * 4096),
                ((1 << 32) + 250 * 4096, 6 * 4096),
            ]
        );
        let mut e = DirtyPages::new(&mem);
        e.or_bitmap(0, &[1 << 63, 1]);
        d.merge(&e);
        assert_eq!(d.count(), 2 + 300 + 6 + 2);
        assert_eq!(d.runs()[1], (63 * 4096, 2 * 4096));
    }
}
