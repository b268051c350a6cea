//! `vmctl create`: disk images, made locally without vmd (spec §7.4, F-CTL-04..06): raw and
//! qcow2 images, qcow2 overlays on a base (`-b`), and copies/conversions (`-i`) that skip
//! zeroes, never overwriting an existing file. The formats themselves are the `disk` crate's.

use std::path::Path;

use ipc::proto::DiskFormat;

use crate::cli::{command_usage, disk_prefix, CreateArgs};
use crate::messages::{warnx, PROGNAME};

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
    let target = Path::new(path);
    let out_format = disk_format(format);
    if args.base.is_some() && args.input.is_some() {
        return fail(vec![warnx("conflicting -b and -i arguments")]);
    }
    if args.base.is_some() && format != DiskFormat::Qcow2 {
        return fail(vec![warnx("base images require qcow2 disk format")]);
    }
    let result = if let Some(input) = &args.input {
        let (in_format, in_path) = disk_prefix(input);
        let in_format = in_format.map(disk_format);
        let mut show = progress_printer();
        let progress = show.as_mut().map(|f| f as &mut dyn FnMut(disk::Progress));
        let r = disk::convert(
            Path::new(in_path),
            in_format,
            target,
            out_format,
            args.size,
            progress,
        );
        if show.is_some() {
            eprintln!();
        }
        r.map(|_| ())
    } else if let Some(base) = &args.base {
        disk::create_overlay(target, base, args.size).map(|_| ())
    } else {
        let Some(size) = args.size else {
            return fail(vec![
                format!("could not create {path}: missing size argument"),
                command_usage("create"),
            ]);
        };
        match format {
            DiskFormat::Raw => disk::create_raw(target, size),
            DiskFormat::Qcow2 => disk::create_qcow2(target, size),
        }
    };
    match result {
        Ok(()) => Outcome {
            lines: vec![warnx(format_args!(
                "{} imagefile created",
                out_format.name()
            ))],
            ok: true,
        },
        Err(e) => fail(vec![failure_line(&e)]),
    }
}

/// The `disk` crate's name for a format vmctl parsed.
fn disk_format(f: DiskFormat) -> disk::Format {
    match f {
        DiskFormat::Raw => disk::Format::Raw,
        DiskFormat::Qcow2 => disk::Format::Qcow2,
    }
}

/// vmctl's wording for a failed create (spec §3.5), with the library's detail otherwise.
fn failure_line(e: &disk::DiskError) -> String {
    match e {
        disk::DiskError::Exists { .. } => warnx("create imagefile operation failed: File exists"),
        disk::DiskError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            warnx("create imagefile operation failed: File exists")
        }
        other => warnx(format_args!("create imagefile operation failed: {other}")),
    }
}

/// Percentage updates on a terminal, so long conversions show they are moving.
fn progress_printer() -> Option<impl FnMut(disk::Progress)> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(2) } != 1 {
        return None;
    }
    let mut last = u64::MAX;
    Some(move |p: disk::Progress| {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
        if pct != last {
            last = pct;
            eprint!("\r{PROGNAME}: converting: {pct:3}%");
        }
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::size::MIB;

    /// Created images hold a guest's data: only the owner may read them.
    const IMAGE_MODE: u32 = 0o600;

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
    }

    #[test]
    fn qcow2_overlay_and_conversion_pass_qemu_img_check() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let out = run(&args(base.to_str().unwrap(), Some(64 * MIB)));
        assert_eq!(out.lines, ["vmctl: qcow2 imagefile created"]);
        let overlay = dir.path().join("top.qcow2");
        let mut a = args(overlay.to_str().unwrap(), None);
        a.base = Some(base.to_str().unwrap().into());
        assert_eq!(run(&a).lines, ["vmctl: qcow2 imagefile created"]);
        let mut bad = args(
            dir.path().join("bad.qcow2").to_str().unwrap(),
            Some(32 * MIB),
        );
        bad.base = Some(base.to_str().unwrap().into());
        assert!(!run(&bad).ok, "an overlay must have its base's size");
        let raw = dir.path().join("copy.raw");
        let mut c = args(raw.to_str().unwrap(), None);
        c.input = Some(overlay.to_str().unwrap().into());
        assert_eq!(run(&c).lines, ["vmctl: raw imagefile created"]);
        assert_eq!(fs::metadata(&raw).unwrap().len(), 64 * MIB);
        let Ok(check) = std::process::Command::new("qemu-img")
            .arg("check")
            .arg(&overlay)
            .output()
        else {
            eprintln!("SKIPPED: qemu-img is not installed");
            return;
        };
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let info = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&overlay)
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("\"backing-filename\""), "{info}");
    }

    #[test]
    fn formats() {
        assert_eq!(target_format("a.qcow2"), (DiskFormat::Qcow2, "a.qcow2"));
        assert_eq!(target_format("raw:a.qcow2"), (DiskFormat::Raw, "a.qcow2"));
        assert_eq!(target_format("qcow2:a.img"), (DiskFormat::Qcow2, "a.img"));
        assert_eq!(target_format("a.img"), (DiskFormat::Raw, "a.img"));
    }
}
