//! Scorer: steer traffic toward configured shares of load per vendor (or accelerator),
//! or toward the backends with the lowest cost per generated token.

use std::collections::BTreeMap;

use switchyard_policy_sdk::prelude::*;

/// What the scorer optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Favour groups whose share of the current load is below their target share.
    #[default]
    Share,
    /// Favour backends with the lowest price per generated token.
    Cost,
}

/// Which static backend fact groups backends in `share` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKey {
    /// The accelerator vendor (`nvidia`, `amd`, `intel`).
    #[default]
    Vendor,
    /// The accelerator model (`h100`, `mi300x`).
    Accelerator,
}

/// Steers load between vendors or toward cheap tokens.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VendorBalance {
    /// `share` (default) or `cost`.
    pub mode: Mode,
    /// In `share` mode, group backends by `vendor` (default) or `accelerator`.
    pub key: GroupKey,
    /// In `share` mode, the target share of load per group, e.g. `{"nvidia": 0.5,
    /// "amd": 0.3, "intel": 0.2}`; renormalised over the groups among the candidates.
    /// Groups not listed score 0. Empty (default): equal shares for every group present.
    pub targets: BTreeMap<String, f32>,
    /// In `cost` mode, the score of a backend whose price or decode speed is unknown.
    /// Default 0.5.
    pub unknown_cost_score: f32,
}

impl Default for VendorBalance {
    fn default() -> Self {
        VendorBalance {
            mode: Mode::Share,
            key: GroupKey::Vendor,
            targets: BTreeMap::new(),
            unknown_cost_score: 0.5,
        }
    }
}

impl VendorBalance {
    fn group<'f>(&self, c: &Candidate, fleet: &'f Fleet) -> &'f str {
        fleet.get(c.backend).map_or("", |b| match self.key {
            GroupKey::Vendor => b.vendor.as_str(),
            GroupKey::Accelerator => b.accelerator.as_str(),
        })
    }

    fn share_scores(&self, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        // Load per group among the candidates; few groups, so a sorted map is cheapest.
        let mut load: BTreeMap<&str, f32> = BTreeMap::new();
        for c in candidates {
            *load.entry(self.group(c, fleet)).or_default() += c.load() as f32;
        }
        let target_of = |g: &str| {
            if self.targets.is_empty() {
                1.0
            } else {
                self.targets.get(g).copied().unwrap_or(0.0)
            }
        };
        let target_sum: f32 = load.keys().map(|g| target_of(g)).sum();
        let load_sum: f32 = load.values().sum();
        let by_group: BTreeMap<&str, Score> = load
            .iter()
            .map(|(&g, &l)| {
                let target = if target_sum > 0.0 {
                    target_of(g) / target_sum
                } else {
                    0.0
                };
                let share = if load_sum > 0.0 { l / load_sum } else { 0.0 };
                (g, deficit_score(target, share))
            })
            .collect();
        // NB: every candidate's group is a key of `load`, hence of `by_group`.
        candidates
            .iter()
            .map(|c| by_group[self.group(c, fleet)])
            .collect()
    }

    fn cost_scores(&self, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        let costs: Vec<Option<f32>> = candidates
            .iter()
            .map(|c| cost_per_token(c, fleet))
            .collect();
        normalize::relative_to_min_or(&costs, Score::new(self.unknown_cost_score))
    }
}

/// 0.5 when a group holds exactly its target share, toward 1 the further below it is,
/// toward 0 the further above: `0.5 + 0.5 (target - share) / max(target, share)`. A group
/// with no target scores 0.
fn deficit_score(target: f32, share: f32) -> Score {
    if target <= 0.0 {
        return Score::ZERO;
    }
    Score::new(0.5 + 0.5 * (target - share) / target.max(share))
}

/// Price per generated token in currency units: `cost_per_hour / 3600 / decode speed`,
/// with the candidate's effective speed, else the declared one. `None` when either
/// figure is unknown.
fn cost_per_token(c: &Candidate, fleet: &Fleet) -> Option<f32> {
    let b = fleet.get(c.backend)?;
    let speed = if c.decode_tokens_per_s > 0.0 {
        c.decode_tokens_per_s
    } else {
        b.decode_tokens_per_s
    };
    (b.cost_per_hour > 0.0 && speed > 0.0).then(|| (b.cost_per_hour / 3600.0) as f32 / speed)
}

impl Scorer for VendorBalance {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let mut policy: VendorBalance = config::from_json(config)?;
        if let Some((group, share)) = policy
            .targets
            .iter()
            .find(|(_, s)| !(s.is_finite() && **s >= 0.0))
        {
            return Err(ConfigError::new(format!(
                "targets.{group}: {share} must be a non-negative number"
            )));
        }
        if !policy.targets.is_empty() && policy.targets.values().sum::<f32>() <= 0.0 {
            return Err(ConfigError::new(
                "targets: at least one share must be positive",
            ));
        }
        if !(0.0..=1.0).contains(&policy.unknown_cost_score) {
            return Err(ConfigError::new(format!(
                "unknown_cost_score: {} is outside [0, 1]",
                policy.unknown_cost_score
            )));
        }
        // NB: the fleet's vendor and accelerator names are lowercase.
        policy.targets = std::mem::take(&mut policy.targets)
            .into_iter()
            .map(|(g, s)| (g.to_ascii_lowercase(), s))
            .collect();
        Ok(policy)
    }

    fn score(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Score {
        self.score_all(req, std::slice::from_ref(c), fleet)[0]
    }

    fn score_all(&self, _req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        match self.mode {
            Mode::Share => self.share_scores(candidates, fleet),
            Mode::Cost => self.cost_scores(candidates, fleet),
        }
    }
}

switchyard_policy_sdk::export_scorer!(VendorBalance);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    /// Backends 0 and 1 are nvidia h100s, 2 is an amd mi300x, 3 an intel gaudi3.
    fn mixed_fleet() -> Fleet {
        let mut fleet = testing::fleet(4);
        fleet.backends[2].vendor = "amd".into();
        fleet.backends[2].accelerator = "mi300x".into();
        fleet.backends[3].vendor = "intel".into();
        fleet.backends[3].accelerator = "gaudi3".into();
        fleet
    }

    fn running(index: u32, running: u32) -> Candidate {
        Candidate {
            running,
            ..testing::candidate(index)
        }
    }

    fn score(config: &str, candidates: &[Candidate], fleet: &Fleet) -> Vec<f32> {
        testing::score::<VendorBalance>(config, &testing::request(100), candidates, fleet)
    }

    #[test]
    fn under_served_vendor_scores_highest() {
        // nvidia holds 8 of 10 running requests, amd 2, intel 0; equal targets (1/3 each).
        let cands = [running(0, 4), running(1, 4), running(2, 2), running(3, 0)];
        let s = score("", &cands, &mixed_fleet());
        assert_eq!(s[0], s[1], "same vendor, same score");
        assert!(s[3] > s[2] && s[2] > s[0], "{s:?}");
        assert_eq!(s[3], 1.0);
    }

    #[test]
    fn group_at_its_target_scores_half() {
        let cands = [running(0, 3), running(2, 1)];
        let s = score(
            r#"{"targets": {"NVIDIA": 0.75, "amd": 0.25}}"#,
            &cands,
            &mixed_fleet(),
        );
        assert_eq!(s, vec![0.5, 0.5]);
    }

    #[test]
    fn unlisted_group_scores_zero() {
        let cands = [running(0, 0), running(3, 0)];
        let s = score(r#"{"targets": {"nvidia": 1}}"#, &cands, &mixed_fleet());
        assert_eq!(s, vec![1.0, 0.0]);
    }

    #[test]
    fn groups_by_accelerator() {
        let mut fleet = mixed_fleet();
        fleet.backends[1].accelerator = "h200".into();
        // h100 holds all the load, h200 none: h200 is under-served.
        let cands = [running(0, 5), running(1, 0)];
        let s = score(r#"{"key": "accelerator"}"#, &cands, &fleet);
        assert!(s[1] > s[0], "{s:?}");
    }

    #[test]
    fn cost_mode_prefers_cheapest_token() {
        let mut fleet = mixed_fleet();
        // $/token: b0 4/100, b1 2/100 (cheapest), b2 3/50 = 6/100, b3 unknown price.
        for (b, (cost, speed)) in [(4.0, 100.0), (2.0, 100.0), (3.0, 50.0), (0.0, 80.0)]
            .into_iter()
            .enumerate()
        {
            fleet.backends[b].cost_per_hour = cost;
            fleet.backends[b].decode_tokens_per_s = speed;
        }
        let cands: Vec<Candidate> = (0..4).map(testing::candidate).collect();
        let s = score(r#"{"mode": "cost"}"#, &cands, &fleet);
        assert!((s[0] - 0.5).abs() < 1e-6, "{s:?}");
        assert_eq!(s[1], 1.0);
        assert!((s[2] - 1.0 / 3.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s[3], 0.5, "unknown price scores unknown_cost_score");
    }

    #[test]
    fn measured_decode_speed_beats_declared() {
        let mut fleet = mixed_fleet();
        for b in &mut fleet.backends[..2] {
            b.cost_per_hour = 2.0;
            b.decode_tokens_per_s = 100.0;
        }
        // Backend 1 measures twice as fast as declared: half the price per token.
        let fast = Candidate {
            decode_tokens_per_s: 200.0,
            ..testing::candidate(1)
        };
        let s = score(
            r#"{"mode": "cost"}"#,
            &[testing::candidate(0), fast],
            &fleet,
        );
        assert_eq!(s, vec![0.5, 1.0]);
    }

    #[test]
    fn bad_targets_are_rejected() {
        assert!(VendorBalance::configure(r#"{"targets": {"amd": -1}}"#).is_err());
        assert!(VendorBalance::configure(r#"{"targets": {"amd": 0}}"#).is_err());
        assert!(VendorBalance::configure(r#"{"mode": "cheapest"}"#).is_err());
    }
}
