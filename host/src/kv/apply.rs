//! Applying decoded event batches to one backend's part of the index.
//!
//! Engine blocks map to our blocks by the ratio of block sizes: an engine block of
//! `k x block_size` tokens becomes `k` of our blocks, filed under [`part_hash`]es of the
//! engine hash so removals and parent links still resolve. Engine block sizes that are
//! not a multiple of ours are counted as unsupported.

use super::event::{Batch, BlockStored, Event};
use super::exact::ExactHasher;
use super::index::{Index, part_hash};
use super::key;
use super::stats::Counters;

/// What applying needs to know about one backend beyond the index.
#[derive(Debug)]
pub struct Target<'a> {
    /// The backend's slot in its model's index.
    pub slot: u8,
    /// The model name (the key root when an event names no LoRA adapter).
    pub model: &'a str,
    /// The backend's counters.
    pub counters: &'a Counters,
    /// The exact-mode hasher, when the operator asked for cross-checks.
    pub exact: Option<&'a ExactHasher>,
}

/// Our blocks per engine block, learned from the last `BlockStored` (removals do not
/// say); 1 until one arrives.
#[derive(Debug, Clone, Copy)]
pub struct Ratio(u32);

impl Default for Ratio {
    fn default() -> Self {
        Ratio(1)
    }
}

/// Applies every event of `batch` in order.
pub fn apply_batch(index: &mut Index, t: &Target<'_>, ratio: &mut Ratio, batch: &Batch) {
    Counters::add(&t.counters.skipped_events, u64::from(batch.skipped));
    if let Some(rank) = batch.dp_rank {
        t.counters.set_dp_rank(rank);
    }
    for event in &batch.events {
        match event {
            Event::Stored(stored) => store(index, t, ratio, stored),
            Event::Removed { hashes, tier } => {
                for &h in hashes {
                    let mut known = false;
                    for part in 0..ratio.0 {
                        known |= index.remove_engine(t.slot, part_hash(h, part), *tier);
                    }
                    let counter = if known {
                        &t.counters.blocks_removed
                    } else {
                        &t.counters.unknown_hash
                    };
                    Counters::add(counter, 1);
                }
            }
            Event::Cleared => {
                index.clear(t.slot);
                Counters::add(&t.counters.clears, 1);
            }
        }
        Counters::add(&t.counters.events_applied, 1);
    }
    Counters::add(&t.counters.batches_applied, 1);
}

fn store(index: &mut Index, t: &Target<'_>, ratio: &mut Ratio, ev: &BlockStored) {
    if !ev.is_full_attention {
        Counters::add(&t.counters.unsupported_events, 1);
        return;
    }
    if ev.tokens.is_empty() {
        // An offload event of older engines: a tier update of blocks we know.
        for &h in &ev.hashes {
            let mut known = false;
            for part in 0..ratio.0 {
                known |= index.add_tier(t.slot, part_hash(h, part), ev.tier);
            }
            if !known {
                Counters::add(&t.counters.unknown_hash, 1);
            }
        }
        return;
    }
    let ours = index.block_size();
    let engine_block = match ev.block_size {
        0 => ev.tokens.len() / ev.hashes.len().max(1),
        b => b as usize,
    };
    if engine_block == 0
        || engine_block % ours as usize != 0
        || ev.tokens.len() != engine_block * ev.hashes.len()
    {
        Counters::add(&t.counters.unsupported_events, 1);
        return;
    }
    *ratio = Ratio((engine_block / ours as usize) as u32);
    let mut parent = match ev.parent {
        None => key::root(ev.lora_name.as_deref().unwrap_or(t.model), None),
        Some(p) => match index.engine_key(t.slot, part_hash(p, ratio.0 - 1)) {
            Some(k) => k,
            None => {
                Counters::add(&t.counters.unknown_parent, 1);
                return;
            }
        },
    };
    if let Some(exact) = t.exact
        && let Some(ok) = exact.check(ev)
    {
        Counters::add(&t.counters.exact_checked, 1);
        if !ok {
            Counters::add(&t.counters.exact_mismatches, 1);
        }
    }
    let mut scratch = Vec::with_capacity(ours as usize * 4);
    for (h, block) in ev.hashes.iter().zip(ev.tokens.chunks_exact(engine_block)) {
        for (part, ours_block) in block.chunks_exact(ours as usize).enumerate() {
            parent = key::chain(parent, ours_block, &mut scratch);
            index.store_engine(t.slot, parent, ev.tier, part_hash(*h, part as u32));
        }
    }
    Counters::add(
        &t.counters.blocks_stored,
        u64::from(ratio.0) * ev.hashes.len() as u64,
    );
}
