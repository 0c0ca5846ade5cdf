//! Hostile scorer: returns NaN and out-of-range scores, one per candidate. Bypasses the
//! SDK's clamping `Score` by implementing the raw `scorer` world. The host must reject the
//! result as invalid and fall back.
//!
//! Config: empty gives NaN at even positions and 1.5 at odd ones; otherwise the config is
//! parsed as one `f32` returned for every candidate (`NaN`, `inf`, `-1`, `1.5`).

use std::cell::Cell;

use switchyard_policy_sdk::Candidate;
use switchyard_policy_sdk::wit::{scorer, types};

thread_local! {
    /// The configured value; `None` alternates NaN and 1.5.
    static VALUE: Cell<Option<f32>> = const { Cell::new(None) };
}

struct NanScores;

impl scorer::Guest for NanScores {
    fn configure(config: String) -> Result<(), String> {
        let config = config.trim();
        let value = if config.is_empty() {
            None
        } else {
            Some(
                config
                    .parse::<f32>()
                    .map_err(|e| format!("config {config:?}: {e}"))?,
            )
        };
        VALUE.with(|v| v.set(value));
        Ok(())
    }

    fn set_fleet(_fleet: types::Fleet) {}

    fn score(_request: types::Request, candidates: types::Candidates) -> Vec<f32> {
        let value = VALUE.with(Cell::get);
        (0..Candidate::from_rows(&candidates.rows).len())
            .map(|i| match value {
                Some(v) => v,
                None if i % 2 == 0 => f32::NAN,
                None => 1.5,
            })
            .collect()
    }
}

scorer::export_scorer_world!(NanScores with_types_in switchyard_policy_sdk::wit::scorer);
