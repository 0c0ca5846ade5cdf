//! Hostile scorer: logs a million lines per `score` call. The host must keep its bound
//! (32 lines per call, the rest counted as dropped) so the router's log is not flooded,
//! and either finish the decision or stop the policy on its budget.

use switchyard_policy_sdk::prelude::*;

/// Lines logged per call.
const LINES: u32 = 1_000_000;

/// Floods the log, then scores every candidate 1.
struct LogFlood;

impl Scorer for LogFlood {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(LogFlood)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        Score::ONE
    }

    fn score_all(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        for _ in 0..LINES {
            switchyard_policy_sdk::info("hostile guest: flooding the router's log");
        }
        candidates
            .iter()
            .map(|c| self.score(req, c, fleet))
            .collect()
    }
}

switchyard_policy_sdk::export_scorer!(LogFlood);
