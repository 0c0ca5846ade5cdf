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
mod tests {
    use super::*;
    use switchyard_policy_sdk::testing;

    const CONFIG: &str = r#"{
        "rules": [
            {"tenant": "acme", "regions": ["eu-west", "eu-central"]},
            {"data_class": "pii", "labels": {"sovereign": "true"}},
            {"tenant": "globex", "regions": ["us-east", "eu-west"]}
        ]
    }"#;

    /// b0 eu-west sovereign, b1 eu-central, b2 us-east, b3 eu-west.
    fn fleet() -> Fleet {
        let mut fleet = testing::fleet(4);
        for (b, region) in ["eu-west", "eu-central", "us-east", "eu-west"]
            .into_iter()
            .enumerate()
        {
            fleet.backends[b].region = region.into();
        }
        fleet.backends[0].labels = vec![("sovereign".into(), "true".into())];
        fleet
    }

    fn request(tenant: &str, class: Option<&str>) -> Request {
        Request {
            tenant: tenant.into(),
            labels: class
                .map(|c| vec![("data-class".into(), c.into())])
                .unwrap_or_default(),
            ..testing::request(100)
        }
    }

    fn excluded(config: &str, req: &Request) -> Vec<(u32, String)> {
        let cands: Vec<Candidate> = (0..4).map(testing::candidate).collect();
        testing::exclude::<DataResidency>(config, req, &cands, &fleet())
            .into_iter()
            .map(|(b, why)| (b.0, why))
            .collect()
    }

    fn ids(out: &[(u32, String)]) -> Vec<u32> {
        out.iter().map(|(b, _)| *b).collect()
    }

    #[test]
    fn tenant_rule_keeps_allowed_regions() {
        let out = excluded(CONFIG, &request("acme", None));
        assert_eq!(ids(&out), vec![2]);
        assert_eq!(
            out[0].1,
            "region 'us-east' is not one of eu-west, eu-central (rule 0: tenant acme, data-class *)"
        );
    }

    #[test]
    fn every_applicable_rule_must_hold() {
        // acme's region rule and the pii label rule both apply: only b0 has both.
        let out = excluded(CONFIG, &request("acme", Some("pii")));
        assert_eq!(ids(&out), vec![1, 2, 3]);
        assert!(
            out[0].1.starts_with("lacks label sovereign=true (rule 1"),
            "{out:?}"
        );
    }

    #[test]
    fn data_class_rule_applies_to_any_tenant() {
        let out = excluded(CONFIG, &request("initech", Some("pii")));
        assert_eq!(ids(&out), vec![1, 2, 3]);
    }

    #[test]
    fn uncovered_request_is_denied_by_default() {
        let out = excluded(CONFIG, &request("initech", Some("public")));
        assert_eq!(ids(&out), vec![0, 1, 2, 3]);
        assert_eq!(
            out[0].1,
            "no residency rule covers tenant initech with data-class public"
        );
    }

    #[test]
    fn uncovered_request_is_allowed_when_configured() {
        let config =
            r#"{"default": "allow", "rules": [{"tenant": "acme", "regions": ["eu-west"]}]}"#;
        assert!(excluded(config, &request("initech", None)).is_empty());
    }

    #[test]
    fn data_class_label_name_is_configurable() {
        let config = r#"{"data_class_label": "class", "rules": [{"data_class": "pii", "regions": ["eu-central"]}]}"#;
        let req = Request {
            labels: vec![("class".into(), "pii".into())],
            ..request("x", None)
        };
        assert_eq!(ids(&excluded(config, &req)), vec![0, 2, 3]);
    }

    #[test]
    fn backend_missing_from_fleet_is_excluded() {
        let stray = testing::candidate(9);
        let out = testing::exclude::<DataResidency>(
            r#"{"default": "allow"}"#,
            &request("acme", None),
            &[stray],
            &fleet(),
        );
        assert_eq!(
            out,
            vec![(BackendId(9), "backend is not in the fleet".into())]
        );
    }

    #[test]
    fn useless_configs_are_rejected_with_every_problem() {
        let err = DataResidency::configure(r#"{"rules": [{"tenant": "a"}, {"tenant": "b"}]}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rules[0]: needs regions or labels; rules[1]: needs regions or labels"
        );
        assert!(
            DataResidency::configure("").is_err(),
            "default deny with no rules"
        );
        assert!(DataResidency::configure(r#"{"default": "allow"}"#).is_ok());
    }
}
