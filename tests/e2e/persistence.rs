//! Persistence: admin changes survive SIGKILL exactly; a damaged state file is reported
//! (on `/ready`, and to the tenant it belongs to) until an admin call fixes it, or
//! skipped when the config says so; names never leave the state directory; one router
//! per state directory.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::prefix_affinity_wasm;
use crate::harness::{Fleet, MODEL, Switchyard, TestBackend, eventually};

/// The tenant the restart test routes for, by API key.
const ACME_KEY: &str = "k-acme";

/// A chat request for `acme` with a fixed request id (so the canary split is the same
/// in both runs) and its own prompt.
async fn acme_chat(sy: &Switchyard, i: usize) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sy.url))
        .bearer_auth(ACME_KEY)
        .header("x-request-id", format!("restart-{i}"))
        .json(&json!({
            "model": MODEL,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": format!("request {i} for the router")}]
        }))
        .send()
        .await
        .unwrap()
}

/// What a decision record says about the choice, without timings or live figures.
fn choice(d: &Value) -> Value {
    json!({
        "request_id": d["request_id"],
        "tenant": d["tenant"],
        "placement": d["placement"],
        "backend": d["backend"],
        "variant": d["variant"],
        "pipeline_version": d["pipeline_version"],
        "policies": d["policies"],
        "exclusions": d["exclusions"],
        "shadow_agreed": d["shadow_agreed"],
    })
}

/// Sends the same 12 requests and returns the decisions, oldest first.
async fn decide_all(sy: &Switchyard) -> Vec<Value> {
    for i in 0..12 {
        let r = acme_chat(sy, i).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        // NB: past a scrape interval (50 ms), so the next decision sees the backends
        // idle in both runs.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let log = sy.admin_get("/admin/decisions?limit=12").await;
    let mut out: Vec<Value> = log.as_array().unwrap().iter().map(choice).collect();
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_sigkill_restores_pipelines_and_decisions_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut fleet = Fleet::new(&[&a, &b]);
    fleet.extra = format!("state_dir: state\ntenants:\n  acme:\n    api_keys: [{ACME_KEY}]\n");
    let config = fleet.yaml();

    let mut sy = Switchyard::start(dir.path(), &config).await;
    let up = sy
        .admin_call(Method::PUT, "/admin/policies/affinity-copy")
        .body(prefix_affinity_wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK);
    let uploaded = format!(
        "affinity-copy@{}",
        up.json::<Value>().await.unwrap()["version"]
            .as_str()
            .unwrap()
    );
    // Bare names: pinned when set. A shipped filter, a shipped scorer, the upload.
    let active = json!({
        "filters": [{"policy": "data-residency", "config": {"default": "allow"}}],
        "scorers": [
            {"policy": "least-load", "weight": 0.5},
            {"policy": "affinity-copy", "weight": 0.5}
        ]
    });
    let set = sy
        .admin_json(Method::PUT, "/admin/tenants/acme/pipeline", &active)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set["active"]["scorers"][1]["policy"], uploaded.as_str());
    assert!(
        set["active"]["filters"][0]["policy"]
            .as_str()
            .unwrap()
            .starts_with("data-residency@"),
        "{set}"
    );
    let canary = json!({"pipeline": {"scorers": [{"policy": "kv-headroom"}]}, "share": 0.5});
    let r = sy
        .admin_json(Method::PUT, "/admin/tenants/acme/canary", &canary)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let shadow = json!({"scorers": [{"policy": "prefix-affinity"}]});
    let r = sy
        .admin_json(Method::PUT, "/admin/tenants/acme/shadow", &shadow)
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let tenants_before = sy.admin_get("/admin/tenants").await;
    let decisions_before = decide_all(&sy).await;
    let variants: Vec<&Value> = decisions_before.iter().map(|d| &d["variant"]).collect();
    assert!(
        variants.contains(&&json!("canary")) && variants.contains(&&json!("active")),
        "both pipelines decide: {variants:?}"
    );
    sy.kill();
    drop(sy);

    let sy = Switchyard::start(dir.path(), &config).await;
    let err = sy.stderr();
    assert!(!err.contains("damaged"), "{err}");
    assert_eq!(sy.admin_get("/admin/tenants").await, tenants_before);
    assert_eq!(decide_all(&sy).await, decisions_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_survive_sigkill_and_damage_is_refused_until_fixed() {
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
    let version = up.json::<Value>().await.unwrap()["version"]
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

    // Damage the stored backend and the stored pipeline.
    let truncate = |rel: &str| {
        let file = dir.path().join("state").join(rel);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    };
    truncate("backends/b.json");
    truncate("tenants/default.json");
    let sy = Switchyard::start_unready(dir.path(), &config).await;
    let ready = reqwest::get(format!("{}/ready", sy.url)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    let entries: Vec<&str> = body["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["entry"].as_str().unwrap())
        .collect();
    assert_eq!(
        entries,
        ["backends/b.json", "tenants/default.json"],
        "{body}"
    );
    // The tenant whose pipeline is damaged is refused, never served by another pipeline.
    let undrain = sy
        .admin_call(Method::POST, "/admin/backends/a/undrain")
        .send()
        .await
        .unwrap();
    assert_eq!(undrain.status(), StatusCode::OK);
    eventually(10, "a healthy", || async {
        sy.backend("a").await["healthy"] == true
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&crate::harness::chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["code"], "pipeline_unavailable", "{err}");
    assert_eq!(sy.admin_get("/admin/state/damaged").await, body["damaged"]);

    // Fixed by admin calls: the pipeline set again, the backend entry discarded.
    let set = sy
        .admin_json(Method::PUT, "/admin/tenants/default/pipeline", &spec)
        .await;
    assert_eq!(set.status(), StatusCode::OK);
    let discard = sy
        .admin_call(Method::DELETE, "/admin/state/damaged/backends/b.json")
        .send()
        .await
        .unwrap();
    assert_eq!(discard.status(), StatusCode::NO_CONTENT);
    let again = sy
        .admin_call(Method::DELETE, "/admin/state/damaged/backends/b.json")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let ready = reqwest::get(format!("{}/ready", sy.url)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        dir.path()
            .join("state/quarantine/backends/b.json")
            .is_file()
    );
    drop(sy);

    // With `on_damaged_entry: skip`, damage is logged and skipped, as before.
    truncate("tenants/default.json");
    let skip = format!("{config}state:\n  on_damaged_entry: skip\n");
    let sy = Switchyard::start_unready(dir.path(), &skip).await;
    let err = sy.stderr();
    assert!(
        err.contains("skipping damaged stored entry") && err.contains("tenants/default.json"),
        "{err}"
    );
    assert_eq!(sy.admin_get("/admin/tenants").await, json!([]));
    assert_eq!(sy.admin_get("/admin/state/damaged").await, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_router_on_the_same_state_dir_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = format!("state_dir: {}\n", dir.path().join("state").display());
    let config = fleet.yaml();
    let _first = Switchyard::start(dir.path(), &config).await;
    let second = tempfile::tempdir().unwrap();
    let err = Switchyard::start_failing(second.path(), &config);
    assert!(
        err.contains("another switchyard process")
            && err.contains(&dir.path().join("state").display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_would_leave_the_state_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "state_dir: deep/er/state\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let state = dir.path().join("deep/er/state");

    let spec = json!({"scorers": [{"policy": "least-load"}]});
    for path in [
        "/admin/tenants/..%2F..%2Fpwned/pipeline",
        "/admin/tenants/..%2Fpwned/canary",
        "/admin/tenants/.hidden/pipeline",
    ] {
        let r = sy.admin_json(Method::PUT, path, &spec).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid tenant name"),
            "{err}"
        );
    }
    for name in ["../../pwned", ".hidden", "a/b", "x..y"] {
        let r = sy
            .admin_json(
                Method::POST,
                "/admin/backends",
                &json!({"name": name, "url": a.url, "models": [MODEL]}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        let err: Value = r.json().await.unwrap();
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid backend name"),
            "{err}"
        );
    }
    let r = sy
        .admin_call(Method::POST, "/admin/backends/..%2F..%2Fa/drain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = sy
        .admin_call(Method::PUT, "/admin/policies/..%2Fx")
        .body(prefix_affinity_wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let mut written = Vec::new();
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                written.push(p);
            }
        }
    }
    assert!(
        written
            .iter()
            .all(|p| !p.to_string_lossy().contains("pwned")
                && (p.starts_with(&state) || p.ends_with("config.yaml"))),
        "{written:?}"
    );
}
