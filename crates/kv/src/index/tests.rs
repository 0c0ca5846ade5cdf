//! Index behaviour: lookups, references, eviction, tiers, and a model check.

use std::collections::{HashMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn index_with(slots: usize) -> Index {
    let mut index = Index::new(16, None);
    for _ in 0..slots {
        index.add_slot(None).expect("free slot");
    }
    index
}

fn depths(index: &Index, keys: &[u64], slots: &[u8]) -> Vec<u32> {
    let mut out = vec![u32::MAX; slots.len()];
    index.lookup(keys, slots, &mut out);
    out
}

#[test]
fn lookup_counts_leading_blocks_per_backend() {
    let mut index = index_with(3);
    let keys = [10, 11, 12, 13];
    for (i, &k) in keys.iter().enumerate() {
        index.store_engine(0, k, Tier::Gpu, 100 + i as u64);
    }
    // Slot 1 holds blocks 0 and 2 only: its leading run is one block.
    index.store_engine(1, 10, Tier::Gpu, 1);
    index.store_engine(1, 12, Tier::Gpu, 3);
    assert_eq!(depths(&index, &keys, &[0, 1, 2]), vec![64, 16, 0]);
    // The output follows the caller's order, and unknown slots get 0.
    assert_eq!(depths(&index, &keys, &[2, 9, 0, 200]), vec![0, 0, 64, 0]);
    assert!(!index.holds(200, 10));
}

#[test]
fn removals_take_back_one_reference_each() {
    let mut index = index_with(1);
    index.store_engine(0, 7, Tier::Gpu, 70);
    index.store_engine(0, 7, Tier::Gpu, 70);
    assert!(index.remove_engine(0, 70, Tier::Gpu));
    assert!(index.holds(0, 7), "one physical copy is left");
    assert!(index.remove_engine(0, 70, Tier::Gpu));
    assert!(!index.holds(0, 7));
    assert!(!index.remove_engine(0, 70, Tier::Gpu), "unknown hash");
    assert_eq!(index.entries(), 0);
    assert_eq!(index.distinct_keys(), 0);
}

#[test]
fn engine_hashes_resolve_to_keys_per_backend() {
    let mut index = index_with(2);
    index.store_engine(0, 5, Tier::Gpu, 99);
    assert_eq!(index.engine_key(0, 99), Some(5));
    assert_eq!(
        index.engine_key(1, 99),
        None,
        "engine hashes are per backend"
    );
}

#[test]
fn clear_forgets_one_backend_only() {
    let mut index = index_with(2);
    for k in 0..100 {
        index.store_engine(0, k, Tier::Gpu, k);
        index.store_engine(1, k, Tier::Gpu, k);
    }
    index.clear(0);
    assert_eq!(index.len(0), 0);
    assert_eq!(index.len(1), 100);
    assert_eq!(index.entries(), 100);
    assert_eq!(index.engine_key(0, 3), None);
    assert_eq!(index.engine_key(1, 3), Some(3));
}

#[test]
fn capacity_evicts_least_recently_used() {
    let mut index = Index::new(16, None);
    let slot = index.add_slot(Some(3)).expect("free slot");
    for k in 1..=3 {
        index.store_engine(slot, k, Tier::Gpu, k);
    }
    index.store_engine(slot, 1, Tier::Gpu, 1); // 1 is now the most recent
    index.store_engine(slot, 4, Tier::Gpu, 4); // evicts 2
    assert!(index.holds(slot, 1));
    assert!(!index.holds(slot, 2));
    assert!(index.holds(slot, 3) && index.holds(slot, 4));
    index.set_capacity(slot, 1);
    assert_eq!(index.len(slot), 1);
    assert!(index.holds(slot, 4));
}

#[test]
fn tier_weights_discount_offloaded_blocks() {
    let weights = TierWeights {
        gpu: 1.0,
        cpu: 0.5,
        disk: 0.25,
    };
    let mut index = Index::new(16, Some(weights));
    let slot = index.add_slot(None).expect("free slot");
    index.store_engine(slot, 1, Tier::Gpu, 1);
    index.store_engine(slot, 2, Tier::Cpu, 2);
    assert_eq!(depths(&index, &[1, 2], &[slot]), vec![16 + 8]);
    // The block comes back to GPU: full weight again.
    assert!(index.add_tier(slot, 2, Tier::Gpu));
    assert_eq!(depths(&index, &[1, 2], &[slot]), vec![32]);
    // Leaving GPU again, the CPU copy still counts.
    assert!(index.remove_engine(slot, 2, Tier::Gpu));
    assert_eq!(depths(&index, &[1, 2], &[slot]), vec![24]);
}

#[test]
fn unweighted_lookup_counts_any_tier() {
    let mut index = index_with(1);
    index.store_engine(0, 1, Tier::Disk, 1);
    assert_eq!(depths(&index, &[1], &[0]), vec![16]);
    assert_eq!(Tier::from_medium(Some("cpu_tier1")), Tier::Cpu);
    assert_eq!(Tier::from_medium(Some("GPU")), Tier::Gpu);
    assert_eq!(Tier::from_medium(None), Tier::Gpu);
    assert_eq!(Tier::from_medium(Some("LMCACHE")), Tier::Disk);
}

#[test]
fn approximate_blocks_expire_by_last_use() {
    let mut index = index_with(1);
    index.store_approx(0, 1, 10);
    index.store_approx(0, 2, 20);
    index.store_approx(0, 1, 30); // used again: survives the cutoff
    index.expire(0, 25);
    assert!(index.holds(0, 1));
    assert!(!index.holds(0, 2));
}

#[test]
fn slots_are_bounded_and_reused() {
    let mut index = index_with(MAX_BACKENDS);
    assert_eq!(index.add_slot(None), Err(IndexError::Full));
    index.store_engine(5, 1, Tier::Gpu, 1);
    index.remove_slot(5);
    assert!(!index.holds(5, 1));
    assert_eq!(index.add_slot(None), Ok(5));
    assert_eq!(index.len(5), 0);
}

/// Random stores, removals, clears and evictions checked against a naive model.
#[test]
fn matches_a_naive_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut index = Index::new(16, None);
    let slots: Vec<u8> = (0..4)
        .map(|_| index.add_slot(None).expect("slot"))
        .collect();
    // (slot, key) -> refs; engine hash = key * 31 + slot.
    let mut model: HashMap<(u8, u64), u32> = HashMap::new();
    for step in 0..20_000 {
        let slot = slots[rng.random_range(0..slots.len())];
        let key = rng.random_range(0..300u64);
        match rng.random_range(0..10) {
            0..=5 => {
                index.store_engine(slot, key, Tier::Gpu, key * 31);
                *model.entry((slot, key)).or_default() += 1;
            }
            6..=8 => {
                let known = model.contains_key(&(slot, key));
                assert_eq!(
                    index.remove_engine(slot, key * 31, Tier::Gpu),
                    known,
                    "step {step}"
                );
                if let Some(r) = model.get_mut(&(slot, key)) {
                    *r -= 1;
                    if *r == 0 {
                        model.remove(&(slot, key));
                    }
                }
            }
            _ if step % 97 == 0 => {
                index.clear(slot);
                model.retain(|(s, _), _| *s != slot);
            }
            _ => {}
        }
    }
    let distinct: HashSet<u64> = model.keys().map(|(_, k)| *k).collect();
    assert_eq!(index.entries(), model.len());
    assert_eq!(index.distinct_keys(), distinct.len());
    for key in 0..300 {
        for &slot in &slots {
            assert_eq!(index.holds(slot, key), model.contains_key(&(slot, key)));
            assert_eq!(
                index.engine_key(slot, key * 31).is_some(),
                model.contains_key(&(slot, key))
            );
        }
    }
}

/// Found by the `kv_event` fuzz target: a medium whose third byte falls inside a
/// multi-byte character panicked the ingest thread on a `str` slice.
#[test]
fn a_non_ascii_medium_names_a_tier_without_panicking() {
    assert_eq!(Tier::from_medium(Some("G\0\u{29a};iP")), Tier::Disk);
    assert_eq!(Tier::from_medium(Some("cp\u{29a}")), Tier::Disk);
    assert_eq!(Tier::from_medium(Some("CPU_PINNED")), Tier::Cpu);
    assert_eq!(Tier::from_medium(Some("Gpu")), Tier::Gpu);
    assert_eq!(Tier::from_medium(Some("\u{29a}")), Tier::Disk);
}
