//! The load generator: sends a workload to any OpenAI-compatible URL and reports latency
//! and throughput.
//!
//! Principal items:
//!
//! - [`run`]: one benchmark run, [`BenchConfig`] in, [`BenchReport`] out.
//! - [`Workload`]: [`SharedPrefix`] (SGLang's generated-shared-prefix shape, with llm-d's
//!   preset [`SharedPrefix::LLM_D`]), [`MultiTurn`] conversations, [`GroupedChat`]
//!   (conversations on per-group documents behind a common head), or a JSONL trace
//!   ([`trace::load`], Mooncake `hash_ids` included).
//! - [`Arrival`]: Poisson, fixed-interval, the trace's own timestamps, or all at once
//!   (bounded by `max_concurrency`).
//!
//! Every request streams; TTFT is the time to the first content chunk, ITL the gaps
//! between content chunks, e2e the time to `[DONE]`. A response header
//! `x-switchyard-backend` (set by the router) is counted per backend.

mod client;
mod report;
mod text;
pub mod trace;
mod workload;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use client::BACKEND_HEADER;
pub use report::{BenchReport, Percentiles};
pub use trace::TraceEntry;
pub use workload::{GroupedChat, Message, MultiTurn, Session, SharedPrefix, Turn, Workload};

/// Errors that stop a benchmark before it runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot run.
    #[error("invalid benchmark: {0}")]
    Config(String),
    /// A trace file is unreadable or malformed.
    #[error("trace {path} line {line}: {reason}")]
    Trace {
        /// The file.
        path: String,
        /// 1-based line, 0 when the file could not be read.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
}

/// Which OpenAI endpoint to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// `/v1/chat/completions` with `messages`.
    Chat,
    /// `/v1/completions` with the messages joined into `prompt`.
    Completions,
}

/// When sessions start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Arrival {
    /// Exponential gaps with this mean rate, sessions per second.
    Poisson(f64),
    /// Evenly spaced at this rate, sessions per second.
    Fixed(f64),
    /// At each trace entry's `timestamp` (entries without one start at once).
    Trace,
    /// All at once; `max_concurrency` is then the only limit.
    Immediate,
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Base URLs, e.g. `http://127.0.0.1:8080`: one for a router; with several, sessions
    /// go round-robin across them (a fleet without a router).
    pub urls: Vec<String>,
    /// `model` field of every request.
    pub model: String,
    /// Endpoint.
    pub api: Api,
    /// What to send.
    pub workload: Workload,
    /// When to send it.
    pub arrival: Arrival,
    /// Sessions (requests, for single-turn workloads) in flight at most; `None` is
    /// unbounded. When reached, arrivals wait for a slot.
    pub max_concurrency: Option<usize>,
    /// Stop starting requests after this long; the workload repeats until then. `None`
    /// sends one pass.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub max_requests: Option<usize>,
    /// Seed of the workload text and Poisson gaps.
    pub seed: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra headers on every request, e.g. a tenant header.
    pub headers: Vec<(String, String)>,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Send every session of prefix group `g` to URL `g mod N` instead of round-robin: the
    /// oracle placement, where every group has a home and keeps it. Sessions without a
    /// group still go round-robin.
    pub pin_groups: bool,
}

impl BenchConfig {
    /// A config with defaults: chat API, immediate arrivals, no limits but one pass,
    /// seed 0, 10-minute timeout, no progress bar.
    pub fn new(url: impl Into<String>, workload: Workload) -> Self {
        Self {
            urls: vec![url.into()],
            model: "meta-llama/Llama-3.1-8B-Instruct".to_owned(),
            api: Api::Chat,
            workload,
            arrival: Arrival::Immediate,
            max_concurrency: None,
            duration: None,
            max_requests: None,
            seed: 0,
            timeout: Duration::from_secs(600),
            headers: Vec::new(),
            progress: false,
            pin_groups: false,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.urls.is_empty() {
            return bad("no URL to send to");
        }
        if self.workload.is_empty() {
            return bad("the workload sends no requests");
        }
        if let Arrival::Poisson(r) | Arrival::Fixed(r) = self.arrival
            && !(r > 0.0 && r.is_finite())
        {
            return bad("the arrival rate must be a positive number");
        }
        if self.max_concurrency == Some(0) {
            return bad("max concurrency must be at least 1");
        }
        if self.arrival == Arrival::Immediate
            && self.duration.is_some()
            && self.max_concurrency.is_none()
        {
            return bad("a timed run with immediate arrivals needs a max concurrency");
        }
        Ok(())
    }
}

/// State shared by the session tasks of a run.
struct Run {
    client: reqwest::Client,
    /// Endpoint URLs, one per base URL.
    endpoints: Vec<String>,
    config: BenchConfig,
    started: Instant,
    issued: AtomicU64,
    /// Bounds sessions in flight (`max_concurrency`).
    limit: Option<Arc<Semaphore>>,
    collector: Mutex<report::Collector>,
    bar: ProgressBar,
}

impl Run {
    /// Whether another request may start now.
    fn may_issue(&self) -> bool {
        let within_time = self
            .config
            .duration
            .is_none_or(|d| self.started.elapsed() < d);
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        within_time && self.config.max_requests.is_none_or(|m| n < m as u64)
    }

    /// Runs a session's turns in order; `_permit` holds its concurrency slot until done.
    async fn session(
        self: Arc<Self>,
        session: Session,
        endpoint: usize,
        _permit: Option<OwnedSemaphorePermit>,
    ) {
        let mut history: Vec<Message> = Vec::new();
        for turn in session.turns {
            if !self.may_issue() {
                return;
            }
            history.extend(turn.messages);
            let body = client::body(
                self.config.api,
                &self.config.model,
                &history,
                turn.max_tokens,
            );
            let sample = client::send(
                &self.client,
                &self.endpoints[endpoint],
                &body,
                self.config.timeout,
            )
            .await;
            let failed = sample.error.is_some();
            {
                let mut c = self.collector.lock().unwrap_or_else(|e| e.into_inner());
                c.add(&sample);
                self.bar.set_message(format!("{} errors", c.errors()));
            }
            self.bar.inc(1);
            if failed {
                return;
            }
            history.push(Message {
                role: "assistant",
                content: sample.text,
            });
        }
    }
}

/// Runs one benchmark and reports it.
///
/// # Errors
///
/// [`Error::Config`] for a configuration that cannot run, [`Error::Client`] if the HTTP
/// client cannot be built. Failed requests are not errors: they are counted in the
/// report.
pub async fn run(config: BenchConfig) -> Result<BenchReport, Error> {
    config.validate()?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &config.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Error::Config(format!("invalid header name {k:?}")))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| Error::Config(format!("invalid value for header {k}")))?;
        headers.insert(name, value);
    }
    let mut client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(30));
    if config.pin_groups {
        // NB: pinned, the generator talks to the engines themselves, and llama-server
        // closes a keep-alive connection after 5 idle seconds: a request sent on it as it
        // closes fails before the engine sees it ("error sending request"), which a
        // router would retry. A connection per request costs a loopback handshake.
        client = client.pool_max_idle_per_host(0);
    }
    let client = client.build().map_err(Error::Client)?;
    let path = match config.api {
        Api::Chat => "/v1/chat/completions",
        Api::Completions => "/v1/completions",
    };
    let endpoints = config
        .urls
        .iter()
        .map(|u| format!("{}{path}", u.trim_end_matches('/')))
        .collect();
    let expected = match (config.duration, config.max_requests) {
        (None, Some(m)) => Some(m.min(config.workload.len())),
        (None, None) => Some(config.workload.len()),
        (Some(_), m) => m,
    };
    let bar = progress_bar(config.progress, expected);
    let sessions = config.workload.sessions(config.seed);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed);
    let run = Arc::new(Run {
        client,
        endpoints,
        limit: config.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
        started: Instant::now(),
        issued: AtomicU64::new(0),
        collector: Mutex::new(report::Collector::default()),
        bar,
        config,
    });
    let mut tasks = JoinSet::new();
    let mut at_ms = 0.0;
    let mut pass = 0usize;
    let mut next_endpoint = 0usize;
    'passes: loop {
        for session in &sessions {
            let start = match run.config.arrival {
                Arrival::Immediate => 0.0,
                Arrival::Trace => session.at_ms.unwrap_or(0.0),
                Arrival::Fixed(rate) => {
                    let t = at_ms;
                    at_ms += 1e3 / rate;
                    t
                }
                Arrival::Poisson(rate) => {
                    let t = at_ms;
                    let u: f64 = rng.random_range(f64::EPSILON..1.0);
                    at_ms += -u.ln() / rate * 1e3;
                    t
                }
            };
            // Trace timestamps restart with each pass.
            let offset = if run.config.arrival == Arrival::Trace {
                pass as f64 * trace_span(&sessions)
            } else {
                0.0
            };
            let when = run.started + Duration::from_secs_f64((start + offset) / 1e3);
            if run.config.duration.is_some_and(|d| when > run.started + d)
                || run
                    .config
                    .max_requests
                    .is_some_and(|m| run.issued.load(Ordering::Relaxed) >= m as u64)
            {
                break 'passes;
            }
            tokio::time::sleep_until(when).await;
            let permit = match &run.limit {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            if run
                .config
                .duration
                .is_some_and(|d| run.started.elapsed() >= d)
            {
                break 'passes;
            }
            // Reap finished sessions so the set does not grow with the run.
            while tasks.try_join_next().is_some() {}
            let endpoint = match session.group.filter(|_| run.config.pin_groups) {
                Some(group) => group % run.endpoints.len(),
                None => {
                    let e = next_endpoint;
                    next_endpoint = (next_endpoint + 1) % run.endpoints.len();
                    e
                }
            };
            tasks.spawn(run.clone().session(session.clone(), endpoint, permit));
        }
        pass += 1;
        if run
            .config
            .duration
            .is_none_or(|d| run.started.elapsed() >= d)
        {
            break;
        }
    }
    while tasks.join_next().await.is_some() {}
    run.bar.finish_and_clear();
    let elapsed = run.started.elapsed();
    let report = run
        .collector
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .finish(elapsed);
    Ok(report)
}

/// Milliseconds one pass over a trace spans (at least 1).
fn trace_span(sessions: &[Session]) -> f64 {
    sessions.iter().filter_map(|s| s.at_ms).fold(1.0, f64::max)
}

fn progress_bar(wanted: bool, len: Option<usize>) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n as u64),
        None => ProgressBar::new_spinner(),
    };
    let style =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.with_style(style)
}

#[cfg(test)]
mod tests;
