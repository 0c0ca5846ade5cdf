//! The router and the KV index together, in process: two simulated backends with no KV
//! events (approximate mode), a tenant pipeline led by the shipped `prefix-affinity`
//! scorer. A repeated long prompt must go back to the backend that served it, and the
//! admin lookup must show that backend holding the prompt's prefix.

use std::path::Path;

use serde_json::{Value, json};
use switchyard::{Config, Server};
use switchyard_sim::{self as sim, BackendSpec, Profile};

async fn start_sims(n: usize) -> Vec<sim::Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut spec = BackendSpec::new(format!("sim-{i}"), Profile::builtin("h100").unwrap());
        spec.speed = 50.0;
        out.push(sim::Backend::start(spec).await.expect("sim starts"));
    }
    out
}

fn config(sims: &[sim::Backend]) -> Config {
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
    let file = json!({
        "listen": "127.0.0.1:0",
        "admin": { "listen": "127.0.0.1:0", "token": "secret-token-for-tests" },
        "backends": backends,
        "tenants": {
            "default": {
                "pipeline": {
                    "scorers": [
                        { "policy": "prefix-affinity", "weight": 1.0 }
                    ]
                }
            }
        }
    });
    let yaml = serde_yaml_ng::to_string(&file).unwrap();
    Config::from_yaml(Path::new("router_kv.yaml"), &yaml).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_prompt_returns_to_the_backend_holding_its_prefix() {
    let sims = start_sims(2).await;
    let server = Server::bind(config(&sims)).await.expect("router binds");
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

    let model = sims[0].info().model.clone();
    let system = "You are a careful assistant for the switchyard test suite. ".repeat(40);
    let body = json!({
        "model": model,
        "max_tokens": 4,
        "messages": [
            { "role": "system", "content": system },
            { "role": "user", "content": "What is a prefix cache?" }
        ]
    });
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

    let lookup: Value = client
        .post(format!("{admin}/admin/kv/lookup"))
        .bearer_auth("secret-token-for-tests")
        .json(&json!({ "model": model, "messages": body["messages"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let backends = lookup["backends"].as_array().expect("per-backend depths");
    let depth = |name: &str| {
        backends
            .iter()
            .find(|b| b["name"] == name)
            .and_then(|b| b["cached_tokens"].as_u64())
            .unwrap_or(0)
    };
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
