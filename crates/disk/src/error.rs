//! Errors of opening and creating images. Each names the file and what was wrong, so the
//! daemon and vmctl can print one line without adding context of their own.

use std::io;
use std::path::PathBuf;

/// Why an image could not be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O call on the file itself failed (open, stat, read, write).
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing, e.g. "open", "read header".
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is shorter than the header it claims to have.
    #[error("{}: truncated qcow2 header ({len} bytes, need {need})", path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// The file's length.
        len: u64,
        /// The bytes the header needs.
        need: u64,
    },
    /// The file is not a qcow2 image but was declared to be one.
    #[error("{}: not a qcow2 image (bad magic)", path.display())]
    NotQcow2 {
        /// The file.
        path: PathBuf,
    },
    /// A header field is out of range.
    #[error("{}: invalid qcow2 header: {reason}", path.display())]
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// Which field and why.
        reason: String,
    },
    /// A metadata table lies (partly) beyond the end of the file.
    #[error("{}: {table} at offset {offset} (length {len}) points outside the file ({file_len} bytes)", path.display())]
    OutsideFile {
        /// The file.
        path: PathBuf,
        /// "L1 table", "refcount table", ...
        table: &'static str,
        /// Where the table starts.
        offset: u64,
        /// Its length in bytes.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The image uses a feature we do not implement.
    #[error("{}: unsupported qcow2 feature: {feature}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The feature, named as the qcow2 specification names it.
        feature: String,
    },
    /// The qcow2 library rejected the image's metadata.
    #[error("{}: bad qcow2 image: {source}", path.display())]
    BadImage {
        /// The file.
        path: PathBuf,
        /// The library's message.
        #[source]
        source: io::Error,
    },
    /// A backing file refers (directly or indirectly) back to an image of the chain.
    #[error("{}: backing chain loops back to this image", path.display())]
    BackingLoop {
        /// The image seen twice.
        path: PathBuf,
    },
    /// More images in a chain than [`crate::MAX_CHAIN_IMAGES`].
    #[error("{}: backing chain longer than {max} images", path.display())]
    ChainTooDeep {
        /// The top image.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A backing file could not be opened or is itself bad.
    // The source names the backing file already (every variant names its file).
    #[error("{}: backing file {source}", path.display())]
    Backing {
        /// The image that names the backing file.
        path: PathBuf,
        /// The backing file as resolved.
        backing: PathBuf,
        /// What went wrong with it.
        #[source]
        source: Box<DiskError>,
    },
    /// The files passed for a chain do not match the chain the headers describe.
    #[error("{}: {reason}", path.display())]
    ChainMismatch {
        /// The image whose backing file is wrong or missing.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// Another process (or open file) holds a conflicting lock.
    #[error("{}: disk image is in use by another process", path.display())]
    InUse {
        /// The image.
        path: PathBuf,
    },
    /// `create` refuses to overwrite.
    #[error("{}: file exists", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Wrong sizes or formats given to `create`.
    #[error("{}: {reason}", path.display())]
    InvalidCreate {
        /// The file to create.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
}

impl DiskError {
    /// Shorthand for [`DiskError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        DiskError::Io {
            path: path.into(),
            op,
            source,
        }
    }
}
