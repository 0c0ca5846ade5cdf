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

    /// Scores `c` as the only candidate; the router calls [`Scorer::score_all`], since
    /// shares are relative to the other candidates.
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
mod tests;
