//! Filter: only backends whose region and labels satisfy the residency rules for the
//! request's tenant and data class; every exclusion says which rule it broke.

use std::collections::BTreeMap;
use std::fmt;

use switchyard_policy_sdk::prelude::*;

/// What happens to a request no rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncovered {
    /// Every backend is excluded: fail closed.
    #[default]
    Deny,
    /// Every backend is allowed.
    Allow,
}

/// One residency rule: who it applies to and what a backend must have.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Applies only to this tenant; any tenant when absent. Example: `"tenant": "acme"`.
    pub tenant: Option<String>,
    /// Applies only to requests with this data class; any request when absent.
    /// Example: `"data_class": "pii"`.
    pub data_class: Option<String>,
    /// A backend's region must be one of these; any region when empty.
    /// Example: `"regions": ["eu-west", "eu-central"]`.
    pub regions: Vec<String>,
    /// A backend must carry every one of these labels (`"*"` matches any value).
    /// Example: `"labels": {"sovereign": "true"}`.
    pub labels: BTreeMap<String, String>,
}

impl Rule {
    fn applies(&self, tenant: &str, data_class: Option<&str>) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self
                .data_class
                .as_deref()
                .is_none_or(|d| Some(d) == data_class)
    }

    /// Why `backend` breaks this rule, or `None` when it satisfies it.
    fn violation(&self, backend: &Backend) -> Option<String> {
        if !self.regions.is_empty() && !self.regions.contains(&backend.region) {
            return Some(format!(
                "region '{}' is not one of {}",
                backend.region,
                self.regions.join(", ")
            ));
        }
        self.labels
            .iter()
            .find(|(k, v)| !backend.matches(&[(k, v)]))
            .map(|(k, v)| format!("lacks label {k}={v}"))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenant = self.tenant.as_deref().unwrap_or("*");
        let class = self.data_class.as_deref().unwrap_or("*");
        write!(f, "tenant {tenant}, data-class {class}")
    }
}

/// Keeps requests on the backends their residency rules allow.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataResidency {
    /// `deny` (default) or `allow` a request no rule applies to.
    pub default: Uncovered,
    /// The request label holding the data class. Default `data-class`.
    pub data_class_label: String,
    /// The rules; every rule that applies to a request must hold.
    pub rules: Vec<Rule>,
}

impl Default for DataResidency {
    fn default() -> Self {
        DataResidency {
            default: Uncovered::Deny,
            data_class_label: "data-class".into(),
            rules: Vec::new(),
        }
    }
}

impl DataResidency {
    fn applicable<'a>(&'a self, req: &Request) -> Vec<(usize, &'a Rule)> {
        let class = req.label(&self.data_class_label);
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(&req.tenant, class))
            .collect()
    }

    fn verdict(
        &self,
        rules: &[(usize, &Rule)],
        req: &Request,
        c: &Candidate,
        fleet: &Fleet,
    ) -> Verdict {
        let Some(backend) = fleet.get(c.backend) else {
            return Verdict::Exclude("backend is not in the fleet".into());
        };
        if rules.is_empty() {
            return match self.default {
                Uncovered::Allow => Verdict::Allow,
                Uncovered::Deny => Verdict::Exclude(format!(
                    "no residency rule covers tenant {} with data-class {}",
                    req.tenant,
                    req.label(&self.data_class_label).unwrap_or("(none)")
                )),
            };
        }
        rules
            .iter()
            .find_map(|(i, rule)| {
                rule.violation(backend)
                    .map(|why| format!("{why} (rule {i}: {rule})"))
            })
            .map_or(Verdict::Allow, Verdict::Exclude)
    }
}

impl Filter for DataResidency {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: DataResidency = config::from_json(config)?;
        let mut problems = Vec::new();
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.regions.is_empty() && rule.labels.is_empty() {
                problems.push(format!("rules[{i}]: needs regions or labels"));
            }
        }
        if policy.rules.is_empty() && policy.default == Uncovered::Deny {
            problems.push("rules: empty with default deny excludes every backend".into());
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(ConfigError::new(problems.join("; ")))
        }
    }

    fn check(&self, req: &Request, c: &Candidate, fleet: &Fleet) -> Verdict {
        self.verdict(&self.applicable(req), req, c, fleet)
    }

    fn exclude(
        &self,
        req: &Request,
        candidates: &[Candidate],
        fleet: &Fleet,
    ) -> Vec<(BackendId, String)> {
        // The rules depend on the request only: match them once, not per candidate.
        let rules = self.applicable(req);
        candidates
            .iter()
            .filter_map(|c| match self.verdict(&rules, req, c, fleet) {
                Verdict::Allow => None,
                Verdict::Exclude(reason) => Some((c.backend, reason)),
            })
            .collect()
    }
}

switchyard_policy_sdk::export_filter!(DataResidency);

#[cfg(test)]
mod tests;
