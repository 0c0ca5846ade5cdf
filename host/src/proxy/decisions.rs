//! The decision log: a bounded ring of recent decisions, with per-candidate figures,
//! scores and reasons, for `GET /admin/decisions`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::policy::{Candidate, Decision, Fault, Placement, Variant};
use crate::pool::Fleet;

/// One candidate as the decision saw it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CandidateRecord {
    /// Backend name (`backend` is its index in the fleet).
    pub name: String,
    /// Live figures passed to the pipeline.
    #[serde(flatten)]
    pub figures: Candidate,
    /// Its total weighted score, when the pipeline scored.
    pub score: Option<f32>,
}

/// A backend a filter removed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExclusionRecord {
    /// Backend name.
    pub backend: String,
    /// The filter's reason.
    pub reason: String,
}

/// One decision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionRecord {
    /// The request id.
    pub request_id: String,
    /// Tenant.
    pub tenant: String,
    /// Model.
    pub model: String,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// `single`, `split` or `reject`.
    pub placement: &'static str,
    /// Backend chosen (the decode backend of a split).
    pub backend: Option<String>,
    /// Prefill backend the split placement chose.
    pub prefill_backend: Option<String>,
    /// Which backends served the request.
    #[serde(flatten)]
    pub legs: Legs,
    /// Rejection status and message, as `[status, message]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub reject: Option<(u16, String)>,
    /// Which pipeline decided.
    pub variant: Variant,
    /// The tenant pipeline's version.
    pub pipeline_version: u64,
    /// `name@version` of each policy that ran.
    #[schema(value_type = Vec<String>)]
    pub policies: Vec<std::sync::Arc<str>>,
    /// Every candidate with its figures and score.
    pub candidates: Vec<CandidateRecord>,
    /// Backends filters removed.
    pub exclusions: Vec<ExclusionRecord>,
    /// The policy failure that made the failure mode apply.
    pub fault: Option<Fault>,
    /// Whether a shadow pipeline agreed.
    pub shadow_agreed: Option<bool>,
    /// Whether the tenant's policy CPU budget was empty, so no Wasm ran.
    pub budget_exhausted: bool,
    /// Decision time, microseconds.
    pub elapsed_us: f64,
}

/// Which backends served a request, filled in once it was sent.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Legs {
    /// Backend that served the response (the decode leg of a split); none when every
    /// attempt failed.
    pub served_by: Option<String>,
    /// Backend that served the prefill leg of a split.
    pub prefill_served_by: Option<String>,
    /// Whether the request was served in two phases, prefill then decode.
    pub split: bool,
    /// Why a split placement was served by a single backend instead.
    pub split_fallback: Option<String>,
    /// Each leg of a stream whose backend failed or drained mid-stream (backend, tokens
    /// sent, why it ended), filled in while it streams; absent when none did.
    #[serde(skip_serializing_if = "StreamLegs::is_empty")]
    #[schema(value_type = Vec<StreamLeg>)]
    pub stream_legs: StreamLegs,
}

/// Request context a record needs besides the decision.
#[derive(Debug)]
pub struct RecordContext<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Model.
    pub model: &'a str,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
}

impl DecisionRecord {
    /// Builds a record from a decision and the fleet it was made on.
    pub fn new(
        ctx: RecordContext<'_>,
        fleet: &Fleet,
        candidates: &[Candidate],
        d: &Decision,
    ) -> Self {
        let name = |i: u32| {
            fleet
                .facts
                .backends
                .get(i as usize)
                .map_or_else(|| format!("#{i}"), |b| b.name.clone())
        };
        let (placement, backend, prefill_backend, reject) = match &d.placement {
            Placement::Single(i) => ("single", Some(name(*i)), None, None),
            Placement::Split { prefill, decode } => {
                ("split", Some(name(*decode)), Some(name(*prefill)), None)
            }
            Placement::Reject { status, message } => {
                ("reject", None, None, Some((*status, message.clone())))
            }
        };
        DecisionRecord {
            request_id: ctx.request_id.into(),
            tenant: ctx.tenant.into(),
            model: ctx.model.into(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            prompt_tokens: ctx.prompt_tokens,
            placement,
            backend,
            prefill_backend,
            legs: Legs::default(),
            reject,
            variant: d.variant,
            pipeline_version: d.pipeline_version,
            policies: d.policies.clone(),
            candidates: candidates
                .iter()
                .map(|c| CandidateRecord {
                    name: name(c.backend),
                    figures: *c,
                    score: d
                        .scores
                        .iter()
                        .find(|(i, _)| *i == c.backend)
                        .map(|(_, s)| *s),
                })
                .collect(),
            exclusions: d
                .exclusions
                .iter()
                .map(|(i, reason)| ExclusionRecord {
                    backend: name(*i),
                    reason: reason.clone(),
                })
                .collect(),
            fault: d.fault.clone(),
            shadow_agreed: d.shadow_agreed,
            budget_exhausted: d.budget_exhausted,
            elapsed_us: d.elapsed.as_secs_f64() * 1e6,
        }
    }
}

/// The ring. Cheap to share behind an `Arc`; the lock is held only to push or copy.
#[derive(Debug)]
pub struct DecisionLog {
    capacity: usize,
    ring: Mutex<VecDeque<Arc<DecisionRecord>>>,
}

impl DecisionLog {
    /// A log keeping the last `capacity` decisions.
    pub fn new(capacity: usize) -> DecisionLog {
        DecisionLog {
            capacity,
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    /// Adds a record, dropping the oldest when full.
    pub fn push(&self, record: DecisionRecord) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(Arc::new(record));
    }

    /// The newest `limit` records that `keep` accepts, newest first.
    pub fn recent(
        &self,
        limit: usize,
        keep: impl Fn(&DecisionRecord) -> bool,
    ) -> Vec<Arc<DecisionRecord>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .rev()
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// One leg of a resumed stream, as the decision record lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StreamLeg {
    /// The backend that served it.
    pub backend: String,
    /// Tokens of it the client received.
    pub tokens: u32,
    /// `finished`, or why it ended: `transport`, `closed_early`, `engine_error`, `idle`,
    /// `drained`.
    pub ended: &'static str,
    /// The failure, or why the stream was not resumed after it.
    pub detail: Option<String>,
    /// For every leg after the first: the seam that opened it, from the previous leg's
    /// last token to this leg's first, in milliseconds (none if no token came).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seam_ms: Option<f64>,
}

/// The legs of one stream, filled in while it runs; empty unless a leg failed.
#[derive(Debug, Clone, Default)]
pub struct StreamLegs(Arc<Mutex<Vec<StreamLeg>>>);

impl StreamLegs {
    pub(super) fn push(&self, leg: StreamLeg) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(leg);
    }

    /// Whether no leg was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

impl serde::Serialize for StreamLegs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .serialize(s)
    }
}
