//! Deciding with a tenant's pipeline: filters, weighted scorers and a picker (or one
//! placer), the canary share and the shadow. Pipelines are built, swapped and rolled back
//! by [`super::Policies`] (`policies`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::Fault;
use super::builtin;
use super::facts::{Candidate, FleetFacts, Placement, RequestFacts};
use super::metrics::{FailureLabels, PolicyMetrics, TenantLabels};
use super::spec::{FailureMode, Picker, PipelineSpec};
use super::stage::{CallReport, CallRequest, Stage};
use super::tenancy::FuelBucket;
use crate::names::TenantName;

/// Which of a tenant's pipelines made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The active pipeline.
    Active,
    /// The canary pipeline, chosen by the hash of the request id.
    Canary,
}

/// The outcome of one routing decision, with everything the decision log shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// Where the request goes.
    pub placement: Placement,
    /// Which pipeline decided.
    pub variant: Variant,
    /// The tenant pipeline's version number (increases on every change).
    pub pipeline_version: u64,
    /// `name@version` of every policy that ran, in order.
    pub policies: Vec<Arc<str>>,
    /// Total weighted score per remaining candidate, as (fleet index, score).
    pub scores: Vec<(u32, f32)>,
    /// Backends removed by filters, as (fleet index, reason).
    pub exclusions: Vec<(u32, String)>,
    /// The policy failure that made the failure mode apply, if any.
    pub fault: Option<Fault>,
    /// Fuel used by all calls.
    pub fuel_used: u64,
    /// Whether a shadow pipeline, if one runs, placed the same way.
    pub shadow_agreed: Option<bool>,
    /// Whether the tenant's policy CPU budget was empty, so the decision was made by its
    /// failure mode without calling Wasm.
    pub budget_exhausted: bool,
    /// Time the decision took.
    #[serde(serialize_with = "serialize_micros", rename = "elapsed_us")]
    pub elapsed: Duration,
}

fn serialize_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

/// A tenant's pipelines as the admin API shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PipelineInfo {
    /// Tenant name.
    pub tenant: TenantName,
    /// Increases on every change.
    pub version: u64,
    /// The active pipeline.
    pub active: PipelineSpec,
    /// A canary pipeline and the share of requests, in [0, 1], it decides.
    pub canary: Option<CanarySpec>,
    /// A shadow pipeline run beside the active one, whose decisions are only compared.
    pub shadow: Option<PipelineSpec>,
    /// Earlier active pipelines, newest last; `rollback` restores the last.
    pub history: Vec<PipelineSpec>,
}

/// A canary: a pipeline deciding a share of a tenant's requests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySpec {
    /// The canary pipeline.
    pub pipeline: PipelineSpec,
    /// Share of requests, in [0, 1], chosen by the hash of the request id.
    pub share: f32,
}

pub(super) struct Step {
    pub(super) stage: Arc<Stage>,
    pub(super) weight: f32,
    pub(super) fuel: Counter,
}

/// A built pipeline: stages resolved and configured.
pub(super) struct Pipeline {
    pub(super) filters: Vec<Step>,
    pub(super) scorers: Vec<Step>,
    pub(super) placer: Option<Step>,
    pub(super) picker: Picker,
    pub(super) failure_mode: FailureMode,
}

/// A tenant's pipelines at one version: the snapshot a request loads once.
///
/// A tenant whose stored pipeline could not be restored has a *damaged* one: it refuses
/// every request (503) rather than let another pipeline decide for the tenant.
pub struct TenantPipeline {
    pub(super) info: PipelineInfo,
    /// The damaged state-directory entry this tenant's pipeline should have come from.
    pub(super) damaged: Option<Arc<str>>,
    pub(super) active: Pipeline,
    pub(super) canary: Option<(Pipeline, f32)>,
    pub(super) shadow: Option<Pipeline>,
    pub(super) metrics: PolicyMetrics,
    pub(super) tenant_labels: TenantLabels,
    /// The tenant's fuel budget; `None`: unlimited.
    pub(super) budget: Option<Arc<FuelBucket>>,
}

impl std::fmt::Debug for TenantPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPipeline")
            .field("tenant", &self.info.tenant)
            .field("version", &self.info.version)
            .finish()
    }
}

impl TenantPipeline {
    /// The pipeline's description.
    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }

    /// The damaged state-directory entry, when this tenant's stored pipeline could not
    /// be restored; every decision is then a 503 refusal.
    pub fn damaged(&self) -> Option<&str> {
        self.damaged.as_deref()
    }

    /// Decides where `req` goes among `candidates` (already limited to healthy,
    /// non-draining backends serving the model). Never fails: policy faults become the
    /// tenant's failure mode, recorded in [`Decision::fault`].
    pub fn decide(
        &self,
        fleet: &FleetFacts,
        req: &RequestFacts,
        candidates: &[Candidate],
    ) -> Decision {
        let started = Instant::now();
        if self.damaged.is_some() {
            // NB: fail closed; the tenant's real pipeline may have had a compliance filter.
            let mut decision = Decision::empty();
            decision.placement = Placement::Reject {
                status: 503,
                message: "the tenant's stored pipeline is damaged".into(),
            };
            decision.pipeline_version = self.info.version;
            decision.elapsed = started.elapsed();
            return decision;
        }
        let (pipeline, variant) = match &self.canary {
            Some((p, share)) if in_share(req.id, *share) => (p, Variant::Canary),
            _ => (&self.active, Variant::Active),
        };
        if let Some(bucket) = &self.budget
            && pipeline.calls_wasm()
            && !bucket.may_start()
        {
            self.metrics
                .budget_exhausted
                .get_or_create(&self.tenant_labels)
                .inc();
            let mut decision = Decision::empty();
            decision.placement = pipeline.without_wasm(candidates);
            decision.variant = variant;
            decision.pipeline_version = self.info.version;
            decision.budget_exhausted = true;
            decision.elapsed = started.elapsed();
            return decision;
        }
        let wit_req = CallRequest::new(req);
        let mut decision = pipeline.decide(fleet, &wit_req, candidates, &self.metrics);
        decision.variant = variant;
        decision.pipeline_version = self.info.version;
        let (mut fuel, mut calls) = (decision.fuel_used, decision.policies.len());
        if let Some(shadow) = &self.shadow {
            let other = shadow.decide(fleet, &wit_req, candidates, &self.metrics);
            fuel += other.fuel_used;
            calls += other.policies.len();
            let agreed = other.placement == decision.placement;
            self.metrics
                .shadow_decisions
                .get_or_create(&self.tenant_labels)
                .inc();
            if !agreed {
                self.metrics
                    .shadow_disagreements
                    .get_or_create(&self.tenant_labels)
                    .inc();
            }
            decision.shadow_agreed = Some(agreed);
        }
        if let Some(bucket) = &self.budget {
            bucket.charge(fuel, calls);
        }
        if let Some(fault) = &decision.fault {
            self.metrics
                .fallbacks
                .get_or_create(&self.tenant_labels)
                .inc();
            tracing::warn!(tenant = %self.info.tenant, %fault, "policy failure; failure mode applied");
        }
        decision.elapsed = started.elapsed();
        self.metrics
            .decision_seconds
            .observe(decision.elapsed.as_secs_f64());
        decision
    }
}

/// Whether a request with this id falls in the first `share` of the id space.
fn in_share(id: u64, share: f32) -> bool {
    let spread = splitmix64(id);
    (spread as f64 / u64::MAX as f64) < share as f64
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Pipeline {
    fn decide(
        &self,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[Candidate],
        metrics: &PolicyMetrics,
    ) -> Decision {
        let mut d = Decision::empty();
        // NB: borrowed until a filter excludes something; most decisions copy nothing.
        let mut remaining = Cow::Borrowed(candidates);
        for step in &self.filters {
            let result = step.stage.exclude(fleet, req, &remaining);
            match d.account(step, result, metrics) {
                Ok(excluded) => {
                    if !excluded.is_empty() {
                        remaining
                            .to_mut()
                            .retain(|c| !excluded.iter().any(|(b, _)| *b == c.backend));
                        d.exclusions.extend(excluded);
                    }
                }
                Err(()) => {
                    // NB: a failed filter fails closed whatever the failure mode: a
                    // fallback cannot know what it would have excluded (data residency).
                    d.placement = Placement::Reject {
                        status: 503,
                        message: "routing policy failed".into(),
                    };
                    return d;
                }
            }
        }
        if remaining.is_empty() {
            d.placement = Placement::Reject {
                status: 503,
                message: "no backend passed the tenant's filters".into(),
            };
            return d;
        }
        if let Some(step) = &self.placer {
            let result = step.stage.place(fleet, req, &remaining);
            d.placement = match d.account(step, result, metrics) {
                Ok(p) => p,
                Err(()) => self.on_failure(&remaining),
            };
            return d;
        }
        if self.scorers.is_empty() {
            d.placement = builtin::place(&remaining);
            return d;
        }
        let mut totals = vec![0.0f32; remaining.len()];
        for step in &self.scorers {
            let result = step.stage.score(fleet, req, &remaining);
            match d.account(step, result, metrics) {
                Ok(scores) => {
                    for (t, s) in totals.iter_mut().zip(scores) {
                        *t += step.weight * s;
                    }
                }
                Err(()) => {
                    d.placement = self.on_failure(&remaining);
                    return d;
                }
            }
        }
        let chosen = pick(self.picker, req.record.id, &remaining, &totals);
        d.scores = remaining.iter().map(|c| c.backend).zip(totals).collect();
        d.placement = Placement::Single(chosen);
        d
    }

    /// Whether deciding calls any policy.
    fn calls_wasm(&self) -> bool {
        !self.filters.is_empty() || !self.scorers.is_empty() || self.placer.is_some()
    }

    /// The placement when the tenant's budget leaves no fuel to call its policies: its
    /// failure mode, except that a pipeline with filters rejects (a fallback cannot know
    /// what they would have excluded).
    fn without_wasm(&self, candidates: &[Candidate]) -> Placement {
        if self.filters.is_empty() && self.failure_mode == FailureMode::Fallback {
            builtin::place(candidates)
        } else {
            Placement::Reject {
                status: 503,
                message: "the tenant's policy CPU budget is exhausted".into(),
            }
        }
    }

    fn on_failure(&self, remaining: &[Candidate]) -> Placement {
        match self.failure_mode {
            FailureMode::Fallback => builtin::place(remaining),
            FailureMode::Reject => Placement::Reject {
                status: 503,
                message: "routing policy failed".into(),
            },
        }
    }
}

impl Decision {
    /// A decision with nothing decided yet.
    fn empty() -> Decision {
        Decision {
            placement: Placement::Single(0),
            variant: Variant::Active,
            pipeline_version: 0,
            policies: Vec::new(),
            scores: Vec::new(),
            exclusions: Vec::new(),
            fault: None,
            fuel_used: 0,
            shadow_agreed: None,
            budget_exhausted: false,
            elapsed: Duration::ZERO,
        }
    }

    /// Records a call's outcome: the policy's name, its fuel, its logs, or its fault.
    fn account<T>(
        &mut self,
        step: &Step,
        result: Result<(T, CallReport), Fault>,
        metrics: &PolicyMetrics,
    ) -> Result<T, ()> {
        self.policies.push(step.stage.label().clone());
        match result {
            Ok((out, report)) => {
                self.fuel_used += report.fuel_used;
                step.fuel.inc_by(report.fuel_used);
                for line in &report.logs {
                    tracing::debug!(policy = %step.stage.label(), "{line}");
                }
                Ok(out)
            }
            Err(fault) => {
                metrics
                    .failures
                    .get_or_create(&FailureLabels {
                        policy: fault.policy.clone(),
                        fault: fault.kind.as_str().into(),
                    })
                    .inc();
                self.fault = Some(fault);
                Err(())
            }
        }
    }
}

/// Chooses a backend from summed scores.
fn pick(picker: Picker, id: u64, candidates: &[Candidate], totals: &[f32]) -> u32 {
    match picker {
        Picker::Max => {
            let mut best = 0;
            for i in 1..candidates.len() {
                let (a, b) = (totals[i], totals[best]);
                let better = a > b + 1e-6
                    || ((a - b).abs() <= 1e-6
                        && (candidates[i].in_flight_requests, candidates[i].backend)
                            < (
                                candidates[best].in_flight_requests,
                                candidates[best].backend,
                            ));
                if better {
                    best = i;
                }
            }
            candidates[best].backend
        }
        Picker::Softmax { temperature } => {
            let t = temperature.max(1e-6);
            let max = totals.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f64> = totals
                .iter()
                .map(|s| (((s - max) / t) as f64).exp())
                .collect();
            let sum: f64 = weights.iter().sum();
            let mut target = (splitmix64(id ^ 0x5eed) as f64 / u64::MAX as f64) * sum;
            for (c, w) in candidates.iter().zip(&weights) {
                if target < *w {
                    return c.backend;
                }
                target -= w;
            }
            candidates[candidates.len() - 1].backend
        }
    }
}
