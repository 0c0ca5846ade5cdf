//! Benchmark guest (not hostile): a scorer that spins a configured number of iterations
//! per `score` call, then rates every candidate alike. `bench/noisy-neighbour.sh` sizes
//! the loop to about 1 ms of CPU per decision to play the noisy tenant.
//!
//! Config: `{"iterations": N}` (default 0: returns at once).

use std::hint::black_box;

use switchyard_policy_sdk::prelude::*;

/// Spins `iterations` times per call.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BusyScorer {
    #[serde(default)]
    iterations: u64,
}

impl Scorer for BusyScorer {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        config::from_json(config)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        let mut n = 0u64;
        for _ in 0..black_box(self.iterations) {
            // black_box keeps the optimiser from folding the loop into one addition.
            n = black_box(n.wrapping_add(1));
        }
        black_box(n);
        Score::new(0.5)
    }
}

switchyard_policy_sdk::export_scorer!(BusyScorer);
