//! The command set of the CD-ROM logical unit: which CDB does what.
//!
//! A command is a CDB in and a [`Reply`] out; moving the data to and from the guest is the
//! transport's job. The commands are the SPC primary commands ([`super::spc`]) and the MMC
//! subset a BIOS, Linux's sr and OpenBSD's cd use ([`super::disc`]) plus the reads; every
//! write is refused with DATA PROTECT and every other opcode with ILLEGAL REQUEST.

use super::disc;
use super::image::BLOCK_SIZE;
use super::sense::Sense;
use super::spc;

// Opcodes (SPC-4, SBC-3, MMC-6).
const TEST_UNIT_READY: u8 = 0x00;
const REQUEST_SENSE: u8 = 0x03;
const FORMAT_UNIT: u8 = 0x04;
const READ_6: u8 = 0x08;
const WRITE_6: u8 = 0x0a;
const INQUIRY: u8 = 0x12;
const MODE_SENSE_6: u8 = 0x1a;
const START_STOP_UNIT: u8 = 0x1b;
const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
const READ_CAPACITY_10: u8 = 0x25;
const READ_10: u8 = 0x28;
const WRITE_10: u8 = 0x2a;
const WRITE_AND_VERIFY_10: u8 = 0x2e;
const WRITE_SAME_10: u8 = 0x41;
const READ_TOC_PMA_ATIP: u8 = 0x43;
const GET_CONFIGURATION: u8 = 0x46;
const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
const READ_DISC_INFORMATION: u8 = 0x51;
const MODE_SENSE_10: u8 = 0x5a;
const READ_16: u8 = 0x88;
const WRITE_16: u8 = 0x8a;
const WRITE_AND_VERIFY_16: u8 = 0x8e;
const WRITE_SAME_16: u8 = 0x93;
const SERVICE_ACTION_IN_16: u8 = 0x9e;
const REPORT_LUNS: u8 = 0xa0;
const BLANK: u8 = 0xa1;
const READ_12: u8 = 0xa8;
const WRITE_12: u8 = 0xaa;
const WRITE_AND_VERIFY_12: u8 = 0xae;
const MECHANISM_STATUS: u8 = 0xbd;

/// READ CAPACITY(16) is service action 0x10 of SERVICE ACTION IN(16).
const SA_READ_CAPACITY_16: u8 = 0x10;
const SERVICE_ACTION_MASK: u8 = 0x1f;
/// READ(6) addresses 21 bits of LBA.
const READ_6_LBA_MASK: u32 = 0x1f_ffff;
/// READ(6) with a transfer length of 0 means 256 blocks.
const READ_6_ZERO_BLOCKS: u64 = 256;
/// REQUEST SENSE's DESC bit: descriptor-format sense, which this device does not produce.
const SENSE_DESC: u8 = 0x01;
/// PREVENT ALLOW MEDIUM REMOVAL's PREVENT field.
const PREVENT_MASK: u8 = 0x03;
/// Bytes of READ CAPACITY(10) data.
const READ_CAPACITY_10_LEN: usize = 8;
/// Bytes of READ CAPACITY(16) data.
const READ_CAPACITY_16_LEN: usize = 32;
/// READ CAPACITY(10) reports this as the last LBA when it does not fit in 32 bits.
const LBA_TOO_BIG_FOR_10: u64 = 0xffff_ffff;

/// The longest CDB this command set reads.
pub const MAX_CDB_USED: usize = 16;

/// What a command produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// GOOD, with these data-in bytes (already cut to the CDB's allocation length).
    Data(Vec<u8>),
    /// GOOD, with `len` bytes of the image from byte `offset` as data-in.
    Read { offset: u64, len: u64 },
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

#[cfg(test)]
impl Reply {
    /// The data-in bytes of a GOOD reply with data; anything else fails the test.
    pub fn into_data(self) -> Vec<u8> {
        match self {
            Reply::Data(d) => d,
            r => panic!("expected data, got {r:?}"),
        }
    }
}

/// GOOD with `data` cut to `allocation` bytes.
pub fn data(mut data: Vec<u8>, allocation: usize) -> Reply {
    data.truncate(allocation);
    Reply::Data(data)
}

/// The CDB bytes `[at, at + N)`; a CDB is always at least as long as its opcode group
/// requires ([`CdRom::execute`] checks), so the zero default is never observed.
fn bytes<const N: usize>(cdb: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        *x = cdb.get(at + i).copied().unwrap_or(0);
    }
    b
}

/// Big-endian 16-bit CDB field at `at`.
pub fn be16(cdb: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(bytes(cdb, at))
}

/// Big-endian 32-bit CDB field at `at`.
pub fn be32(cdb: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes(cdb, at))
}

fn be64(cdb: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes(cdb, at))
}

/// CDB byte `at`.
pub fn byte(cdb: &[u8], at: usize) -> u8 {
    bytes::<1>(cdb, at)[0]
}

/// Length of the CDB of `opcode` from its group code (SPC-4 §4.2.5.1). Groups without a
/// fixed length (variable-length and vendor-specific) hold nothing implemented here: one byte
/// is enough to refuse them.
fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 1,
    }
}

/// The CD-ROM logical unit: the medium's geometry and the removal lock.
pub struct CdRom {
    blocks: u64,
    /// PREVENT ALLOW MEDIUM REMOVAL state, reported in the capabilities page. There is no
    /// eject, so it changes nothing else.
    locked: bool,
}

impl CdRom {
    /// A logical unit with a medium of `blocks` 2048-byte blocks.
    pub fn new(blocks: u64) -> Self {
        CdRom {
            blocks,
            locked: false,
        }
    }

    /// Back to the power-on state (device reset, LOGICAL UNIT RESET).
    pub fn reset(&mut self) {
        self.locked = false;
    }

    /// Run the command in `cdb` (at most [`MAX_CDB_USED`] bytes are looked at; fewer than the
    /// opcode needs is ILLEGAL REQUEST).
    pub fn execute(&mut self, cdb: &[u8]) -> Reply {
        let Some(&op) = cdb.first() else {
            return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
        };
        if cdb.len() < cdb_len(op) {
            return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
        }
        match op {
            TEST_UNIT_READY | START_STOP_UNIT => Reply::Data(Vec::new()),
            REQUEST_SENSE => request_sense(cdb),
            INQUIRY => spc::inquiry(cdb),
            REPORT_LUNS => spc::report_luns(cdb),
            MODE_SENSE_6 => spc::mode_sense(cdb, false, self.locked),
            MODE_SENSE_10 => spc::mode_sense(cdb, true, self.locked),
            PREVENT_ALLOW_MEDIUM_REMOVAL => {
                self.locked = byte(cdb, 4) & PREVENT_MASK != 0;
                Reply::Data(Vec::new())
            }
            READ_CAPACITY_10 => self.read_capacity_10(),
            SERVICE_ACTION_IN_16 if byte(cdb, 1) & SERVICE_ACTION_MASK == SA_READ_CAPACITY_16 => {
                self.read_capacity_16(cdb)
            }
            SERVICE_ACTION_IN_16 => Reply::Check(Sense::INVALID_FIELD_IN_CDB),
            READ_6 => {
                let lba = u32::from_be_bytes([0, byte(cdb, 1), byte(cdb, 2), byte(cdb, 3)]);
                let n = match byte(cdb, 4) {
                    0 => READ_6_ZERO_BLOCKS,
                    n => u64::from(n),
                };
                self.read(u64::from(lba & READ_6_LBA_MASK), n)
            }
            READ_10 => self.read(be32(cdb, 2).into(), be16(cdb, 7).into()),
            READ_12 => self.read(be32(cdb, 2).into(), be32(cdb, 6).into()),
            READ_16 => self.read(be64(cdb, 2), be32(cdb, 10).into()),
            READ_TOC_PMA_ATIP => disc::read_toc(cdb, self.blocks),
            GET_CONFIGURATION => disc::get_configuration(cdb, self.blocks),
            GET_EVENT_STATUS_NOTIFICATION => disc::event_status(cdb),
            READ_DISC_INFORMATION => disc::disc_information(cdb),
            MECHANISM_STATUS => disc::mechanism_status(cdb),
            FORMAT_UNIT | WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 | WRITE_AND_VERIFY_10
            | WRITE_AND_VERIFY_12 | WRITE_AND_VERIFY_16 | WRITE_SAME_10 | WRITE_SAME_16 | BLANK => {
                Reply::Check(Sense::WRITE_PROTECTED)
            }
            _ => Reply::Check(Sense::INVALID_OPCODE),
        }
    }

    fn read(&self, lba: u64, blocks: u64) -> Reply {
        match lba.checked_add(blocks) {
            // Inside the medium, so the byte range cannot overflow.
            Some(end) if end <= self.blocks => Reply::Read {
                offset: lba * BLOCK_SIZE,
                len: blocks * BLOCK_SIZE,
            },
            _ => Reply::Check(Sense::LBA_OUT_OF_RANGE),
        }
    }

    fn last_lba(&self) -> u64 {
        self.blocks.saturating_sub(1)
    }

    fn read_capacity_10(&self) -> Reply {
        let last = self.last_lba().min(LBA_TOO_BIG_FOR_10) as u32;
        let mut d = Vec::with_capacity(READ_CAPACITY_10_LEN);
        d.extend(last.to_be_bytes());
        d.extend((BLOCK_SIZE as u32).to_be_bytes());
        Reply::Data(d)
    }

    fn read_capacity_16(&self, cdb: &[u8]) -> Reply {
        let mut d = vec![0u8; READ_CAPACITY_16_LEN];
        d[0..8].copy_from_slice(&self.last_lba().to_be_bytes());
        d[8..12].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
        data(d, be32(cdb, 10) as usize)
    }
}

/// Sense data is delivered with every CHECK CONDITION (autosense), so there is never a
/// pending condition left for REQUEST SENSE to report.
fn request_sense(cdb: &[u8]) -> Reply {
    if byte(cdb, 1) & SENSE_DESC != 0 {
        return Reply::Check(Sense::INVALID_FIELD_IN_CDB);
    }
    data(Sense::NONE.fixed().to_vec(), usize::from(byte(cdb, 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdb(bytes: &[u8], len: usize) -> Vec<u8> {
        let mut c = bytes.to_vec();
        c.resize(len, 0);
        c
    }

    fn read10(lba: u32, n: u16) -> Vec<u8> {
        let mut c = cdb(&[READ_10], 10);
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&n.to_be_bytes());
        c
    }

    #[test]
    fn reads_in_range_become_byte_ranges() {
        let mut cd = CdRom::new(100);
        assert_eq!(
            cd.execute(&read10(3, 2)),
            Reply::Read {
                offset: 3 * 2048,
                len: 4096
            }
        );
        assert_eq!(
            cd.execute(&read10(99, 1)),
            Reply::Read {
                offset: 99 * 2048,
                len: 2048
            }
        );
        assert_eq!(cd.execute(&read10(0, 0)), Reply::Read { offset: 0, len: 0 });
        let mut r12 = cdb(&[READ_12], 12);
        r12[6..10].copy_from_slice(&100u32.to_be_bytes());
        assert_eq!(
            cd.execute(&r12),
            Reply::Read {
                offset: 0,
                len: 204800
            }
        );
        let r6 = cdb(&[READ_6, 0, 0, 10, 0], 6);
        assert_eq!(
            cd.execute(&r6),
            Reply::Check(Sense::LBA_OUT_OF_RANGE),
            "0 blocks is 256"
        );
    }

    #[test]
    fn reads_past_the_end_are_lba_out_of_range() {
        let mut cd = CdRom::new(100);
        assert_eq!(
            cd.execute(&read10(99, 2)),
            Reply::Check(Sense::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            cd.execute(&read10(u32::MAX, u16::MAX)),
            Reply::Check(Sense::LBA_OUT_OF_RANGE)
        );
        let mut r16 = cdb(&[READ_16], 16);
        r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        r16[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(cd.execute(&r16), Reply::Check(Sense::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn writes_are_data_protect() {
        let mut cd = CdRom::new(100);
        for op in [WRITE_6, WRITE_10, WRITE_12, WRITE_16, WRITE_SAME_16, BLANK] {
            assert_eq!(
                cd.execute(&cdb(&[op], 16)),
                Reply::Check(Sense::WRITE_PROTECTED)
            );
        }
    }

    #[test]
    fn unknown_opcodes_and_short_cdbs() {
        let mut cd = CdRom::new(100);
        assert_eq!(
            cd.execute(&cdb(&[0xff], 16)),
            Reply::Check(Sense::INVALID_OPCODE)
        );
        assert_eq!(
            cd.execute(&cdb(&[0x7f], 16)),
            Reply::Check(Sense::INVALID_OPCODE)
        );
        assert_eq!(cd.execute(&[]), Reply::Check(Sense::INVALID_FIELD_IN_CDB));
        assert_eq!(
            cd.execute(&read10(0, 1)[..6]),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn read_capacity_of_a_three_block_medium() {
        let mut cd = CdRom::new(3);
        assert_eq!(
            cd.execute(&cdb(&[READ_CAPACITY_10], 10)),
            Reply::Data(vec![0, 0, 0, 2, 0, 0, 8, 0])
        );
        let mut c = cdb(&[SERVICE_ACTION_IN_16, SA_READ_CAPACITY_16], 16);
        c[13] = 12;
        assert_eq!(
            cd.execute(&c),
            Reply::Data(vec![0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 8, 0])
        );
        let huge = CdRom::new(1 << 33).read_capacity_10();
        assert_eq!(huge, Reply::Data(vec![0xff, 0xff, 0xff, 0xff, 0, 0, 8, 0]));
        c[1] = 0x11;
        assert_eq!(cd.execute(&c), Reply::Check(Sense::INVALID_FIELD_IN_CDB));
    }

    #[test]
    fn request_sense_reports_no_sense_and_lock_toggles() {
        let mut cd = CdRom::new(3);
        let Reply::Data(d) = cd.execute(&cdb(&[REQUEST_SENSE, 0, 0, 0, 252], 6)) else {
            panic!("no data");
        };
        assert_eq!((d.len(), d[0], d[2]), (18, 0x70, 0));
        assert_eq!(
            cd.execute(&cdb(&[REQUEST_SENSE, 1, 0, 0, 252], 6)),
            Reply::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        cd.execute(&cdb(&[PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1], 6));
        assert!(cd.locked);
        cd.reset();
        assert!(!cd.locked);
    }
}
