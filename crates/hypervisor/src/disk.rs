//! Disk images (the `disk` crate's backends) as virtio-blk sees them, shared with the VM so
//! they can be flushed when it ends.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use devices::virtio::blk;
use vm_memory::VolatileSlice;

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

impl blk::BlockBackend for DiskBackend {
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
    /// A raw image is read straight into guest memory; other formats go through the bounce
    /// buffer. The device has checked the range against the disk's size.
    fn read_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut image = self.lock();
        match image.raw_file() {
            Some(file) => blk::read_file_vectored(file, bufs, offset),
            None => blk::read_through_bounce(bufs, bounce, |b| image.read_at(b, offset)),
        }
    }
    /// A raw image is written straight from guest memory. The device has checked the range
    /// and refused writes to a read-only disk (whose file is not open for writing anyway).
    fn write_vectored_at(
        &mut self,
        bufs: &[VolatileSlice<'_>],
        offset: u64,
        bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut image = self.lock();
        match image.raw_file() {
            Some(file) => blk::write_file_vectored(file, bufs, offset),
            None => blk::write_through_bounce(bufs, bounce, |b| image.write_at(b, offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::virtio::blk::BlockBackend;
    use disk::Format;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    const SIZE: u64 = 1 << 20;

    /// Raw images move data straight between the file and guest memory, qcow2 images through
    /// the bounce buffer; both read back what was written, across two guest buffers, and a
    /// read past the end of a raw file that shrank is an error, not a panic.
    #[test]
    fn raw_and_qcow2_images_read_and_write_guest_buffers() {
        let dir = std::env::temp_dir().join(format!("hv-disk-test.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        for format in [Format::Raw, Format::Qcow2] {
            let path = dir.join(format!("disk.{}", format.name()));
            match format {
                Format::Raw => disk::create_raw(&path, SIZE).unwrap(),
                Format::Qcow2 => disk::create_qcow2(&path, SIZE).unwrap(),
            }
            let image = disk::open_path(&path, Some(format), true).unwrap();
            assert_eq!(image.raw_file().is_some(), format == Format::Raw);
            let mut backend = DiskBackend::new(image);
            let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
            mem.write_slice(&pattern, GuestAddress(0x1000)).unwrap();
            let two = |a: u64, b: u64| {
                [
                    mem.get_slice(GuestAddress(a), 1024).unwrap(),
                    mem.get_slice(GuestAddress(b), 3072).unwrap(),
                ]
            };
            let mut bounce = Vec::new();
            backend
                .write_vectored_at(&two(0x1000, 0x1400), 8192, &mut bounce)
                .unwrap();
            backend
                .read_vectored_at(&two(0x8000, 0x9000), 8192, &mut bounce)
                .unwrap();
            let mut got = vec![0u8; 4096];
            mem.read_slice(&mut got[..1024], GuestAddress(0x8000))
                .unwrap();
            mem.read_slice(&mut got[1024..], GuestAddress(0x9000))
                .unwrap();
            assert_eq!(got, pattern, "{}", format.name());
            let mut host = vec![0u8; 4096];
            backend.read_at(&mut host, 8192).unwrap();
            assert_eq!(host, pattern, "{}", format.name());
            if format == Format::Raw {
                let on_disk = std::fs::read(&path).unwrap();
                assert_eq!(&on_disk[8192..12288], &pattern[..]);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(4096)
                    .unwrap();
                let e = backend
                    .read_vectored_at(&two(0x8000, 0x9000), 8192, &mut bounce)
                    .unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
