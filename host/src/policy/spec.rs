//! Pipeline specifications: what an operator writes in the config file or sends to the
//! admin API to say which policies decide for a tenant.

use serde::{Deserialize, Serialize};

/// One policy in a pipeline, with its own config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// `name@version` (a pinned version, the first 12 hex digits of the component's
    /// sha256) or `name`. A bare `name` is pinned to its newest version when the
    /// pipeline is set, and stored pinned, so a later upload never changes a running
    /// pipeline. Example: `prefix-affinity@3f2a9c1d0b7e`.
    pub policy: String,
    /// The policy's own config, handed to it as JSON. Default: none.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Opt out of pinning: `policy` stays a bare name and resolves to the newest upload
    /// each time the tenant's pipelines are rebuilt (any pipeline, canary, shadow or
    /// rollback change). Default false. Example: `follow_latest: true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_latest: bool,
}

impl StageSpec {
    /// A stage running `policy` with `config`, pinned when the pipeline is set.
    pub fn new(policy: impl Into<String>, config: serde_json::Value) -> Self {
        StageSpec {
            policy: policy.into(),
            config,
            follow_latest: false,
        }
    }
}

/// A scorer with its weight in the weighted sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedStageSpec {
    /// The scorer.
    #[serde(flatten)]
    pub stage: StageSpec,
    /// Weight in [0, 1]. Example: `weight: 0.6`. Default 1.
    #[serde(default = "default_weight")]
    pub weight: f32,
}

fn default_weight() -> f32 {
    1.0
}

/// How the host turns summed scores into one backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Picker {
    /// The highest total; ties go to the lowest in-flight count, then the lowest index.
    #[default]
    Max,
    /// Sample with probability proportional to `exp(total / temperature)`, seeded by the
    /// request id so a decision can be replayed. Example: `{kind: softmax, temperature: 0.1}`.
    Softmax {
        /// Temperature, > 0; smaller is greedier.
        temperature: f32,
    },
}

/// What happens when a policy traps, runs out of budget or returns garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Decide with the built-in least-load policy instead (default).
    #[default]
    Fallback,
    /// Refuse the request with 503.
    Reject,
}

/// A tenant's pipeline: filters, then weighted scorers and a picker; or one placer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSpec {
    /// Filters, applied in order.
    pub filters: Vec<StageSpec>,
    /// Scorers whose weighted scores are summed.
    pub scorers: Vec<WeightedStageSpec>,
    /// How the sum becomes one backend.
    pub picker: Picker,
    /// A placer that takes the decision after the filters; scorers must then be empty.
    pub placer: Option<StageSpec>,
    /// What a policy failure does.
    pub failure_mode: FailureMode,
}

impl PipelineSpec {
    /// The pipeline with no policies: the built-in least-load decides.
    pub fn builtin() -> Self {
        PipelineSpec::default()
    }

    /// What decides when the config and the admin API set no pipeline: the cached
    /// share past the shared head (`prefix-affinity`, 0.6), load (`least-load`, 0.3) and
    /// each prefix group's home (`prefix-home`, 0.1). A warm prompt goes where its
    /// prefix is unless that backend is much busier; a prompt cached nowhere goes to its
    /// group's home, balanced by groups, unless the home is busier.
    pub fn default_routing() -> Self {
        let scorer = |policy: &str, config: serde_json::Value, weight: f32| WeightedStageSpec {
            stage: StageSpec::new(policy, config),
            weight,
        };
        PipelineSpec {
            scorers: vec![
                scorer(
                    "prefix-affinity",
                    serde_json::json!({"skip_shared_head": true}),
                    0.6,
                ),
                scorer("least-load", serde_json::Value::Null, 0.3),
                scorer("prefix-home", serde_json::Value::Null, 0.1),
            ],
            ..PipelineSpec::default()
        }
    }

    /// Every policy reference in the pipeline, in evaluation order.
    pub fn stages(&self) -> impl Iterator<Item = &StageSpec> {
        self.filters
            .iter()
            .chain(self.scorers.iter().map(|s| &s.stage))
            .chain(self.placer.iter())
    }

    /// Every policy reference in the pipeline, mutably, in evaluation order.
    pub fn stages_mut(&mut self) -> impl Iterator<Item = &mut StageSpec> {
        self.filters
            .iter_mut()
            .chain(self.scorers.iter_mut().map(|s| &mut s.stage))
            .chain(self.placer.iter_mut())
    }
}
