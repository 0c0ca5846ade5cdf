//! The admin API against its own OpenAPI document, which the router generates from its
//! handlers: every documented operation is called once as it should be and once as it
//! should not be, and each answers a status the document lists for it (2xx, then 4xx).
//! A route added without its documentation, or answering an undocumented status, fails.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::{prefix_affinity_wasm, shipped_wasm};
use crate::harness::{Fleet, MODEL, Switchyard, TOKEN, TestBackend, client};

const ACME_TOKEN: &str = "acme-ci-token-0123456789";

/// What a call sends.
enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

/// One call: the documented path and method it exercises, what it sends, with which
/// token.
struct Call {
    method: Method,
    documented: &'static str,
    path: String,
    body: Body,
    token: &'static str,
}

fn call(method: Method, documented: &'static str, path: impl Into<String>, body: Body) -> Call {
    Call {
        method,
        documented,
        path: path.into(),
        body,
        token: TOKEN,
    }
}

impl Call {
    fn by_tenant(mut self) -> Call {
        self.token = ACME_TOKEN;
        self
    }
}

/// Sends `c`; its status and body, after checking the document lists the status.
async fn send(sy: &Switchyard, doc: &Value, c: Call) -> (StatusCode, Value) {
    let mut req = client()
        .request(c.method.clone(), format!("{}{}", sy.admin, c.path))
        .bearer_auth(c.token);
    req = match c.body {
        Body::None => req,
        Body::Json(v) => req.json(&v),
        Body::Wasm(b) => req.body(b),
    };
    let r = req.send().await.unwrap();
    let status = r.status();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null);
    let op = &doc["paths"][c.documented][c.method.as_str().to_lowercase()];
    assert!(
        op.is_object(),
        "{} {} is not documented",
        c.method,
        c.documented
    );
    assert!(
        op["responses"][status.as_str()].is_object(),
        "{} {} answered {status}, which its documentation does not list: {body}",
        c.method,
        c.path
    );
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_its_documented_statuses() {
    let dir = tempfile::tempdir().unwrap();
    // A damaged stored pipeline, for the discard route to have something to discard.
    std::fs::create_dir_all(dir.path().join("state/tenants")).unwrap();
    std::fs::write(dir.path().join("state/tenants/zeta.json"), b"{not json").unwrap();
    std::fs::write(dir.path().join("acme.token"), ACME_TOKEN).unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.admin = "  credentials:\n    \
        - {name: acme-ci, token_file: acme.token, role: tenant, tenant: acme}\n"
        .into();
    fleet.extra =
        "state_dir: state\ntenants:\n  acme:\n    api_keys: [k-acme]\n  globex: {}\n".into();
    let sy = Switchyard::start_unready(dir.path(), &fleet.yaml()).await;
    let doc = sy.admin_get("/admin/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let mut seen: BTreeSet<(String, &'static str)> = BTreeSet::new();
    // (good, bad): the good call must answer 2xx, the bad one 4xx.
    let mut pair = |good: Call, bad: Call| {
        assert_eq!(
            (good.documented, &good.method),
            (bad.documented, &bad.method)
        );
        seen.insert((good.method.to_string(), good.documented));
        (good, bad)
    };
    let mut calls = Vec::new();
    let j = |v: Value| Body::Json(v);
    let spec = |name: &str| json!({"name": name, "url": a.url, "models": [MODEL]});
    let g = Method::GET;
    let (put, post, del) = (Method::PUT, Method::POST, Method::DELETE);
    calls.push(pair(
        call(
            g.clone(),
            "/admin/openapi.json",
            "/admin/openapi.json",
            Body::None,
        ),
        Call {
            token: "not-a-token-at-all",
            ..call(
                g.clone(),
                "/admin/openapi.json",
                "/admin/openapi.json",
                Body::None,
            )
        },
    ));
    calls.push(pair(
        call(g.clone(), "/admin/backends", "/admin/backends", Body::None),
        Call {
            token: "",
            ..call(g.clone(), "/admin/backends", "/admin/backends", Body::None)
        },
    ));
    calls.push(pair(
        call(
            post.clone(),
            "/admin/backends",
            "/admin/backends",
            j(spec("b")),
        ),
        call(
            post.clone(),
            "/admin/backends",
            "/admin/backends",
            j(spec("b")),
        ),
    ));
    calls.push(pair(
        call(
            g.clone(),
            "/admin/backends/{name}",
            "/admin/backends/b",
            Body::None,
        ),
        call(
            g.clone(),
            "/admin/backends/{name}",
            "/admin/backends/nope",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            post.clone(),
            "/admin/backends/{name}/drain",
            "/admin/backends/b/drain",
            Body::None,
        ),
        call(
            post.clone(),
            "/admin/backends/{name}/drain",
            "/admin/backends/nope/drain",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            post.clone(),
            "/admin/backends/{name}/undrain",
            "/admin/backends/b/undrain",
            Body::None,
        ),
        call(
            post.clone(),
            "/admin/backends/{name}/undrain",
            "/admin/backends/.bad/undrain",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            post.clone(),
            "/admin/backends/{name}/drain",
            "/admin/backends/b/drain",
            Body::None,
        ),
        call(
            post.clone(),
            "/admin/backends/{name}/drain",
            "/admin/backends/b/drain?deadline_ms=soon",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            del.clone(),
            "/admin/backends/{name}",
            "/admin/backends/b",
            Body::None,
        ),
        call(
            del.clone(),
            "/admin/backends/{name}",
            "/admin/backends/a",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(g.clone(), "/admin/kv", "/admin/kv", Body::None),
        call(g.clone(), "/admin/kv", "/admin/kv", Body::None).by_tenant(),
    ));
    calls.push(pair(
        call(
            post.clone(),
            "/admin/kv/lookup",
            "/admin/kv/lookup",
            j(json!({"model": MODEL, "prompt": "hello"})),
        ),
        call(
            post.clone(),
            "/admin/kv/lookup",
            "/admin/kv/lookup",
            j(json!({"model": "nope", "prompt": "hello"})),
        ),
    ));
    calls.push(pair(
        call(g.clone(), "/admin/policies", "/admin/policies", Body::None),
        Call {
            token: "",
            ..call(g.clone(), "/admin/policies", "/admin/policies", Body::None)
        },
    ));
    calls.push(pair(
        call(
            put.clone(),
            "/admin/policies/{name}",
            "/admin/policies/pa",
            Body::Wasm(prefix_affinity_wasm()),
        ),
        call(
            put.clone(),
            "/admin/policies/{name}",
            "/admin/policies/junk",
            Body::Wasm(b"not wasm".to_vec()),
        ),
    ));
    calls.push(pair(
        call(
            put.clone(),
            "/admin/policies/{namespace}/{name}",
            "/admin/policies/acme/pa",
            Body::Wasm(prefix_affinity_wasm()),
        )
        .by_tenant(),
        call(
            put.clone(),
            "/admin/policies/{namespace}/{name}",
            "/admin/policies/globex/pa",
            Body::Wasm(prefix_affinity_wasm()),
        )
        .by_tenant(),
    ));
    calls.push(pair(
        call(
            put.clone(),
            "/admin/policies/{namespace}/{name}",
            "/admin/policies/acme/spare",
            Body::Wasm(shipped_wasm("least_load")),
        )
        .by_tenant(),
        call(
            put.clone(),
            "/admin/policies/{namespace}/{name}",
            "/admin/policies/acme/junk",
            Body::Wasm(b"not wasm".to_vec()),
        )
        .by_tenant(),
    ));
    calls.push(pair(
        call(g.clone(), "/admin/tenants", "/admin/tenants", Body::None),
        Call {
            token: "",
            ..call(g.clone(), "/admin/tenants", "/admin/tenants", Body::None)
        },
    ));
    let scorer = |p: &str| json!({"scorers": [{"policy": p, "weight": 1.0}]});
    for (m, route, body, bad_body) in [
        (
            put.clone(),
            "pipeline",
            Some(scorer("acme/pa")),
            Some(scorer("nope")),
        ),
        (
            put.clone(),
            "canary",
            Some(json!({"pipeline": scorer("acme/pa"), "share": 0.5})),
            Some(json!({"pipeline": scorer("acme/pa"), "share": 2.0})),
        ),
        (del.clone(), "canary", None, None),
        (
            put.clone(),
            "shadow",
            Some(scorer("acme/pa")),
            Some(scorer("globex/x")),
        ),
        (del.clone(), "shadow", None, None),
        (
            put.clone(),
            "pipeline",
            Some(json!({})),
            Some(json!({"scorers": "no"})),
        ),
        (post.clone(), "rollback", None, None),
    ] {
        let documented: &'static str =
            Box::leak(format!("/admin/tenants/{{tenant}}/{route}").into_boxed_str());
        let body_of = |b: Option<Value>| b.map_or(Body::None, Body::Json);
        let good = call(
            m.clone(),
            documented,
            format!("/admin/tenants/acme/{route}"),
            body_of(body),
        )
        .by_tenant();
        // Without a bad body, the bad call is on another tenant's pipeline.
        let bad = match bad_body {
            Some(b) => call(
                m.clone(),
                documented,
                format!("/admin/tenants/acme/{route}"),
                Body::Json(b),
            )
            .by_tenant(),
            None => call(
                m.clone(),
                documented,
                format!("/admin/tenants/globex/{route}"),
                Body::None,
            )
            .by_tenant(),
        };
        calls.push(pair(good, bad));
    }
    calls.push(pair(
        call(
            g.clone(),
            "/admin/tenants/{tenant}/quota",
            "/admin/tenants/acme/quota",
            Body::None,
        )
        .by_tenant(),
        call(
            g.clone(),
            "/admin/tenants/{tenant}/quota",
            "/admin/tenants/globex/quota",
            Body::None,
        )
        .by_tenant(),
    ));
    calls.push(pair(
        call(
            g.clone(),
            "/admin/decisions",
            "/admin/decisions?limit=5",
            Body::None,
        ),
        call(
            g.clone(),
            "/admin/decisions",
            "/admin/decisions?limit=many",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            g.clone(),
            "/admin/audit",
            "/admin/audit?since=2026-01-01T00:00:00Z",
            Body::None,
        ),
        call(
            g.clone(),
            "/admin/audit",
            "/admin/audit?since=yesterday",
            Body::None,
        ),
    ));
    calls.push(pair(
        call(
            g.clone(),
            "/admin/state/damaged",
            "/admin/state/damaged",
            Body::None,
        ),
        call(
            g.clone(),
            "/admin/state/damaged",
            "/admin/state/damaged",
            Body::None,
        )
        .by_tenant(),
    ));
    calls.push(pair(
        call(
            del.clone(),
            "/admin/state/damaged/{entry}",
            "/admin/state/damaged/tenants/zeta.json",
            Body::None,
        ),
        call(
            del.clone(),
            "/admin/state/damaged/{entry}",
            "/admin/state/damaged/tenants/zeta.json",
            Body::None,
        ),
    ));
    for (good, bad) in calls {
        let what = format!("{} {}", good.method, good.path);
        let (status, body) = send(&sy, &doc, good).await;
        assert!(status.is_success(), "{what}: {status} {body}");
        let what = format!("{} {}", bad.method, bad.path);
        let (status, body) = send(&sy, &doc, bad).await;
        assert!(status.is_client_error(), "{what}: {status} {body}");
    }

    // Deleting versions, now that pipelines use some: acme/pa is the active pipeline's
    // rollback target, acme/spare nobody's; the global `pa` nobody's, a shipped one is
    // not deletable.
    let policies = sy.admin_get("/admin/policies").await;
    let version = |name: &str| {
        let v = policies
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        format!("{name}@{}", v["version"].as_str().unwrap())
    };
    for (good, bad) in [
        (
            call(
                del.clone(),
                "/admin/policies/{namespace}/{name}",
                format!("/admin/policies/{}", version("acme/spare")),
                Body::None,
            )
            .by_tenant(),
            call(
                del.clone(),
                "/admin/policies/{namespace}/{name}",
                format!("/admin/policies/{}", version("acme/pa")),
                Body::None,
            )
            .by_tenant(),
        ),
        (
            call(
                del.clone(),
                "/admin/policies/{name}",
                format!("/admin/policies/{}", version("pa")),
                Body::None,
            ),
            call(
                del.clone(),
                "/admin/policies/{name}",
                format!("/admin/policies/{}", version("least-load")),
                Body::None,
            ),
        ),
    ] {
        seen.insert((good.method.to_string(), good.documented));
        let (status, body) = send(&sy, &doc, good).await;
        assert!(status.is_success(), "{status} {body}");
        let (status, body) = send(&sy, &doc, bad).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }

    let documented: BTreeSet<(String, &str)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.as_str()))
        })
        .collect();
    let exercised: BTreeSet<(String, &str)> = seen.iter().map(|(m, p)| (m.clone(), *p)).collect();
    assert_eq!(
        documented, exercised,
        "every documented operation is exercised"
    );
}
