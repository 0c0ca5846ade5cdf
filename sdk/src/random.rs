//! Deterministic randomness for policies: seed from the request id so a decision can be
//! replayed (see [`crate::Request::rng`]).

/// A small, fast pseudo-random generator (SplitMix64). Not cryptographic; the same seed
/// always yields the same sequence, on every platform.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index in `0..len`; 0 when `len` is 0.
    pub fn below(&mut self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        // Multiply-shift maps 64 random bits onto the range with negligible bias.
        ((self.next_u64() as u128 * len as u128) >> 64) as usize
    }

    /// An index drawn with probability proportional to `weights[i]`. Weights that are
    /// negative, NaN or infinite count as 0; when no weight is positive the draw is
    /// uniform. 0 when `weights` is empty.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let usable = |w: f64| if w.is_finite() && w > 0.0 { w } else { 0.0 };
        let total: f64 = weights.iter().copied().map(usable).sum();
        if total <= 0.0 {
            return self.below(weights.len());
        }
        let mut target = self.next_f64() * total;
        for (i, &w) in weights.iter().enumerate() {
            let w = usable(w);
            if target < w {
                return i;
            }
            target -= w;
        }
        // Rounding can leave `target` a hair above the last weight: take the last usable.
        weights.iter().rposition(|&w| usable(w) > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn floats_are_in_unit_interval() {
        let mut r = Rng::new(1);
        assert!(
            (0..10_000)
                .map(|_| r.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }

    #[test]
    fn below_covers_the_range_and_nothing_else() {
        let mut r = Rng::new(3);
        let mut seen = [0u32; 5];
        for _ in 0..5_000 {
            seen[r.below(5)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn weighted_follows_the_weights() {
        let mut r = Rng::new(11);
        let mut seen = [0u32; 3];
        for _ in 0..10_000 {
            seen[r.weighted(&[1.0, 0.0, 3.0])] += 1;
        }
        assert_eq!(seen[1], 0);
        let share = seen[2] as f64 / 10_000.0;
        assert!((0.72..0.78).contains(&share), "{seen:?}");
    }

    #[test]
    fn weighted_without_positive_weight_is_uniform() {
        let mut r = Rng::new(5);
        let mut seen = [0u32; 2];
        for _ in 0..2_000 {
            seen[r.weighted(&[f64::NAN, -1.0])] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
