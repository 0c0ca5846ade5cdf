//! Placer: NVIDIA Dynamo's KV router cost function with its defaults, so Switchyard's own
//! pipelines can be A/B tested against it on the same plumbing.

use switchyard_policy_sdk::prelude::*;

/// Dynamo's KV-router selection: the lowest `overlap_score_weight x prefill_blocks +
/// decode_blocks`, or a softmax sample over it when the temperature is above 0.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamoCost {
    /// KV block size in tokens; only whole blocks count as cached. Default 16.
    pub block_size: u32,
    /// Weight of the prefill term against the decode term; 0 ignores the cache.
    /// Default 1.0 (`--kv-overlap-score-weight`).
    pub overlap_score_weight: f64,
    /// 0 picks the lowest cost; above 0, softmax-samples over range-normalised costs.
    /// Default 0.0 (`--router-temperature`).
    pub router_temperature: f64,
}

impl Default for DynamoCost {
    fn default() -> Self {
        DynamoCost {
            block_size: 16,
            overlap_score_weight: 1.0,
            router_temperature: 0.0,
        }
    }
}

impl DynamoCost {
    /// Dynamo's logit for placing `req` on `c`; lower is better.
    pub fn cost(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> f64 {
        let bs = self.block_size;
        let request_blocks = req.prompt_tokens.div_ceil(bs);
        // Only whole cached blocks count (Dynamo hashes `chunks_exact`).
        let overlap_blocks = (c.cached_prefix_tokens.min(req.prompt_tokens)) / bs;
        let new_tokens = req.prompt_tokens - overlap_blocks * bs;
        let prefill_blocks = (c.in_flight_prefill_tokens as f64 + new_tokens as f64) / bs as f64;
        let decode_blocks =
            self.active_blocks(c, fleet, request_blocks) + (request_blocks - overlap_blocks) as f64;
        self.overlap_score_weight * prefill_blocks + decode_blocks
    }

    /// KV blocks held by the backend's running sequences. Dynamo counts these for its own
    /// requests; here the engine's KV usage times its capacity says the same for every
    /// client, and without a known capacity each request on the backend is assumed to
    /// be as long as this one.
    fn active_blocks(&self, c: &Candidate, fleet: &Fleet, request_blocks: u32) -> f64 {
        let capacity = fleet.get(c.backend).map_or(0, |b| b.kv_capacity_tokens);
        if capacity > 0 && c.kv_usage.is_finite() {
            c.kv_usage.clamp(0.0, 1.0) as f64 * capacity as f64 / self.block_size as f64
        } else {
            c.load() as f64 * request_blocks as f64
        }
    }

    fn pick(&self, req: &Request, workers: &[&Candidate], costs: &[f64]) -> BackendId {
        let mut rng = req.rng();
        let (lo, hi) = costs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let index = if self.router_temperature == 0.0 {
            // Ties broken at random, reproducibly: seeded by the request id.
            let tied: Vec<usize> = (0..costs.len()).filter(|&i| costs[i] == lo).collect();
            tied.get(rng.below(tied.len())).copied().unwrap_or(0)
        } else if hi > lo {
            let weights: Vec<f64> = costs
                .iter()
                .map(|&v| (-(v - lo) / (hi - lo) / self.router_temperature).exp())
                .collect();
            rng.weighted(&weights)
        } else {
            rng.below(costs.len())
        };
        workers[index].backend
    }
}

impl Placer for DynamoCost {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: DynamoCost = config::from_json(config)?;
        if policy.block_size == 0 {
            return Err(ConfigError::new("block_size: must be at least 1"));
        }
        for (name, v) in [
            ("overlap_score_weight", policy.overlap_score_weight),
            ("router_temperature", policy.router_temperature),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(format!(
                    "{name}: {v} must be a non-negative number"
                )));
            }
        }
        Ok(policy)
    }

    fn place(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Placement {
        // A prefill-only backend cannot serve a whole request.
        let workers: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| fleet.can_decode(c.backend))
            .collect();
        if workers.is_empty() {
            return Placement::Reject {
                status: 503,
                message: "no candidate can serve a whole request".into(),
            };
        }
        let costs: Vec<f64> = workers.iter().map(|c| self.cost(req, c, fleet)).collect();
        Placement::Single(self.pick(req, &workers, &costs))
    }
}

switchyard_policy_sdk::export_placer!(DynamoCost);

#[cfg(test)]
mod tests;
