//! Approximate mode: the index filled from our own routing decisions.
//!
//! A backend that publishes no KV events is assumed to hold a prompt's blocks from the
//! moment it served the prompt until [`DEFAULT_TTL_S`] after their last use, within the
//! capacity the router learned from the engine (vLLM's `cache_config_info`, llama.cpp's
//! `/props`, or the declared one), passed to [`crate::KvIndex::record`]. Dynamo's
//! approximate router uses the same 120 s TTL; the GIE scorer's per-server LRU of 31,250
//! blocks is the default capacity.

use std::collections::{HashSet, VecDeque};

use parking_lot::RwLock;

use super::index::Index;
use super::stats::PromptSlotStats;

/// Seconds a routed block counts as cached after its last use.
pub const DEFAULT_TTL_S: u64 = 120;

/// Blocks a backend is assumed to hold when it publishes no capacity.
pub const DEFAULT_CAPACITY_BLOCKS: u32 = 31_250;

/// Forgets the blocks of the slots in `mask` last used before `cutoff_s`.
pub fn expire(index: &RwLock<Index>, mask: u64, cutoff_s: u64) {
    if mask == 0 {
        return;
    }
    let mut index = index.write();
    let mut bits = mask;
    while bits != 0 {
        index.expire(bits.trailing_zeros() as u8, cutoff_s);
        bits &= bits - 1;
    }
}

/// How much of what it served a backend keeps in its prefix cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// A block cache of this many tokens, least recently used blocks evicted first
    /// (vLLM, SGLang).
    Tokens(u64),
    /// One prompt per slot, this many slots (llama.cpp): a slot keeps the last prompt
    /// it ran, and a new prompt takes the slot whose prompt it shares the most with, or
    /// failing that the least recently used one.
    Prompts(u32),
}

/// Share of a new prompt a slot's prompt must open with for llama.cpp to reuse that
/// slot (`--slot-prompt-similarity`, default 0.10).
pub const SLOT_SIMILARITY: f64 = 0.10;

/// The prompts a slot-per-prompt engine holds, least recently used first.
#[derive(Debug, Default)]
pub struct PromptSlots {
    prompts: VecDeque<Vec<u64>>,
    /// The engine's slots, as last reported.
    slots: u32,
}

impl PromptSlots {
    /// Records that the engine ran the prompt with block `keys` in one of its `slots`;
    /// returns the blocks it no longer holds (those of the prompt it replaced that no
    /// held prompt shares).
    pub fn serve(&mut self, keys: &[u64], slots: u32) -> Vec<u64> {
        self.slots = slots.max(1);
        let slots = self.slots as usize;
        let shared = |p: &Vec<u64>| p.iter().zip(keys).take_while(|(a, b)| a == b).count();
        let similar = self
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (shared(p), i))
            // The most shared; among equals the least recently used.
            .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)))
            .filter(|&(n, _)| n > 0 && n as f64 >= SLOT_SIMILARITY * keys.len() as f64)
            .map(|(_, i)| i);
        let mut replaced: Vec<Vec<u64>> = Vec::new();
        if let Some(i) = similar.or((self.prompts.len() >= slots).then_some(0)) {
            replaced.extend(self.prompts.remove(i));
        }
        self.prompts.push_back(keys.to_vec());
        while self.prompts.len() > slots {
            replaced.extend(self.prompts.pop_front());
        }
        if replaced.is_empty() {
            return Vec::new();
        }
        let held: HashSet<u64> = self.prompts.iter().flatten().copied().collect();
        let mut gone: Vec<u64> = replaced
            .into_iter()
            .flatten()
            .filter(|k| !held.contains(k))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        gone
    }

    /// Prompts held and slots; `None` before the first prompt.
    pub fn stats(&self) -> Option<PromptSlotStats> {
        (self.slots > 0).then(|| PromptSlotStats {
            held: u32::try_from(self.prompts.len()).unwrap_or(u32::MAX),
            slots: self.slots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(group: u64, turn: u64) -> Vec<u64> {
        // Two head blocks, four group blocks, one block per turn.
        let mut k = vec![1, 2];
        k.extend((0..4).map(|i| group * 100 + i));
        k.extend((0..turn).map(|t| group * 100 + 50 + t));
        k
    }

    #[test]
    fn a_similar_prompt_takes_the_slot_it_shares_most_with() {
        let mut s = PromptSlots::default();
        assert!(s.serve(&prompt(1, 0), 2).is_empty());
        // Group 2 shares the head (2 of 6 blocks, over 10%) with group 1's slot, so
        // llama.cpp runs it there rather than in the empty slot: group 1 is gone.
        assert_eq!(s.serve(&prompt(2, 0), 2), vec![100, 101, 102, 103]);
        assert_eq!(s.stats().map(|s| s.held), Some(1));
    }

    #[test]
    fn the_next_turn_reuses_its_conversation_slot() {
        let mut s = PromptSlots::default();
        s.serve(&prompt(1, 1), 2);
        s.serve(&[90, 91], 2);
        // Turn 2 of group 1 extends turn 1: it replaces that slot, nothing is lost.
        assert!(s.serve(&prompt(1, 2), 2).is_empty());
        assert_eq!(s.stats().map(|s| (s.held, s.slots)), Some((2, 2)));
        // A third, unrelated prompt evicts the least recently used.
        assert_eq!(s.serve(&[80], 2), vec![90, 91]);
    }

    #[test]
    fn a_dissimilar_prompt_evicts_the_least_recently_used() {
        let mut s = PromptSlots::default();
        s.serve(&[10, 11], 2);
        s.serve(&[20, 21], 2);
        assert_eq!(s.serve(&[30, 31], 2), vec![10, 11]);
        assert_eq!(
            s.serve(&[20, 21, 22], 2),
            Vec::<u64>::new(),
            "similar: reused"
        );
        assert_eq!(s.serve(&[40], 2), vec![30, 31]);
    }
}
