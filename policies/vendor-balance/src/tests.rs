use super::*;
use switchyard_policy_sdk::testing;

/// Backends 0 and 1 are nvidia h100s, 2 is an amd mi300x, 3 an intel gaudi3.
fn mixed_fleet() -> Fleet {
    let mut fleet = testing::fleet(4);
    fleet.backends[2].vendor = "amd".into();
    fleet.backends[2].accelerator = "mi300x".into();
    fleet.backends[3].vendor = "intel".into();
    fleet.backends[3].accelerator = "gaudi3".into();
    fleet
}

fn running(index: u32, running: u32) -> Candidate {
    Candidate {
        running,
        ..testing::candidate(index)
    }
}

fn score(config: &str, candidates: &[Candidate], fleet: &Fleet) -> Vec<f32> {
    testing::score::<VendorBalance>(config, &testing::request(100), candidates, fleet)
}

#[test]
fn under_served_vendor_scores_highest() {
    // nvidia holds 8 of 10 running requests, amd 2, intel 0; equal targets (1/3 each).
    let cands = [running(0, 4), running(1, 4), running(2, 2), running(3, 0)];
    let s = score("", &cands, &mixed_fleet());
    assert_eq!(s[0], s[1], "same vendor, same score");
    assert!(s[3] > s[2] && s[2] > s[0], "{s:?}");
    assert_eq!(s[3], 1.0);
}

#[test]
fn group_at_its_target_scores_half() {
    let cands = [running(0, 3), running(2, 1)];
    let s = score(
        r#"{"targets": {"NVIDIA": 0.75, "amd": 0.25}}"#,
        &cands,
        &mixed_fleet(),
    );
    assert_eq!(s, vec![0.5, 0.5]);
}

#[test]
fn unlisted_group_scores_zero() {
    let cands = [running(0, 0), running(3, 0)];
    let s = score(r#"{"targets": {"nvidia": 1}}"#, &cands, &mixed_fleet());
    assert_eq!(s, vec![1.0, 0.0]);
}

#[test]
fn groups_by_accelerator() {
    let mut fleet = mixed_fleet();
    fleet.backends[1].accelerator = "h200".into();
    // h100 holds all the load, h200 none: h200 is under-served.
    let cands = [running(0, 5), running(1, 0)];
    let s = score(r#"{"key": "accelerator"}"#, &cands, &fleet);
    assert!(s[1] > s[0], "{s:?}");
}

#[test]
fn cost_mode_prefers_cheapest_token() {
    let mut fleet = mixed_fleet();
    // $/token: b0 4/100, b1 2/100 (cheapest), b2 3/50 = 6/100, b3 unknown price.
    for (b, (cost, speed)) in [(4.0, 100.0), (2.0, 100.0), (3.0, 50.0), (0.0, 80.0)]
        .into_iter()
        .enumerate()
    {
        fleet.backends[b].cost_per_hour = cost;
        fleet.backends[b].decode_tokens_per_s = speed;
    }
    let cands: Vec<Candidate> = (0..4).map(testing::candidate).collect();
    let s = score(r#"{"mode": "cost"}"#, &cands, &fleet);
    assert!((s[0] - 0.5).abs() < 1e-6, "{s:?}");
    assert_eq!(s[1], 1.0);
    assert!((s[2] - 1.0 / 3.0).abs() < 1e-6, "{s:?}");
    assert_eq!(s[3], 0.5, "unknown price scores unknown_cost_score");
}

#[test]
fn measured_decode_speed_beats_declared() {
    let mut fleet = mixed_fleet();
    for b in &mut fleet.backends[..2] {
        b.cost_per_hour = 2.0;
        b.decode_tokens_per_s = 100.0;
    }
    // Backend 1 measures twice as fast as declared: half the price per token.
    let fast = Candidate {
        decode_tokens_per_s: 200.0,
        ..testing::candidate(1)
    };
    let s = score(
        r#"{"mode": "cost"}"#,
        &[testing::candidate(0), fast],
        &fleet,
    );
    assert_eq!(s, vec![0.5, 1.0]);
}

#[test]
fn bad_targets_are_rejected() {
    assert!(VendorBalance::configure(r#"{"targets": {"amd": -1}}"#).is_err());
    assert!(VendorBalance::configure(r#"{"targets": {"amd": 0}}"#).is_err());
    assert!(VendorBalance::configure(r#"{"mode": "cheapest"}"#).is_err());
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = VendorBalance::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
