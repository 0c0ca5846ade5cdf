//! Applying decoded event batches to one backend's part of the index.
//!
//! Engine blocks map to our blocks by the ratio of block sizes: an engine block of
//! `k x block_size` tokens becomes `k` of our blocks, filed under [`part_hash`]es of the
//! engine hash so removals and parent links still resolve. An engine block size that is
//! not the model's times 1..=[`MAX_BLOCK_RATIO`], or an event with more hashes than the
//! configured cap, is rejected before the index is touched.
//!
//! Work under the write lock is bounded: events are checked (and hashed, in exact mode)
//! before the lock is taken, and the index is then changed [`CHUNK_OPS`] operations at a
//! time, handing the lock fairly to waiting lookups between chunks.

use parking_lot::{RwLock, RwLockWriteGuard};

use super::event::{Batch, BlockStored, Event};
use super::exact::ExactHasher;
use super::index::{Index, part_hash};
use super::key;
use super::stats::{Counters, Reject};

/// Our blocks per engine block at most; a larger engine block is rejected, so one event
/// costs at most `max_hashes_per_event` x this many index operations.
pub const MAX_BLOCK_RATIO: usize = 64;

/// Index operations done under one hold of the write lock; between two chunks waiting
/// lookups take the lock first, so none waits behind a long batch or clear.
pub const CHUNK_OPS: usize = 256;

/// Blocks whose stores are prefetched together: enough to overlap their cache misses,
/// few enough that the first lines are still cached when the stores reach them.
const PREFETCH_WINDOW: usize = 16;

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
    /// Most hashes one event may carry (`kv.max_hashes_per_event`).
    pub max_hashes: usize,
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

/// The write side of an index lock, handed over fairly every [`CHUNK_OPS`] operations.
pub struct Writer<'a> {
    guard: RwLockWriteGuard<'a, Index>,
    ops: usize,
}

impl<'a> Writer<'a> {
    /// Takes the write lock.
    pub fn new(lock: &'a RwLock<Index>) -> Self {
        Writer {
            guard: lock.write(),
            ops: 0,
        }
    }

    /// The index, for one more operation.
    fn op(&mut self) -> &mut Index {
        self.ops += 1;
        if self.ops > CHUNK_OPS {
            self.yield_to_waiters();
            self.ops = 1;
        }
        &mut self.guard
    }

    /// Lets every thread waiting for the lock have it first (a no-op without waiters).
    fn yield_to_waiters(&mut self) {
        RwLockWriteGuard::bump(&mut self.guard);
    }

    /// Forgets every block `slot` holds, a chunk at a time.
    pub fn clear(&mut self, slot: u8) {
        while !self.guard.clear_some(slot, CHUNK_OPS) {
            self.yield_to_waiters();
        }
        self.ops = 0;
    }
}

/// What the checks made of one event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Apply,
    /// Counted as unsupported (and as applied), not indexed.
    Unsupported,
    /// Counted as rejected.
    Rejected,
}

/// Applies every event of `batch` in order; see the module doc for the bounds.
pub fn apply_batch(lock: &RwLock<Index>, t: &Target<'_>, ratio: &mut Ratio, batch: &Batch) {
    Counters::add(&t.counters.skipped_events, u64::from(batch.skipped));
    if let Some(rank) = batch.dp_rank {
        t.counters.set_dp_rank(rank);
    }
    let ours = lock.read().block_size() as usize;
    let verdicts: Vec<Verdict> = batch.events.iter().map(|e| check(ours, t, e)).collect();
    let mut w = Writer::new(lock);
    for (event, verdict) in batch.events.iter().zip(verdicts) {
        match (verdict, event) {
            (Verdict::Rejected, _) => continue,
            (Verdict::Unsupported, _) => {}
            (Verdict::Apply, Event::Stored(stored)) => store(&mut w, ours, t, ratio, stored),
            (Verdict::Apply, Event::Removed { hashes, tier }) => {
                for &h in hashes {
                    let mut known = false;
                    for part in 0..ratio.0 {
                        known |= w.op().remove_engine(t.slot, part_hash(h, part), *tier);
                    }
                    let counter = if known {
                        &t.counters.blocks_removed
                    } else {
                        &t.counters.unknown_hash
                    };
                    Counters::add(counter, 1);
                }
            }
            (Verdict::Apply, Event::Cleared) => {
                w.clear(t.slot);
                Counters::add(&t.counters.clears, 1);
            }
        }
        Counters::add(&t.counters.events_applied, 1);
    }
    Counters::add(&t.counters.batches_applied, 1);
}

/// The engine block size a `BlockStored` with tokens implies: its own, or (older
/// schemas) its tokens per hash.
fn engine_block(ev: &BlockStored) -> usize {
    match ev.block_size {
        0 => ev.tokens.len() / ev.hashes.len().max(1),
        b => b as usize,
    }
}

/// The checks that need no index, done before the lock is taken: the caps, the block
/// size, the token count, and the exact mode's hashing.
fn check(ours: usize, t: &Target<'_>, event: &Event) -> Verdict {
    let hashes = match event {
        Event::Stored(s) => s.hashes.len(),
        Event::Removed { hashes, .. } => hashes.len(),
        Event::Cleared => 0,
    };
    if hashes > t.max_hashes {
        t.counters.reject(
            Reject::TooManyHashes,
            &format_args!("{hashes} hashes in one event, at most {}", t.max_hashes),
        );
        return Verdict::Rejected;
    }
    let Event::Stored(ev) = event else {
        return Verdict::Apply;
    };
    let unsupported = || {
        Counters::add(&t.counters.unsupported_events, 1);
        Verdict::Unsupported
    };
    if !ev.is_full_attention {
        return unsupported();
    }
    if ev.tokens.is_empty() {
        return Verdict::Apply; // a tier update: no block size involved
    }
    let engine_block = engine_block(ev);
    if engine_block == 0 {
        return unsupported(); // fewer tokens than hashes
    }
    if !engine_block.is_multiple_of(ours) || engine_block / ours > MAX_BLOCK_RATIO {
        t.counters.reject(
            Reject::BlockSize,
            &format_args!(
                "engine block size {engine_block} is not the model's {ours} times 1..={MAX_BLOCK_RATIO}"
            ),
        );
        return Verdict::Rejected;
    }
    if engine_block.checked_mul(ev.hashes.len()) != Some(ev.tokens.len()) {
        return unsupported();
    }
    if let Some(exact) = t.exact
        && let Some(ok) = exact.check(ev)
    {
        Counters::add(&t.counters.exact_checked, 1);
        if !ok {
            Counters::add(&t.counters.exact_mismatches, 1);
        }
    }
    Verdict::Apply
}

/// Stores a checked `BlockStored`.
fn store(w: &mut Writer<'_>, ours: usize, t: &Target<'_>, ratio: &mut Ratio, ev: &BlockStored) {
    if ev.tokens.is_empty() {
        // An offload event of older engines: a tier update of blocks we know.
        for &h in &ev.hashes {
            let mut known = false;
            for part in 0..ratio.0 {
                known |= w.op().add_tier(t.slot, part_hash(h, part), ev.tier);
            }
            if !known {
                Counters::add(&t.counters.unknown_hash, 1);
            }
        }
        return;
    }
    let engine_block = engine_block(ev);
    // NB: at most MAX_BLOCK_RATIO, checked.
    *ratio = Ratio((engine_block / ours) as u32);
    let mut parent = match ev.parent {
        None => key::root(ev.lora_name.as_deref().unwrap_or(t.model), None),
        Some(p) => match w.op().engine_key(t.slot, part_hash(p, ratio.0 - 1)) {
            Some(k) => k,
            None => {
                Counters::add(&t.counters.unknown_parent, 1);
                return;
            }
        },
    };
    // Keys are chained first, a window at a time, so the window's cache misses are
    // started together (`prefetch_stores`) before any store waits on one.
    let mut window = Vec::with_capacity(PREFETCH_WINDOW);
    let parts = ev
        .hashes
        .iter()
        .zip(ev.tokens.chunks_exact(engine_block))
        .flat_map(|(h, block)| {
            block
                .chunks_exact(ours)
                .enumerate()
                .map(move |(part, tokens)| (part_hash(*h, part as u32), tokens))
        });
    let mut parts = parts.peekable();
    while parts.peek().is_some() {
        window.clear();
        for (engine, tokens) in parts.by_ref().take(PREFETCH_WINDOW) {
            parent = key::chain(parent, tokens);
            window.push((parent, engine));
        }
        w.guard.prefetch_stores(t.slot, &window);
        for &(key, engine) in &window {
            w.op().store_engine(t.slot, key, ev.tier, engine);
        }
    }
    Counters::add(
        &t.counters.blocks_stored,
        u64::from(ratio.0) * ev.hashes.len() as u64,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::time::Instant;

    use super::*;
    use crate::index::Tier;

    /// An index of 16-token blocks with one slot.
    fn index() -> RwLock<Index> {
        let mut index = Index::new(16, None);
        assert_eq!(index.add_slot(None), Ok(0));
        RwLock::new(index)
    }

    fn target(counters: &Counters, max_hashes: usize) -> Target<'_> {
        Target {
            slot: 0,
            model: "m",
            counters,
            exact: None,
            max_hashes,
        }
    }

    /// A `BlockStored` of `blocks` engine blocks of `block_size` tokens, from the root.
    fn stored(blocks: u64, block_size: u32) -> Event {
        Event::Stored(BlockStored {
            hashes: (1..=blocks).collect(),
            parent: None,
            tokens: (0..blocks as u32 * block_size).collect(),
            block_size,
            lora_name: None,
            tier: Tier::Gpu,
            is_full_attention: true,
        })
    }

    fn batch(events: Vec<Event>) -> Batch {
        Batch {
            ts: 0.0,
            events,
            dp_rank: None,
            skipped: 0,
        }
    }

    #[test]
    fn block_sizes_that_do_not_fit_the_model_are_rejected() {
        let (lock, counters) = (index(), Counters::default());
        let t = target(&counters, 1000);
        let mut ratio = Ratio::default();
        // Not a multiple of 16; and 65 x 16, past the ratio cap (one hash would then
        // cost 65 index operations in every later removal).
        for block_size in [24, 16 * (MAX_BLOCK_RATIO as u32 + 1)] {
            apply_batch(&lock, &t, &mut ratio, &batch(vec![stored(1, block_size)]));
        }
        assert_eq!(counters.rejected(Reject::BlockSize), 2);
        assert_eq!(lock.read().entries(), 0);
        assert_eq!(ratio.0, 1, "a rejected event teaches no ratio");
        apply_batch(&lock, &t, &mut ratio, &batch(vec![stored(2, 32)]));
        assert_eq!(
            lock.read().entries(),
            4,
            "2 engine blocks of 32 are 4 of ours"
        );
        assert_eq!(counters.rejected(Reject::BlockSize), 2);
    }

    #[test]
    fn an_event_with_too_many_hashes_is_rejected_and_the_batch_goes_on() {
        let (lock, counters) = (index(), Counters::default());
        let t = target(&counters, 4);
        let mut ratio = Ratio::default();
        let removal = Event::Removed {
            hashes: (0..5).collect(),
            tier: Tier::Gpu,
        };
        apply_batch(
            &lock,
            &t,
            &mut ratio,
            &batch(vec![stored(5, 16), removal, stored(4, 16)]),
        );
        assert_eq!(counters.rejected(Reject::TooManyHashes), 2);
        assert_eq!(lock.read().entries(), 4, "the third event applied");
        let s = counters.snapshot("b", "m", crate::Mode::Events, 0);
        assert_eq!((s.events_applied, s.bad_messages), (1, 0));
    }

    #[test]
    fn lookups_do_not_wait_behind_a_long_apply() {
        const BLOCKS: u64 = 60_000;
        let lock = Arc::new(index());
        let counters = Counters::default();
        let t = target(&counters, BLOCKS as usize);
        let mut ratio = Ratio::default();
        apply_batch(&lock, &t, &mut ratio, &batch(vec![stored(BLOCKS, 16)]));
        assert_eq!(lock.read().entries(), BLOCKS as usize);
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lock, done) = (lock.clone(), done.clone());
            std::thread::spawn(move || {
                let mut out = [0u32];
                let mut finished = Vec::new();
                while !done.load(Relaxed) {
                    lock.read().lookup(&[1], &[0], &mut out);
                    finished.push(Instant::now());
                }
                finished
            })
        };
        // Removing every block takes long under the lock, in chunks.
        let removal = Event::Removed {
            hashes: (1..=BLOCKS).collect(),
            tier: Tier::Gpu,
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let start = Instant::now();
        apply_batch(&lock, &t, &mut ratio, &batch(vec![removal]));
        let end = Instant::now();
        done.store(true, Relaxed);
        let finished = reader.join().expect("reader");
        assert_eq!(lock.read().entries(), 0);
        // The longest a lookup went without finishing while the removal ran.
        let mut last = start;
        let mut longest = std::time::Duration::ZERO;
        for &f in finished.iter().filter(|&&f| f > start) {
            longest = longest.max(f.min(end) - last);
            last = f;
        }
        longest = longest.max(end.saturating_duration_since(last));
        let took = end - start;
        assert!(
            longest < took / 3,
            "a lookup waited {longest:?} of a {took:?} apply"
        );
    }

    #[test]
    fn a_clear_is_done_in_chunks() {
        let lock = index();
        let counters = Counters::default();
        let t = target(&counters, 10_000);
        apply_batch(
            &lock,
            &t,
            &mut Ratio::default(),
            &batch(vec![stored(2000, 16)]),
        );
        let mut w = Writer::new(&lock);
        assert!(
            !w.guard.clear_some(0, CHUNK_OPS),
            "a chunk does not clear 2000"
        );
        w.clear(0);
        drop(w);
        assert_eq!(lock.read().entries(), 0);
    }
}
