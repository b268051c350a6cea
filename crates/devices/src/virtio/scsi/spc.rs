//! SPC primary commands of the CD-ROM: INQUIRY (standard data and the VPD pages 0x00 and
//! 0x83), REPORT LUNS, and MODE SENSE(6)/(10) with the MMC read-error-recovery and
//! CD/DVD-capabilities pages.

use super::mmc::{be16, be32, byte, data, Reply};
use super::sense::Sense;

/// Peripheral qualifier 0 (connected), device type 5 (CD/DVD).
pub const PERIPHERAL_CDROM: u8 = 0x05;
/// RMB: the medium is removable.
const REMOVABLE: u8 = 0x80;
/// VERSION: SPC-3, so that guests use READ(10) and tagged queuing rather than SCSI-2 habits
/// (OpenBSD's cd uses READ(6) below SCSI-2).
const VERSION_SPC3: u8 = 0x05;
/// RESPONSE DATA FORMAT 2, the only one SPC defines.
const RESPONSE_FORMAT: u8 = 0x02;
/// CMDQUE: commands may be queued; they are all answered in order anyway.
const CMDQUE: u8 = 0x02;
/// Bytes of standard INQUIRY data.
const STANDARD_INQUIRY_LEN: usize = 36;
/// The identification vmd's CD-ROM reports, so OpenBSD guests print the same
/// `<OpenBSD, VMM CD-ROM, 001>`.
const VENDOR: &[u8; 8] = b"OpenBSD ";
const PRODUCT: &[u8; 16] = b"VMM CD-ROM      ";
const REVISION: &[u8; 4] = b"001 ";
/// INQUIRY's EVPD bit.
const EVPD: u8 = 0x01;
const VPD_SUPPORTED_PAGES: u8 = 0x00;
const VPD_DEVICE_IDENTIFICATION: u8 = 0x83;
/// Designation descriptor header: ASCII code set; logical-unit association, T10 vendor ID
/// designator type.
const DESIGNATOR_ASCII: u8 = 0x02;
const DESIGNATOR_T10_VENDOR_ID: u8 = 0x01;

/// Bytes of REPORT LUNS data: the list header and the one LUN 0 entry.
const REPORT_LUNS_LEN: usize = 16;
/// LUN LIST LENGTH: one 8-byte entry.
const ONE_LUN: u32 = 8;

// MODE SENSE.
const PAGE_CONTROL_SHIFT: u8 = 6;
const PAGE_CODE_MASK: u8 = 0x3f;
const PAGE_CONTROL_CHANGEABLE: u8 = 1;
const PAGE_CONTROL_SAVED: u8 = 3;
/// Subpage 0xff with page 0x3f asks for all subpages too; there are none.
const ALL_SUBPAGES: u8 = 0xff;
const PAGE_READ_ERROR_RECOVERY: u8 = 0x01;
const PAGE_CAPABILITIES: u8 = 0x2a;
const PAGE_ALL: u8 = 0x3f;
/// DEVICE-SPECIFIC PARAMETER with WP: the medium is write-protected.
const WRITE_PROTECT: u8 = 0x80;
const MODE_HEADER_6_LEN: usize = 4;
const MODE_HEADER_10_LEN: usize = 8;
/// Read error recovery page (MMC-6 §7.3): 10 parameter bytes.
const RECOVERY_PAGE_LEN: u8 = 0x0a;
/// The retry count vmd reports.
const READ_RETRY_COUNT: u8 = 5;
/// CD/DVD capabilities page (MMC-3 §6.3.11, obsolete in later MMC but what Linux's sr
/// reads): 20 parameter bytes.
const CAPABILITIES_PAGE_LEN: u8 = 0x14;
/// Byte 2: reads CD-ROM and DVD-ROM media.
const CAP_READS_DVD_ROM: u8 = 0x08;
/// Byte 6: lock supported, lock state, tray loading mechanism. No eject bit: the medium
/// cannot be changed.
const CAP_LOCK: u8 = 0x01;
const CAP_LOCKED: u8 = 0x02;
const CAP_TRAY: u8 = 0x20;
/// Read speed in kB/s (24x CD); only printed by guests.
const READ_SPEED_KBPS: u16 = 24 * 176;

/// INQUIRY: standard data or a VPD page.
pub fn inquiry(cdb: &[u8]) -> Reply {
    let page = byte(cdb, 2);
    let alloc = usize::from(be16(cdb, 3));
    if byte(cdb, 1) & EVPD == 0 {
        if page != 0 {
            return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
        }
        return data(standard_inquiry(), alloc);
    }
    let body = match page {
        VPD_SUPPORTED_PAGES => vec![VPD_SUPPORTED_PAGES, VPD_DEVICE_IDENTIFICATION],
        VPD_DEVICE_IDENTIFICATION => {
            let id = [&VENDOR[..], &PRODUCT[..]].concat();
            let mut d = vec![
                DESIGNATOR_ASCII,
                DESIGNATOR_T10_VENDOR_ID,
                0,
                id.len() as u8,
            ];
            d.extend(id);
            d
        }
        _ => return Reply::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    let mut d = vec![PERIPHERAL_CDROM, page];
    d.extend((body.len() as u16).to_be_bytes());
    d.extend(body);
    data(d, alloc)
}

fn standard_inquiry() -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_INQUIRY_LEN];
    d[0] = PERIPHERAL_CDROM;
    d[1] = REMOVABLE;
    d[2] = VERSION_SPC3;
    d[3] = RESPONSE_FORMAT;
    d[4] = (STANDARD_INQUIRY_LEN - 5) as u8;
    d[7] = CMDQUE;
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(REVISION);
    d
}

/// REPORT LUNS: LUN 0 only.
pub fn report_luns(cdb: &[u8]) -> Reply {
    let mut d = vec![0u8; REPORT_LUNS_LEN];
    d[0..4].copy_from_slice(&ONE_LUN.to_be_bytes());
    data(d, be32(cdb, 6) as usize)
}

/// MODE SENSE(6) or, with `ten`, MODE SENSE(10): no block descriptors, the requested pages.
pub fn mode_sense(cdb: &[u8], ten: bool, locked: bool) -> Reply {
    let control = byte(cdb, 2) >> PAGE_CONTROL_SHIFT;
    let code = byte(cdb, 2) & PAGE_CODE_MASK;
    let subpage = byte(cdb, 3);
    if control == PAGE_CONTROL_SAVED {
        return Reply::Check(Sense::SAVING_NOT_SUPPORTED);
    }
    if subpage != 0 && !(code == PAGE_ALL && subpage == ALL_SUBPAGES) {
        return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    // Nothing is changeable: that mask has only the page headers.
    let changeable = control == PAGE_CONTROL_CHANGEABLE;
    let pages = match code {
        PAGE_READ_ERROR_RECOVERY => recovery_page(changeable),
        PAGE_CAPABILITIES => capabilities_page(changeable, locked),
        PAGE_ALL => [
            recovery_page(changeable),
            capabilities_page(changeable, locked),
        ]
        .concat(),
        _ => return Reply::Check(Sense::INVALID_FIELD_IN_CDB),
    };
    let (mut d, alloc) = if ten {
        let len = (MODE_HEADER_10_LEN - 2 + pages.len()) as u16;
        let mut h = vec![0u8; MODE_HEADER_10_LEN];
        h[0..2].copy_from_slice(&len.to_be_bytes());
        h[3] = WRITE_PROTECT;
        (h, usize::from(be16(cdb, 7)))
    } else {
        let len = (MODE_HEADER_6_LEN - 1 + pages.len()) as u8;
        (vec![len, 0, WRITE_PROTECT, 0], usize::from(byte(cdb, 4)))
    };
    d.extend(pages);
    data(d, alloc)
}

fn recovery_page(changeable: bool) -> Vec<u8> {
    let mut p = vec![0u8; 2 + usize::from(RECOVERY_PAGE_LEN)];
    p[0] = PAGE_READ_ERROR_RECOVERY;
    p[1] = RECOVERY_PAGE_LEN;
    if !changeable {
        p[3] = READ_RETRY_COUNT;
    }
    p
}

fn capabilities_page(changeable: bool, locked: bool) -> Vec<u8> {
    let mut p = vec![0u8; 2 + usize::from(CAPABILITIES_PAGE_LEN)];
    p[0] = PAGE_CAPABILITIES;
    p[1] = CAPABILITIES_PAGE_LEN;
    if !changeable {
        p[2] = CAP_READS_DVD_ROM;
        p[6] = CAP_LOCK | CAP_TRAY | if locked { CAP_LOCKED } else { 0 };
        p[8..10].copy_from_slice(&READ_SPEED_KBPS.to_be_bytes());
        p[14..16].copy_from_slice(&READ_SPEED_KBPS.to_be_bytes());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_inquiry_is_a_removable_cdrom() {
        let d = inquiry(&[0x12, 0, 0, 0, 96, 0]).into_data();
        assert_eq!(d.len(), STANDARD_INQUIRY_LEN);
        assert_eq!((d[0], d[1]), (5, 0x80));
        assert_eq!(&d[8..32], b"OpenBSD VMM CD-ROM      ");
        assert_eq!(
            inquiry(&[0x12, 0, 0, 0, 5, 0]).into_data().len(),
            5,
            "allocation length"
        );
        assert_eq!(
            inquiry(&[0x12, 0, 0x80, 0, 96, 0]),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB),
            "page code without EVPD"
        );
    }

    #[test]
    fn vpd_pages() {
        let d = inquiry(&[0x12, 1, 0, 0, 255, 0]).into_data();
        assert_eq!(d, [5, 0, 0, 2, 0x00, 0x83]);
        let d = inquiry(&[0x12, 1, 0x83, 0, 255, 0]).into_data();
        assert_eq!((d[1], usize::from(be16(&d, 2))), (0x83, d.len() - 4));
        assert_eq!(usize::from(d[7]), d.len() - 8);
        assert_eq!(&d[8..16], VENDOR);
        assert_eq!(
            inquiry(&[0x12, 1, 0x80, 0, 255, 0]),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn report_luns_lists_lun_0() {
        let d = report_luns(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).into_data();
        assert_eq!(d, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn mode_sense_is_write_protected() {
        let d = mode_sense(&[0x1a, 0, 0x2a, 0, 255, 0], false, true).into_data();
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!((d[2], d[3]), (WRITE_PROTECT, 0), "WP, no block descriptors");
        assert_eq!((d[4], d[5]), (0x2a, 0x14));
        assert_eq!(d[4 + 6], CAP_LOCK | CAP_LOCKED | CAP_TRAY);
        let d = mode_sense(&[0x5a, 0, 0x3f, 0, 0, 0, 0, 1, 0, 0], true, false).into_data();
        assert_eq!(usize::from(be16(&d, 0)) + 2, d.len());
        assert_eq!(d[3], WRITE_PROTECT);
        assert_eq!((d[8], d[8 + 12]), (0x01, 0x2a), "both pages");
        let d = mode_sense(&[0x1a, 0, 0x41, 0, 255, 0], false, false).into_data();
        assert_eq!(d[4 + 3], 0, "changeable: nothing");
        assert_eq!(
            mode_sense(&[0x1a, 0, 0xc1, 0, 255, 0], false, false),
            Reply::Check(Sense::SAVING_NOT_SUPPORTED)
        );
        assert_eq!(
            mode_sense(&[0x1a, 0, 0x08, 0, 255, 0], false, false),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            mode_sense(&[0x1a, 0, 0x2a, 1, 255, 0], false, false),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            mode_sense(&[0x1a, 0, 0x3f, 0xff, 2, 0], false, false)
                .into_data()
                .len(),
            2
        );
    }
}
