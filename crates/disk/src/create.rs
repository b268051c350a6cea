//! Image creation and conversion behind `vmctl create` (spec §7.4): new raw and qcow2 images,
//! qcow2 overlays on a base, and copies that skip all-zero chunks so outputs stay sparse.
//! New files are mode 0600 and created with O_EXCL: nothing is ever overwritten.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, StorageOpenOptions};

use crate::chain::resolve_backing;
use crate::{inspect, open_path, BlockBackend, DiskError, Format, RawBackend};

/// qcow2 images we create use QEMU's default cluster size...
const QCOW2_CLUSTER_SIZE: usize = 64 * 1024;
/// ...and 16-bit refcounts (refcount order 4), which vmd's own reader requires.
const QCOW2_REFCOUNT_BITS: usize = 16;
/// Conversion copies in chunks of this size and skips chunks that are all zero; 64 KiB is
/// vmd's choice and matches our cluster size, so a skipped chunk is a cluster never allocated.
pub const CONVERT_CHUNK: usize = 64 * 1024;
/// Converted images are sized in whole MiB, like vmctl's sizes.
const SIZE_ALIGN: u64 = 1 << 20;
/// Mode of new image files: images hold guest data, only the owner may read them.
const IMAGE_MODE: u32 = 0o600;

/// How far a conversion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input handled.
    pub done: u64,
    /// Bytes to handle in all.
    pub total: u64,
}

/// Creates `path` exclusively with mode 0600.
fn create_file(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(IMAGE_MODE)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => DiskError::Exists { path: path.into() },
            _ => DiskError::io(path, "create", e),
        })
}

/// Writes an empty qcow2 v3 structure of `size` bytes into the new, empty `file`.
fn format_qcow2(
    file: File,
    path: &Path,
    size: u64,
    backing: Option<(&str, Format)>,
) -> Result<(), DiskError> {
    let opts = StorageOpenOptions::new().filename(path).write(true);
    let storage =
        ImagoFile::from_open_file(file, opts).map_err(|e| DiskError::io(path, "open", e))?;
    let mut builder = Qcow2::<ImagoFile>::create_builder(storage)
        .size(size)
        .cluster_size(QCOW2_CLUSTER_SIZE)
        .refcount_width(QCOW2_REFCOUNT_BITS);
    if let Some((name, format)) = backing {
        builder = builder.backing(name.into(), format.name().into());
    }
    builder
        .create()
        .map_err(|e| DiskError::io(path, "write qcow2 structure", e))
}

/// Runs `fill` on a newly created file; removes the file if `fill` fails, so a failed create
/// leaves nothing behind.
fn create_with<T>(
    path: &Path,
    fill: impl FnOnce(File) -> Result<T, DiskError>,
) -> Result<T, DiskError> {
    let file = create_file(path)?;
    fill(file).inspect_err(|_| {
        // Best effort: the error being returned is the one that matters.
        let _ = std::fs::remove_file(path);
    })
}

/// Creates a sparse raw image of `size` bytes.
pub fn create_raw(path: &Path, size: u64) -> Result<(), DiskError> {
    create_with(path, |file| {
        file.set_len(size)
            .map_err(|e| DiskError::io(path, "set size", e))
    })
}

/// Creates an empty qcow2 v3 image of `size` bytes (64 KiB clusters, refcount order 4).
pub fn create_qcow2(path: &Path, size: u64) -> Result<(), DiskError> {
    create_with(path, |file| format_qcow2(file, path, size, None))
}

/// Creates a qcow2 overlay at `path` on the qcow2 image `base`, storing `base` as typed.
/// A relative `base` is resolved against `path`'s directory, now and whenever the overlay is
/// opened. `size`, if given, must equal the base's size. Returns the overlay's size.
pub fn create_overlay(path: &Path, base: &str, size: Option<u64>) -> Result<u64, DiskError> {
    let base_path = resolve_backing(path, base);
    let base_err = |source| DiskError::Backing {
        path: path.into(),
        backing: base_path.clone(),
        source: Box::new(source),
    };
    let base_file =
        File::open(&base_path).map_err(|e| base_err(DiskError::io(&base_path, "open", e)))?;
    let info = inspect(&base_file, &base_path, None).map_err(base_err)?;
    if info.format != Format::Qcow2 {
        return Err(DiskError::InvalidCreate {
            path: path.into(),
            reason: format!("base image {} is not qcow2", base_path.display()),
        });
    }
    if let Some(size) = size.filter(|&s| s != info.size) {
        return Err(DiskError::InvalidCreate {
            path: path.into(),
            reason: format!(
                "size {size} differs from the base image's size {}",
                info.size
            ),
        });
    }
    // The whole base chain must open (no loop, not too deep, every file readable).
    drop(open_path(&base_path, Some(Format::Qcow2), false).map_err(base_err)?);
    create_with(path, |file| {
        format_qcow2(file, path, info.size, Some((base, Format::Qcow2)))
    })?;
    Ok(info.size)
}

/// Copies the image `input` (raw or qcow2 with its chain) into a new image `output` of
/// `format`, of size max(input size, `size`) rounded up to whole MiB; `size` smaller than the
/// input is an error. All-zero chunks are not written. `progress` is called after each chunk.
/// Returns the output's size.
pub fn convert(
    input: &Path,
    input_format: Option<Format>,
    output: &Path,
    format: Format,
    size: Option<u64>,
    mut progress: Option<&mut dyn FnMut(Progress)>,
) -> Result<u64, DiskError> {
    let mut src = open_path(input, input_format, false)?;
    let in_size = src.size();
    if let Some(size) = size.filter(|&s| s < in_size) {
        return Err(DiskError::InvalidCreate {
            path: output.into(),
            reason: format!("size {size} is smaller than the input's size {in_size}"),
        });
    }
    let out_size = size.unwrap_or(0).max(in_size).next_multiple_of(SIZE_ALIGN);
    create_with(output, |file| {
        let mut dst: Box<dyn BlockBackend> = match format {
            Format::Raw => {
                file.set_len(out_size)
                    .map_err(|e| DiskError::io(output, "set size", e))?;
                Box::new(RawBackend::new(file, output, false)?)
            }
            Format::Qcow2 => {
                format_qcow2(file, output, out_size, None)?;
                open_path(output, Some(Format::Qcow2), true)?
            }
        };
        let mut buf = vec![0u8; CONVERT_CHUNK];
        let mut offset = 0;
        while offset < in_size {
            let n = CONVERT_CHUNK.min((in_size - offset) as usize);
            let chunk = &mut buf[..n];
            src.read_at(chunk, offset)
                .map_err(|e| DiskError::io(input, "read", e))?;
            if chunk.iter().any(|&b| b != 0) {
                dst.write_at(chunk, offset)
                    .map_err(|e| DiskError::io(output, "write", e))?;
            }
            offset += n as u64;
            if let Some(report) = progress.as_mut() {
                report(Progress {
                    done: offset,
                    total: in_size,
                });
            }
        }
        dst.flush().map_err(|e| DiskError::io(output, "flush", e))?;
        Ok(out_size)
    })
}
