//! The crate's one seeded random generator, SplitMix64, so that every random draw (the Lanczos
//! start block, the probe's split, the t-SNE initialisation, the permutation null, test data) is reproducible from a
//! seed without a dependency.
//!
//! The reference values of the tests (numpy, scikit-learn) were computed from these exact
//! streams, so each mapping below is kept bit for bit as its caller first wrote it.

/// SplitMix64 (Steele, Lea & Flood, 2014): full-period, well mixed, with no state to warm up.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..m` (Lemire's multiply-shift; the bias is below 2⁻³² for any `m` here).
    pub fn below(&mut self, m: usize) -> usize {
        ((u128::from(self.next_u64()) * m as u128) >> 64) as usize
    }

    /// Uniform in `[−1, 1)` on a grid of 2⁻⁵².
    pub fn signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Uniform in `(0, 1)`: 53 random bits at the midpoints of their cells, so never 0 or 1.
    pub fn unit_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `(0, 1]`: never 0, so its logarithm is finite.
    pub fn unit_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `v` uniformly in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// A standard normal (Box–Muller from two [`SplitMix64::unit_open`] draws, cosine branch).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit_open(), self.unit_open());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outputs_of_seed_zero_are_the_published_ones() {
        let mut g = SplitMix64::new(0);
        assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(g.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn mappings_of_the_first_output() {
        // 0xe220a8397b1dcdaf >> 11 = 7_956_156_453_446_585; over 2⁵² that is 1.766…, over 2⁵³
        // 0.883…; times 10 over 2⁶⁴ it is 8.83…
        let first = || SplitMix64::new(0);
        assert_eq!(first().signed_unit(), 0.766_621_616_427_285_2);
        assert_eq!(first().unit_open(), 0.883_310_808_213_642_7);
        assert_eq!(first().unit_nonzero(), 0.883_310_808_213_642_7);
        assert_eq!(first().below(10), 8);
        let mut g = SplitMix64::new(42);
        for m in [1usize, 2, 7, 1000] {
            assert!((0..100).all(|_| g.below(m) < m));
        }
    }

    #[test]
    fn shuffle_permutes() {
        let mut v: Vec<usize> = (0..100).collect();
        SplitMix64::new(7).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
