//! Framing (docs/snapshot.md): after the header, sections of a 4-byte tag and an 8-byte
//! length (both little-endian) followed by that many bytes; state records are postcard, guest
//! memory is raw. A CRC-32 of everything before it ends the stream. Every length is checked
//! against the limits here before anything is allocated or read.

use std::io::{self, Read, Write};

use flate2::Crc;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::header::{Header, HEADER_LEN};
use super::SnapshotError;

/// The machine record: memory size, vCPUs, devices ([`super::Machine`]).
pub const TAG_MACHINE: u32 = 1;
/// A run of guest memory: its guest address (8 bytes), then the bytes.
pub const TAG_MEMORY: u32 = 2;
/// One vCPU's record ([`super::VcpuState`]), one per vCPU in index order.
pub const TAG_VCPU: u32 = 3;
/// The VM-wide record: interrupt controllers, PIT, clock ([`super::VmState`]).
pub const TAG_VM: u32 = 4;
/// The devices' record ([`super::DevicesState`]).
pub const TAG_DEVICES: u32 = 5;
/// The end: the CRC-32 (4 bytes) of every byte before them, header included.
pub const TAG_END: u32 = 0xff;

/// Most bytes of one state record. Ours take a few KiB (a vCPU's XSAVE area is 4 KiB).
pub const MAX_RECORD_LEN: u64 = 1 << 20;
/// Most bytes of guest memory in one section.
pub const MAX_MEMORY_CHUNK: u64 = 1 << 20;
/// Guest memory is streamed in whole pages; all-zero pages are left out.
pub const PAGE_SIZE: u64 = 4096;
/// Bytes of the guest address in front of a memory section's data.
pub const MEMORY_ADDR_LEN: u64 = 8;
/// Bytes of the END section's payload.
const END_LEN: u64 = 4;

/// Map a read error: running out of bytes is a truncated stream.
fn read_error(what: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated { what }
        } else {
            SnapshotError::Read(e)
        }
    }
}

/// Writes a stream, hashing every byte.
pub struct Writer<'a> {
    out: &'a mut dyn Write,
    crc: Crc,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut dyn Write) -> Self {
        Writer {
            out,
            crc: Crc::new(),
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.crc.update(bytes);
        self.out.write_all(bytes).map_err(SnapshotError::Write)
    }

    fn section_header(&mut self, tag: u32, len: u64) -> Result<(), SnapshotError> {
        let mut h = [0u8; 12];
        h[..4].copy_from_slice(&tag.to_le_bytes());
        h[4..].copy_from_slice(&len.to_le_bytes());
        self.raw(&h)
    }

    pub fn header(&mut self, header: &Header) -> Result<(), SnapshotError> {
        self.raw(&header.encode())
    }

    /// A state record under `tag`.
    pub fn record<T: Serialize>(
        &mut self,
        tag: u32,
        what: &'static str,
        value: &T,
    ) -> Result<(), SnapshotError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| SnapshotError::Malformed {
            what,
            reason: e.to_string(),
        })?;
        let len = bytes.len() as u64;
        if len > MAX_RECORD_LEN {
            return Err(SnapshotError::TooLarge {
                what,
                len,
                limit: MAX_RECORD_LEN,
            });
        }
        self.section_header(tag, len)?;
        self.raw(&bytes)
    }

    /// Guest memory at `addr` (whole pages, at most [`MAX_MEMORY_CHUNK`]).
    pub fn memory(&mut self, addr: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.section_header(TAG_MEMORY, MEMORY_ADDR_LEN + bytes.len() as u64)?;
        self.raw(&addr.to_le_bytes())?;
        self.raw(bytes)
    }

    /// The END section; the stream is complete.
    pub fn finish(mut self) -> Result<(), SnapshotError> {
        self.section_header(TAG_END, END_LEN)?;
        let sum = self.crc.sum();
        self.out
            .write_all(&sum.to_le_bytes())
            .and_then(|()| self.out.flush())
            .map_err(SnapshotError::Write)
    }
}

/// A section's tag and length.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub tag: u32,
    pub len: u64,
}

/// Reads a stream, hashing every byte.
pub struct Reader<'a> {
    input: &'a mut dyn Read,
    crc: Crc,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a mut dyn Read) -> Self {
        Reader {
            input,
            crc: Crc::new(),
        }
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), SnapshotError> {
        self.input.read_exact(buf).map_err(read_error(what))?;
        self.crc.update(buf);
        Ok(())
    }

    pub fn header(&mut self) -> Result<Header, SnapshotError> {
        let mut b = [0u8; HEADER_LEN];
        self.exact(&mut b, "the header")?;
        Header::decode(&b)
    }

    /// The next section's tag and length, which must be `tag` (`what` names it for errors).
    pub fn expect(&mut self, tag: u32, what: &'static str) -> Result<Section, SnapshotError> {
        let s = self.section(what)?;
        if s.tag == tag {
            Ok(s)
        } else {
            Err(SnapshotError::Malformed {
                what,
                reason: format!("found a section with tag {:#x} instead", s.tag),
            })
        }
    }

    /// The next section's tag and length.
    pub fn section(&mut self, what: &'static str) -> Result<Section, SnapshotError> {
        let mut h = [0u8; 12];
        self.exact(&mut h, what)?;
        let tag = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&h[4..]);
        Ok(Section {
            tag,
            len: u64::from_le_bytes(len),
        })
    }

    /// The postcard record of section `s`, which must be all of it.
    pub fn record<T: DeserializeOwned>(
        &mut self,
        s: Section,
        what: &'static str,
    ) -> Result<T, SnapshotError> {
        if s.len > MAX_RECORD_LEN {
            return Err(SnapshotError::TooLarge {
                what,
                len: s.len,
                limit: MAX_RECORD_LEN,
            });
        }
        let mut bytes = vec![0u8; s.len as usize];
        self.exact(&mut bytes, what)?;
        let malformed = |reason: String| SnapshotError::Malformed { what, reason };
        let (value, rest) =
            postcard::take_from_bytes(&bytes).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!("{} bytes after the record", rest.len())));
        }
        Ok(value)
    }

    /// The guest address and bytes of memory section `s`, read into `buf`.
    pub fn memory<'b>(
        &mut self,
        s: Section,
        buf: &'b mut Vec<u8>,
    ) -> Result<(u64, &'b [u8]), SnapshotError> {
        const WHAT: &str = "guest memory";
        let data = s
            .len
            .checked_sub(MEMORY_ADDR_LEN)
            .ok_or(SnapshotError::Malformed {
                what: WHAT,
                reason: format!("a section of {} bytes has no address", s.len),
            })?;
        if data > MAX_MEMORY_CHUNK {
            return Err(SnapshotError::TooLarge {
                what: WHAT,
                len: data,
                limit: MAX_MEMORY_CHUNK,
            });
        }
        let mut addr = [0u8; 8];
        self.exact(&mut addr, WHAT)?;
        buf.resize(data as usize, 0);
        self.exact(buf, WHAT)?;
        Ok((u64::from_le_bytes(addr), buf))
    }

    /// The END section `s`: the checksum must be that of everything read before it.
    pub fn end(&mut self, s: Section) -> Result<(), SnapshotError> {
        if s.len != END_LEN {
            return Err(SnapshotError::Malformed {
                what: "the end",
                reason: format!("{} bytes, expected {END_LEN}", s.len),
            });
        }
        let computed = self.crc.sum();
        let mut b = [0u8; END_LEN as usize];
        self.input
            .read_exact(&mut b)
            .map_err(read_error("the end"))?;
        let recorded = u32::from_le_bytes(b);
        if recorded != computed {
            return Err(SnapshotError::Checksum { recorded, computed });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::header::{CpuidLeaf, LEAVES};

    fn header() -> Header {
        Header {
            cpuid: LEAVES.map(|leaf| CpuidLeaf {
                leaf,
                ..Default::default()
            }),
        }
    }

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.header(&header()).unwrap();
        w.record(TAG_VM, "a record", &(7u32, "seven".to_string()))
            .unwrap();
        w.memory(0x1000, &[0xaa; 4096]).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn sections_round_trip_with_their_checksum() {
        let bytes = stream();
        let mut input = &bytes[..];
        let mut r = Reader::new(&mut input);
        assert_eq!(r.header().unwrap(), header());
        let s = r.expect(TAG_VM, "a record").unwrap();
        let v: (u32, String) = r.record(s, "a record").unwrap();
        assert_eq!(v, (7, "seven".into()));
        let s = r.expect(TAG_MEMORY, "memory").unwrap();
        let mut buf = Vec::new();
        let (addr, data) = r.memory(s, &mut buf).unwrap();
        assert_eq!((addr, data.len(), data[0]), (0x1000, 4096, 0xaa));
        let s = r.expect(TAG_END, "end").unwrap();
        r.end(s).unwrap();
        assert!(input.is_empty());
    }

    #[test]
    fn lengths_are_checked_before_reading() {
        let mut bytes = stream();
        // The record's length says 4 GiB: refused without allocating it.
        let len_at = HEADER_LEN + 4;
        bytes[len_at..len_at + 8].copy_from_slice(&(1u64 << 32).to_le_bytes());
        let mut input = &bytes[..];
        let mut r = Reader::new(&mut input);
        r.header().unwrap();
        let s = r.expect(TAG_VM, "a record").unwrap();
        let e = r.record::<(u32, String)>(s, "a record").unwrap_err();
        assert!(
            matches!(e, SnapshotError::TooLarge { len, .. } if len == 1 << 32),
            "{e}"
        );
        let mut empty: &[u8] = &[0u8; 12];
        let mut r = Reader::new(&mut empty);
        let huge = Section {
            tag: TAG_MEMORY,
            len: MEMORY_ADDR_LEN + MAX_MEMORY_CHUNK + 1,
        };
        assert!(matches!(
            r.memory(huge, &mut Vec::new()),
            Err(SnapshotError::TooLarge { .. })
        ));
        let short = Section {
            tag: TAG_MEMORY,
            len: 3,
        };
        assert!(matches!(
            r.memory(short, &mut Vec::new()),
            Err(SnapshotError::Malformed { .. })
        ));
    }

    #[test]
    fn trailing_bytes_truncation_and_corruption_are_refused() {
        let good = stream();
        // A record with a byte too many.
        let mut bytes = good.clone();
        let len_at = HEADER_LEN + 4;
        let len = u64::from_le_bytes(bytes[len_at..len_at + 8].try_into().unwrap());
        bytes[len_at..len_at + 8].copy_from_slice(&(len + 1).to_le_bytes());
        bytes.insert(HEADER_LEN + 12 + len as usize, 0);
        let mut input = &bytes[..];
        let mut r = Reader::new(&mut input);
        r.header().unwrap();
        let s = r.expect(TAG_VM, "a record").unwrap();
        let e = r.record::<(u32, String)>(s, "a record").unwrap_err();
        assert!(e.to_string().contains("1 bytes after the record"), "{e}");
        // Cut anywhere: truncated, never a panic.
        for cut in [0, 10, HEADER_LEN, HEADER_LEN + 5, good.len() - 2] {
            let mut input = &good[..cut];
            let mut r = Reader::new(&mut input);
            let e = (|| -> Result<(), SnapshotError> {
                r.header()?;
                let s = r.expect(TAG_VM, "a record")?;
                r.record::<(u32, String)>(s, "a record")?;
                let s = r.expect(TAG_MEMORY, "memory")?;
                r.memory(s, &mut Vec::new())?;
                let s = r.expect(TAG_END, "end")?;
                r.end(s)
            })()
            .unwrap_err();
            assert!(
                matches!(e, SnapshotError::Truncated { .. }),
                "cut at {cut}: {e}"
            );
        }
        // A flipped memory byte fails the checksum.
        let mut bytes = good;
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        let mut input = &bytes[..];
        let mut r = Reader::new(&mut input);
        r.header().unwrap();
        let s = r.expect(TAG_VM, "").unwrap();
        r.record::<(u32, String)>(s, "").unwrap();
        let s = r.expect(TAG_MEMORY, "").unwrap();
        r.memory(s, &mut Vec::new()).unwrap();
        let s = r.expect(TAG_END, "").unwrap();
        assert!(matches!(r.end(s), Err(SnapshotError::Checksum { .. })));
    }
}
