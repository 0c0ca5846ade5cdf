//! Persistence: admin changes survive SIGKILL; a damaged state file is reported and
//! skipped, never fatal.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::admin::prefix_affinity_wasm;
use crate::harness::{Fleet, MODEL, Switchyard, TestBackend, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_survive_sigkill_and_damage_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "state_dir: state\n".into();
    let config = fleet.yaml();

    let mut sy = Switchyard::start(dir.path(), &config).await;
    let up = sy
        .admin_call(Method::PUT, "/admin/policies/affinity-copy")
        .body(prefix_affinity_wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    let version = up.json::<serde_json::Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let pinned = format!("affinity-copy@{version}");
    let spec = json!({"scorers": [{"policy": pinned, "weight": 0.6}]});
    let set = sy
        .admin_json(Method::PUT, "/admin/tenants/default/pipeline", &spec)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let add = sy
        .admin_json(
            Method::POST,
            "/admin/backends",
            &json!({"name": "b", "url": b.url, "models": [MODEL], "engine": "vllm"}),
        )
        .await;
    assert_eq!(add.status(), StatusCode::CREATED);
    let drain = sy
        .admin_call(Method::POST, "/admin/backends/a/drain")
        .send()
        .await
        .unwrap();
    assert_eq!(drain.status(), StatusCode::OK);
    sy.kill();
    drop(sy);

    let sy = Switchyard::start(dir.path(), &config).await;
    let tenants = sy.admin_get("/admin/tenants").await;
    assert_eq!(tenants[0]["tenant"], "default");
    assert_eq!(
        tenants[0]["active"]["scorers"][0]["policy"],
        pinned.as_str(),
        "{tenants}"
    );
    let policies = sy.admin_get("/admin/policies").await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "affinity-copy" && p["version"] == version.as_str())
    );
    assert_eq!(sy.backend("a").await["draining"], true);
    eventually(10, "b restored and healthy", || async {
        sy.backend("b").await["healthy"] == true
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&crate::harness::chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-backend"], "b");
    drop(sy);

    // Damage the stored backend: reported, skipped, and the router still starts.
    let file = dir.path().join("state/backends/b.json");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let sy = Switchyard::start_unready(dir.path(), &config).await;
    let backends = sy.admin_get("/admin/backends").await;
    assert_eq!(backends.as_array().unwrap().len(), 1, "{backends}");
    let err = sy.stderr();
    assert!(
        err.contains("stored backend skipped") && err.contains("b.json"),
        "{err}"
    );
    let tenants = sy.admin_get("/admin/tenants").await;
    assert_eq!(
        tenants[0]["active"]["scorers"][0]["policy"],
        pinned.as_str()
    );
}
