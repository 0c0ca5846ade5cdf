//! The prefix index: which backend holds which block key, in which tier.
//!
//! [`Index`] owns, for one model, every (block key, backend) *entry*:
//!
//! - a key record per distinct key with a 64-bit mask of the backend slots holding it, so
//!   a lookup costs one probe per prompt block whatever the number of backends;
//! - an entry per (key, backend) with per-tier reference counts, a place in that
//!   backend's LRU list (capacity bound, approximate-mode TTL) and the engine block hash
//!   that announced it, so `BlockRemoved` and parent links resolve through the engine's
//!   own hash without reproducing it;
//! - three 4-byte-slot hash tables over those records (key, (key, backend), (backend,
//!   engine hash)).
//!
//! Memory per entry with no sharing between backends: 16 (key record) + 28 (entry) +
//! 3 x 4 / load bytes, i.e. about 60 bytes at the tables' typical load; keys held by
//! several backends share their record. `switchyard kv bench` measures it.
//!
//! NB: a model's index holds at most [`MAX_BACKENDS`] backends: a slot is a bit of the
//! key record's mask.

mod slab;
mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use slab::Slab;
use table::{MAX_ID, Table, mix};

/// Backends one model's index can hold at once.
pub const MAX_BACKENDS: usize = 64;

/// (block, backend) entries one model's index can hold (ids are 26 bits); stores beyond
/// it are refused.
pub const MAX_ENTRIES: usize = MAX_ID as usize;

const NIL: u32 = u32::MAX;

/// Entry flag: `Entry::engine` is an engine block hash (else a last-use stamp).
const HAS_ENGINE: u8 = 1;

/// Errors of the index.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexError {
    /// Every backend slot of the model's index is taken.
    #[error("a model's index holds at most {MAX_BACKENDS} backends")]
    Full,
}

/// Where a backend keeps a block: device memory, host memory or storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Accelerator memory (`medium` absent or `GPU`).
    Gpu = 0,
    /// Host memory (`CPU`, `CPU_TIER1`, `CPU_PINNED`, ...).
    Cpu = 1,
    /// Anything slower: disk or a remote store.
    Disk = 2,
}

impl Tier {
    /// The tier an event's `medium` names; compared case-insensitively, absent = GPU.
    pub fn from_medium(medium: Option<&str>) -> Self {
        match medium {
            None => Tier::Gpu,
            Some(m) if m.eq_ignore_ascii_case("gpu") => Tier::Gpu,
            // NB: bytes, not `str` slicing: an engine's medium need not be ASCII, and a
            // multi-byte character across byte 3 must not panic the ingest thread.
            Some(m)
                if m.as_bytes()
                    .get(..3)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"cpu")) =>
            {
                Tier::Cpu
            }
            Some(_) => Tier::Disk,
        }
    }
}

/// How much a cached block is worth per tier when counting cached-prefix tokens.
///
/// With weights, a backend's figure is the sum over its leading blocks of the best
/// tier's weight times the block size (llm-d's `LongestPrefix` scoring).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierWeights {
    /// Weight of a block in accelerator memory, in [0, 1]. Example: `gpu: 1.0`.
    pub gpu: f32,
    /// Weight of a block in host memory, in [0, 1]. Example: `cpu: 0.8`.
    pub cpu: f32,
    /// Weight of a block in storage, in [0, 1]. Example: `disk: 0.5`.
    pub disk: f32,
}

impl TierWeights {
    fn of(&self, tier: Tier) -> f32 {
        match tier {
            Tier::Gpu => self.gpu,
            Tier::Cpu => self.cpu,
            Tier::Disk => self.disk,
        }
    }
}

/// One distinct block key and the slots holding it in any tier.
#[derive(Clone, Copy, Debug)]
struct KeyRec {
    key: u64,
    held: u64,
}

/// One (key, backend) pair.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Entry {
    /// The engine block hash (with `HAS_ENGINE`) or the last-use stamp in seconds.
    engine: u64,
    rec: u32,
    /// Towards the most recently used entry of the slot.
    prev: u32,
    /// Towards the least recently used entry of the slot.
    next: u32,
    /// References per tier (saturating): stores minus removals.
    refs: [u8; 3],
    slot: u8,
    flags: u8,
}

impl Entry {
    fn best_tier(&self) -> Option<Tier> {
        let refs = self.refs;
        [Tier::Gpu, Tier::Cpu, Tier::Disk]
            .into_iter()
            .find(|t| refs[*t as usize] > 0)
    }
}

/// One backend's slot: its LRU list and capacity.
#[derive(Clone, Copy, Debug)]
struct Slot {
    live: bool,
    /// Most recently used entry.
    head: u32,
    /// Least recently used entry.
    tail: u32,
    len: u32,
    capacity: u32,
}

impl Slot {
    const FREE: Slot = Slot {
        live: false,
        head: NIL,
        tail: NIL,
        len: 0,
        capacity: u32::MAX,
    };
}

/// Which backends hold which block keys of one model; see the module doc.
///
/// Not synchronised: the owner wraps it in a lock (lookups take `&self`).
#[derive(Debug)]
pub struct Index {
    block_size: u32,
    weights: Option<TierWeights>,
    recs: Slab<KeyRec>,
    keys: Table,
    entries: Slab<Entry>,
    by_rec: Table,
    by_engine: Table,
    /// Per key record, the slots holding it only below GPU (kept for tier weights).
    lower: HashMap<u32, u64>,
    slots: Vec<Slot>,
}

/// A slot's bit in a key record's mask; 0 for a slot that cannot exist.
fn bit(slot: u8) -> u64 {
    1u64.checked_shl(u32::from(slot)).unwrap_or(0)
}

fn rec_hash(key: u64) -> u64 {
    mix(key)
}

fn entry_hash(rec: u32, slot: u8) -> u64 {
    mix((u64::from(rec) << 8) | u64::from(slot))
}

fn engine_hash(slot: u8, engine: u64) -> u64 {
    mix(engine ^ u64::from(slot).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The engine hash under which part `part` of an engine block is filed when an engine
/// block spans several of our blocks; part 0 is the engine's own hash.
pub fn part_hash(engine: u64, part: u32) -> u64 {
    if part == 0 {
        engine
    } else {
        mix(engine ^ u64::from(part))
    }
}

impl Index {
    /// An empty index for blocks of `block_size` tokens, optionally tier-weighted.
    pub fn new(block_size: u32, weights: Option<TierWeights>) -> Self {
        Self {
            block_size,
            weights,
            recs: Slab::new(),
            keys: Table::with_capacity(0),
            entries: Slab::new(),
            by_rec: Table::with_capacity(0),
            by_engine: Table::with_capacity(0),
            lower: HashMap::new(),
            slots: Vec::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Takes a free backend slot holding at most `capacity` blocks.
    ///
    /// # Errors
    ///
    /// [`IndexError::Full`] when [`MAX_BACKENDS`] slots are taken.
    pub fn add_slot(&mut self, capacity: Option<u32>) -> Result<u8, IndexError> {
        let slot = match self.slots.iter().position(|s| !s.live) {
            Some(i) => i,
            None if self.slots.len() < MAX_BACKENDS => {
                self.slots.push(Slot::FREE);
                self.slots.len() - 1
            }
            None => return Err(IndexError::Full),
        };
        self.slots[slot] = Slot {
            live: true,
            capacity: capacity.unwrap_or(u32::MAX),
            ..Slot::FREE
        };
        if capacity.is_some() {
            // Size the tables for every bounded slot at once: no rehash on the way.
            let bounded = self
                .slots
                .iter()
                .filter(|s| s.live && s.capacity != u32::MAX);
            let total = bounded.map(|s| s.capacity as usize).sum();
            self.reserve(total);
        }
        Ok(slot as u8)
    }

    /// Frees a slot and forgets every block it held.
    pub fn remove_slot(&mut self, slot: u8) {
        self.clear(slot);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Slot::FREE;
        }
    }

    /// Sets a slot's capacity in blocks, evicting its least recently used blocks beyond it.
    pub fn set_capacity(&mut self, slot: u8, capacity: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.capacity = capacity;
            self.evict_over_capacity(slot);
        }
    }

    /// Most blocks `slot` holds before its least recently used ones are forgotten.
    pub fn capacity(&self, slot: u8) -> u32 {
        self.slots.get(slot as usize).map_or(0, |s| s.capacity)
    }

    /// Sizes the tables for `entries` entries in all, so they do not rehash on the way.
    pub fn reserve(&mut self, entries: usize) {
        let (recs, ents) = (&self.recs, &self.entries);
        self.keys.reserve(entries, |r| rec_hash(recs.get(r).key));
        self.by_rec.reserve(entries, |e| {
            let e = ents.get(e);
            entry_hash(e.rec, e.slot)
        });
        self.by_engine.reserve(entries, |e| {
            let e = ents.get(e);
            engine_hash(e.slot, e.engine)
        });
    }

    /// Blocks a slot holds.
    pub fn len(&self, slot: u8) -> u32 {
        self.slots.get(slot as usize).map_or(0, |s| s.len)
    }

    /// (block, backend) entries over all slots.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Distinct block keys held by any slot.
    pub fn distinct_keys(&self) -> usize {
        self.keys.len()
    }

    /// Bytes allocated by the index's tables and records.
    pub fn memory_bytes(&self) -> usize {
        self.recs.bytes()
            + self.keys.bytes()
            + self.entries.bytes()
            + self.by_rec.bytes()
            + self.by_engine.bytes()
            + self.lower.capacity() * (size_of::<(u32, u64)>() + 1)
            + self.slots.capacity() * size_of::<Slot>()
    }

    fn find_rec(&self, key: u64) -> Option<u32> {
        self.keys
            .find(rec_hash(key), |r| self.recs.get(r).key == key)
    }

    fn find_entry(&self, rec: u32, slot: u8) -> Option<u32> {
        self.by_rec.find(entry_hash(rec, slot), |e| {
            let e = self.entries.get(e);
            e.rec == rec && e.slot == slot
        })
    }

    fn find_engine(&self, slot: u8, engine: u64) -> Option<u32> {
        self.by_engine.find(engine_hash(slot, engine), |e| {
            let e = self.entries.get(e);
            e.slot == slot && e.flags & HAS_ENGINE != 0 && e.engine == engine
        })
    }

    /// The block key an engine hash of `slot` stands for, if it is known.
    pub fn engine_key(&self, slot: u8, engine: u64) -> Option<u64> {
        self.find_engine(slot, engine)
            .map(|e| self.recs.get(self.entries.get(e).rec).key)
    }

    /// Whether `slot` holds `key` in any tier.
    pub fn holds(&self, slot: u8, key: u64) -> bool {
        self.find_rec(key)
            .is_some_and(|r| self.recs.get(r).held & bit(slot) != 0)
    }

    /// Starts loading what storing each `(key, engine)` of `slot` will touch first: the
    /// key's and the engine hash's table slots, the records new entries will reuse and
    /// the `by_rec` slots of the key records they will get.
    /// A batch of stores run after it overlaps its cache misses instead of taking them
    /// one at a time.
    pub fn prefetch_stores(&self, slot: u8, blocks: &[(u64, u64)]) {
        for &(key, engine) in blocks {
            self.keys.prefetch(rec_hash(key));
            self.by_engine.prefetch(engine_hash(slot, engine));
        }
        self.recs.prefetch_next(blocks.len());
        self.entries.prefetch_next(blocks.len());
        // NB: right when every key is new to the index, the common case of ingest; a
        // wrong guess costs one useless load.
        for rec in self.recs.upcoming(blocks.len()) {
            self.by_rec.prefetch(entry_hash(rec, slot));
        }
    }

    /// Records that `slot` holds `key` in `tier`, announced under the engine hash `engine`.
    ///
    /// A second store of the same block adds a reference (vLLM does not deduplicate);
    /// removals take them back one by one. Returns false for a slot not in use or a
    /// full index ([`MAX_ENTRIES`]).
    pub fn store_engine(&mut self, slot: u8, key: u64, tier: Tier, engine: u64) -> bool {
        let Some(e) = self.entry_for(slot, key) else {
            return false;
        };
        let entry = *self.entries.get(e);
        if entry.flags & HAS_ENGINE == 0 {
            let ent = self.entries.get_mut(e);
            ent.engine = engine;
            ent.flags |= HAS_ENGINE;
            let ents = &self.entries;
            self.by_engine.insert(engine_hash(slot, engine), e, |x| {
                let x = ents.get(x);
                engine_hash(x.slot, x.engine)
            });
        }
        // NB: a second engine hash for a key the slot already holds (different
        // extra keys on the engine side) is not filed; its removal is then unknown.
        self.add_ref(e, tier);
        self.evict_over_capacity(slot);
        true
    }

    /// Adds a tier reference to the block an engine hash names (an offload event).
    /// Returns false when the hash is unknown.
    pub fn add_tier(&mut self, slot: u8, engine: u64, tier: Tier) -> bool {
        match self.find_engine(slot, engine) {
            Some(e) => {
                self.add_ref(e, tier);
                true
            }
            None => false,
        }
    }

    /// Records that `slot` was sent a prompt with block `key` at `now_s` (approximate
    /// mode). Returns false for a slot not in use or a full index.
    pub fn store_approx(&mut self, slot: u8, key: u64, now_s: u64) -> bool {
        let Some(e) = self.entry_for(slot, key) else {
            return false;
        };
        let ent = self.entries.get_mut(e);
        ent.engine = now_s;
        if ent.refs[Tier::Gpu as usize] == 0 {
            self.add_ref(e, Tier::Gpu);
        } else {
            self.touch(e);
        }
        self.evict_over_capacity(slot);
        true
    }

    /// Forgets block `key` of `slot` when it was recorded in approximate mode (a block
    /// the engine announced stays). Returns whether it was forgotten.
    pub fn forget_approx(&mut self, slot: u8, key: u64) -> bool {
        let Some(e) = self.find_rec(key).and_then(|r| self.find_entry(r, slot)) else {
            return false;
        };
        if self.entries.get(e).flags & HAS_ENGINE != 0 {
            return false;
        }
        self.drop_entry(e);
        true
    }

    /// Forgets the approximate-mode blocks of `slot` last used before `cutoff_s`.
    pub fn expire(&mut self, slot: u8, cutoff_s: u64) {
        while let Some(tail) = self
            .slots
            .get(slot as usize)
            .map(|s| s.tail)
            .filter(|&t| t != NIL)
        {
            let e = *self.entries.get(tail);
            if e.flags & HAS_ENGINE != 0 || e.engine >= cutoff_s {
                break;
            }
            self.drop_entry(tail);
        }
    }

    /// Takes back one `tier` reference of the block `slot` announced as `engine`.
    /// Returns false when the hash is unknown.
    pub fn remove_engine(&mut self, slot: u8, engine: u64, tier: Tier) -> bool {
        let Some(e) = self.find_engine(slot, engine) else {
            return false;
        };
        let ent = self.entries.get_mut(e);
        let refs = &mut ent.refs[tier as usize];
        *refs = refs.saturating_sub(1);
        if ent.refs == [0; 3] {
            self.drop_entry(e);
        } else {
            self.update_lower(e);
        }
        true
    }

    /// Forgets every block `slot` holds.
    pub fn clear(&mut self, slot: u8) {
        self.clear_some(slot, usize::MAX);
    }

    /// Forgets up to `max` blocks of `slot` (most recent first); true once it holds none.
    pub fn clear_some(&mut self, slot: u8, max: usize) -> bool {
        for _ in 0..max {
            let Some(head) = self
                .slots
                .get(slot as usize)
                .map(|s| s.head)
                .filter(|&h| h != NIL)
            else {
                return true;
            };
            self.drop_entry(head);
        }
        self.len(slot) == 0
    }

    /// Fills `out[i]` with the cached-prefix tokens of `slots[i]` for a prompt whose
    /// block keys are `keys`: the leading blocks the slot holds, times the block size
    /// (tier-weighted when the index has weights). Slots not in use get 0.
    ///
    /// One probe per key, stopping once no asked slot is still matching.
    pub fn lookup(&self, keys: &[u64], slots: &[u8], out: &mut [u32]) {
        let mut want = 0u64;
        for &s in slots {
            if self.slots.get(s as usize).is_some_and(|s| s.live) {
                want |= 1 << s;
            }
        }
        let mut depth = [0u32; MAX_BACKENDS];
        let mut discount = [0f32; MAX_BACKENDS];
        let mut alive = want;
        let mut matched = 0;
        for &key in keys {
            if alive == 0 {
                break;
            }
            let rec = self.find_rec(key);
            let held = rec.map_or(0, |r| self.recs.get(r).held);
            let mut lost = alive & !held;
            while lost != 0 {
                depth[lost.trailing_zeros() as usize] = matched;
                lost &= lost - 1;
            }
            alive &= held;
            if let (Some(w), Some(r)) = (&self.weights, rec) {
                self.discount_lower(w, r, alive, &mut discount);
            }
            matched += 1;
        }
        while alive != 0 {
            depth[alive.trailing_zeros() as usize] = matched;
            alive &= alive - 1;
        }
        for (o, &s) in out.iter_mut().zip(slots) {
            *o = if want & bit(s) == 0 {
                0
            } else {
                let blocks = depth[s as usize] as f32 - discount[s as usize];
                let blocks = match self.weights {
                    Some(w) => blocks * w.gpu,
                    None => blocks,
                };
                (blocks * self.block_size as f32).round() as u32
            };
        }
    }

    /// Adds, for each alive slot holding key record `rec` below GPU, the weight it
    /// loses relative to a GPU block (in blocks, relative to `w.gpu`).
    fn discount_lower(&self, w: &TierWeights, rec: u32, alive: u64, discount: &mut [f32]) {
        let Some(&lower) = self.lower.get(&rec) else {
            return;
        };
        let mut bits = alive & lower;
        while bits != 0 {
            let slot = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            let tier = self
                .find_entry(rec, slot)
                .and_then(|e| self.entries.get(e).best_tier());
            if let Some(t) = tier.filter(|_| w.gpu > 0.0) {
                discount[slot as usize] += 1.0 - w.of(t) / w.gpu;
            }
        }
    }

    /// The entry of (`key`, `slot`), created (unreferenced, most recent) if missing;
    /// `None` for a slot not in use or an index at its [`MAX_ENTRIES`].
    fn entry_for(&mut self, slot: u8, key: u64) -> Option<u32> {
        if !self.slots.get(slot as usize).is_some_and(|s| s.live) {
            return None;
        }
        let rec = match self.find_rec(key) {
            Some(r) => {
                if let Some(e) = self.find_entry(r, slot) {
                    return Some(e);
                }
                r
            }
            None => {
                if self.recs.high_water() >= MAX_ENTRIES || self.entries.high_water() >= MAX_ENTRIES
                {
                    return None;
                }
                let r = self.recs.insert(KeyRec { key, held: 0 });
                let recs = &self.recs;
                self.keys
                    .insert(rec_hash(key), r, |x| rec_hash(recs.get(x).key));
                r
            }
        };
        if self.entries.high_water() >= MAX_ENTRIES {
            return None;
        }
        let e = self.entries.insert(Entry {
            engine: 0,
            rec,
            prev: NIL,
            next: NIL,
            refs: [0; 3],
            slot,
            flags: 0,
        });
        let ents = &self.entries;
        self.by_rec.insert(entry_hash(rec, slot), e, |x| {
            let x = ents.get(x);
            entry_hash(x.rec, x.slot)
        });
        self.recs.get_mut(rec).held |= 1 << slot;
        self.push_front(e);
        self.slots[slot as usize].len += 1;
        Some(e)
    }

    fn add_ref(&mut self, e: u32, tier: Tier) {
        let ent = self.entries.get_mut(e);
        let refs = &mut ent.refs[tier as usize];
        *refs = refs.saturating_add(1);
        self.update_lower(e);
        self.touch(e);
    }

    /// Keeps `lower` in step with an entry's tiers.
    fn update_lower(&mut self, e: u32) {
        let ent = *self.entries.get(e);
        let bit = 1u64 << ent.slot;
        let only_lower = ent.refs[Tier::Gpu as usize] == 0 && ent.refs != [0; 3];
        if only_lower {
            *self.lower.entry(ent.rec).or_insert(0) |= bit;
        } else if let Some(mask) = self.lower.get_mut(&ent.rec) {
            *mask &= !bit;
            if *mask == 0 {
                self.lower.remove(&ent.rec);
            }
        }
    }

    fn evict_over_capacity(&mut self, slot: u8) {
        while let Some(s) = self.slots.get(slot as usize).filter(|s| s.len > s.capacity) {
            let tail = s.tail;
            self.drop_entry(tail);
        }
    }

    /// Removes an entry from every structure; frees its key record if it was the last.
    fn drop_entry(&mut self, e: u32) {
        let ent = *self.entries.get(e);
        self.unlink(e);
        self.slots[ent.slot as usize].len -= 1;
        let ents = &self.entries;
        self.by_rec.remove(
            entry_hash(ent.rec, ent.slot),
            |x| x == e,
            |x| {
                let x = ents.get(x);
                entry_hash(x.rec, x.slot)
            },
        );
        if ent.flags & HAS_ENGINE != 0 {
            self.by_engine.remove(
                engine_hash(ent.slot, ent.engine),
                |x| x == e,
                |x| {
                    let x = ents.get(x);
                    engine_hash(x.slot, x.engine)
                },
            );
        }
        self.entries.remove(e);
        let bit = 1u64 << ent.slot;
        if let Some(mask) = self.lower.get_mut(&ent.rec) {
            *mask &= !bit;
            if *mask == 0 {
                self.lower.remove(&ent.rec);
            }
        }
        let rec = self.recs.get_mut(ent.rec);
        rec.held &= !bit;
        if rec.held == 0 {
            let key = rec.key;
            let recs = &self.recs;
            self.keys.remove(
                rec_hash(key),
                |x| x == ent.rec,
                |x| rec_hash(recs.get(x).key),
            );
            self.recs.remove(ent.rec);
        }
    }

    fn touch(&mut self, e: u32) {
        let slot = self.entries.get(e).slot as usize;
        if self.slots[slot].head != e {
            self.unlink(e);
            self.push_front(e);
        }
    }

    fn push_front(&mut self, e: u32) {
        let slot = self.entries.get(e).slot as usize;
        let head = self.slots[slot].head;
        {
            let ent = self.entries.get_mut(e);
            ent.prev = NIL;
            ent.next = head;
        }
        if head != NIL {
            self.entries.get_mut(head).prev = e;
        } else {
            self.slots[slot].tail = e;
        }
        self.slots[slot].head = e;
    }

    fn unlink(&mut self, e: u32) {
        let ent = *self.entries.get(e);
        let slot = ent.slot as usize;
        if ent.prev != NIL {
            self.entries.get_mut(ent.prev).next = ent.next;
        } else {
            self.slots[slot].head = ent.next;
        }
        if ent.next != NIL {
            self.entries.get_mut(ent.next).prev = ent.prev;
        } else {
            self.slots[slot].tail = ent.prev;
        }
    }
}
