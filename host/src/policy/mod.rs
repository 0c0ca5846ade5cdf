//! The policy runtime: WebAssembly routing policies, their registry, and the per-tenant
//! pipelines that decide where each request goes.
//!
//! - [`Policies`] owns the wasmtime engine, the registry of uploaded policy versions and
//!   every tenant's pipeline. It is the only handle other modules hold.
//! - [`TenantPipeline`] is the snapshot a request loads once; [`TenantPipeline::decide`]
//!   runs filters, weighted scorers and a picker (or one placer) and returns a
//!   [`Decision`]. A swap never affects a decision already under way.
//! - Policy failures never fail a request by themselves: they become a [`PolicyFault`],
//!   counted and logged, and the tenant's [`FailureMode`] applies.
//!
//! This is the only module that touches wasmtime or the generated bindings.

mod builtin;
mod facts;
mod spec;

pub use facts::{BackendFacts, Candidate, FleetFacts, Placement, RequestFacts, Role};
pub use spec::{FailureMode, Picker, PipelineSpec, StageSpec, WeightedStageSpec};

pub use builtin::load as builtin_load;
