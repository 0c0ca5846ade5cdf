//! Hostile scorer: reads `/etc/passwd` in `score`, so the component imports
//! `wasi:filesystem`. The host grants no filesystem: it must refuse the component or
//! trap the call, and the file must never be read.

use switchyard_policy_sdk::prelude::*;

/// Scores 1 if it could read the host's password file, else 0.
struct WasiFs;

impl Scorer for WasiFs {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(WasiFs)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        match std::fs::read("/etc/passwd") {
            Ok(bytes) => {
                switchyard_policy_sdk::error(&format!("read {} bytes of /etc/passwd", bytes.len()));
                Score::ONE
            }
            Err(_) => Score::ZERO,
        }
    }
}

switchyard_policy_sdk::export_scorer!(WasiFs);
