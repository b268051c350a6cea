//! File access checks for the images a VM uses (spec §4.5 `vm_checkaccess`, F-LIFE-09).
//!
//! Every image must be a regular file. An image a non-root user named in a request is also
//! checked against that user's permissions, because the parent opens it as root on their
//! behalf. The parent runs these checks on what it opened, through [`FileAccess`], so that
//! tests need no real files and the daemon can answer from `fstat` of the fd it holds.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipc::proto::VmdError;

use super::error::Failure;
use super::permission::Caller;

/// Permission bits of a file mode for "other", shifted to 0..=7.
const OTHER_SHIFT: u32 = 0;
/// Shift of the group permission bits.
const GROUP_SHIFT: u32 = 3;
/// Shift of the owner permission bits.
const OWNER_SHIFT: u32 = 6;
/// `R_OK` within one permission triplet.
const READ_BIT: u32 = 0o4;
/// `W_OK` within one permission triplet.
const WRITE_BIT: u32 = 0o2;

/// What the check needs to know about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub uid: u32,
    pub gid: u32,
    /// `st_mode`'s permission bits (the file type bits are ignored).
    pub mode: u32,
    pub regular: bool,
}

/// Looks files up; the daemon implements it over `fstat` or [`SystemFiles`].
pub trait FileAccess {
    fn metadata(&self, path: &Path) -> io::Result<FileMeta>;
}

/// `stat(2)` on the path (following symlinks, as opening does).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemFiles;

impl FileAccess for SystemFiles {
    fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
        let m = std::fs::metadata(path)?;
        Ok(FileMeta {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
            regular: m.file_type().is_file(),
        })
    }
}

/// What a file is to the VM; decides which failure vmctl reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `/etc/firmware/vmm-bios` (or its Linux replacement) used when no boot image is set.
    DefaultBios,
    /// A kernel or BIOS image named by `boot` or `-b`.
    Kernel,
    /// The extension's initial ramdisk.
    Initrd,
    /// The ISO image.
    Cdrom,
    /// The top image of a disk, opened read-write.
    Disk,
    /// A qcow2 backing image, opened read-only (the parent finds these while opening).
    DiskBase,
}

/// The access a VM needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    ReadWrite,
}

/// One file to check before the VM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUse {
    pub kind: FileKind,
    pub path: PathBuf,
    pub need: Need,
    /// The non-root user who supplied this path, whose permissions count; `None` for files
    /// from the configuration or from root.
    pub check_as: Option<Caller>,
}

/// Why a file cannot be used at all.
enum Unusable {
    Missing,
    NotRegular,
    Io(io::Error),
}

impl FileUse {
    /// The failure vmctl expects for a file that cannot be used, by what the file is for.
    fn unusable(&self, why: Unusable) -> Failure {
        let path = self.path.display();
        let (errno, message) = match &why {
            Unusable::Missing => (libc::ENOENT, format!("{path}: not found")),
            Unusable::NotRegular => (libc::EINVAL, format!("{path}: not a regular file")),
            Unusable::Io(e) => (
                e.raw_os_error().unwrap_or(libc::EIO),
                format!("{path}: {e}"),
            ),
        };
        let code = match (self.kind, &why) {
            (FileKind::DefaultBios, _) => VmdError::BiosMissing,
            (FileKind::Kernel | FileKind::Initrd, _) => return Failure::errno(errno, message),
            (FileKind::Cdrom, Unusable::NotRegular) => VmdError::CdromInvalid,
            (FileKind::Cdrom, _) => VmdError::CdromMissing,
            (FileKind::Disk | FileKind::DiskBase, _) => VmdError::DiskMissing,
        };
        Failure::code(code, message)
    }
}

/// Checks one file: it must exist and be a regular file, and if a non-root user supplied
/// it, that user must have the needed access.
pub fn check_file_access(fs: &dyn FileAccess, file: &FileUse) -> Result<(), Failure> {
    let meta = match fs.metadata(&file.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(file.unusable(Unusable::Missing))
        }
        Err(e) => return Err(file.unusable(Unusable::Io(e))),
    };
    if !meta.regular {
        return Err(file.unusable(Unusable::NotRegular));
    }
    match &file.check_as {
        Some(caller) if !caller.is_root() && !permits(&meta, caller, file.need) => {
            Err(Failure::errno(
                libc::EPERM,
                format!(
                    "{}: uid {} may not {}",
                    file.path.display(),
                    caller.uid,
                    match file.need {
                        Need::Read => "read it",
                        Need::ReadWrite => "read and write it",
                    }
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// vmd grants access if any of the other, owner (when the uid matches) or group (when the
/// user is a member) triplets has every needed bit. This is a union, unlike the kernel's
/// first-match rule (an owner with `---` but other `rw-` passes here); kept for parity.
fn permits(meta: &FileMeta, caller: &Caller, need: Need) -> bool {
    let want = match need {
        Need::Read => READ_BIT,
        Need::ReadWrite => READ_BIT | WRITE_BIT,
    };
    let has = |shift: u32| (meta.mode >> shift) & want == want;
    has(OTHER_SHIFT)
        || (meta.uid == caller.uid && has(OWNER_SHIFT))
        || (caller.gids.contains(&meta.gid) && has(GROUP_SHIFT))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct FakeFiles(HashMap<PathBuf, FileMeta>);

    impl FileAccess for FakeFiles {
        fn metadata(&self, path: &Path) -> io::Result<FileMeta> {
            self.0
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn fs_with(mode: u32, regular: bool) -> FakeFiles {
        let mut fs = FakeFiles::default();
        fs.0.insert(
            PathBuf::from("/img"),
            FileMeta {
                uid: 1000,
                gid: 50,
                mode,
                regular,
            },
        );
        fs
    }

    fn use_of(kind: FileKind, need: Need, uid: u32, gids: &[u32]) -> FileUse {
        FileUse {
            kind,
            path: PathBuf::from("/img"),
            need,
            check_as: Some(Caller {
                uid,
                gids: gids.to_vec(),
            }),
        }
    }

    #[test]
    fn owner_bits_apply_to_the_owner() {
        let fs = fs_with(0o600, true);
        assert!(
            check_file_access(&fs, &use_of(FileKind::Disk, Need::ReadWrite, 1000, &[])).is_ok()
        );
        let f = check_file_access(&fs, &use_of(FileKind::Disk, Need::ReadWrite, 1001, &[50]))
            .unwrap_err();
        assert_eq!(f.errno, libc::EPERM);
    }

    #[test]
    fn group_bits_apply_to_members() {
        let fs = fs_with(0o640, true);
        assert!(
            check_file_access(&fs, &use_of(FileKind::Kernel, Need::Read, 1001, &[7, 50])).is_ok()
        );
        assert!(check_file_access(&fs, &use_of(FileKind::Kernel, Need::Read, 1001, &[7])).is_err());
        // Read-only group access is not enough for a disk.
        assert!(
            check_file_access(&fs, &use_of(FileKind::Disk, Need::ReadWrite, 1001, &[50])).is_err()
        );
    }

    #[test]
    fn other_bits_apply_to_everyone() {
        let fs = fs_with(0o004, true);
        assert!(check_file_access(&fs, &use_of(FileKind::Cdrom, Need::Read, 1002, &[])).is_ok());
        // vmd's union rule: the owner's empty triplet does not shadow "other".
        assert!(check_file_access(&fs, &use_of(FileKind::Cdrom, Need::Read, 1000, &[])).is_ok());
    }

    #[test]
    fn root_and_config_files_skip_the_mode_check() {
        let fs = fs_with(0o000, true);
        let mut u = use_of(FileKind::Disk, Need::ReadWrite, 0, &[0]);
        assert!(check_file_access(&fs, &u).is_ok());
        u.check_as = None;
        assert!(check_file_access(&fs, &u).is_ok());
    }

    #[test]
    fn non_regular_files_are_refused_even_for_root() {
        let fs = fs_with(0o666, false);
        let mut u = use_of(FileKind::Cdrom, Need::Read, 0, &[]);
        u.check_as = None;
        assert_eq!(
            check_file_access(&fs, &u).unwrap_err().code,
            Some(VmdError::CdromInvalid)
        );
        u.kind = FileKind::Disk;
        assert_eq!(
            check_file_access(&fs, &u).unwrap_err().code,
            Some(VmdError::DiskMissing)
        );
        u.kind = FileKind::Kernel;
        assert_eq!(check_file_access(&fs, &u).unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn missing_files_map_to_vmd_codes() {
        let fs = FakeFiles::default();
        let mut u = use_of(FileKind::DefaultBios, Need::Read, 0, &[]);
        assert_eq!(
            check_file_access(&fs, &u).unwrap_err().code,
            Some(VmdError::BiosMissing)
        );
        u.kind = FileKind::Cdrom;
        assert_eq!(
            check_file_access(&fs, &u).unwrap_err().code,
            Some(VmdError::CdromMissing)
        );
        u.kind = FileKind::DiskBase;
        assert_eq!(
            check_file_access(&fs, &u).unwrap_err().code,
            Some(VmdError::DiskMissing)
        );
        u.kind = FileKind::Kernel;
        assert_eq!(check_file_access(&fs, &u).unwrap_err().errno, libc::ENOENT);
    }

    #[test]
    fn system_files_reads_real_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, b"x").unwrap();
        let meta = SystemFiles.metadata(&path).unwrap();
        assert!(meta.regular);
        assert!(!SystemFiles.metadata(dir.path()).unwrap().regular);
    }
}
