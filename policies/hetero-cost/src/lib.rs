//! Scorer: on a fleet of mixed accelerators, estimate each request's completion time and
//! cost on every backend from its capabilities, queue and cached prefix, and trade the
//! two off; backends that would miss the request's TTFT objective score low.

use switchyard_policy_sdk::prelude::*;

/// Time-versus-cost scorer with a TTFT objective.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeteroCost {
    /// Weight of time against cost, in [0, 1]: 1 scores on time only, 0 on cost only.
    /// Default 0.8.
    pub alpha: f32,
    /// Extra decode time with the KV cache full, as a multiple of the nominal: a token
    /// takes `(1 + kv_usage x this) / decode_tokens_per_s`, since each decode step reads
    /// every cached token. Default 3.5: an 8B model on an 80 GB card holds ~56 GB of KV
    /// against ~16 GB of weights.
    pub full_kv_decode_slowdown: f32,
    /// Factor applied to the score of a backend whose estimated TTFT misses the
    /// objective, in [0, 1]. Default 0.1.
    pub slo_miss_factor: f32,
    /// TTFT objective in milliseconds for requests without an `x-slo-ttft-ms` header;
    /// none by default.
    pub default_slo_ttft_ms: Option<u32>,
}

impl Default for HeteroCost {
    fn default() -> Self {
        HeteroCost {
            alpha: 0.8,
            full_kv_decode_slowdown: 3.5,
            slo_miss_factor: 0.1,
            default_slo_ttft_ms: None,
        }
    }
}

/// What one request would take on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    /// Seconds to the first token: queued prefill plus this prompt's uncached part.
    pub ttft_s: Option<f32>,
    /// Seconds from request to last token.
    pub completion_s: Option<f32>,
    /// Price of the backend time this request occupies (its own prefill and decode, not
    /// the queue), in the fleet's currency units.
    pub cost: Option<f32>,
}

/// The neutral score of a figure that cannot be estimated (a speed or price unknown).
const UNKNOWN_SCORE: f32 = 0.5;

impl HeteroCost {
    /// Estimates `req` on `c`.
    pub fn estimate(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Estimate {
        let uncached = c.uncached_tokens(req);
        let ttft_s = c.prefill_seconds(uncached);
        let decode_s = (c.decode_tokens_per_s > 0.0).then(|| {
            let slowdown = 1.0 + c.kv_usage.clamp(0.0, 1.0) * self.full_kv_decode_slowdown;
            req.max_tokens as f32 / c.decode_tokens_per_s * slowdown
        });
        let own_prefill_s =
            (c.prefill_tokens_per_s > 0.0).then(|| uncached as f32 / c.prefill_tokens_per_s);
        let cost_per_s = fleet
            .get(c.backend)
            .map(|b| b.cost_per_hour / 3600.0)
            .filter(|&p| p > 0.0);
        Estimate {
            ttft_s,
            completion_s: ttft_s.zip(decode_s).map(|(t, d)| t + d),
            cost: cost_per_s
                .zip(own_prefill_s.zip(decode_s))
                .map(|(price, (p, d))| (price * (p + d) as f64) as f32),
        }
    }
}

impl Scorer for HeteroCost {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: HeteroCost = config::from_json(config)?;
        let mut problems = Vec::new();
        for (name, v) in [
            ("alpha", policy.alpha),
            ("slo_miss_factor", policy.slo_miss_factor),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{name}: {v} is outside [0, 1]"));
            }
        }
        if !(policy.full_kv_decode_slowdown.is_finite() && policy.full_kv_decode_slowdown >= 0.0) {
            problems.push(format!(
                "full_kv_decode_slowdown: {} must be a non-negative number",
                policy.full_kv_decode_slowdown
            ));
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(ConfigError::new(problems.join("; ")))
        }
    }

    /// Scores `c` as the only candidate; the router calls [`Scorer::score_all`], since
    /// time and cost scores are relative to the best candidate.
    fn score(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Score {
        self.score_all(req, std::slice::from_ref(c), fleet)[0]
    }

    fn score_all(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        let estimates: Vec<Estimate> = candidates
            .iter()
            .map(|c| self.estimate(req, c, fleet))
            .collect();
        let times: Vec<Option<f32>> = estimates.iter().map(|e| e.completion_s).collect();
        let costs: Vec<Option<f32>> = estimates.iter().map(|e| e.cost).collect();
        let unknown = Score::new(UNKNOWN_SCORE);
        let time_scores = normalize::relative_to_min_or(&times, unknown);
        let cost_scores = normalize::relative_to_min_or(&costs, unknown);
        let slo_s = req
            .slo_ttft_ms
            .or(self.default_slo_ttft_ms)
            .map(|ms| ms as f32 / 1e3);
        estimates
            .iter()
            .zip(time_scores.iter().zip(&cost_scores))
            .map(|(e, (t, c))| {
                let blend = self.alpha * t.get() + (1.0 - self.alpha) * c.get();
                let misses = slo_s.zip(e.ttft_s).is_some_and(|(slo, ttft)| ttft > slo);
                Score::new(if misses {
                    blend * self.slo_miss_factor
                } else {
                    blend
                })
            })
            .collect()
    }
}

switchyard_policy_sdk::export_scorer!(HeteroCost);

#[cfg(test)]
mod tests;
