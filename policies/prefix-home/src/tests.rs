use std::collections::{HashMap, HashSet};

use switchyard_policy_sdk::testing;

use super::*;

const HEAD: u32 = 64;

fn group(key: u64) -> Option<PrefixGroup> {
    Some(PrefixGroup {
        key,
        head_tokens: HEAD,
    })
}

/// The fleet index the policy picks for a request in group `key` (`None`: no group).
fn chosen(config: &str, key: Option<u64>, candidates: &[Candidate]) -> u32 {
    testing::set_prefix_group(key.and_then(group));
    let fleet = testing::fleet(candidates.len() as u32);
    let scores = testing::score::<PrefixHome>(config, &testing::request(1024), candidates, &fleet);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap();
    assert_eq!(
        scores.iter().filter(|&&s| s == scores[best]).count(),
        1,
        "one clear choice: {scores:?}"
    );
    candidates[best].backend.0
}

fn idle(n: u32) -> Vec<Candidate> {
    (0..n).map(testing::candidate).collect()
}

/// Every backend holds the shared head; `warm` also holds `extra` tokens past it.
fn with_head(n: u32, warm: Option<(u32, u32)>) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            cached_prefix_tokens: HEAD + warm.filter(|w| w.0 == i).map_or(0, |w| w.1),
            ..testing::candidate(i)
        })
        .collect()
}

#[test]
fn cold_groups_get_stable_homes_spread_over_the_fleet() {
    let mut homes = HashMap::new();
    for key in 0..64u64 {
        let home = chosen("", Some(key), &with_head(4, None));
        assert_eq!(chosen("", Some(key), &with_head(4, None)), home, "stable");
        homes.insert(key, home);
    }
    let mut per_backend = [0u32; 4];
    for &h in homes.values() {
        per_backend[h as usize] += 1;
    }
    assert!(
        per_backend.iter().all(|&n| (8..=24).contains(&n)),
        "64 groups spread over 4 backends: {per_backend:?}"
    );
}

#[test]
fn the_shared_head_is_not_affinity() {
    // Backend 3 holds a few tokens more than the others, all within the shared head.
    for key in 0..16u64 {
        let home = chosen("", Some(key), &with_head(4, None));
        let mut cands = with_head(4, None);
        cands
            .iter_mut()
            .for_each(|c| c.cached_prefix_tokens = HEAD - 16);
        cands[3].cached_prefix_tokens = HEAD;
        assert_eq!(chosen("", Some(key), &cands), home, "group {key}");
    }
}

#[test]
fn a_warm_prompt_goes_where_its_longest_prefix_is() {
    for key in 0..16u64 {
        let home = chosen("", Some(key), &with_head(4, None));
        let elsewhere = (home + 1) % 4;
        assert_eq!(
            chosen("", Some(key), &with_head(4, Some((elsewhere, 512)))),
            elsewhere
        );
        // Warm on two: the longer prefix wins.
        let mut cands = with_head(4, Some((elsewhere, 512)));
        cands[home as usize].cached_prefix_tokens = HEAD + 256;
        assert_eq!(chosen("", Some(key), &cands), elsewhere);
        // Equally warm: the home wins.
        cands[home as usize].cached_prefix_tokens = HEAD + 512;
        assert_eq!(chosen("", Some(key), &cands), home);
    }
}

#[test]
fn an_overloaded_home_spills_to_a_stable_second_choice() {
    for key in 0..16u64 {
        let home = chosen("", Some(key), &idle(4));
        let mut cands = with_head(4, Some((home, 512)));
        cands[home as usize].in_flight_requests = 6;
        let second = chosen("", Some(key), &cands);
        assert_ne!(second, home, "over the bound: 6 + 1 > ceil(1.25 * 7 / 4)");
        assert_eq!(chosen("", Some(key), &cands), second, "stable");
        // The second choice is the group's own: other groups homed on `home` spill
        // elsewhere too, not all onto one backend.
        cands[home as usize].in_flight_requests = 1;
        assert_eq!(
            chosen("", Some(key), &cands),
            home,
            "within the bound again"
        );
    }
    let spills: HashSet<u32> = (0..64u64)
        .filter_map(|key| {
            let home = chosen("", Some(key), &idle(4));
            (home == 0).then(|| {
                let mut cands = idle(4);
                cands[0].in_flight_requests = 6;
                chosen("", Some(key), &cands)
            })
        })
        .collect();
    assert!(spills.len() >= 2, "spilled groups spread: {spills:?}");
}

#[test]
fn a_home_with_every_slot_busy_is_passed_over() {
    for key in 0..16u64 {
        let home = chosen("", Some(key), &idle(4));
        // One request in flight on each of two slots: within the load bound, but a third
        // would queue and then take a slot from a conversation between its turns.
        let mut cands = idle(4);
        cands[home as usize].in_flight_requests = 2;
        cands[home as usize].kv_usage = 1.0;
        let second = chosen("", Some(key), &cands);
        assert_ne!(second, home, "a full KV cache does not fit");
        cands[home as usize].kv_usage = 0.5;
        assert_eq!(chosen("", Some(key), &cands), home, "a slot free again");
    }
}

#[test]
fn the_bound_has_a_floor_and_follows_the_factor() {
    let key = 7;
    let home = chosen("", Some(key), &idle(4));
    let mut cands = idle(4);
    cands[home as usize].waiting = 1;
    assert_eq!(
        chosen("", Some(key), &cands),
        home,
        "min_bound 4 admits a second"
    );
    assert_ne!(
        chosen(r#"{"min_bound": 1}"#, Some(key), &cands),
        home,
        "1 + 1 > ceil(1.25 * 2 / 4) = 1"
    );
    assert_eq!(
        chosen(r#"{"min_bound": 1, "load_factor": 4.0}"#, Some(key), &cands),
        home,
        "ceil(4 * 2 / 4) = 2"
    );
}

#[test]
fn requests_without_a_group_spread_by_id() {
    let fleet = testing::fleet(4);
    testing::set_prefix_group(None);
    let picks: HashSet<usize> = (0..32u64)
        .map(|id| {
            let req = Request {
                id,
                ..testing::request(8)
            };
            let s = testing::score::<PrefixHome>("", &req, &idle(4), &fleet);
            s.iter().position(|&x| x == 1.0).unwrap()
        })
        .collect();
    assert_eq!(picks.len(), 4, "{picks:?}");
}

#[test]
fn bad_configs_are_refused() {
    assert!(PrefixHome::configure(r#"{"load_factor": 0.5}"#).is_err());
    assert!(PrefixHome::configure(r#"{"home": 1}"#).is_err());
    assert!(PrefixHome::configure("").is_ok());
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = PrefixHome::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}

/// The fleet index one instance picks for group `key` on idle candidates.
fn pick(p: &PrefixHome, key: u64, candidates: &[Candidate]) -> u32 {
    testing::set_prefix_group(group(key));
    let fleet = testing::fleet(candidates.len() as u32);
    let scores = p.score_all(&testing::request(1024), candidates, &fleet);
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].get().total_cmp(&scores[b].get()))
        .unwrap();
    candidates[best].backend.0
}

#[test]
fn homes_are_balanced_by_groups_and_kept() {
    let p = PrefixHome::configure("").unwrap();
    let cands = with_head(4, None);
    let homes: Vec<u32> = (0..8u64).map(|k| pick(&p, 100 + k, &cands)).collect();
    let mut per_backend = [0; 4];
    homes.iter().for_each(|&h| per_backend[h as usize] += 1);
    assert_eq!(
        per_backend, [2; 4],
        "eight groups, two per backend: {homes:?}"
    );
    // Cold again (nothing cached), each group still goes home.
    for (k, &home) in homes.iter().enumerate() {
        assert_eq!(pick(&p, 100 + k as u64, &cands), home);
    }
    // Rendezvous alone would have piled some: the bound did the spreading.
    let unbounded: Vec<u32> = (0..8u64)
        .map(|k| chosen("", Some(100 + k), &cands))
        .collect();
    let mut counts = [0; 4];
    unbounded.iter().for_each(|&h| counts[h as usize] += 1);
    assert_ne!(counts, [2; 4], "the keys are a fair test: {unbounded:?}");
}

#[test]
fn a_spill_leaves_the_home_where_it_is() {
    let p = PrefixHome::configure("").unwrap();
    let idle = with_head(4, None);
    let home = pick(&p, 42, &idle);
    let mut busy = idle.clone();
    busy[home as usize].in_flight_requests = 9;
    let second = pick(&p, 42, &busy);
    assert_ne!(second, home);
    assert_eq!(pick(&p, 42, &busy), second, "a stable second choice");
    assert_eq!(
        pick(&p, 42, &idle),
        home,
        "the home is kept through the spill"
    );
}
