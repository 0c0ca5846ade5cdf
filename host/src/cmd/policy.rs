//! `switchyard policy ...`: tools for policy authors: check a component, run it on a
//! case, benchmark it against the native built-in, scaffold a new policy crate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::scaffold::{self, Kind, Lang};
use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use switchyard::names::{PolicyName, TenantName};
use switchyard::policy::{
    BackendFacts, Candidate, FleetFacts, Limits, Outcome, Policies, PolicyKind, PolicyQuota,
    RequestFacts, builtin_place,
};

/// Subcommands of `switchyard policy`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a component against the worlds; print its world, size and compile time.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run a component once on a case file; print the decision, fuel, memory and logs.
    Run {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The case: fleet, request, candidates and the policy's config (see
        /// `examples/policy-case.json`).
        #[arg(long)]
        input: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure per-decision latency against the native built-in, in the same run. Without
    /// a FILE, runs the suite over the shipped policies (one scorer, a full pipeline, 1000
    /// candidates, upload to active).
    Bench {
        /// The component (`.wasm`); omit it for the shipped-policy suite.
        file: Option<PathBuf>,
        /// Candidates per decision.
        #[arg(long, default_value_t = 100)]
        candidates: u32,
        /// Timed decisions.
        #[arg(long, default_value_t = 20_000)]
        iterations: u32,
        /// The policy's config, as JSON.
        #[arg(long, default_value = "null")]
        config: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Scaffold a new policy: a Rust crate in this repository's `policies/` (a workspace
    /// member), or with `--path` a standalone crate anywhere; with `--lang python` a
    /// Python project built with componentize-py.
    New {
        /// Policy name, lowercase kebab-case.
        name: String,
        /// The world it targets.
        #[arg(long, value_enum, default_value_t = Kind::Scorer)]
        kind: Kind,
        /// The language it is written in.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Parent directory of a workspace member crate.
        #[arg(long, default_value = "policies", conflicts_with = "path")]
        dir: PathBuf,
        /// Create a standalone crate in this directory (which must be absent or empty),
        /// outside any workspace, depending on the SDK by path.
        #[arg(long)]
        path: Option<PathBuf>,
        /// The SDK a standalone crate or a Python project builds against: a Switchyard
        /// checkout's `sdk/` directory. Default: the one beside the source tree this
        /// binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Runs a `switchyard policy` subcommand.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Check { file, json } => check(&file, json),
        Command::Run { file, input, json } => run_case(&file, &input, json),
        Command::Bench {
            file,
            candidates,
            iterations,
            config,
            json,
        } => match file {
            Some(file) => bench(&file, candidates, iterations, &config, json),
            None => suite(iterations, json),
        },
        Command::New {
            name,
            kind,
            lang,
            dir,
            path,
            sdk,
        } => scaffold::scaffold(&scaffold::Target {
            name,
            kind,
            lang,
            dir,
            path,
            sdk,
        }),
    }
}

/// Loads `file` into a fresh runtime; returns the runtime and the version's label.
fn load(file: &Path, smoke: bool) -> Result<(Policies, switchyard::policy::PolicyVersion)> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let policies = Policies::new(Limits::default(), None)?;
    let name = PolicyName::new(&policy_name(file))?;
    let version = policies
        .upload(&name, &bytes, smoke)
        .with_context(|| format!("{} is not a usable policy", file.display()))?;
    Ok((policies, version))
}

/// A registry name from a file name: `prefix_affinity.wasm` -> `prefix-affinity`.
fn policy_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "policy".into()
    } else {
        name
    }
}

/// Longest the tools wait for a policy's optimized code: longer than the runtime's own
/// bound on the compile ([`Limits::optimize_timeout`]), which then reports the failure.
fn optimize_wait() -> Duration {
    Limits::default().optimize_timeout + Duration::from_secs(30)
}

/// Waits for `v`'s optimized code, so what is timed or reported next runs on it.
fn optimized(policies: &Policies, v: &switchyard::policy::PolicyVersion) -> Result<()> {
    let wait = optimize_wait();
    if !policies.wait_optimized(&v.label(), wait)? {
        bail!(
            "{}: no optimized code after {wait:?} (see the log)",
            v.label()
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct CheckReport {
    world: PolicyKind,
    size_bytes: usize,
    /// The upload's compile (baseline compiler when tiered), milliseconds.
    compile_ms: f64,
    /// From the start of the upload until the optimized code was in place, milliseconds.
    optimized_ms: f64,
    name: String,
    version: String,
    sha256: String,
}

fn check(file: &Path, json: bool) -> Result<()> {
    let started = Instant::now();
    let (policies, v) = load(file, true)?;
    optimized(&policies, &v)?;
    let report = CheckReport {
        world: v.kind,
        size_bytes: v.size_bytes,
        compile_ms: v.compile_ms,
        optimized_ms: started.elapsed().as_secs_f64() * 1e3,
        name: v.name,
        version: v.version,
        sha256: v.sha256,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "ok: {} targets the {} world; {} bytes; compiled in {:.1} ms (serving), optimized code after {:.1} ms; version {}",
            file.display(),
            report.world.as_str(),
            report.size_bytes,
            report.compile_ms,
            report.optimized_ms,
            report.version
        );
    }
    Ok(())
}

/// A case for `policy run`: what the policy is configured with and decides on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The policy's config.
    #[serde(default)]
    config: serde_json::Value,
    /// The fleet's static facts.
    fleet: Vec<BackendFacts>,
    /// The request.
    request: RequestFacts,
    /// The candidates; `backend` indexes `fleet`.
    candidates: Vec<Candidate>,
}

#[derive(Serialize)]
struct RunReport {
    decision: Outcome,
    fuel_used: u64,
    peak_memory_bytes: usize,
    logs: Vec<String>,
    dropped_logs: u32,
    elapsed_us: f64,
}

fn run_case(file: &Path, input: &Path, json: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(input).with_context(|| format!("read {}", input.display()))?;
    let case: Case = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid case", input.display()))?;
    if let Some(bad) = case
        .candidates
        .iter()
        .find(|c| c.backend as usize >= case.fleet.len())
    {
        bail!(
            "{}: candidate backend {} is not in the fleet of {}",
            input.display(),
            bad.backend,
            case.fleet.len()
        );
    }
    let (policies, v) = load(file, false)?;
    // NB: the optimized code, as a router would run it after its first moments.
    optimized(&policies, &v)?;
    let stage = policies.stage(&v.label(), &case.config)?;
    let fleet = FleetFacts {
        generation: 1,
        backends: case.fleet,
    };
    let started = Instant::now();
    let (decision, call) = stage
        .run(&fleet, &case.request, &case.candidates)
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let report = RunReport {
        decision,
        fuel_used: call.fuel_used,
        peak_memory_bytes: call.peak_memory_bytes,
        logs: call.logs,
        dropped_logs: call.dropped_logs,
        elapsed_us: started.elapsed().as_secs_f64() * 1e6,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("decision: {}", serde_json::to_string(&report.decision)?);
        println!("fuel used: {}", report.fuel_used);
        println!("peak memory: {} bytes", report.peak_memory_bytes);
        for line in &report.logs {
            println!("log {line}");
        }
        if report.dropped_logs > 0 {
            println!("({} log lines dropped)", report.dropped_logs);
        }
    }
    Ok(())
}

/// A synthetic fleet of `n` backends across three vendors, and candidates with varied
/// load and cache, for benchmarks.
pub fn synthetic(n: u32) -> (FleetFacts, RequestFacts, Vec<Candidate>) {
    const VENDORS: [(&str, &str); 3] = [("nvidia", "h100"), ("amd", "mi300x"), ("intel", "gaudi3")];
    let fleet = FleetFacts {
        generation: 1,
        backends: (0..n)
            .map(|i| {
                let (vendor, accelerator) = VENDORS[i as usize % 3];
                BackendFacts {
                    name: format!("b{i}"),
                    vendor: vendor.into(),
                    accelerator: accelerator.into(),
                    region: if i % 2 == 0 { "eu-west" } else { "us-east" }.into(),
                    labels: vec![("tier".into(), "gold".into())],
                    cost_per_hour: 2.0 + (i % 4) as f64,
                    prefill_tokens_per_s: 30_000.0,
                    decode_tokens_per_s: 100.0,
                    kv_capacity_tokens: 400_000,
                    kv_link_gbytes_per_s: 45.0,
                    kv_bytes_per_token: 131_072,
                    ..BackendFacts::default()
                }
            })
            .collect(),
    };
    let candidates = (0..n)
        .map(|i| Candidate {
            backend: i,
            waiting: i % 7,
            running: 8 + i % 13,
            kv_usage: (i % 10) as f32 / 10.0,
            cached_prefix_tokens: (i % 5) * 512,
            in_flight_requests: i % 11,
            in_flight_prefill_tokens: (i % 3) * 1024,
            prefill_tokens_per_s: 30_000.0,
            decode_tokens_per_s: 100.0,
            metrics_age_ms: 40,
        })
        .collect();
    let request = RequestFacts {
        id: 1,
        tenant: "bench".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 4096,
        max_tokens: 256,
        labels: vec![("data-class".into(), "public".into())],
        ..RequestFacts::default()
    };
    (fleet, request, candidates)
}

/// Median and p99 of a latency histogram, microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median, microseconds.
    pub median_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
}

/// Times `f` `iterations` times after a warm-up, one sample per call.
pub fn time(iterations: u32, mut f: impl FnMut()) -> Latency {
    for _ in 0..(iterations / 10).max(100) {
        f();
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..iterations {
        let t = Instant::now();
        f();
        let _ = h.record(t.elapsed().as_nanos() as u64);
    }
    Latency {
        median_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

#[derive(Serialize)]
struct BenchReport {
    median_us: f64,
    p99_us: f64,
    baseline_median_us: f64,
    baseline_p99_us: f64,
    candidates: u32,
    world: PolicyKind,
    /// From the start of the upload until the policy could decide, milliseconds.
    upload_ms: f64,
    /// From the start of the upload until its optimized code was in place (what the
    /// decisions above ran on), milliseconds.
    optimized_ms: f64,
}

fn bench(file: &Path, candidates: u32, iterations: u32, config: &str, json: bool) -> Result<()> {
    if candidates == 0 {
        bail!("--candidates must be at least 1");
    }
    let config: serde_json::Value =
        serde_json::from_str(config).context("--config is not valid JSON")?;
    let upload_started = Instant::now();
    let (policies, v) = load(file, false)?;
    let stage = policies.stage(&v.label(), &config)?;
    let upload_ms = upload_started.elapsed().as_secs_f64() * 1e3;
    optimized(&policies, &v)?;
    let optimized_ms = upload_started.elapsed().as_secs_f64() * 1e3;
    let (fleet, req, cands) = synthetic(candidates);
    // Fail loudly before timing if the policy cannot run on this input.
    stage
        .run(&fleet, &req, &cands)
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let wasm = time(iterations, || {
        let _ = std::hint::black_box(stage.run(&fleet, &req, &cands));
    });
    let native = time(iterations, || {
        std::hint::black_box(builtin_place(std::hint::black_box(&cands)));
    });
    let report = BenchReport {
        median_us: wasm.median_us,
        p99_us: wasm.p99_us,
        baseline_median_us: native.median_us,
        baseline_p99_us: native.p99_us,
        candidates,
        world: v.kind,
        upload_ms,
        optimized_ms,
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} ({}) over {candidates} candidates, {iterations} decisions:",
            v.label(),
            v.kind.as_str()
        );
        println!(
            "  wasm      median {:>8.2} us   p99 {:>8.2} us",
            report.median_us, report.p99_us
        );
        println!(
            "  built-in  median {:>8.2} us   p99 {:>8.2} us   (ratio {:.1}x at the median)",
            report.baseline_median_us,
            report.baseline_p99_us,
            report.median_us / report.baseline_median_us.max(1e-3)
        );
        println!(
            "  upload to ready: {:.1} ms; optimized code after {:.1} ms",
            report.upload_ms, report.optimized_ms
        );
    }
    Ok(())
}

/// One row of the suite: a scenario timed beside the built-in on the same candidates.
#[derive(Serialize)]
struct SuiteRow {
    scenario: String,
    candidates: u32,
    median_us: f64,
    p99_us: f64,
    baseline_median_us: f64,
    baseline_p99_us: f64,
    ratio_median: f64,
}

/// Upload-to-active time of one shipped policy.
#[derive(Serialize)]
struct UploadRow {
    policy: String,
    size_bytes: usize,
    median_ms: f64,
    max_ms: f64,
    /// Median time from the start of the upload until its optimized code was in place.
    optimized_median_ms: f64,
}

#[derive(Serialize)]
struct SuiteReport {
    decisions: Vec<SuiteRow>,
    uploads: Vec<UploadRow>,
}

fn stage_spec(policy: &str, config: serde_json::Value) -> switchyard::policy::StageSpec {
    switchyard::policy::StageSpec::new(policy, config)
}

fn scorers(names: &[&str]) -> Vec<switchyard::policy::WeightedStageSpec> {
    names
        .iter()
        .map(|n| switchyard::policy::WeightedStageSpec {
            stage: stage_spec(n, serde_json::Value::Null),
            weight: 1.0 / names.len() as f32,
        })
        .collect()
}

/// The benchmark scenarios over the shipped policies, each beside the native
/// built-in pipeline measured in the same run.
fn suite(iterations: u32, json: bool) -> Result<()> {
    use switchyard::policy::PipelineSpec;
    let policies = Policies::new(Limits::default(), None)?;
    let shipped = policies.install_shipped()?;
    for v in &shipped {
        optimized(&policies, v)?;
    }
    let allow_all = serde_json::json!({ "default": "allow" });
    let scenarios: Vec<(&str, u32, PipelineSpec)> = vec![
        (
            "wasm scorer (prefix-affinity)",
            100,
            PipelineSpec {
                scorers: scorers(&["prefix-affinity"]),
                ..PipelineSpec::default()
            },
        ),
        (
            "pipeline: 1 filter + 3 scorers + max",
            100,
            PipelineSpec {
                filters: vec![stage_spec("data-residency", allow_all)],
                scorers: scorers(&["prefix-affinity", "least-load", "kv-headroom"]),
                ..PipelineSpec::default()
            },
        ),
        (
            "wasm scorer (prefix-affinity)",
            1000,
            PipelineSpec {
                scorers: scorers(&["prefix-affinity"]),
                ..PipelineSpec::default()
            },
        ),
    ];
    let mut decisions = Vec::new();
    for (i, (scenario, n, spec)) in scenarios.into_iter().enumerate() {
        let tenant = TenantName::new(&format!("suite-{i}"))?;
        // NB: no policy CPU budget: the default one runs dry within the first thousand
        // decisions, and the built-in would decide (and be timed) instead.
        policies.configure_tenant(&tenant, PolicyQuota::default(), None);
        policies.set_pipeline(&tenant, spec)?;
        let (fleet, req, cands) = synthetic(n);
        let pipeline = policies.pipeline(&tenant);
        let builtin = policies.pipeline("no-such-tenant");
        let first = pipeline.decide(&fleet, &req, &cands);
        if let Some(fault) = first.fault {
            bail!("{scenario}: {fault}");
        }
        let wasm = time(iterations, || {
            std::hint::black_box(pipeline.decide(&fleet, &req, &cands));
        });
        let native = time(iterations, || {
            std::hint::black_box(builtin.decide(&fleet, &req, &cands));
        });
        let last = pipeline.decide(&fleet, &req, &cands);
        if last.budget_exhausted || last.fault.is_some() {
            bail!("{scenario}: the last decision did not run the policies: {last:?}");
        }
        decisions.push(SuiteRow {
            scenario: scenario.to_string(),
            candidates: n,
            median_us: wasm.median_us,
            p99_us: wasm.p99_us,
            baseline_median_us: native.median_us,
            baseline_p99_us: native.p99_us,
            ratio_median: wasm.median_us / native.median_us.max(1e-3),
        });
    }
    let mut uploads = Vec::new();
    for v in shipped {
        let bytes = switchyard::policy::shipped_component(&v.name).expect("listed as shipped");
        let mut times = Vec::new();
        let mut optimized_times = Vec::new();
        for _ in 0..5 {
            // A fresh runtime each time: the registry would otherwise dedupe the upload.
            let fresh = Policies::new(Limits::default(), None)?;
            let started = Instant::now();
            let up = fresh.upload(&PolicyName::new(&v.name)?, bytes, true)?;
            let spec = match up.kind {
                PolicyKind::Filter => PipelineSpec {
                    filters: vec![stage_spec(
                        &up.label(),
                        serde_json::json!({ "default": "allow" }),
                    )],
                    ..PipelineSpec::default()
                },
                PolicyKind::Scorer => PipelineSpec {
                    scorers: scorers(&[&up.label()]),
                    ..PipelineSpec::default()
                },
                PolicyKind::Placer => PipelineSpec {
                    placer: Some(stage_spec(&up.label(), serde_json::Value::Null)),
                    ..PipelineSpec::default()
                },
            };
            fresh.set_pipeline(&TenantName::new("t")?, spec)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            optimized(&fresh, &up)?;
            optimized_times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        optimized_times.sort_by(f64::total_cmp);
        uploads.push(UploadRow {
            policy: v.name,
            size_bytes: v.size_bytes,
            median_ms: times[times.len() / 2],
            max_ms: times[times.len() - 1],
            optimized_median_ms: optimized_times[optimized_times.len() / 2],
        });
    }
    let report = SuiteReport { decisions, uploads };
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "per decision, {iterations} timed decisions each; baseline = native built-in least-load"
    );
    println!(
        "{:<40} {:>5} {:>10} {:>10} {:>12} {:>12} {:>7}",
        "scenario", "cands", "median us", "p99 us", "base med us", "base p99 us", "ratio"
    );
    for r in &report.decisions {
        println!(
            "{:<40} {:>5} {:>10.2} {:>10.2} {:>12.2} {:>12.2} {:>6.1}x",
            r.scenario,
            r.candidates,
            r.median_us,
            r.p99_us,
            r.baseline_median_us,
            r.baseline_p99_us,
            r.ratio_median
        );
    }
    println!(
        "\nupload to active (size check, baseline compile, type check, smoke call, pipeline \
         swap), then until the optimized code replaces it; 5 runs"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>14}",
        "policy", "bytes", "median ms", "max ms", "optimized ms"
    );
    for u in &report.uploads {
        println!(
            "{:<22} {:>10} {:>10.1} {:>10.1} {:>14.1}",
            u.policy, u.size_bytes, u.median_ms, u.max_ms, u.optimized_median_ms
        );
    }
    Ok(())
}
