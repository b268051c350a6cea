//! SCSI status codes and fixed-format sense data (SPC-4 §4.5.3): how a command reports a
//! failure to the guest.

/// SCSI status GOOD.
pub const GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION: the sense data says why.
pub const CHECK_CONDITION: u8 = 0x02;

/// Bytes of fixed-format sense data with no sense-key specific or additional bytes.
pub const FIXED_SENSE_LEN: usize = 18;
/// Response code of fixed-format sense data for the current command.
const FIXED_CURRENT: u8 = 0x70;
/// The ADDITIONAL SENSE LENGTH field: the bytes after byte 7.
const ADDITIONAL_LEN: u8 = (FIXED_SENSE_LEN - 8) as u8;

// Sense keys.
const NO_SENSE_KEY: u8 = 0x0;
const MEDIUM_ERROR_KEY: u8 = 0x3;
const ILLEGAL_REQUEST_KEY: u8 = 0x5;
const DATA_PROTECT_KEY: u8 = 0x7;

/// Sense key, additional sense code and qualifier of one failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    /// Nothing to report (REQUEST SENSE after the error was already delivered).
    pub const NONE: Sense = Sense::new(NO_SENSE_KEY, 0x00, 0x00);
    /// The image could not be read (the file shrank, a host I/O error).
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(MEDIUM_ERROR_KEY, 0x11, 0x00);
    /// An opcode this CD-ROM does not implement.
    pub const INVALID_OPCODE: Sense = Sense::new(ILLEGAL_REQUEST_KEY, 0x20, 0x00);
    /// A block address or range past the end of the medium.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(ILLEGAL_REQUEST_KEY, 0x21, 0x00);
    /// A CDB field (page code, format, service action, ...) with an unsupported value.
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(ILLEGAL_REQUEST_KEY, 0x24, 0x00);
    /// MODE SENSE of saved values: nothing is ever saved.
    pub const SAVING_NOT_SUPPORTED: Sense = Sense::new(ILLEGAL_REQUEST_KEY, 0x39, 0x00);
    /// Any write to the read-only medium.
    pub const WRITE_PROTECTED: Sense = Sense::new(DATA_PROTECT_KEY, 0x27, 0x00);

    const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Sense { key, asc, ascq }
    }

    /// The fixed-format sense data.
    pub fn fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut s = [0u8; FIXED_SENSE_LEN];
        s[0] = FIXED_CURRENT;
        s[2] = self.key;
        s[7] = ADDITIONAL_LEN;
        s[12] = self.asc;
        s[13] = self.ascq;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::LBA_OUT_OF_RANGE.fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(usize::from(s[7]) + 8, FIXED_SENSE_LEN);
        assert_eq!((s[12], s[13]), (0x21, 0x00));
    }
}
