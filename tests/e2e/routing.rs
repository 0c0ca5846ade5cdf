//! Routing with no pipeline configured: the default `prefix-home` scorer over four
//! backends in approximate KV mode.

use std::collections::{BTreeSet, HashMap};

use crate::harness::{Fleet, MODEL, Switchyard, TestBackend, client, served_backend};

/// A chat prompt of prefix group `group`: a system text every prompt carries, the
/// group's own document, then a question.
fn prompt(group: usize, question: usize) -> serde_json::Value {
    let system =
        "You answer questions about the attached contract, briefly and exactly. ".repeat(4);
    let document = format!("Contract {group}: the parties, the fees and the notice periods of agreement number {group}. ").repeat(10);
    serde_json::json!({
        "model": MODEL,
        "max_tokens": 4,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("{document}\nQuestion {question}: what is the notice period?")},
        ],
    })
}

/// With nothing configured, each prefix group keeps one home backend, and the groups are
/// spread over the fleet rather than piled onto the backend that served first; the
/// shared system text (on every backend after a few requests) does not pull them
/// together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_pipeline_gives_each_prefix_group_one_home() {
    let dir = tempfile::tempdir().unwrap();
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
        TestBackend::start("d").await,
    ];
    let fleet = Fleet::new(&backends.iter().collect::<Vec<_>>());
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let http = client();
    let mut homes: HashMap<usize, BTreeSet<String>> = HashMap::new();
    for question in 0..4 {
        for group in 0..8 {
            let r = http
                .post(format!("{}/v1/chat/completions", sy.url))
                .json(&prompt(group, question))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            homes.entry(group).or_default().insert(served_backend(&r));
        }
    }
    for (group, served) in &homes {
        assert_eq!(served.len(), 1, "group {group} kept one home: {homes:?}");
    }
    let used: BTreeSet<&String> = homes.values().flatten().collect();
    assert!(
        used.len() >= 3,
        "eight groups spread over four backends: {homes:?}"
    );
    let decisions = sy.admin_get("/admin/decisions?limit=1").await;
    let policies = decisions[0]["policies"].to_string();
    assert!(policies.contains("prefix-home@"), "{decisions}");
}
