//! The byte-sum checksum shared by ACPI and MP tables: all covered bytes add up to 0 mod 256.

/// The value that, stored in a checksum byte that currently holds 0, makes `bytes` sum to 0.
pub(crate) fn complement(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// Stores into `bytes[at]` the checksum over all of `bytes`.
pub(crate) fn fill(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    bytes[at] = complement(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_makes_the_sum_zero() {
        let mut bytes = [0x12, 0, 0xF0, 0x77, 0x01];
        fill(&mut bytes, 1);
        assert_eq!(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_ne!(bytes[1], 0);
    }
}
