//! Scorer: prefer backends with the fewest requests queued or running and the fewest
//! prompt tokens still waiting to be prefilled.

use switchyard_policy_sdk::prelude::*;

/// Scores a candidate by its load: requests on it plus pending prefill work.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeastLoad {
    /// Load (in requests) at which a candidate scores 0.5; an idle one scores 1.
    /// Default 8. Ignored when `relative` is set.
    pub half_load: f32,
    /// In-flight prefill tokens that count as one more request, so a backend chewing on
    /// long prompts looks busier than its request count says. Default 1024; 0 ignores
    /// prefill tokens.
    pub prefill_tokens_per_request: u32,
    /// Score relative to the other candidates instead (least loaded 1, most loaded 0),
    /// which keeps the spread when the whole fleet is busy. Default false.
    pub relative: bool,
}

impl Default for LeastLoad {
    fn default() -> Self {
        LeastLoad {
            half_load: 8.0,
            prefill_tokens_per_request: 1024,
            relative: false,
        }
    }
}

impl LeastLoad {
    /// The candidate's load in requests: [`Candidate::load`] plus its in-flight prefill
    /// tokens converted to requests.
    pub fn load(&self, c: &Candidate) -> f32 {
        let prefill = if self.prefill_tokens_per_request == 0 {
            0.0
        } else {
            c.in_flight_prefill_tokens as f32 / self.prefill_tokens_per_request as f32
        };
        c.load() as f32 + prefill
    }
}

impl Scorer for LeastLoad {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: LeastLoad = config::from_json(config)?;
        if !(policy.half_load.is_finite() && policy.half_load > 0.0) {
            return Err(ConfigError::new(format!(
                "half_load: {} must be a positive number",
                policy.half_load
            )));
        }
        Ok(policy)
    }

    fn score(&self, _req: &Request, c: &Candidate, _fleet: &Fleet) -> Score {
        normalize::decay(self.load(c), self.half_load)
    }

    fn score_all(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        if !self.relative {
            return candidates
                .iter()
                .map(|c| self.score(req, c, fleet))
                .collect();
        }
        let loads: Vec<f32> = candidates.iter().map(|c| self.load(c)).collect();
        normalize::min_max_inverted(&loads)
    }
}

switchyard_policy_sdk::export_scorer!(LeastLoad);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    fn with_load(index: u32, waiting: u32, running: u32, prefill: u32) -> Candidate {
        Candidate {
            waiting,
            running,
            in_flight_prefill_tokens: prefill,
            ..testing::candidate(index)
        }
    }

    fn score(config: &str, candidates: &[Candidate]) -> Vec<f32> {
        testing::score::<LeastLoad>(
            config,
            &testing::request(100),
            candidates,
            &testing::fleet(candidates.len() as u32),
        )
    }

    #[test]
    fn idle_scores_one_and_half_load_scores_half() {
        let s = score("", &[with_load(0, 0, 0, 0), with_load(1, 4, 4, 0)]);
        assert_eq!(s, vec![1.0, 0.5]);
    }

    #[test]
    fn pending_prefill_tokens_add_load() {
        let s = score("", &[with_load(0, 0, 1, 0), with_load(1, 0, 1, 8192)]);
        assert!(s[0] > s[1], "{s:?}");
        // 1 request + 8192/1024 = 9 requests of load.
        assert!((s[1] - 1.0 / (1.0 + 9.0 / 8.0)).abs() < 1e-6);
    }

    #[test]
    fn prefill_tokens_can_be_ignored() {
        let s = score(
            r#"{"prefill_tokens_per_request": 0}"#,
            &[with_load(0, 0, 1, 0), with_load(1, 0, 1, 8192)],
        );
        assert_eq!(s[0], s[1]);
    }

    #[test]
    fn in_flight_count_is_used_when_the_scrape_lags() {
        let stale = Candidate {
            in_flight_requests: 8,
            ..with_load(0, 0, 0, 0)
        };
        assert_eq!(score("", &[stale]), vec![0.5]);
    }

    #[test]
    fn relative_mode_spans_zero_to_one_on_a_busy_fleet() {
        let s = score(
            r#"{"relative": true}"#,
            &[
                with_load(0, 40, 60, 0),
                with_load(1, 50, 60, 0),
                with_load(2, 60, 60, 0),
            ],
        );
        assert_eq!(s, vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn non_positive_half_load_is_rejected() {
        assert!(LeastLoad::configure(r#"{"half_load": 0}"#).is_err());
        assert!(LeastLoad::configure(r#"{"halfload": 3}"#).is_err());
    }

    #[test]
    fn readme_example_configs_are_accepted() {
        let examples = testing::json_blocks(include_str!("../README.md"));
        assert!(!examples.is_empty(), "the README shows an example config");
        for config in examples {
            if let Err(e) = LeastLoad::configure(config) {
                panic!("README config {config} rejected: {e}");
            }
        }
    }
}
