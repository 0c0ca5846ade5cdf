//! Approximate mode: the index filled from our own routing decisions.
//!
//! A backend that publishes no KV events is assumed to hold a prompt's blocks from the
//! moment it served the prompt until [`DEFAULT_TTL_S`] after their last use, within the
//! capacity the router learned from the engine (vLLM's `cache_config_info`, llama.cpp's
//! `/props`, or the declared one), passed to [`crate::KvIndex::record`]. Dynamo's
//! approximate router uses the same 120 s TTL; the GIE scorer's per-server LRU of 31,250
//! blocks is the default capacity.

use parking_lot::RwLock;

use super::index::Index;

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
