//! Memory sizes as vmctl writes them: bytes, or a number with a K/M/G/T suffix.

/// Parse `512M`, `1G`, `1048576`, `2g`… into bytes.
pub fn parse(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| "not a number".to_string())?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit {unit:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units() {
        assert_eq!(parse("512M"), Ok(512 << 20));
        assert_eq!(parse("2g"), Ok(2 << 30));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("1KB"), Ok(1024));
        assert!(parse("M").is_err());
        assert!(parse("5X").is_err());
        assert!(parse("99999999999T").is_err());
    }
}
