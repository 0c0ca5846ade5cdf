//! Scorer: the share of the prompt already cached on each backend (cached-prefix tokens /
//! prompt tokens), so requests go where their prefix is.

use switchyard_policy_sdk::prelude::*;

/// Scores cached-prefix tokens over prompt tokens.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixAffinity {
    /// Prompts shorter than this many tokens score 0 everywhere: too short for a cache
    /// hit to matter. Default 0.
    pub min_prompt_tokens: u32,
    /// Score only what is cached past the prompt's shared head (the leading tokens most
    /// of the model's prompts carry, which every busy backend holds): `(cached - head) /
    /// (prompt - head)`. Default false.
    pub skip_shared_head: bool,
}

impl Scorer for PrefixAffinity {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        config::from_json(config)
    }

    fn score(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Score {
        self.score_all(req, std::slice::from_ref(c), fleet)[0]
    }

    fn score_all(&self, req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Vec<Score> {
        if req.prompt_tokens < self.min_prompt_tokens {
            return vec![Score::ZERO; candidates.len()];
        }
        let head = if self.skip_shared_head {
            req.prefix_group().map_or(0, |g| g.head_tokens)
        } else {
            0
        };
        let own = req.prompt_tokens.saturating_sub(head);
        candidates
            .iter()
            .map(|c| Score::ratio(c.cached_prefix_tokens.saturating_sub(head), own))
            .collect()
    }
}

switchyard_policy_sdk::export_scorer!(PrefixAffinity);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    #[test]
    fn score_is_cached_share_of_prompt() {
        let cold = testing::candidate(0);
        let warm = Candidate {
            cached_prefix_tokens: 768,
            ..testing::candidate(1)
        };
        let s = testing::score::<PrefixAffinity>(
            "",
            &testing::request(1024),
            &[cold, warm],
            &testing::fleet(2),
        );
        assert_eq!(s, vec![0.0, 0.75]);
    }

    #[test]
    fn short_prompts_score_zero() {
        let warm = Candidate {
            cached_prefix_tokens: 16,
            ..testing::candidate(0)
        };
        let s = testing::score::<PrefixAffinity>(
            r#"{"min_prompt_tokens": 64}"#,
            &testing::request(32),
            &[warm],
            &testing::fleet(1),
        );
        assert_eq!(s, vec![0.0]);
    }

    #[test]
    fn the_shared_head_can_be_left_out() {
        let head_only = Candidate {
            cached_prefix_tokens: 256,
            ..testing::candidate(0)
        };
        let warm = Candidate {
            cached_prefix_tokens: 640,
            ..testing::candidate(1)
        };
        testing::set_prefix_group(Some(PrefixGroup {
            key: 1,
            head_tokens: 256,
        }));
        let cands = [head_only, warm];
        let req = testing::request(1024);
        let fleet = testing::fleet(2);
        let s =
            testing::score::<PrefixAffinity>(r#"{"skip_shared_head": true}"#, &req, &cands, &fleet);
        assert_eq!(s, vec![0.0, 0.5], "(640 - 256) / (1024 - 256)");
        let s = testing::score::<PrefixAffinity>("", &req, &cands, &fleet);
        assert_eq!(s, vec![0.25, 0.625], "off by default");
        testing::set_prefix_group(None);
    }

    #[test]
    fn unknown_config_field_is_rejected() {
        assert!(PrefixAffinity::configure(r#"{"min_prompt": 1}"#).is_err());
    }

    #[test]
    fn readme_example_configs_are_accepted() {
        let examples = testing::json_blocks(include_str!("../README.md"));
        assert!(!examples.is_empty(), "the README shows an example config");
        for config in examples {
            if let Err(e) = PrefixAffinity::configure(config) {
                panic!("README config {config} rejected: {e}");
            }
        }
    }
}
