//! Aggregating samples into a [`BenchReport`] with HDR histograms.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::client::Sample;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
    /// Largest value.
    pub max: f64,
}

/// The result of a benchmark run; `--json` prints it as one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (status, broken stream, timeout).
    pub errors: u64,
    /// Failures by kind, e.g. `{"http 500": 3}`.
    pub error_kinds: BTreeMap<String, u64>,
    /// Wall time from the first request to the last response, seconds.
    pub duration_s: f64,
    /// Time to first token of successful requests.
    pub ttft_ms: Percentiles,
    /// Inter-token latency over every token gap of successful requests.
    pub itl_ms: Percentiles,
    /// End-to-end latency of successful requests.
    pub e2e_ms: Percentiles,
    /// Output tokens of successful requests per second of `duration_s`.
    pub output_tokens_per_s: f64,
    /// Successful requests per second of `duration_s`.
    pub requests_per_s: f64,
    /// Prompt tokens reported in `usage`.
    pub prompt_tokens: u64,
    /// Prompt tokens the servers reported as cached (`usage.prompt_tokens_details`).
    pub cached_tokens: u64,
    /// Output tokens of successful requests.
    pub output_tokens: u64,
    /// `cached_tokens / prompt_tokens`: the prefix cache hit rate the servers saw.
    pub prefix_cache_hit_rate: f64,
    /// Responses per backend, from the `x-switchyard-backend` header (empty without it).
    pub backends: BTreeMap<String, u64>,
}

/// Accumulates samples as requests finish.
#[derive(Debug)]
pub struct Collector {
    ttft: Histogram<u64>,
    itl: Histogram<u64>,
    e2e: Histogram<u64>,
    report: BenchReport,
}

/// Longest latency a histogram tracks: one hour, in microseconds; longer ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // NB: microseconds with 3 significant figures; these bounds are valid constants.
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |us: u64| us as f64 / 1e3;
    Percentiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        mean: h.mean() / 1e3,
        max: ms(h.max()),
    }
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            ttft: histogram(),
            itl: histogram(),
            e2e: histogram(),
            report: BenchReport::default(),
        }
    }
}

impl Collector {
    /// Adds one finished request.
    pub fn add(&mut self, s: &Sample) {
        let r = &mut self.report;
        r.requests += 1;
        if let Some(b) = &s.backend {
            *r.backends.entry(b.clone()).or_default() += 1;
        }
        if let Some(e) = &s.error {
            r.errors += 1;
            *r.error_kinds.entry(e.clone()).or_default() += 1;
            return;
        }
        if let Some(t) = s.ttft {
            self.ttft.saturating_record(micros(t));
        }
        for gap in &s.itls {
            self.itl.saturating_record(micros(*gap));
        }
        self.e2e.saturating_record(micros(s.e2e));
        r.output_tokens += s.output_tokens;
        r.prompt_tokens += s.prompt_tokens;
        r.cached_tokens += s.cached_tokens;
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.report.errors
    }

    /// The report for a run that lasted `elapsed`.
    pub fn finish(&self, elapsed: Duration) -> BenchReport {
        let mut r = self.report.clone();
        r.duration_s = elapsed.as_secs_f64();
        r.ttft_ms = percentiles(&self.ttft);
        r.itl_ms = percentiles(&self.itl);
        r.e2e_ms = percentiles(&self.e2e);
        if r.duration_s > 0.0 {
            r.output_tokens_per_s = r.output_tokens as f64 / r.duration_s;
            r.requests_per_s = (r.requests - r.errors) as f64 / r.duration_s;
        }
        if r.prompt_tokens > 0 {
            r.prefix_cache_hit_rate = r.cached_tokens as f64 / r.prompt_tokens as f64;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_errors_and_backends_are_aggregated() {
        let mut c = Collector::default();
        for i in 1..=100u64 {
            c.add(&Sample {
                ttft: Some(Duration::from_millis(i)),
                itls: vec![Duration::from_millis(5); 3],
                e2e: Duration::from_millis(100 + i),
                output_tokens: 4,
                prompt_tokens: 100,
                cached_tokens: 50,
                backend: Some(if i % 4 == 0 { "b" } else { "a" }.to_owned()),
                ..Sample::default()
            });
        }
        c.add(&Sample {
            error: Some("http 500".into()),
            ..Sample::default()
        });
        let r = c.finish(Duration::from_secs(2));
        assert_eq!((r.requests, r.errors), (101, 1));
        assert!((r.ttft_ms.p50 - 50.0).abs() < 0.1, "{}", r.ttft_ms.p50);
        assert!((r.ttft_ms.p99 - 99.0).abs() < 0.1);
        assert!((r.itl_ms.p90 - 5.0).abs() < 0.01);
        assert_eq!(r.output_tokens_per_s, 200.0);
        assert_eq!(r.prefix_cache_hit_rate, 0.5);
        assert_eq!(r.backends.get("b"), Some(&25));
        let json = serde_json::to_value(&r).expect("serializes");
        for key in [
            "requests",
            "errors",
            "ttft_ms",
            "itl_ms",
            "output_tokens_per_s",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        assert!(json["ttft_ms"].get("p90").is_some());
    }
}
