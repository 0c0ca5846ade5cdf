//! Test scorer (not hostile): the Rust twin of `examples/python-least-waiting`, line for
//! line, so the two languages can be compared on the same candidates (decisions and
//! costs, `switchyard policy bench`).

use switchyard_policy_sdk::prelude::*;

/// Prefers the backend with the fewest waiting requests.
struct LeastWaiting;

impl Scorer for LeastWaiting {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(LeastWaiting)
    }

    fn score(&self, _req: &Request, c: &Candidate, _fleet: &Fleet) -> Score {
        Score::ratio(1, 1 + c.waiting)
    }
}

switchyard_policy_sdk::export_scorer!(LeastWaiting);
