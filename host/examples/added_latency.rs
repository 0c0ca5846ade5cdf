//! The router's added latency: the same fast backend called directly and through
//! Switchyard (built-in least-load, and a Wasm pipeline), one request at a time.
//!
//! Run: `cargo run --release -p switchyard --example added_latency [-- REQUESTS]`
//!
//! Backend, router and client run in this one process on separate runtimes; the
//! backend answers a fixed non-streaming chat completion at once, so every microsecond
//! above the direct figure is the router's (parse, decide, forward, pass back). Runs are
//! interleaved in blocks so drift on a shared machine hits all three alike.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use hdrhistogram::Histogram;

const BODY: &str = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"Say hello to the router, please."}]}"#;
const ANSWER: &str = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}"#;
const BLOCK: usize = 250;

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(5000);
    let backend_rt = runtime(1);
    let backend_url = backend_rt.block_on(async {
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/v1/chat/completions",
                post(|| async { ([("content-type", "application/json")], ANSWER) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok(url)
    })?;

    let config = format!(
        "listen: 127.0.0.1:0\nauth:\n  tenant_header: x-tenant\n\
         backends:\n  - {{name: fast, url: \"{backend_url}\", models: [m], health_path: /health}}\n\
         tenants:\n  wasm:\n    pipeline:\n      scorers:\n        - {{policy: prefix-affinity, weight: 1.0}}\n"
    );
    let config = switchyard::Config::from_yaml(std::path::Path::new("bench.yaml"), &config)?;
    let router_rt = runtime(1);
    let router_url = router_rt.block_on(async {
        let server = switchyard::Server::bind(config).await?;
        let addr = server
            .local_addr()
            .ok_or_else(|| anyhow::anyhow!("no address"))?;
        tokio::spawn(server.serve(std::future::pending()));
        anyhow::Ok(format!("http://{addr}"))
    })?;

    let client_rt = runtime(1);
    client_rt.block_on(async {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let ready = format!("{router_url}/ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(Instant::now() < deadline, "router never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let targets = [
            ("direct", backend_url.clone(), ""),
            ("switchyard, built-in", router_url.clone(), "default"),
            ("switchyard, wasm pipeline", router_url.clone(), "wasm"),
        ];
        let mut hists: Vec<Histogram<u64>> = targets
            .iter()
            .map(|_| Histogram::new(3).expect("histogram"))
            .collect();
        // Warm-up: connections, the policy's warm instance.
        for (_, url, tenant) in &targets {
            for _ in 0..200 {
                call(&client, url, tenant).await?;
            }
        }
        for _ in 0..requests.div_ceil(BLOCK) {
            for ((_, url, tenant), hist) in targets.iter().zip(&mut hists) {
                for _ in 0..BLOCK {
                    let started = Instant::now();
                    call(&client, url, tenant).await?;
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
            }
        }
        let base = (
            hists[0].value_at_quantile(0.5),
            hists[0].value_at_quantile(0.99),
        );
        println!(
            "{} requests each, one at a time (microseconds)",
            hists[0].len()
        );
        println!(
            "{:<28} {:>8} {:>8} {:>14} {:>14}",
            "path", "median", "p99", "added median", "added p99"
        );
        for ((name, _, _), h) in targets.iter().zip(&hists) {
            let (p50, p99) = (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
            println!(
                "{name:<28} {p50:>8} {p99:>8} {:>14} {:>14}",
                p50 as i64 - base.0 as i64,
                p99 as i64 - base.1 as i64
            );
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

async fn call(client: &reqwest::Client, base: &str, tenant: &str) -> anyhow::Result<()> {
    let mut req = client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(BODY);
    if !tenant.is_empty() {
        req = req.header("x-tenant", tenant);
    }
    let resp = req.send().await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    resp.bytes().await?;
    Ok(())
}
