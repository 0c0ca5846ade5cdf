//! Hostile placer: names a backend that is not among the candidates (for instance one a
//! compliance filter removed). The host must reject the placement and fall back, never
//! send the request there.
//!
//! Config picks the fault: empty gives `single` on a fleet backend that is not a
//! candidate (index `u32::MAX` when every backend is one); `split` gives a split whose
//! prefill leg is such a backend; `status` gives a rejection with HTTP status 200.

use switchyard_policy_sdk::prelude::*;

/// Which invalid placement to return.
enum BadPlacement {
    Single,
    Split,
    Status,
}

/// A backend that is not a candidate: the first fleet backend left out, else `u32::MAX`.
fn outsider(candidates: &[Candidate], fleet: &Fleet) -> BackendId {
    (0..fleet.backends.len() as u32)
        .map(BackendId)
        .find(|id| candidates.iter().all(|c| c.backend != *id))
        .unwrap_or(BackendId(u32::MAX))
}

impl Placer for BadPlacement {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        match config.trim() {
            "" | "single" => Ok(BadPlacement::Single),
            "split" => Ok(BadPlacement::Split),
            "status" => Ok(BadPlacement::Status),
            other => Err(ConfigError::new(format!(
                "unknown fault {other:?}: use single, split or status"
            ))),
        }
    }

    fn place(&self, _req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Placement {
        let outsider = outsider(candidates, fleet);
        match self {
            BadPlacement::Single => Placement::Single(outsider),
            BadPlacement::Split => Placement::Split {
                prefill: outsider,
                decode: candidates.first().map_or(outsider, |c| c.backend),
            },
            BadPlacement::Status => Placement::Reject {
                status: 200,
                message: "hostile guest: a rejection that claims success".into(),
            },
        }
    }
}

switchyard_policy_sdk::export_placer!(BadPlacement);
