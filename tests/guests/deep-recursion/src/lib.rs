//! Hostile scorer: recurses without bound in `score` until the stack overflows. The host
//! must turn the trap into a failed call and fall back.

use std::hint::black_box;

use switchyard_policy_sdk::prelude::*;

/// Recurses until the stack runs out.
struct DeepRecursion;

/// Each frame keeps a 64-byte buffer live across the call, so neither tail-call
/// elimination nor frame merging can flatten the recursion.
fn descend(depth: u64) -> u64 {
    let frame = black_box([depth; 8]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    descend(depth + 1).wrapping_add(frame[7])
}

impl Scorer for DeepRecursion {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(DeepRecursion)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        Score::new(descend(0) as f32)
    }
}

switchyard_policy_sdk::export_scorer!(DeepRecursion);
