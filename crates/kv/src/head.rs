//! The shared head of a model's prompts, and where each prompt's own prefix starts.
//!
//! Most prompts of a model begin alike: the chat template's opening, a system text every
//! application sends. Those blocks are cached everywhere, so they say nothing about where
//! a prompt belongs. [`HeadTracker`] counts how often each leading block key occurs, with
//! the counts halved every [`HALF_LIFE`] prompts; a prompt's *shared head* is its longest
//! run of leading blocks that at least [`HEAD_SHARE`] of recent prompts also began with.
//! The first block past it names the prompt's *prefix group*: its key covers the whole
//! prefix up to there (keys are chained), so prompts of one group share it and other
//! groups do not.

use std::collections::HashMap;

/// Share of recent prompts a leading block must open to count as shared head.
pub const HEAD_SHARE: f64 = 0.9;

/// Share of recent prompts a leading block must open for the block after it to be
/// counted too, so a head that is catching on is counted to its end, not block by block.
pub const CANDIDATE_SHARE: f64 = 0.5;

/// Prompts after which every count is halved, so a head that stops being sent fades.
pub const HALF_LIFE: u32 = 1024;

/// Key roots (model or adapter, and cache salt) tracked at once; past it the root with
/// the fewest prompts is dropped, so clients sending made-up salts cannot grow memory.
pub const MAX_ROOTS: usize = 256;

/// Where a prompt's own prefix starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PrefixGroup {
    /// Key of the prompt's first block past the shared head (of its last block when the
    /// whole prompt is shared head). Prompts with the same key share everything up to
    /// and including that block.
    pub key: u64,
    /// Tokens of the prompt in the shared head.
    pub head_tokens: u32,
}

/// Decayed counts of leading block keys, per model.
#[derive(Debug, Default)]
pub struct HeadTracker {
    /// Weighted number of prompts opening with each counted block.
    counts: HashMap<u64, u32>,
    /// Weighted number of prompts observed.
    prompts: u32,
    /// Prompts since the last halving.
    since_halving: u32,
}

impl HeadTracker {
    /// Counts a prompt's leading blocks and returns its prefix group; `None` for a prompt
    /// without a full block. Counts blocks up to the first one past the head: deeper
    /// blocks cannot be head while that one is not.
    pub fn observe(&mut self, keys: &[u64], block_tokens: u32) -> Option<PrefixGroup> {
        let last = keys.len().checked_sub(1)?;
        self.prompts += 1;
        let needed = HEAD_SHARE * f64::from(self.prompts);
        let mut head = 0;
        for &k in keys {
            let count = self.counts.entry(k).or_insert(0);
            *count += 1;
            if f64::from(*count) < needed {
                break;
            }
            head += 1;
        }
        self.since_halving += 1;
        if self.since_halving >= HALF_LIFE {
            self.halve();
        }
        let head_tokens = u32::try_from(head).unwrap_or(u32::MAX) * block_tokens;
        Some(PrefixGroup {
            key: keys[head.min(last)],
            head_tokens,
        })
    }

    /// Keys counted, for memory accounting and tests.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// True before any prompt with a full block was observed.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn halve(&mut self) {
        self.since_halving = 0;
        self.prompts /= 2;
        self.counts.retain(|_, c| {
            *c /= 2;
            *c > 0
        });
    }
}

/// One [`HeadTracker`] per key root: tenants with their own cache salt have their own
/// keys, hence their own head.
#[derive(Debug, Default)]
pub struct HeadTrackers {
    by_root: HashMap<u64, HeadTracker>,
}

impl HeadTrackers {
    /// [`HeadTracker::observe`] in the tracker of `root`.
    pub fn observe(&mut self, root: u64, keys: &[u64], block_tokens: u32) -> Option<PrefixGroup> {
        if keys.is_empty() {
            return None;
        }
        if !self.by_root.contains_key(&root) && self.by_root.len() >= MAX_ROOTS {
            let fewest = self
                .by_root
                .iter()
                .min_by_key(|(_, t)| t.prompts)
                .map(|(r, _)| *r);
            if let Some(r) = fewest {
                self.by_root.remove(&r);
            }
        }
        self.by_root
            .entry(root)
            .or_default()
            .observe(keys, block_tokens)
    }

    /// Roots tracked.
    pub fn roots(&self) -> usize {
        self.by_root.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of a prompt: `head` shared blocks, then blocks unique to `group`, chained the
    /// way real keys are (a block's key depends on every block before it).
    fn prompt(head: u64, group: u64, own: u64) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..head).map(|i| 1000 + i).collect();
        keys.extend((0..own).map(|i| (group << 32) | (i + 1)));
        keys
    }

    #[test]
    fn the_common_head_is_skipped_and_groups_keep_their_key() {
        let mut t = HeadTracker::default();
        let mut seen = HashMap::new();
        for round in 0..50u64 {
            for group in 1..=8u64 {
                let g = t.observe(&prompt(4, group, 6 + round % 3), 16).unwrap();
                if round > 0 {
                    assert_eq!(g.head_tokens, 64, "four shared blocks of 16 tokens");
                    let first = *seen.entry(group).or_insert(g.key);
                    assert_eq!(g.key, first, "group {group} keeps its key");
                    assert_eq!(g.key, (group << 32) | 1, "the first block past the head");
                }
            }
        }
        let keys: std::collections::HashSet<u64> = seen.values().copied().collect();
        assert_eq!(keys.len(), 8, "every group has its own key");
    }

    #[test]
    fn a_head_sent_by_too_few_prompts_is_not_head() {
        let mut t = HeadTracker::default();
        // Half the prompts carry a long system text, half do not.
        for i in 0..100u64 {
            let keys = if i % 2 == 0 {
                prompt(6, i, 2)
            } else {
                let mut k = vec![1000];
                k.extend([(i << 32) | 1, (i << 32) | 2]);
                k
            };
            let g = t.observe(&keys, 16).unwrap();
            if i > 10 {
                assert_eq!(g.head_tokens, 16, "only the block every prompt opens with");
            }
        }
    }

    #[test]
    fn a_retired_head_fades_after_halvings() {
        let mut t = HeadTracker::default();
        for i in 0..HALF_LIFE as u64 {
            t.observe(&prompt(4, i, 2), 16);
        }
        // The application changes its system text: the old head stops being sent, and
        // the new one is learned within a few half-lives.
        let mut last = None;
        for i in 0..(6 * HALF_LIFE) as u64 {
            let mut keys = vec![7000, 7001];
            keys.extend([(i << 32) | 1]);
            last = t.observe(&keys, 16);
        }
        assert_eq!(last.unwrap().head_tokens, 32, "the new head is learned");
        assert!(
            t.len() < 2 * HALF_LIFE as usize,
            "counts of one-off blocks are dropped: {}",
            t.len()
        );
    }

    #[test]
    fn each_root_has_its_own_head_and_made_up_roots_are_bounded() {
        let mut t = HeadTrackers::default();
        for i in 0..40u64 {
            // Tenant 1 (root 1) sends 90% of prompts; tenant 2's keys are salted apart.
            let root = if i % 10 == 0 { 2 } else { 1 };
            let mut keys = vec![root * 100, root * 100 + 1];
            keys.push((i << 32) | 1);
            let g = t.observe(root, &keys, 16).unwrap();
            if i >= 20 {
                assert_eq!(g.head_tokens, 32, "root {root} learns its own head");
            }
        }
        for salt in 0..(2 * MAX_ROOTS as u64) {
            t.observe(10_000 + salt, &[salt], 16);
        }
        assert_eq!(t.roots(), MAX_ROOTS);
    }

    #[test]
    fn a_prompt_without_a_full_block_has_no_group() {
        assert_eq!(HeadTracker::default().observe(&[], 16), None);
    }
}
