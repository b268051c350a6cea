//! `vmctl start` before anything is sent: the client-side defaults, warnings and refusals
//! for a new VM (spec §3.3, OpenBSD's `vm_start`), and the kernel and initrd that vmctl
//! opens itself so that vmd reads them with the user's permissions, not root's.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ipc::proto::StartRequest;

use crate::cli::MAX_DISKS;
use crate::messages::{io_error_text, warnx};
use crate::size::MIB;

/// Memory of a new VM when `-m` is not given (`VM_DEFAULT_MEMORY`).
pub const DEFAULT_MEMORY: u64 = 512 * MIB;

/// vm_start's rules for a new, non-instance VM. They apply when the request defines
/// anything (`-b`, `-d`, `-r`, `-m`, NICs, `-p`): an existing VM may only get `-b`, and vmd
/// answers EALREADY to the rest. Returns the warnings to print, or every line to print
/// before failing.
///
/// The 512 MiB default is filled in only when something besides `-b` defines the VM: with
/// `-b` alone the VM may be an existing one, for which a memory size would make vmd refuse
/// the start; a new VM gets the same default from vmd.
pub fn check_new_vm(req: &mut StartRequest) -> Result<Vec<String>, Vec<String>> {
    let defines = req.memory.is_some()
        || !req.nics.is_empty()
        || !req.disks.is_empty()
        || req.cdrom.is_some()
        || req.cpus.is_some();
    let mut lines = Vec::new();
    if req.template.is_some() || !(defines || req.boot.is_some()) {
        return Ok(lines);
    }
    let kernel = req.boot.is_some();
    if req.disks.len() > MAX_DISKS {
        lines.push(warnx("too many disks"));
        return Err(lines);
    }
    if !kernel && req.disks.is_empty() {
        lines.push(warnx("starting without disks"));
        if req.cdrom.is_none() {
            lines.push(warnx("no kernel or disk/cdrom specified"));
            return Err(lines);
        }
    }
    if !kernel && req.nics.is_empty() {
        lines.push(warnx("starting without network interfaces"));
    }
    // More than MAX_NICS is already refused while parsing, before the list is built.
    if defines && req.memory.is_none() {
        req.memory = Some(DEFAULT_MEMORY);
    }
    Ok(lines)
}

/// Opens `-b` and `--initrd`, in the order their fds go with the request.
pub fn open_boot_files(req: &StartRequest) -> Result<Vec<File>, String> {
    let mut files = Vec::new();
    if let Some(kernel) = &req.boot {
        files.push(open_regular(kernel, "kernel")?);
    }
    if let Some(initrd) = &req.initrd {
        files.push(open_regular(initrd, "initrd")?);
    }
    Ok(files)
}

/// Opens a file for reading, refusing anything but a regular file. `O_NONBLOCK` keeps a
/// FIFO given by mistake from blocking the open; it changes nothing for a regular file.
fn open_regular(path: &Path, what: &str) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            warnx(format_args!(
                "cannot open {what} '{}': {}",
                path.display(),
                io_error_text(&e)
            ))
        })?;
    let meta = file
        .metadata()
        .map_err(|e| warnx(format_args!("{}: {}", path.display(), io_error_text(&e))))?;
    if !meta.is_file() {
        return Err(warnx(format_args!("{what} must be a regular file")));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ipc::proto::{DiskSpec, NicSpec, VmRef};

    use super::*;

    fn req() -> StartRequest {
        StartRequest {
            vm: Some(VmRef::Name("vm1".into())),
            ..StartRequest::default()
        }
    }

    fn disk(path: &str) -> DiskSpec {
        DiskSpec {
            path: PathBuf::from(path),
            format: None,
        }
    }

    #[test]
    fn existing_vm_is_sent_as_is() {
        let mut r = req();
        assert_eq!(check_new_vm(&mut r), Ok(vec![]));
        assert_eq!(r, req());
        // -b alone may be the one-shot kernel of a configured VM: no memory added.
        let mut r = req();
        r.boot = Some("/bsd".into());
        assert_eq!(check_new_vm(&mut r), Ok(vec![]));
        assert_eq!(r.memory, None);
    }

    #[test]
    fn new_vm_defaults_and_warnings() {
        let mut r = req();
        r.disks.push(disk("/d.img"));
        assert_eq!(
            check_new_vm(&mut r),
            Ok(vec![
                "vmctl: starting without network interfaces".to_string()
            ])
        );
        assert_eq!(r.memory, Some(DEFAULT_MEMORY));

        let mut r = req();
        r.cdrom = Some("/x.iso".into());
        r.nics.push(NicSpec::Local);
        r.memory = Some(MIB * 64);
        assert_eq!(
            check_new_vm(&mut r),
            Ok(vec!["vmctl: starting without disks".to_string()])
        );
        assert_eq!(r.memory, Some(MIB * 64));

        let mut r = req();
        r.boot = Some("/bsd".into());
        r.cpus = Some(2);
        assert_eq!(check_new_vm(&mut r), Ok(vec![]));
        assert_eq!(r.memory, Some(DEFAULT_MEMORY));
    }

    #[test]
    fn new_vm_refusals() {
        let mut r = req();
        r.memory = Some(MIB * 64);
        assert_eq!(
            check_new_vm(&mut r),
            Err(vec![
                "vmctl: starting without disks".to_string(),
                "vmctl: no kernel or disk/cdrom specified".to_string(),
            ])
        );
        let mut r = req();
        r.disks = (0..5).map(|i| disk(&format!("/d{i}"))).collect();
        assert_eq!(
            check_new_vm(&mut r),
            Err(vec!["vmctl: too many disks".to_string()])
        );
    }

    #[test]
    fn instances_are_left_to_vmd() {
        let mut r = req();
        r.template = Some("tmpl".into());
        r.memory = Some(MIB);
        assert_eq!(check_new_vm(&mut r), Ok(vec![]));
        assert_eq!(r.memory, Some(MIB));
    }

    #[test]
    fn boot_files_must_be_regular() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bsd");
        std::fs::write(&kernel, b"kernel").unwrap();
        let mut r = req();
        r.boot = Some(kernel.clone());
        r.initrd = Some(kernel.clone());
        assert_eq!(open_boot_files(&r).unwrap().len(), 2);

        r.initrd = Some(dir.path().to_path_buf());
        assert_eq!(
            open_boot_files(&r).unwrap_err(),
            "vmctl: initrd must be a regular file"
        );
        r.boot = Some(dir.path().join("missing"));
        assert_eq!(
            open_boot_files(&r).unwrap_err(),
            format!(
                "vmctl: cannot open kernel '{}': No such file or directory",
                dir.path().join("missing").display()
            )
        );
    }
}
