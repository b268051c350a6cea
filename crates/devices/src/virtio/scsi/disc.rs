//! MMC commands that describe the disc and the drive: READ TOC/PMA/ATIP, GET CONFIGURATION,
//! GET EVENT STATUS NOTIFICATION, READ DISC INFORMATION and MECHANISM STATUS.
//!
//! The disc is always a closed, single-session disc with one data track covering the whole
//! image, and it never changes: the answers are fixed by the image size.

use super::image::BLOCK_SIZE;
use super::mmc::{be16, byte, data, Reply};
use super::sense::Sense;

// READ TOC/PMA/ATIP.
const TOC_MSF: u8 = 0x02;
const TOC_FORMAT_MASK: u8 = 0x0f;
const TOC_FORMAT_TOC: u8 = 0;
const TOC_FORMAT_SESSION_INFO: u8 = 1;
/// The one track, and the number of the one session.
const DATA_TRACK: u8 = 1;
const LEAD_OUT_TRACK: u8 = 0xaa;
/// ADR 1 (Q sub-channel is position), CONTROL 4 (data track, recorded uninterrupted).
const ADR_CONTROL_DATA: u8 = 0x14;
/// MSF addresses count from 00:02:00, the end of the pregap.
const MSF_OFFSET_FRAMES: u64 = 150;
const FRAMES_PER_SECOND: u64 = 75;
const SECONDS_PER_MINUTE: u64 = 60;
const TRACK_DESCRIPTOR_LEN: usize = 8;

// GET CONFIGURATION.
const RT_MASK: u8 = 0x03;
const RT_ALL: u8 = 0;
const RT_CURRENT: u8 = 1;
const RT_ONE: u8 = 2;
const FEATURE_HEADER_LEN: usize = 8;
const FEATURE_PROFILE_LIST: u16 = 0x0000;
const FEATURE_CORE: u16 = 0x0001;
const FEATURE_REMOVABLE_MEDIUM: u16 = 0x0003;
const FEATURE_RANDOM_READABLE: u16 = 0x0010;
const FEATURE_CD_READ: u16 = 0x001e;
const FEATURE_DVD_READ: u16 = 0x001f;
const PROFILE_CD_ROM: u16 = 0x0008;
const PROFILE_DVD_ROM: u16 = 0x0010;
/// Feature descriptor byte 2: persistent, current (version 0).
const FEATURE_PERSISTENT: u8 = 0x02;
const FEATURE_CURRENT: u8 = 0x01;
/// Profile descriptor byte 2: CURRENTP.
const PROFILE_CURRENT: u8 = 0x01;
/// Core feature: physical interface standard "SCSI family".
const PHYSICAL_INTERFACE_SCSI: u32 = 1;
/// Removable medium feature: tray loading mechanism (001b in bits 7-5), lock supported; no
/// eject.
const REMOVABLE_TRAY_LOCK: u8 = 0x21;
/// Random readable feature: blocking (blocks per ECC unit) of CD and DVD media.
const CD_BLOCKING: u16 = 1;
const DVD_BLOCKING: u16 = 16;
/// Largest image presented as a CD (an 80-minute disc); larger ones are DVDs, which guests
/// that check media sizes against the profile expect.
const CD_MAX_BLOCKS: u64 = 80 * SECONDS_PER_MINUTE * FRAMES_PER_SECOND;

// GET EVENT STATUS NOTIFICATION.
const GESN_POLLED: u8 = 0x01;
/// The media class: its request bit, and the class code in the event header.
const MEDIA_CLASS_BIT: u8 = 1 << 4;
const MEDIA_CLASS: u8 = 4;
/// NEA: no event class that was asked for is supported.
const NO_EVENT_AVAILABLE: u8 = 0x80;
/// Media event descriptor: no change, media present.
const MEDIA_NO_CHANGE: u8 = 0;
const MEDIA_PRESENT: u8 = 0x02;

// READ DISC INFORMATION.
const DISC_INFO_TYPE_MASK: u8 = 0x07;
const DISC_INFO_STANDARD: u8 = 0;
const DISC_INFO_LEN: usize = 34;
/// Last session complete (11b in bits 3-2), disc complete (10b).
const DISC_COMPLETE: u8 = 0x0e;
/// URU: unrestricted use.
const DISC_UNRESTRICTED: u8 = 0x20;
/// Lead-in and lead-out start of a complete disc: none.
const NO_ADDRESS: u32 = 0xffff_ffff;

// MECHANISM STATUS: no changer, idle, door closed, no slot table.
const MECHANISM_STATUS_LEN: usize = 8;

/// READ TOC/PMA/ATIP formats 0 (TOC) and 1 (session information).
pub fn read_toc(cdb: &[u8], blocks: u64) -> Reply {
    let msf = byte(cdb, 1) & TOC_MSF != 0;
    let track = byte(cdb, 6);
    // Header: data length (filled in below), first and last track or session.
    let mut d = vec![0, 0, DATA_TRACK, DATA_TRACK];
    match byte(cdb, 2) & TOC_FORMAT_MASK {
        TOC_FORMAT_TOC => {
            if track > DATA_TRACK && track != LEAD_OUT_TRACK {
                return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
            }
            if track <= DATA_TRACK {
                d.extend(track_descriptor(DATA_TRACK, 0, msf));
            }
            d.extend(track_descriptor(LEAD_OUT_TRACK, blocks, msf));
        }
        TOC_FORMAT_SESSION_INFO => d.extend(track_descriptor(DATA_TRACK, 0, msf)),
        _ => return Reply::Check(Sense::INVALID_FIELD_IN_CDB),
    }
    let len = (d.len() - 2) as u16;
    d[0..2].copy_from_slice(&len.to_be_bytes());
    data(d, usize::from(be16(cdb, 7)))
}

fn track_descriptor(track: u8, lba: u64, msf: bool) -> [u8; TRACK_DESCRIPTOR_LEN] {
    let mut t = [0, ADR_CONTROL_DATA, track, 0, 0, 0, 0, 0];
    t[4..].copy_from_slice(&address(lba, msf));
    t
}

/// `lba` as a TOC address: big-endian LBA, or 0/M/S/F. Values too big for the field saturate
/// (no real disc reaches them).
fn address(lba: u64, msf: bool) -> [u8; 4] {
    if !msf {
        return u32::try_from(lba).unwrap_or(u32::MAX).to_be_bytes();
    }
    let f = lba.saturating_add(MSF_OFFSET_FRAMES);
    let minutes = f / (FRAMES_PER_SECOND * SECONDS_PER_MINUTE);
    [
        0,
        u8::try_from(minutes).unwrap_or(u8::MAX),
        (f / FRAMES_PER_SECOND % SECONDS_PER_MINUTE) as u8,
        (f % FRAMES_PER_SECOND) as u8,
    ]
}

/// One GET CONFIGURATION feature descriptor's parts.
struct Feature {
    code: u16,
    persistent: bool,
    current: bool,
    body: Vec<u8>,
}

/// The drive's features for a medium of `blocks` blocks.
fn features(blocks: u64) -> Vec<Feature> {
    let dvd = blocks > CD_MAX_BLOCKS;
    let profile = |p: u16, current: bool| {
        let mut b = p.to_be_bytes().to_vec();
        b.extend([if current { PROFILE_CURRENT } else { 0 }, 0]);
        b
    };
    let blocking = if dvd { DVD_BLOCKING } else { CD_BLOCKING };
    let mut random = (BLOCK_SIZE as u32).to_be_bytes().to_vec();
    random.extend(blocking.to_be_bytes());
    random.extend([0, 0]);
    let f = |code, persistent, current, body| Feature {
        code,
        persistent,
        current,
        body,
    };
    vec![
        f(
            FEATURE_PROFILE_LIST,
            true,
            true,
            [profile(PROFILE_DVD_ROM, dvd), profile(PROFILE_CD_ROM, !dvd)].concat(),
        ),
        f(
            FEATURE_CORE,
            true,
            true,
            PHYSICAL_INTERFACE_SCSI.to_be_bytes().to_vec(),
        ),
        f(
            FEATURE_REMOVABLE_MEDIUM,
            true,
            true,
            vec![REMOVABLE_TRAY_LOCK, 0, 0, 0],
        ),
        f(FEATURE_RANDOM_READABLE, false, true, random),
        f(FEATURE_CD_READ, false, !dvd, vec![0; 4]),
        f(FEATURE_DVD_READ, false, dvd, Vec::new()),
    ]
}

/// GET CONFIGURATION: the feature header (current profile CD-ROM, or DVD-ROM for an image
/// larger than a CD) and the features the RT field selects.
pub fn get_configuration(cdb: &[u8], blocks: u64) -> Reply {
    let rt = byte(cdb, 1) & RT_MASK;
    let start = be16(cdb, 2);
    let wanted = |f: &Feature| match rt {
        RT_ALL => f.code >= start,
        RT_CURRENT => f.code >= start && f.current,
        _ => f.code == start,
    };
    if !matches!(rt, RT_ALL | RT_CURRENT | RT_ONE) {
        return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let current = if blocks > CD_MAX_BLOCKS {
        PROFILE_DVD_ROM
    } else {
        PROFILE_CD_ROM
    };
    let mut d = vec![0u8; FEATURE_HEADER_LEN];
    d[6..8].copy_from_slice(&current.to_be_bytes());
    for f in features(blocks).iter().filter(|f| wanted(f)) {
        d.extend(f.code.to_be_bytes());
        let flags = if f.persistent { FEATURE_PERSISTENT } else { 0 }
            | if f.current { FEATURE_CURRENT } else { 0 };
        d.extend([flags, f.body.len() as u8]);
        d.extend(&f.body);
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    data(d, usize::from(be16(cdb, 7)))
}

/// GET EVENT STATUS NOTIFICATION, polled only: the media class, always "no change, media
/// present" (there is no eject or media change).
pub fn event_status(cdb: &[u8]) -> Reply {
    if byte(cdb, 1) & GESN_POLLED == 0 {
        return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let d = if byte(cdb, 4) & MEDIA_CLASS_BIT != 0 {
        vec![
            0,
            6,
            MEDIA_CLASS,
            MEDIA_CLASS_BIT,
            MEDIA_NO_CHANGE,
            MEDIA_PRESENT,
            0,
            0,
        ]
    } else {
        vec![0, 2, NO_EVENT_AVAILABLE, MEDIA_CLASS_BIT]
    };
    data(d, usize::from(be16(cdb, 7)))
}

/// READ DISC INFORMATION, standard data type: a complete single-session disc.
pub fn disc_information(cdb: &[u8]) -> Reply {
    if byte(cdb, 1) & DISC_INFO_TYPE_MASK != DISC_INFO_STANDARD {
        return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    let mut d = vec![0u8; DISC_INFO_LEN];
    d[0..2].copy_from_slice(&((DISC_INFO_LEN - 2) as u16).to_be_bytes());
    d[2] = DISC_COMPLETE;
    // First track, sessions, first and last track of the last session.
    d[3..7].fill(DATA_TRACK);
    d[7] = DISC_UNRESTRICTED;
    d[16..20].copy_from_slice(&NO_ADDRESS.to_be_bytes());
    d[20..24].copy_from_slice(&NO_ADDRESS.to_be_bytes());
    data(d, usize::from(be16(cdb, 7)))
}

/// MECHANISM STATUS: a plain drive, idle, door closed.
pub fn mechanism_status(cdb: &[u8]) -> Reply {
    data(vec![0; MECHANISM_STATUS_LEN], usize::from(be16(cdb, 8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_has_one_data_track_and_the_lead_out() {
        let d = read_toc(&[0x43, 0, 0, 0, 0, 0, 0, 1, 0, 0], 300).into_data();
        assert_eq!(d.len(), 4 + 16);
        assert_eq!(be16(&d, 0), 18);
        assert_eq!(&d[2..4], &[1, 1]);
        assert_eq!(&d[4..12], &[0, 0x14, 1, 0, 0, 0, 0, 0]);
        assert_eq!(&d[12..20], &[0, 0x14, 0xaa, 0, 0, 0, 1, 44]);
        // MSF: 300 + 150 frames = 00:06:00.
        let d = read_toc(&[0x43, 2, 0, 0, 0, 0, 0xaa, 1, 0, 0], 300).into_data();
        assert_eq!(&d[4..12], &[0, 0x14, 0xaa, 0, 0, 0, 6, 0]);
        let d = read_toc(&[0x43, 0, 1, 0, 0, 0, 0, 0, 12, 0], 300).into_data();
        assert_eq!(d, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0], "session info");
        assert_eq!(
            read_toc(&[0x43, 0, 0, 0, 0, 0, 2, 1, 0, 0], 300),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            read_toc(&[0x43, 0, 2, 0, 0, 0, 0, 1, 0, 0], 300),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(address(u64::MAX, true)[1], 0xff, "saturates");
    }

    #[test]
    fn configuration_profiles() {
        let d = get_configuration(&[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0], 300).into_data();
        assert_eq!(be16(&d, 6), PROFILE_CD_ROM);
        assert_eq!(
            u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
            d.len() - 4
        );
        // The profile list first: DVD-ROM (not current), CD-ROM (current).
        assert_eq!(&d[8..12], &[0, 0, 3, 8]);
        assert_eq!(&d[12..20], &[0, 0x10, 0, 0, 0, 8, 1, 0]);
        let big = CD_MAX_BLOCKS + 1;
        let d = get_configuration(&[0x46, 0, 0, 0, 0, 0, 0, 1, 0, 0], big).into_data();
        assert_eq!(be16(&d, 6), PROFILE_DVD_ROM);
        // RT 2: just the random readable feature.
        let d = get_configuration(&[0x46, 2, 0, 0x10, 0, 0, 0, 1, 0, 0], 300).into_data();
        assert_eq!(d.len(), 8 + 4 + 8);
        assert_eq!(&d[8..12], &[0, 0x10, 1, 8]);
        assert_eq!(&d[12..16], &[0, 0, 8, 0]);
        // RT 1 from 0x1e: CD read only (DVD read is not current).
        let d = get_configuration(&[0x46, 1, 0, 0x1e, 0, 0, 0, 1, 0, 0], 300).into_data();
        assert_eq!((d.len(), be16(&d, 8)), (8 + 8, FEATURE_CD_READ));
        // RT 2 of a feature that does not exist: the header alone.
        let d = get_configuration(&[0x46, 2, 0, 0x28, 0, 0, 0, 1, 0, 0], 300).into_data();
        assert_eq!(d.len(), 8);
        assert_eq!(
            get_configuration(&[0x46, 3, 0, 0, 0, 0, 0, 1, 0, 0], 300),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn event_status_polled_media_present() {
        let d = event_status(&[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]).into_data();
        assert_eq!(d, [0, 6, 4, 0x10, 0, 2, 0, 0]);
        let d = event_status(&[0x4a, 1, 0, 0, 0x02, 0, 0, 0, 8, 0]).into_data();
        assert_eq!(d, [0, 2, 0x80, 0x10]);
        assert_eq!(
            event_status(&[0x4a, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn disc_information_and_mechanism_status() {
        let d = disc_information(&[0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0]).into_data();
        assert_eq!((d.len(), be16(&d, 0)), (34, 32));
        assert_eq!(d[2], DISC_COMPLETE);
        assert_eq!(
            disc_information(&[0x51, 1, 0, 0, 0, 0, 0, 0, 34, 0]),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        let d = mechanism_status(&[0xbd, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]).into_data();
        assert_eq!(d, [0; 8]);
    }
}
