//! Hostile scorer: never returns from `score`. The host must stop it (fuel or epoch
//! deadline), drop the instance and fall back.

use std::hint::black_box;

use switchyard_policy_sdk::prelude::*;

/// Spins forever.
struct InfiniteLoop;

impl Scorer for InfiniteLoop {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(InfiniteLoop)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        let mut n = 0u64;
        loop {
            // black_box keeps the optimiser from proving the loop does nothing.
            n = black_box(n.wrapping_add(1));
        }
    }
}

switchyard_policy_sdk::export_scorer!(InfiniteLoop);
