//! Live migration (issue 8 item 3; docs/snapshot.md "Live migration"): the stream of a
//! snapshot, written while the guest runs. Memory goes in passes: the first sends every page
//! that is not all zeros while dirty tracking ([`super::dirty`]) records every write from
//! then on; each later pass re-sends the pages written during the one before, until few are
//! left ([`STOP_PAGES`]) or [`MAX_ROUNDS`] passed. Then the VM is paused, its devices locked
//! and its disks flushed, and the last written pages, the vCPUs and the devices follow: the
//! guest runs nowhere from the pause until the receiver has the end of the stream (the
//! downtime). A receiver reads it with [`crate::Vm::restore`] like any stream: later passes
//! override earlier ones.
//!
//! The sender's VM is left paused after a complete stream: the caller stops it once the
//! receiver confirms (or unpauses it if the receiver refuses). If anything fails before the
//! stream is complete — the receiver goes away, a write fails — tracking is stopped, the VM
//! is unpaused if this call paused it, and it runs on as if nothing happened.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use super::dirty::{DirtyLog, DirtyPages};
use super::stream::{Writer, MAX_MEMORY_CHUNK, TAG_MEMORY_END, TAG_PASS};
use super::{read_guest, write_memory, SnapshotError};
use crate::VmHandle;

/// Most pre-copy passes after the first: a guest that writes faster than the stream carries
/// its pages is paused after this many, whatever is left.
pub const MAX_ROUNDS: u32 = 30;
/// Pre-copy ends when fewer pages than this (1 MiB) were written during a pass: sending them
/// takes about a millisecond, so they go while the VM is paused.
pub const STOP_PAGES: u64 = 256;

/// How [`VmHandle::migrate`] goes about it.
#[derive(Debug)]
pub struct MigrateOptions {
    /// This process's `/proc/self/pagemap`, open (a sandboxed VM process opens it before
    /// the sandbox closes the file system): the write watch that sees the devices' writes
    /// to guest memory reads it. Without it (or without kernel support: Linux 6.7, anonymous
    /// guest memory) memory is copied while the VM is paused, like a snapshot, and
    /// [`MigrateStats::not_live`] says why.
    pub pagemap: Option<File>,
    /// Pre-copy passes after the first at most ([`MAX_ROUNDS`]).
    pub max_rounds: u32,
    /// Pre-copy ends when fewer pages than this were written during a pass
    /// ([`STOP_PAGES`]).
    pub stop_pages: u64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            pagemap: None,
            max_rounds: MAX_ROUNDS,
            stop_pages: STOP_PAGES,
        }
    }
}

/// What a migration did.
#[derive(Debug, Clone, Default)]
pub struct MigrateStats {
    /// Why memory was not copied while the guest ran (`None`: it was).
    pub not_live: Option<String>,
    /// Pre-copy passes after the first.
    pub rounds: u32,
    /// Pages sent in each memory pass, the first and the last (while paused) included.
    pub pass_pages: Vec<u64>,
    /// Bytes of the stream.
    pub bytes: u64,
    /// From the call to the pause.
    pub precopy: Duration,
    /// From the pause to the end of the stream, flushed: the time the guest ran nowhere, less
    /// what the receiver takes after reading the end.
    pub downtime: Duration,
    /// The part of the downtime the vCPUs took to stop (a vCPU thread waiting for a CPU of a
    /// busy host makes it long).
    pub pause: Duration,
}

/// Send the pages of `dirty` (all of them, zero or not: they override what went before).
fn write_pages(
    w: &mut Writer<'_>,
    mem: &GuestMemoryMmap,
    dirty: &DirtyPages,
    buf: &mut [u8],
) -> Result<(), SnapshotError> {
    for (addr, len) in dirty.runs() {
        let chunk = &mut buf[..len as usize];
        read_guest(mem, addr, chunk)?;
        w.memory(addr, chunk)?;
    }
    Ok(())
}

impl VmHandle {
    /// Send the VM to `out` while it runs (see the module documentation): the stream
    /// [`crate::Vm::restore`] reads. Returns with the VM paused after a complete stream (the
    /// caller stops it once the receiver has confirmed, or unpauses it); on an error before
    /// that, the VM runs on (unpaused unless it was paused before the call).
    pub fn migrate(
        &self,
        out: &mut dyn Write,
        opts: MigrateOptions,
    ) -> Result<MigrateStats, SnapshotError> {
        let begin = Instant::now();
        let was_paused = self.is_paused();
        let mut stats = MigrateStats::default();
        let mem = &self.parts.shared.mem;
        let mut log = match (was_paused, opts.pagemap) {
            (true, _) => {
                stats.not_live = Some("the VM is paused".into());
                None
            }
            (false, None) => {
                stats.not_live = Some(
                    "no /proc/self/pagemap was given for the write watch that sees device \
                     writes"
                        .into(),
                );
                None
            }
            (false, Some(pagemap)) => match DirtyLog::start(&self.parts.vm, mem, pagemap) {
                Ok(log) => Some(log),
                Err(why) => {
                    stats.not_live = Some(why);
                    None
                }
            },
        };
        let mut w = self.start_stream(Writer::new(out))?;
        let mut buf = vec![0u8; MAX_MEMORY_CHUNK as usize];
        let mut pending = None;
        if let Some(log) = log.as_mut() {
            // The first pass, while the guest runs: every page written from here on is sent
            // again later.
            let first = write_memory(&mut w, mem)?;
            stats.pass_pages.push(first);
            loop {
                let dirty = log.collect()?;
                let n = dirty.count();
                if n < opts.stop_pages || stats.rounds >= opts.max_rounds {
                    pending = Some(dirty);
                    break;
                }
                w.marker(TAG_PASS)?;
                write_pages(&mut w, mem, &dirty, &mut buf)?;
                stats.rounds += 1;
                stats.pass_pages.push(n);
            }
        }
        let paused_at = Instant::now();
        stats.precopy = paused_at - begin;
        let end = self.with_captured(|c| {
            stats.pause = c.pause;
            match (log.as_mut(), pending) {
                (Some(log), Some(mut dirty)) => {
                    dirty.merge(&log.collect()?);
                    w.marker(TAG_PASS)?;
                    write_pages(&mut w, mem, &dirty, &mut buf)?;
                    stats.pass_pages.push(dirty.count());
                }
                _ => stats.pass_pages.push(write_memory(&mut w, mem)?),
            }
            w.marker(TAG_MEMORY_END)?;
            self.parts.write_state(w, c)
        });
        stats.downtime = paused_at.elapsed();
        // Turning KVM's log off takes a while (it rebuilds its mappings of the slots); the
        // receiver meanwhile has the whole stream.
        drop(log);
        match end {
            Ok(bytes) => {
                stats.bytes = bytes;
                Ok(stats)
            }
            Err(e) => {
                if !was_paused {
                    self.unpause();
                }
                Err(e)
            }
        }
    }
}
