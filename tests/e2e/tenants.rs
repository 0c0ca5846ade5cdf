//! Several tenants on one router: tenant credentials confined to their own tenant, policy
//! namespaces, quotas and deletion, the audit log, the policy CPU budget, cache
//! isolation, and all of it across a SIGKILL restart.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{prefix_affinity_wasm, shipped_wasm};
use crate::harness::{
    ExternalBackend, Fleet, MODEL, Switchyard, TOKEN, TestBackend, client, free_port,
    switchyard_binary,
};

const ACME_TOKEN: &str = "acme-ci-token-0123456789";
const GLOBEX_TOKEN: &str = "globex-ci-token-0123456789";

/// A config with tenants `acme` and `globex`, each with an API key and a tenant
/// credential (token files in `dir`, acme's named `acme-ci`), and `state_dir`.
fn two_tenants(dir: &Path, backends: &[&TestBackend], tenant_extra: &str) -> String {
    std::fs::write(dir.join("acme.token"), format!("{ACME_TOKEN}\n")).unwrap();
    std::fs::write(dir.join("globex.token"), GLOBEX_TOKEN).unwrap();
    let mut fleet = Fleet::new(backends);
    fleet.admin = "  private_labels: [rack]\n  credentials:\n    \
        - {name: acme-ci, token_file: acme.token, role: tenant, tenant: acme}\n    \
        - {name: globex-ci, token_file: globex.token, role: tenant, tenant: globex}\n"
        .into();
    fleet.extra = format!(
        "state_dir: state\ntenants:\n  acme:\n    api_keys: [k-acme]\n{tenant_extra}  globex:\n    api_keys: [k-globex]\n"
    );
    fleet.yaml()
}

/// An admin call with `token`; (status, JSON body or null).
async fn call(
    sy: &Switchyard,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Body>,
) -> (StatusCode, Value) {
    let mut req = client()
        .request(method, format!("{}{path}", sy.admin))
        .bearer_auth(token);
    req = match body {
        Some(Body::Json(v)) => req.json(&v),
        Some(Body::Wasm(b)) => req.body(b),
        None => req,
    };
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

enum Body {
    Json(Value),
    Wasm(Vec<u8>),
}

/// The properties and required fields of the API document's schema `name`, through
/// `allOf` and `$ref` (flattened structs).
fn schema_fields(doc: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut listed = BTreeSet::new();
    let mut required = BTreeSet::new();
    let mut todo = vec![doc["components"]["schemas"][name].clone()];
    assert!(todo[0].is_object(), "no schema {name}");
    while let Some(schema) = todo.pop() {
        if let Some(r) = schema["$ref"].as_str() {
            let target = r.trim_start_matches("#/components/schemas/");
            todo.push(doc["components"]["schemas"][target].clone());
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            todo.push(part.clone());
        }
        for key in schema["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            listed.insert(key.clone());
        }
        for r in schema["required"].as_array().into_iter().flatten() {
            required.insert(r.as_str().unwrap().to_owned());
        }
    }
    (listed, required)
}

/// Asserts `value` has every field the API document's schema `name` requires and no
/// field it does not list.
fn assert_has_schema_fields(doc: &Value, name: &str, value: &Value) {
    let (listed, required) = schema_fields(doc, name);
    let actual: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    assert!(
        required.is_subset(&actual),
        "{name}: missing {:?}",
        required.difference(&actual)
    );
    assert!(
        actual.is_subset(&listed),
        "{name}: undocumented {:?}",
        actual.difference(&listed)
    );
}

/// Sets acme's pipeline with acme's token; the status.
async fn set_acme_pipeline(sy: &Switchyard, spec: Value) -> StatusCode {
    call(
        sy,
        ACME_TOKEN,
        Method::PUT,
        "/admin/tenants/acme/pipeline",
        Some(Body::Json(spec)),
    )
    .await
    .0
}

/// acme's token trying to set globex's pipeline; the status.
async fn acme_sets_globex(sy: &Switchyard) -> StatusCode {
    call(
        sy,
        ACME_TOKEN,
        Method::PUT,
        "/admin/tenants/globex/pipeline",
        None,
    )
    .await
    .0
}

/// The message of an error body.
fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

/// A pipeline with one scorer, `policy`.
fn scorer(policy: &str) -> Value {
    json!({"scorers": [{"policy": policy, "weight": 1.0}]})
}

async fn chat_as(sy: &Switchyard, key: &str, content: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .bearer_auth(key)
        .json(&json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_credential_is_confined_to_its_tenant_and_every_call_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let sy = Switchyard::start(dir.path(), &two_tenants(dir.path(), &[&a], "")).await;

    // What acme's CI may do: its namespace and its own pipelines.
    let (s, up) = call(
        &sy,
        ACME_TOKEN,
        Method::PUT,
        "/admin/policies/acme/affinity",
        Some(Body::Wasm(prefix_affinity_wasm())),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["name"], "acme/affinity");
    let own = scorer("acme/affinity");
    for (method, path, body) in [
        (
            Method::PUT,
            "/admin/tenants/acme/pipeline",
            Some(own.clone()),
        ),
        (
            Method::PUT,
            "/admin/tenants/acme/pipeline",
            Some(scorer("least-load")),
        ),
        (
            Method::PUT,
            "/admin/tenants/acme/canary",
            Some(json!({"pipeline": own, "share": 0.5})),
        ),
        (Method::PUT, "/admin/tenants/acme/shadow", Some(own.clone())),
        (Method::POST, "/admin/tenants/acme/rollback", None),
    ] {
        let (s, v) = call(&sy, ACME_TOKEN, method.clone(), path, body.map(Body::Json)).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
    }
    let (_, tenants) = call(&sy, ACME_TOKEN, Method::GET, "/admin/tenants", None).await;
    let names: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme"], "a tenant sees only its own pipelines");
    assert_eq!(
        tenants[0]["active"]["scorers"][0]["policy"],
        format!("acme/affinity@{}", up["version"].as_str().unwrap())
    );

    // What it may not: anything of globex's, the fleet, global names.
    let (s, _) = call(
        &sy,
        GLOBEX_TOKEN,
        Method::PUT,
        "/admin/policies/globex/gx",
        Some(Body::Wasm(shipped_wasm("least_load"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let refused = [
        (
            Method::PUT,
            "/admin/tenants/globex/pipeline",
            Some(Body::Json(scorer("least-load"))),
            "tenant `globex`",
        ),
        (
            Method::POST,
            "/admin/tenants/globex/rollback",
            None,
            "tenant `globex`",
        ),
        (
            Method::PUT,
            "/admin/tenants/acme/pipeline",
            Some(Body::Json(scorer("globex/gx"))),
            "a policy of tenant `globex`",
        ),
        (
            Method::POST,
            "/admin/backends",
            Some(Body::Json(
                json!({"name": "evil", "url": "http://127.0.0.1:9", "models": [MODEL]}),
            )),
            "manage backends",
        ),
        (
            Method::POST,
            "/admin/backends/a/drain",
            None,
            "manage backends",
        ),
        (Method::DELETE, "/admin/backends/a", None, "manage backends"),
        (
            Method::GET,
            "/admin/decisions?tenant=globex",
            None,
            "tenant `globex`",
        ),
        (
            Method::PUT,
            "/admin/policies/affinity",
            Some(Body::Wasm(prefix_affinity_wasm())),
            "global policy",
        ),
        (
            Method::PUT,
            "/admin/policies/globex/x",
            Some(Body::Wasm(prefix_affinity_wasm())),
            "tenant `globex`",
        ),
        (Method::GET, "/admin/kv", None, "KV index"),
        (Method::GET, "/admin/state/damaged", None, "damaged"),
    ];
    for (method, path, body, right) in refused {
        let (s, v) = call(&sy, ACME_TOKEN, method.clone(), path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert_eq!(v["error"]["type"], "permission_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`acme-ci`") && message.contains(right),
            "{method} {path}: {message}"
        );
    }
    let (_, policies) = call(&sy, ACME_TOKEN, Method::GET, "/admin/policies", None).await;
    let names: Vec<&str> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"acme/affinity") && names.contains(&"least-load"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("globex/")), "{names:?}");

    // The operator may do everything, including attaching acme's policy to globex.
    let (s, v) = call(
        &sy,
        TOKEN,
        Method::PUT,
        "/admin/tenants/globex/pipeline",
        Some(Body::Json(scorer("acme/affinity"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let labelled = json!({"name": "b", "url": a.url, "models": [MODEL], "labels": {"rack": "r7", "tier": "gold"}});
    let (s, v) = call(
        &sy,
        TOKEN,
        Method::POST,
        "/admin/backends",
        Some(Body::Json(labelled)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // A tenant's view of the fleet has no addresses and no private labels.
    let (_, fleet) = call(&sy, ACME_TOKEN, Method::GET, "/admin/backends", None).await;
    let b = fleet
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b")
        .unwrap();
    assert!(b.get("url").is_none(), "{b}");
    assert_eq!(b["labels"], json!({"tier": "gold"}));
    let (_, full) = call(&sy, TOKEN, Method::GET, "/admin/backends/b", None).await;
    assert_eq!(full["url"], a.url.as_str());
    assert_eq!(full["labels"]["rack"], "r7");

    // Decisions: each tenant reads its own.
    assert_eq!(
        chat_as(&sy, "k-acme", "from acme").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        chat_as(&sy, "k-globex", "from globex").await.status(),
        StatusCode::OK
    );
    let (_, mine) = call(&sy, ACME_TOKEN, Method::GET, "/admin/decisions", None).await;
    let tenants: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme"]);
    let (_, all) = call(&sy, TOKEN, Method::GET, "/admin/decisions", None).await;
    assert_eq!(all.as_array().unwrap().len(), 2);

    // The records are what the API document says they are.
    let doc = sy.admin_get("/admin/openapi.json").await;
    let (_, usage) = call(
        &sy,
        ACME_TOKEN,
        Method::GET,
        "/admin/tenants/acme/quota",
        None,
    )
    .await;
    for (schema, value) in [("DecisionRecord", &mine[0]), ("TenantUsage", &usage)] {
        assert_has_schema_fields(&doc, schema, value);
    }

    // The audit log: every change and every refusal, with the credential's name.
    let (s, log) = call(&sy, TOKEN, Method::GET, "/admin/audit?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let log = log.as_array().unwrap();
    let by = |cred: &str, status: u16| {
        log.iter()
            .filter(|r| r["credential"] == cred && r["status"] == status)
            .count()
    };
    assert_eq!(
        by("acme-ci", 200),
        6,
        "upload + 5 pipeline changes: {log:#?}"
    );
    assert_eq!(by("acme-ci", 403), 11, "every refusal: {log:#?}");
    assert_eq!(by("admin", 200), 1);
    assert_eq!(by("admin", 201), 1);
    let upload = log
        .iter()
        .find(|r| {
            r["route"] == "/admin/policies/{namespace}/{name}" && r["credential"] == "acme-ci"
        })
        .unwrap();
    assert_eq!(
        upload["after"],
        format!("acme/affinity@{}", up["version"].as_str().unwrap())
    );
    assert_eq!(upload["role"], "tenant");
    assert_eq!(upload["tenant"], "acme");
    let rollback = log
        .iter()
        .find(|r| r["target"] == "/admin/tenants/acme/rollback")
        .unwrap();
    assert_eq!(
        (rollback["before"].as_str(), rollback["after"].as_str()),
        (Some("4"), Some("5"))
    );
    assert_has_schema_fields(&doc, "AuditRecord", &log[0]);
    let seqs: Vec<u64> = log.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // Tenants read their own records; a wrong token is refused and recorded too.
    let (_, own) = call(
        &sy,
        ACME_TOKEN,
        Method::GET,
        "/admin/audit?limit=1000",
        None,
    )
    .await;
    assert!(
        own.as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant"] == "acme"),
        "{own}"
    );
    assert_eq!(own.as_array().unwrap().len(), 6 + 11);
    let (s, _) = call(
        &sy,
        "not-a-token-at-all",
        Method::PUT,
        "/admin/tenants/acme/pipeline",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, last) = call(&sy, TOKEN, Method::GET, "/admin/audit?limit=1", None).await;
    assert_eq!(
        (last[0]["status"].as_u64(), last[0]["credential"].is_null()),
        (Some(401), true)
    );
    let on_disk = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
    assert_eq!(on_disk.lines().count(), log.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_bound_a_namespace_and_a_version_in_use_cannot_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let quota = "    policy_quota: {versions: 2}\n";
    let sy = Switchyard::start(dir.path(), &two_tenants(dir.path(), &[&a], quota)).await;
    let upload = |name: &'static str, krate: &'static str| {
        let sy = &sy;
        async move {
            call(
                sy,
                ACME_TOKEN,
                Method::PUT,
                &format!("/admin/policies/acme/{name}"),
                Some(Body::Wasm(shipped_wasm(krate))),
            )
            .await
        }
    };
    let (s, v1) = upload("p", "prefix_affinity").await;
    assert_eq!(s, StatusCode::OK, "{v1}");
    let (s, v2) = upload("p", "least_load").await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    let (s, over) = upload("q", "hetero_cost").await;
    assert_eq!(s, StatusCode::CONFLICT, "{over}");
    assert!(
        over["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota is full (versions: 2 of 2"),
        "{over}"
    );
    let (_, usage) = call(
        &sy,
        ACME_TOKEN,
        Method::GET,
        "/admin/tenants/acme/quota",
        None,
    )
    .await;
    assert_eq!(
        (
            usage["versions"].as_u64(),
            usage["quota"]["versions"].as_u64()
        ),
        (Some(2), Some(2))
    );

    let label = |v: &Value| format!("acme/p@{}", v["version"].as_str().unwrap());
    let delete = |v: &Value| {
        let path = format!("/admin/policies/{}", label(v));
        let sy = &sy;
        async move { call(sy, ACME_TOKEN, Method::DELETE, &path, None).await }
    };
    // In use by the active pipeline, then as the rollback target.
    assert_eq!(
        set_acme_pipeline(&sy, scorer(&label(&v1))).await,
        StatusCode::OK
    );
    let (s, v) = delete(&v1).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        message(&v).contains("tenant `acme`'s active pipeline"),
        "{v}"
    );
    assert_eq!(
        set_acme_pipeline(&sy, scorer(&label(&v2))).await,
        StatusCode::OK
    );
    let (s, v) = delete(&v1).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(message(&v).contains("rollback target"), "{v}");
    // Moved off it twice: v1 is free, and deleting it makes room.
    assert_eq!(set_acme_pipeline(&sy, json!({})).await, StatusCode::OK);
    let (s, v) = delete(&v1).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = delete(&v1).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        !dir.path()
            .join(format!(
                "state/policies/acme/p@{}.wasm",
                v1["version"].as_str().unwrap()
            ))
            .exists()
    );
    let (s, v) = upload("q", "hetero_cost").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Shipped versions and another tenant's are not the tenant's to delete.
    let (_, all) = call(&sy, TOKEN, Method::GET, "/admin/policies", None).await;
    let shipped = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "least-load")
        .unwrap();
    let path = format!(
        "/admin/policies/least-load@{}",
        shipped["version"].as_str().unwrap()
    );
    assert_eq!(
        call(&sy, ACME_TOKEN, Method::DELETE, &path, None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&sy, TOKEN, Method::DELETE, &path, None).await.0,
        StatusCode::CONFLICT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_policy_budget_decides_by_the_failure_mode_without_calling_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    // One fuel a second: the first decision overdraws the bucket for good.
    let budget = "    policy_budget: {fuel_per_s: 1, burst: 1}\n    pipeline:\n      scorers: [{policy: prefix-affinity, weight: 1.0}]\n";
    let sy = Switchyard::start(dir.path(), &two_tenants(dir.path(), &[&a], budget)).await;
    for i in 0..3 {
        assert_eq!(
            chat_as(&sy, "k-acme", &format!("request {i}"))
                .await
                .status(),
            StatusCode::OK
        );
    }
    let (_, d) = call(&sy, ACME_TOKEN, Method::GET, "/admin/decisions", None).await;
    let exhausted: Vec<bool> = d
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|d| d["budget_exhausted"].as_bool().unwrap())
        .collect();
    assert_eq!(exhausted, [false, true, true]);
    assert!(
        d[0]["policies"].as_array().unwrap().is_empty(),
        "no Wasm ran: {}",
        d[0]
    );
    assert!(
        sy.metrics()
            .await
            .contains("switchyard_policy_budget_exhausted_total{tenant=\"acme\"} 2")
    );
    let (_, usage) = call(
        &sy,
        ACME_TOKEN,
        Method::GET,
        "/admin/tenants/acme/quota",
        None,
    )
    .await;
    assert!(usage["budget_available"].as_i64().unwrap() < 0, "{usage}");
    // With `failure_mode: reject`, the same state refuses.
    assert_eq!(set_acme_pipeline(&sy, json!({"scorers": [{"policy": "prefix-affinity", "weight": 1.0}], "failure_mode": "reject"})).await, StatusCode::OK);
    let r = chat_as(&sy, "k-acme", "refused").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap().contains("budget is exhausted"));
    // globex, on the default budget, is untouched.
    assert_eq!(
        chat_as(&sy, "k-globex", "fine").await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_namespaces_quotas_and_the_audit_log_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let config = two_tenants(dir.path(), &[&a], "    policy_quota: {versions: 1}\n");
    let mut sy = Switchyard::start(dir.path(), &config).await;
    let (s, up) = call(
        &sy,
        ACME_TOKEN,
        Method::PUT,
        "/admin/policies/acme/affinity",
        Some(Body::Wasm(prefix_affinity_wasm())),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(
        set_acme_pipeline(&sy, scorer("acme/affinity")).await,
        StatusCode::OK
    );
    assert_eq!(acme_sets_globex(&sy).await, StatusCode::FORBIDDEN);
    let (_, before) = call(&sy, TOKEN, Method::GET, "/admin/audit", None).await;
    let (_, pipelines) = call(&sy, TOKEN, Method::GET, "/admin/tenants", None).await;
    sy.kill();

    let sy = Switchyard::start(dir.path(), &config).await;
    let (_, after) = call(&sy, TOKEN, Method::GET, "/admin/audit", None).await;
    assert_eq!(before, after, "the audit log is on disk");
    assert_eq!(
        call(&sy, TOKEN, Method::GET, "/admin/tenants", None)
            .await
            .1,
        pipelines
    );
    let (_, policies) = call(&sy, ACME_TOKEN, Method::GET, "/admin/policies", None).await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "acme/affinity" && p["version"] == up["version"])
    );
    // The quota still counts the stored version; the credential still stops at its tenant.
    let (s, v) = call(
        &sy,
        ACME_TOKEN,
        Method::PUT,
        "/admin/policies/acme/other",
        Some(Body::Wasm(shipped_wasm("least_load"))),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(acme_sets_globex(&sy).await, StatusCode::FORBIDDEN);
    let (_, newest) = call(&sy, TOKEN, Method::GET, "/admin/audit?limit=2", None).await;
    let last_before = before.as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    assert_eq!(
        newest[0]["seq"].as_u64(),
        Some(last_before + 1),
        "sequence numbers go on"
    );
    assert_eq!(
        chat_as(&sy, "k-acme", "after the restart").await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_isolation_salts_a_tenants_requests_so_others_never_hit_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    // A simulated vLLM engine, which scopes prefix caching by `cache_salt` as vLLM does.
    let port = free_port();
    let sim = ExternalBackend::start(
        "sim",
        port,
        &switchyard_binary(),
        &[
            "sim", "--port", "{port}", "--name", "sim", "--model", MODEL, "--speed", "50",
        ],
        "/health",
    )
    .await;
    let probe = TestBackend::start("probe").await;
    let mut fleet = Fleet::new(&[]);
    fleet
        .backends
        .push((sim.name.clone(), sim.url.clone(), "vllm"));
    fleet.extra = "tenants:\n  acme:\n    api_keys: [k-acme]\n    cache_isolation: true\n  globex:\n    api_keys: [k-globex]\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;

    let prompt = "The quarterly figures of the bank, confidential: ".repeat(40);
    let cached = |v: &Value| {
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    let ask = |key: &'static str| {
        let sy = &sy;
        let prompt = prompt.clone();
        async move {
            let r = chat_as(sy, key, &prompt).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(cached(&ask("k-acme").await), 0);
    let warm = cached(&ask("k-acme").await);
    assert!(warm > 256, "acme hits its own prefix: {warm}");
    assert_eq!(
        cached(&ask("k-globex").await),
        0,
        "globex never hits acme's prefix"
    );
    assert_eq!(cached(&ask("k-globex").await), warm, "globex hits its own");

    // The salt as the engine receives it: secret, per tenant, keeping the client's.
    let mut fleet = Fleet::new(&[&probe]);
    fleet.extra = "tenants:\n  acme:\n    api_keys: [k-acme]\n    cache_isolation: true\n".into();
    let dir2 = tempfile::tempdir().unwrap();
    let sy2 = Switchyard::start(dir2.path(), &fleet.yaml()).await;
    assert_eq!(chat_as(&sy2, "k-acme", "x").await.status(), StatusCode::OK);
    let salt = probe.last_body().unwrap()["cache_salt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        salt.len() == 32 && salt.bytes().all(|b| b.is_ascii_hexdigit()),
        "{salt}"
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", sy2.url))
        .bearer_auth("k-acme")
        .json(&json!({"model": MODEL, "max_tokens": 4, "cache_salt": "mine", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        probe.last_body().unwrap()["cache_salt"],
        format!("{salt}.mine")
    );
}
