//! Open-loop load client and fast backend for `bench/router-latency.sh`: the added latency
//! of Switchyard and of peer routers (SGLang gateway, vLLM router) at a fixed request rate.
//!
//! - `router_latency backend`: a minimal OpenAI-compatible backend on a free loopback port
//!   (prints `listening on http://...`, then serves until killed). It answers a fixed
//!   non-streaming chat completion at once, plus `/health`, `/v1/models`, and `{}` with 200
//!   for any other path (the SGLang gateway probes `/server_info` and `/model_info`).
//! - `router_latency load [--rate R] [--warmup S] [--duration S] [--rounds N] NAME=URL...`:
//!   for each round, for each target in turn, sends non-streaming chat requests
//!   (`max_tokens: 1`) open-loop at `R` requests/s (a pacing thread starts each request on
//!   schedule whatever the earlier ones are doing), discards the first `S` seconds
//!   (warm-up), then records per-request latency (send to last body byte) for `--duration`
//!   seconds. Rounds interleave the targets so drift on a shared machine hits all alike.
//!   Prints a Markdown table: median and p99 per target, and the difference to the first
//!   target (the direct path), i.e. the added latency, all measured in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::{get, post};
use hdrhistogram::Histogram;

const ANSWER: &str = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":24,"completion_tokens":1,"total_tokens":25}}"#;
const MODELS: &str =
    r#"{"object":"list","data":[{"id":"m","object":"model","created":0,"owned_by":"bench"}]}"#;

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("backend") => backend(),
        Some("load") => load(&args[1..]),
        _ => bail!(
            "usage: router_latency backend | load [--rate R] [--warmup S] [--duration S] [--rounds N] NAME=URL..."
        ),
    }
}

fn backend() -> anyhow::Result<()> {
    runtime(1)?.block_on(async {
        let json = [("content-type", "application/json")];
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/models", get(move || async move { (json, MODELS) }))
            .route(
                "/v1/chat/completions",
                post(move || async move { (json, ANSWER) }),
            )
            .fallback(move || async move { (json, "{}") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// Load settings.
struct Load {
    rate: f64,
    warmup: Duration,
    duration: Duration,
    rounds: usize,
    targets: Vec<(String, String)>,
}

fn parse(args: &[String]) -> anyhow::Result<Load> {
    let mut l = Load {
        rate: 2000.0,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(5),
        rounds: 3,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rate" => l.rate = value()?.parse()?,
            "--warmup" => l.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--duration" => l.duration = Duration::from_secs_f64(value()?.parse()?),
            "--rounds" => l.rounds = value()?.parse()?,
            t => {
                let (name, url) = t.split_once('=').context("a target is NAME=URL")?;
                l.targets
                    .push((name.to_owned(), url.trim_end_matches('/').to_owned()));
            }
        }
    }
    if l.targets.is_empty() {
        bail!("no targets; the first NAME=URL is the baseline (direct)");
    }
    Ok(l)
}

fn load(args: &[String]) -> anyhow::Result<()> {
    let l = parse(args)?;
    let rt = runtime(1)?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()?;
    let mut hists = Vec::new();
    for _ in &l.targets {
        hists.push(Arc::new(Mutex::new(Histogram::<u64>::new(3)?)));
    }
    let errors = Arc::new(Mutex::new(vec![0u64; l.targets.len()]));
    for round in 0..l.rounds {
        for (i, (name, url)) in l.targets.iter().enumerate() {
            eprintln!(
                "round {}/{}: {name} at {} req/s",
                round + 1,
                l.rounds,
                l.rate
            );
            run(&rt, &client, url, &l, &hists[i], &errors, i);
        }
    }
    let errors = errors.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let quantiles = |h: &Arc<Mutex<Histogram<u64>>>| {
        let h = h.lock().expect("histogram lock");
        (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.len())
    };
    let base = quantiles(&hists[0]);
    println!(
        "| path | requests | errors | median (us) | p99 (us) | added median (us) | added p99 (us) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in l.targets.iter().enumerate() {
        let (p50, p99, n) = quantiles(&hists[i]);
        println!(
            "| {name} | {n} | {} | {p50} | {p99} | {} | {} |",
            errors[i],
            p50 as i64 - base.0 as i64,
            p99 as i64 - base.1 as i64
        );
    }
    Ok(())
}

/// One warm-up plus measured window against `url`, paced from this thread.
fn run(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    l: &Load,
    hist: &Arc<Mutex<Histogram<u64>>>,
    errors: &Arc<Mutex<Vec<u64>>>,
    index: usize,
) {
    let period = Duration::from_secs_f64(1.0 / l.rate);
    let start = Instant::now();
    let measure_from = start + l.warmup;
    let end = measure_from + l.duration;
    let endpoint = format!("{url}/v1/chat/completions");
    let mut tasks = Vec::new();
    let mut n: u32 = 0;
    loop {
        let due = start + period * n;
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        n += 1;
        let (client, endpoint) = (client.clone(), endpoint.clone());
        let (hist, errors) = (Arc::clone(hist), Arc::clone(errors));
        let record = due >= measure_from;
        tasks.push(rt.spawn(async move {
            let body = format!(
                r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":"Request {n}: say hello to the router, please, in one word."}}]}}"#
            );
            let sent = Instant::now();
            let ok = match client
                .post(&endpoint)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let us = sent.elapsed().as_micros() as u64;
            if !record {
                return;
            }
            if ok {
                let _ = hist.lock().map(|mut h| h.record(us));
            } else if let Ok(mut e) = errors.lock() {
                e[index] += 1;
            }
        }));
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
}
