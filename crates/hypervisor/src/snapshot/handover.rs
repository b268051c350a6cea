//! Disk hand-over on a receiving host: a disk image may only be opened once the sender has
//! stopped writing it and flushed it — the end of the stream. Until then a [`PendingDisk`]
//! stands in for it (the virtio-blk device is built with its size and read-only flag), and
//! [`Vm::attach_disks`] swaps the real images in before the VM runs. A qcow2 image in
//! particular must not be opened early: its tables would be read before the sender's last
//! writes.

use std::io;

use super::SnapshotError;
use crate::Vm;

/// A disk image not open yet: the size and read-only flag the device shows the guest. I/O
/// fails until [`Vm::attach_disks`] replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingDisk {
    pub size: u64,
    pub read_only: bool,
}

fn not_attached() -> io::Error {
    io::Error::other("the disk image is not attached yet (the VM is still being received)")
}

impl disk::BlockBackend for PendingDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(not_attached())
    }
    fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(not_attached())
    }
    /// Nothing was written: nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(not_attached())
    }
    fn write_zeroes(&mut self, _: u64, _: u64) -> io::Result<()> {
        Err(not_attached())
    }
}

impl Vm {
    /// Put `disks` behind the VM's virtio-blk devices, in order, replacing what they were
    /// built with ([`PendingDisk`]s on a receiving host, once the stream is complete). Each
    /// must have the size and read-only flag of the one it replaces (the guest already saw
    /// them); on a mismatch nothing is replaced.
    pub fn attach_disks(
        &self,
        disks: Vec<Box<dyn disk::BlockBackend>>,
    ) -> Result<(), SnapshotError> {
        let have = &self.parts.disks;
        if disks.len() != have.len() {
            return Err(SnapshotError::Mismatch(format!(
                "{} disk images for {} disks",
                disks.len(),
                have.len()
            )));
        }
        for (i, (new, old)) in disks.iter().zip(have).enumerate() {
            let old = old.get();
            if (new.size(), new.read_only()) != (old.size(), old.read_only()) {
                return Err(SnapshotError::Mismatch(format!(
                    "disk {i}: the image has {} bytes{}, the device {} bytes{}",
                    new.size(),
                    if new.read_only() { ", read-only" } else { "" },
                    old.size(),
                    if old.read_only() { ", read-only" } else { "" },
                )));
            }
        }
        for (new, old) in disks.into_iter().zip(have) {
            *old.get() = new;
        }
        Ok(())
    }
}
