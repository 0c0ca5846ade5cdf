//! Capability figures learned online from what the router observes: prefill speed from
//! the time to first token against uncached prompt tokens, decode speed from the
//! inter-token time of streams. Each is an exponentially weighted moving average that
//! counts as measured once it has [`MIN_SAMPLES`] samples.

use std::time::Duration;

use serde::Serialize;

/// Samples an average needs before it is used in place of the declared figure.
pub const MIN_SAMPLES: u32 = 8;

/// Weight of each new sample.
const ALPHA: f64 = 0.2;

/// An exponentially weighted moving average of a rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    value: f64,
    samples: u32,
}

impl Ewma {
    /// Adds one sample; non-finite or non-positive samples are ignored.
    pub fn add(&mut self, sample: f64) {
        if !sample.is_finite() || sample <= 0.0 {
            return;
        }
        self.value = if self.samples == 0 {
            sample
        } else {
            ALPHA * sample + (1.0 - ALPHA) * self.value
        };
        self.samples = self.samples.saturating_add(1);
    }

    /// The average, once it has [`MIN_SAMPLES`] samples.
    pub fn get(&self) -> Option<f64> {
        (self.samples >= MIN_SAMPLES).then_some(self.value)
    }

    /// Samples seen.
    pub fn samples(&self) -> u32 {
        self.samples
    }
}

/// What a backend was measured doing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Learned {
    prefill: Ewma,
    decode: Ewma,
}

impl Learned {
    /// `tokens` uncached prompt tokens reached their first output token in `elapsed`.
    pub(crate) fn observe_prefill(&mut self, tokens: u32, elapsed: Duration) {
        self.prefill
            .add(f64::from(tokens) / elapsed.as_secs_f64().max(1e-6));
    }

    /// `tokens` output tokens after the first were streamed in `elapsed`.
    pub(crate) fn observe_decode(&mut self, tokens: u32, elapsed: Duration) {
        self.decode
            .add(f64::from(tokens) / elapsed.as_secs_f64().max(1e-6));
    }

    pub(crate) fn measured(&self) -> Measured {
        Measured {
            prefill_tokens_per_s: self.prefill.get().map(|v| v as f32),
            decode_tokens_per_s: self.decode.get().map(|v| v as f32),
            prefill_samples: self.prefill.samples(),
            decode_samples: self.decode.samples(),
        }
    }
}

/// A backend's measured speeds, as the admin API shows them next to the declared ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Measured {
    /// Prefill tokens per second, once enough samples exist.
    pub prefill_tokens_per_s: Option<f32>,
    /// Decode tokens per second per sequence, once enough samples exist.
    pub decode_tokens_per_s: Option<f32>,
    /// Prefill samples seen.
    pub prefill_samples: u32,
    /// Decode samples seen.
    pub decode_samples: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_until_enough_samples_then_tracks_the_rate() {
        let mut e = Ewma::default();
        for _ in 0..MIN_SAMPLES - 1 {
            e.add(1000.0);
        }
        assert_eq!(e.get(), None, "too few samples");
        e.add(1000.0);
        assert_eq!(e.get(), Some(1000.0));
        for _ in 0..50 {
            e.add(2000.0);
        }
        let v = e.get().unwrap_or_default();
        assert!((v - 2000.0).abs() < 1.0, "converged to the new rate: {v}");
        e.add(f64::NAN);
        e.add(0.0);
        assert_eq!(e.samples(), MIN_SAMPLES + 50, "bad samples ignored");
    }

    #[test]
    fn learned_rates_are_tokens_over_time() {
        let mut l = Learned::default();
        for _ in 0..MIN_SAMPLES {
            l.observe_prefill(4000, Duration::from_millis(500));
            l.observe_decode(50, Duration::from_secs(1));
        }
        let m = l.measured();
        assert_eq!(m.prefill_tokens_per_s, Some(8000.0));
        assert_eq!(m.decode_tokens_per_s, Some(50.0));
        assert_eq!(m.prefill_samples, MIN_SAMPLES);
    }
}
