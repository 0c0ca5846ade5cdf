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
            .filter(|c| fleet.get(c.backend).is_some_and(|b| b.role.can_decode()))
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
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    fn worker(index: u32, cached: u32, in_flight_prefill: u32) -> Candidate {
        Candidate {
            cached_prefix_tokens: cached,
            in_flight_prefill_tokens: in_flight_prefill,
            ..testing::candidate(index)
        }
    }

    fn place(config: &str, req: &Request, candidates: &[Candidate]) -> Placement {
        testing::place::<DynamoCost>(config, req, candidates, &testing::fleet(8))
    }

    fn cost(c: &Candidate, req: &Request, fleet: &Fleet) -> f64 {
        DynamoCost::default().cost(req, c, fleet)
    }

    #[test]
    fn cost_follows_dynamo_formula() {
        let fleet = testing::fleet(2);
        let req = testing::request(128);
        // 8 request blocks, 2 cached (40 tokens -> 2 whole blocks), 96 new tokens,
        // 32 in-flight prefill tokens: prefill (32 + 96) / 16 = 8; idle, so decode = 8 - 2.
        assert_eq!(cost(&worker(0, 40, 32), &req, &fleet), 8.0 + 6.0);
        // Two requests on it and no known KV capacity: 2 x 8 active blocks more.
        let busy = Candidate {
            running: 2,
            ..worker(0, 40, 32)
        };
        assert_eq!(cost(&busy, &req, &fleet), 8.0 + 6.0 + 16.0);
    }

    #[test]
    fn active_blocks_come_from_kv_usage_when_capacity_is_known() {
        let mut fleet = testing::fleet(1);
        fleet.backends[0].kv_capacity_tokens = 16_000;
        let c = Candidate {
            kv_usage: 0.5,
            running: 50,
            ..worker(0, 0, 0)
        };
        // 0.5 x 16000 / 16 = 500 active blocks, plus 8 prefill and 8 decode blocks.
        assert_eq!(cost(&c, &testing::request(128), &fleet), 516.0);
    }

    #[test]
    fn best_overlap_wins_at_temperature_zero() {
        let req = testing::request(1024);
        let p = place(
            "",
            &req,
            &[worker(0, 0, 0), worker(1, 512, 0), worker(2, 256, 0)],
        );
        assert_eq!(p, Placement::Single(BackendId(1)));
    }

    #[test]
    fn queued_prefill_outweighs_a_small_overlap() {
        let req = testing::request(1024);
        let p = place("", &req, &[worker(0, 0, 0), worker(1, 256, 4096)]);
        assert_eq!(p, Placement::Single(BackendId(0)));
    }

    #[test]
    fn zero_weight_ignores_the_prefill_term() {
        let req = testing::request(1024);
        // One cached block but a long prefill queue: the queue decides at weight 1, only
        // the one block saved in the decode term counts at weight 0.
        let cands = [worker(0, 0, 0), worker(1, 16, 100_000)];
        assert_eq!(place("", &req, &cands), Placement::Single(BackendId(0)));
        let p = place(r#"{"overlap_score_weight": 0}"#, &req, &cands);
        assert_eq!(p, Placement::Single(BackendId(1)));
    }

    #[test]
    fn ties_are_broken_by_request_id_reproducibly() {
        let cands: Vec<Candidate> = (0..4).map(|i| worker(i, 0, 0)).collect();
        let picks: Vec<Placement> = (0..64)
            .map(|id| {
                place(
                    "",
                    &Request {
                        id,
                        ..testing::request(64)
                    },
                    &cands,
                )
            })
            .collect();
        let again: Vec<Placement> = (0..64)
            .map(|id| {
                place(
                    "",
                    &Request {
                        id,
                        ..testing::request(64)
                    },
                    &cands,
                )
            })
            .collect();
        assert_eq!(picks, again);
        for b in 0..4 {
            assert!(
                picks.contains(&Placement::Single(BackendId(b))),
                "{b} never picked"
            );
        }
    }

    #[test]
    fn temperature_spreads_but_favours_the_cheap() {
        let req = testing::request(1024);
        let cands = [worker(0, 1024, 0), worker(1, 0, 0)];
        let on_cheap = (0..1000u64)
            .filter(|&id| {
                place(
                    r#"{"router_temperature": 0.5}"#,
                    &Request { id, ..req.clone() },
                    &cands,
                ) == Placement::Single(BackendId(0))
            })
            .count();
        // Normalised costs 0 and 1 at T = 0.5: p(cheap) = 1 / (1 + e^-2) = 0.88.
        assert!((840..920).contains(&on_cheap), "{on_cheap}");
    }

    #[test]
    fn bad_config_is_rejected() {
        assert!(DynamoCost::configure(r#"{"block_size": 0}"#).is_err());
        assert!(DynamoCost::configure(r#"{"router_temperature": -1}"#).is_err());
    }
}
