//! The fitted latency model: how long one engine step takes, from the H100 calibration.
//!
//! The coefficients come from `calibration/README.md` (measured on an H100 with a
//! Llama-3.1-8B-shaped model). One *step* is one forward pass of the continuous batch:
//! some prefill chunks plus one token for every decoding sequence.

use serde::{Deserialize, Serialize};

/// Bytes of KV cache one token occupies for the calibrated 8B model (32 layers, 8 KV heads,
/// head dim 128, bf16, keys and values).
pub const KV_BYTES_PER_TOKEN: u64 = 131_072;

/// Coefficients of the fitted latency model, in milliseconds.
///
/// `prefill_ms(n, c) = prefill_base + prefill_token * n + prefill_attention * (n² + 2nc)`
/// for `n` new tokens on top of `c` cached ones, and
/// `decode_step_ms(B, T) = decode_base + decode_seq * B + decode_context * T` for `B`
/// sequences holding `T` context tokens in total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyModel {
    /// Fixed cost of a step that prefills, in ms (H100: 3.9).
    pub prefill_base_ms: f64,
    /// Cost per new prompt token, in ms (H100: 0.02779).
    pub prefill_token_ms: f64,
    /// Attention cost per (new × context) token pair, in ms (H100: 5.16e-7).
    pub prefill_attention_ms: f64,
    /// Fixed cost of a decode step, in ms (H100: 5.35).
    pub decode_base_ms: f64,
    /// Cost per running sequence in a decode step, in ms (H100: 0.0056).
    pub decode_seq_ms: f64,
    /// Cost per context token read in a decode step, in ms (H100: 4.4e-5).
    pub decode_context_ms: f64,
}

/// The work of one engine step, accumulated by the scheduler and priced by
/// [`LatencyModel::step_ms`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepWork {
    /// Prefill chunks in the step.
    prefill_chunks: usize,
    /// Σ n over chunks.
    prefill_tokens: f64,
    /// Σ (n² + 2nc) over chunks.
    prefill_pairs: f64,
    /// Decoding sequences in the step.
    decode_seqs: usize,
    /// Context tokens held by the decoding sequences.
    decode_context: f64,
}

impl StepWork {
    /// Adds a prefill chunk of `new` tokens on top of `cached` tokens already computed.
    pub fn add_prefill(&mut self, new: usize, cached: usize) {
        let (n, c) = (new as f64, cached as f64);
        self.prefill_chunks += 1;
        self.prefill_tokens += n;
        self.prefill_pairs += n * n + 2.0 * n * c;
    }

    /// Adds one decoding sequence holding `context` tokens.
    pub fn add_decode(&mut self, context: usize) {
        self.decode_seqs += 1;
        self.decode_context += context as f64;
    }
}

impl LatencyModel {
    /// The H100 fit (`calibration/README.md`).
    pub const H100: Self = Self {
        prefill_base_ms: 3.9,
        prefill_token_ms: 0.02779,
        prefill_attention_ms: 5.16e-7,
        decode_base_ms: 5.35,
        decode_seq_ms: 0.0056,
        decode_context_ms: 4.4e-5,
    };

    /// The H200 fit: prefill measured 1.03x faster than the H100, decode refitted from the
    /// H200's own decode-floor measurements.
    pub const H200: Self = Self {
        prefill_base_ms: 3.9 / 1.03,
        prefill_token_ms: 0.02779 / 1.03,
        prefill_attention_ms: 5.16e-7 / 1.03,
        decode_base_ms: 3.95,
        decode_seq_ms: 0.0073,
        decode_context_ms: 3.16e-5,
    };

    /// This model with prefill `prefill_speed` times and decode `decode_speed` times faster
    /// (the first-order scaling the calibration README prescribes for other accelerators).
    pub fn scaled(&self, prefill_speed: f64, decode_speed: f64) -> Self {
        Self {
            prefill_base_ms: self.prefill_base_ms / prefill_speed,
            prefill_token_ms: self.prefill_token_ms / prefill_speed,
            prefill_attention_ms: self.prefill_attention_ms / prefill_speed,
            decode_base_ms: self.decode_base_ms / decode_speed,
            decode_seq_ms: self.decode_seq_ms / decode_speed,
            decode_context_ms: self.decode_context_ms / decode_speed,
        }
    }

    /// Milliseconds to prefill `new` tokens on top of `cached` tokens, alone in a step.
    pub fn prefill_ms(&self, new: usize, cached: usize) -> f64 {
        let mut work = StepWork::default();
        work.add_prefill(new, cached);
        self.step_ms(&work)
    }

    /// Milliseconds of one decode step for `batch` sequences holding `context` tokens in
    /// total.
    pub fn decode_step_ms(&self, batch: usize, context: usize) -> f64 {
        self.decode_base_ms
            + self.decode_seq_ms * batch as f64
            + self.decode_context_ms * context as f64
    }

    /// Milliseconds of one mixed step.
    ///
    /// A step is one forward pass, so it pays one fixed cost: the larger of the prefill and
    /// decode bases when it does both. Chunked prefill composes exactly apart from that
    /// base, because Σ (n² + 2nc) over consecutive chunks telescopes to the whole prompt's
    /// n².
    pub fn step_ms(&self, work: &StepWork) -> f64 {
        let base = match (work.prefill_chunks > 0, work.decode_seqs > 0) {
            (false, false) => return 0.0,
            (true, false) => self.prefill_base_ms,
            (false, true) => self.decode_base_ms,
            (true, true) => self.prefill_base_ms.max(self.decode_base_ms),
        };
        base + self.prefill_token_ms * work.prefill_tokens
            + self.prefill_attention_ms * work.prefill_pairs
            + self.decode_seq_ms * work.decode_seqs as f64
            + self.decode_context_ms * work.decode_context
    }
}

/// Milliseconds to move the KV cache of `tokens` tokens over a link of `gb_per_s`
/// gigabytes per second (prefill/decode disaggregation).
pub fn transfer_ms(tokens: usize, bytes_per_token: u64, gb_per_s: f64) -> f64 {
    let bytes = tokens as f64 * bytes_per_token as f64;
    bytes / (gb_per_s * 1e9) * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance * expected
    }

    #[test]
    fn h100_fit_reproduces_the_calibration_examples() {
        let m = LatencyModel::H100;
        assert!(
            close(m.prefill_ms(8192, 0), 266.15, 0.01),
            "{}",
            m.prefill_ms(8192, 0)
        );
        assert!(
            close(m.prefill_ms(256, 7936), 13.1, 0.02),
            "{}",
            m.prefill_ms(256, 7936)
        );
        assert!(close(m.decode_step_ms(32, 32 * 1024), 7.0, 0.01));
    }

    #[test]
    fn chunked_prefill_costs_the_whole_prefill_plus_one_base_per_extra_chunk() {
        let m = LatencyModel::H100;
        let chunks = m.prefill_ms(2048, 0) + m.prefill_ms(2048, 2048) + m.prefill_ms(4096, 4096);
        let whole = m.prefill_ms(8192, 0);
        assert!(close(chunks - 2.0 * m.prefill_base_ms, whole, 1e-9));
    }

    #[test]
    fn mixed_step_pays_one_base() {
        let m = LatencyModel::H100;
        let mut work = StepWork::default();
        work.add_prefill(512, 0);
        work.add_decode(1000);
        let expected = m.prefill_ms(512, 0) - m.prefill_base_ms + m.decode_step_ms(1, 1000);
        assert!(close(m.step_ms(&work), expected, 1e-9));
    }

    #[test]
    fn transfer_of_4096_tokens_over_45_gb_per_s_is_about_12_ms() {
        assert!(close(
            transfer_ms(4096, KV_BYTES_PER_TOKEN, 45.0),
            11.93,
            0.01
        ));
    }
}
