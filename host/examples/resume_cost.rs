//! What following streams for resumption costs on the healthy path: the time per SSE event
//! with resumption on (`proxy.max_resumes: 2`, every event read for its text) and off
//! (`max_resumes: 0`, events passed through as bytes), in the same run.
//!
//! Run: `cargo run --release -p switchyard --example resume_cost [-- STREAMS]`
//!
//! Two measures:
//! - the follower alone ([`switchyard::proxy::SseFollower`]) over vLLM-shaped chat chunks,
//!   one event a chunk, against the off path's work (counting `data:` events);
//! - end to end: a backend streaming `EVENTS` chat chunks at once, through two routers in
//!   this process (resumption on and off), streams interleaved in blocks so drift on a
//!   shared machine hits both alike; the added time per event is the difference of the
//!   medians divided by `EVENTS`.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use hdrhistogram::Histogram;
use switchyard::proxy::{Fed, SseFollower};

const EVENTS: usize = 500;
const BLOCK: usize = 10;
const BODY: &str = r#"{"model":"m","stream":true,"max_tokens":500,"messages":[{"role":"user","content":"Tell me a story."}]}"#;

/// One chat chunk as vLLM streams it, carrying token `i`.
fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-5f0e6a2b8c1d4e3f\",\"object\":\"chat.completion.chunk\",\"created\":1764400000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    ))
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Nanoseconds per event: following each event vs only counting its `data:` lines.
fn follower_alone() -> (f64, f64) {
    let events: Vec<Bytes> = (0..EVENTS).map(event).collect();
    let rounds = 400;
    let mut off = Duration::ZERO;
    let mut on = Duration::ZERO;
    let mut sink = 0usize;
    for _ in 0..rounds {
        let started = Instant::now();
        for e in &events {
            sink += e.windows(5).filter(|w| w == b"data:").count();
        }
        off += started.elapsed();
        let started = Instant::now();
        let mut f = SseFollower::new();
        for e in &events {
            sink += e.windows(5).filter(|w| w == b"data:").count();
            if let Fed::Pass(b) = f.feed(e.clone()) {
                sink += b.len();
            }
        }
        on += started.elapsed();
    }
    std::hint::black_box(sink);
    let per = |d: Duration| d.as_nanos() as f64 / (rounds * EVENTS) as f64;
    (per(off), per(on))
}

fn main() -> anyhow::Result<()> {
    let streams: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(400);
    let (off, on) = follower_alone();
    println!(
        "follower alone: off {off:.0} ns/event, on {on:.0} ns/event, added {:.0} ns/event",
        on - off
    );

    let backend_rt = runtime(1);
    let backend_url = backend_rt.block_on(async {
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/v1/chat/completions",
                post(|| async {
                    let mut events: Vec<Result<Bytes, std::io::Error>> =
                        (0..EVENTS).map(|i| Ok(event(i))).collect();
                    events.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(futures::stream::iter(events)))
                        .expect("response")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok(url)
    })?;

    let router_rt = runtime(1);
    let mut routers = Vec::new();
    for max_resumes in [0, 2] {
        let config = format!(
            "listen: 127.0.0.1:0\nproxy:\n  max_resumes: {max_resumes}\n\
             backends:\n  - {{name: fast, url: \"{backend_url}\", models: [m], engine: vllm, health_path: /health}}\n"
        );
        let config = switchyard::Config::from_yaml(std::path::Path::new("bench.yaml"), &config)?;
        routers.push(router_rt.block_on(async {
            let server = switchyard::Server::bind(config).await?;
            let addr = server
                .local_addr()
                .ok_or_else(|| anyhow::anyhow!("no address"))?;
            tokio::spawn(server.serve(std::future::pending()));
            anyhow::Ok(format!("http://{addr}"))
        })?);
    }

    let client_rt = runtime(1);
    client_rt.block_on(async {
        let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
        for url in &routers {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !client
                .get(format!("{url}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                anyhow::ensure!(Instant::now() < deadline, "router never became ready");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for _ in 0..20 {
                call(&client, url).await?;
            }
        }
        let mut hists = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
        for _ in 0..streams.div_ceil(BLOCK) {
            for (url, hist) in routers.iter().zip(&mut hists) {
                for _ in 0..BLOCK {
                    let started = Instant::now();
                    call(&client, url).await?;
                    hist.record(started.elapsed().as_micros() as u64)?;
                }
            }
        }
        println!(
            "{} streams of {EVENTS} events each through the router (microseconds per stream)",
            hists[0].len()
        );
        for (name, h) in ["resume off", "resume on"].iter().zip(&hists) {
            println!(
                "{name:<11} median {:>7} p99 {:>7}  ({:.2} us/event at the median)",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.5) as f64 / EVENTS as f64
            );
        }
        let added = hists[1].value_at_quantile(0.5) as f64 - hists[0].value_at_quantile(0.5) as f64;
        println!(
            "added by following: {:.2} us/event (median stream time difference / {EVENTS})",
            added / EVENTS as f64
        );
        anyhow::Ok(())
    })?;
    Ok(())
}

async fn call(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let resp = client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    let body = resp.bytes().await?;
    anyhow::ensure!(body.ends_with(b"data: [DONE]\n\n"), "stream cut short");
    Ok(())
}
