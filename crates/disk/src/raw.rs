//! Raw images: the file is the disk. pread/pwrite at the guest offset, fdatasync on flush,
//! hole punching for discard.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::{check_range, lock, read_only_error, BlockBackend, DiskError};

/// Largest zero buffer written at once when the file system cannot zero a range itself.
const ZERO_CHUNK: usize = 1 << 20;

/// A raw image.
#[derive(Debug)]
pub struct RawBackend {
    file: File,
    size: u64,
    read_only: bool,
}

impl RawBackend {
    /// Wraps an open file; locks it (exclusive if writable, shared otherwise).
    /// `path` is only used in messages.
    pub fn new(file: File, path: &Path, read_only: bool) -> Result<RawBackend, DiskError> {
        let meta = file
            .metadata()
            .map_err(|e| DiskError::io(path, "stat", e))?;
        if !meta.is_file() {
            return Err(DiskError::io(
                path,
                "use",
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        lock::lock(&file, path, !read_only)?;
        Ok(RawBackend {
            file,
            size: meta.len(),
            read_only,
        })
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        // SAFETY: fallocate takes plain integers; the fd is open for the lifetime of self.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_buffers(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let end = offset + len;
        while offset < end {
            let n = zeroes.len().min((end - offset) as usize);
            self.file.write_all_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl BlockBackend for RawBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Discarded blocks read as zeroes: a punched hole does; elsewhere we write zeroes.
        self.write_zeroes(offset, len)
    }

    fn raw_file(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(read_only_error());
        }
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Punching keeps the file sparse; file systems without it get zero buffers.
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zero_buffers(offset, len)
            }
            Err(e) => Err(e),
        }
    }
}
