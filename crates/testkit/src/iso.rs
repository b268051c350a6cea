//! A minimal ISO 9660 image with an El Torito boot catalog, built in memory so tests can
//! boot a CD-ROM without host tools (F-HW-14, F-BOOT-05).
//!
//! Layout (2048-byte sectors): system area 0-15, primary volume descriptor 16, boot record
//! 17, terminator 18, path tables 19-20, root directory 21, boot catalog 22, then the boot
//! image ("no emulation": the BIOS loads it at 0000:7C00) and the payload the test chooses.
//! The root directory is empty: guests read sectors, not files.

/// Bytes per ISO 9660 logical block.
pub const ISO_SECTOR: usize = 2048;
/// Sector of the primary volume descriptor.
pub const PVD_SECTOR: usize = 16;
const BOOT_RECORD_SECTOR: usize = 17;
const TERMINATOR_SECTOR: usize = 18;
const L_PATH_TABLE_SECTOR: usize = 19;
const M_PATH_TABLE_SECTOR: usize = 20;
const ROOT_DIR_SECTOR: usize = 21;
const CATALOG_SECTOR: usize = 22;
/// Sector of the boot image.
pub const BOOT_IMAGE_SECTOR: usize = 23;
/// A root-only path table: one 10-byte record.
const PATH_TABLE_LEN: u32 = 10;
/// El Torito counts the boot image in 512-byte "virtual sectors".
const VIRTUAL_SECTOR: usize = 512;

/// The image: `boot` (at most one sector, loaded at 0000:7C00 by a BIOS) at
/// [`BOOT_IMAGE_SECTOR`], and `payload` from the sector after it.
pub fn el_torito(boot: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(boot.len() <= ISO_SECTOR, "boot image larger than a sector");
    let payload_sectors = payload.len().div_ceil(ISO_SECTOR);
    let total = BOOT_IMAGE_SECTOR + 1 + payload_sectors;
    let mut iso = vec![0u8; total * ISO_SECTOR];
    let sector = |n: usize| n * ISO_SECTOR..(n + 1) * ISO_SECTOR;
    iso[sector(PVD_SECTOR)].copy_from_slice(&primary_volume_descriptor(total as u32));
    iso[sector(BOOT_RECORD_SECTOR)].copy_from_slice(&boot_record());
    iso[sector(TERMINATOR_SECTOR)].copy_from_slice(&descriptor(255));
    iso[sector(L_PATH_TABLE_SECTOR)].copy_from_slice(&path_table(false));
    iso[sector(M_PATH_TABLE_SECTOR)].copy_from_slice(&path_table(true));
    iso[sector(ROOT_DIR_SECTOR)].copy_from_slice(&root_directory());
    iso[sector(CATALOG_SECTOR)].copy_from_slice(&boot_catalog(boot.len()));
    let at = BOOT_IMAGE_SECTOR * ISO_SECTOR;
    iso[at..at + boot.len()].copy_from_slice(boot);
    let at = (BOOT_IMAGE_SECTOR + 1) * ISO_SECTOR;
    iso[at..at + payload.len()].copy_from_slice(payload);
    iso
}

/// A volume descriptor of `kind` with the standard identifier and version.
fn descriptor(kind: u8) -> Vec<u8> {
    let mut d = vec![0u8; ISO_SECTOR];
    d[0] = kind;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d
}

/// ISO 9660 "both-endian" fields: little-endian then big-endian.
fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}
fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

/// A 34-byte directory record for the root (name `\0`) or its parent (`\1`).
fn dir_record(name: u8) -> [u8; 34] {
    let mut r = [0u8; 34];
    r[0] = 34;
    r[2..10].copy_from_slice(&both32(ROOT_DIR_SECTOR as u32));
    r[10..18].copy_from_slice(&both32(ISO_SECTOR as u32));
    r[25] = 2; // directory
    r[28..32].copy_from_slice(&both16(1));
    r[32] = 1;
    r[33] = name;
    r
}

fn primary_volume_descriptor(sectors: u32) -> Vec<u8> {
    let mut d = descriptor(1);
    d[8..40].fill(b' ');
    d[40..72].fill(b' ');
    d[40..52].copy_from_slice(b"VMD_TEST_ISO");
    d[80..88].copy_from_slice(&both32(sectors));
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(ISO_SECTOR as u16));
    d[132..140].copy_from_slice(&both32(PATH_TABLE_LEN));
    d[140..144].copy_from_slice(&(L_PATH_TABLE_SECTOR as u32).to_le_bytes());
    d[148..152].copy_from_slice(&(M_PATH_TABLE_SECTOR as u32).to_be_bytes());
    d[156..190].copy_from_slice(&dir_record(0));
    d[190..813].fill(b' ');
    d[881] = 1;
    d
}

fn boot_record() -> Vec<u8> {
    let mut d = descriptor(0);
    let id = b"EL TORITO SPECIFICATION";
    d[7..7 + id.len()].copy_from_slice(id);
    d[71..75].copy_from_slice(&(CATALOG_SECTOR as u32).to_le_bytes());
    d
}

fn path_table(big_endian: bool) -> Vec<u8> {
    let mut t = vec![0u8; ISO_SECTOR];
    t[0] = 1;
    let extent = ROOT_DIR_SECTOR as u32;
    let (e, p) = if big_endian {
        (extent.to_be_bytes(), 1u16.to_be_bytes())
    } else {
        (extent.to_le_bytes(), 1u16.to_le_bytes())
    };
    t[2..6].copy_from_slice(&e);
    t[6..8].copy_from_slice(&p);
    t
}

fn root_directory() -> Vec<u8> {
    let mut d = vec![0u8; ISO_SECTOR];
    d[..34].copy_from_slice(&dir_record(0));
    d[34..68].copy_from_slice(&dir_record(1));
    d
}

/// Validation entry (checksummed so the 16-bit words sum to zero) and the default entry:
/// bootable, no emulation, load segment 0 (= 0x7C0), `boot_len` in virtual sectors.
fn boot_catalog(boot_len: usize) -> Vec<u8> {
    let mut c = vec![0u8; ISO_SECTOR];
    c[0] = 1; // header id
    c[1] = 0; // platform: 80x86
    c[4..12].copy_from_slice(b"VMD TEST");
    c[30] = 0x55;
    c[31] = 0xAA;
    let sum = c[..32].chunks(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    c[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    c[32] = 0x88; // bootable
    c[33] = 0; // no emulation
    let count = boot_len.div_ceil(VIRTUAL_SECTOR).max(1) as u16;
    c[38..40].copy_from_slice(&count.to_le_bytes());
    c[40..44].copy_from_slice(&(BOOT_IMAGE_SECTOR as u32).to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_catalog_and_payload_are_where_readers_look() {
        let iso = el_torito(&[0xEB; 512], b"payload");
        let s = |n: usize| &iso[n * ISO_SECTOR..(n + 1) * ISO_SECTOR];
        assert_eq!(&s(16)[..7], b"\x01CD001\x01");
        assert_eq!(&s(17)[..7], b"\x00CD001\x01");
        assert_eq!(&s(17)[7..30], b"EL TORITO SPECIFICATION");
        assert_eq!(&s(18)[..6], b"\xffCD001");
        let cat = u32::from_le_bytes(s(17)[71..75].try_into().unwrap()) as usize;
        let c = s(cat);
        let words = c[..32].chunks(2).fold(0u16, |a, w| {
            a.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
        });
        assert_eq!(words, 0, "validation entry checksum");
        assert_eq!((c[30], c[31], c[32], c[33]), (0x55, 0xAA, 0x88, 0));
        let lba = u32::from_le_bytes(c[40..44].try_into().unwrap()) as usize;
        assert_eq!(s(lba)[0], 0xEB);
        assert_eq!(&s(lba + 1)[..7], b"payload");
        let size = u32::from_le_bytes(s(16)[80..84].try_into().unwrap()) as usize;
        assert_eq!(size * ISO_SECTOR, iso.len(), "volume space size");
    }
}
