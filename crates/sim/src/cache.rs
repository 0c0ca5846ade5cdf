//! The block prefix cache: fixed-size KV blocks, shared by hash, evicted least recently
//! freed first (vLLM's `BlockPool` and free-block queue).
//!
//! A *block* holds `block_size` tokens of KV. A full block gets a chained hash (its parent's
//! hash and its tokens), under which later requests find and share it. Blocks in use have a
//! reference count; a block whose count drops to zero keeps its contents and hash and joins
//! the tail of the free queue, so it can still be hit until it is reused from the head.

use std::collections::HashMap;

use xxhash_rust::xxh3::Xxh3;

/// Index of a physical block.
pub type BlockId = u32;

/// A change to the cache's contents, in the terms vLLM's KV events use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// Blocks became full and hashed.
    Stored {
        /// Hashes of the stored blocks, in chain order.
        hashes: Vec<u64>,
        /// Hash of the block before the first one, `None` at the start of a sequence.
        parent: Option<u64>,
        /// All tokens of the stored blocks, concatenated.
        token_ids: Vec<u32>,
    },
    /// Blocks were evicted to be reused.
    Removed {
        /// Hashes of the evicted blocks.
        hashes: Vec<u64>,
    },
    /// Every cached block was dropped.
    Cleared,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    hash: Option<u64>,
    refs: u32,
    prev: u32,
    next: u32,
}

/// The block pool of one engine.
///
/// Owns every physical block, the hash → blocks map of cached blocks and the free queue.
/// Promises: a block is in the free queue exactly when its reference count is zero; a hash
/// maps only to blocks that still hold it; every hash that leaves the map is reported as
/// [`CacheEvent::Removed`] (when events are recorded).
#[derive(Debug)]
pub struct BlockCache {
    block_size: usize,
    seed: u64,
    blocks: Vec<Block>,
    by_hash: HashMap<u64, Vec<BlockId>>,
    head: u32,
    tail: u32,
    num_free: usize,
}

impl BlockCache {
    /// A pool of `num_blocks` empty blocks of `block_size` tokens; hashes are seeded with
    /// `seed` (vLLM's `NONE_HASH`, here a number).
    pub fn new(num_blocks: usize, block_size: usize, seed: u64) -> Self {
        let n = num_blocks.min(NIL as usize - 1);
        let blocks = (0..n)
            .map(|i| Block {
                hash: None,
                refs: 0,
                prev: if i == 0 { NIL } else { i as u32 - 1 },
                next: if i + 1 == n { NIL } else { i as u32 + 1 },
            })
            .collect();
        Self {
            block_size: block_size.max(1),
            seed,
            blocks,
            by_hash: HashMap::new(),
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n as u32 - 1 },
            num_free: n,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Total physical blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks not referenced by any running sequence (cached or empty).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks referenced by running sequences, in [0, 1] (vLLM's
    /// `kv_cache_usage_perc`).
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.num_free as f64 / self.blocks.len() as f64
    }

    /// Hash of the block after `parent` holding `tokens`.
    pub fn hash_block(&self, parent: Option<u64>, tokens: &[u32]) -> u64 {
        let mut h = Xxh3::with_seed(self.seed);
        h.update(&parent.unwrap_or(self.seed).to_le_bytes());
        for t in tokens {
            h.update(&t.to_le_bytes());
        }
        h.digest()
    }

    /// The parent hash of the first block of a prompt with cache salt `salt`.
    pub fn salt_root(&self, salt: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(salt.as_bytes(), self.seed ^ 0x5a17)
    }

    /// Hashes of the full blocks of `tokens`, from `start` blocks on, chained from
    /// `parent` (the hash of block `start - 1`).
    pub fn hash_chain(&self, tokens: &[u32], start: usize, parent: Option<u64>) -> Vec<u64> {
        let mut parent = parent;
        tokens
            .chunks_exact(self.block_size)
            .skip(start)
            .map(|chunk| {
                let h = self.hash_block(parent, chunk);
                parent = Some(h);
                h
            })
            .collect()
    }

    /// How many leading `hashes` are cached.
    pub fn count_hits(&self, hashes: &[u64]) -> usize {
        hashes
            .iter()
            .take_while(|h| self.by_hash.contains_key(h))
            .count()
    }

    /// Takes a reference on a cached block for each of the leading cached `hashes` and
    /// returns them, in order.
    pub fn acquire_hits(&mut self, hashes: &[u64]) -> Vec<BlockId> {
        let mut out = Vec::new();
        for h in hashes {
            let Some(&id) = self.by_hash.get(h).and_then(|ids| ids.first()) else {
                break;
            };
            self.take_ref(id);
            out.push(id);
        }
        out
    }

    /// Takes `n` blocks from the head of the free queue, evicting what they held, or
    /// `None` (taking nothing) if fewer than `n` are free.
    pub fn allocate(
        &mut self,
        n: usize,
        events: Option<&mut Vec<CacheEvent>>,
    ) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut removed = Vec::new();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let id = self.head;
            self.take_ref(id);
            if let Some(h) = self.blocks[id as usize].hash.take() {
                self.forget(h, id);
                removed.push(h);
            }
            out.push(id);
        }
        if let Some(events) = events
            && !removed.is_empty()
        {
            events.push(CacheEvent::Removed { hashes: removed });
        }
        Some(out)
    }

    /// Marks a full, referenced block as holding `hash`, making it findable.
    pub fn commit(&mut self, id: BlockId, hash: u64) {
        let block = &mut self.blocks[id as usize];
        debug_assert!(block.refs > 0 && block.hash.is_none());
        block.hash = Some(hash);
        self.by_hash.entry(hash).or_default().push(id);
    }

    /// Drops one reference on each block. Blocks reaching zero join the free queue's tail
    /// in reverse order, so a sequence's last blocks are evicted before its first ones.
    pub fn release(&mut self, ids: &[BlockId]) {
        for &id in ids.iter().rev() {
            let block = &mut self.blocks[id as usize];
            block.refs = block.refs.saturating_sub(1);
            if block.refs == 0 {
                self.push_free(id);
            }
        }
    }

    /// Forgets every cached hash (vLLM's `reset_prefix_cache`); blocks in use keep their
    /// contents but can no longer be hit.
    pub fn clear(&mut self, events: Option<&mut Vec<CacheEvent>>) {
        self.by_hash.clear();
        for b in &mut self.blocks {
            b.hash = None;
        }
        if let Some(events) = events {
            events.push(CacheEvent::Cleared);
        }
    }

    /// Every cached hash with the number of physical blocks holding it.
    pub fn cached_hashes(&self) -> HashMap<u64, usize> {
        self.by_hash
            .iter()
            .map(|(h, ids)| (*h, ids.len()))
            .collect()
    }

    fn forget(&mut self, hash: u64, id: BlockId) {
        if let Some(ids) = self.by_hash.get_mut(&hash) {
            ids.retain(|&b| b != id);
            if ids.is_empty() {
                self.by_hash.remove(&hash);
            }
        }
    }

    fn take_ref(&mut self, id: BlockId) {
        if self.blocks[id as usize].refs == 0 {
            self.unlink(id);
        }
        self.blocks[id as usize].refs += 1;
    }

    fn unlink(&mut self, id: BlockId) {
        let Block { prev, next, .. } = self.blocks[id as usize];
        match prev {
            NIL => self.head = next,
            p => self.blocks[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.blocks[n as usize].prev = prev,
        }
        self.num_free -= 1;
    }

    fn push_free(&mut self, id: BlockId) {
        let tail = self.tail;
        let block = &mut self.blocks[id as usize];
        block.prev = tail;
        block.next = NIL;
        match tail {
            NIL => self.head = id,
            t => self.blocks[t as usize].next = id,
        }
        self.tail = id;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(start: u32, n: usize) -> Vec<u32> {
        (start..start + n as u32).collect()
    }

    /// Allocates, commits and releases a sequence, as a finished request would.
    fn cache_sequence(
        cache: &mut BlockCache,
        toks: &[u32],
        events: &mut Vec<CacheEvent>,
    ) -> Vec<u64> {
        let hashes = cache.hash_chain(toks, 0, None);
        let ids = cache.allocate(hashes.len(), Some(events)).expect("room");
        for (id, h) in ids.iter().zip(&hashes) {
            cache.commit(*id, *h);
        }
        cache.release(&ids);
        hashes
    }

    #[test]
    fn a_released_sequence_is_still_hit() {
        let mut cache = BlockCache::new(8, 4, 1);
        let mut events = Vec::new();
        let hashes = cache_sequence(&mut cache, &tokens(0, 12), &mut events);
        assert_eq!(cache.count_hits(&hashes), 3);
        assert_eq!(cache.usage(), 0.0);
        let ids = cache.acquire_hits(&hashes[..2]);
        assert_eq!(ids.len(), 2);
        assert!((cache.usage() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn chained_hashes_differ_by_parent() {
        let cache = BlockCache::new(1, 4, 1);
        let a = cache.hash_chain(&[1, 2, 3, 4, 5, 6, 7, 8], 0, None);
        let b = cache.hash_chain(&[9, 9, 9, 9, 5, 6, 7, 8], 0, None);
        assert_ne!(a[1], b[1]);
        assert_eq!(
            cache.hash_chain(&[1, 2, 3, 4, 5, 6, 7, 8], 1, Some(a[0])),
            vec![a[1]]
        );
    }

    #[test]
    fn memory_pressure_evicts_least_recently_freed_blocks_and_reports_them() {
        let mut cache = BlockCache::new(6, 4, 1);
        let mut events = Vec::new();
        let first = cache_sequence(&mut cache, &tokens(0, 12), &mut events);
        let second = cache_sequence(&mut cache, &tokens(100, 12), &mut events);
        assert_eq!(cache.cached_hashes().len(), 6);
        // A third sequence of 3 blocks must evict 3 blocks: the first sequence's, which were
        // freed first, last block first.
        let third = cache_sequence(&mut cache, &tokens(200, 12), &mut events);
        assert_eq!(cache.count_hits(&first), 0);
        assert_eq!(cache.count_hits(&second), 3);
        assert_eq!(cache.count_hits(&third), 3);
        let removed: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                CacheEvent::Removed { hashes } => Some(hashes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let mut expected = first.clone();
        expected.reverse();
        assert_eq!(removed, expected);
    }

    #[test]
    fn blocks_in_use_are_never_evicted() {
        let mut cache = BlockCache::new(4, 4, 1);
        let held = cache.allocate(3, None).expect("room");
        assert!(cache.allocate(2, None).is_none());
        assert_eq!(cache.num_free(), 1);
        cache.release(&held);
        assert_eq!(cache.allocate(4, None).map(|v| v.len()), Some(4));
    }

    #[test]
    fn a_hit_block_leaves_the_free_queue_and_survives_eviction() {
        let mut cache = BlockCache::new(4, 4, 1);
        let mut events = Vec::new();
        let hashes = cache_sequence(&mut cache, &tokens(0, 8), &mut events);
        let held = cache.acquire_hits(&hashes[..1]);
        let all_free = cache.allocate(3, Some(&mut events)).expect("three free");
        assert!(!all_free.contains(&held[0]));
        assert_eq!(cache.count_hits(&hashes), 1);
    }
}
