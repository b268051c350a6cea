//! Helpers shared by the device tests.

/// Deterministic xorshift64 generator: fuzz-style tests replay the same sequence every run
/// without a `rand` dependency.
pub struct XorShift(u64);

/// Access widths a vCPU exit can carry.
const WIDTHS: [usize; 4] = [1, 2, 4, 8];

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// An offset below `limit`, or now and then one near the end of the address space.
    pub fn offset(&mut self, limit: u64) -> u64 {
        let r = self.next();
        if r.is_multiple_of(64) {
            u64::MAX - r % 8
        } else {
            r % limit
        }
    }

    pub fn width(&mut self) -> usize {
        WIDTHS[self.next() as usize % WIDTHS.len()]
    }

    pub fn fill(&mut self, data: &mut [u8]) {
        for b in data {
            *b = self.next() as u8;
        }
    }
}
