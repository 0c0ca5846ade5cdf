//! Placer: sends requests to each candidate in turn, ignoring load and cache. The
//! baseline every cache-aware pipeline is measured against.

use std::cell::Cell;

use switchyard_policy_sdk::prelude::*;

/// Round-robin over the candidates, by a counter kept in the instance.
///
/// The router keeps about one warm instance per worker thread, each with its own
/// counter, so the rotation is exact per instance and close to exact overall.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Cell<u64>,
}

impl Placer for RoundRobin {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        if config.trim().is_empty() || config.trim() == "{}" {
            Ok(RoundRobin::default())
        } else {
            Err(ConfigError::new("round-robin takes no config"))
        }
    }

    fn place(&self, _req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Placement {
        let turn = self.next.get();
        self.next.set(turn.wrapping_add(1));
        let i = (turn % candidates.len() as u64) as usize;
        Placement::Single(candidates[i].backend)
    }
}

switchyard_policy_sdk::export_placer!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    #[test]
    fn visits_each_candidate_in_turn() {
        let policy = RoundRobin::configure("").unwrap();
        let cands = [
            testing::candidate(3),
            testing::candidate(5),
            testing::candidate(7),
        ];
        let fleet = testing::fleet(8);
        let picks: Vec<Placement> = (0..4)
            .map(|_| policy.place(&testing::request(10), &cands, &fleet))
            .collect();
        let ids = [3, 5, 7, 3].map(|i| Placement::Single(BackendId(i)));
        assert_eq!(picks, ids);
    }

    #[test]
    fn rejects_config() {
        assert!(RoundRobin::configure(r#"{"x": 1}"#).is_err());
    }
}
