//! Just enough ELF to sniff a kernel and load it the way vmd's boot loader does: headers,
//! program headers and notes of 32- and 64-bit little-endian x86 images, every offset
//! bounds-checked. (linux-loader's ELF loader takes only 64-bit images and does not apply
//! vmd's address mask, so the OpenBSD path needs its own reading.)

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
/// Xen's note giving the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const XEN_NOTE_NAME: &[u8] = b"Xen\0";
/// More program headers than any kernel has; bounds the work on a hostile file.
const MAX_PHDRS: usize = 256;

/// A loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Physical load address.
    pub paddr: u64,
    /// Offset of the file contents.
    pub offset: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero).
    pub memsz: u64,
}

/// What the loaders need from an ELF image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// 64-bit (amd64) rather than 32-bit (i386).
    pub is_64: bool,
    /// `e_entry` as written.
    pub entry: u64,
    /// The PT_LOAD segments.
    pub segments: Vec<Segment>,
    /// The PVH entry point, if the image has Xen's PHYS32_ENTRY note.
    pub pvh_entry: Option<u64>,
}

/// Whether `bytes` starts like an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn slice(&self, off: u64, len: u64) -> Result<&[u8], String> {
        let start = usize::try_from(off).map_err(|_| "offset out of range".to_string())?;
        let end = off
            .checked_add(len)
            .and_then(|e| usize::try_from(e).ok())
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs bytes {off:#x}..{:#x}",
                    off.saturating_add(len)
                )
            })?;
        Ok(&self.bytes[start..end])
    }
    fn u16(&self, off: u64) -> Result<u16, String> {
        let s = self.slice(off, 2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&self, off: u64) -> Result<u32, String> {
        let s = self.slice(off, 4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&self, off: u64) -> Result<u64, String> {
        let s = self.slice(off, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    /// A native-width word: 8 bytes for ELF64, 4 for ELF32.
    fn word(&self, off: u64, is_64: bool) -> Result<u64, String> {
        if is_64 {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
}

/// Parse the headers of an ELF kernel image.
pub fn parse(bytes: &[u8]) -> Result<ElfInfo, String> {
    let r = Reader { bytes };
    let ident = r.slice(0, 16)?;
    let is_64 = match ident[4] {
        ELFCLASS64 => true,
        ELFCLASS32 => false,
        c => return Err(format!("unknown ELF class {c}")),
    };
    if ident[5] != ELFDATA2LSB {
        return Err("big-endian ELF is not an x86 kernel".into());
    }
    let machine = r.u16(18)?;
    if machine != if is_64 { EM_X86_64 } else { EM_386 } {
        return Err(format!("ELF machine {machine} is not x86"));
    }
    let (entry, phoff, phentsize, phnum) = if is_64 {
        (r.u64(24)?, r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (
            u64::from(r.u32(24)?),
            u64::from(r.u32(28)?),
            r.u16(42)?,
            r.u16(44)?,
        )
    };
    let min_phent = if is_64 { 56 } else { 32 };
    if usize::from(phnum) > MAX_PHDRS || (phnum > 0 && usize::from(phentsize) < min_phent) {
        return Err(format!(
            "bad program header table ({phnum} entries of {phentsize} bytes)"
        ));
    }
    let mut info = ElfInfo {
        is_64,
        entry,
        segments: Vec::new(),
        pvh_entry: None,
    };
    for i in 0..u64::from(phnum) {
        let ph = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or("program header offset overflows")?;
        let p_type = r.u32(ph)?;
        let (offset, paddr, filesz, memsz) = if is_64 {
            (
                r.u64(ph + 8)?,
                r.u64(ph + 24)?,
                r.u64(ph + 32)?,
                r.u64(ph + 40)?,
            )
        } else {
            (
                u64::from(r.u32(ph + 4)?),
                u64::from(r.u32(ph + 12)?),
                u64::from(r.u32(ph + 16)?),
                u64::from(r.u32(ph + 20)?),
            )
        };
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(format!("segment {i}: file size larger than memory size"));
                }
                r.slice(offset, filesz)?;
                info.segments.push(Segment {
                    paddr,
                    offset,
                    filesz,
                    memsz,
                });
            }
            PT_NOTE => {
                if let Some(e) = pvh_note(&r, offset, filesz, is_64)? {
                    info.pvh_entry = Some(e);
                }
            }
            _ => {}
        }
    }
    if info.segments.is_empty() {
        return Err("no loadable segments".into());
    }
    Ok(info)
}

fn align4(n: u64) -> u64 {
    n.saturating_add(3) & !3
}

/// Walk the notes in one PT_NOTE segment looking for Xen's PVH entry.
fn pvh_note(r: &Reader, offset: u64, size: u64, is_64: bool) -> Result<Option<u64>, String> {
    let end = offset.checked_add(size).ok_or("note segment overflows")?;
    let mut pos = offset;
    while pos.saturating_add(12) <= end {
        let namesz = u64::from(r.u32(pos)?);
        let descsz = u64::from(r.u32(pos + 4)?);
        let ntype = r.u32(pos + 8)?;
        let name_at = pos + 12;
        let desc_at = name_at.saturating_add(align4(namesz));
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY && r.slice(name_at, namesz)? == XEN_NOTE_NAME {
            let wide = descsz >= 8 && is_64;
            return r.word(desc_at, wide).map(Some);
        }
        pos = desc_at.saturating_add(align4(descsz));
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 image with one PT_LOAD segment and optionally a PVH note.
    pub(crate) fn elf64(paddr: u64, entry: u64, code: &[u8], pvh: Option<u32>) -> Vec<u8> {
        let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
        let data_off = 64 + 56 * u64::from(phnum);
        let mut note = Vec::new();
        if let Some(e) = pvh {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            note.extend_from_slice(XEN_NOTE_NAME);
            note.extend_from_slice(&e.to_le_bytes());
        }
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(ELF_MAGIC);
        f[4] = ELFCLASS64;
        f[5] = ELFDATA2LSB;
        f[6] = 1;
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&phnum.to_le_bytes());
        let mut ph = |t: u32, off: u64, pa: u64, fsz: u64, msz: u64| {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&t.to_le_bytes());
            p[4..8].copy_from_slice(&7u32.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&pa.to_le_bytes());
            p[24..32].copy_from_slice(&pa.to_le_bytes());
            p[32..40].copy_from_slice(&fsz.to_le_bytes());
            p[40..48].copy_from_slice(&msz.to_le_bytes());
            f.extend_from_slice(&p);
        };
        let code_off = data_off + note.len() as u64;
        ph(
            PT_LOAD,
            code_off,
            paddr,
            code.len() as u64,
            code.len() as u64 + 0x100,
        );
        if pvh.is_some() {
            ph(PT_NOTE, data_off, 0, note.len() as u64, note.len() as u64);
        }
        f.extend_from_slice(&note);
        f.extend_from_slice(code);
        f
    }

    #[test]
    fn finds_segments_and_pvh_note() {
        let img = elf64(0x100_0000, 0x100_0000, &[0xf4; 16], Some(0x100_0010));
        let info = parse(&img).unwrap();
        assert!(info.is_64);
        assert_eq!(info.pvh_entry, Some(0x100_0010));
        assert_eq!(info.segments.len(), 1);
        assert_eq!(info.segments[0].paddr, 0x100_0000);
        assert_eq!(info.segments[0].memsz, 16 + 0x100);
        assert_eq!(
            parse(&elf64(0x1000, 0x1000, &[1], None)).unwrap().pvh_entry,
            None
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let img = elf64(0x100_0000, 0x100_0000, &[0xf4; 16], Some(0x100_0010));
        for len in 0..img.len() {
            let _ = parse(&img[..len]);
        }
        assert!(parse(&img[..img.len() - 1]).is_err());
    }

    #[test]
    fn rejects_wrong_machine_and_oversized_segments() {
        let mut img = elf64(0x1000, 0x1000, &[1, 2], None);
        img[18] = 40; // ARM
        assert!(parse(&img).unwrap_err().contains("not x86"));
        let mut img = elf64(0x1000, 0x1000, &[1, 2], None);
        let filesz_at = 64 + 32;
        img[filesz_at..filesz_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&img).is_err());
    }
}
