//! The admin API: auth, backends, policy upload, pipelines, decisions, OpenAPI.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Fleet, Switchyard, TOKEN, TestBackend, chat, client, eventually};

/// The shipped `prefix-affinity` component, as built for the host by `host/build.rs`.
pub fn prefix_affinity_wasm() -> Vec<u8> {
    shipped_wasm("prefix_affinity")
}

/// A shipped policy's component (`crate` named with underscores), as built for the host
/// by `host/build.rs`.
pub fn shipped_wasm(krate: &str) -> Vec<u8> {
    crate::harness::switchyard_binary();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/guest-build/wasm32-wasip2/guest/{krate}.wasm"
    ));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a]).yaml()).await;
    let c = client();
    for path in [
        "/admin/backends",
        "/admin/policies",
        "/admin/decisions",
        "/admin/openapi.json",
    ] {
        let none = c.get(format!("{}{path}", sy.admin)).send().await.unwrap();
        assert_eq!(
            none.status(),
            StatusCode::UNAUTHORIZED,
            "{path} without token"
        );
        let body: Value = none.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
        let wrong = c
            .get(format!("{}{path}", sy.admin))
            .bearer_auth(format!("{TOKEN}x"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a wrong token"
        );
        let right = sy.admin_call(Method::GET, path).send().await.unwrap();
        assert_eq!(right.status(), StatusCode::OK, "{path} with the token");
    }
    let doc = sy.admin_get("/admin/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(
        doc["paths"]["/admin/policies/{name}"]["put"].is_object(),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_set_pipeline_and_read_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a, &b]).yaml()).await;

    let bad = sy
        .admin_call(Method::PUT, "/admin/policies/junk")
        .body(b"not wasm".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component"),
        "{body}"
    );

    let up = sy
        .admin_call(Method::PUT, "/admin/policies/affinity-copy")
        .body(prefix_affinity_wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    let v: Value = up.json().await.unwrap();
    assert_eq!(v["name"], "affinity-copy");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(v["compile_ms"].as_f64().unwrap() > 0.0);
    let listed = sy.admin_get("/admin/policies").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["version"] == v["version"])
    );

    let builtin = sy
        .admin_json(Method::PUT, "/admin/tenants/default/pipeline", &json!({}))
        .await;
    assert_eq!(builtin.status(), StatusCode::OK);
    let spec = json!({"scorers": [{"policy": format!("affinity-copy@{}", v["version"].as_str().unwrap()), "weight": 0.6}]});
    let set = sy
        .admin_json(Method::PUT, "/admin/tenants/default/pipeline", &spec)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let unknown = sy
        .admin_json(
            Method::PUT,
            "/admin/tenants/default/pipeline",
            &json!({"scorers": [{"policy": "nope"}]}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad_query = sy
        .admin_call(Method::GET, "/admin/decisions?limit=many")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_query.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad_query.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("limit"),
        "{body}"
    );
    let decisions = sy.admin_get("/admin/decisions?limit=1").await;
    let d = &decisions[0];
    assert_eq!(
        d["request_id"],
        r.headers()["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        d["policies"][0].as_str().unwrap(),
        format!("affinity-copy@{}", v["version"].as_str().unwrap())
    );
    assert_eq!(d["candidates"].as_array().unwrap().len(), 2);
    assert!(d["candidates"][0]["score"].is_number(), "{d}");
    assert_eq!(
        d["backend"],
        r.headers()["x-switchyard-backend"].to_str().unwrap()
    );

    let canary = json!({"pipeline": {}, "share": 0.25});
    let r = sy
        .admin_json(Method::PUT, "/admin/tenants/default/canary", &canary)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = sy
        .admin_json(Method::PUT, "/admin/tenants/default/shadow", &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let info = &sy.admin_get("/admin/tenants").await[0];
    assert_eq!(info["canary"]["share"], 0.25);
    assert!(info["shadow"].is_object(), "{info}");
    let bad_share = json!({"pipeline": {}, "share": 1.5});
    let r = sy
        .admin_json(Method::PUT, "/admin/tenants/default/canary", &bad_share)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    for route in ["canary", "shadow"] {
        let r = sy
            .admin_call(Method::DELETE, &format!("/admin/tenants/default/{route}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let info = &sy.admin_get("/admin/tenants").await[0];
    assert!(
        info["canary"].is_null() && info["shadow"].is_null(),
        "{info}"
    );

    let back = sy
        .admin_call(Method::POST, "/admin/tenants/default/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::OK);
    let tenants = sy.admin_get("/admin/tenants").await;
    assert_eq!(
        tenants[0]["active"]["scorers"].as_array().map(Vec::len),
        Some(0),
        "{tenants}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_drain_and_remove_backends() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a]).yaml()).await;

    let remove_live = sy
        .admin_call(Method::DELETE, "/admin/backends/a")
        .send()
        .await
        .unwrap();
    assert_eq!(
        remove_live.status(),
        StatusCode::CONFLICT,
        "must drain first"
    );

    let add = sy
        .admin_json(Method::POST, "/admin/backends", &json!({"name": "b", "url": b.url, "models": [crate::harness::MODEL], "engine": "vllm", "vendor": "amd"}))
        .await;
    assert_eq!(add.status(), StatusCode::CREATED);
    let dup = sy
        .admin_json(
            Method::POST,
            "/admin/backends",
            &json!({"name": "b", "url": b.url, "models": ["m"]}),
        )
        .await;
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let bad = sy
        .admin_json(
            Method::POST,
            "/admin/backends",
            &json!({"name": "c", "url": "ftp://x", "models": []}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    eventually(10, "b healthy", || async {
        sy.backend("b").await["healthy"] == true
    })
    .await;

    let drained = sy
        .admin_call(Method::POST, "/admin/backends/a/drain")
        .send()
        .await
        .unwrap();
    let d: Value = drained.json().await.unwrap();
    assert_eq!(d["draining"], true);
    let before = a.requests();
    for _ in 0..5 {
        let r = client()
            .post(format!("{}/v1/chat/completions", sy.url))
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-switchyard-backend"], "b");
    }
    assert_eq!(a.requests(), before, "a drained backend gets nothing");
    let gone = sy
        .admin_call(Method::DELETE, "/admin/backends/a")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let names: Vec<Value> = sy
        .admin_get("/admin/backends")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("b")]);
}
