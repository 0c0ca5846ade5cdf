//! The policy runtime: WebAssembly routing policies, their registry, and the per-tenant
//! pipelines that decide where each request goes.
//!
//! - [`Policies`] owns the wasmtime engine, the registry of uploaded policy versions and
//!   every tenant's pipeline. It is the only handle other modules hold.
//! - [`TenantPipeline`] is the snapshot a request loads once; [`TenantPipeline::decide`]
//!   runs filters, weighted scorers and a picker (or one placer) and returns a
//!   [`Decision`]. A swap never affects a decision already under way.
//! - Policy failures never fail a request by themselves: they become a [`Fault`],
//!   counted and logged, and the tenant's [`FailureMode`] applies.
//!
//! Words: a *policy* is one component; a *version* is one upload of it, named by the
//! first 12 hex digits of its sha256; a *stage* is a policy version with its config in a
//! pipeline; a *pipeline* is a tenant's stages.
//!
//! This is the only module that touches wasmtime or the generated bindings.

mod bindings;
mod builtin;
mod engine;
mod facts;
mod metrics;
mod pipeline;
mod policies;
mod registry;
mod shipped;
mod spec;
mod stage;
mod tenancy;
mod wasi;

pub use engine::{Limits, PolicyKind, Tier};
pub use facts::{BackendFacts, Candidate, FleetFacts, Placement, RequestFacts, Role};
pub use metrics::PolicyMetrics;
pub use pipeline::{CanarySpec, Decision, PipelineInfo, TenantPipeline, Variant};
pub use policies::{DEFAULT_TENANT, Policies, shipped_component};
pub use registry::PolicyVersion;
pub use spec::{FailureMode, Picker, PipelineSpec, StageSpec, WeightedStageSpec};
pub use stage::{CallReport, Outcome, Stage};
pub use tenancy::{DEFAULT_FUEL_PER_S, PolicyBudget, PolicyQuota, TenantUsage};

pub use builtin::{load as builtin_load, place as builtin_place};

/// Why a policy call produced no usable result. Doubles as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PolicyFault {
    /// The guest trapped: a panic, `unreachable`, stack overflow or a denied capability.
    Trap,
    /// The call used up its fuel budget.
    OutOfFuel,
    /// The call ran past its wall-clock deadline.
    Deadline,
    /// The guest asked for more memory (or table space) than its limit.
    Memory,
    /// The call returned something the contract forbids (wrong length, NaN, out of range,
    /// a backend that is not a candidate).
    BadOutput,
    /// The version failed too often and is parked; the tenant's failure mode applies
    /// without calling it.
    Parked,
}

impl PolicyFault {
    /// A short lowercase label, as used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyFault::Trap => "trap",
            PolicyFault::OutOfFuel => "out_of_fuel",
            PolicyFault::Deadline => "deadline",
            PolicyFault::Memory => "memory",
            PolicyFault::BadOutput => "bad_output",
            PolicyFault::Parked => "parked",
        }
    }
}

impl std::fmt::Display for PolicyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed policy call: which stage, what kind of failure, and the detail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Fault {
    /// `name@version` of the policy.
    pub policy: String,
    /// The kind of failure.
    pub kind: PolicyFault,
    /// What happened, for logs and the decision log.
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policy {} failed ({}): {}",
            self.policy, self.kind, self.message
        )
    }
}

/// Errors from uploading policies and changing pipelines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The upload is bigger than the cap.
    #[error("component is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Size of the upload.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// The bytes are a core Wasm module, not a component.
    #[error("a core WebAssembly module, not a component: build with `--target wasm32-wasip2`")]
    CoreModule,
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component (bad magic or header)")]
    NotWasm,
    /// Compilation failed or took too long.
    #[error("compile failed: {0}")]
    Compile(String),
    /// The component imports something policies are not granted (all such imports,
    /// comma-separated).
    #[error("imports {0}, which policies are not granted")]
    ForbiddenImport(String),
    /// The component's exports fit none of the three worlds.
    #[error("exports fit none of the worlds filter, scorer, placer: {0}")]
    WrongWorld(String),
    /// The policy's `configure` rejected its config.
    #[error("policy {policy} rejected its config: {message}")]
    Configure {
        /// `name@version`.
        policy: String,
        /// The policy's message.
        message: String,
    },
    /// The smoke call after upload failed.
    #[error("smoke call failed: {0}")]
    Smoke(Fault),
    /// A pipeline names a policy or version that is not uploaded.
    #[error("unknown policy `{0}`")]
    UnknownPolicy(String),
    /// A tenant's stored pipeline could not be restored; its requests are refused
    /// until an admin call sets its pipeline again or discards the entry.
    #[error("tenant `{tenant}`'s stored pipeline {entry} is damaged")]
    Damaged {
        /// The tenant.
        tenant: String,
        /// The damaged entry in the state directory.
        entry: String,
    },
    /// A pipeline is not well formed.
    #[error("invalid pipeline: {0}")]
    InvalidPipeline(String),
    /// An upload would take a tenant's namespace over its quota.
    #[error("tenant `{tenant}`'s policy quota is full ({detail}); delete versions first")]
    OverQuota {
        /// The tenant.
        tenant: String,
        /// Which limit, and by how much.
        detail: String,
    },
    /// A version cannot be deleted while a pipeline depends on it.
    #[error("{policy} is in use by {user}")]
    InUse {
        /// `name@version`.
        policy: String,
        /// Who uses it.
        user: String,
    },
    /// No such uploaded version.
    #[error("no policy version {0}")]
    NoSuchVersion(String),
    /// A shipped version cannot be deleted.
    #[error("{0} ships inside the router and cannot be deleted")]
    Shipped(String),
    /// Rollback was asked for but there is no earlier pipeline.
    #[error("tenant `{0}` has no earlier pipeline to roll back to")]
    NoHistory(String),
    /// Reading or writing the state directory failed.
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

#[cfg(test)]
mod tests;
