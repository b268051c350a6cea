//! Disk images (the `disk` crate's backends) as virtio-blk sees them, shared with the VM so
//! they can be flushed when it ends.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// A disk image behind a virtio-blk device.
#[derive(Clone)]
pub struct DiskBackend(Arc<Mutex<Box<dyn disk::BlockBackend>>>);

impl DiskBackend {
    /// Share `backend` between its device and the VM.
    pub fn new(backend: Box<dyn disk::BlockBackend>) -> Self {
        DiskBackend(Arc::new(Mutex::new(backend)))
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn disk::BlockBackend>> {
        crate::lock(&self.0)
    }

    /// The image behind the device.
    pub(crate) fn get(&self) -> MutexGuard<'_, Box<dyn disk::BlockBackend>> {
        self.lock()
    }

    /// Write out everything the image format still caches (qcow2 tables and refcounts): a
    /// guest that powers off without a final FLUSH must not leave an inconsistent image.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl devices::virtio::blk::BlockBackend for DiskBackend {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.lock().read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.lock().write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
    fn size(&self) -> u64 {
        self.lock().size()
    }
    fn read_only(&self) -> bool {
        self.lock().read_only()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.lock().discard(offset, len)
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.lock().write_zeroes(offset, len)
    }
}
