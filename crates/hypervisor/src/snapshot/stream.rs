//! Framing (docs/snapshot.md): after the header, sections of a 4-byte tag and an 8-byte
//! length (both little-endian) followed by that many bytes; state records are postcard, guest
//! memory is raw. A CRC-32 of everything before it ends the stream, except the guest RAM of a
//! memory image (a snapshot file maps it instead of reading it). Every length is checked
//! against the limits here before anything is allocated or read.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

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
/// A new memory pass (no payload): its memory sections start again from the bottom and
/// override what earlier passes sent (live migration re-sends the pages the guest wrote).
pub const TAG_PASS: u32 = 6;
/// A memory image: every RAM region whole, uncompressed, at page-aligned stream offsets
/// ([`MemoryImage`]), so that a snapshot file's RAM can be mapped instead of read.
pub const TAG_IMAGE: u32 = 7;
/// The end of guest memory (no payload).
pub const TAG_MEMORY_END: u32 = 8;
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
/// Most memory passes in a stream (the first included): each sends at most the guest's
/// memory once, so a stream carries at most this many times its RAM.
pub const MAX_MEMORY_PASSES: u32 = 64;
/// Most regions in a memory image (a memory layout has at most three).
pub const MAX_IMAGE_REGIONS: u32 = 8;
/// Bytes of an image table's head (region count, reserved) and of one of its entries.
const IMAGE_HEAD_LEN: u64 = 8;
const IMAGE_ENTRY_LEN: u64 = 24;
/// Bytes of the END section's payload.
const END_LEN: u64 = 4;
/// Read-ahead of a file reader: the records around a memory image are small (larger reads,
/// of memory sections, go past the buffer).
const FILE_READ_BUFFER: usize = 64 << 10;

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

/// Whether `bytes` (at most a page) are all zeros: a comparison with a page of zeros, which
/// the C library does many bytes at a time.
pub fn is_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
    bytes.len() <= ZEROS.len() && bytes == &ZEROS[..bytes.len()]
}

/// Round `n` up to a whole page; `None` on overflow.
pub fn page_align(n: u64) -> Option<u64> {
    n.checked_add(PAGE_SIZE - 1).map(|n| n & !(PAGE_SIZE - 1))
}

/// One RAM region of a memory image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRegion {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
    /// Where its bytes start, counted from the first byte of the section's payload.
    pub offset: u64,
}

/// The table of a memory image section: where each RAM region lies in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryImage {
    /// In the machine's region order, back to back after the table and its padding.
    pub regions: Vec<ImageRegion>,
    /// Stream offset of the section's payload (where the reader met it).
    pub payload_at: u64,
}

impl MemoryImage {
    /// The table for `regions` (guest address, length) of a section whose payload lands at
    /// output offset `payload_at` (a file offset for a file): the first region at the next
    /// page boundary after the table, the others right after each other. `None` on overflow.
    pub fn lay_out(regions: &[(u64, u64)], payload_at: u64) -> Option<Self> {
        let table_len = table_len(regions.len())?;
        let ram_at = page_align(payload_at.checked_add(table_len)?)?;
        let mut offset = ram_at - payload_at;
        let mut out = Vec::with_capacity(regions.len());
        for &(addr, len) in regions {
            out.push(ImageRegion { addr, len, offset });
            offset = offset.checked_add(len)?;
        }
        Some(MemoryImage {
            regions: out,
            payload_at,
        })
    }

    /// Bytes of the section's payload: up to the last region's end.
    pub fn payload_len(&self) -> u64 {
        self.regions.last().map_or(0, |r| r.offset + r.len)
    }
}

/// Bytes of an image table of `count` regions.
fn table_len(count: usize) -> Option<u64> {
    IMAGE_ENTRY_LEN
        .checked_mul(count as u64)?
        .checked_add(IMAGE_HEAD_LEN)
}

/// Where a stream goes: anything writable, or a file written from its current position, where
/// runs of zero bytes in a memory image are left as holes.
pub enum Output<'a> {
    Stream(&'a mut dyn Write),
    File(BufWriter<&'a File>),
}

impl Write for Output<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stream(w) => w.write(b),
            Output::File(f) => f.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stream(w) => w.flush(),
            Output::File(f) => f.flush(),
        }
    }
}

/// Writes a stream, hashing every byte but a memory image's RAM, and counting them.
pub struct Writer<'a> {
    out: Output<'a>,
    crc: Crc,
    /// Bytes of the stream so far.
    pos: u64,
    /// Output offset of the next byte: the stream's bytes and the caller's framing, from the
    /// file offset where writing started (0 for a stream): a memory image is page-aligned
    /// there.
    out_pos: u64,
}

impl<'a> Writer<'a> {
    pub fn new(out: &'a mut dyn Write) -> Self {
        Writer {
            out: Output::Stream(out),
            crc: Crc::new(),
            pos: 0,
            out_pos: 0,
        }
    }

    /// A writer into `file` from its current position; what the file held from there on is
    /// cut off, and a memory image's RAM is page-aligned in the file.
    pub fn for_file(file: &'a File) -> Result<Self, SnapshotError> {
        let mut f = file;
        let start = f.stream_position().map_err(SnapshotError::Write)?;
        file.set_len(start).map_err(SnapshotError::Write)?;
        Ok(Writer {
            out: Output::File(BufWriter::with_capacity(MAX_MEMORY_CHUNK as usize, file)),
            crc: Crc::new(),
            pos: 0,
            out_pos: start,
        })
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.crc.update(bytes);
        self.unhashed(bytes)
    }

    fn unhashed(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.out.write_all(bytes).map_err(SnapshotError::Write)?;
        self.pos += bytes.len() as u64;
        self.out_pos += bytes.len() as u64;
        Ok(())
    }

    /// The caller's own bytes, written as they are between two parts of the stream (vmd puts
    /// its VM definition after the header): not part of the stream, not hashed.
    pub fn framing(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.out.write_all(bytes).map_err(SnapshotError::Write)?;
        self.out_pos += bytes.len() as u64;
        Ok(())
    }

    /// `n` zero bytes of a memory image: a hole in a file.
    fn zeros(&mut self, n: u64) -> Result<(), SnapshotError> {
        match &mut self.out {
            Output::File(f) => {
                let n = i64::try_from(n).map_err(|_| SnapshotError::TooLarge {
                    what: "a run of zero pages",
                    len: n,
                    limit: i64::MAX as u64,
                })?;
                f.seek(SeekFrom::Current(n)).map_err(SnapshotError::Write)?;
            }
            Output::Stream(w) => {
                io::copy(&mut io::repeat(0).take(n), w).map_err(SnapshotError::Write)?;
            }
        }
        self.pos += n;
        self.out_pos += n;
        Ok(())
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

    /// A section without payload ([`TAG_PASS`], [`TAG_MEMORY_END`]).
    pub fn marker(&mut self, tag: u32) -> Result<(), SnapshotError> {
        self.section_header(tag, 0)
    }

    /// A memory image of `regions` (guest address, length): the section header, its table
    /// and the padding up to the first region, page-aligned in the output. The caller then
    /// writes each region's bytes in order through [`Writer::image_bytes`].
    pub fn image(&mut self, regions: &[(u64, u64)]) -> Result<MemoryImage, SnapshotError> {
        let overflow = || SnapshotError::TooLarge {
            what: "the memory image",
            len: u64::MAX,
            limit: u64::MAX,
        };
        let image = MemoryImage::lay_out(regions, self.out_pos + 12).ok_or_else(overflow)?;
        self.section_header(TAG_IMAGE, image.payload_len())?;
        self.raw(&(image.regions.len() as u32).to_le_bytes())?;
        self.raw(&[0u8; 4])?;
        for r in &image.regions {
            for v in [r.addr, r.len, r.offset] {
                self.raw(&v.to_le_bytes())?;
            }
        }
        let table = table_len(regions.len()).ok_or_else(overflow)?;
        let pad = image.regions.first().map_or(0, |r| r.offset) - table;
        self.raw(&vec![0u8; pad as usize])?;
        Ok(image)
    }

    /// The next bytes of a memory image's RAM; whole pages of zeros become holes in a file.
    pub fn image_bytes(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let page = PAGE_SIZE as usize;
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + page).min(bytes.len());
            let zero = end - at == page && is_zero(&bytes[at..end]);
            let mut run = end;
            if zero {
                while run + page <= bytes.len() && is_zero(&bytes[run..run + page]) {
                    run += page;
                }
                self.zeros((run - at) as u64)?;
            } else {
                while run < bytes.len() {
                    let next = (run + page).min(bytes.len());
                    if next - run == page && is_zero(&bytes[run..next]) {
                        break;
                    }
                    run = next;
                }
                self.unhashed(&bytes[at..run])?;
            }
            at = run;
        }
        Ok(())
    }

    /// The END section; the stream is complete. Returns its size in bytes.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        self.section_header(TAG_END, END_LEN)?;
        let sum = self.crc.sum();
        self.out
            .write_all(&sum.to_le_bytes())
            .and_then(|()| self.out.flush())
            .map_err(SnapshotError::Write)?;
        Ok(self.pos + END_LEN)
    }
}

/// A section's tag and length.
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub tag: u32,
    pub len: u64,
}

/// Where a stream comes from: anything readable, or a file (after the bytes of the stream
/// the caller read before), which can skip a memory image.
enum Input<'a> {
    Stream(&'a mut dyn Read),
    File(io::Chain<&'a [u8], BufReader<&'a File>>),
}

impl Read for Input<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Stream(r) => r.read(b),
            Input::File(f) => f.read(b),
        }
    }
}

/// Reads a stream, hashing every byte but a memory image's RAM, and counting them.
pub struct Reader<'a> {
    input: Input<'a>,
    crc: Crc,
    pos: u64,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a mut dyn Read) -> Self {
        Reader {
            input: Input::Stream(input),
            crc: Crc::new(),
            pos: 0,
        }
    }

    /// A reader of the stream that starts with `read` (what the caller read of it already)
    /// and goes on in `file` from its current position.
    pub fn for_file(read: &'a [u8], file: &'a File) -> Self {
        let file = BufReader::with_capacity(FILE_READ_BUFFER, file);
        Reader {
            input: Input::File(read.chain(file)),
            crc: Crc::new(),
            pos: 0,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), SnapshotError> {
        self.unhashed(buf, what)?;
        self.crc.update(buf);
        Ok(())
    }

    fn unhashed(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), SnapshotError> {
        self.input.read_exact(buf).map_err(read_error(what))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Go past `n` bytes of a memory image without reading them (a file) or reading them
    /// (any other stream).
    pub fn skip(&mut self, n: u64, what: &'static str) -> Result<(), SnapshotError> {
        let file = match &mut self.input {
            Input::File(chain) if chain.get_ref().0.is_empty() => Some(chain.get_mut().1),
            _ => None,
        };
        if let Some(f) = file {
            let by = i64::try_from(n).map_err(|_| SnapshotError::TooLarge {
                what,
                len: n,
                limit: i64::MAX as u64,
            })?;
            f.seek_relative(by).map_err(SnapshotError::Read)?;
        } else {
            let got = io::copy(&mut (&mut self.input).take(n), &mut io::sink())
                .map_err(SnapshotError::Read)?;
            if got != n {
                return Err(SnapshotError::Truncated { what });
            }
        }
        self.pos += n;
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

    /// A section without payload (`what` names it).
    pub fn marker(&self, s: Section, what: &'static str) -> Result<(), SnapshotError> {
        if s.len == 0 {
            Ok(())
        } else {
            Err(SnapshotError::Malformed {
                what,
                reason: format!("{} bytes of payload, expected none", s.len),
            })
        }
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

    /// The table of memory image section `s` and its padding, which must lay out exactly
    /// `regions` (guest address, length): in that order, the first after the table and less
    /// than a page of zero padding, the others right after each other, and the section
    /// ending with the last. The reader is then at the first region's bytes.
    pub fn image(
        &mut self,
        s: Section,
        regions: &[(u64, u64)],
    ) -> Result<MemoryImage, SnapshotError> {
        const WHAT: &str = "the memory image";
        let malformed = |reason: String| SnapshotError::Malformed { what: WHAT, reason };
        let payload_at = self.pos;
        let mut head = [0u8; IMAGE_HEAD_LEN as usize];
        self.exact(&mut head, WHAT)?;
        let count = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if count > MAX_IMAGE_REGIONS {
            return Err(SnapshotError::TooLarge {
                what: "the memory image's region count",
                len: count.into(),
                limit: MAX_IMAGE_REGIONS.into(),
            });
        }
        if head[4..] != [0; 4] {
            return Err(malformed("reserved bytes are not zero".into()));
        }
        if count as usize != regions.len() {
            return Err(malformed(format!(
                "{count} regions, the machine has {}",
                regions.len()
            )));
        }
        let table = table_len(regions.len()).unwrap_or(u64::MAX);
        let mut next = None;
        let mut found = Vec::with_capacity(regions.len());
        for (i, &(addr, len)) in regions.iter().enumerate() {
            let mut e = [0u8; IMAGE_ENTRY_LEN as usize];
            self.exact(&mut e, WHAT)?;
            let v = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[8 * i..8 * i + 8]);
                u64::from_le_bytes(b)
            };
            let r = ImageRegion {
                addr: v(0),
                len: v(1),
                offset: v(2),
            };
            let placed = match next {
                None => r.offset >= table && r.offset - table < PAGE_SIZE,
                Some(at) => r.offset == at,
            };
            if (r.addr, r.len) != (addr, len) || !placed {
                return Err(malformed(format!(
                    "region {i} is {:#x} bytes at guest {:#x}, offset {:#x}; the machine has \
                     {len:#x} bytes at {addr:#x}, {}",
                    r.len,
                    r.addr,
                    r.offset,
                    match next {
                        None => "after the table and less than a page of padding".to_string(),
                        Some(at) => format!("right after the one before, at offset {at:#x}"),
                    }
                )));
            }
            next = r.offset.checked_add(r.len);
            found.push(r);
        }
        let image = MemoryImage {
            regions: found,
            payload_at,
        };
        if s.len != image.payload_len() {
            return Err(malformed(format!(
                "a section of {:#x} bytes for an image of {:#x}",
                s.len,
                image.payload_len()
            )));
        }
        let pad = image.regions.first().map_or(0, |r| r.offset - table);
        let mut zeros = vec![0u8; pad as usize];
        self.exact(&mut zeros, WHAT)?;
        if zeros.iter().any(|&b| b != 0) {
            return Err(malformed("the padding before the RAM is not zero".into()));
        }
        Ok(image)
    }

    /// The next `buf.len()` bytes of a memory image's RAM (not hashed).
    pub fn image_bytes(&mut self, buf: &mut [u8]) -> Result<(), SnapshotError> {
        self.unhashed(buf, "the memory image")
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

    #[test]
    fn image_round_trips_page_aligned_in_the_output_after_framing() {
        let regions = [(0u64, 2 * PAGE_SIZE), (0x10_0000, PAGE_SIZE)];
        let mut ram = vec![0u8; 3 * PAGE_SIZE as usize];
        ram[..8].copy_from_slice(b"page one");
        ram[2 * PAGE_SIZE as usize] = 3;
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.header(&header()).unwrap();
        w.framing(&[0xee; 100]).unwrap();
        let image = w.image(&regions).unwrap();
        w.image_bytes(&ram).unwrap();
        w.marker(TAG_MEMORY_END).unwrap();
        let len = w.finish().unwrap();
        assert_eq!(len as usize + 100, out.len(), "the framing is not stream");
        // The RAM starts at a page boundary of the output, framing included.
        let ram_at = (image.payload_at + image.regions[0].offset) as usize;
        assert_eq!(ram_at % PAGE_SIZE as usize, 0);
        assert_eq!(&out[ram_at..ram_at + 8], b"page one");
        assert_eq!(
            image.regions[1].offset,
            image.regions[0].offset + 2 * PAGE_SIZE
        );

        // The reader gets the stream without the framing (vmd strips it).
        let stream: Vec<u8> = out[..HEADER_LEN]
            .iter()
            .chain(&out[HEADER_LEN + 100..])
            .copied()
            .collect();
        let mut input = &stream[..];
        let mut r = Reader::new(&mut input);
        r.header().unwrap();
        let s = r.expect(TAG_IMAGE, "image").unwrap();
        let got = r.image(s, &regions).unwrap();
        assert_eq!(got.regions, image.regions);
        let mut back = vec![0u8; ram.len()];
        r.image_bytes(&mut back).unwrap();
        assert_eq!(back, ram);
        let s = r.expect(TAG_MEMORY_END, "end of memory").unwrap();
        r.marker(s, "end of memory").unwrap();
        let s = r.expect(TAG_END, "end").unwrap();
        r.end(s).unwrap();

        // A table for other regions is refused, naming the region.
        let mut input = &stream[..];
        let mut r = Reader::new(&mut input);
        r.header().unwrap();
        let s = r.expect(TAG_IMAGE, "image").unwrap();
        let e = r.image(s, &[(0, 2 * PAGE_SIZE), (0x20_0000, PAGE_SIZE)]);
        assert!(e.unwrap_err().to_string().contains("region 1"));
        // The RAM is not hashed: a flipped RAM byte passes the checksum (a file's RAM is
        // mapped, not read); a flipped table byte does not.
        for (at, ok) in [(ram_at - 100 + 1, true), (HEADER_LEN + 12, false)] {
            let mut bad = stream.clone();
            bad[at] ^= 1;
            let mut input = &bad[..];
            let mut r = Reader::new(&mut input);
            let res = (|| {
                r.header()?;
                let s = r.expect(TAG_IMAGE, "image")?;
                r.image(s, &regions)?;
                r.image_bytes(&mut vec![0u8; ram.len()])?;
                let s = r.expect(TAG_MEMORY_END, "end of memory")?;
                r.marker(s, "end of memory")?;
                let s = r.expect(TAG_END, "end")?;
                r.end(s)
            })();
            assert_eq!(res.is_ok(), ok, "flipped byte {at}: {res:?}");
        }
    }
}
