//! The policy contract end to end: what the host sends is what a guest built with the SDK
//! reads, field for field. The `echo` guest (`tests/guests/echo`) spells out everything it
//! received in a rejection message; a field dropped, reordered or mis-encoded on the way
//! (the packed candidate rows, the `f32` bits) makes the message differ.

mod support;

use std::time::Duration;

use support::guest;
use switchyard::policy::{
    BackendFacts, Candidate, FleetFacts, Limits, Outcome, Placement, Policies, RequestFacts, Stage,
};

fn fleet() -> FleetFacts {
    FleetFacts {
        generation: 3,
        backends: (0..40)
            .map(|i| BackendFacts {
                name: format!("b{i}"),
                ..BackendFacts::default()
            })
            .collect(),
    }
}

/// Candidates whose every field differs from every other, floats with fractions.
fn candidates(n: u32) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            backend: 39 - i,
            waiting: 100 + i,
            running: 200 + i,
            kv_usage: 0.25 + i as f32 / 64.0,
            cached_prefix_tokens: 3000 + i,
            in_flight_requests: 400 + i,
            in_flight_prefill_tokens: 5000 + i,
            prefill_tokens_per_s: 12_500.5 + i as f32,
            decode_tokens_per_s: 61.75 + i as f32,
            metrics_age_ms: 700 + i,
        })
        .collect()
}

/// The message `echo` must return for `req` and `cands` (its documented format).
fn echoed(req: &RequestFacts, cands: &[Candidate]) -> String {
    let mut lines = vec![format!(
        "id={} tenant={} model={} prompt={} max={} session={:?} labels={:?} ttft={:?} tpot={:?}",
        req.id,
        req.tenant,
        req.model,
        req.prompt_tokens,
        req.max_tokens,
        req.session,
        req.labels,
        req.slo_ttft_ms,
        req.slo_tpot_ms,
    )];
    lines.extend(cands.iter().map(|c| {
        format!(
            "{} {} {} {} {} {} {} {} {} {}",
            c.backend,
            c.waiting,
            c.running,
            c.kv_usage,
            c.cached_prefix_tokens,
            c.in_flight_requests,
            c.in_flight_prefill_tokens,
            c.prefill_tokens_per_s,
            c.decode_tokens_per_s,
            c.metrics_age_ms,
        )
    }));
    lines.join("\n")
}

/// A policy name the tests know to be valid.
fn policy_name(name: &str) -> switchyard::names::PolicyName {
    name.parse().expect("a valid policy name")
}

/// A stage running `echo` in a fresh runtime.
fn echo_stage() -> Stage {
    let p = Policies::new(
        Limits {
            deadline: Duration::from_secs(2),
            ..Limits::default()
        },
        None,
    )
    .expect("engine");
    let v = p
        .upload(&policy_name("echo"), &guest("echo"), true)
        .expect("upload");
    p.stage(&v.label(), &serde_json::Value::Null)
        .expect("stage")
}

fn echo(stage: &Stage, req: &RequestFacts, cands: &[Candidate]) -> String {
    let (outcome, _) = stage.run(&fleet(), req, cands).expect("call");
    match outcome {
        Outcome::Placement(Placement::Reject { status, message }) => {
            assert_eq!(status, 418);
            message
        }
        other => panic!("echo answered {other:?}"),
    }
}

#[test]
fn every_request_and_candidate_field_crosses_intact() {
    let stage = echo_stage();
    let req = RequestFacts {
        id: u64::MAX - 5,
        tenant: "acme".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 6144,
        max_tokens: 256,
        session: Some("s-17".into()),
        labels: vec![
            ("data-class".into(), "pii".into()),
            ("tier".into(), "gold".into()),
        ],
        slo_ttft_ms: Some(250),
        slo_tpot_ms: Some(40),
    };
    let cands = candidates(37);
    assert_eq!(echo(&stage, &req, &cands), echoed(&req, &cands));
}

#[test]
fn absent_options_and_no_candidates_cross_as_such() {
    let stage = echo_stage();
    let req = RequestFacts {
        id: 1,
        tenant: "default".into(),
        model: "m".into(),
        ..RequestFacts::default()
    };
    assert_eq!(echo(&stage, &req, &[]), echoed(&req, &[]));
    // The warm instance (and the host's row buffer) reused with fewer candidates sees
    // only the new rows.
    let many = candidates(5);
    assert_eq!(echo(&stage, &req, &many), echoed(&req, &many));
    assert_eq!(echo(&stage, &req, &many[3..]), echoed(&req, &many[3..]));
}
