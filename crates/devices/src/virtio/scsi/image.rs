//! The medium: a read-only ISO 9660 image in 2048-byte blocks.
//!
//! The image is checked once, when the device is created, so that vmd and vmrun can refuse a
//! file that is not an ISO before the VM starts instead of giving the guest an unreadable
//! disc. From then on a host read error (the file shrank, the disk failed) is the guest's
//! MEDIUM ERROR and is logged once per device.

use std::io;

use vm_memory::VolatileSlice;

use crate::virtio::blk::BlockBackend;

/// Logical block size of a CD-ROM (MMC) and of ISO 9660.
pub const BLOCK_SIZE: u64 = 2048;
/// ISO 9660's volume descriptor set starts at logical sector 16 (ECMA-119 §6.2.1); the
/// sectors before it are the system area (El Torito / isohybrid MBR and GPT).
const FIRST_DESCRIPTOR_SECTOR: u64 = 16;
/// Volume descriptors examined for the primary one. mkisofs and xorriso write it first;
/// ECMA-119 only requires it to be in the set, which in practice holds a handful of
/// descriptors (primary, El Torito boot record, Joliet, terminator).
const MAX_VOLUME_DESCRIPTORS: u64 = 32;
/// Bytes of a volume descriptor header: type, standard identifier, version.
const DESCRIPTOR_HEADER_LEN: usize = 7;
/// The standard identifier of every ISO 9660 volume descriptor.
const STANDARD_ID: &[u8; 5] = b"CD001";
const TYPE_PRIMARY: u8 = 1;
const TYPE_TERMINATOR: u8 = 255;

/// Why an image cannot be a CD-ROM.
#[derive(Debug, thiserror::Error)]
pub enum CdromError {
    /// Reading the image failed.
    #[error("cannot read the ISO image: {0}")]
    Io(#[from] io::Error),
    /// A zero-length file.
    #[error("the ISO image is empty")]
    Empty,
    /// No ISO 9660 primary volume descriptor where one must be.
    #[error("not an ISO 9660 image: no primary volume descriptor (\"CD001\") from byte 32768")]
    NotIso,
}

/// A validated image and the state of reading it.
pub struct Image {
    backend: Box<dyn BlockBackend>,
    blocks: u64,
    bounce: Vec<u8>,
    /// Host read errors are logged once per device, not once per request.
    logged_error: bool,
}

impl Image {
    /// Check that `backend` holds an ISO 9660 volume: not empty, with a primary volume
    /// descriptor in the descriptor set at sector 16. A size that is not a multiple of
    /// [`BLOCK_SIZE`] is accepted and the partial last block ignored: ISO 9660 data lives in
    /// whole blocks, and vmd serves such files too.
    pub fn open(mut backend: Box<dyn BlockBackend>) -> Result<Self, CdromError> {
        let size = backend.size();
        if size == 0 {
            return Err(CdromError::Empty);
        }
        find_primary_descriptor(backend.as_mut(), size)?;
        Ok(Image {
            backend,
            blocks: size / BLOCK_SIZE,
            bounce: Vec::new(),
            logged_error: false,
        })
    }

    /// Capacity in [`BLOCK_SIZE`] blocks, fixed when the image was opened.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Fill `bufs` from byte `offset`; false if the host could not read them.
    pub fn read(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> bool {
        match self
            .backend
            .read_vectored_at(bufs, offset, &mut self.bounce)
        {
            Ok(()) => true,
            Err(e) => {
                if !self.logged_error {
                    self.logged_error = true;
                    tracing::warn!(
                        "virtio-scsi: CD-ROM image read error at byte {offset}: {e}; \
                         the guest gets MEDIUM ERROR"
                    );
                }
                false
            }
        }
    }
}

fn find_primary_descriptor(backend: &mut dyn BlockBackend, size: u64) -> Result<(), CdromError> {
    for i in 0..MAX_VOLUME_DESCRIPTORS {
        let offset = (FIRST_DESCRIPTOR_SECTOR + i) * BLOCK_SIZE;
        if offset + DESCRIPTOR_HEADER_LEN as u64 > size {
            break;
        }
        let mut h = [0u8; DESCRIPTOR_HEADER_LEN];
        match backend.read_at(&mut h, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        if &h[1..6] != STANDARD_ID {
            break;
        }
        match h[0] {
            TYPE_PRIMARY => return Ok(()),
            TYPE_TERMINATOR => break,
            _ => {}
        }
    }
    Err(CdromError::NotIso)
}

#[cfg(test)]
pub(super) mod testing {
    //! In-memory ISO images for the tests.

    use super::*;
    use std::sync::{Arc, Mutex};

    /// An image in memory whose bytes the test can change (or cut short) afterwards.
    #[derive(Clone)]
    pub struct MemIso(pub Arc<Mutex<Vec<u8>>>);

    impl MemIso {
        /// `blocks` blocks, each filled with its own number, and a primary volume
        /// descriptor at sector 16 (after `before` other descriptors).
        pub fn new(blocks: u64, before: &[u8]) -> Self {
            let mut d: Vec<u8> = (0..blocks * BLOCK_SIZE)
                .map(|i| (i / BLOCK_SIZE) as u8 ^ (i as u8))
                .collect();
            let types = before.iter().chain(&[TYPE_PRIMARY, TYPE_TERMINATOR]);
            for (sector, &t) in (FIRST_DESCRIPTOR_SECTOR..).zip(types) {
                let o = (sector * BLOCK_SIZE) as usize;
                if let Some(h) = d.get_mut(o..o + DESCRIPTOR_HEADER_LEN) {
                    h[0] = t;
                    h[1..6].copy_from_slice(STANDARD_ID);
                    h[6] = 1;
                }
            }
            MemIso(Arc::new(Mutex::new(d)))
        }

        /// The byte the image holds at `offset` as built by [`MemIso::new`].
        pub fn byte(&self, offset: usize) -> u8 {
            self.0.lock().unwrap()[offset]
        }
    }

    impl BlockBackend for MemIso {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let d = self.0.lock().unwrap();
            let o = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
            let src = o
                .checked_add(buf.len())
                .and_then(|end| d.get(o..end))
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Err(io::ErrorKind::PermissionDenied.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            self.0.lock().unwrap().len() as u64
        }
        fn read_only(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MemIso;
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Sector 16 holds the first volume descriptor.
    const PVD_BYTE: usize = 32768;

    #[test]
    fn accepts_a_primary_descriptor_first_or_after_a_boot_record() {
        let img = Image::open(Box::new(MemIso::new(20, &[]))).unwrap();
        assert_eq!(img.blocks(), 20);
        // An El Torito boot record (type 0) and a supplementary descriptor (type 2) first.
        assert!(Image::open(Box::new(MemIso::new(20, &[0, 2]))).is_ok());
    }

    #[test]
    fn refuses_empty_and_non_iso_files() {
        let empty = MemIso(Default::default());
        assert!(matches!(
            Image::open(Box::new(empty)),
            Err(CdromError::Empty)
        ));
        let iso = MemIso::new(20, &[]);
        iso.0.lock().unwrap()[PVD_BYTE + 1] = b'X';
        assert!(matches!(
            Image::open(Box::new(iso)),
            Err(CdromError::NotIso)
        ));
        // Only a terminator: a descriptor set without a primary descriptor.
        let iso = MemIso::new(20, &[]);
        iso.0.lock().unwrap()[PVD_BYTE] = TYPE_TERMINATOR;
        assert!(matches!(
            Image::open(Box::new(iso)),
            Err(CdromError::NotIso)
        ));
        // Too short to reach sector 16.
        let short = MemIso(Arc::new(Mutex::new(vec![1; PVD_BYTE + 3])));
        assert!(matches!(
            Image::open(Box::new(short)),
            Err(CdromError::NotIso)
        ));
        // Descriptors all the way: the scan is bounded.
        let iso = MemIso::new(60, &[2; 50]);
        assert!(matches!(
            Image::open(Box::new(iso)),
            Err(CdromError::NotIso)
        ));
    }

    #[test]
    fn partial_last_block_is_ignored() {
        let iso = MemIso::new(20, &[]);
        iso.0.lock().unwrap().extend([0; 100]);
        assert_eq!(Image::open(Box::new(iso)).unwrap().blocks(), 20);
    }

    #[test]
    fn read_errors_are_false() {
        let iso = MemIso::new(20, &[]);
        let mut img = Image::open(Box::new(iso.clone())).unwrap();
        let (mut a, mut b) = ([0u8; 1], [0u8; 3]);
        let bufs = [
            VolatileSlice::from(&mut a[..]),
            VolatileSlice::from(&mut b[..]),
        ];
        assert!(img.read(2048, &bufs));
        assert_eq!((a, b), ([1], [0, 3, 2]));
        iso.0.lock().unwrap().truncate(2048 * 18);
        let mut block = [0u8; 2048];
        let buf = [VolatileSlice::from(&mut block[..])];
        assert!(!img.read(2048 * 19, &buf));
        assert!(!img.read(2048 * 19, &buf), "again, logged once");
        assert!(img.read(0, &buf));
    }
}
