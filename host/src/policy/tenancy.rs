//! What one tenant may use of the policy runtime: a quota on the policy versions stored
//! in its namespace, and a CPU budget for its pipeline's calls, as a token bucket of
//! Wasm fuel.
//!
//! The bucket is charged after each decision with the fuel the decision used plus
//! [`CALL_OVERHEAD_FUEL`] per policy call (the host's work around a call costs CPU but no
//! fuel), so one call may overdraw it (by at most the per-call fuel cap); a decision that
//! would start with the bucket at or below zero calls no Wasm at all.
//!
//! Fuel is deterministic, so a tenant's budget does not shrink when the machine is busy.
//! How much CPU a unit of fuel costs depends on the code: ~0.1 ns in a tight loop,
//! ~1 ns in the shipped policies (measured in `docs/tenants.md`). The default budget is
//! sized on the slower rate, so it keeps a tenant under a quarter of one core either
//! way.

use std::sync::Mutex;
use std::time::Instant;

/// Limits on a tenant's namespace of policies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PolicyQuota {
    /// Most versions stored under `<tenant>/`. Default 20.
    #[serde(default = "default_versions")]
    pub versions: u32,
    /// Most component bytes stored under `<tenant>/`. Default 64 MiB.
    #[serde(default = "default_bytes")]
    pub bytes: u64,
}

fn default_versions() -> u32 {
    20
}

fn default_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for PolicyQuota {
    fn default() -> Self {
        PolicyQuota {
            versions: default_versions(),
            bytes: default_bytes(),
        }
    }
}

/// A tenant's policy CPU budget: Wasm fuel per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PolicyBudget {
    /// Fuel added per second.
    pub fuel_per_s: u64,
    /// Most fuel the bucket holds.
    pub burst: u64,
}

impl PolicyBudget {
    /// The default: fuel for about a quarter of one core of policy code on the machines
    /// it was measured on (see `docs/tenants.md`), with a tenth of a second of burst.
    pub const DEFAULT: PolicyBudget = PolicyBudget {
        fuel_per_s: DEFAULT_FUEL_PER_S,
        burst: DEFAULT_FUEL_PER_S / 10,
    };
}

/// Fuel per second of the default budget: a quarter of a second of CPU at the ~1 G
/// fuel/s the shipped policies run at (tight loops run ~10x faster per fuel).
pub const DEFAULT_FUEL_PER_S: u64 = 250_000_000;

/// Fuel charged per policy call on top of what the call used: the host's ~2.5 us of
/// marshalling facts and entering the instance, at ~1 G fuel/s.
pub const CALL_OVERHEAD_FUEL: u64 = 2_500;

/// What a tenant's namespace holds, against its quota, and its budget's state; as
/// `GET /admin/tenants/{tenant}/quota` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: String,
    /// Versions stored in its namespace.
    pub versions: u32,
    /// Component bytes stored in its namespace.
    pub bytes: u64,
    /// Its quota.
    pub quota: PolicyQuota,
    /// Its policy CPU budget; `None`: unlimited.
    pub budget: Option<PolicyBudget>,
    /// Fuel in the budget's bucket now (negative: overdrawn by the last call).
    pub budget_available: Option<i64>,
}

/// A token bucket of fuel.
#[derive(Debug)]
pub struct FuelBucket {
    budget: PolicyBudget,
    /// (fuel available, when it was last refilled).
    state: Mutex<(f64, Instant)>,
}

impl FuelBucket {
    /// A full bucket.
    pub fn new(budget: PolicyBudget) -> FuelBucket {
        FuelBucket {
            budget,
            state: Mutex::new((budget.burst as f64, Instant::now())),
        }
    }

    /// The budget it enforces.
    pub fn budget(&self) -> PolicyBudget {
        self.budget
    }

    /// Refills for the time passed; whether a call may start (fuel above zero).
    pub fn may_start(&self) -> bool {
        self.available() > 0.0
    }

    /// Takes what a finished decision cost: the `fuel` its `calls` policy calls used,
    /// plus [`CALL_OVERHEAD_FUEL`] per call; may overdraw.
    pub fn charge(&self, fuel: u64, calls: usize) {
        let cost = fuel + CALL_OVERHEAD_FUEL * calls as u64;
        if cost == 0 {
            return;
        }
        let mut s = self.state.lock().expect("fuel bucket lock");
        s.0 -= cost as f64;
    }

    /// Fuel available now, after refilling.
    pub fn available(&self) -> f64 {
        let mut s = self.state.lock().expect("fuel bucket lock");
        let now = Instant::now();
        let added = now.duration_since(s.1).as_secs_f64() * self.budget.fuel_per_s as f64;
        s.0 = (s.0 + added).min(self.budget.burst as f64);
        s.1 = now;
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overdrawn_bucket_refuses_until_refilled() {
        let bucket = FuelBucket::new(PolicyBudget {
            fuel_per_s: 100_000,
            burst: 1_000,
        });
        assert!(bucket.may_start());
        bucket.charge(1_500, 0);
        assert!(!bucket.may_start(), "500 overdrawn");
        // 10 ms at 100 k/s refills 1,000: in credit again, capped at the burst.
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(bucket.may_start());
        assert!(bucket.available() <= 1_000.0);
        bucket.charge(0, 1);
        assert!(
            !bucket.may_start(),
            "a call costs its overhead even without fuel"
        );
    }
}
