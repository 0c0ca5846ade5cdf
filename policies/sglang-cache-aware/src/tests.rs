use super::*;
use switchyard_policy_sdk::testing;

fn worker(index: u32, in_flight: u32, cached: u32) -> Candidate {
    Candidate {
        in_flight_requests: in_flight,
        cached_prefix_tokens: cached,
        ..testing::candidate(index)
    }
}

fn place(config: &str, candidates: &[Candidate]) -> Placement {
    testing::place::<SglangCacheAware>(
        config,
        &testing::request(1000),
        candidates,
        &testing::fleet(8),
    )
}

#[test]
fn good_match_wins_when_balanced() {
    let p = place("", &[worker(0, 0, 0), worker(1, 10, 500)]);
    assert_eq!(p, Placement::Single(BackendId(1)));
}

#[test]
fn match_at_threshold_is_not_enough() {
    // 300 / 1000 = 0.3 is not above 0.3: least-loaded wins.
    let p = place("", &[worker(0, 0, 0), worker(1, 10, 300)]);
    assert_eq!(p, Placement::Single(BackendId(0)));
    let p = place("", &[worker(0, 0, 0), worker(1, 10, 301)]);
    assert_eq!(p, Placement::Single(BackendId(1)));
}

#[test]
fn imbalance_needs_both_absolute_and_relative_gap() {
    // 100 - 20 = 80 > 64 and 100 > 1.5 * 20: imbalanced, cache ignored.
    let p = place("", &[worker(0, 20, 0), worker(1, 100, 1000)]);
    assert_eq!(p, Placement::Single(BackendId(0)));
    // 200 - 140 = 60 <= 64: balanced, the full match wins.
    let p = place("", &[worker(0, 140, 0), worker(1, 200, 1000)]);
    assert_eq!(p, Placement::Single(BackendId(1)));
    // 300 - 201 = 99 > 64 but 300 <= 1.5 * 201: balanced.
    let p = place("", &[worker(0, 201, 0), worker(1, 300, 1000)]);
    assert_eq!(p, Placement::Single(BackendId(1)));
}

#[test]
fn kv_overload_trigger_is_off_by_default_and_works_when_set() {
    let hot = Candidate {
        kv_usage: 0.95,
        ..worker(1, 5, 1000)
    };
    assert_eq!(
        place("", &[worker(0, 0, 0), hot]),
        Placement::Single(BackendId(1))
    );
    assert_eq!(
        place(
            r#"{"overload_token_usage_threshold": 0.9}"#,
            &[worker(0, 0, 0), hot]
        ),
        Placement::Single(BackendId(0))
    );
}

#[test]
fn ties_go_to_less_loaded_then_lower_index() {
    let p = place(
        "",
        &[worker(3, 4, 800), worker(1, 2, 800), worker(2, 2, 800)],
    );
    assert_eq!(p, Placement::Single(BackendId(1)));
    let p = place("", &[worker(5, 1, 0), worker(4, 1, 0)]);
    assert_eq!(p, Placement::Single(BackendId(4)));
}

#[test]
fn prefill_only_backends_are_skipped() {
    let mut fleet = testing::fleet(2);
    fleet.backends[1].role = Role::Prefill;
    let p = testing::place::<SglangCacheAware>(
        "",
        &testing::request(1000),
        &[worker(0, 9, 0), worker(1, 0, 1000)],
        &fleet,
    );
    assert_eq!(p, Placement::Single(BackendId(0)));
    fleet.backends[0].role = Role::Prefill;
    let p = testing::place::<SglangCacheAware>(
        "",
        &testing::request(1000),
        &[worker(0, 9, 0), worker(1, 0, 1000)],
        &fleet,
    );
    assert!(matches!(p, Placement::Reject { status: 503, .. }));
}

#[test]
fn out_of_range_config_is_rejected() {
    assert!(SglangCacheAware::configure(r#"{"cache_threshold": 1.5}"#).is_err());
    assert!(SglangCacheAware::configure(r#"{"balance_rel_threshold": 0.5}"#).is_err());
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = SglangCacheAware::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
