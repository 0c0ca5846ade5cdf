//! Hot swap and drain under load: a steady request rate while the tenant's pipeline
//! changes every 100 ms and one backend is drained. Scaled for CI: 300 requests/s for
//! 5 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Fleet, Switchyard, TestBackend, chat, client, eventually};

const RATE_PER_S: u64 = 300;
const SECONDS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_and_drain_under_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    for b in &backends {
        b.set_chunk_delay(Duration::from_millis(10));
    }
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let sy = Arc::new(Switchyard::start(dir.path(), &Fleet::new(&refs).yaml()).await);

    let failures = Arc::new(AtomicU64::new(0));
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    let swapper = {
        let sy = sy.clone();
        tokio::spawn(async move {
            let specs = [
                json!({"scorers": [{"policy": "prefix-affinity", "weight": 0.6}]}),
                json!({}),
            ];
            let mut swaps = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..(SECONDS * 10) {
                tick.tick().await;
                let r = sy
                    .admin_json(
                        Method::PUT,
                        "/admin/tenants/default/pipeline",
                        &specs[(i % 2) as usize],
                    )
                    .await;
                assert!(r.status().is_success(), "swap {i}: {}", r.status());
                swaps += 1;
            }
            swaps
        })
    };

    let total = RATE_PER_S * SECONDS;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_S));
    let mut drained_at = None;
    let mut c_after_drain = 0;
    for i in 0..total {
        tick.tick().await;
        if i == total / 2 {
            let r = sy
                .admin_call(Method::POST, "/admin/backends/c/drain")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            drained_at = Some(i);
        }
        let (c, url, failures) = (c.clone(), sy.url.clone(), failures.clone());
        tasks.spawn(async move {
            let r = c
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat(i % 2 == 0))
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status() == 200 => {
                    r.text().await.is_ok_and(|t| !t.contains("\"error\""))
                }
                _ => false,
            };
            if !ok {
                failures.fetch_add(1, Ordering::SeqCst);
            }
        });
        if drained_at == Some(i) {
            // Requests admitted before the drain may still be on their way; once the
            // router counts none in flight to c, c must receive nothing more.
            eventually(10, "c's in-flight requests finish", || async {
                sy.backend("c").await["in_flight_requests"] == 0
            })
            .await;
            c_after_drain = backends[2].requests();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let swaps = swapper.await.unwrap();

    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(swaps, (SECONDS * 10) as u32);
    assert_eq!(
        backends[2].requests(),
        c_after_drain,
        "c got requests after its drain"
    );
    assert_eq!(
        backends[2].cancelled(),
        0,
        "c's in-flight requests completed"
    );
    assert_eq!(backends[2].completed(), backends[2].requests());
    let served: u64 = backends.iter().map(TestBackend::completed).sum();
    assert_eq!(served, total);
    assert!(backends[2].requests() > 0, "c served before its drain");
}
