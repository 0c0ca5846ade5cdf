//! Prometheus metrics of the policy runtime.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a policy version.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `name@version`.
    pub policy: String,
}

/// Labels of a policy failure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `name@version`.
    pub policy: String,
    /// The [`super::PolicyFault`] label.
    pub fault: String,
}

/// Labels naming a tenant.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant name.
    pub tenant: String,
}

/// Counters and histograms the runtime updates; registered once with the router's
/// Prometheus registry.
#[derive(Debug, Clone)]
pub struct PolicyMetrics {
    /// Policy calls that failed, by policy and fault.
    pub failures: Family<FailureLabels, Counter>,
    /// Fuel used by successful calls, by policy.
    pub fuel: Family<PolicyLabels, Counter>,
    /// Time to make one decision (the whole pipeline), seconds.
    pub decision_seconds: Histogram,
    /// Decisions that fell back to the built-in policy, by tenant.
    pub fallbacks: Family<TenantLabels, Counter>,
    /// Shadow decisions run, by tenant.
    pub shadow_decisions: Family<TenantLabels, Counter>,
    /// Shadow decisions that placed differently from the active pipeline, by tenant.
    pub shadow_disagreements: Family<TenantLabels, Counter>,
    /// Decisions made without calling Wasm because the tenant's fuel budget was empty.
    pub budget_exhausted: Family<TenantLabels, Counter>,
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        PolicyMetrics {
            failures: Family::default(),
            fuel: Family::default(),
            // 1 us .. ~16 ms
            decision_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 15)),
            fallbacks: Family::default(),
            shadow_decisions: Family::default(),
            shadow_disagreements: Family::default(),
            budget_exhausted: Family::default(),
        }
    }
}

impl PolicyMetrics {
    /// Registers every metric under `switchyard_policy_*` / `switchyard_decision_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "switchyard_policy_failures",
            "Policy calls that failed, by policy and fault",
            self.failures.clone(),
        );
        registry.register(
            "switchyard_policy_fuel",
            "Fuel used by successful policy calls",
            self.fuel.clone(),
        );
        registry.register(
            "switchyard_decision_seconds",
            "Time to make one routing decision",
            self.decision_seconds.clone(),
        );
        registry.register(
            "switchyard_decision_fallbacks",
            "Decisions made by the built-in policy after a policy failure",
            self.fallbacks.clone(),
        );
        registry.register(
            "switchyard_shadow_decisions",
            "Decisions also made by a shadow pipeline",
            self.shadow_decisions.clone(),
        );
        registry.register(
            "switchyard_shadow_disagreements",
            "Shadow decisions that differed from the active pipeline",
            self.shadow_disagreements.clone(),
        );
        registry.register(
            "switchyard_policy_budget_exhausted",
            "Decisions made by the tenant's failure mode, without calling Wasm, because its policy CPU budget was empty",
            self.budget_exhausted.clone(),
        );
    }
}
