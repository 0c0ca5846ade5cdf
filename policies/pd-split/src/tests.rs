use super::*;
use switchyard_policy_sdk::testing;

/// b0: decode-capable `any` backend, slow prefill (2k tok/s). b1: fast `prefill` backend
/// (20k tok/s). b2: `decode`-only backend, slow prefill. All declare 128 KiB of KV per
/// token and a 45 GB/s link.
fn fleet() -> Fleet {
    let mut fleet = testing::fleet(3);
    for b in &mut fleet.backends {
        b.kv_bytes_per_token = 131_072;
        b.kv_link_gbytes_per_s = 45.0;
    }
    fleet.backends[1].role = Role::Prefill;
    fleet.backends[2].role = Role::Decode;
    fleet
}

fn cand(index: u32, prefill_tokens_per_s: f32) -> Candidate {
    Candidate {
        prefill_tokens_per_s,
        decode_tokens_per_s: 100.0,
        ..testing::candidate(index)
    }
}

fn decide(config: &str, prompt: u32, candidates: &[Candidate], fleet: &Fleet) -> Decision {
    // Through the harness first: it checks the placement names candidates only.
    let req = testing::request(prompt);
    let placement = testing::place::<PdSplit>(config, &req, candidates, fleet);
    let decision = PdSplit::configure(config)
        .expect("valid config")
        .decide(&req, candidates, fleet);
    assert_eq!(placement, decision.placement);
    decision
}

const SPLIT_0_1: Placement = Placement::Split {
    prefill: BackendId(1),
    decode: BackendId(0),
};

#[test]
fn long_uncached_prompt_goes_to_the_fast_prefill_backend() {
    let d = decide("", 16_384, &[cand(0, 2_000.0), cand(1, 20_000.0)], &fleet());
    assert_eq!(d.placement, SPLIT_0_1);
    // Local 16384 / 2000 = 8.19 s; remote 0.82 s + 16384 x 128 KiB / 45 GB/s = 0.048 s.
    let Why::Faster { local_ms, split_ms } = d.why else {
        panic!("{:?}", d.why)
    };
    assert!((local_ms - 8192.0).abs() < 1.0, "{local_ms}");
    assert!((split_ms - 866.9).abs() < 1.0, "{split_ms}");
}

#[test]
fn short_prompt_stays_local() {
    let d = decide("", 1_000, &[cand(0, 2_000.0), cand(1, 20_000.0)], &fleet());
    assert_eq!(d.placement, Placement::Single(BackendId(0)));
    assert_eq!(d.why, Why::FewUncached { uncached: 1_000 });
}

#[test]
fn cached_prefix_on_the_decode_backend_leaves_little_to_split() {
    let warm = Candidate {
        cached_prefix_tokens: 15_000,
        ..cand(0, 2_000.0)
    };
    let d = decide("", 16_384, &[warm, cand(1, 20_000.0)], &fleet());
    assert_eq!(d.placement, Placement::Single(BackendId(0)));
    assert_eq!(d.why, Why::FewUncached { uncached: 1_384 });
}

#[test]
fn slow_link_makes_splitting_lose() {
    let mut fleet = fleet();
    fleet.backends[1].kv_link_gbytes_per_s = 0.2;
    // The transfer alone: 16384 x 128 KiB / 0.2 GB/s = 10.7 s > 8.2 s local.
    let d = decide("", 16_384, &[cand(0, 2_000.0), cand(1, 20_000.0)], &fleet);
    assert_eq!(d.placement, Placement::Single(BackendId(0)));
    assert!(matches!(d.why, Why::SmallGain { .. }), "{:?}", d.why);
}

#[test]
fn busy_prefill_backend_makes_splitting_lose() {
    let queued = Candidate {
        in_flight_prefill_tokens: 200_000,
        ..cand(1, 20_000.0)
    };
    let d = decide("", 16_384, &[cand(0, 2_000.0), queued], &fleet());
    assert_eq!(d.placement, Placement::Single(BackendId(0)));
}

#[test]
fn gain_ratio_is_a_threshold() {
    // Local 16384 / 4000 = 4.1 s vs split 0.87 s: a 4.7x gain.
    let cands = [cand(0, 4_000.0), cand(1, 20_000.0)];
    assert_eq!(
        decide(r#"{"min_gain_ratio": 4.5}"#, 16_384, &cands, &fleet()).placement,
        SPLIT_0_1
    );
    assert_eq!(
        decide(r#"{"min_gain_ratio": 5}"#, 16_384, &cands, &fleet()).placement,
        Placement::Single(BackendId(0))
    );
}

#[test]
fn unknown_link_never_splits_unless_configured() {
    let mut fleet = fleet();
    for b in &mut fleet.backends {
        b.kv_link_gbytes_per_s = 0.0;
    }
    let cands = [cand(0, 2_000.0), cand(1, 20_000.0)];
    assert_eq!(
        decide("", 16_384, &cands, &fleet).why,
        Why::NoPrefillBackend
    );
    let d = decide(r#"{"kv_link_gbytes_per_s": 45}"#, 16_384, &cands, &fleet);
    assert_eq!(d.placement, SPLIT_0_1);
}

#[test]
fn unknown_local_speed_stays_single() {
    let d = decide("", 16_384, &[cand(0, 0.0), cand(1, 20_000.0)], &fleet());
    assert_eq!(d.why, Why::LocalSpeedUnknown);
}

#[test]
fn decode_choice_follows_cache_then_load() {
    // b0 and b2 can decode; b2 holds most of the prompt.
    let warm = Candidate {
        cached_prefix_tokens: 12_000,
        ..cand(2, 2_000.0)
    };
    let d = decide(
        "",
        16_384,
        &[cand(0, 2_000.0), cand(1, 20_000.0), warm],
        &fleet(),
    );
    assert_eq!(
        d.placement,
        Placement::Split {
            prefill: BackendId(1),
            decode: BackendId(2)
        }
    );
    // Same cache, but b0 is busy: b2 decodes.
    let busy = Candidate {
        running: 30,
        ..cand(0, 2_000.0)
    };
    let d = decide("", 100, &[busy, cand(2, 2_000.0)], &fleet());
    assert_eq!(d.placement, Placement::Single(BackendId(2)));
}

#[test]
fn roles_are_respected() {
    // Only b1 (prefill-only) and b2 (decode-only): b2 decodes, b1 may prefill.
    let d = decide("", 16_384, &[cand(1, 20_000.0), cand(2, 2_000.0)], &fleet());
    assert_eq!(
        d.placement,
        Placement::Split {
            prefill: BackendId(1),
            decode: BackendId(2)
        }
    );
    // A decode-only backend is never the prefill leg.
    let d = decide("", 16_384, &[cand(0, 2_000.0), cand(2, 50_000.0)], &fleet());
    assert_eq!(d.why, Why::NoPrefillBackend);
    // Nothing can decode: 503.
    let d = decide("", 16_384, &[cand(1, 20_000.0)], &fleet());
    assert!(matches!(d.placement, Placement::Reject { status: 503, .. }));
}

#[test]
fn decisions_are_logged_when_asked() {
    let _ = testing::take_logs();
    let req = testing::request(1_000);
    let cands = [cand(0, 2_000.0)];
    testing::place::<PdSplit>(r#"{"log_decisions": true}"#, &req, &cands, &fleet());
    assert_eq!(
        testing::take_logs(),
        vec!["Debug: single: 1000 uncached tokens, below the split minimum"]
    );
    testing::place::<PdSplit>("", &req, &cands, &fleet());
    assert!(testing::take_logs().is_empty());
}

#[test]
fn bad_config_lists_every_problem() {
    let err = PdSplit::configure(r#"{"min_gain_ratio": 0.5, "half_load": 0}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "min_gain_ratio: 0.5 must be at least 1; half_load: 0 must be positive"
    );
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = PdSplit::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
