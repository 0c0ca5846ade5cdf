//! The router and the KV index together, in process: two simulated backends with no KV
//! events (approximate mode). With the shipped `prefix-affinity` scorer, a repeated long
//! prompt must go back to the backend that served it, and the admin lookup must show that
//! backend holding the prompt's prefix; a request retried on another backend is recorded
//! where it ran, not where it was first sent; a tenant with cache isolation keeps its
//! prefixes out of other tenants' view.

use std::path::Path;

use serde_json::{Value, json};
use switchyard::{Config, Server};
use switchyard_sim::{self as sim, BackendSpec, Profile};

/// Simulated H100s, one per entry of `error_rates` (the share of requests each fails
/// at once with a 500).
async fn start_sims(error_rates: &[f64]) -> Vec<sim::Backend> {
    let mut out = Vec::new();
    for (i, &error_rate) in error_rates.iter().enumerate() {
        let mut spec = BackendSpec::new(format!("sim-{i}"), Profile::builtin("h100").unwrap());
        spec.speed = 50.0;
        spec.faults.error_rate = error_rate;
        out.push(sim::Backend::start(spec).await.expect("sim starts"));
    }
    out
}

fn config(sims: &[sim::Backend], pipeline: Value) -> Config {
    let yaml = serde_yaml_ng::to_string(&config_file(sims, pipeline)).unwrap();
    Config::from_yaml(Path::new("router_kv.yaml"), &yaml).expect("valid config")
}

/// The config file, as JSON, over `sims` with `pipeline` as the `default` tenant's.
fn config_file(sims: &[sim::Backend], pipeline: Value) -> Value {
    let model = &sims[0].info().model;
    let backends: Vec<Value> = sims
        .iter()
        .map(|s| {
            json!({
                "name": s.info().name,
                "url": s.info().base_url,
                "models": [model],
                "engine": "vllm",
                "vendor": "nvidia",
                "accelerator": "h100",
            })
        })
        .collect();
    json!({
        "listen": "127.0.0.1:0",
        "admin": { "listen": "127.0.0.1:0", "token": "secret-token-for-tests" },
        "backends": backends,
        "tenants": { "default": { "pipeline": pipeline } }
    })
}

/// Starts the router over `sims` with `pipeline` and waits until it is ready; returns
/// the client and admin base URLs.
async fn start_router(sims: &[sim::Backend], pipeline: Value) -> (String, String) {
    start_config(config(sims, pipeline)).await
}

/// Starts the router with `config` and waits until it is ready; returns the client and
/// admin base URLs.
async fn start_config(config: Config) -> (String, String) {
    let server = Server::bind(config).await.expect("router binds");
    let base = format!("http://{}", server.local_addr().unwrap());
    let admin = format!("http://{}", server.admin_addr().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    let client = reqwest::Client::new();
    let ready = async {
        loop {
            if let Ok(r) = client.get(format!("{base}/ready")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), ready)
        .await
        .expect("router ready");
    (base, admin)
}

/// A chat request with a long system prompt (many blocks).
fn long_prompt(sims: &[sim::Backend]) -> Value {
    let system = "You are a careful assistant for the switchyard test suite. ".repeat(40);
    json!({
        "model": sims[0].info().model,
        "max_tokens": 4,
        "messages": [
            { "role": "system", "content": system },
            { "role": "user", "content": "What is a prefix cache?" }
        ]
    })
}

/// Sends an admin request with the test token and returns its JSON body.
async fn admin_call(req: reqwest::RequestBuilder) -> Value {
    req.bearer_auth("secret-token-for-tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Each backend's cached prefix of `body`'s prompt, in tokens, from the admin lookup.
async fn depths(admin: &str, body: &Value) -> (Value, impl Fn(&str) -> u64) {
    let lookup = admin_call(
        reqwest::Client::new()
            .post(format!("{admin}/admin/kv/lookup"))
            .json(&json!({ "model": body["model"], "messages": body["messages"] })),
    )
    .await;
    let backends = lookup["backends"]
        .as_array()
        .expect("per-backend depths")
        .clone();
    let depth = move |name: &str| {
        backends
            .iter()
            .find(|b| b["name"] == name)
            .and_then(|b| b["cached_tokens"].as_u64())
            .unwrap_or(0)
    };
    (lookup, depth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_prompt_returns_to_the_backend_holding_its_prefix() {
    let sims = start_sims(&[0.0, 0.0]).await;
    let pipeline = json!({"scorers": [{ "policy": "prefix-affinity", "weight": 1.0 }]});
    let (base, admin) = start_router(&sims, pipeline).await;
    let client = reqwest::Client::new();
    let body = long_prompt(&sims);
    let mut served = Vec::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let backend = r.headers()["x-switchyard-backend"]
            .to_str()
            .unwrap()
            .to_owned();
        served.push(backend);
    }
    assert_eq!(served[0], served[1], "second request followed the prefix");
    assert_eq!(served[0], served[2], "third request followed the prefix");

    let (lookup, depth) = depths(&admin, &body).await;
    let holder = &served[0];
    let other = sims
        .iter()
        .map(|s| s.info().name.clone())
        .find(|n| n != holder)
        .unwrap();
    assert!(
        depth(holder) > 256,
        "holder depth {}: {lookup}",
        depth(holder)
    );
    assert_eq!(depth(&other), 0, "{lookup}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_retried_elsewhere_is_recorded_where_it_ran() {
    // `least-load` ties go to the lowest index: sim-0, which fails every request with a
    // 500 before its first byte; the send loop retries on sim-1.
    let sims = start_sims(&[1.0, 0.0]).await;
    let pipeline = json!({"scorers": [{ "policy": "least-load", "weight": 1.0 }]});
    let (base, admin) = start_router(&sims, pipeline).await;
    let body = long_prompt(&sims);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-backend"], "sim-1", "retried");
    let decisions =
        admin_call(reqwest::Client::new().get(format!("{admin}/admin/decisions?limit=1"))).await;
    assert_eq!(
        decisions[0]["backend"], "sim-0",
        "first choice: {decisions}"
    );
    let (lookup, depth) = depths(&admin, &body).await;
    assert!(
        depth("sim-1") > 256,
        "the backend that served holds it: {lookup}"
    );
    assert_eq!(
        depth("sim-0"),
        0,
        "the failed first choice holds nothing: {lookup}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_tenants_prefixes_are_invisible_to_other_tenants_in_the_index() {
    let sims = start_sims(&[0.0, 0.0]).await;
    let mut file = config_file(&sims, json!({}));
    file["tenants"] = json!({
        "acme": {"api_keys": ["k-acme"], "cache_isolation": true,
                 "pipeline": {"scorers": [{"policy": "prefix-affinity", "weight": 1.0}]}},
        "globex": {"api_keys": ["k-globex"],
                   "pipeline": {"scorers": [{"policy": "prefix-affinity", "weight": 1.0}]}},
    });
    let config = Config::from_yaml(
        Path::new("router_kv.yaml"),
        &serde_yaml_ng::to_string(&file).unwrap(),
    )
    .expect("valid config");
    let (base, admin) = start_config(config).await;
    let body = long_prompt(&sims);
    let client = reqwest::Client::new();
    let send = |key: &'static str| {
        let r = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send();
        async move { assert_eq!(r.await.unwrap().status(), 200) }
    };
    send("k-acme").await;
    send("k-acme").await;
    // Stored under acme's secret salt only: the unsalted prompt is cached nowhere.
    let (lookup, depth) = depths(&admin, &body).await;
    for s in &sims {
        assert_eq!(depth(&s.info().name), 0, "{lookup}");
    }
    send("k-globex").await;
    let decisions =
        admin_call(reqwest::Client::new().get(format!("{admin}/admin/decisions?limit=3"))).await;
    let deepest = |d: &Value| {
        d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["cached_prefix_tokens"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    assert_eq!(decisions[0]["tenant"], "globex");
    assert_eq!(
        deepest(&decisions[0]),
        0,
        "globex sees none of acme's prefix"
    );
    assert_eq!(decisions[1]["tenant"], "acme");
    assert!(
        deepest(&decisions[1]) > 256,
        "acme sees its own: {}",
        decisions[1]
    );
}
