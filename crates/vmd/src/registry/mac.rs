//! MAC addresses for NICs configured without `lladdr` (spec §4.3, F-LIFE-05):
//! `fe:e1:bb:dN:xx:xx`, N = NIC index + 1, last two bytes random. Guests may key their
//! configuration on the MAC, so the scheme is kept exactly.

use vmconf::MacAddr;

use super::error::Failure;

/// The first three bytes: the kernel's fake-address prefix `fe:e1:ba` with the third byte
/// plus one, so the VM side and the host (tap) side are told apart.
const GENERATED_MAC_PREFIX: [u8; 3] = [0xfe, 0xe1, 0xbb];
/// High nibble of the fourth byte; the low nibble is the NIC index + 1.
const GENERATED_MAC_INDEX_BASE: u8 = 0xd0;

/// Where random bytes come from; injected so tests are deterministic.
pub trait RandomSource {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
}

/// The kernel's random number generator (`getrandom(2)`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::other(e.to_string()),
        })
    }
}

/// A MAC for NIC number `index` (0-based).
pub(crate) fn generate_mac(index: usize, rng: &mut dyn RandomSource) -> Result<MacAddr, Failure> {
    let mut random = [0u8; 2];
    rng.fill(&mut random)
        .map_err(|e| Failure::errno(libc::EIO, format!("cannot generate a MAC address: {e}")))?;
    let [a, b, c] = GENERATED_MAC_PREFIX;
    // Only the low nibble is available; vmd masks the same way (at most 4 NICs anyway).
    let digit = ((index + 1) & 0xf) as u8;
    Ok(MacAddr([
        a,
        b,
        c,
        GENERATED_MAC_INDEX_BASE | digit,
        random[0],
        random[1],
    ]))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::SeqRandom;
    use super::*;

    #[test]
    fn format_and_index_digit() {
        let mut rng = SeqRandom::default();
        let first = generate_mac(0, &mut rng).unwrap();
        assert_eq!(first.to_string(), "fe:e1:bb:d1:01:02");
        let fourth = generate_mac(3, &mut rng).unwrap();
        assert_eq!(fourth.to_string(), "fe:e1:bb:d4:03:04");
    }

    #[test]
    fn os_random_varies() {
        let mut rng = OsRandom;
        let macs: Vec<_> = (0..8).map(|_| generate_mac(0, &mut rng).unwrap()).collect();
        assert!(macs.iter().all(|m| m.0[..4] == [0xfe, 0xe1, 0xbb, 0xd1]));
        // 8 draws of 16 random bits all equal would mean the source is broken.
        assert!(macs.iter().any(|m| m != &macs[0]));
    }

    struct Broken;
    impl RandomSource for Broken {
        fn fill(&mut self, _: &mut [u8]) -> std::io::Result<()> {
            Err(std::io::Error::other("no entropy"))
        }
    }

    #[test]
    fn rng_failure_is_an_error_not_a_zero_mac() {
        assert_eq!(generate_mac(0, &mut Broken).unwrap_err().errno, libc::EIO);
    }
}
