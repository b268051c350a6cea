//! What every benchmark in `bench/` shares, so that they parse the same command line, draw
//! the same offsets and take medians the same way. Nothing here measures anything.

/// `[--quick] [RUNS]`: whether to do a short run, and the number of runs per case
/// (`default`, or `quick` with `--quick`, unless given). Exits with a usage line on anything
/// else.
pub fn args(name: &str, default: usize, quick: usize) -> (bool, usize) {
    let mut is_quick = false;
    let mut runs = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--quick" => is_quick = true,
            n => match n.parse() {
                Ok(r) if r > 0 => runs = Some(r),
                _ => {
                    eprintln!("usage: {name} [--quick] [RUNS]   (RUNS at least 1)");
                    std::process::exit(2);
                }
            },
        }
    }
    let runs = runs.unwrap_or(if is_quick { quick } else { default });
    (is_quick, runs)
}

/// xorshift64*: a cheap generator that gives every side of a comparison the same offsets.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4, 1, 3, 2]), 3);
    }

    #[test]
    fn rng_is_repeatable() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(a.next_u64(), Rng(8).next_u64());
    }
}
