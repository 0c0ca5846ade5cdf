//! Scorer: prefer backends with free KV cache (1 - KV usage), so long conversations land
//! where they will not force evictions or preemption.

use switchyard_policy_sdk::prelude::*;

/// Scores the share of a candidate's KV cache that is free.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvHeadroom {
    /// Also count the KV this request would take (its uncached prompt plus `max_tokens`)
    /// against the backend's KV capacity, where the capacity is known. Default false.
    pub count_request: bool,
}

impl KvHeadroom {
    /// The fraction of `c`'s KV cache in use, after this request when `count_request` is
    /// set and the backend's capacity is known.
    pub fn usage(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> f32 {
        let capacity = fleet.get(c.backend).map_or(0, |b| b.kv_capacity_tokens);
        if !self.count_request || capacity == 0 {
            return c.kv_usage;
        }
        let tokens = c.uncached_tokens(req) as f32 + req.max_tokens as f32;
        c.kv_usage + tokens / capacity as f32
    }
}

impl Scorer for KvHeadroom {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        config::from_json(config)
    }

    fn score(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Score {
        // NB: Score::new clamps, so a request larger than the free space scores 0 and a
        // NaN usage from a broken scrape scores 0 rather than poisoning the sum.
        Score::new(1.0 - self.usage(req, c, fleet))
    }
}

switchyard_policy_sdk::export_scorer!(KvHeadroom);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    fn at_usage(index: u32, kv_usage: f32) -> Candidate {
        Candidate {
            kv_usage,
            ..testing::candidate(index)
        }
    }

    #[test]
    fn score_is_free_share_of_kv() {
        let s = testing::score::<KvHeadroom>(
            "",
            &testing::request(100),
            &[at_usage(0, 0.25), at_usage(1, 1.0)],
            &testing::fleet(2),
        );
        assert_eq!(s, vec![0.75, 0.0]);
    }

    #[test]
    fn counting_the_request_uses_capacity() {
        let mut fleet = testing::fleet(2);
        fleet.backends[0].kv_capacity_tokens = 10_000;
        // Backend 1 has no known capacity: its score stays 1 - usage.
        let req = Request {
            max_tokens: 1000,
            ..testing::request(2000)
        };
        let s = testing::score::<KvHeadroom>(
            r#"{"count_request": true}"#,
            &req,
            &[at_usage(0, 0.5), at_usage(1, 0.5)],
            &fleet,
        );
        // 0.5 + (2000 + 1000) / 10000 = 0.8 used.
        assert!((s[0] - 0.2).abs() < 1e-6, "{s:?}");
        assert_eq!(s[1], 0.5);
    }

    #[test]
    fn overfull_and_nan_usage_score_zero() {
        let s = testing::score::<KvHeadroom>(
            "",
            &testing::request(100),
            &[at_usage(0, 1.2), at_usage(1, f32::NAN)],
            &testing::fleet(2),
        );
        assert_eq!(s, vec![0.0, 0.0]);
    }

    #[test]
    fn readme_example_configs_are_accepted() {
        let examples = testing::json_blocks(include_str!("../README.md"));
        assert!(!examples.is_empty(), "the README shows an example config");
        for config in examples {
            if let Err(e) = KvHeadroom::configure(config) {
                panic!("README config {config} rejected: {e}");
            }
        }
    }
}
