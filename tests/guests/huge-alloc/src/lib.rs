//! Hostile scorer: allocates and touches 1 GiB in `score`. The host's memory limit must
//! refuse the growth, fail the call and fall back.

use std::hint::black_box;

use switchyard_policy_sdk::prelude::*;

/// Asks for 1 GiB per call.
struct HugeAlloc;

impl Scorer for HugeAlloc {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(HugeAlloc)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        // Non-zero fill so the pages are written, not just reserved.
        let block = black_box(vec![1u8; 1 << 30]);
        Score::new(f32::from(block[block.len() - 1]))
    }
}

switchyard_policy_sdk::export_scorer!(HugeAlloc);
