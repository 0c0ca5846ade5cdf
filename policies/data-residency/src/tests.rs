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
    let config = r#"{"default": "allow", "rules": [{"tenant": "acme", "regions": ["eu-west"]}]}"#;
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
    let err =
        DataResidency::configure(r#"{"rules": [{"tenant": "a"}, {"tenant": "b"}]}"#).unwrap_err();
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

#[test]
fn readme_example_configs_are_accepted() {
    let examples = testing::json_blocks(include_str!("../README.md"));
    assert!(!examples.is_empty(), "the README shows an example config");
    for config in examples {
        if let Err(e) = DataResidency::configure(config) {
            panic!("README config {config} rejected: {e}");
        }
    }
}
