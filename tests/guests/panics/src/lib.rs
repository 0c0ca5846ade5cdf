//! Hostile scorer: panics in `score`. Built with `panic = "abort"`, the panic is a Wasm
//! trap; the host must fail the call and fall back.

use switchyard_policy_sdk::prelude::*;

/// Panics on every call.
struct Panics;

impl Scorer for Panics {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(Panics)
    }

    fn score(&self, req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        panic!("hostile guest: panic while scoring request {}", req.id)
    }
}

switchyard_policy_sdk::export_scorer!(Panics);
