//! The slot cache: llama.cpp `llama-server`'s `-np N` slots, each keeping the KV of the
//! last sequence it ran.
//!
//! A *slot* runs one request at a time. When the request ends its KV stays in the slot
//! (prompt and generated tokens), so the next request placed there reuses the common
//! prefix. A request takes the idle slot whose content covers the largest fraction of its
//! prompt when that fraction reaches the slot-prompt similarity (`--slot-prompt-similarity`,
//! 0.10 by default), otherwise the least recently used idle slot; with every slot busy it
//! waits. This is the capacity a router meets in front of llama.cpp: a handful of prompts
//! per backend, whatever the memory.

/// Index of a slot.
pub type SlotId = usize;

/// llama.cpp's default `--slot-prompt-similarity`.
pub const DEFAULT_SIMILARITY: f64 = 0.10;

#[derive(Debug, Clone, Default)]
struct Slot {
    /// Tokens whose KV the slot holds.
    tokens: Vec<u32>,
    is_processing: bool,
    /// Logical time of the last release; 0 for a slot never used.
    last_used: u64,
}

/// The slots of one llama.cpp-style engine.
///
/// Owns every slot's content and state. Promises: a slot is handed out only when idle, and
/// holds at most `ctx_per_slot` tokens; cached tokens are a common prefix of the slot's
/// content and the prompt, short of the prompt's last token (which is always computed, to
/// sample a fresh first token).
#[derive(Debug, Clone)]
pub struct SlotCache {
    slots: Vec<Slot>,
    ctx_per_slot: usize,
    similarity: f64,
    clock: u64,
}

impl SlotCache {
    /// `n` empty slots of `ctx_per_slot` tokens each, choosing by content when the shared
    /// fraction of a prompt reaches `similarity` (in [0, 1]; 0 disables the choice by
    /// content, as in llama.cpp).
    pub fn new(n: usize, ctx_per_slot: usize, similarity: f64) -> Self {
        Self {
            slots: vec![Slot::default(); n],
            ctx_per_slot,
            similarity,
            clock: 0,
        }
    }

    /// Number of slots.
    pub fn num_slots(&self) -> usize {
        self.slots.len()
    }

    /// Context of one slot, in tokens.
    pub fn ctx_per_slot(&self) -> usize {
        self.ctx_per_slot
    }

    /// Whether slot `id` is running a request.
    pub fn is_processing(&self, id: SlotId) -> bool {
        self.slots.get(id).is_some_and(|s| s.is_processing)
    }

    /// Tokens held in all slots over their total context, in [0, 1] (llama.cpp's
    /// `kv_cache_usage_ratio`).
    pub fn usage(&self) -> f64 {
        let total = self.slots.len() * self.ctx_per_slot;
        if total == 0 {
            return 0.0;
        }
        let held: usize = self.slots.iter().map(|s| s.tokens.len()).sum();
        held as f64 / total as f64
    }

    /// Takes an idle slot for `prompt`: the one sharing the largest fraction of it when that
    /// fraction reaches the similarity, else the least recently used. Returns the slot and
    /// the prompt tokens it already holds, or `None` when every slot is busy.
    pub fn acquire(&mut self, prompt: &[u32]) -> Option<(SlotId, usize)> {
        let idle = || {
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.is_processing)
        };
        let by_content = (self.similarity > 0.0 && !prompt.is_empty())
            .then(|| {
                idle()
                    .map(|(id, s)| (id, common_prefix(&s.tokens, prompt)))
                    .filter(|&(_, common)| {
                        common > 0 && common as f64 / prompt.len() as f64 >= self.similarity
                    })
                    .max_by_key(|&(id, common)| (common, std::cmp::Reverse(id)))
                    .map(|(id, _)| id)
            })
            .flatten();
        let id = by_content.or_else(|| {
            idle()
                .min_by_key(|&(id, s)| (s.last_used, id))
                .map(|(id, _)| id)
        })?;
        let slot = &mut self.slots[id];
        slot.is_processing = true;
        let cached = common_prefix(&slot.tokens, prompt).min(prompt.len().saturating_sub(1));
        Some((id, cached))
    }

    /// Ends the request in slot `id`, which keeps `tokens` (the prompt and what was
    /// generated, cut to the slot's context).
    pub fn release(&mut self, id: SlotId, tokens: &[u32]) {
        self.clock += 1;
        let slot = &mut self.slots[id];
        slot.is_processing = false;
        slot.last_used = self.clock;
        slot.tokens.clear();
        slot.tokens
            .extend_from_slice(&tokens[..tokens.len().min(self.ctx_per_slot)]);
    }

    /// Forgets every slot's content (busy slots keep running).
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.tokens.clear();
        }
    }
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(start: u32, n: usize) -> Vec<u32> {
        (start..start + n as u32).collect()
    }

    #[test]
    fn a_released_slot_is_reused_for_a_prompt_extending_its_content() {
        let mut c = SlotCache::new(2, 4096, DEFAULT_SIMILARITY);
        let (id, cached) = c.acquire(&tokens(0, 100)).expect("idle");
        assert_eq!(cached, 0);
        c.release(id, &tokens(0, 120));
        let (again, cached) = c.acquire(&tokens(0, 200)).expect("idle");
        assert_eq!((again, cached), (id, 120));
        assert!(c.is_processing(id));
    }

    #[test]
    fn an_identical_prompt_recomputes_its_last_token() {
        let mut c = SlotCache::new(1, 4096, DEFAULT_SIMILARITY);
        let (id, _) = c.acquire(&tokens(0, 50)).expect("idle");
        c.release(id, &tokens(0, 50));
        assert_eq!(c.acquire(&tokens(0, 50)), Some((id, 49)));
    }

    #[test]
    fn the_slot_sharing_the_most_is_chosen_over_the_least_recently_used() {
        let mut c = SlotCache::new(3, 4096, DEFAULT_SIMILARITY);
        for start in [0, 1000, 2000] {
            let (id, _) = c.acquire(&tokens(start, 100)).expect("idle");
            c.release(id, &tokens(start, 100));
        }
        // Slot 0 is the least recently used; slot 1 holds the prompt's prefix.
        let mut prompt = tokens(1000, 60);
        prompt.extend(tokens(5000, 40));
        assert_eq!(c.acquire(&prompt), Some((1, 60)));
    }

    #[test]
    fn below_the_similarity_the_least_recently_used_slot_is_evicted() {
        let mut c = SlotCache::new(2, 4096, 0.5);
        let (a, _) = c.acquire(&tokens(0, 100)).expect("idle");
        c.release(a, &tokens(0, 100));
        let (b, _) = c.acquire(&tokens(1000, 100)).expect("idle");
        c.release(b, &tokens(1000, 100));
        // Shares 40% with slot b, under the 0.5 similarity: slot a (older) is taken, and
        // its content does not match.
        let mut prompt = tokens(1000, 40);
        prompt.extend(tokens(7000, 60));
        assert_eq!(c.acquire(&prompt), Some((a, 0)));
    }

    #[test]
    fn with_every_slot_busy_a_request_waits() {
        let mut c = SlotCache::new(2, 4096, DEFAULT_SIMILARITY);
        let (a, _) = c.acquire(&tokens(0, 10)).expect("idle");
        let (b, _) = c.acquire(&tokens(0, 10)).expect("idle");
        assert_ne!(a, b);
        assert_eq!(c.acquire(&tokens(0, 10)), None);
        c.release(b, &tokens(0, 12));
        assert_eq!(c.acquire(&tokens(0, 20)), Some((b, 12)));
    }

    #[test]
    fn a_slot_keeps_at_most_its_context_and_usage_counts_held_tokens() {
        let mut c = SlotCache::new(2, 100, DEFAULT_SIMILARITY);
        let (a, _) = c.acquire(&tokens(0, 10)).expect("idle");
        c.release(a, &tokens(0, 150));
        assert!((c.usage() - 0.5).abs() < 1e-9, "{}", c.usage());
        c.clear();
        assert_eq!(c.usage(), 0.0);
    }
}
