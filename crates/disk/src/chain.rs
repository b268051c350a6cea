//! Backing chains: which files make up a disk, in which order, and opening them as one backend.
//!
//! Two ways in. The daemon's parent, which must check access to every file, calls [`inspect`]
//! on each file it opened to learn the next backing path, opens that one read-only itself, and
//! finally hands all files to [`open_chain`]. Tools call [`open_path`], which does the same walk.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::qcow2::{open_level, Access};
use crate::{
    detect_format, header, lock, BlockBackend, DiskError, Format, Qcow2Backend, RawBackend,
};

/// Most images in one chain (top included). vmd allows 4; QEMU users build longer ones with
/// snapshots, and each level costs only a file descriptor and a small cache.
pub const MAX_CHAIN_IMAGES: usize = 16;

/// What one image's header says.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The image's format (explicit or detected).
    pub format: Format,
    /// Virtual size in bytes.
    pub size: u64,
    /// qcow2 version (2 or 3); `None` for raw.
    pub qcow2_version: Option<u32>,
    /// Cluster size in bytes; `None` for raw.
    pub cluster_size: Option<u64>,
    /// The backing file name exactly as stored in the header.
    pub backing_name: Option<String>,
    /// The backing file resolved as QEMU does: relative names against the image's directory.
    pub backing_path: Option<PathBuf>,
    /// The backing format named in the header, if any; else the caller detects it.
    pub backing_format: Option<Format>,
}

/// Reads the header of an open image. `path` is how the caller opened it: relative backing
/// names are resolved against its directory.
pub fn inspect(file: &File, path: &Path, format: Option<Format>) -> Result<ImageInfo, DiskError> {
    let format = detect_format(file, format).map_err(|e| DiskError::io(path, "read", e))?;
    if format == Format::Raw {
        let size = file
            .metadata()
            .map_err(|e| DiskError::io(path, "stat", e))?
            .len();
        return Ok(ImageInfo {
            format,
            size,
            qcow2_version: None,
            cluster_size: None,
            backing_name: None,
            backing_path: None,
            backing_format: None,
        });
    }
    let h = header::read(file, path)?;
    let backing_format = match &h.backing_format {
        None => None,
        Some(name) => Some(
            Format::from_name(name).ok_or_else(|| DiskError::Unsupported {
                path: path.into(),
                feature: format!("backing format {name:?}"),
            })?,
        ),
    };
    let backing_path = h.backing.as_ref().map(|name| resolve_backing(path, name));
    Ok(ImageInfo {
        format,
        size: h.size,
        qcow2_version: Some(h.version),
        cluster_size: Some(1 << h.cluster_bits),
        backing_name: h.backing,
        backing_path,
        backing_format,
    })
}

/// Resolves a backing file name like QEMU: absolute as is, relative against the directory of
/// the image that names it (not the current directory).
pub(crate) fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.into();
    }
    match image.parent() {
        Some(dir) => dir.join(name),
        None => name.into(),
    }
}

/// One open file of a chain, top first.
#[derive(Debug)]
pub struct ChainImage {
    /// The file: the top opened read-write if the disk is writable, every base read-only.
    pub file: File,
    /// The path it was opened by (messages; nothing is reopened).
    pub path: PathBuf,
    /// Explicit format (config or `path:format`); `None` to take the backing format from the
    /// image above, else to detect.
    pub format: Option<Format>,
}

/// Builds the backend for a disk from its already-open files, top image first, bases below.
///
/// Checks that the files form the chain the headers describe (each qcow2 image that names a
/// backing file has one following it, no file appears twice, at most [`MAX_CHAIN_IMAGES`]),
/// locks the top image exclusively if `writable` and every other image shared.
pub fn open_chain(
    images: Vec<ChainImage>,
    writable: bool,
) -> Result<Box<dyn BlockBackend>, DiskError> {
    let Some(top) = images.first() else {
        return Err(DiskError::ChainMismatch {
            path: PathBuf::new(),
            reason: "no image given".into(),
        });
    };
    if images.len() > MAX_CHAIN_IMAGES {
        return Err(DiskError::ChainTooDeep {
            path: top.path.clone(),
            max: MAX_CHAIN_IMAGES,
        });
    }
    let mut seen = HashSet::new();
    let mut infos: Vec<ImageInfo> = Vec::with_capacity(images.len());
    for (i, img) in images.iter().enumerate() {
        let meta = img
            .file
            .metadata()
            .map_err(|e| DiskError::io(&img.path, "stat", e))?;
        if !meta.is_file() {
            return Err(DiskError::io(
                &img.path,
                "use",
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        if !seen.insert((meta.dev(), meta.ino())) {
            return Err(DiskError::BackingLoop {
                path: img.path.clone(),
            });
        }
        let format = img
            .format
            .or_else(|| infos.last().and_then(|above| above.backing_format));
        let info = inspect(&img.file, &img.path, format);
        let info = match (i, info) {
            (_, Ok(info)) => info,
            (0, Err(e)) => return Err(e),
            (_, Err(e)) => {
                return Err(DiskError::Backing {
                    path: images[i - 1].path.clone(),
                    backing: img.path.clone(),
                    source: Box::new(e),
                })
            }
        };
        let has_next = i + 1 < images.len();
        if info.backing_name.is_some() != has_next {
            let reason = match &info.backing_path {
                Some(b) => format!("backing file {} was not passed", b.display()),
                None => "has no backing file but one was passed".into(),
            };
            return Err(DiskError::ChainMismatch {
                path: img.path.clone(),
                reason,
            });
        }
        infos.push(info);
    }

    // A raw image names no backing file, so the checks above made a raw top the only image.
    if infos[0].format == Format::Raw {
        let img = images.into_iter().next().expect("one image");
        return Ok(Box::new(RawBackend::new(img.file, &img.path, !writable)?));
    }
    for (i, img) in images.iter().enumerate() {
        lock::lock(&img.file, &img.path, writable && i == 0)?;
    }
    // The backend reads the top image's data clusters itself, through its own descriptor.
    let top_file = images[0]
        .file
        .try_clone()
        .map_err(|e| DiskError::io(&images[0].path, "duplicate", e))?;
    // Build bottom-up: each level owns the one below as its backing image.
    let mut below: Option<Access> = None;
    for (i, (img, info)) in images.into_iter().zip(&infos).enumerate().rev() {
        let level = open_level(
            img.file,
            &img.path,
            info.format,
            writable && i == 0,
            below.take(),
        );
        below = Some(level?);
    }
    let top = below.expect("chain is not empty");
    Ok(Box::new(Qcow2Backend::new(
        top, top_file, !writable, &infos[0],
    )))
}

/// Opens the image at `path` and its backing chain (for tools; the daemon uses
/// [`open_chain`] with files it opened itself). The top image is opened read-write if
/// `writable`, bases always read-only.
pub fn open_path(
    path: &Path,
    format: Option<Format>,
    writable: bool,
) -> Result<Box<dyn BlockBackend>, DiskError> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| DiskError::io(path, "open", e))?;
    let mut images = vec![ChainImage {
        file,
        path: path.into(),
        format,
    }];
    let mut seen = HashSet::new();
    loop {
        let img = images.last().expect("not empty");
        let meta = img
            .file
            .metadata()
            .map_err(|e| DiskError::io(&img.path, "stat", e))?;
        if !seen.insert((meta.dev(), meta.ino())) {
            return Err(DiskError::BackingLoop {
                path: img.path.clone(),
            });
        }
        let info = inspect(&img.file, &img.path, img.format).map_err(|e| {
            match images.len().checked_sub(2).map(|i| &images[i]) {
                Some(above) => DiskError::Backing {
                    path: above.path.clone(),
                    backing: img.path.clone(),
                    source: Box::new(e),
                },
                None => e,
            }
        })?;
        let Some(backing) = info.backing_path else {
            break;
        };
        if images.len() >= MAX_CHAIN_IMAGES {
            return Err(DiskError::ChainTooDeep {
                path: path.into(),
                max: MAX_CHAIN_IMAGES,
            });
        }
        let file = File::open(&backing).map_err(|e| DiskError::Backing {
            path: img.path.clone(),
            backing: backing.clone(),
            source: Box::new(DiskError::io(&backing, "open", e)),
        })?;
        images.push(ChainImage {
            file,
            path: backing,
            format: info.backing_format,
        });
    }
    open_chain(images, writable)
}
