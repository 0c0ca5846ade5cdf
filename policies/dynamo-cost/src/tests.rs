use super::*;
use switchyard_policy_sdk::testing;

fn worker(index: u32, cached: u32, in_flight_prefill: u32) -> Candidate {
    Candidate {
        cached_prefix_tokens: cached,
        in_flight_prefill_tokens: in_flight_prefill,
        ..testing::candidate(index)
    }
}

fn place(config: &str, req: &Request, candidates: &[Candidate]) -> Placement {
    testing::place::<DynamoCost>(config, req, candidates, &testing::fleet(8))
}

fn cost(c: &Candidate, req: &Request, fleet: &Fleet) -> f64 {
    DynamoCost::default().cost(req, c, fleet)
}

#[test]
fn cost_follows_dynamo_formula() {
    let fleet = testing::fleet(2);
    let req = testing::request(128);
    // 8 request blocks, 2 cached (40 tokens -> 2 whole blocks), 96 new tokens,
    // 32 in-flight prefill tokens: prefill (32 + 96) / 16 = 8; idle, so decode = 8 - 2.
    assert_eq!(cost(&worker(0, 40, 32), &req, &fleet), 8.0 + 6.0);
    // Two requests on it and no known KV capacity: 2 x 8 active blocks more.
    let busy = Candidate {
        running: 2,
        ..worker(0, 40, 32)
    };
    assert_eq!(cost(&busy, &req, &fleet), 8.0 + 6.0 + 16.0);
}

#[test]
fn active_blocks_come_from_kv_usage_when_capacity_is_known() {
    let mut fleet = testing::fleet(1);
    fleet.backends[0].kv_capacity_tokens = 16_000;
    let c = Candidate {
        kv_usage: 0.5,
        running: 50,
        ..worker(0, 0, 0)
    };
    // 0.5 x 16000 / 16 = 500 active blocks, plus 8 prefill and 8 decode blocks.
    assert_eq!(cost(&c, &testing::request(128), &fleet), 516.0);
}

#[test]
fn best_overlap_wins_at_temperature_zero() {
    let req = testing::request(1024);
    let p = place(
        "",
        &req,
        &[worker(0, 0, 0), worker(1, 512, 0), worker(2, 256, 0)],
    );
    assert_eq!(p, Placement::Single(BackendId(1)));
}

#[test]
fn queued_prefill_outweighs_a_small_overlap() {
    let req = testing::request(1024);
    let p = place("", &req, &[worker(0, 0, 0), worker(1, 256, 4096)]);
    assert_eq!(p, Placement::Single(BackendId(0)));
}

#[test]
fn zero_weight_ignores_the_prefill_term() {
    let req = testing::request(1024);
    // One cached block but a long prefill queue: the queue decides at weight 1, only
    // the one block saved in the decode term counts at weight 0.
    let cands = [worker(0, 0, 0), worker(1, 16, 100_000)];
    assert_eq!(place("", &req, &cands), Placement::Single(BackendId(0)));
    let p = place(r#"{"overlap_score_weight": 0}"#, &req, &cands);
    assert_eq!(p, Placement::Single(BackendId(1)));
}

#[test]
fn ties_are_broken_by_request_id_reproducibly() {
    let cands: Vec<Candidate> = (0..4).map(|i| worker(i, 0, 0)).collect();
    let picks: Vec<Placement> = (0..64)
        .map(|id| {
            place(
                "",
                &Request {
                    id,
                    ..testing::request(64)
                },
                &cands,
            )
        })
        .collect();
    let again: Vec<Placement> = (0..64)
        .map(|id| {
            place(
                "",
                &Request {
                    id,
                    ..testing::request(64)
                },
                &cands,
            )
        })
        .collect();
    assert_eq!(picks, again);
    for b in 0..4 {
        assert!(
            picks.contains(&Placement::Single(BackendId(b))),
            "{b} never picked"
        );
    }
}

#[test]
fn temperature_spreads_but_favours_the_cheap() {
    let req = testing::request(1024);
    let cands = [worker(0, 1024, 0), worker(1, 0, 0)];
    let on_cheap = (0..1000u64)
        .filter(|&id| {
            place(
                r#"{"router_temperature": 0.5}"#,
                &Request { id, ..req.clone() },
                &cands,
            ) == Placement::Single(BackendId(0))
        })
        .count();
    // Normalised costs 0 and 1 at T = 0.5: p(cheap) = 1 / (1 + e^-2) = 0.88.
    assert!((840..920).contains(&on_cheap), "{on_cheap}");
}

#[test]
fn bad_config_is_rejected() {
    assert!(DynamoCost::configure(r#"{"block_size": 0}"#).is_err());
    assert!(DynamoCost::configure(r#"{"router_temperature": -1}"#).is_err());
}

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = DynamoCost::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
