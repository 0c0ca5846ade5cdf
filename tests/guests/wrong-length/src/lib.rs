//! Hostile scorer: returns one score fewer than there are candidates. The host must
//! reject the result as invalid and fall back.

use switchyard_policy_sdk::prelude::*;

/// Drops the last candidate's score.
struct WrongLength;

impl Scorer for WrongLength {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(WrongLength)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        Score::ONE
    }

    fn score_all(&self, _req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Vec<Score> {
        vec![Score::ONE; candidates.len().saturating_sub(1)]
    }
}

switchyard_policy_sdk::export_scorer!(WrongLength);
