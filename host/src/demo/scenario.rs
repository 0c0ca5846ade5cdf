//! The demo's scenarios: the simulated fleet, the workload and the pipelines compared.
//!
//! A *scenario* fixes everything but the pipeline, so runs differ only in routing:
//! [`Scenario::default_demo`] (issue 4: round-robin against Switchyard's pipeline on a
//! prefix-heavy multi-tenant workload) and [`Scenario::hetero`] (issue 5: six pipelines
//! on llm-d's heterogeneous workload shape, swept over request rate).

use serde_json::json;

use switchyard::policy::{PipelineSpec, StageSpec, WeightedStageSpec};
use switchyard_sim::Profile;
use switchyard_sim::load::{SharedPrefix, Workload};

/// Tokens per KV block of every simulated backend (vLLM's default).
pub const BLOCK_SIZE: usize = 16;

/// One kind of card in the simulated fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Built-in simulator profile, e.g. `mi300x`.
    pub profile: &'static str,
    /// Backends of this kind.
    pub replicas: usize,
    /// Price per hour in US dollars (illustrative on-demand cloud prices, see
    /// `docs/demo.md`).
    pub cost_per_hour: f64,
}

/// A named pipeline under test.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Name used in the table and as the JSON key, e.g. `switchyard`.
    pub name: String,
    /// The default tenant's pipeline while it runs.
    pub spec: PipelineSpec,
    /// One line saying what it is, for the table and the report.
    pub summary: String,
}

/// Everything a comparison fixes besides the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// `default` or `hetero`.
    pub name: &'static str,
    /// The fleet, restarted cold before every run.
    pub cards: Vec<Card>,
    /// KV blocks of each backend as a fraction of what its memory holds, in (0, 1]: 1 is
    /// a real 8B model's cache on that card (an H100: 26,702 blocks of 16 tokens); below
    /// 1 the scenario shrinks caches so a prefix working set outgrows one backend within
    /// a run of a minute rather than an hour of traffic.
    pub kv_scale: f64,
    /// What every run sends.
    pub workload: Workload,
    /// Poisson arrival rates swept, requests per simulated second.
    pub rates_rps: Vec<f64>,
    /// Requests in flight at most (arrivals wait beyond it).
    pub max_concurrency: usize,
    /// Seconds of arrivals per run by default, wall time.
    pub duration_s: f64,
    /// Simulator speed by default.
    pub speed: f64,
    /// Time-to-first-token objective for goodput, simulated ms.
    pub slo_ttft_ms: f64,
    /// The pipelines compared, baseline first.
    pub pipelines: Vec<Pipeline>,
}

/// The three-vendor fleet both scenarios use: 2 x h100 and 2 x a100 (NVIDIA), 2 x
/// mi300x (AMD), 2 x gaudi3 (Intel).
fn three_vendor_fleet() -> Vec<Card> {
    let card = |profile, cost_per_hour| Card {
        profile,
        replicas: 2,
        cost_per_hour,
    };
    vec![
        card("h100", 3.50),
        card("mi300x", 3.00),
        card("gaudi3", 2.00),
        card("a100", 1.60),
    ]
}

fn stage(policy: &str, config: serde_json::Value) -> StageSpec {
    StageSpec::new(policy, config)
}

fn scorer(policy: &str, config: serde_json::Value, weight: f32) -> WeightedStageSpec {
    WeightedStageSpec {
        stage: stage(policy, config),
        weight,
    }
}

fn placer(name: &str, policy: &str, config: serde_json::Value, summary: &str) -> Pipeline {
    Pipeline {
        name: name.to_owned(),
        spec: PipelineSpec {
            placer: Some(stage(policy, config)),
            ..PipelineSpec::default()
        },
        summary: summary.to_owned(),
    }
}

/// The shipped `round-robin` placer: the baseline.
pub fn round_robin() -> Pipeline {
    placer(
        "round-robin",
        "round-robin",
        json!({}),
        "round-robin placer (the baseline)",
    )
}

/// Switchyard's default pipeline: `prefix-affinity` 0.6 + `least-load` 0.3 +
/// `kv-headroom` 0.1, highest total wins.
///
/// The weights make a cached prefix worth more than any load difference short of a
/// queue (`least-load` scores 0.5 at 8 requests, so a fully cached prompt outweighs a
/// backend that much busier), while load still breaks ties between equally cached
/// backends and spreads new prefixes; `kv-headroom` nudges new prefixes towards the
/// big-memory cards.
pub fn switchyard() -> Pipeline {
    Pipeline {
        name: "switchyard".to_owned(),
        spec: PipelineSpec {
            scorers: vec![
                scorer("prefix-affinity", json!({"min_prompt_tokens": 256}), 0.6),
                scorer("least-load", json!({}), 0.3),
                scorer("kv-headroom", json!({"count_request": true}), 0.1),
            ],
            ..PipelineSpec::default()
        },
        summary: "prefix-affinity 0.6 + least-load 0.3 + kv-headroom 0.1".to_owned(),
    }
}

impl Scenario {
    /// Issue 4's demo: 64 tenants, each with its own 3000-token system prompt shared by
    /// its users' 150-token questions, 48-token answers, at about the fleet's capacity
    /// under round-robin.
    ///
    /// Caches are real size (an 8B model on each card, 427k to 1.2M tokens), so the 64
    /// prefixes (192k tokens) fit in every backend: round-robin pays one cold miss per
    /// tenant and backend (up to 512) where a placement that keeps each tenant on one
    /// backend pays 64. What separates the pipelines is that warm-up, and queueing.
    pub fn default_demo() -> Self {
        Scenario {
            name: "default",
            cards: three_vendor_fleet(),
            kv_scale: 1.0,
            workload: Workload::SharedPrefix(SharedPrefix {
                groups: 64,
                prompts_per_group: 16,
                system_prompt_len: 3000,
                question_len: 150,
                output_len: 48,
            }),
            rates_rps: vec![60.0],
            max_concurrency: 512,
            duration_s: 25.0,
            speed: 1.0,
            slo_ttft_ms: 1000.0,
            pipelines: vec![round_robin(), switchyard()],
        }
    }

    /// Issue 5's benchmark: llm-d's heterogeneous shape (6000-token shared system
    /// prompts, 1200-token questions, so ~7.2k input tokens, and 1000 output tokens)
    /// on the same fleet, swept over two request rates, across six pipelines.
    pub fn hetero() -> Self {
        let hetero_cost = json!({"alpha": 0.8, "default_slo_ttft_ms": 2000});
        let mut best = switchyard();
        best.name = "switchyard".to_owned();
        best.spec.scorers = vec![
            scorer("prefix-affinity", json!({"min_prompt_tokens": 256}), 0.5),
            scorer("hetero-cost", hetero_cost, 0.3),
            scorer("least-load", json!({}), 0.2),
        ];
        best.summary = "prefix-affinity 0.5 + hetero-cost 0.3 + least-load 0.2".to_owned();
        Scenario {
            name: "hetero",
            cards: three_vendor_fleet(),
            kv_scale: 0.125,
            workload: Workload::SharedPrefix(SharedPrefix {
                groups: 40,
                prompts_per_group: 5,
                system_prompt_len: 6000,
                question_len: 1200,
                output_len: 1000,
            }),
            rates_rps: vec![2.0, 6.0],
            max_concurrency: 512,
            // 1000-token answers: twice real time keeps twelve runs to about four
            // minutes.
            duration_s: 10.0,
            speed: 2.0,
            slo_ttft_ms: 2000.0,
            pipelines: vec![
                round_robin(),
                Pipeline {
                    name: "least-load".to_owned(),
                    spec: PipelineSpec {
                        scorers: vec![scorer("least-load", json!({}), 1.0)],
                        ..PipelineSpec::default()
                    },
                    summary: "least-load scorer alone".to_owned(),
                },
                placer(
                    "sglang-cache-aware",
                    "sglang-cache-aware",
                    json!({}),
                    "SGLang gateway's cache_aware policy, CLI defaults",
                ),
                placer(
                    "dynamo-cost",
                    "dynamo-cost",
                    json!({}),
                    "NVIDIA Dynamo's KV router cost, defaults",
                ),
                best,
                placer(
                    "switchyard-pd",
                    "pd-split",
                    json!({"kv_bytes_per_token": 131_072, "kv_link_gbytes_per_s": 45}),
                    "pd-split placer (decode-first prefill/decode split)",
                ),
            ],
        }
    }

    /// The scenario called `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Self::default_demo()),
            "hetero" => Some(Self::hetero()),
            _ => None,
        }
    }

    /// Backends in the fleet.
    pub fn backends(&self) -> usize {
        self.cards.iter().map(|c| c.replicas).sum()
    }

    /// KV blocks (16 tokens each) of one backend of `card`: its profile's memory, scaled
    /// by `kv_scale`.
    pub fn num_gpu_blocks(&self, card: &Card) -> Option<usize> {
        Profile::builtin(card.profile)
            .map(|p| ((p.num_gpu_blocks(BLOCK_SIZE) as f64 * self.kv_scale) as usize).max(1))
    }

    /// The fleet's price per hour.
    pub fn fleet_cost_per_hour(&self) -> f64 {
        self.cards
            .iter()
            .map(|c| c.cost_per_hour * c.replicas as f64)
            .sum()
    }
}
