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
use switchyard_kv::PrefixGroup;

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
        "id={} tenant={} model={} prompt={} max={} session={:?} labels={:?} ttft={:?} tpot={:?} prefix={:?}",
        req.id,
        req.tenant,
        req.model,
        req.prompt_tokens,
        req.max_tokens,
        req.session,
        req.labels,
        req.slo_ttft_ms,
        req.slo_tpot_ms,
        req.prefix,
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
        prefix: Some(PrefixGroup {
            key: u64::MAX - 9,
            head_tokens: 4096,
        }),
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

/// A router in this process over one simulated backend, serving `tenants` with
/// `proxy.label_headers` set; the `echo` guest is configured as the policy `echo` and
/// the shipped policies are there too. Returns the client URL, the admin URL and the
/// backend (which must outlive the test).
async fn router_over_sims(
    dir: &std::path::Path,
    regions: &[&str],
    tenants: serde_json::Value,
) -> (String, String, Vec<switchyard_sim::Backend>) {
    let echo = dir.join("echo.wasm");
    std::fs::write(&echo, guest("echo")).expect("write echo");
    let mut sims = Vec::new();
    for (i, _) in regions.iter().enumerate() {
        let mut spec = switchyard_sim::BackendSpec::new(
            format!("sim-{i}"),
            switchyard_sim::Profile::builtin("h100").expect("h100"),
        );
        spec.speed = 50.0;
        sims.push(switchyard_sim::Backend::start(spec).await.expect("sim"));
    }
    let backends: Vec<serde_json::Value> = sims
        .iter()
        .zip(regions)
        .map(|(s, region)| {
            serde_json::json!({
                "name": s.info().name, "url": s.info().base_url, "models": [s.info().model],
                "engine": "vllm", "region": region,
            })
        })
        .collect();
    let file = serde_json::json!({
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0", "token": ADMIN_TOKEN},
        "pool": {"health_interval_ms": 100, "scrape_interval_ms": 100},
        "proxy": {
            "label_headers": {"x-data-class": "data-class", "x-region-hint": "region"},
            "default_max_tokens": 777,
        },
        "policies": [{"name": "echo", "path": echo}],
        "backends": backends,
        "tenants": tenants,
    });
    let yaml = serde_yaml_ng::to_string(&file).expect("yaml");
    let config = switchyard::Config::from_yaml(&dir.join("router.yaml"), &yaml).expect("config");
    let server = switchyard::Server::bind(config)
        .await
        .expect("router binds");
    let base = format!("http://{}", server.local_addr().expect("addr"));
    let admin = format!("http://{}", server.admin_addr().expect("admin addr"));
    tokio::spawn(server.serve(std::future::pending()));
    let ready = async {
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/ready")).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("router ready");
    (base, admin, sims)
}

const ADMIN_TOKEN: &str = "secret-token-for-tests";

/// Sends a chat request with `headers` and returns the status and the body.
async fn chat(
    base: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body: serde_json::Value = resp.json().await.expect("json body");
    if let Some(b) = headers.get("x-switchyard-backend") {
        body["backend"] = b.to_str().expect("ascii").into();
    }
    (status, body)
}

/// The request line `echo` answered with, and the prompt tokens the router's decision
/// record shows for the same request.
async fn echoed_over_http(
    base: &str,
    admin: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (String, u32) {
    let (status, answer) = chat(base, headers, body).await;
    assert_eq!(status, 418, "echo rejects everything with 418: {answer}");
    let message = answer["error"]["message"].as_str().expect("message");
    let line = message.lines().next().expect("a request line").to_owned();
    let decisions: serde_json::Value = reqwest::Client::new()
        .get(format!("{admin}/admin/decisions?limit=1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("decisions")
        .json()
        .await
        .expect("json");
    let prompt = decisions[0]["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens") as u32;
    (line, prompt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_field_is_filled_from_http_headers_and_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = serde_json::json!({"default": {"pipeline": {"placer": {"policy": "echo"}}}});
    let (base, admin, sims) = router_over_sims(dir.path(), &["eu-west"], tenants).await;
    let model = sims[0].info().model.clone();
    let body = |extra: serde_json::Value| {
        let mut b = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Where should this run?"}],
            "user": "body-user",
        });
        b.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        b
    };

    // Every header the contract reads, and both output limits.
    let headers = [
        ("x-request-id", "contract-1"),
        ("x-session-id", "sess-42"),
        ("x-data-class", "pii"),
        ("x-region-hint", "eu"),
        ("x-slo-ttft-ms", "250"),
        ("x-slo-tpot-ms", "40"),
    ];
    let (line, prompt) = echoed_over_http(
        &base,
        &admin,
        &headers,
        body(serde_json::json!({"max_tokens": 500, "max_completion_tokens": 64})),
    )
    .await;
    let want = RequestFacts {
        id: xxhash_rust::xxh3::xxh3_64(b"contract-1"),
        tenant: "default".into(),
        model: model.clone(),
        prompt_tokens: prompt,
        max_tokens: 64,
        session: Some("sess-42".into()),
        labels: vec![
            ("data-class".into(), "pii".into()),
            ("region".into(), "eu".into()),
        ],
        slo_ttft_ms: Some(250),
        slo_tpot_ms: Some(40),
        prefix: None,
    };
    assert!(prompt > 0, "the prompt was counted");
    assert_eq!(line, echoed(&want, &[]));

    // No headers: the session falls back to the body's `user`, no labels or objectives,
    // and the configured default output tokens (never 0).
    let (line, prompt) = echoed_over_http(
        &base,
        &admin,
        &[("x-request-id", "contract-2")],
        body(serde_json::json!({})),
    )
    .await;
    let want = RequestFacts {
        id: xxhash_rust::xxh3::xxh3_64(b"contract-2"),
        tenant: "default".into(),
        model: model.clone(),
        prompt_tokens: prompt,
        max_tokens: 777,
        session: Some("body-user".into()),
        ..RequestFacts::default()
    };
    assert_eq!(line, echoed(&want, &[]));

    // A value the router cannot use is the client's error, named.
    let long = "x".repeat(300);
    for (name, value) in [
        ("x-slo-ttft-ms", "soon"),
        ("x-data-class", "p\u{ef}i"),
        ("x-session-id", long.as_str()),
    ] {
        let (status, answer) = chat(&base, &[(name, value)], body(serde_json::json!({}))).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_header", "{answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(name), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_residency_filter_keeps_requests_labelled_pii_in_the_allowed_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = serde_json::json!({"default": {"pipeline": {
        "filters": [{"policy": "data-residency", "config": {
            "default": "allow",
            "rules": [{"data_class": "pii", "regions": ["eu-west"]}],
        }}],
        "scorers": [{"policy": "least-load", "weight": 1.0}],
        "picker": {"kind": "softmax", "temperature": 100.0},
    }}});
    let (base, _admin, sims) = router_over_sims(dir.path(), &["eu-west", "us-east"], tenants).await;
    let model = sims[0].info().model.clone();
    let eu = sims[0].info().name.clone();
    let body = serde_json::json!({
        "model": model, "max_tokens": 2,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let mut served = std::collections::BTreeMap::<(bool, String), u32>::new();
    for i in 0..24 {
        let pii = i % 2 == 0;
        let headers: &[(&str, &str)] = if pii { &[("x-data-class", "pii")] } else { &[] };
        let (status, answer) = chat(&base, headers, body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let backend = answer["backend"]
            .as_str()
            .expect("backend header")
            .to_owned();
        *served.entry((pii, backend)).or_default() += 1;
    }
    let pii_backends: Vec<_> = served.keys().filter(|(pii, _)| *pii).collect();
    assert_eq!(
        pii_backends,
        [&(true, eu.clone())],
        "every pii request stays in eu-west: {served:?}"
    );
    assert!(
        served.keys().any(|(pii, b)| !pii && *b != eu),
        "plain requests also go elsewhere: {served:?}"
    );
}

/// The `prefix=` part of an echoed request line: `(key, head_tokens)`.
fn prefix_of(line: &str) -> Option<(u64, u32)> {
    let rest = line.split_once("prefix=Some(PrefixGroup { key: ")?.1;
    let (key, rest) = rest.split_once(", head_tokens: ")?;
    let head = rest.split_once(' ')?.0;
    Some((key.parse().ok()?, head.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefix_group_is_filled_past_the_shared_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = serde_json::json!({"default": {"pipeline": {"placer": {"policy": "echo"}}}});
    let (base, admin, sims) = router_over_sims(dir.path(), &["eu-west"], tenants).await;
    let model = sims[0].info().model.clone();
    let system =
        "You are the support assistant of a bank. Answer briefly and cite the policy. ".repeat(8);
    let prompt = |group: usize, question: &str| {
        serde_json::json!({
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("{} {question}", format!("Document {group}: terms and fees of account type {group}. ").repeat(12))},
            ],
        })
    };
    let mut seen = Vec::new();
    for (i, (group, question)) in [(1, "a?"), (2, "b?"), (1, "c?"), (2, "d?"), (1, "e?")]
        .into_iter()
        .enumerate()
    {
        let id = format!("prefix-{i}");
        let (line, _) = echoed_over_http(
            &base,
            &admin,
            &[("x-request-id", &id)],
            prompt(group, question),
        )
        .await;
        let (key, head) = prefix_of(&line).unwrap_or_else(|| panic!("no prefix group: {line}"));
        seen.push((group, key, head));
    }
    // From the second prompt on, the shared system text is head and each group has a key
    // of its own (the first prompt had nothing to compare with).
    let system_tokens = seen[1].2;
    assert!(
        system_tokens > 0,
        "the system text is shared head: {seen:?}"
    );
    for &(group, key, head) in &seen[1..] {
        assert_eq!(head, system_tokens, "{seen:?}");
        for &(other, other_key, _) in &seen[1..] {
            assert_eq!(group == other, key == other_key, "{seen:?}");
        }
    }
    // A prompt too short for one block has no group.
    let short =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let (line, _) = echoed_over_http(&base, &admin, &[], short).await;
    assert!(line.contains(" prefix=None"), "{line}");
}
