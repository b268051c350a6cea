//! `vmctl create`: disk images, made locally without vmd (spec §7.4). Raw images only for
//! now: a sparse file of the requested size, never overwriting an existing one. qcow2
//! targets, overlays (`-b`) and copies (`-i`) answer that they are not supported yet.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ipc::proto::DiskFormat;

use crate::cli::{command_usage, disk_prefix, CreateArgs};
use crate::messages::{io_error_text, warnx};

/// Mode of created images: they hold a guest's data, so only the owner reads them.
const IMAGE_MODE: u32 = 0o600;

/// The outcome: lines for stderr and whether the image was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What to print, in order.
    pub lines: Vec<String>,
    /// Exit status 0 when true.
    pub ok: bool,
}

/// The target's format: the `raw:`/`qcow2:` prefix, else the extension (the file does not
/// exist yet, so there is no magic to read), else raw.
pub fn target_format(word: &str) -> (DiskFormat, &str) {
    let (format, path) = disk_prefix(word);
    let format = format.unwrap_or_else(|| {
        let ext = Path::new(path).extension().and_then(|e| e.to_str());
        match ext {
            Some(e) if e.eq_ignore_ascii_case("qcow2") => DiskFormat::Qcow2,
            _ => DiskFormat::Raw,
        }
    });
    (format, path)
}

/// Runs `create` with OpenBSD's checks in OpenBSD's order.
pub fn run(args: &CreateArgs) -> Outcome {
    let fail = |lines: Vec<String>| Outcome { lines, ok: false };
    let (format, path) = target_format(&args.disk);
    if args.input.is_some() {
        if args.base.is_some() {
            return fail(vec![warnx("conflicting -b and -i arguments")]);
        }
        return fail(vec![warnx(
            "create -i: copying or converting images is not supported yet",
        )]);
    }
    if args.base.is_some() && format != DiskFormat::Qcow2 {
        return fail(vec![warnx("base images require qcow2 disk format")]);
    }
    let Some(size) = args.size.filter(|_| args.base.is_none()) else {
        if args.base.is_some() {
            return fail(vec![warnx(
                "create -b: qcow2 overlay images are not supported yet",
            )]);
        }
        return fail(vec![
            format!("could not create {path}: missing size argument"),
            command_usage("create"),
        ]);
    };
    if format == DiskFormat::Qcow2 {
        return fail(vec![warnx("qcow2 images are not supported yet")]);
    }
    match create_raw(Path::new(path), size) {
        Ok(()) => Outcome {
            lines: vec![warnx("raw imagefile created")],
            ok: true,
        },
        Err(e) => fail(vec![warnx(format_args!(
            "create imagefile operation failed: {}",
            io_error_text(&e)
        ))]),
    }
}

/// A sparse raw image: a new file (`O_EXCL`) extended to `size` without writing data.
pub fn create_raw(path: &Path, size: u64) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(IMAGE_MODE)
        .open(path)?;
    if let Err(e) = file.set_len(size) {
        // Do not leave an image of the wrong size behind (e.g. EFBIG).
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::size::MIB;

    fn args(disk: &str, size: Option<u64>) -> CreateArgs {
        CreateArgs {
            disk: disk.into(),
            base: None,
            input: None,
            size,
        }
    }

    #[test]
    fn raw_image_is_sparse_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let out = run(&args(path.to_str().unwrap(), Some(4096 * MIB)));
        assert_eq!(
            out,
            Outcome {
                lines: vec!["vmctl: raw imagefile created".into()],
                ok: true
            }
        );
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 4096 * MIB);
        // Sparse: (almost) no blocks allocated for 4 GiB.
        assert!(meta.blocks() * 512 < MIB, "{} blocks", meta.blocks());
        assert_eq!(meta.permissions().mode() & 0o777, IMAGE_MODE);
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        fs::write(&path, b"precious").unwrap();
        let word = format!("raw:{}", path.display());
        let out = run(&args(&word, Some(MIB)));
        assert_eq!(
            out.lines,
            ["vmctl: create imagefile operation failed: File exists"]
        );
        assert!(!out.ok);
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn local_refusals() {
        let mut a = args("new.img", None);
        assert_eq!(
            run(&a).lines,
            [
                "could not create new.img: missing size argument",
                "usage:\tvmctl [-v] create [-b base | -i disk] [-s size] disk"
            ]
        );
        a.base = Some("base.qcow2".into());
        assert_eq!(
            run(&a).lines,
            ["vmctl: base images require qcow2 disk format"]
        );
        a.input = Some("in.img".into());
        assert_eq!(run(&a).lines, ["vmctl: conflicting -b and -i arguments"]);
        a.base = None;
        assert!(run(&a).lines[0].contains("not supported yet"));
        let q = args("qcow2:new", Some(MIB));
        assert_eq!(run(&q).lines, ["vmctl: qcow2 images are not supported yet"]);
        let mut q = args("new.QCOW2", None);
        q.base = Some("b.qcow2".into());
        assert!(run(&q).lines[0].contains("not supported yet"));
    }

    #[test]
    fn formats() {
        assert_eq!(target_format("a.qcow2"), (DiskFormat::Qcow2, "a.qcow2"));
        assert_eq!(target_format("raw:a.qcow2"), (DiskFormat::Raw, "a.qcow2"));
        assert_eq!(target_format("qcow2:a.img"), (DiskFormat::Qcow2, "a.img"));
        assert_eq!(target_format("a.img"), (DiskFormat::Raw, "a.img"));
    }
}
