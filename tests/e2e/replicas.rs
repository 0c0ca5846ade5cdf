//! Replicas: three `switchyard serve` processes sharing admin state and routing signals
//! through a 3-node NATS JetStream cluster (`cluster:` in the config), in front of the
//! same test backends. Admin changes made on one replica decide requests on the others;
//! concurrent writes on two replicas conflict (409) instead of overwriting each other;
//! approximate KV records and in-flight load cross replicas; a replica killed under load
//! costs only its own requests and its load expires; NATS outages leave routing alone
//! and refuse admin writes (503) until NATS is back; a replica started from an empty
//! state directory serves the shared pipelines.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::prefix_affinity_wasm;
use crate::harness::{Fleet, MODEL, NatsCluster, Switchyard, TestBackend, eventually};

/// The tenant the tests route for, by API key.
const ACME_KEY: &str = "k-acme";

/// The config of replica `id` of the cluster over `nats`, state in `dir`.
fn replica_config(fleet: &Fleet, nats: &NatsCluster, id: &str) -> String {
    let mut f = fleet.clone();
    f.extra = format!(
        "state_dir: state\ncluster: {{nats: {}, name: e2e, replica: {id}}}\ntenants:\n  acme:\n    api_keys: [{ACME_KEY}]\n",
        nats.urls_yaml()
    );
    f.yaml()
}

/// Starts replica `id` in `root/<id>` (created empty when new).
async fn start_replica(
    root: &std::path::Path,
    fleet: &Fleet,
    nats: &NatsCluster,
    id: &str,
) -> Switchyard {
    let dir = root.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    Switchyard::start(&dir, &replica_config(fleet, nats, id)).await
}

/// A chat request for `acme` with request id `id` and `content`.
async fn acme_chat(sy: &Switchyard, id: &str, content: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sy.url))
        .bearer_auth(ACME_KEY)
        .header("x-request-id", id)
        .json(&json!({
            "model": MODEL,
            "max_tokens": 8,
            "stream": stream,
            "messages": [{"role": "user", "content": content}]
        }))
        .send()
        .await
        .unwrap()
}

/// Sends a request and returns its decision record on `sy`.
async fn decide(sy: &Switchyard, id: &str, content: &str) -> Value {
    let r = acme_chat(sy, id, content, false).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.bytes().await.unwrap();
    let log = sy.admin_get("/admin/decisions?limit=50").await;
    log.as_array()
        .unwrap()
        .iter()
        .find(|d| d["request_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no decision {id} in {log}"))
}

/// `acme`'s pipeline as `sy` serves it.
async fn acme_pipeline(sy: &Switchyard) -> Value {
    let tenants = sy.admin_get("/admin/tenants").await;
    tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Sets `acme`'s pipeline through `sy`; the response.
async fn set_pipeline(sy: &Switchyard, spec: &Value) -> reqwest::Response {
    sy.admin_json(Method::PUT, "/admin/tenants/acme/pipeline", spec)
        .await
}

/// `(backend, in-flight requests)` of a list of backends or decision candidates, by name.
fn in_flight_by_backend(list: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_string(),
                x["in_flight_requests"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The sum of in-flight requests over a decision's candidates.
fn candidates_in_flight(decision: &Value) -> u64 {
    decision["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["in_flight_requests"].as_u64().unwrap())
        .sum()
}

/// Sets `acme`'s pipeline through `sy`, retrying while the NATS cluster moves its
/// leaders; the answer that ended the wait.
async fn write_until_ok(sy: &Switchyard, spec: &Value, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = set_pipeline(sy, spec).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == StatusCode::OK {
            return body;
        }
        if Instant::now() >= deadline {
            sy.fail(&format!(
                "no write succeeded within {secs} s: {status} {body}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `sy` serves the `acme` pipeline of `written` (an admin write's answer):
/// its version and its content (after NATS lost a write, a new one reuses its version).
async fn converge(sy: &Switchyard, written: &Value, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let serving = acme_pipeline(sy).await;
        if serving["version"] == written["version"] && serving["active"] == written["active"] {
            return;
        }
        if Instant::now() >= deadline {
            sy.fail(&format!(
                "never converged on version {} within {secs} s: {serving}",
                written["version"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of an unlabelled gauge or counter on `sy`'s `/metrics`.
async fn metric(sy: &Switchyard, name: &str) -> f64 {
    let text = sy.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_admin_state_load_and_kv_records() {
    let root = tempfile::tempdir().unwrap();
    let nats = NatsCluster::start(root.path()).await;
    let a_be = TestBackend::start("a").await;
    let b_be = TestBackend::start("b").await;
    let fleet = Fleet::new(&[&a_be, &b_be]);
    let (mut a, b, c) = tokio::join!(
        start_replica(root.path(), &fleet, &nats, "a"),
        start_replica(root.path(), &fleet, &nats, "b"),
        start_replica(root.path(), &fleet, &nats, "c"),
    );

    // A policy uploaded and a pipeline set through A decide requests on B and C.
    let up = a
        .admin_call(Method::PUT, "/admin/policies/affinity-copy")
        .body(prefix_affinity_wasm())
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK, "{}", up.text().await.unwrap());
    let label = format!(
        "affinity-copy@{}",
        up.json::<Value>().await.unwrap()["version"]
            .as_str()
            .unwrap()
    );
    let set = set_pipeline(
        &a,
        &json!({"scorers": [{"policy": "affinity-copy", "weight": 1.0}, {"policy": "least-load", "weight": 0.2}]}),
    )
    .await;
    assert_eq!(
        set.status(),
        StatusCode::OK,
        "{}",
        set.text().await.unwrap()
    );
    let set_at = Instant::now();
    let version = set.json::<Value>().await.unwrap()["version"].clone();
    for (name, sy) in [("b", &b), ("c", &c)] {
        eventually(
            5,
            &format!("replica {name} serving A's pipeline"),
            || async { acme_pipeline(sy).await["version"] == version },
        )
        .await;
        eprintln!(
            "admin change visible on {name} after {:?}",
            set_at.elapsed()
        );
    }
    let propagation = set_at.elapsed();
    assert!(
        propagation < Duration::from_secs(3),
        "A's pipeline took {propagation:?} to reach B and C (goal: 1 s)"
    );
    for (name, sy) in [("b", &b), ("c", &c)] {
        let d = decide(sy, &format!("uploaded-{name}"), "hello from a replica").await;
        assert!(
            d["policies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == label.as_str()),
            "{name} did not decide with {label}: {d}"
        );
    }

    // Every replica's audit log shows the calls A took, stamped with A's id.
    for sy in [&a, &c] {
        let audit = sy.admin_get("/admin/audit?limit=1000").await;
        let by_a: Vec<_> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["replica"] == "a" && r["status"] == 200)
            .map(|r| (r["method"].as_str().unwrap(), r["target"].as_str().unwrap()))
            .collect();
        assert!(
            by_a.contains(&("PUT", "/admin/policies/affinity-copy"))
                && by_a.contains(&("PUT", "/admin/tenants/acme/pipeline")),
            "A's calls missing from the shared audit log: {audit}"
        );
        let first = &audit[0];
        let since = sy
            .admin_get(&format!(
                "/admin/audit?since={}&limit=1",
                first["time"].as_str().unwrap().replace('+', "%2B")
            ))
            .await;
        assert_eq!(
            since,
            json!([first]),
            "from the first record's time, one record"
        );
    }

    // Two concurrent pipeline writes on A and B: one wins, the other gets 409, and all
    // three replicas converge on the winner.
    let mut conflicts = 0;
    let mut winner = Value::Null;
    for round in 0..6 {
        let spec = |w: f64| json!({"scorers": [{"policy": "least-load", "weight": w}]});
        let (spec_a, spec_b) = (
            spec(0.1 + f64::from(round) * 0.1),
            spec(0.15 + f64::from(round) * 0.1),
        );
        let (ra, rb) = tokio::join!(set_pipeline(&a, &spec_a), set_pipeline(&b, &spec_b));
        let (sa, sb) = (ra.status(), rb.status());
        let (ba, bb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
        match (sa, sb) {
            (StatusCode::OK, StatusCode::CONFLICT) | (StatusCode::CONFLICT, StatusCode::OK) => {
                let (won, lost) = if sa == StatusCode::OK {
                    (ba, bb)
                } else {
                    (bb, ba)
                };
                let message = lost["error"]["message"].as_str().unwrap();
                assert!(message.contains("changed by another replica"), "{lost}");
                conflicts += 1;
                winner = won;
                break;
            }
            // One after the other: both built on the latest, neither overwrote the other.
            (StatusCode::OK, StatusCode::OK) => {
                if ba["version"] == bb["version"] {
                    eprintln!("A:\n{}\nB:\n{}", a.stderr(), b.stderr());
                    panic!("both writes installed version {}: {ba} {bb}", ba["version"]);
                }
                winner = if ba["version"].as_u64() > bb["version"].as_u64() {
                    ba
                } else {
                    bb
                };
            }
            other => panic!("concurrent writes answered {other:?}: {ba} {bb}"),
        }
    }
    assert_eq!(conflicts, 1, "no round of concurrent writes conflicted");
    for (name, sy) in [("a", &a), ("b", &b), ("c", &c)] {
        eventually(
            5,
            &format!("replica {name} converging on the winner"),
            || async {
                let p = acme_pipeline(sy).await;
                p["version"] == winner["version"] && p["active"] == winner["active"]
            },
        )
        .await;
    }

    // A prefix first served through A is routed to the same backend through B.
    // NB: A serves the winner as soon as it wrote it, and may still be applying the
    // loser's write and its restoration; a write until then is a fair 409.
    let set = write_until_ok(
        &a,
        &json!({"scorers": [{"policy": "prefix-affinity", "weight": 1.0}]}),
        5,
    )
    .await;
    let version = set["version"].clone();
    for sy in [&b, &c] {
        eventually(5, "the affinity pipeline everywhere", || async {
            acme_pipeline(sy).await["version"] == version
        })
        .await;
    }
    for i in 0..4 {
        let prompt = format!(
            "{i} shared system prompt {}",
            "with many words to key ".repeat(40)
        );
        let first = decide(&a, &format!("prefix-a-{i}"), &prompt).await;
        let served = first["backend"].as_str().unwrap().to_string();
        let sent = Instant::now();
        eventually(5, "A's KV record on B", || async {
            let report = b
                .admin_json(
                    Method::POST,
                    "/admin/kv/lookup",
                    &json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}]}),
                )
                .await
                .json::<Value>()
                .await
                .unwrap();
            report["backends"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == served.as_str() && x["cached_tokens"].as_u64() > Some(0))
        })
        .await;
        eprintln!("KV record of prefix {i} on B after {:?}", sent.elapsed());
        let second = decide(&b, &format!("prefix-b-{i}"), &prompt).await;
        assert_eq!(
            second["backend"],
            served.as_str(),
            "B routed elsewhere: {second}"
        );
        let cached = second["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == served.as_str())
            .unwrap()["cached_prefix_tokens"]
            .as_u64()
            .unwrap();
        assert!(cached > 0, "B's policies saw no cached prefix: {second}");
    }

    // A backend loaded through A looks loaded to B's policies.
    a_be.set_chunk_delay(Duration::from_millis(2000));
    b_be.set_chunk_delay(Duration::from_millis(2000));
    let slow: Vec<_> = (0..6)
        .map(|i| {
            let url = a.url.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(ACME_KEY)
                    .json(&json!({"model": MODEL, "max_tokens": 8, "stream": true,
                        "messages": [{"role": "user", "content": format!("slow {i}")}]}))
                    .send()
                    .await?;
                // NB: read to the end: dropping the stream would cancel it.
                r.error_for_status()?.bytes().await.map(|_| ())
            })
        })
        .collect();
    eventually(5, "A's six requests in flight", || async {
        let backends = a.admin_get("/admin/backends").await;
        backends
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["in_flight_requests"].as_u64().unwrap())
            .sum::<u64>()
            == 6
    })
    .await;
    a_be.set_chunk_delay(Duration::ZERO);
    b_be.set_chunk_delay(Duration::ZERO);
    // NB: compared with what A has in flight at the time, not with six: on a loaded
    // machine a stream may end early, and B must then show that too.
    let mut n = 0;
    eventually(3, "B's policies seeing A's load", || {
        n += 1;
        let id = format!("load-b-{n}");
        let (a, b) = (&a, &b);
        async move {
            let seen =
                in_flight_by_backend(&decide(b, &id, "what is the load").await["candidates"]);
            let own = in_flight_by_backend(&a.admin_get("/admin/backends").await);
            own.iter().map(|(_, n)| n).sum::<u64>() > 0 && seen == own
        }
    })
    .await;

    // SIGKILL A during load: requests through B and C do not fail; A's load expires.
    let load: Vec<_> = [b.url.clone(), c.url.clone()]
        .into_iter()
        .map(|url| {
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut failures = Vec::new();
                for i in 0..40 {
                    let r = client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(ACME_KEY)
                        .json(&json!({"model": MODEL, "max_tokens": 4,
                            "messages": [{"role": "user", "content": format!("during the kill {i}")}]}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            r.bytes().await.unwrap();
                        }
                        Ok(r) => failures.push(format!("{i}: {}", r.status())),
                        Err(e) => failures.push(format!("{i}: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.kill();
    let killed = Instant::now();
    // NB: B's and C's own requests are short, at most one each in flight at a time; A's
    // six slow ones count until its reports expire.
    let mut n = 0;
    eventually(5, "A's load expiring on B", || {
        n += 1;
        let id = format!("expired-b-{n}");
        let b = &b;
        async move { candidates_in_flight(&decide(b, &id, "is A gone").await) <= 2 }
    })
    .await;
    let expired = killed.elapsed();
    eprintln!("A's load gone from B's view {expired:?} after the kill");
    assert!(expired < Duration::from_secs(2), "{expired:?} (goal: 1 s)");
    for l in load {
        let failures = l.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed through B/C: {failures:?}"
        );
    }
    for s in slow {
        // NB: A's own requests may fail: it was killed under them.
        let _ = s.await.unwrap();
    }

    // A replica started from an empty state directory serves the shared pipelines.
    let d = start_replica(root.path(), &fleet, &nats, "d").await;
    assert_eq!(acme_pipeline(&d).await["version"], version);
    let decision = decide(&d, "fresh-d", "hello from the new replica").await;
    assert!(
        decision["policies"][0]
            .as_str()
            .unwrap()
            .starts_with("prefix-affinity@"),
        "{decision}"
    );
    assert_eq!(metric(&d, "switchyard_cluster_link_up").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_ride_out_nats_failures() {
    let root = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start(root.path()).await;
    let be = TestBackend::start("a").await;
    let fleet = Fleet::new(&[&be]);
    let (a, b) = tokio::join!(
        start_replica(root.path(), &fleet, &nats, "a"),
        start_replica(root.path(), &fleet, &nats, "b"),
    );
    let spec = |w: f64| json!({"scorers": [{"policy": "least-load", "weight": w}]});
    let first = write_until_ok(&a, &spec(0.1), 10).await;
    converge(&b, &first, 30).await;

    // One NATS node down: admin writes still succeed and still reach the other replica.
    nats.stop(0);
    let second = write_until_ok(&a, &spec(0.2), 15).await;
    converge(&b, &second, 30).await;

    // All down: routing goes on, /ready stays ready, admin writes get 503 saying why.
    nats.stop(1);
    nats.stop(2);
    for sy in [&a, &b] {
        eventually(10, "the link gauge dropping", || async {
            metric(sy, "switchyard_cluster_link_up").await == 0.0
        })
        .await;
        let r = acme_chat(sy, "during-outage", "still routing?", false).await;
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        let ready = reqwest::get(format!("{}/ready", sy.url)).await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
    }
    let refused = set_pipeline(&a, &spec(0.3)).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{body}"
    );

    // NATS back: both replicas resync, and a write succeeds and reaches the other.
    // NB: no wait for every node's health: a quorum is enough for the write, and a node
    // catching up on a loaded machine can take longer than the write's patience.
    for i in 0..3 {
        nats.restart(i);
    }
    let third = write_until_ok(&b, &spec(0.4), 60).await;
    converge(&a, &third, 30).await;
    assert_eq!(metric(&a, "switchyard_cluster_link_up").await, 1.0);

    // NATS restored from a backup taken before the last write: the replicas are ahead of
    // the store. A write through B, after a fair 409, lands on the store's revision, and
    // A, which never wrote, converges on it too, though the new write reuses a revision
    // A had seen before.
    let stop_all = |nats: &mut NatsCluster| (0..3).for_each(|i| nats.stop(i));
    stop_all(&mut nats);
    nats.back_up();
    (0..3).for_each(|i| nats.restart(i));
    let fourth = write_until_ok(&a, &spec(0.5), 60).await;
    converge(&b, &fourth, 30).await;
    stop_all(&mut nats);
    nats.restore_backup();
    (0..3).for_each(|i| nats.restart(i));
    let fifth = write_until_ok(&b, &spec(0.6), 60).await;
    converge(&a, &fifth, 30).await;
    let a_serves = acme_pipeline(&a).await;
    assert_eq!(
        a_serves["active"]["scorers"][0]["weight"], 0.6,
        "A serves B's last write: {a_serves}"
    );
}
