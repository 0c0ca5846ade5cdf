use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(Path::new("router.yaml"), text)
}

const BACKEND: &str = "
backends:
  - name: a
    url: http://127.0.0.1:9001
    models: [m]
";

#[test]
fn minimal_file_takes_defaults() {
    let c = parse(BACKEND).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.pool.scrape_interval, Duration::from_millis(100));
    assert_eq!(c.proxy.max_attempts, 3);
    assert_eq!(c.backends[0].name, "a");
    assert!(c.admin.is_none());
}

#[test]
fn policy_runtime_overrides_the_runtime_defaults_and_refuses_zero_budgets() {
    let c = parse(&format!(
        "{BACKEND}policy_runtime:\n  fuel_per_call: 5000\n  deadline_ms: 20\n  memory_mib: 8\n  baseline_tier: false\n"
    ))
    .unwrap();
    let limits = &c.policy_limits;
    assert_eq!(limits.fuel_per_call, 5000);
    assert_eq!(limits.deadline, Duration::from_millis(20));
    assert_eq!(limits.memory_bytes, 8 << 20);
    assert!(!limits.baseline_tier);
    let defaults = crate::policy::Limits::default();
    assert_eq!(limits.max_upload_bytes, defaults.max_upload_bytes);
    assert!(parse(BACKEND).unwrap().policy_limits.baseline_tier);

    let err = parse(&format!(
        "{BACKEND}policy_runtime:\n  fuel_per_call: 0\n  memory_mib: 0\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("policy_runtime.fuel_per_call: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("policy_runtime.memory_mib: must be at least 1"),
        "{err}"
    );
}

#[test]
fn listener_limits_default_per_listener_override_and_refuse_zero() {
    let c = parse(BACKEND).unwrap();
    assert_eq!(c.listeners.client, ListenerLimits::CLIENT);
    assert_eq!(
        c.listeners.client.header_read_timeout,
        Duration::from_secs(10)
    );
    assert_eq!(c.listeners.admin.max_connections, 64);
    let c = parse(&format!(
        "{BACKEND}listeners:\n  client:\n    header_read_timeout_ms: 2000\n    max_connections: 9\n  admin:\n    idle_timeout_ms: 700\n"
    ))
    .unwrap();
    assert_eq!(
        c.listeners.client.header_read_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(c.listeners.client.max_connections, 9);
    assert_eq!(
        c.listeners.client.body_read_timeout,
        ListenerLimits::CLIENT.body_read_timeout
    );
    assert_eq!(c.listeners.admin.idle_timeout, Duration::from_millis(700));

    let err = parse(&format!(
        "{BACKEND}listeners:\n  client:\n    body_read_timeout_ms: 0\n  admin:\n    max_connections: 0\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("router.yaml: 2 problem(s)"), "{err}");
    assert!(
        err.contains("listeners.client.body_read_timeout_ms: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("listeners.admin.max_connections: must be at least 1"),
        "{err}"
    );
    let err = parse(&format!(
        "{BACKEND}listeners:\n  client:\n    header_timeout_ms: 5\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("listeners.client"), "{err}");
}

#[test]
fn park_for_ms_sets_the_parking_period_and_refuses_zero() {
    let c = parse(&format!("{BACKEND}policy_runtime:\n  park_for_ms: 250\n")).unwrap();
    assert_eq!(c.policy_limits.park_for, Duration::from_millis(250));
    assert_eq!(
        parse(BACKEND).unwrap().policy_limits.park_for,
        Duration::from_secs(30)
    );
    let err = parse(&format!("{BACKEND}policy_runtime:\n  park_for_ms: 0\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policy_runtime.park_for_ms: must be at least 1"),
        "{err}"
    );
}

#[test]
fn unknown_field_names_file_and_path() {
    let err = parse(&format!("{BACKEND}    colour: red\n")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("router.yaml: backends[0]"), "{text}");
    assert!(text.contains("colour"), "{text}");
}

#[test]
fn every_problem_is_listed() {
    let text = "
listen: nowhere
backends:
  - name: a
    url: not a url
    models: []
  - name: a
    url: http://127.0.0.1:1
    models: [m]
tenants:
  acme:
    pipeline:
      scorers:
        - policy: prefix-affinity
          weight: 1.7
";
    let ConfigError::Invalid { problems, .. } = parse(text).unwrap_err() else {
        panic!("expected Invalid");
    };
    let all = problems.join("\n");
    for needle in [
        "listen: `nowhere`",
        "backends[0].url",
        "backends[0].models",
        "backends[1].name: `a` is used twice",
        "tenants.acme.pipeline.scorers[0].weight: 1.7 is outside [0, 1]",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
}

#[test]
fn names_that_could_leave_the_state_dir_name_file_and_field() {
    for (text, field) in [
        (
            format!("{BACKEND}tenants:\n  ../../pwned: {{}}\n"),
            "router.yaml: tenants",
        ),
        (
            "backends:\n  - name: .hidden\n    url: http://127.0.0.1:1\n    models: [m]\n"
                .to_string(),
            "router.yaml: backends[0].name",
        ),
        (
            format!("{BACKEND}policies:\n  - name: a/../b\n    path: x.wasm\n"),
            "router.yaml: policies[0].name",
        ),
    ] {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with(field), "{err}");
        assert!(err.contains("invalid"), "{err}");
    }
}

#[test]
fn on_damaged_entry_defaults_to_refuse_and_takes_skip() {
    use crate::state::OnDamagedEntry;
    assert_eq!(
        parse(BACKEND).unwrap().state.on_damaged_entry,
        OnDamagedEntry::Refuse
    );
    let c = parse(&format!("{BACKEND}state:\n  on_damaged_entry: skip\n")).unwrap();
    assert_eq!(c.state.on_damaged_entry, OnDamagedEntry::Skip);
    let err = parse(&format!("{BACKEND}state:\n  on_damaged_entry: ignore\n")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("router.yaml: state.on_damaged_entry"),
        "{err}"
    );
}

#[test]
fn admin_token_from_missing_env_is_a_problem() {
    let text = format!("{BACKEND}admin:\n  token_env: SWITCHYARD_TEST_UNSET_TOKEN_VAR\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("SWITCHYARD_TEST_UNSET_TOKEN_VAR is not set"),
        "{err}"
    );
}

#[test]
fn credentials_take_roles_tenants_and_token_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.token"), "acme-token-0123456789\n").unwrap();
    std::fs::write(dir.path().join("short.token"), "short").unwrap();
    let text = format!(
        "{BACKEND}admin:\n  token: ops-token-0123456789\n  private_labels: [rack]\n  credentials:\n    \
         - {{name: acme-ci, token_file: acme.token, role: tenant, tenant: acme}}\n\
         tenants:\n  acme:\n    policy_budget: unlimited\n    cache_isolation: true\n  \
         globex:\n    policy_quota: {{versions: 3}}\n    policy_budget: {{fuel_per_s: 1000}}\n"
    );
    let c = Config::from_yaml(&dir.path().join("router.yaml"), &text).unwrap();
    let admin = c.admin.unwrap();
    let names: Vec<&str> = admin.credentials.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["admin", "acme-ci"]);
    assert!(matches!(&admin.credentials[1].role, Role::Tenant(t) if t == "acme"));
    assert!(
        matches!(&admin.credentials[1].token, TokenSource::File(p) if p.ends_with("acme.token"))
    );
    assert_eq!(admin.private_labels, ["rack"]);
    let acme = &c.tenants[0];
    assert_eq!(acme.policy_budget, None);
    assert!(acme.cache_isolation);
    assert_eq!(acme.policy_quota, PolicyQuota::default());
    let globex = &c.tenants[1];
    assert_eq!(globex.policy_quota.versions, 3);
    assert_eq!(
        globex.policy_budget,
        Some(PolicyBudget {
            fuel_per_s: 1000,
            burst: 100
        })
    );
    assert!(!globex.cache_isolation);

    let bad = format!(
        "{BACKEND}admin:\n  token: too-short\n  credentials:\n    \
         - {{name: x, token_file: short.token, role: tenant, tenant: nobody}}\n    \
         - {{name: y, token_file: acme.token, role: operator, tenant: acme}}\n\
         tenants:\n  acme:\n    policy_budget: lots\n"
    );
    let err = Config::from_yaml(&dir.path().join("router.yaml"), &bad)
        .unwrap_err()
        .to_string();
    for needle in [
        "admin.token: the token is 9 bytes; at least 16 are required",
        "admin.credentials[0].token_file",
        "admin.credentials[0].tenant: `nobody` is not a tenant",
        "admin.credentials[1].tenant: an operator is bound to no tenant",
        "tenants.acme.policy_budget: `lots`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in\n{err}");
    }
}

/// Parses a file under `examples/`; the only problems allowed are those naming `allowed`.
fn example(file: &str, allowed: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    match Config::load(&path) {
        Ok(_) => {}
        Err(ConfigError::Invalid { problems, .. }) => {
            for p in &problems {
                assert!(
                    allowed.iter().any(|a| p.contains(a)),
                    "{file}: unexpected problem {p}"
                );
            }
        }
        Err(e) => panic!("{file}: {e}"),
    }
}

#[test]
fn shipped_examples_parse() {
    example("quickstart.yaml", &["SWITCHYARD_ADMIN_TOKEN"]);
    example(
        "config-reference.yaml",
        &[
            "SWITCHYARD_ADMIN_TOKEN",
            "OPS_TOKEN",
            "credentials[1].token_file",
            "policies[0].path",
        ],
    );
}

#[test]
fn label_headers_and_the_default_output_tokens_are_validated() {
    let c = parse(&format!(
        "{BACKEND}proxy:\n  label_headers: {{X-Data-Class: data-class}}\n  default_max_tokens: 64\n"
    ))
    .unwrap();
    assert_eq!(c.proxy.default_max_tokens, 64);
    assert_eq!(
        c.proxy.label_headers,
        [(
            HeaderName::from_static("x-data-class"),
            "data-class".to_owned()
        )],
        "header names are case-insensitive"
    );
    assert_eq!(parse(BACKEND).unwrap().proxy.default_max_tokens, 1024);

    let err = parse(&format!(
        "{BACKEND}proxy:\n  label_headers: {{\"bad header\": x, x-empty: \"\"}}\n  default_max_tokens: 0\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("router.yaml: 3 problem(s)"), "{err}");
    assert!(
        err.contains("`bad header` is not a valid header name"),
        "{err}"
    );
    assert!(
        err.contains("proxy.label_headers.x-empty: the label name"),
        "{err}"
    );
    assert!(
        err.contains("proxy.default_max_tokens: must be at least 1"),
        "{err}"
    );
}

#[test]
fn the_cluster_section_takes_defaults_and_is_validated() {
    let c = parse(&format!(
        "{BACKEND}state_dir: state\ncluster: {{nats: [nats://10.0.0.1:4222, nats://10.0.0.2:4222, nats://10.0.0.3:4222], name: prod, replica: r1}}\n"
    ))
    .unwrap();
    let cluster = c.cluster.expect("cluster section");
    assert_eq!(cluster.replica, "r1");
    assert_eq!(cluster.stream_replicas, 3, "three servers: R3");
    assert_eq!(cluster.load_interval, Duration::from_millis(25));
    assert_eq!(cluster.load_expiry, Duration::from_secs(1));
    assert!(parse(BACKEND).unwrap().cluster.is_none());

    let one = parse(&format!(
        "{BACKEND}state_dir: state\ncluster: {{nats: [nats://127.0.0.1:4222], name: dev}}\n"
    ))
    .unwrap()
    .cluster
    .unwrap();
    assert_eq!(one.stream_replicas, 1, "one server: R1");
    assert!(
        one.replica.ends_with(&format!("-{}", std::process::id())),
        "default replica id is <host>-<pid>: {}",
        one.replica
    );

    let err = parse(&format!(
        "{BACKEND}cluster: {{nats: [], name: \"a.b\", user: u, token_env: T}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("cluster: needs `state_dir`"), "{err}");
    assert!(err.contains("cluster.nats: list at least one"), "{err}");
    assert!(err.contains("cluster.name: `a.b` must be"), "{err}");
    assert!(
        err.contains("at most one of `credentials_file`, `user`, `token_env`"),
        "{err}"
    );
}
