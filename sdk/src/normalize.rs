//! Helpers to turn raw figures into scores in [0, 1].

use crate::policy::Score;

/// Scales `values` so the smallest maps to 0 and the largest to 1. When all are equal,
/// every score is 1 (no candidate is worse than another).
pub fn min_max(values: &[f32]) -> Vec<Score> {
    let (lo, hi) = bounds(values);
    values
        .iter()
        .map(|&v| {
            if hi > lo {
                Score::new((v - lo) / (hi - lo))
            } else {
                Score::ONE
            }
        })
        .collect()
}

/// Like [`min_max`] but lower is better: the smallest value scores 1, the largest 0.
pub fn min_max_inverted(values: &[f32]) -> Vec<Score> {
    min_max(values).into_iter().map(Score::inverted).collect()
}

/// `1 / (1 + value / half)`: 1 at 0, 0.5 at `half`, approaching 0 as `value` grows.
/// A smooth "less is better" score that needs no knowledge of the other candidates.
pub fn decay(value: f32, half: f32) -> Score {
    if half <= 0.0 {
        return if value <= 0.0 {
            Score::ONE
        } else {
            Score::ZERO
        };
    }
    Score::new(1.0 / (1.0 + value.max(0.0) / half))
}

/// `min / value` for "lower is better" figures such as a time or a price: the smallest
/// scores 1, one twice as large 0.5, whatever the unit. A value of 0 or less scores 1
/// (nothing beats it); NaN or infinity scores 0.
pub fn relative_to_min(values: &[f32]) -> Vec<Score> {
    let (lo, _) = bounds(values);
    values.iter().map(|&v| relative(v, lo)).collect()
}

/// [`relative_to_min`] over the known values, for figures a candidate may lack (a price
/// not configured, a speed not measured); each `None` scores `unknown`.
pub fn relative_to_min_or(values: &[Option<f32>], unknown: Score) -> Vec<Score> {
    let known: Vec<f32> = values.iter().flatten().copied().collect();
    let (lo, _) = bounds(&known);
    values
        .iter()
        .map(|v| v.map_or(unknown, |v| relative(v, lo)))
        .collect()
}

fn relative(value: f32, lo: f32) -> Score {
    if !value.is_finite() {
        Score::ZERO
    } else if value <= 0.0 {
        Score::ONE
    } else {
        Score::new(lo.max(0.0) / value)
    }
}

fn bounds(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_spans_zero_to_one() {
        let s: Vec<f32> = min_max(&[2.0, 4.0, 3.0]).iter().map(|s| s.get()).collect();
        assert_eq!(s, vec![0.0, 1.0, 0.5]);
    }

    #[test]
    fn equal_values_all_score_one() {
        assert!(min_max(&[5.0, 5.0]).iter().all(|s| *s == Score::ONE));
    }

    #[test]
    fn inverted_prefers_smallest() {
        let s = min_max_inverted(&[1.0, 3.0]);
        assert_eq!(s, vec![Score::ONE, Score::ZERO]);
    }

    #[test]
    fn relative_to_min_is_scale_free() {
        let s: Vec<f32> = relative_to_min(&[2.0, 4.0, 8.0])
            .iter()
            .map(|s| s.get())
            .collect();
        assert_eq!(s, vec![1.0, 0.5, 0.25]);
        let s = relative_to_min(&[0.0, 3.0, f32::NAN, f32::INFINITY]);
        assert_eq!(s, vec![Score::ONE, Score::ZERO, Score::ZERO, Score::ZERO]);
    }

    #[test]
    fn unknown_values_get_the_given_score() {
        let half = Score::new(0.5);
        let s = relative_to_min_or(&[None, Some(4.0), Some(2.0)], half);
        assert_eq!(s, vec![half, Score::new(0.5), Score::ONE]);
        assert_eq!(relative_to_min_or(&[None], Score::ZERO), vec![Score::ZERO]);
    }

    #[test]
    fn decay_halves_at_half() {
        assert_eq!(decay(0.0, 10.0), Score::ONE);
        assert!((decay(10.0, 10.0).get() - 0.5).abs() < 1e-6);
        assert!(decay(1e9, 10.0).get() < 1e-6);
    }
}
