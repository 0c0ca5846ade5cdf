//! Placer: the SGLang model gateway's `cache_aware` policy with its CLI defaults, so
//! Switchyard's own pipelines can be A/B tested against it on the same plumbing.

use switchyard_policy_sdk::prelude::*;

/// SGLang's cache-aware selection: least-loaded when the fleet is imbalanced, else the
/// best prefix match when it is good enough, else least-loaded.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SglangCacheAware {
    /// A prefix match rate above this routes to the best-matching backend.
    /// Default 0.3 (`--cache-threshold`).
    pub cache_threshold: f32,
    /// Imbalanced when max - min load exceeds this (and the relative test holds).
    /// Default 64 (`--balance-abs-threshold`).
    pub balance_abs_threshold: u32,
    /// Imbalanced when max load exceeds this times min load (and the absolute test
    /// holds). Default 1.5 (`--balance-rel-threshold`).
    pub balance_rel_threshold: f32,
    /// Imbalanced when the spread of KV usage exceeds this fraction. Default 1.0 (off).
    pub balance_token_usage_threshold: f32,
    /// Imbalanced when any backend's KV usage exceeds this fraction. Default 1.0 (off).
    pub overload_token_usage_threshold: f32,
}

impl Default for SglangCacheAware {
    fn default() -> Self {
        SglangCacheAware {
            cache_threshold: 0.3,
            balance_abs_threshold: 64,
            balance_rel_threshold: 1.5,
            balance_token_usage_threshold: 1.0,
            overload_token_usage_threshold: 1.0,
        }
    }
}

/// SGLang's `load`: the router's own count of requests in flight to the backend.
fn load(c: &Candidate) -> u32 {
    c.in_flight_requests
}

fn match_rate(req: &Request, c: &Candidate) -> f32 {
    Score::ratio(c.cached_prefix_tokens, req.prompt_tokens).get()
}

impl SglangCacheAware {
    /// Whether any of SGLang's three imbalance triggers fires for `workers`.
    pub fn is_imbalanced(&self, workers: &[&Candidate]) -> bool {
        let (min, max) = min_max(workers.iter().map(|c| load(c) as f32));
        let (kv_min, kv_max) = min_max(workers.iter().map(|c| c.kv_usage));
        (max - min > self.balance_abs_threshold as f32 && max > self.balance_rel_threshold * min)
            || kv_max - kv_min > self.balance_token_usage_threshold
            || kv_max > self.overload_token_usage_threshold
    }
}

fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The least-loaded worker; ties go to the lowest backend index.
fn least_loaded<'a>(workers: &[&'a Candidate]) -> Option<&'a Candidate> {
    workers.iter().copied().min_by_key(|c| (load(c), c.backend))
}

impl Placer for SglangCacheAware {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: SglangCacheAware = config::from_json(config)?;
        let fractions = [
            ("cache_threshold", policy.cache_threshold),
            (
                "balance_token_usage_threshold",
                policy.balance_token_usage_threshold,
            ),
            (
                "overload_token_usage_threshold",
                policy.overload_token_usage_threshold,
            ),
        ];
        if let Some((name, v)) = fractions.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(ConfigError::new(format!("{name}: {v} is outside [0, 1]")));
        }
        if !(policy.balance_rel_threshold.is_finite() && policy.balance_rel_threshold >= 1.0) {
            return Err(ConfigError::new(format!(
                "balance_rel_threshold: {} must be at least 1",
                policy.balance_rel_threshold
            )));
        }
        Ok(policy)
    }

    fn place(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Placement {
        // A prefill-only backend cannot serve a whole request.
        let workers: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| fleet.can_decode(c.backend))
            .collect();
        let Some(min_load) = least_loaded(&workers) else {
            return Placement::Reject {
                status: 503,
                message: "no candidate can serve a whole request".into(),
            };
        };
        if self.is_imbalanced(&workers) {
            return Placement::Single(min_load.backend);
        }
        // Best match; among equal matches the less loaded, then the lower index.
        let best = workers.iter().copied().max_by(|a, b| {
            match_rate(req, a)
                .total_cmp(&match_rate(req, b))
                .then(load(b).cmp(&load(a)))
                .then(b.backend.cmp(&a.backend))
        });
        match best {
            Some(c) if match_rate(req, c) > self.cache_threshold => Placement::Single(c.backend),
            _ => Placement::Single(min_load.backend),
        }
    }
}

switchyard_policy_sdk::export_placer!(SglangCacheAware);

#[cfg(test)]
mod tests;
