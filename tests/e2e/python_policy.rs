//! A routing policy written in Python, end to end: the example scorer built with
//! componentize-py (`examples/python-least-waiting`, ~18 MB with CPython), uploaded over
//! the admin API to a router running its default limits, set as the tenant's scorer,
//! and deciding real requests.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Fleet, Switchyard, TestBackend, chat, client, served_backend};

#[path = "../../host/tests/support/python.rs"]
mod build;

/// The example's component, built once per content (cached in `target/python-policies`).
async fn least_waiting() -> Vec<u8> {
    let wasm = tokio::task::spawn_blocking(|| {
        build::build(
            &build::repo().join("examples/python-least-waiting"),
            "scorer",
        )
    })
    .await
    .expect("build");
    std::fs::read(wasm).expect("read the component")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_scorer_uploaded_over_the_admin_api_decides_requests() {
    let bytes = least_waiting().await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a, &b]).yaml()).await;

    let up = sy
        .admin_call(Method::PUT, "/admin/policies/least-waiting")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = up.status();
    let v: Value = up.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["size_bytes"].as_u64(), Some(bytes.len() as u64));
    let label = format!("least-waiting@{}", v["version"].as_str().unwrap());

    let spec = json!({"scorers": [{"policy": label, "weight": 1.0}], "failure_mode": "reject"});
    let set = sy
        .admin_json(Method::PUT, "/admin/tenants/default/pipeline", &spec)
        .await;
    assert_eq!(set.status(), StatusCode::OK);

    let mut served = Vec::new();
    for i in 0..6 {
        let r = client()
            .post(format!("{}/v1/chat/completions", sy.url))
            .json(&chat(i % 2 == 0))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        served.push(served_backend(&r));
        r.bytes().await.unwrap();
    }

    // Every decision was the Python scorer's: no fault (the tenant's failure mode is
    // `reject`, so a failing policy would have refused the requests), a score for each
    // candidate (nothing waits on the test backends: 1 each), the backend it served.
    let decisions = sy.admin_get("/admin/decisions?limit=6").await;
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 6);
    for d in decisions {
        assert_eq!(d["policies"], json!([label]), "{d}");
        assert!(d["fault"].is_null(), "{d}");
        let scores: Vec<f64> = d["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["score"].as_f64().unwrap())
            .collect();
        assert_eq!(scores, vec![1.0, 1.0], "{d}");
        assert!(served.contains(&d["backend"].as_str().unwrap().to_string()));
    }
    let metrics = sy.metrics().await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("switchyard_policy_failures_total")
                && l.contains("least-waiting")),
        "{metrics}"
    );
}
