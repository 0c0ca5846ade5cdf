//! Faults: a backend killed mid-stream with nowhere to resume, a backend that hangs, a backend returning 500s,
//! and a client that goes away.

use std::time::{Duration, Instant};

use crate::harness::{
    Fleet, LEAST_LOAD, Mode, Switchyard, TestBackend, chat, client, eventually, served_backend,
};

async fn served_by(sy: &Switchyard, stream: bool) -> (u16, String, String) {
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(stream))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let backend = served_backend(&r);
    (status, backend, r.text().await.unwrap_or_default())
}

/// A stream that breaks with no backend able to take it over (the only other one is of
/// engine kind `openai`, which cannot continue a generation; see `resume` for the
/// streams that do go on) ends with a clean error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_with_no_backend_to_resume_on_ends_with_an_error_event_and_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    // Long health interval: only the failed request can have marked `a` down.
    let mut fleet = Fleet::new(&[&a, &b]);
    fleet.backends[1].2 = "openai";
    fleet.pool = "  health_interval_ms: 60000\n  scrape_interval_ms: 50\n".into();
    fleet.extra = LEAST_LOAD.into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    a.set_mode(Mode::DieMidStream);

    let (status, backend, text) = served_by(&sy, true).await;
    assert_eq!((status, backend.as_str()), (200, "a"));
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "two chunks then the error event: {text}");
    assert!(
        events[0].contains("Hello") && events[1].contains("from"),
        "{text}"
    );
    let err: serde_json::Value =
        serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "backend_failed", "{text}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("not resumed: no other"), "{message}");
    assert!(!text.contains("[DONE]"));

    assert_eq!(sy.backend("a").await["healthy"], false, "a is marked down");
    for _ in 0..3 {
        let (status, backend, _) = served_by(&sy, false).await;
        assert_eq!((status, backend.as_str()), (200, "b"));
    }
    assert_eq!(a.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_backend_times_out_and_is_retried_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut fleet = Fleet::new(&[&a, &b]);
    fleet.proxy = "  attempt_timeout_ms: 300\n".into();
    fleet.extra = LEAST_LOAD.into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    a.set_mode(Mode::Hang);

    let started = Instant::now();
    let (status, backend, text) = served_by(&sy, true).await;
    assert_eq!((status, backend.as_str()), (200, "b"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "one clean stream: {text}"
    );
    assert_eq!((a.requests(), b.requests()), (1, 1));
    // The abandoned attempt was cancelled at the backend and its count returned.
    eventually(5, "a sees the cancellation", || async {
        a.cancelled() == 1
    })
    .await;
    assert_eq!(sy.backend("a").await["in_flight_requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_opens_its_circuit_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut fleet = Fleet::new(&[&a, &b]);
    fleet
        .pool
        .push_str("  breaker_failures: 3\n  breaker_open_ms: 1500\n");
    fleet.extra = LEAST_LOAD.into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    a.set_mode(Mode::Fail500);

    // Idle backends tie; the lower index (a) is tried first, fails, b serves.
    for _ in 0..6 {
        let (status, backend, _) = served_by(&sy, false).await;
        assert_eq!((status, backend.as_str()), (200, "b"));
    }
    assert_eq!(a.requests(), 3, "the circuit opened after 3 failures");
    assert_eq!(sy.backend("a").await["breaker"], "open");
    let metrics = sy.metrics().await;
    assert!(
        metrics.contains("switchyard_backend_breaker_state{backend=\"a\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_retries_total{backend=\"a\"} 3"),
        "{metrics}"
    );

    a.set_mode(Mode::Ok);
    eventually(10, "a serves again after half-open", || async {
        served_by(&sy, false).await.1 == "a"
    })
    .await;
    assert_eq!(sy.backend("a").await["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_backend_request() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    a.set_chunk_delay(Duration::from_millis(300));
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a]).yaml()).await;
    let mut r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("Hello"));
    assert_eq!(sy.backend("a").await["in_flight_requests"], 1);
    drop(r);
    eventually(5, "the backend sees the cancellation", || async {
        a.cancelled() == 1
    })
    .await;
    eventually(5, "in-flight count returns to 0", || async {
        sy.backend("a").await["in_flight_requests"] == 0
    })
    .await;
    assert_eq!(a.completed(), 0);
}
