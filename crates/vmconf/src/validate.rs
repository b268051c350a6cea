//! Value checks and conversions with vmd's limits: names, sizes, prefixes, addresses.
//!
//! These are pure functions of their argument so they can be tested one by one; the parser
//! turns their failures into located errors.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{Ipv4Prefix, Ipv6Prefix, MacAddr};

/// Disks per VM (`VM_MAX_DISKS_PER_VM`).
pub const MAX_DISKS: usize = 4;
/// NICs per VM (`VM_MAX_NICS_PER_VM`).
pub const MAX_NICS: usize = 4;
/// Longest VM name in bytes (`VMM_MAX_NAME_LEN` 64 with its NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Interface names, with NUL (`IF_NAMESIZE`); Linux has the same 16.
pub const IF_NAMESIZE: usize = 16;
/// Paths, with NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Smallest guest memory.
pub const MIN_MEMORY: u64 = 1024 * 1024;
/// Largest guest memory (7.x `dev/vmm`).
pub const MAX_MEMORY: u64 = 128 * 1024 * 1024 * 1024;
/// Largest routing domain (`RT_TABLEID_MAX`).
pub const MAX_RDOMAIN: i64 = 255;
/// Extension `cpus`: the vCPU maximum vmm(4) headers define.
pub const MAX_VCPUS: i64 = 64;
/// Extension `cmdline`: x86 Linux `COMMAND_LINE_SIZE` less its NUL.
pub const MAX_CMDLINE_LEN: usize = 2047;
/// `agentx context` limit.
pub const MAX_AGENTX_CONTEXT: usize = 32;
/// `agentx path` must fit a Linux `sun_path` (108 with NUL).
pub const MAX_AGENTX_PATH: usize = 107;
/// Bridge types a switch may name, as in vmd's `vmd_descsw` (6.x `switch` included).
pub const SWITCH_TYPES: &[&str] = &["bridge", "veb", "switch"];

/// Interface group names: shorter than `IF_NAMESIZE` and not ending in a digit, so the
/// kernel cannot confuse them with an interface name.
pub fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IF_NAMESIZE
        && !name.as_bytes().last().is_some_and(u8::is_ascii_digit)
}

/// Splits `tap7` into (`tap`, 7) like vmd's `priv_getiftype`: a non-empty alphabetic type
/// followed by a decimal unit.
fn split_ifname(name: &str) -> Option<(&str, u32)> {
    let span = name.find(|c: char| c.is_ascii_digit())?;
    if span == 0 || span >= IF_NAMESIZE - 1 {
        return None;
    }
    let (ty, unit) = name.split_at(span);
    if !unit.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ty, unit.parse().ok()?))
}

/// Why a switch `interface` is refused, if it is.
pub enum SwitchIfError {
    Invalid,
    TooLong,
}

/// A switch's host bridge. OpenBSD's names (`bridgeN`, `vebN`) are accepted as they are;
/// any other valid Linux interface name is too, because Linux bridges have free names
/// (`br0`, `virbr0`). The daemon checks at load time that it exists and is a bridge.
pub fn switch_ifname(name: &str) -> Result<(), SwitchIfError> {
    if let Some((ty, _)) = split_ifname(name) {
        if SWITCH_TYPES.contains(&ty) {
            return if name.len() >= IF_NAMESIZE {
                Err(SwitchIfError::TooLong)
            } else {
                Ok(())
            };
        }
    }
    if name.len() >= IF_NAMESIZE {
        return Err(SwitchIfError::TooLong);
    }
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic());
    if bad {
        Err(SwitchIfError::Invalid)
    } else {
        Ok(())
    }
}

/// A VM NIC name is `tap` (first free) or `tapN`.
pub fn is_tap_name(name: &str) -> bool {
    name == "tap" || matches!(split_ifname(name), Some(("tap", _)))
}

/// vm_register's name rule: alphanumerics, `.`, `-`, `_`, not starting with `-`, `.`, `_`.
pub fn check_vm_name(name: &str) -> Result<(), &'static str> {
    let Some(first) = name.bytes().next() else {
        return Err("invalid VM name: empty");
    };
    if matches!(first, b'-' | b'.' | b'_') {
        return Err("invalid VM name: must not start with '-', '.' or '_'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("invalid VM name: only letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

/// `scan_scaled(3)`: a decimal number with an optional fraction and one optional unit
/// letter (B, K, M, G, T, P, E; powers of 1024). `None` if malformed or out of range.
pub fn scan_scaled(s: &str) -> Option<i64> {
    let s = s.trim_start();
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let whole_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (whole, rest) = s.split_at(whole_len);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            r.split_at(n)
        }
        None => ("", rest),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let shift = match rest.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    let scale: u128 = 1 << shift;
    let mut value: u128 = 0;
    for d in whole.bytes() {
        value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
        if value > i64::MAX as u128 {
            return None;
        }
    }
    value = value.checked_mul(scale)?;
    // Digits past 18 cannot change a result that fits in i64 by more than rounding.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let mut num: u128 = 0;
        for d in frac.bytes() {
            num = num * 10 + u128::from(d - b'0');
        }
        let den = 10u128.pow(frac.len() as u32);
        value = value.checked_add(num * scale / den)?;
    }
    let value = i64::try_from(value).ok()?;
    Some(if neg { -value } else { value })
}

/// `fmt_scaled(3)` for whole multiples, enough to print limits.
fn fmt_scaled(bytes: u64) -> String {
    const UNITS: [(u32, &str); 6] = [
        (60, "E"),
        (50, "P"),
        (40, "T"),
        (30, "G"),
        (20, "M"),
        (10, "K"),
    ];
    for (shift, unit) in UNITS {
        let scale = 1u64 << shift;
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// vmd's `parse_size`: at least 1 MiB, at most the maximum, rounded down to a whole MiB.
/// Returns the size and whether rounding changed it.
pub fn memory_size(bytes: i64) -> Result<(u64, bool), String> {
    let Ok(bytes) = u64::try_from(bytes) else {
        return Err("memory size must be at least 1MB".into());
    };
    if bytes < MIN_MEMORY {
        return Err("memory size must be at least 1MB".into());
    }
    if bytes > MAX_MEMORY {
        return Err(format!(
            "memory size too large (limit is {})",
            fmt_scaled(MAX_MEMORY)
        ));
    }
    let rounded = bytes / MIN_MEMORY * MIN_MEMORY;
    Ok((rounded, rounded != bytes))
}

/// `ether_aton(3)`: six groups of one or two hex digits separated by `:`.
pub fn ether_aton(s: &str) -> Option<MacAddr> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(MacAddr(mac))
}

fn split_prefix(s: &str) -> Result<(&str, Option<u8>), String> {
    match s.split_once('/') {
        Some((addr, len)) => {
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s}: bad mask"));
            }
            let len = len.parse().map_err(|_| format!("{s}: bad mask"))?;
            Ok((addr, Some(len)))
        }
        None => Ok((s, None)),
    }
}

/// `local prefix`: an IPv4 network in `inet_net_pton` style (`10.200.0.0/16`, short forms
/// like `10/8`), length 1 to 16 (16 if omitted), host bits zero.
pub fn parse_prefix4(s: &str) -> Result<Ipv4Prefix, String> {
    let (addr, len) = split_prefix(s)?;
    let len = len.unwrap_or(16);
    let mut octets = [0u8; 4];
    let parts: Vec<&str> = addr.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return Err(format!("{s}: invalid format"));
    }
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s}: invalid format"));
        }
        *o = p.parse().map_err(|_| format!("{s}: invalid format"))?;
    }
    if !(1..=16).contains(&len) {
        return Err(format!("{s}: bad mask (prefix length must be 1 to 16)"));
    }
    let ip = u32::from_be_bytes(octets);
    let mask = u32::MAX << (32 - u32::from(len));
    if ip & !mask != 0 {
        return Err(format!("{s}: bad mask (host bits set)"));
    }
    Ok(Ipv4Prefix {
        addr: Ipv4Addr::from(ip),
        len,
    })
}

/// `local inet6 prefix`: an IPv6 network, length at most 64 (64 if omitted), host bits zero.
pub fn parse_prefix6(s: &str) -> Result<Ipv6Prefix, String> {
    let (addr, len) = split_prefix(s)?;
    let len = len.unwrap_or(64);
    let ip: Ipv6Addr = addr.parse().map_err(|_| format!("{s}: invalid format"))?;
    if len > 64 {
        return Err(format!("{s}: bad mask (prefix length must be at most 64)"));
    }
    let bits = u128::from(ip);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    if bits & !mask != 0 {
        return Err(format!("{s}: bad mask (host bits set)"));
    }
    Ok(Ipv6Prefix { addr: ip, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes() {
        assert_eq!(scan_scaled("512M"), Some(512 << 20));
        assert_eq!(scan_scaled("2g"), Some(2 << 30));
        assert_eq!(scan_scaled("1.5G"), Some(3 << 29));
        assert_eq!(scan_scaled("1024"), Some(1024));
        assert_eq!(scan_scaled("10B"), Some(10));
        assert_eq!(scan_scaled("-1K"), Some(-1024));
        assert_eq!(scan_scaled("1X"), None);
        assert_eq!(scan_scaled("1GG"), None);
        assert_eq!(scan_scaled("G"), None);
        assert_eq!(scan_scaled(""), None);
        assert_eq!(scan_scaled("99999999999999999999"), None);
        assert_eq!(scan_scaled("16E"), None);
    }

    #[test]
    fn memory_limits() {
        assert_eq!(memory_size(1 << 20), Ok((1 << 20, false)));
        assert_eq!(memory_size((1 << 20) + 1), Ok((1 << 20, true)));
        assert!(memory_size((1 << 20) - 1)
            .unwrap_err()
            .contains("at least 1MB"));
        assert_eq!(
            memory_size((128 << 30) + 1).unwrap_err(),
            "memory size too large (limit is 128G)"
        );
        assert!(memory_size(-5).is_err());
    }

    #[test]
    fn groups_and_names() {
        assert!(valid_group("dmz"));
        assert!(!valid_group("net0"));
        assert!(!valid_group("abcdefghijklmnop"));
        assert!(!valid_group(""));
        assert!(is_tap_name("tap"));
        assert!(is_tap_name("tap12"));
        assert!(!is_tap_name("em0"));
        assert!(!is_tap_name("tap1x"));
        assert!(!is_tap_name("tapx"));
        assert!(check_vm_name("web-1.a_b").is_ok());
        assert!(check_vm_name("_x").is_err());
        assert!(check_vm_name("a b").is_err());
        assert!(check_vm_name("").is_err());
    }

    #[test]
    fn switch_interfaces() {
        assert!(switch_ifname("veb0").is_ok());
        assert!(switch_ifname("bridge1").is_ok());
        assert!(switch_ifname("br0").is_ok());
        assert!(matches!(switch_ifname("a/b"), Err(SwitchIfError::Invalid)));
        assert!(matches!(
            switch_ifname("bridge0123456789"),
            Err(SwitchIfError::TooLong)
        ));
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            ether_aton("fe:e1:bb:d1:0:7"),
            Some(MacAddr([0xfe, 0xe1, 0xbb, 0xd1, 0, 7]))
        );
        assert_eq!(ether_aton("fe:e1:bb:d1:00"), None);
        assert_eq!(ether_aton("fe:e1:bb:d1:00:07:08"), None);
        assert_eq!(ether_aton("fe:e1:bb:d1:00:777"), None);
        assert_eq!(ether_aton("ge:e1:bb:d1:00:07"), None);
    }

    #[test]
    fn prefixes() {
        let p = parse_prefix4("10.200.0.0/16").unwrap();
        assert_eq!((p.addr, p.len), (Ipv4Addr::new(10, 200, 0, 0), 16));
        let p = parse_prefix4("10/8").unwrap();
        assert_eq!((p.addr, p.len), (Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(parse_prefix4("10.200.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_prefix4("10.0.0.0/24")
            .unwrap_err()
            .contains("1 to 16"));
        assert!(parse_prefix4("10.0.0.256/8")
            .unwrap_err()
            .contains("invalid format"));
        assert!(parse_prefix4("10.0.0.0/x")
            .unwrap_err()
            .contains("bad mask"));
        let p = parse_prefix6("fd12:3456:789a::/48").unwrap();
        assert_eq!(p.len, 48);
        assert!(parse_prefix6("fd12::1/48")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_prefix6("fd12::/96")
            .unwrap_err()
            .contains("at most 64"));
        assert!(parse_prefix6("zz::/48")
            .unwrap_err()
            .contains("invalid format"));
    }
}
