//! Host side of the guests' line protocol (README.md lists the lines).

/// One `E820 <addr> <size> <type>` line: a memory-map entry as the guest saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte of the range.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// 1 = RAM, 2 = reserved, 3 = ACPI, 4 = NVS (same numbers on every path).
    pub kind: u32,
}

impl E820Entry {
    /// Parses `E820 0000000000100000 000000000fe00000 1`; None for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.strip_prefix("E820 ")?.split_whitespace();
        let addr = u64::from_str_radix(f.next()?, 16).ok()?;
        let size = u64::from_str_radix(f.next()?, 16).ok()?;
        let kind = f.next()?.parse().ok()?;
        if f.next().is_some() {
            return None;
        }
        Some(E820Entry { addr, size, kind })
    }

    /// First address past the entry.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// All memory-map entries in a transcript, in order.
pub fn parse_e820<S: AsRef<str>>(lines: &[S]) -> Vec<E820Entry> {
    lines
        .iter()
        .filter_map(|l| E820Entry::parse(l.as_ref()))
        .collect()
}

/// FNV-1a, 32 bits: the checksum the guests print for the initrd.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Bytes of a virtio-blk sector.
pub const SECTOR_SIZE: usize = 512;

/// The sector the `blk` test writes through `interface` (`"modern"` or `"legacy"`): the text
/// `testkit blk <interface>\n`, NUL-padded to 32 bytes, then byte `i` = `i * 7` (mod 256).
pub fn blk_pattern(interface: &str) -> [u8; SECTOR_SIZE] {
    let mut s = [0u8; SECTOR_SIZE];
    let tag = format!("testkit blk {interface}\n");
    s[..tag.len()].copy_from_slice(tag.as_bytes());
    for (i, b) in s.iter_mut().enumerate().skip(32) {
        *b = (i * 7) as u8;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_e820_lines() {
        let lines = [
            "BOOT pvh",
            "E820 0000000000000000 000000000009fc00 1",
            "E820 0000000000100000 000000000fe00000 1 junk",
            "E820 00000000000f0000 0000000000010000 2",
        ];
        assert_eq!(
            parse_e820(&lines),
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: 1
                },
                E820Entry {
                    addr: 0xf0000,
                    size: 0x10000,
                    kind: 2
                },
            ]
        );
        assert_eq!(parse_e820(&lines)[1].end(), 0x100000);
    }

    #[test]
    fn blk_pattern_layout() {
        let p = blk_pattern("legacy");
        assert_eq!(&p[..20], b"testkit blk legacy\n\0");
        assert!(p[20..32].iter().all(|&b| b == 0));
        assert_eq!(&p[32..35], &[0xe0, 0xe7, 0xee]);
        assert_eq!(p[511], (511 * 7) as u8);
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }
}
