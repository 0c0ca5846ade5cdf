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

/// A slot-per-prompt engine's slots as the router sees them: the prompt each holds,
/// least recently used first, and which are busy running a request the router sent.
///
/// A busy slot cannot take another request: the engine queues it until a slot frees, and
/// then runs it in that slot whatever it held (llama.cpp), so a prompt in a busy slot is
/// no hit for anyone else, and a request sent to an engine with every slot busy evicts
/// whichever prompt finishes first, often a conversation between two turns.
#[derive(Debug, Default)]
pub struct PromptSlots {
    held: VecDeque<Held>,
    /// Leases of requests running in a slot that held no prompt yet.
    fresh: Vec<u64>,
    /// The engine's slots, as last reported.
    slots: u32,
}

/// One slot's prompt, and the lease of the request running in it, if any.
#[derive(Debug)]
struct Held {
    keys: Vec<u64>,
    lease: Option<u64>,
}

/// Leading blocks `a` and `b` share.
fn shared(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptSlots {
    fn busy(&self) -> usize {
        self.held.iter().filter(|h| h.lease.is_some()).count() + self.fresh.len()
    }

    /// Index in `held` of the slot llama.cpp reuses for `keys` among those `eligible`:
    /// the one whose prompt it shares the most with (the least recently used among
    /// equals), if that is at least [`SLOT_SIMILARITY`] of the prompt.
    fn similar(&self, keys: &[u64], eligible: impl Fn(&Held) -> bool) -> Option<usize> {
        self.held
            .iter()
            .enumerate()
            .filter(|(_, h)| eligible(h))
            .map(|(i, h)| (shared(&h.keys, keys), i))
            .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)))
            .filter(|&(n, _)| n > 0 && n as f64 >= SLOT_SIMILARITY * keys.len() as f64)
            .map(|(_, i)| i)
    }

    /// A request with block `keys` was sent to the engine: takes the slot the engine
    /// will run it in (the idle one it shares the most with, else an unused one, else
    /// the least recently used idle one) under `lease`, a number unique to the request,
    /// to [`serve`](Self::serve) and [`release`](Self::release) it with. False when
    /// every slot is busy: the engine queues the request, and which slot it gets is
    /// unknown.
    pub fn occupy(&mut self, keys: &[u64], slots: u32, lease: u64) -> bool {
        self.slots = slots.max(1);
        if self.busy() >= self.slots as usize {
            return false;
        }
        let idle = |h: &Held| h.lease.is_none();
        let slot = self.similar(keys, idle).or_else(|| {
            if self.held.len() + self.fresh.len() < self.slots as usize {
                None
            } else {
                self.held.iter().position(idle)
            }
        });
        match slot {
            Some(i) => self.held[i].lease = Some(lease),
            None => self.fresh.push(lease),
        }
        true
    }

    /// The request under `lease` finished (or failed): its slot is idle again.
    pub fn release(&mut self, lease: u64) {
        self.fresh.retain(|&l| l != lease);
        for h in &mut self.held {
            if h.lease == Some(lease) {
                h.lease = None;
            }
        }
    }

    /// Records that the engine ran the prompt with block `keys` in one of its `slots`
    /// (the one `lease` holds, when the request took one); returns the blocks it no
    /// longer holds (those of the prompt it replaced that no held prompt shares).
    pub fn serve(&mut self, keys: &[u64], slots: u32, lease: Option<u64>) -> Vec<u64> {
        self.slots = slots.max(1);
        let leased = lease.and_then(|l| self.held.iter().position(|h| h.lease == Some(l)));
        let fresh = lease.is_some_and(|l| self.fresh.contains(&l));
        let mut replaced: Vec<Vec<u64>> = Vec::new();
        if fresh {
            self.fresh.retain(|&l| Some(l) != lease);
        } else if let Some(i) = leased.or_else(|| {
            // Not leased: the slot it shares the most with, else the least recently
            // used idle one once every slot is taken.
            self.similar(keys, |h| h.lease.is_none()).or_else(|| {
                (self.held.len() + self.fresh.len() >= self.slots as usize)
                    .then(|| self.held.iter().position(|h| h.lease.is_none()))
                    .flatten()
            })
        }) {
            replaced.extend(self.held.remove(i).map(|h| h.keys));
        }
        self.held.push_back(Held {
            keys: keys.to_vec(),
            lease: if fresh || leased.is_some() {
                lease
            } else {
                None
            },
        });
        while self.held.len() + self.fresh.len() > self.slots as usize {
            let i = self
                .held
                .iter()
                .position(|h| h.lease.is_none())
                .unwrap_or(0);
            replaced.extend(self.held.remove(i).map(|h| h.keys));
        }
        if replaced.is_empty() {
            return Vec::new();
        }
        let held: HashSet<u64> = self.held.iter().flat_map(|h| &h.keys).copied().collect();
        let mut gone: Vec<u64> = replaced
            .into_iter()
            .flatten()
            .filter(|k| !held.contains(k))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        gone
    }

    /// Leading blocks of `keys` an idle slot holds: what a request sent now would find
    /// cached. 0 when every slot is busy.
    pub fn idle_shared(&self, keys: &[u64]) -> usize {
        if self.busy() >= self.slots as usize {
            return 0;
        }
        self.held
            .iter()
            .filter(|h| h.lease.is_none())
            .map(|h| shared(&h.keys, keys))
            .max()
            .unwrap_or(0)
    }

    /// Prompts held, slots and busy slots; `None` before the first prompt.
    pub fn stats(&self) -> Option<PromptSlotStats> {
        (self.slots > 0).then(|| PromptSlotStats {
            held: u32::try_from(self.held.len()).unwrap_or(u32::MAX),
            slots: self.slots,
            busy: u32::try_from(self.busy()).unwrap_or(u32::MAX),
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
        assert!(s.serve(&prompt(1, 0), 2, None).is_empty());
        // Group 2 shares the head (2 of 6 blocks, over 10%) with group 1's slot, so
        // llama.cpp runs it there rather than in the empty slot: group 1 is gone.
        assert_eq!(s.serve(&prompt(2, 0), 2, None), vec![100, 101, 102, 103]);
        assert_eq!(s.stats().map(|s| s.held), Some(1));
    }

    #[test]
    fn the_next_turn_reuses_its_conversation_slot() {
        let mut s = PromptSlots::default();
        s.serve(&prompt(1, 1), 2, None);
        s.serve(&[90, 91], 2, None);
        // Turn 2 of group 1 extends turn 1: it replaces that slot, nothing is lost.
        assert!(s.serve(&prompt(1, 2), 2, None).is_empty());
        assert_eq!(s.stats().map(|s| (s.held, s.slots)), Some((2, 2)));
        // A third, unrelated prompt evicts the least recently used.
        assert_eq!(s.serve(&[80], 2, None), vec![90, 91]);
    }

    #[test]
    fn a_dissimilar_prompt_evicts_the_least_recently_used() {
        let mut s = PromptSlots::default();
        s.serve(&[10, 11], 2, None);
        s.serve(&[20, 21], 2, None);
        assert_eq!(s.serve(&[30, 31], 2, None), vec![10, 11]);
        assert_eq!(
            s.serve(&[20, 21, 22], 2, None),
            Vec::<u64>::new(),
            "similar: reused"
        );
        assert_eq!(s.serve(&[40], 2, None), vec![30, 31]);
    }

    #[test]
    fn a_busy_slot_is_no_hit_and_a_full_engine_queues() {
        let mut s = PromptSlots::default();
        let a = 1;
        assert!(s.occupy(&prompt(1, 1), 2, a), "a slot is free");
        assert!(s.serve(&prompt(1, 1), 2, Some(a)).is_empty());
        // While conversation 1 runs, its prompt helps nobody: a second request of group
        // 1 would run in the other slot.
        assert_eq!(s.idle_shared(&prompt(1, 2)), 0);
        let b = 2;
        assert!(s.occupy(&prompt(2, 1), 2, b), "the second slot");
        assert_eq!(s.stats().map(|s| s.busy), Some(2));
        // Both busy: the engine would queue a third request.
        assert!(!s.occupy(&prompt(3, 1), 2, 3));
        assert_eq!(s.idle_shared(&prompt(1, 2)), 0);
        // Conversation 1 finishes: its next turn finds its whole history.
        s.release(a);
        assert_eq!(s.idle_shared(&prompt(1, 2)), prompt(1, 1).len());
        s.release(b);
        assert_eq!(s.stats().map(|s| s.busy), Some(0));
    }

    #[test]
    fn a_lease_keeps_its_slot_whatever_is_served_meanwhile() {
        let mut s = PromptSlots::default();
        s.serve(&[10, 11, 12], 2, None);
        s.serve(&[20, 21, 22], 2, None);
        // Turn 2 of conversation 1 leases its slot ...
        let a = 1;
        assert!(s.occupy(&[10, 11, 12, 13], 2, a), "idle slot");
        // ... so an unrelated request takes the only idle one, conversation 2's, which
        // is gone once it is served there.
        let c = 2;
        assert!(s.occupy(&[7, 8, 9], 2, c), "idle slot");
        assert_eq!(s.serve(&[7, 8, 9], 2, Some(c)), vec![20, 21, 22]);
        assert!(
            s.serve(&[10, 11, 12, 13], 2, Some(a)).is_empty(),
            "extends its slot"
        );
        assert_eq!(s.stats().map(|s| (s.held, s.busy)), Some((2, 2)));
        s.release(a);
        s.release(c);
        assert_eq!(s.idle_shared(&[10, 11, 12, 13, 14]), 4);
    }
}
