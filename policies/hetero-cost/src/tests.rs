use super::*;
use switchyard_policy_sdk::testing;

/// b0: an "h100" at $4/h, prefill 30k tok/s, decode 100 tok/s. b1: an "l40s" at $1/h,
/// prefill 11k tok/s, decode 26 tok/s. b2: price not configured.
fn fleet() -> Fleet {
    let mut fleet = testing::fleet(3);
    fleet.backends[0].cost_per_hour = 4.0;
    fleet.backends[1].cost_per_hour = 1.0;
    fleet.backends[1].accelerator = "l40s".into();
    fleet
}

fn h100() -> Candidate {
    Candidate {
        prefill_tokens_per_s: 30_000.0,
        decode_tokens_per_s: 100.0,
        ..testing::candidate(0)
    }
}

fn l40s() -> Candidate {
    Candidate {
        prefill_tokens_per_s: 11_000.0,
        decode_tokens_per_s: 26.0,
        ..testing::candidate(1)
    }
}

fn request(prompt: u32, max_tokens: u32, slo_ttft_ms: Option<u32>) -> Request {
    Request {
        max_tokens,
        slo_ttft_ms,
        ..testing::request(prompt)
    }
}

fn score(config: &str, req: &Request, candidates: &[Candidate]) -> Vec<f32> {
    testing::score::<HeteroCost>(config, req, candidates, &fleet())
}

#[test]
fn estimate_adds_queue_prefill_and_decode() {
    let c = Candidate {
        in_flight_prefill_tokens: 30_000,
        cached_prefix_tokens: 3_000,
        kv_usage: 0.5,
        ..h100()
    };
    let e = HeteroCost::default().estimate(&request(33_000, 100, None), &c, &fleet());
    // TTFT: (30000 queued + 30000 uncached) / 30000 = 2 s.
    assert_eq!(e.ttft_s, Some(2.0));
    // Decode: 100 / 100 tok/s x (1 + 0.5 x 3.5) = 2.75 s.
    assert!((e.completion_s.unwrap() - 4.75).abs() < 1e-5, "{e:?}");
    // Busy 1 s of prefill + 2.75 s of decode at $4/h.
    assert!(
        (e.cost.unwrap() - 4.0 / 3600.0 * 3.75).abs() < 1e-7,
        "{e:?}"
    );
}

#[test]
fn alpha_one_picks_the_fast_card_alpha_zero_the_cheap_one() {
    let req = request(4_000, 500, None);
    // Time: h100 0.13 + 5 s, l40s 0.36 + 19.2 s. Cost: h100 $0.0057, l40s $0.0054.
    let time = score(r#"{"alpha": 1}"#, &req, &[h100(), l40s()]);
    assert!(time[0] == 1.0 && time[1] < 0.3, "{time:?}");
    let cost = score(r#"{"alpha": 0}"#, &req, &[h100(), l40s()]);
    assert!(cost[1] == 1.0 && cost[0] < 1.0, "{cost:?}");
}

#[test]
fn cached_prefix_makes_a_slower_card_competitive() {
    let req = request(32_000, 10, None);
    let warm = Candidate {
        cached_prefix_tokens: 31_000,
        ..l40s()
    };
    // h100: 32000 / 30000 = 1.07 s prefill; warm l40s: 1000 / 11000 = 0.09 s.
    let s = score(r#"{"alpha": 1}"#, &req, &[h100(), warm]);
    assert!(s[1] > s[0], "{s:?}");
}

#[test]
fn missing_the_ttft_objective_scores_low() {
    let queued = Candidate {
        in_flight_prefill_tokens: 300_000,
        ..h100()
    };
    // queued h100: 10 s to first token; l40s: 0.36 s.
    let without = score("", &request(4_000, 100, None), &[queued, l40s()]);
    let with = score("", &request(4_000, 100, Some(1_000)), &[queued, l40s()]);
    assert!(
        (with[0] - without[0] * 0.1).abs() < 1e-6,
        "{without:?} {with:?}"
    );
    assert_eq!(
        with[1], without[1],
        "the backend meeting the objective is untouched"
    );
    let by_default = score(
        r#"{"default_slo_ttft_ms": 1000}"#,
        &request(4_000, 100, None),
        &[queued, l40s()],
    );
    assert_eq!(by_default, with);
}

#[test]
fn unknown_figures_score_neutral() {
    let unpriced = Candidate {
        backend: BackendId(2),
        ..h100()
    };
    let blind = Candidate {
        prefill_tokens_per_s: 0.0,
        ..l40s()
    };
    let s = score(
        r#"{"alpha": 0}"#,
        &request(1_000, 100, None),
        &[unpriced, blind, h100()],
    );
    assert_eq!(s, vec![0.5, 0.5, 1.0]);
}

#[test]
fn bad_config_lists_every_problem() {
    let err = HeteroCost::configure(r#"{"alpha": 2, "slo_miss_factor": -1}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "alpha: 2 is outside [0, 1]; slo_miss_factor: -1 is outside [0, 1]"
    );
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = HeteroCost::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
