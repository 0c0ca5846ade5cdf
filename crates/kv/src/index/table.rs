//! An open-addressing hash table of `u32` ids whose records live in a caller's slab.
//!
//! Each slot is 4 bytes: a 6-bit tag from the hash and a 26-bit id; the table hashes and
//! compares through closures over the caller's records, and the tag spares most of those
//! record reads on a probe. Linear probing, placement by multiply-shift
//! (`hash x len >> 64`, so any length works and growth can be 1.5x), backward-shift
//! deletion (no tombstones). Callers pass well-mixed hashes ([`mix`]).

/// Marks an empty slot.
const EMPTY: u32 = u32::MAX;

/// Bits of a slot holding the id.
const ID_BITS: u32 = 26;
const ID_MASK: u32 = (1 << ID_BITS) - 1;

/// Largest id a table can hold (the all-ones slot means empty).
pub(crate) const MAX_ID: u32 = ID_MASK - 1;

/// Load factor (in tenths) above which the table grows.
const MAX_LOAD_TENTHS: usize = 8;

fn slot_of(hash: u64, id: u32) -> u32 {
    ((hash as u32 & 0x3f) << ID_BITS) | id
}

/// A finaliser that spreads any 64-bit value over all bits (murmur3's fmix64).
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Asks the CPU to start loading the cache line of `value` (a no-op off x86-64): a
/// batch of probes whose addresses are known up front then waits for memory once,
/// not once per probe.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86-64 baseline, and a prefetch only hints the
        // cache: it never faults, reads nothing into the program, and `value` is valid.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A set of ids, probed by hash.
#[derive(Debug)]
pub(crate) struct Table {
    slots: Vec<u32>,
    len: usize,
}

impl Table {
    /// An empty table with room for `n` ids before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let slots = (n * 10 / MAX_LOAD_TENTHS).max(16);
        Self {
            slots: vec![EMPTY; slots],
            len: 0,
        }
    }

    /// Number of ids stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes allocated for slots.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u32>()
    }

    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    /// Starts loading the home slot of `hash` (see [`prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(&self.slots[self.home(hash)]);
    }

    /// The id whose record `eq` accepts, probing from `hash`'s home slot.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let n = self.slots.len();
        let mut i = self.home(hash);
        let tag = slot_of(hash, 0);
        loop {
            let slot = self.slots[i];
            if slot == EMPTY {
                return None;
            }
            if slot & !ID_MASK == tag && eq(slot & ID_MASK) {
                return Some(slot & ID_MASK);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Adds `id`, which must not be present; `rehash` gives any stored id's hash.
    pub(crate) fn insert(&mut self, hash: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        if (self.len + 1) * 10 > self.slots.len() * MAX_LOAD_TENTHS {
            self.resize(self.slots.len() * 3 / 2, &rehash);
        }
        self.place(hash, id);
        self.len += 1;
    }

    /// Sizes the table for `total` ids so it does not grow on the way there.
    pub(crate) fn reserve(&mut self, total: usize, rehash: impl Fn(u32) -> u64) {
        let want = total * 10 / MAX_LOAD_TENTHS + 1;
        if want > self.slots.len() {
            self.resize(want, &rehash);
        }
    }

    fn place(&mut self, hash: u64, id: u32) {
        let n = self.slots.len();
        let mut i = self.home(hash);
        while self.slots[i] != EMPTY {
            i += 1;
            if i == n {
                i = 0;
            }
        }
        self.slots[i] = slot_of(hash, id);
    }

    fn resize(&mut self, slots: usize, rehash: &impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots.max(16)]);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            let id = slot & ID_MASK;
            self.place(rehash(id), id);
        }
    }

    /// Removes the id `eq` accepts; returns it.
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        mut eq: impl FnMut(u32) -> bool,
        rehash: impl Fn(u32) -> u64,
    ) -> Option<u32> {
        let n = self.slots.len();
        let mut hole = self.home(hash);
        let tag = slot_of(hash, 0);
        loop {
            let slot = self.slots[hole];
            if slot == EMPTY {
                return None;
            }
            if slot & !ID_MASK == tag && eq(slot & ID_MASK) {
                break;
            }
            hole += 1;
            if hole == n {
                hole = 0;
            }
        }
        let removed = self.slots[hole] & ID_MASK;
        // Backward shift: pull later members of the run into the hole unless that would
        // put them before their home slot.
        let mut j = hole;
        loop {
            j += 1;
            if j == n {
                j = 0;
            }
            let slot = self.slots[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home(rehash(slot & ID_MASK));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(removed)
    }
}
