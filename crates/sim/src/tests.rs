//! Backend tests over a real loopback socket: the OpenAI surface, the calibration pin as
//! the server's metrics report it, metrics and KV events against the cache, P/D, faults.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::*;

fn words(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{prefix}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn start(spec: BackendSpec) -> Backend {
    Backend::start(spec).await.expect("backend starts")
}

fn h100(name: &str) -> BackendSpec {
    BackendSpec::new(name, Profile::builtin("h100").expect("built in"))
}

async fn post(b: &Backend, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", b.info().base_url))
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

async fn scrape(b: &Backend) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{}/metrics", b.info().base_url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_reports_usage_and_cached_tokens() {
    let b = start(BackendSpec {
        speed: 100.0,
        ..h100("a")
    })
    .await;
    let prompt = words("w", 100);
    let first: Value = post(
        &b,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 5}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(first["usage"]["prompt_tokens"], 100);
    assert_eq!(first["usage"]["completion_tokens"], 5);
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second: Value = post(
        &b,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 5}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(
        second["usage"]["prompt_tokens_details"]["cached_tokens"],
        96
    );
    assert_eq!(
        first["choices"][0]["text"], second["choices"][0]["text"],
        "deterministic output"
    );
    assert_eq!(
        first["choices"][0]["text"]
            .as_str()
            .map(|t| t.split_whitespace().count()),
        Some(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_one_event_per_token_then_usage_and_done() {
    let b = start(BackendSpec {
        speed: 100.0,
        ..h100("a")
    })
    .await;
    let body = json!({
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "max_tokens": 7,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let text = post(&b, "/v1/chat/completions", body)
        .await
        .text()
        .await
        .expect("body");
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk is json"))
        .collect();
    let contents = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert_eq!(contents, 7);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage = &chunks[chunks.len() - 1]["usage"];
    assert_eq!(usage["completion_tokens"], 7);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_ttft_of_an_8192_token_prefill_on_the_servers_clock() {
    // At speed 1, through HTTP: the engine's own TTFT histogram must match the fit.
    let b = start(h100("a")).await;
    let ids: Vec<u32> = (0..8192).collect();
    let resp = post(
        &b,
        "/v1/completions",
        json!({"prompt": ids, "max_tokens": 1}),
    )
    .await;
    assert!(resp.status().is_success());
    let m = scrape(&b).await;
    let ttft = m["vllm:time_to_first_token_seconds_sum"];
    let fitted = FITTED_8192_TTFT;
    assert!(
        (ttft - fitted).abs() <= 0.05 * fitted,
        "ttft {ttft} s vs fit {fitted} s"
    );
}

/// Applies every replayed KV event; returns hash → count of blocks holding it.
fn replay_events(endpoint: &str) -> HashMap<u64, usize> {
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).expect("dealer");
    dealer.connect(endpoint).expect("connect");
    dealer.set_rcvtimeo(5000).expect("timeout");
    dealer
        .send_multipart([&b""[..], &0u64.to_be_bytes()], 0)
        .expect("send");
    let mut held: HashMap<u64, usize> = HashMap::new();
    let mut expected_seq = 0;
    loop {
        let frames = dealer.recv_multipart(0).expect("reply");
        if frames[2] == [0xFF; 8] {
            return held;
        }
        let seq = u64::from_be_bytes(frames[2].as_slice().try_into().expect("8 bytes"));
        assert_eq!(seq, expected_seq, "no gaps");
        expected_seq += 1;
        let batch = rmpv::decode::read_value(&mut frames[3].as_slice()).expect("msgpack");
        for event in batch[1].as_array().expect("events") {
            let fields = event.as_array().expect("positional");
            let hashes = || {
                fields[1]
                    .as_array()
                    .expect("hashes")
                    .iter()
                    .map(|h| h.as_u64().expect("u64"))
            };
            match fields[0].as_str() {
                Some("BlockStored") => {
                    assert_eq!(fields[4].as_u64(), Some(16));
                    assert_eq!(
                        fields[3].as_array().map(Vec::len),
                        Some(16 * fields[1].as_array().map_or(0, Vec::len))
                    );
                    hashes().for_each(|h| *held.entry(h).or_default() += 1);
                }
                Some("BlockRemoved") => hashes().for_each(|h| {
                    let n = held.get_mut(&h).expect("removed hash was stored");
                    *n -= 1;
                    if *n == 0 {
                        held.remove(&h);
                    }
                }),
                Some("AllBlocksCleared") => held.clear(),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_kv_events_agree_with_the_cache_under_eviction() {
    let spec = BackendSpec {
        speed: 100.0,
        num_gpu_blocks: Some(64),
        kv_events: Some(EventsFile {
            port: 0,
            replay_port: Some(0),
            topic: None,
            buffer_steps: 10_000,
        }),
        ..h100("small")
    };
    let b = start(spec).await;
    // Five distinct 400-token prompts need 5 × 26 blocks > 64: the first ones get evicted.
    let mut prompt_tokens = 0;
    for i in 0..5 {
        let prompt = words(&format!("p{i}x"), 400);
        let r: Value = post(
            &b,
            "/v1/completions",
            json!({"prompt": prompt, "max_tokens": 8}),
        )
        .await
        .json()
        .await
        .expect("json");
        prompt_tokens += r["usage"]["prompt_tokens"].as_u64().expect("usage");
    }
    let snapshot = b.cache_snapshot().await.expect("running");
    assert!(snapshot.hashes.len() <= 64);
    let endpoint = b.info().kv_replay_endpoint.clone().expect("replay on");
    // Give the publisher thread a moment to take the last batch off its queue.
    let mut from_events = HashMap::new();
    for _ in 0..50 {
        from_events = tokio::task::spawn_blocking({
            let endpoint = endpoint.clone();
            move || replay_events(&endpoint)
        })
        .await
        .expect("replay");
        if from_events == snapshot.hashes {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        from_events, snapshot.hashes,
        "events replay to the cache's contents"
    );
    let m = scrape(&b).await;
    assert_eq!(m["vllm:kv_cache_usage_perc"], snapshot.usage);
    assert_eq!(m["vllm:prefix_cache_queries_total"], prompt_tokens as f64);
    assert_eq!(m["vllm:cache_config_info"], 1.0);
    assert_eq!(m["vllm:request_success_total"], 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_then_remote_decode_charges_the_transfer() {
    let prefill = start(h100("prefill")).await;
    let decode = start(h100("decode")).await;
    let ids: Vec<u32> = (0..4097).collect();
    let p: Value = post(
        &prefill,
        "/v1/completions",
        json!({"prompt": ids, "max_tokens": 1, "kv_transfer_params": {"do_remote_decode": true}}),
    )
    .await
    .json()
    .await
    .expect("json");
    let params = &p["kv_transfer_params"];
    assert_eq!(params["do_remote_prefill"], true);
    assert_eq!(
        params["remote_block_ids"].as_array().map(Vec::len),
        Some(257)
    );
    assert_eq!(params["remote_engine_id"], "prefill");
    let d: Value = post(
        &decode,
        "/v1/completions",
        json!({"prompt": ids, "max_tokens": 2, "kv_transfer_params": params}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(d["usage"]["completion_tokens"], 2);
    let ttft = scrape(&decode).await["vllm:time_to_first_token_seconds_sum"];
    let model = LatencyModel::H100;
    let expected = (transfer_ms(4096, KV_BYTES_PER_TOKEN, 45.0) + model.prefill_ms(1, 4096)) / 1e3;
    assert!(
        (ttft - expected).abs() <= 0.05 * expected,
        "decode ttft {ttft} vs {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_and_crash() {
    let failing = start(BackendSpec {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..h100("f")
    })
    .await;
    let r = post(
        &failing,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.expect("json");
    assert!(body["error"]["message"].is_string());

    let crashing = start(BackendSpec {
        speed: 100.0,
        faults: Faults {
            crash_after: Some(1),
            ..Faults::default()
        },
        ..h100("c")
    })
    .await;
    let ok = post(
        &crashing,
        "/v1/completions",
        json!({"prompt": "hi", "max_tokens": 1}),
    )
    .await;
    assert!(ok.status().is_success());
    let _ = reqwest::Client::new()
        .post(format!("{}/v1/completions", crashing.info().base_url))
        .json(&json!({"prompt": "hi", "max_tokens": 1}))
        .send()
        .await;
    crashing.crashed().await;
    // The engine is aborted right after the crash is signalled: poll until it is gone.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while crashing.cache_snapshot().await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "engine still running after the crash"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_serves_models_and_health_on_every_backend() {
    let spec = FleetSpec::from_yaml(
        "backends:\n  - { profile: mi300x, replicas: 2 }\n  - { profile: gaudi3 }\n",
    )
    .expect("valid");
    let fleet = Fleet::start(spec).await.expect("starts");
    assert_eq!(fleet.base_urls().len(), 3);
    for b in fleet.backends() {
        let health = reqwest::get(format!("{}/health", b.info().base_url))
            .await
            .expect("health");
        assert!(health.status().is_success());
        let models: Value = reqwest::get(format!("{}/v1/models", b.info().base_url))
            .await
            .expect("models")
            .json()
            .await
            .expect("json");
        assert_eq!(models["data"][0]["id"], b.info().model);
    }
    assert_eq!(fleet.backends()[2].info().vendor, "intel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_interval_groups_tokens_but_keeps_them_all() {
    let b = start(BackendSpec {
        speed: 100.0,
        stream_interval: 4,
        ..h100("a")
    })
    .await;
    let body = json!({"prompt": "one two three", "max_tokens": 10, "stream": true});
    let text = post(&b, "/v1/completions", body)
        .await
        .text()
        .await
        .expect("body");
    let pieces: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .filter(|t| !t.is_empty())
        .collect();
    // The first token at once, then releases at indices 3 and 7, then the last two.
    let counts: Vec<usize> = pieces
        .iter()
        .map(|p| p.split_whitespace().count())
        .collect();
    assert_eq!(counts, vec![1, 3, 4, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_backend_looks_like_llama_server_and_reuses_its_slot() {
    let b = start(BackendSpec {
        speed: 100.0,
        cache: CacheModel::Slots {
            slots: 2,
            ctx_per_slot: 1024,
            slot_prompt_similarity: DEFAULT_SIMILARITY,
        },
        ..h100("cpu")
    })
    .await;
    let get = |path: &str| {
        let url = format!("{}{path}", b.info().base_url);
        async move {
            let r = reqwest::get(url).await.expect("request sent");
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Value>().await.expect("json")
        }
    };
    let props = get("/props").await;
    assert_eq!(props["total_slots"], 2);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 1024);
    let slots = get("/slots").await;
    assert_eq!(
        slots,
        json!([
            {"id": 0, "n_ctx": 1024, "is_processing": false},
            {"id": 1, "n_ctx": 1024, "is_processing": false}
        ])
    );
    assert_eq!(b.info().capacity_tokens, 2048);

    let prompt = words("w", 300);
    let mut cached = Vec::new();
    for p in [prompt.clone(), format!("{prompt} more words")] {
        let r: Value = post(&b, "/v1/completions", json!({"prompt": p, "max_tokens": 3}))
            .await
            .json()
            .await
            .expect("json");
        cached.push(r["usage"]["prompt_tokens_details"]["cached_tokens"].clone());
    }
    assert_eq!(cached, vec![json!(0), json!(300)]);
    let too_long = post(
        &b,
        "/v1/completions",
        json!({"prompt": words("x", 1100), "max_tokens": 3}),
    )
    .await;
    assert_eq!(
        too_long.status(),
        400,
        "a prompt longer than a slot's context"
    );

    let m = scrape(&b).await;
    assert_eq!(m.get("llamacpp:prompt_tokens_cached_total"), Some(&300.0));
    assert_eq!(m.get("llamacpp:prompt_tokens_total"), Some(&302.0));
    assert_eq!(m.get("llamacpp:requests_processing"), Some(&0.0));
    // A vLLM-style backend has no /props.
    let vllm = start(h100("gpu")).await;
    let r = reqwest::get(format!("{}/props", vllm.info().base_url))
        .await
        .expect("request sent");
    assert_eq!(r.status(), 404);
}

/// Two h100 backends sharing one core, ten times faster than real time.
async fn two_on_one_core() -> (Backend, Backend) {
    let cores = SharedCores::new(1);
    let spec = |name: &str| BackendSpec {
        speed: 10.0,
        host: Some(cores.clone()),
        ..h100(name)
    };
    (start(spec("a")).await, start(spec("b")).await)
}

/// An 8192-token prefill of token ids from `first` on.
async fn prefill_8192(backend: &Backend, first: u32) -> reqwest::Response {
    let ids: Vec<u32> = (first..first + 8192).collect();
    post(
        backend,
        "/v1/completions",
        json!({"prompt": ids, "max_tokens": 1}),
    )
    .await
}

/// The h100 profile's fitted TTFT of an 8192-token prefill, seconds.
const FITTED_8192_TTFT: f64 = (3.9 + 0.02779 * 8192.0 + 5.16e-7 * 8192.0 * 8192.0) / 1e3;

/// The sum of a backend's TTFTs on its own (simulated) clock, seconds.
async fn ttft_sum(b: &Backend) -> f64 {
    scrape(b).await["vllm:time_to_first_token_seconds_sum"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_on_shared_cores_slow_each_other_only_while_they_step_at_once() {
    let (a, b) = two_on_one_core().await;
    assert!(prefill_8192(&a, 0).await.status().is_success());
    let alone = ttft_sum(&a).await;
    assert!(
        (alone - FITTED_8192_TTFT).abs() <= 0.05 * FITTED_8192_TTFT,
        "alone, a backend steps at its own pace: {alone} s vs fit {FITTED_8192_TTFT} s"
    );

    let (ra, rb) = tokio::join!(prefill_8192(&a, 20_000), prefill_8192(&b, 40_000));
    assert!(ra.status().is_success() && rb.status().is_success());
    let together = ttft_sum(&a).await - alone + ttft_sum(&b).await;
    assert!(
        together > 1.6 * 2.0 * alone,
        "two prefills on one core took {together} s together, {alone} s alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_crashing_mid_step_gives_its_share_of_the_cores_back() {
    let (a, b) = two_on_one_core().await;
    let ids: Vec<u32> = (0..8192).collect();
    // NB: the request dies with its backend (so no `post`, which expects an answer);
    // only the step it leaves behind matters.
    let doomed = reqwest::Client::new()
        .post(format!("{}/v1/completions", a.info().base_url))
        .json(&json!({"prompt": ids, "max_tokens": 1}))
        .send();
    // The prefill takes about 27 ms of wall time at speed 10: crash mid-step.
    let crash = async {
        tokio::time::sleep(std::time::Duration::from_millis(8)).await;
        a.crash();
        a.crashed().await;
    };
    let _ = tokio::join!(doomed, crash);

    assert!(prefill_8192(&b, 50_000).await.status().is_success());
    let ttft = ttft_sum(&b).await;
    assert!(
        (ttft - FITTED_8192_TTFT).abs() <= 0.05 * FITTED_8192_TTFT,
        "alone after the crash, b steps at its own pace: {ttft} s vs fit {FITTED_8192_TTFT} s"
    );
}
