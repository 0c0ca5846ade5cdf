//! Load clients and a fast backend for `bench/router-latency.sh` (the added latency of
//! Switchyard and of peer routers at a fixed request rate) and `bench/noisy-neighbour.sh`
//! (one tenant's throughput and latency beside a tenant with an expensive policy).
//!
//! - `router_latency backend`: a minimal OpenAI-compatible backend on a free loopback port
//!   (prints `listening on http://...`, then serves until killed). It answers a fixed
//!   non-streaming chat completion at once, plus `/health`, `/v1/models`, and `{}` with 200
//!   for any other path (the SGLang gateway probes `/server_info` and `/model_info`). A
//!   streamed chat (`"stream": true`) is answered after [`PREFILL`] with an SSE stream
//!   whose first event carries, in its `id`, the wall-clock time it was written.
//! - `router_latency load [--rate R] [--warmup S] [--duration S] [--rounds N] NAME=URL...`:
//!   for each round, for each target in turn, sends non-streaming chat requests
//!   (`max_tokens: 1`) open-loop at `R` requests/s (a pacing thread starts each request on
//!   schedule whatever the earlier ones are doing), discards the first `S` seconds
//!   (warm-up), then records per-request latency (send to last body byte) for `--duration`
//!   seconds. Rounds interleave the targets so drift on a shared machine hits all alike.
//!   Prints a Markdown table: median and p99 per target, and the difference to the first
//!   target (the direct path), i.e. the added latency, all measured in the same run. With
//!   `--stream`, requests are streamed and what is measured is the first-byte lag: from the
//!   backend writing its first SSE event (the time `backend` stamped in it) to the client
//!   reading it, which needs this tool's `backend` and the client on one machine.
//! - `router_latency neighbours --run NAME --url URL --key-b KEY [--key-a KEY] [--rate-a R]
//!   [--workers-b C] [--warmup S] [--duration S] [--pids PID,...]`: one run against one router. Tenant B
//!   (`Authorization: Bearer KEY`) is driven closed-loop by `C` workers, each sending its
//!   next request as soon as the last one ends; with `--key-a`, tenant A is driven at the
//!   same time open-loop at `R` requests/s, as `load` does. Prints one JSON line: B's
//!   requests/s, p50 and p99, A's achieved requests/s and failures (non-2xx included),
//!   and the cores busy in the benchmark's processes (this one and `--pids PID,...`) and
//!   in all others during the measured window (from `/proc`, so Linux only).
//! - `router_latency neighbours-table FILE`: reads those JSON lines (several rounds of
//!   several runs, the k-th line of each run being its round k) and prints a Markdown
//!   table, one row per run: B's and A's figures, each the median over its rounds, and B's
//!   throughput and p50 as a ratio of the first run's (B alone) in the same round, the
//!   median over rounds with the lowest and highest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const ANSWER: &str = r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":24,"completion_tokens":1,"total_tokens":25}}"#;
const MODELS: &str =
    r#"{"object":"list","data":[{"id":"m","object":"model","created":0,"owned_by":"bench"}]}"#;

/// The rest of a streamed answer, after the stamped first event.
const STREAM_REST: &str = concat!(
    r#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\ndata: [DONE]\n\n"
);

/// How long the backend "prefills" before a stream's first event, so the router under
/// test has finished sending and waits for it, as it would on a real engine.
const PREFILL: Duration = Duration::from_millis(1);

const USAGE: &str = "usage: router_latency backend
       router_latency load [--stream] [--rate R] [--warmup S] [--duration S] [--rounds N] NAME=URL...
       router_latency neighbours --run NAME --url URL --key-b KEY [--key-a KEY] [--rate-a R] [--workers-b C] [--warmup S] [--duration S] [--pids PID,...]
       router_latency neighbours-table FILE";

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
        Some("neighbours") => neighbours(&args[1..]),
        Some("neighbours-table") => neighbours_table(args.get(1).context(USAGE)?),
        _ => bail!("{USAGE}"),
    }
}

fn backend() -> anyhow::Result<()> {
    runtime(1)?.block_on(async {
        let json = [("content-type", "application/json")];
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/models", get(move || async move { (json, MODELS) }))
            .route("/v1/chat/completions", post(chat_answer))
            .fallback(move || async move { (json, "{}") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        // NB: without `TCP_NODELAY` a stream's first event, written after its head, waits
        // for the head's delayed ACK (40 ms).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// A fixed completion, or for `"stream": true` an SSE stream stamped by [`stamp`].
async fn chat_answer(body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Flag {
        stream: Option<bool>,
    }
    let streamed = serde_json::from_slice::<Flag>(&body).is_ok_and(|f| f.stream == Some(true));
    if !streamed {
        return ([("content-type", "application/json")], ANSWER).into_response();
    }
    let first = futures::stream::once(async {
        tokio::time::sleep(PREFILL).await;
        // NB: stamped when the body is polled for it, i.e. as hyper is about to write it.
        let event = format!(
            r#"data: {{"id":"t{}","object":"chat.completion.chunk","created":0,"model":"m","choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#,
            stamp()
        ) + "\n\n";
        Ok::<_, std::convert::Infallible>(Bytes::from(event))
    });
    let rest = futures::stream::once(async { Ok(Bytes::from_static(STREAM_REST.as_bytes())) });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(first.chain(rest)),
    )
        .into_response()
}

/// Wall-clock nanoseconds since the Unix epoch: comparable across the processes of one
/// machine, which `Instant` is not.
fn stamp() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The first-byte lag of a stream whose first chunk is `first`: now less the backend's
/// stamp in it; `None` when it carries none.
fn first_byte_lag(first: &[u8]) -> Option<Duration> {
    let now = stamp();
    let text = std::str::from_utf8(first).ok()?;
    let digits = text.split_once(r#""id":"t"#)?.1;
    let end = digits.find('"')?;
    let at: u128 = digits[..end].parse().ok()?;
    Some(Duration::from_nanos(
        u64::try_from(now.checked_sub(at)?).ok()?,
    ))
}

// === the clients' shared parts ===

/// Where a client sends its chat requests, and as which tenant.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    endpoint: Arc<str>,
    /// `Authorization` header value, `Bearer <key>`.
    auth: Option<Arc<str>>,
    /// Stream, and measure the first-byte lag instead of the whole request.
    first_byte: bool,
}

impl Target {
    fn new(url: &str, key: Option<&str>, first_byte: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            client,
            endpoint: format!("{}/v1/chat/completions", url.trim_end_matches('/')).into(),
            auth: key.map(|k| format!("Bearer {k}").into()),
            first_byte,
        })
    }

    /// Sends chat request number `n`; when it answered 2xx and its whole body arrived,
    /// returns its latency: send to last byte, or with `first_byte` the first-byte lag.
    async fn chat(&self, n: u64) -> Option<Duration> {
        let sent = Instant::now();
        let body = format!(
            r#"{{"model":"m","max_tokens":1,"stream":{},"messages":[{{"role":"user","content":"Request {n}: say hello to the router, please, in one word."}}]}}"#,
            self.first_byte
        );
        let mut req = self
            .client
            .post(&*self.endpoint)
            .header("content-type", "application/json");
        if let Some(auth) = &self.auth {
            req = req.header("authorization", &**auth);
        }
        let resp = req.body(body).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        if !self.first_byte {
            resp.bytes().await.ok()?;
            return Some(sent.elapsed());
        }
        let mut chunks = resp.bytes_stream();
        let lag = first_byte_lag(&chunks.next().await?.ok()?)?;
        while let Some(chunk) = chunks.next().await {
            chunk.ok()?;
        }
        Some(lag)
    }
}

/// When a run starts, stops, and from when its requests count (the rest is warm-up).
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn from_now(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Self {
            start,
            measure_from: start + warmup,
            end: start + warmup + duration,
        }
    }
}

/// What one client measured: the latency of each successful request, and the failures.
struct Tally {
    hist: Mutex<Histogram<u64>>,
    errors: AtomicU64,
}

impl Tally {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            hist: Mutex::new(Histogram::new(3)?),
            errors: AtomicU64::new(0),
        }))
    }

    fn record(&self, latency: Option<Duration>) {
        if let Some(latency) = latency {
            let us = latency.as_micros() as u64;
            let _ = self.hist.lock().map(|mut h| h.record(us));
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Median and p99 in microseconds, successes, failures.
    fn summary(&self) -> (u64, u64, u64, u64) {
        let h = self.hist.lock().expect("histogram lock");
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.len(),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Open loop: starts a request every `1 / rate` seconds on `rt`, paced from this thread
/// whatever the earlier ones are doing, until the window ends; returns once all are done.
/// Requests due before the window's `measure_from` are not recorded.
fn paced(
    rt: &tokio::runtime::Handle,
    target: &Target,
    rate: f64,
    window: Window,
    tally: &Arc<Tally>,
) {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::new();
    let mut n: u32 = 0;
    loop {
        let due = window.start + period * n;
        if due >= window.end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        n += 1;
        let (target, tally) = (target.clone(), Arc::clone(tally));
        let record = due >= window.measure_from;
        tasks.push(rt.spawn(async move {
            let latency = target.chat(u64::from(n)).await;
            if record {
                tally.record(latency);
            }
        }));
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Closed loop: `workers` tasks each send one request after another until the window
/// ends. Requests sent before the window's `measure_from` are not recorded.
async fn closed(target: &Target, workers: u32, window: Window, tally: &Arc<Tally>) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (target, tally) = (target.clone(), Arc::clone(tally));
        tasks.spawn(async move {
            // Distinct request numbers across workers, so prompts differ as `paced`'s do.
            let mut n = u64::from(w) << 32;
            loop {
                let sent = Instant::now();
                if sent >= window.end {
                    break;
                }
                n += 1;
                let latency = target.chat(n).await;
                if sent >= window.measure_from {
                    tally.record(latency);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

// === load: added latency, open loop ===

/// Load settings.
struct Load {
    /// Measure streams' first-byte lag instead of whole requests.
    stream: bool,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    rounds: usize,
    targets: Vec<(String, String)>,
}

fn parse(args: &[String]) -> anyhow::Result<Load> {
    let mut l = Load {
        stream: false,
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
            "--stream" => l.stream = true,
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
    let mut targets = Vec::new();
    let mut tallies = Vec::new();
    for (_, url) in &l.targets {
        targets.push(Target::new(url, None, l.stream)?);
        tallies.push(Tally::new()?);
    }
    for round in 0..l.rounds {
        for (i, (name, _)) in l.targets.iter().enumerate() {
            eprintln!(
                "round {}/{}: {name} at {} req/s{}",
                round + 1,
                l.rounds,
                l.rate,
                if l.stream { ", streamed" } else { "" }
            );
            let window = Window::from_now(l.warmup, l.duration);
            paced(rt.handle(), &targets[i], l.rate, window, &tallies[i]);
        }
    }
    let base = tallies[0].summary();
    println!(
        "| path | requests | errors | median (us) | p99 (us) | added median (us) | added p99 (us) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, (name, _)) in l.targets.iter().enumerate() {
        let (p50, p99, n, errors) = tallies[i].summary();
        println!(
            "| {name} | {n} | {errors} | {p50} | {p99} | {} | {} |",
            p50 as i64 - base.0 as i64,
            p99 as i64 - base.1 as i64
        );
    }
    Ok(())
}

// === neighbours: one tenant beside a noisy one ===

/// Neighbours settings.
struct Neighbours {
    run: String,
    url: String,
    key_a: Option<String>,
    key_b: String,
    rate_a: f64,
    workers_b: u32,
    warmup: Duration,
    duration: Duration,
    /// Processes of the benchmark besides this one (router, backend), for [`CpuSample`].
    pids: Vec<u32>,
}

fn parse_neighbours(args: &[String]) -> anyhow::Result<Neighbours> {
    let (mut run, mut url, mut key_a, mut key_b) = (None, None, None, None);
    let mut n = Neighbours {
        run: String::new(),
        url: String::new(),
        key_a: None,
        key_b: String::new(),
        rate_a: 1000.0,
        workers_b: 16,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(5),
        pids: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--run" => run = Some(value()?.clone()),
            "--url" => url = Some(value()?.clone()),
            "--key-a" => key_a = Some(value()?.clone()),
            "--key-b" => key_b = Some(value()?.clone()),
            "--rate-a" => n.rate_a = value()?.parse()?,
            "--workers-b" => n.workers_b = value()?.parse()?,
            "--warmup" => n.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--duration" => n.duration = Duration::from_secs_f64(value()?.parse()?),
            "--pids" => {
                for pid in value()?.split(',') {
                    n.pids.push(pid.parse().context("--pids is PID,PID...")?);
                }
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    n.run = run.context("--run is required")?;
    n.url = url.context("--url is required")?;
    n.key_b = key_b.context("--key-b is required")?;
    n.key_a = key_a;
    if n.workers_b == 0 || n.rate_a <= 0.0 || n.duration.is_zero() {
        bail!("--workers-b, --rate-a and --duration must be positive");
    }
    Ok(n)
}

/// One run's figures, one JSON line of `neighbours`' output.
#[derive(Serialize, Deserialize)]
struct NeighboursRun {
    run: String,
    b_requests_per_s: f64,
    b_p50_us: u64,
    b_p99_us: u64,
    b_errors: u64,
    /// Absent when A was not driven.
    a_requests_per_s: Option<f64>,
    a_errors: Option<u64>,
    /// Cores busy in `--pids` and this process during the measured window.
    bench_cores: f64,
    /// Cores busy in every other process: the machine was not the benchmark's alone.
    other_cores: f64,
}

fn neighbours(args: &[String]) -> anyhow::Result<()> {
    let n = parse_neighbours(args)?;
    let rt = runtime(1)?;
    let b = Target::new(&n.url, Some(&n.key_b), false)?;
    let a = n
        .key_a
        .as_deref()
        .map(|key| Target::new(&n.url, Some(key), false))
        .transpose()?;
    let (tally_a, tally_b) = (Tally::new()?, Tally::new()?);
    eprintln!(
        "{}: B closed-loop with {} workers{}",
        n.run,
        n.workers_b,
        if a.is_some() {
            format!(", A open-loop at {} req/s", n.rate_a)
        } else {
            String::new()
        }
    );
    let mut pids = n.pids.clone();
    pids.push(std::process::id());
    let window = Window::from_now(n.warmup, n.duration);
    let cpu = std::thread::scope(|s| {
        if let Some(a) = &a {
            let handle = rt.handle();
            s.spawn(|| paced(handle, a, n.rate_a, window, &tally_a));
        }
        let cpu = s.spawn(|| {
            std::thread::sleep(
                window
                    .measure_from
                    .saturating_duration_since(Instant::now()),
            );
            let before = CpuSample::take(&pids);
            std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
            Ok::<_, anyhow::Error>((before?, CpuSample::take(&pids)?))
        });
        rt.block_on(closed(&b, n.workers_b, window, &tally_b));
        cpu.join().expect("cpu sampler")
    });
    let (before, after) = cpu?;
    let (bench_cores, other_cores) = after.cores_since(&before);
    let secs = n.duration.as_secs_f64();
    let (b_p50_us, b_p99_us, b_ok, b_errors) = tally_b.summary();
    let (_, _, a_ok, a_errors) = tally_a.summary();
    let line = NeighboursRun {
        run: n.run,
        b_requests_per_s: b_ok as f64 / secs,
        b_p50_us,
        b_p99_us,
        b_errors,
        a_requests_per_s: a.as_ref().map(|_| a_ok as f64 / secs),
        a_errors: a.as_ref().map(|_| a_errors),
        bench_cores,
        other_cores,
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// Busy CPU time from `/proc`, in clock ticks: the whole machine's, and that of some
/// processes (each with its threads).
struct CpuSample {
    at: Instant,
    machine_ticks: u64,
    pids_ticks: u64,
}

impl CpuSample {
    fn take(pids: &[u32]) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu = stat.lines().next().context("empty /proc/stat")?;
        // user nice system idle iowait irq softirq steal ...: all but idle and iowait.
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        let machine_ticks = fields.iter().sum::<u64>() - fields[3] - fields[4];
        let mut pids_ticks = 0;
        for pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("process {pid}"))?;
            // Fields after the parenthesised command: state is 3rd, utime 14th, stime 15th.
            let rest = &stat[stat.rfind(')').context("bad /proc/pid/stat")? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            pids_ticks += fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        }
        Ok(Self {
            at: Instant::now(),
            machine_ticks,
            pids_ticks,
        })
    }

    /// Cores used by the processes, and by everything else, since `before`.
    fn cores_since(&self, before: &Self) -> (f64, f64) {
        // NB: /proc counts in USER_HZ, which is 100 on x86 and Arm Linux.
        let ticks = 100.0 * (self.at - before.at).as_secs_f64();
        let pids = self.pids_ticks.saturating_sub(before.pids_ticks) as f64;
        let machine = self.machine_ticks.saturating_sub(before.machine_ticks) as f64;
        (pids / ticks, (machine - pids).max(0.0) / ticks)
    }
}

fn neighbours_table(file: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {file}"))?;
    // Runs in first-seen order; each with its rounds, the k-th line of a run being its
    // round k.
    let mut order: Vec<String> = Vec::new();
    let mut rounds: BTreeMap<String, Vec<NeighboursRun>> = BTreeMap::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let r: NeighboursRun =
            serde_json::from_str(line).with_context(|| format!("{file}:{}", i + 1))?;
        if !rounds.contains_key(&r.run) {
            order.push(r.run.clone());
        }
        rounds.entry(r.run.clone()).or_default().push(r);
    }
    let base = &rounds[order.first().context("no runs")?];
    println!(
        "| run | rounds | B req/s | B p50 (us) | B p99 (us) | B req/s vs alone | B p50 vs alone | B errors | A req/s | A errors | bench CPU (cores) | other CPU (cores) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &order {
        let rs = &rounds[name];
        let figure = |f: &dyn Fn(&NeighboursRun) -> f64| median(rs.iter().map(f).collect());
        // Each round against the baseline's same round: the machine drifts less within a
        // round than across rounds.
        let ratio = |f: &dyn Fn(&NeighboursRun) -> f64| {
            Spread::of(rs.iter().zip(base).map(|(r, b)| f(r) / f(b)).collect())
        };
        let rps = ratio(&|r| r.b_requests_per_s);
        let p50 = ratio(&|r| r.b_p50_us as f64);
        let b_errors: u64 = rs.iter().map(|r| r.b_errors).sum();
        let a_rps: Vec<f64> = rs.iter().filter_map(|r| r.a_requests_per_s).collect();
        let (a_rps, a_errors) = if a_rps.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            let errors: u64 = rs.iter().filter_map(|r| r.a_errors).sum();
            (format!("{:.0}", median(a_rps)), errors.to_string())
        };
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {rps} | {p50} | {b_errors} | {a_rps} | {a_errors} | {:.2} | {:.2} |",
            rs.len(),
            figure(&|r| r.b_requests_per_s),
            figure(&|r| r.b_p50_us as f64),
            figure(&|r| r.b_p99_us as f64),
            figure(&|r| r.bench_cores),
            figure(&|r| r.other_cores),
        );
    }
    Ok(())
}

/// The median of `xs` (the mean of the middle two for an even count); 0 when empty.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// A ratio over rounds: its median, and its lowest and highest when they differ.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(xs: Vec<f64>) -> Self {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self {
            median: median(xs),
            min,
            max,
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}x", self.median)?;
        if self.max > self.min {
            write!(f, " ({:.2}-{:.2})", self.min, self.max)?;
        }
        Ok(())
    }
}
