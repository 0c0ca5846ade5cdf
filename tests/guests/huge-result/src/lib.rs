//! Hostile scorer: returns 10 million scores whatever the candidates. Bypasses the SDK's
//! `Scorer` trait (which keeps one score per candidate) by implementing the raw `scorer`
//! world. The host must reject the result (or fail the call on its memory limit) and
//! fall back, without copying 40 MB per call into its own memory unchecked.

use switchyard_policy_sdk::wit::{scorer, types};

/// Scores returned per call.
const SCORES: usize = 10_000_000;

struct HugeResult;

impl scorer::Guest for HugeResult {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn set_fleet(_fleet: types::Fleet) {}

    fn score(_request: types::Request, _candidates: types::Candidates) -> Vec<f32> {
        vec![0.5; SCORES]
    }
}

scorer::export_scorer_world!(HugeResult with_types_in switchyard_policy_sdk::wit::scorer);
