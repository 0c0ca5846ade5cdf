//! Scorer: gives every prefix group a home and keeps it there.
//!
//! A cold prompt goes to its group's home: the first backend in the group's rendezvous
//! (highest-random-weight) order, unless that backend's load is over a bound relative to
//! the fleet, then to the next in that order (consistent hashing with bounded loads). A
//! warm prompt goes to the backend holding the longest part of it past the shared head,
//! under the same bound, so a conversation stays on the backend holding its history and
//! a spilled group warms a stable second choice. The shared head (chat template, common
//! system text) counts for nothing: every backend holds it.

use std::cell::RefCell;
use std::cmp::Reverse;

use switchyard_policy_sdk::prelude::*;

mod homes;

use homes::Homes;

/// Prefix-home's knobs; see the README.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixHome {
    /// A backend is over the bound when its load after taking the request would exceed
    /// `load_factor` times the fleet's mean load (this request included), rounded up.
    /// Default 1.25.
    pub load_factor: f32,
    /// The bound is never below this many requests. Default 4: on a quiet fleet a home
    /// with a few requests in flight takes one more rather than send it to a backend
    /// without its prefix (a miss costs a whole prefill there and evicts a group).
    pub min_bound: u32,
    /// Tokens a backend must hold past the shared head for the prompt to count as warm
    /// there. Default 1 (one KV block, since the index counts whole blocks).
    pub min_warm_tokens: u32,
    /// A backend may be home to at most `group_factor` times the mean number of groups
    /// per candidate, rounded up, when a group is given a home. Default 1.0.
    pub group_factor: f32,
    /// Decisions after which a group not seen since loses its home. Default 4096.
    pub forget_after: u64,
    #[serde(skip)]
    homes: RefCell<Homes>,
}

impl Default for PrefixHome {
    fn default() -> Self {
        PrefixHome {
            load_factor: 1.25,
            min_bound: 4,
            min_warm_tokens: 1,
            group_factor: 1.0,
            forget_after: 4096,
            homes: RefCell::default(),
        }
    }
}

/// Score of the chosen backend; the others rank below it in the group's order.
const CHOSEN: f32 = 1.0;
/// Best score of a backend that is not chosen.
const RUNNER_UP: f32 = 0.5;

impl PrefixHome {
    /// Largest load (requests, this one included) a backend may reach.
    fn bound(&self, candidates: &[Candidate]) -> u32 {
        let total: u64 = candidates.iter().map(|c| u64::from(c.load())).sum();
        let mean = (total + 1) as f32 / candidates.len().max(1) as f32;
        ((self.load_factor * mean).ceil() as u32).max(self.min_bound)
    }
}

impl Scorer for PrefixHome {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let p: PrefixHome = config::from_json(config)?;
        for (name, value) in [
            ("load_factor", p.load_factor),
            ("group_factor", p.group_factor),
        ] {
            if !(value >= 1.0 && value.is_finite()) {
                return Err(ConfigError(format!(
                    "{name} must be at least 1 (got {value})"
                )));
            }
        }
        Ok(p)
    }

    fn score(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Score {
        self.score_all(req, std::slice::from_ref(c), fleet)[0]
    }

    fn score_all(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        let group = req.prefix_group();
        // Without a group (a prompt under one block, an unkeyed model) the request id
        // stands in: such requests spread evenly, still under the bound, and get no home.
        let key = group.map_or(req.id, |g| g.key);
        let warm_at = group.map_or(u32::MAX, |g| {
            g.head_tokens.saturating_add(self.min_warm_tokens)
        });
        let bound = self.bound(candidates);
        let mut order: Vec<(u64, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (rendezvous(key, &fleet.backend(c.backend).name), i))
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        // NB: a backend whose KV cache is all in use (every slot of a llama.cpp busy)
        // would queue the request, and then run it in the first slot to free, often a
        // conversation's between two turns.
        let fits = |i: usize| candidates[i].load() < bound && candidates[i].kv_usage < 1.0;
        let mut homes = self.homes.borrow_mut();
        homes.tick(self.forget_after);
        // The longest warm prefix wins; among equals, the earlier in the group's order.
        let warm = order
            .iter()
            .enumerate()
            .filter(|&(_, &(_, i))| fits(i) && candidates[i].cached_prefix_tokens >= warm_at)
            .max_by_key(|&(rank, &(_, i))| (candidates[i].cached_prefix_tokens, Reverse(rank)))
            .map(|(_, &(_, i))| i);
        // The group's home, if it has one among the candidates.
        let home = group
            .and_then(|g| homes.home(g.key))
            .and_then(|b| candidates.iter().position(|c| c.backend.0 == b));
        let in_order = || order.iter().map(|&(_, i)| i).filter(|&i| fits(i));
        let chosen = warm.or(home.filter(|&i| fits(i))).or_else(|| match home {
            // The home is over the bound: the next in the group's order that is not,
            // a stable second choice, while the home stays.
            Some(_) => in_order().next(),
            // A new home: the first in the group's order under both bounds.
            None => {
                let homed = u32::from(group.is_some());
                let mean = (homes.groups() + homed) as f32 / candidates.len().max(1) as f32;
                let most_groups = (self.group_factor * mean).ceil() as u32;
                in_order()
                    .find(|&i| homes.groups_on(candidates[i].backend.0) < most_groups)
                    .or_else(|| in_order().next())
            }
        });
        if let Some(g) = group {
            match (home, chosen) {
                (Some(_), _) => homes.touch(g.key),
                (None, Some(i)) => homes.set(g.key, candidates[i].backend.0),
                (None, None) => {}
            }
        }
        let mut scores = vec![Score::ZERO; candidates.len()];
        let n = candidates.len() as f32;
        for (rank, &(_, i)) in order.iter().enumerate() {
            scores[i] = if Some(i) == chosen {
                Score::new(CHOSEN)
            } else if fits(i) {
                Score::new(RUNNER_UP * (1.0 - rank as f32 / n))
            } else {
                Score::ZERO
            };
        }
        scores
    }
}

/// The rendezvous weight of backend `name` for `key`: each key orders the backends its
/// own way, and adding or removing a backend moves only the keys it wins or held.
fn rendezvous(key: u64, name: &str) -> u64 {
    // FNV-1a of the name, then splitmix64's finaliser over both.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = key ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

switchyard_policy_sdk::export_scorer!(PrefixHome);

#[cfg(test)]
mod tests;
