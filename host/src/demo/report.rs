//! The comparison's figures and two of its views: the terminal table and the JSON object
//! keyed by pipeline name. The HTML view, `Comparison::html`, is in `html`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::Options;
use super::scenario::{BLOCK_SIZE, Pipeline, Scenario};
use super::stack::RunResult;
use switchyard_sim::load::{BenchReport, Percentiles, Workload};

/// One run of one pipeline at one arrival rate.
#[derive(Debug, Clone)]
pub struct Point {
    /// Poisson arrival rate, requests per simulated second.
    pub rate_rps: f64,
    /// What it measured.
    pub run: RunResult,
}

/// The figures of one point of a rate sweep, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Offered rate, requests per second.
    pub rate_rps: f64,
    /// Requests sent.
    pub requests: u64,
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Time to first token, ms.
    pub ttft_ms: Percentiles,
    /// Inter-token latency, ms.
    pub itl_ms: Percentiles,
    /// Output tokens per second.
    pub output_tokens_per_s: f64,
    /// Prefix-cache hit rate over the fleet, tokens.
    pub prefix_cache_hit_rate: f64,
    /// Failed requests.
    pub errors: u64,
}

/// One pipeline's result: the bench fields of its headline run (the highest rate) plus
/// the comparison's own figures. `--json` prints one per pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSummary {
    /// What the pipeline is.
    pub pipeline: String,
    /// The headline run's bench report; its `prefix_cache_hit_rate` is the fleet's, from
    /// the backends' `vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`.
    #[serde(flatten)]
    pub bench: BenchReport,
    /// The headline run's offered rate, requests per second.
    pub rate_rps: f64,
    /// Share of responses per vendor in the headline run, in [0, 1].
    pub vendor_share: BTreeMap<String, f64>,
    /// Share of responses per backend in the headline run, in [0, 1].
    pub backend_share: BTreeMap<String, f64>,
    /// The highest completed requests per second among the swept rates whose TTFT p90
    /// met the objective; 0 when none did.
    pub goodput_rps_at_slo: f64,
    /// Fleet price over the headline run per million output tokens it produced, dollars.
    pub cost_per_mtok: f64,
    /// Decisions in the headline run that chose a prefill/decode split.
    pub split_decisions: u64,
    /// Requests of the headline run served in two phases, prefill then decode.
    pub splits_served: u64,
    /// Every swept rate.
    pub sweep: Vec<SweepPoint>,
}

/// The whole comparison: what ran, and each pipeline's figures.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// The workload, in words.
    pub workload: String,
    /// The fleet, in words.
    pub fleet: String,
    /// Simulator speed of every run.
    pub speed: f64,
    /// Wall seconds requests arrived for, per run.
    pub duration_s: f64,
    /// TTFT objective for goodput, ms.
    pub slo_ttft_ms: f64,
    /// Pipelines in run order (baseline first) with their summaries.
    pub pipelines: Vec<(Pipeline, PipelineSummary)>,
}

/// A `SharedPrefix` workload in words, or the workload's kind.
fn describe(w: &Workload) -> String {
    match w {
        Workload::SharedPrefix(s) => format!(
            "shared-prefix: {} tenants x {} users, {}-token system prompt, {}-token question, {}-token answer",
            s.groups, s.prompts_per_group, s.system_prompt_len, s.question_len, s.output_len
        ),
        Workload::MultiTurn(m) => format!(
            "multi-turn: {} conversations x {} turns",
            m.conversations, m.turns
        ),
        Workload::GroupedChat(g) => format!(
            "grouped-chat: {} groups x {} conversations x {} turns",
            g.groups, g.conversations, g.turns
        ),
        Workload::Trace(t) => format!("trace: {} requests", t.len()),
    }
}

impl Comparison {
    /// Summarises the runs of each pipeline.
    pub fn new(scenario: &Scenario, options: &Options, runs: Vec<(Pipeline, Vec<Point>)>) -> Self {
        let fleet = scenario
            .cards
            .iter()
            .map(|c| {
                let blocks = scenario.num_gpu_blocks(c).unwrap_or(0);
                format!(
                    "{} x {} (${:.2}/h, block LRU cache {} x {} tokens = {}k tokens)",
                    c.replicas,
                    c.profile,
                    c.cost_per_hour,
                    blocks,
                    BLOCK_SIZE,
                    blocks * BLOCK_SIZE / 1000
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let fleet_cost = scenario.fleet_cost_per_hour();
        let pipelines = runs
            .into_iter()
            .filter_map(|(pipeline, points)| {
                let summary = summarise(&pipeline, &points, scenario.slo_ttft_ms, fleet_cost)?;
                Some((pipeline, summary))
            })
            .collect();
        Comparison {
            scenario: scenario.name.to_owned(),
            workload: describe(&scenario.workload),
            fleet,
            speed: options.speed,
            duration_s: options.duration.as_secs_f64(),
            slo_ttft_ms: scenario.slo_ttft_ms,
            pipelines,
        }
    }

    /// The summary of the pipeline called `name`.
    pub fn get(&self, name: &str) -> Option<&PipelineSummary> {
        self.pipelines
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, s)| s)
    }

    /// One JSON object keyed by pipeline name.
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .pipelines
            .iter()
            .map(|(p, s)| (p.name.clone(), serde_json::to_value(s).unwrap_or_default()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// `(TTFT p50 improvement, throughput gain)` of `name` over the first (baseline)
    /// pipeline at the headline rate; `None` when either is missing or the baseline is 0.
    pub fn gain_over_baseline(&self, name: &str) -> Option<(f64, f64)> {
        let (_, base) = self.pipelines.first()?;
        let other = self.get(name)?;
        let ttft = base.bench.ttft_ms.p50 / other.bench.ttft_ms.p50;
        let tput = other.bench.output_tokens_per_s / base.bench.output_tokens_per_s;
        (ttft.is_finite() && tput.is_finite()).then_some((ttft, tput))
    }

    /// The comparison as a plain-text table with the setup above it and the gains over
    /// the baseline below.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "fleet:    {}", self.fleet);
        let _ = writeln!(out, "workload: {}", self.workload);
        let _ = writeln!(
            out,
            "time:     simulator at speed {} ({} s of arrivals per run); figures in simulated time, ratios unchanged",
            self.speed, self.duration_s
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>6} {:>5} {:>9} {:>9} {:>8} {:>10} {:>6} {:>8} {:>8}  vendor share",
            "pipeline",
            "rate",
            "reqs",
            "errs",
            "ttft p50",
            "ttft p90",
            "itl p50",
            "out tok/s",
            "cache",
            "goodput",
            "$/Mtok"
        );
        for (p, s) in &self.pipelines {
            for point in &s.sweep {
                let headline = point.rate_rps == s.rate_rps;
                let _ = writeln!(
                    out,
                    "{:<20} {:>6.1} {:>6} {:>5} {:>7.0}ms {:>7.0}ms {:>6.1}ms {:>10.0} {:>5.0}% {:>8} {:>8}  {}",
                    p.name,
                    point.rate_rps,
                    point.requests,
                    point.errors,
                    point.ttft_ms.p50,
                    point.ttft_ms.p90,
                    point.itl_ms.p50,
                    point.output_tokens_per_s,
                    point.prefix_cache_hit_rate * 100.0,
                    if headline {
                        format!("{:.2}", s.goodput_rps_at_slo)
                    } else {
                        String::new()
                    },
                    if headline {
                        format!("{:.2}", s.cost_per_mtok)
                    } else {
                        String::new()
                    },
                    if headline {
                        shares(&s.vendor_share)
                    } else {
                        String::new()
                    },
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "goodput: highest completed req/s with TTFT p90 <= {} ms; $/Mtok: fleet price per million output tokens",
            self.slo_ttft_ms
        );
        if let Some((base, _)) = self.pipelines.first() {
            for (p, _) in self.pipelines.iter().skip(1) {
                if let Some((ttft, tput)) = self.gain_over_baseline(&p.name) {
                    let _ = writeln!(
                        out,
                        "{} vs {}: TTFT p50 {:.2}x better, throughput {:.2}x",
                        p.name, base.name, ttft, tput
                    );
                }
            }
        }
        for (p, s) in &self.pipelines {
            if s.split_decisions > 0 {
                let _ = writeln!(
                    out,
                    "NOTE {}: {} of the headline run's decisions chose a prefill/decode split; {} were served in two phases, the rest whole by a decode backend",
                    p.name, s.split_decisions, s.splits_served
                );
            }
        }
        out
    }
}

/// `nvidia 50% amd 25% intel 25%`.
pub(super) fn shares(share: &BTreeMap<String, f64>) -> String {
    share
        .iter()
        .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn summarise(
    pipeline: &Pipeline,
    points: &[Point],
    slo_ttft_ms: f64,
    fleet_cost_per_hour: f64,
) -> Option<PipelineSummary> {
    let headline = points
        .iter()
        .max_by(|a, b| a.rate_rps.total_cmp(&b.rate_rps))?;
    let run = &headline.run;
    let mut bench = run.bench.clone();
    bench.prefix_cache_hit_rate = run.prefix_cache_hit_rate;
    let hours = bench.duration_s / 3600.0;
    let cost_per_mtok = if bench.output_tokens > 0 {
        fleet_cost_per_hour * hours / (bench.output_tokens as f64 / 1e6)
    } else {
        0.0
    };
    let goodput_rps_at_slo = points
        .iter()
        .filter(|p| {
            p.run.bench.requests > p.run.bench.errors && p.run.bench.ttft_ms.p90 <= slo_ttft_ms
        })
        .map(|p| p.run.bench.requests_per_s)
        .fold(0.0, f64::max);
    let sweep = points
        .iter()
        .map(|p| SweepPoint {
            rate_rps: p.rate_rps,
            requests: p.run.bench.requests,
            requests_per_s: p.run.bench.requests_per_s,
            ttft_ms: p.run.bench.ttft_ms,
            itl_ms: p.run.bench.itl_ms,
            output_tokens_per_s: p.run.bench.output_tokens_per_s,
            prefix_cache_hit_rate: p.run.prefix_cache_hit_rate,
            errors: p.run.bench.errors,
        })
        .collect();
    Some(PipelineSummary {
        pipeline: pipeline.summary.clone(),
        bench,
        rate_rps: headline.rate_rps,
        vendor_share: run.vendor_share.clone(),
        backend_share: run.backend_share.clone(),
        goodput_rps_at_slo,
        cost_per_mtok,
        split_decisions: run.split_decisions,
        splits_served: run.splits_served,
        sweep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::scenario::{round_robin, switchyard};

    fn point(rate_rps: f64, ttft_p90: f64, requests_per_s: f64, output_tokens: u64) -> Point {
        let mut bench = BenchReport {
            requests: 100,
            requests_per_s,
            output_tokens,
            duration_s: 3600.0,
            ..BenchReport::default()
        };
        bench.ttft_ms.p50 = ttft_p90 / 2.0;
        bench.ttft_ms.p90 = ttft_p90;
        bench.output_tokens_per_s = output_tokens as f64 / 3600.0;
        Point {
            rate_rps,
            run: RunResult {
                bench,
                prefix_cache_hit_rate: 0.5,
                vendor_share: BTreeMap::from([("amd".to_owned(), 1.0)]),
                backend_share: BTreeMap::new(),
                split_decisions: 0,
                splits_served: 0,
            },
        }
    }

    #[test]
    fn the_html_page_has_every_row_and_figure_and_escapes_text() {
        let mut scenario = Scenario::default_demo();
        scenario.name = "<b>demo & co</b>";
        let runs = vec![
            (
                round_robin(),
                vec![
                    point(2.0, 900.0, 1.9, 1_000),
                    point(6.0, 5000.0, 3.0, 2_000),
                ],
            ),
            (
                switchyard(),
                vec![point(2.0, 300.0, 2.0, 1_000), point(6.0, 400.0, 5.8, 4_000)],
            ),
        ];
        let html = Comparison::new(&scenario, &Options::default(), runs).html();
        assert!(html.starts_with("<!doctype html>"), "{html}");
        assert!(html.trim_end().ends_with("</html>"), "{html}");
        assert_eq!(
            html.matches("<tr><td title=").count(),
            4,
            "a row per pipeline and rate"
        );
        assert_eq!(
            html.matches("<figure><svg").count(),
            5 + 6,
            "headline and sweep plots"
        );
        assert!(
            html.contains("&lt;b&gt;demo &amp; co&lt;&#x2f;b&gt;"),
            "{html}"
        );
        assert!(!html.contains("<b>demo"), "text is escaped");
        assert!(html.contains("<li><b>round-robin</b>") && html.contains("<li><b>switchyard</b>"));
    }

    #[test]
    fn goodput_is_the_best_rate_meeting_the_slo_and_cost_is_per_output_token() {
        let mut scenario = Scenario::default_demo();
        scenario.slo_ttft_ms = 1000.0;
        let runs = vec![
            (
                round_robin(),
                vec![
                    point(2.0, 900.0, 1.9, 1_000_000),
                    point(6.0, 5000.0, 3.0, 2_000_000),
                ],
            ),
            (
                switchyard(),
                vec![
                    point(2.0, 300.0, 2.0, 1_000_000),
                    point(6.0, 400.0, 5.8, 4_000_000),
                ],
            ),
        ];
        let c = Comparison::new(&scenario, &Options::default(), runs);
        let rr = c.get("round-robin").expect("baseline");
        assert_eq!(rr.goodput_rps_at_slo, 1.9, "6 req/s missed the objective");
        assert_eq!(rr.rate_rps, 6.0, "the headline is the highest rate");
        let fleet_per_hour = scenario.fleet_cost_per_hour();
        assert!((rr.cost_per_mtok - fleet_per_hour / 2.0).abs() < 1e-9);
        let sy = c.get("switchyard").expect("switchyard");
        assert_eq!(sy.goodput_rps_at_slo, 5.8);
        assert_eq!(
            sy.bench.prefix_cache_hit_rate, 0.5,
            "the fleet's rate replaces usage's"
        );
        let (ttft, tput) = c.gain_over_baseline("switchyard").expect("both ran");
        assert!((ttft - 12.5).abs() < 1e-9 && (tput - 2.0).abs() < 1e-9);

        let json = c.to_json();
        for name in ["round-robin", "switchyard"] {
            for key in [
                "requests",
                "errors",
                "ttft_ms",
                "itl_ms",
                "output_tokens_per_s",
                "prefix_cache_hit_rate",
                "goodput_rps_at_slo",
                "cost_per_mtok",
            ] {
                assert!(json[name].get(key).is_some(), "{name}.{key}");
            }
        }
        assert_eq!(
            json["switchyard"]["sweep"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
