//! `switchyard bench`: load against an OpenAI-compatible URL; a table, or one JSON object
//! with `--json`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use switchyard_sim::load::{
    self, Api, Arrival, BenchConfig, BenchReport, GroupedChat, MultiTurn, SharedPrefix, Workload,
};

/// Workload kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// SGLang's generated-shared-prefix: groups × prompts per group.
    SharedPrefix,
    /// Conversations growing turn by turn.
    MultiTurn,
    /// Conversations on per-group documents behind a common head: --groups × --conversations
    /// × --turns.
    GroupedChat,
    /// A JSONL trace (--trace).
    Trace,
}

/// Arrival processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ArrivalKind {
    /// Exponential gaps at --rate.
    Poisson,
    /// Even gaps at --rate.
    Fixed,
    /// The trace's timestamps.
    Trace,
    /// All at once, bounded by --concurrency.
    Immediate,
}

/// Arguments of `switchyard bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the server, e.g. http://127.0.0.1:8080; repeat it to spread sessions
    /// round-robin over several servers.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Model name sent in every request.
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    model: String,
    /// Endpoint to call.
    #[arg(long, value_enum, default_value = "chat")]
    api: Api,
    /// Workload.
    #[arg(long, value_enum, default_value = "shared-prefix")]
    workload: Kind,
    /// Shared-prefix preset; `llm-d` = 150 groups × 5 prompts, 6000-token prefix, 1200-token
    /// questions, 1000-token outputs. Explicit flags override it.
    #[arg(long, value_parser = ["llm-d"])]
    preset: Option<String>,
    /// Shared-prefix or grouped-chat groups (defaults 16 and 8).
    #[arg(long)]
    groups: Option<usize>,
    /// Shared-prefix prompts per group.
    #[arg(long)]
    prompts_per_group: Option<usize>,
    /// Multi-turn conversations (default 16), or grouped-chat conversations per group
    /// (default 4).
    #[arg(long)]
    conversations: Option<usize>,
    /// Turns per conversation (multi-turn, grouped-chat).
    #[arg(long, default_value_t = 4)]
    turns: usize,
    /// Grouped-chat: common head of every prompt, tokens.
    #[arg(long, default_value_t = 60)]
    head_len: usize,
    /// Grouped-chat: shortest group document, tokens.
    #[arg(long, default_value_t = 600)]
    doc_len_min: usize,
    /// Grouped-chat: longest group document, tokens.
    #[arg(long, default_value_t = 1500)]
    doc_len_max: usize,
    /// Send group g's sessions to --url number g mod N (the oracle placement: every group
    /// has a home and keeps it) instead of round-robin.
    #[arg(long)]
    oracle: bool,
    /// System prompt length, tokens.
    #[arg(long)]
    system_prompt_len: Option<usize>,
    /// Question length, tokens.
    #[arg(long)]
    question_len: Option<usize>,
    /// Output length, tokens.
    #[arg(long)]
    output_len: Option<usize>,
    /// JSONL trace file (for --workload trace).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Tokens behind one trace hash id (Mooncake: 512).
    #[arg(long, default_value_t = load::trace::MOONCAKE_BLOCK_TOKENS)]
    trace_block_tokens: usize,
    /// Arrival process (default: poisson with --rate, trace timestamps for traces, else
    /// immediate).
    #[arg(long, value_enum)]
    arrival: Option<ArrivalKind>,
    /// Sessions per second for poisson and fixed arrivals.
    #[arg(long)]
    rate: Option<f64>,
    /// Most sessions in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Most requests to send.
    #[arg(long)]
    requests: Option<usize>,
    /// Keep starting requests for this many seconds (the workload repeats).
    #[arg(long)]
    duration: Option<f64>,
    /// Seed of the workload text and arrivals.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Extra header on every request, `name:value` (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Print one JSON object instead of a table (and no progress bar).
    #[arg(long)]
    json: bool,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not name:value"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl Args {
    fn workload(&self) -> anyhow::Result<Workload> {
        let base = match self.preset.as_deref() {
            Some(_) => SharedPrefix::LLM_D,
            None => SharedPrefix {
                groups: 16,
                prompts_per_group: 8,
                system_prompt_len: 2048,
                question_len: 128,
                output_len: 128,
            },
        };
        Ok(match self.workload {
            Kind::SharedPrefix => Workload::SharedPrefix(SharedPrefix {
                groups: self.groups.unwrap_or(base.groups),
                prompts_per_group: self.prompts_per_group.unwrap_or(base.prompts_per_group),
                system_prompt_len: self.system_prompt_len.unwrap_or(base.system_prompt_len),
                question_len: self.question_len.unwrap_or(base.question_len),
                output_len: self.output_len.unwrap_or(base.output_len),
            }),
            Kind::MultiTurn => Workload::MultiTurn(MultiTurn {
                conversations: self.conversations.unwrap_or(16),
                turns: self.turns,
                system_prompt_len: self.system_prompt_len.unwrap_or(512),
                question_len: self.question_len.unwrap_or(128),
                output_len: self.output_len.unwrap_or(128),
            }),
            Kind::GroupedChat => {
                anyhow::ensure!(
                    self.doc_len_min <= self.doc_len_max,
                    "--doc-len-min is above --doc-len-max"
                );
                Workload::GroupedChat(GroupedChat {
                    head_len: self.head_len,
                    groups: self.groups.unwrap_or(8),
                    doc_len_min: self.doc_len_min,
                    doc_len_max: self.doc_len_max,
                    conversations: self.conversations.unwrap_or(4),
                    turns: self.turns,
                    question_len: self.question_len.unwrap_or(40),
                    output_len: self.output_len.unwrap_or(32),
                })
            }
            Kind::Trace => {
                let path = self
                    .trace
                    .as_ref()
                    .context("--workload trace needs --trace FILE")?;
                Workload::Trace(load::trace::load(path, self.trace_block_tokens, self.seed)?)
            }
        })
    }

    fn arrival(&self) -> anyhow::Result<Arrival> {
        let kind = self.arrival.unwrap_or(match (self.workload, self.rate) {
            (Kind::Trace, None) => ArrivalKind::Trace,
            (_, Some(_)) => ArrivalKind::Poisson,
            (_, None) => ArrivalKind::Immediate,
        });
        let rate = || self.rate.context("poisson and fixed arrivals need --rate");
        Ok(match kind {
            ArrivalKind::Poisson => Arrival::Poisson(rate()?),
            ArrivalKind::Fixed => Arrival::Fixed(rate()?),
            ArrivalKind::Trace => Arrival::Trace,
            ArrivalKind::Immediate => Arrival::Immediate,
        })
    }
}

/// Runs `switchyard bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = BenchConfig {
        model: args.model.clone(),
        api: args.api,
        arrival: args.arrival()?,
        max_concurrency: args.concurrency,
        duration: args.duration.map(Duration::from_secs_f64),
        max_requests: args.requests,
        seed: args.seed,
        timeout: Duration::from_secs_f64(args.timeout),
        headers: args.headers.clone(),
        progress: !args.json,
        urls: args.urls.clone(),
        pin_groups: args.oracle,
        ..BenchConfig::new(String::new(), args.workload()?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(load::run(config))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &BenchReport) {
    println!("requests        {:>10}   errors {}", r.requests, r.errors);
    for (kind, n) in &r.error_kinds {
        println!("  {kind}: {n}");
    }
    println!("duration        {:>10.2} s", r.duration_s);
    println!(
        "{:<15} {:>10} {:>10} {:>10} {:>10}",
        "ms", "p50", "p90", "p99", "mean"
    );
    for (name, p) in [("ttft", r.ttft_ms), ("itl", r.itl_ms), ("e2e", r.e2e_ms)] {
        println!(
            "{name:<15} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            p.p50, p.p90, p.p99, p.mean
        );
    }
    println!("output tok/s    {:>10.1}", r.output_tokens_per_s);
    println!("requests/s      {:>10.2}", r.requests_per_s);
    println!("prefix hit rate {:>10.3}", r.prefix_cache_hit_rate);
    let total: u64 = r.backends.values().sum();
    for (backend, n) in &r.backends {
        println!(
            "  {backend:<20} {n:>8} ({:.1}%)",
            100.0 * *n as f64 / total.max(1) as f64
        );
    }
}
