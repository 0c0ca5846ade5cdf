//! Two-phase (prefill/decode) requests end to end: the router in process, simulated vLLM
//! backends speaking the `kv_transfer_params` protocol, the shipped `pd-split` placer.
//! Backends declare roles and speeds so the placer always splits: prefill backends are
//! declared fast at prefill, decode backends slow. Each case checks the response, the
//! sims' own metrics, the decision record, and that the router's in-flight counts return
//! to zero.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::{Config, Server};
use switchyard_sim::{self as sim, BackendSpec, Faults, Profile};

const TOKEN: &str = "secret-token-for-tests";
const MAX_TOKENS: usize = 8;

/// A simulated backend and how the router is told about it.
struct Sim {
    backend: sim::Backend,
    role: &'static str,
    prefill_tokens_per_s: f32,
    decode_tokens_per_s: f32,
}

async fn sim(name: &str, role: &'static str, speeds: (f32, f32), error_rate: f64) -> Sim {
    let mut spec = BackendSpec::new(name, Profile::builtin("h100").expect("h100 profile"));
    spec.speed = 50.0;
    spec.faults = Faults {
        error_rate,
        ..Faults::default()
    };
    Sim {
        backend: sim::Backend::start(spec).await.expect("sim starts"),
        role,
        prefill_tokens_per_s: speeds.0,
        decode_tokens_per_s: speeds.1,
    }
}

/// A fast prefill backend, failing every request when `failing`.
async fn prefill(name: &str, speed: f32, failing: bool) -> Sim {
    sim(
        name,
        "prefill",
        (speed, 0.0),
        if failing { 1.0 } else { 0.0 },
    )
    .await
}

/// A decode backend, slow at prefill, failing every request when `failing`.
async fn decode(name: &str, speed: f32, failing: bool) -> Sim {
    sim(
        name,
        "decode",
        (1000.0, speed),
        if failing { 1.0 } else { 0.0 },
    )
    .await
}

/// The running router: client and admin base URLs.
struct Router {
    base: String,
    admin: String,
    client: reqwest::Client,
}

async fn router(sims: &[Sim], split_fallback: &str) -> Router {
    let model = sims[0].backend.info().model.clone();
    let backends: Vec<Value> = sims
        .iter()
        .map(|s| {
            json!({
                "name": s.backend.info().name,
                "url": s.backend.info().base_url,
                "models": [model],
                "engine": "vllm",
                "role": s.role,
                "capability": {
                    "prefill_tokens_per_s": s.prefill_tokens_per_s,
                    "decode_tokens_per_s": s.decode_tokens_per_s,
                },
            })
        })
        .collect();
    let file = json!({
        "listen": "127.0.0.1:0",
        "admin": { "listen": "127.0.0.1:0", "token": TOKEN },
        "proxy": { "split_fallback": split_fallback },
        "backends": backends,
        "tenants": {
            "default": {
                "pipeline": {
                    "placer": {
                        "policy": "pd-split",
                        "config": {
                            "min_uncached_tokens": 64,
                            "kv_bytes_per_token": 131_072,
                            "kv_link_gbytes_per_s": 45,
                        }
                    }
                }
            }
        }
    });
    let yaml = serde_yaml_ng::to_string(&file).expect("yaml");
    let config = Config::from_yaml(Path::new("router_pd.yaml"), &yaml).expect("valid config");
    let server = Server::bind(config).await.expect("router binds");
    let r = Router {
        base: format!("http://{}", server.local_addr().expect("client addr")),
        admin: format!("http://{}", server.admin_addr().expect("admin addr")),
        client: reqwest::Client::new(),
    };
    tokio::spawn(server.serve(std::future::pending()));
    // Ready once every backend passed a health check.
    let all_up = async {
        loop {
            if let Ok(list) = r.admin_get("/admin/backends").await
                && list
                    .as_array()
                    .is_some_and(|l| l.iter().all(|b| b["healthy"] == true))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all_up)
        .await
        .expect("every backend healthy");
    r
}

impl Router {
    async fn admin_get(&self, path: &str) -> reqwest::Result<Value> {
        self.client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await
    }

    /// A streamed chat request with a long prompt: response headers and body.
    async fn chat(&self, model: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, String) {
        let system = "You are a careful assistant for the switchyard test suite. ".repeat(60);
        let body = json!({
            "model": model,
            "max_tokens": MAX_TOKENS,
            "stream": true,
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": "Explain prefill/decode disaggregation." }
            ]
        });
        let r = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .expect("router answers");
        let status = r.status();
        let headers = r.headers().clone();
        (status, headers, r.text().await.expect("body"))
    }

    /// The newest decision record.
    async fn last_decision(&self) -> Value {
        let list = self
            .admin_get("/admin/decisions?limit=1")
            .await
            .expect("decisions");
        list[0].clone()
    }

    /// Waits until no backend has requests or prefill tokens in flight.
    async fn assert_load_returns_to_zero(&self) {
        let idle = async {
            loop {
                let list = self.admin_get("/admin/backends").await.expect("backends");
                let busy = list.as_array().is_none_or(|l| {
                    l.iter()
                        .any(|b| b["in_flight_requests"] != 0 || b["in_flight_prefill_tokens"] != 0)
                });
                if !busy {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), idle)
            .await
            .expect("in-flight counts return to zero");
    }
}

/// A sim's metric value (a counter, or a histogram's `_sum`), 0 when absent.
async fn metric(s: &Sim, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", s.backend.info().base_url))
        .await
        .expect("sim metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| key.split('{').next() == Some(name))
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

fn header<'h>(h: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts a complete SSE stream of `MAX_TOKENS` tokens.
fn assert_streamed(body: &str) {
    let tokens = body
        .lines()
        .filter(|l| l.starts_with("data: {") && l.contains("\"content\""))
        .count();
    assert_eq!(tokens, MAX_TOKENS, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_request_prefills_remotely_and_streams_from_the_decode_backend() {
    let sims = [
        prefill("p0", 100_000.0, false).await,
        decode("d0", 50.0, false).await,
    ];
    let r = router(&sims, "retry").await;
    let (status, headers, body) = r.chat(&sims[0].backend.info().model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-switchyard-backend"), Some("d0"));
    assert_eq!(header(&headers, "x-switchyard-prefill-backend"), Some("p0"));
    assert_streamed(&body);

    // The prefill backend generated one token; the decode backend the rest, and its time
    // to first token is the KV transfer, far below computing the prompt.
    assert_eq!(metric(&sims[0], "vllm:generation_tokens_total").await, 1.0);
    assert_eq!(
        metric(&sims[1], "vllm:generation_tokens_total").await,
        MAX_TOKENS as f64
    );
    let prefill_ttft = metric(&sims[0], "vllm:time_to_first_token_seconds_sum").await;
    let decode_ttft = metric(&sims[1], "vllm:time_to_first_token_seconds_sum").await;
    assert!(
        decode_ttft < prefill_ttft / 2.0,
        "decode ttft {decode_ttft} s vs prefill {prefill_ttft} s"
    );

    let d = r.last_decision().await;
    assert_eq!(d["placement"], "split", "{d}");
    assert_eq!(d["split"], true, "{d}");
    assert_eq!(d["prefill_served_by"], "p0", "{d}");
    assert_eq!(d["served_by"], "d0", "{d}");
    r.assert_load_returns_to_zero().await;

    // Each leg fed the capability learner of its backend: a prefill sample on p0, a
    // decode sample on d0; the admin view shows them next to the declared figures.
    let list = r.admin_get("/admin/backends").await.expect("backends");
    let backend = |name: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|b| b["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let (p0, d0) = (backend("p0"), backend("d0"));
    assert_eq!(p0["measured"]["prefill_samples"], 1, "{p0}");
    assert_eq!(p0["measured"]["decode_samples"], 0, "{p0}");
    assert_eq!(d0["measured"]["prefill_samples"], 0, "{d0}");
    assert_eq!(d0["measured"]["decode_samples"], 1, "{d0}");
    assert!(
        d0["measured"]["decode_tokens_per_s"].is_null(),
        "too few samples: {d0}"
    );
    assert_eq!(d0["capability"]["decode_tokens_per_s"], 50.0, "{d0}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prefill_is_retried_on_another_prefill_backend() {
    let sims = [
        prefill("p-bad", 200_000.0, true).await,
        prefill("p-good", 100_000.0, false).await,
        decode("d0", 50.0, false).await,
    ];
    let r = router(&sims, "retry").await;
    let (status, headers, body) = r.chat(&sims[0].backend.info().model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "x-switchyard-prefill-backend"),
        Some("p-good")
    );
    assert_eq!(header(&headers, "x-switchyard-backend"), Some("d0"));
    assert_streamed(&body);

    let d = r.last_decision().await;
    assert_eq!(
        d["prefill_backend"], "p-bad",
        "placer chose the failing one: {d}"
    );
    assert_eq!(d["prefill_served_by"], "p-good", "{d}");
    assert_eq!(d["split"], true, "{d}");
    r.assert_load_returns_to_zero().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prefill_falls_back_to_decode_only_when_configured() {
    let sims = [
        prefill("p-bad", 200_000.0, true).await,
        prefill("p-good", 100_000.0, false).await,
        decode("d0", 50.0, false).await,
    ];
    let r = router(&sims, "decode_only").await;
    let (status, headers, body) = r.chat(&sims[0].backend.info().model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-switchyard-prefill-backend"), None);
    assert_eq!(header(&headers, "x-switchyard-backend"), Some("d0"));
    assert_streamed(&body);
    assert_eq!(
        metric(&sims[1], "vllm:request_success_total").await,
        0.0,
        "no retry on the other prefill backend"
    );

    let d = r.last_decision().await;
    assert_eq!(d["placement"], "split", "{d}");
    assert_eq!(d["split"], false, "{d}");
    assert_eq!(d["served_by"], "d0", "{d}");
    let why = d["split_fallback"].as_str().unwrap_or_default();
    assert!(why.contains("prefill on p-bad"), "{d}");
    r.assert_load_returns_to_zero().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_backend_failing_before_its_first_byte_is_replaced() {
    let sims = [
        prefill("p0", 100_000.0, false).await,
        decode("d-bad", 100.0, true).await,
        decode("d-good", 50.0, false).await,
    ];
    let r = router(&sims, "retry").await;
    let (status, headers, body) = r.chat(&sims[0].backend.info().model).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-switchyard-backend"), Some("d-good"));
    assert_eq!(header(&headers, "x-switchyard-prefill-backend"), None);
    assert_streamed(&body);

    let d = r.last_decision().await;
    assert_eq!(d["backend"], "d-bad", "placer chose the failing one: {d}");
    assert_eq!(d["prefill_served_by"], "p0", "{d}");
    assert_eq!(d["served_by"], "d-good", "{d}");
    assert_eq!(d["split"], false, "{d}");
    let why = d["split_fallback"].as_str().unwrap_or_default();
    assert!(why.contains("decode on d-bad did not answer"), "{d}");
    r.assert_load_returns_to_zero().await;
}
