//! Sizes the way OpenBSD reads and prints them: `scan_scaled(3)` for `-m` and `-s`,
//! `fmt_scaled(3)` for the `status` columns (spec §3.1, §3.4).

/// One mebibyte: the granularity of guest memory and of created images.
pub const MIB: u64 = 1024 * 1024;

/// Largest guest memory vmd accepts (7.x `VMM_MAX_VM_MEM_SIZE` on amd64).
pub const MAX_MEMORY: u64 = 128 * 1024 * MIB;

/// Unit letters in ascending powers of 1024, as both functions spell them.
const UNITS: &[u8; 7] = b"BKMGTPE";

/// Fraction digits scan_scaled looks at: more cannot change a result that fits 64 bits.
const MAX_FRACTION_DIGITS: usize = 18;

/// Why a size word was refused, as the errno scan_scaled(3) would set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Not a number with an optional unit (`EINVAL`).
    Invalid,
    /// Does not fit 63 bits (`ERANGE`).
    Range,
}

impl ScanError {
    /// The errno value, for strerror.
    pub fn errno(self) -> i32 {
        match self {
            ScanError::Invalid => libc::EINVAL,
            ScanError::Range => libc::ERANGE,
        }
    }
}

/// `scan_scaled(3)`: leading blanks, an optional sign, decimal digits with an optional
/// fraction, and at most one unit letter (case-insensitive, powers of 1024). A fraction of
/// a byte is dropped.
pub fn scan_scaled(word: &str) -> Result<i64, ScanError> {
    let s = word.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let whole_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (whole, rest) = s.split_at(whole_len);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(r) => r.split_at(r.bytes().take_while(u8::is_ascii_digit).count()),
        None => ("", rest),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(ScanError::Invalid);
    }
    let shift = match rest.as_bytes() {
        [] => 0,
        [unit] => {
            let unit = unit.to_ascii_uppercase();
            let index = UNITS
                .iter()
                .position(|&u| u == unit)
                .ok_or(ScanError::Invalid)?;
            10 * index as u32
        }
        _ => return Err(ScanError::Invalid),
    };
    let scale = 1u128 << shift;
    let mut value: u128 = 0;
    for d in whole.bytes() {
        value = value * 10 + u128::from(d - b'0');
        if value > i64::MAX as u128 {
            return Err(ScanError::Range);
        }
    }
    value *= scale;
    let fraction = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
    if !fraction.is_empty() {
        let numerator = fraction
            .bytes()
            .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
        value += numerator * scale / 10u128.pow(fraction.len() as u32);
    }
    let value = i64::try_from(value).map_err(|_| ScanError::Range)?;
    Ok(if negative { -value } else { value })
}

/// `fmt_scaled(3)`: at most three digits and a unit letter, one decimal when the whole part
/// is a single or double digit (`512M`, `1.0G`, `179M`, `1.5K`, `0B`).
pub fn fmt_scaled(bytes: u64) -> String {
    // The unit is the largest power of 1024 whose multiple of 1024 still exceeds the value,
    // so the whole part stays below 1024.
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes / 1024 >= 1u64 << (10 * unit) {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    let mut whole = bytes / scale;
    // The remainder in units of the next smaller power, then rounded to tenths.
    let below = if unit == 0 {
        0
    } else {
        (bytes % scale) / (scale / 1024)
    };
    let mut tenths = (10 * below + 512) / 1024;
    if tenths >= 10 {
        whole += 1;
        tenths = 0;
    }
    if whole == 0 {
        "0B".to_string()
    } else if unit == 0 || whole >= 100 {
        if tenths >= 5 {
            whole += 1;
        }
        format!("{whole}{}", UNITS[unit] as char)
    } else {
        format!("{whole}.{tenths}{}", UNITS[unit] as char)
    }
}

/// What a size argument is for: names it in the messages and sets its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeKind {
    /// `start -m`.
    Memory,
    /// `create -s`.
    Disk,
}

impl SizeKind {
    fn word(self) -> &'static str {
        match self {
            SizeKind::Memory => "memory",
            SizeKind::Disk => "disk",
        }
    }

    fn limit(self) -> Option<u64> {
        match self {
            SizeKind::Memory => Some(MAX_MEMORY),
            // A file's size is bounded by the file system, which says so itself.
            SizeKind::Disk => None,
        }
    }
}

/// A size accepted by [`parse_size`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    /// Bytes, a whole number of MiB.
    pub bytes: u64,
    /// The warning to print when rounding changed the value.
    pub rounded: Option<String>,
}

/// vmctl's `parse_size`: scan_scaled, at least 1 MiB, at most the kind's limit, rounded down
/// to whole MiB. The error is the diagnostic text (without the `vmctl: ` prefix).
pub fn parse_size(word: &str, kind: SizeKind) -> Result<Size, String> {
    let what = kind.word();
    let value = scan_scaled(word).map_err(|e| {
        format!(
            "invalid {what} size: {word}: {}",
            crate::messages::strerror(e.errno())
        )
    })?;
    // A negative size is below the minimum like any other small one.
    let bytes = u64::try_from(value).unwrap_or(0);
    if bytes < MIB {
        return Err(format!("{what} size must be at least 1MB"));
    }
    if let Some(limit) = kind.limit() {
        if bytes > limit {
            return Err(format!(
                "{what} size too large (limit is {})",
                fmt_scaled(limit)
            ));
        }
    }
    let rounded_bytes = bytes / MIB * MIB;
    let rounded = (rounded_bytes != bytes)
        .then(|| format!("{what} size rounded to {}", fmt_scaled(rounded_bytes)));
    Ok(Size {
        bytes: rounded_bytes,
        rounded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_plain_and_units() {
        assert_eq!(scan_scaled("512M"), Ok(512 << 20));
        assert_eq!(scan_scaled("512m"), Ok(512 << 20));
        assert_eq!(scan_scaled("4.5G"), Ok(9 << 29));
        assert_eq!(scan_scaled("1024"), Ok(1024));
        assert_eq!(scan_scaled("10b"), Ok(10));
        assert_eq!(scan_scaled("  2K"), Ok(2048));
        assert_eq!(scan_scaled("+1T"), Ok(1 << 40));
        assert_eq!(scan_scaled("-1M"), Ok(-(1 << 20)));
        assert_eq!(scan_scaled(".5K"), Ok(512));
        assert_eq!(scan_scaled("1.5"), Ok(1));
        assert_eq!(scan_scaled("7E"), Ok(7 << 60));
    }

    #[test]
    fn scan_rejects() {
        for bad in ["", "M", "abc", "1MB", "1 M", "1.2.3", "1X", "."] {
            assert_eq!(scan_scaled(bad), Err(ScanError::Invalid), "{bad:?}");
        }
        assert_eq!(scan_scaled("8E"), Err(ScanError::Range));
        assert_eq!(scan_scaled("99999999999999999999"), Err(ScanError::Range));
    }

    #[test]
    fn fmt_like_openbsd() {
        assert_eq!(fmt_scaled(0), "0B");
        assert_eq!(fmt_scaled(1), "1B");
        assert_eq!(fmt_scaled(1023), "1023B");
        assert_eq!(fmt_scaled(1024), "1.0K");
        assert_eq!(fmt_scaled(1536), "1.5K");
        assert_eq!(fmt_scaled(512 * MIB), "512M");
        assert_eq!(fmt_scaled(1024 * MIB), "1.0G");
        assert_eq!(fmt_scaled(179 * MIB + 3000), "179M");
        assert_eq!(fmt_scaled(99 * MIB + 1000 * 1024), "100M");
        assert_eq!(fmt_scaled(MIB - 1), "1024K");
        assert_eq!(fmt_scaled(1536 * MIB), "1.5G");
        assert_eq!(fmt_scaled(MAX_MEMORY), "128G");
        assert_eq!(fmt_scaled(15 * MIB + 100 * 1024), "15.1M");
    }

    #[test]
    fn parse_memory_sizes() {
        assert_eq!(
            parse_size("512M", SizeKind::Memory),
            Ok(Size {
                bytes: 512 * MIB,
                rounded: None
            })
        );
        let s = parse_size("1000001K", SizeKind::Memory).unwrap();
        assert_eq!(s.bytes, 976 * MIB);
        assert_eq!(s.rounded.as_deref(), Some("memory size rounded to 976M"));
        assert_eq!(
            parse_size("1K", SizeKind::Memory),
            Err("memory size must be at least 1MB".into())
        );
        assert_eq!(
            parse_size("-5G", SizeKind::Memory),
            Err("memory size must be at least 1MB".into())
        );
        assert_eq!(
            parse_size("129G", SizeKind::Memory),
            Err("memory size too large (limit is 128G)".into())
        );
        assert_eq!(
            parse_size("lots", SizeKind::Memory),
            Err("invalid memory size: lots: Invalid argument".into())
        );
        assert_eq!(
            parse_size("9E", SizeKind::Disk),
            Err("invalid disk size: 9E: Numerical result out of range".into())
        );
        assert_eq!(parse_size("1T", SizeKind::Disk).unwrap().bytes, 1 << 40);
    }
}
