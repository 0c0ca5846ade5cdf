//! The backend's `/metrics`: vLLM's metric names and meanings, plus the simulator's own
//! scheduling lag.
//!
//! Latency histograms are in *simulated* seconds (what a real engine would report; at
//! `--speed 10` they read ten times the wall time). The lag histogram is in wall seconds.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::scheduler::Stats;

/// Name of the scheduling-lag histogram: how late an engine step completed against the
/// simulated schedule, in wall seconds.
pub const LAG_METRIC: &str = "switchyard_sim_step_lag_seconds";

const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const E2E_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const LAG_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The metrics of one backend.
///
/// Owns the registry; the engine loop records into it, the `/metrics` handler encodes
/// it. Gauges and counters mirror the scheduler's [`Stats`] after every step, so a scrape
/// agrees with the cache as of the last completed step.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge<f64, AtomicU64>,
    prefix_queries: Counter,
    prefix_hits: Counter,
    /// Prompt tokens computed, not found cached (llama.cpp's `prompt_tokens_total`).
    prefix_misses: Counter,
    preemptions: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    request_success: Counter,
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    lag: Histogram,
    lag_max: Gauge<f64, AtomicU64>,
    lag_steps: AtomicU64,
    lag_sum_us: AtomicU64,
    lag_max_us: AtomicU64,
    lag_over_1ms: AtomicU64,
    lag_over_10ms: AtomicU64,
}

/// How far behind its simulated schedule an engine (or a fleet) ran, in wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LagSummary {
    /// Engine steps taken.
    pub steps: u64,
    /// Mean lag per step, ms.
    pub mean_ms: f64,
    /// Largest lag, ms.
    pub max_ms: f64,
    /// Steps that completed more than 1 ms late.
    pub over_1ms: u64,
    /// Steps that completed more than 10 ms late.
    pub over_10ms: u64,
}

impl LagSummary {
    /// The summary of several engines together.
    pub fn merge(parts: impl IntoIterator<Item = LagSummary>) -> Self {
        let mut out = LagSummary::default();
        let mut total_ms = 0.0;
        for p in parts {
            out.steps += p.steps;
            total_ms += p.mean_ms * p.steps as f64;
            out.max_ms = out.max_ms.max(p.max_ms);
            out.over_1ms += p.over_1ms;
            out.over_10ms += p.over_10ms;
        }
        if out.steps > 0 {
            out.mean_ms = total_ms / out.steps as f64;
        }
        out
    }
}

impl Metrics {
    /// Metrics labelled with `model_name`, announcing the cache geometry in
    /// `vllm:cache_config_info`.
    pub fn new(model_name: &str, num_gpu_blocks: usize, block_size: usize) -> Self {
        let labels = [
            ("model_name".into(), model_name.to_owned().into()),
            ("engine".into(), "0".into()),
        ];
        let mut m = Self {
            registry: Registry::with_labels(labels.into_iter()),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_usage: Gauge::default(),
            prefix_queries: Counter::default(),
            prefix_hits: Counter::default(),
            prefix_misses: Counter::default(),
            preemptions: Counter::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            request_success: Counter::default(),
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(E2E_BUCKETS),
            lag: Histogram::new(LAG_BUCKETS),
            lag_max: Gauge::default(),
            lag_steps: AtomicU64::new(0),
            lag_sum_us: AtomicU64::new(0),
            lag_max_us: AtomicU64::new(0),
            lag_over_1ms: AtomicU64::new(0),
            lag_over_10ms: AtomicU64::new(0),
        };
        let r = &mut m.registry;
        r.register(
            "vllm:num_requests_running",
            "Number of requests in model execution batches",
            m.running.clone(),
        );
        r.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed",
            m.waiting.clone(),
        );
        r.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage",
            m.kv_usage.clone(),
        );
        r.register(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens",
            m.prefix_queries.clone(),
        );
        r.register(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in terms of number of cached tokens",
            m.prefix_hits.clone(),
        );
        r.register(
            "vllm:num_preemptions",
            "Cumulative number of preemptions",
            m.preemptions.clone(),
        );
        r.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            m.prompt_tokens.clone(),
        );
        r.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            m.generation_tokens.clone(),
        );
        r.register(
            "vllm:request_success",
            "Count of successfully processed requests",
            m.request_success.clone(),
        );
        r.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            m.ttft.clone(),
        );
        r.register(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds",
            m.itl.clone(),
        );
        r.register(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            m.e2e.clone(),
        );
        r.register(
            LAG_METRIC,
            "How late engine steps complete against the simulated schedule, wall seconds",
            m.lag.clone(),
        );
        r.register(
            "switchyard_sim_step_lag_max_seconds",
            "Largest step lag seen, wall seconds",
            m.lag_max.clone(),
        );
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![
            ("block_size".to_owned(), block_size.to_string()),
            ("num_gpu_blocks".to_owned(), num_gpu_blocks.to_string()),
        ])
        .set(1);
        r.register(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            info,
        );
        m
    }

    /// Also exposes the load gauges and prompt counters under the names `llama-server
    /// --metrics` uses, for a slot-cache backend: `llamacpp:requests_processing`,
    /// `llamacpp:requests_deferred`, `llamacpp:kv_cache_usage_ratio`,
    /// `llamacpp:prompt_tokens_total` (tokens computed) and
    /// `llamacpp:prompt_tokens_cached_total` (tokens reused from a slot).
    pub fn with_llamacpp_names(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "llamacpp:requests_processing",
            "Number of requests processing",
            self.running.clone(),
        );
        r.register(
            "llamacpp:requests_deferred",
            "Number of requests deferred",
            self.waiting.clone(),
        );
        r.register(
            "llamacpp:kv_cache_usage_ratio",
            "KV-cache usage. 1 means 100 percent usage",
            self.kv_usage.clone(),
        );
        r.register(
            "llamacpp:prompt_tokens",
            "Number of prompt tokens processed",
            self.prefix_misses.clone(),
        );
        r.register(
            "llamacpp:prompt_tokens_cached",
            "Number of prompt tokens reused from the cache",
            self.prefix_hits.clone(),
        );
        self
    }

    /// Mirrors the scheduler's gauges and counters.
    pub fn record_stats(&self, stats: &Stats) {
        self.running.set(stats.running as i64);
        self.waiting.set(stats.waiting as i64);
        self.kv_usage.set(stats.kv_usage);
        self.prefix_queries
            .inner()
            .store(stats.prefix_queries, Ordering::Relaxed);
        self.prefix_hits
            .inner()
            .store(stats.prefix_hits, Ordering::Relaxed);
        self.prefix_misses.inner().store(
            stats.prefix_queries.saturating_sub(stats.prefix_hits),
            Ordering::Relaxed,
        );
        self.preemptions
            .inner()
            .store(stats.preemptions, Ordering::Relaxed);
    }

    /// Records a first token `ttft_s` simulated seconds after arrival.
    pub fn observe_first_token(&self, ttft_s: f64) {
        self.ttft.observe(ttft_s);
        self.generation_tokens.inc();
    }

    /// Records a later token `itl_s` simulated seconds after the previous one.
    pub fn observe_token(&self, itl_s: f64) {
        self.itl.observe(itl_s);
        self.generation_tokens.inc();
    }

    /// Records a finished request.
    pub fn observe_finished(&self, e2e_s: f64, prompt_tokens: usize) {
        self.e2e.observe(e2e_s);
        self.prompt_tokens.inc_by(prompt_tokens as u64);
        self.request_success.inc();
    }

    /// Records how late a step completed, in wall seconds.
    pub fn observe_lag(&self, lag_s: f64) {
        self.lag.observe(lag_s);
        let us = (lag_s * 1e6) as u64;
        self.lag_steps.fetch_add(1, Ordering::Relaxed);
        self.lag_sum_us.fetch_add(us, Ordering::Relaxed);
        if us > 1_000 {
            self.lag_over_1ms.fetch_add(1, Ordering::Relaxed);
        }
        if us > 10_000 {
            self.lag_over_10ms.fetch_add(1, Ordering::Relaxed);
        }
        if self.lag_max_us.fetch_max(us, Ordering::Relaxed) < us {
            self.lag_max.set(lag_s);
        }
    }

    /// Lag of this engine so far.
    pub fn lag_summary(&self) -> LagSummary {
        let steps = self.lag_steps.load(Ordering::Relaxed);
        let sum_us = self.lag_sum_us.load(Ordering::Relaxed);
        LagSummary {
            steps,
            mean_ms: if steps == 0 {
                0.0
            } else {
                sum_us as f64 / steps as f64 / 1e3
            },
            max_ms: self.lag_max_us.load(Ordering::Relaxed) as f64 / 1e3,
            over_1ms: self.lag_over_1ms.load(Ordering::Relaxed),
            over_10ms: self.lag_over_10ms.load(Ordering::Relaxed),
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // NB: writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_vllm_names() {
        let m = Metrics::new("m", 1234, 16);
        m.record_stats(&Stats {
            running: 3,
            waiting: 2,
            kv_usage: 0.5,
            prefix_queries: 100,
            prefix_hits: 64,
            preemptions: 0,
        });
        m.observe_first_token(0.2);
        let text = m.encode();
        for needle in [
            "vllm:num_requests_running{model_name=\"m\",engine=\"0\"} 3",
            "vllm:num_requests_waiting{model_name=\"m\",engine=\"0\"} 2",
            "vllm:kv_cache_usage_perc{model_name=\"m\",engine=\"0\"} 0.5",
            "vllm:prefix_cache_queries_total{model_name=\"m\",engine=\"0\"} 100",
            "vllm:prefix_cache_hits_total{model_name=\"m\",engine=\"0\"} 64",
            "num_gpu_blocks=\"1234\"",
            "vllm:time_to_first_token_seconds_count{model_name=\"m\",engine=\"0\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
