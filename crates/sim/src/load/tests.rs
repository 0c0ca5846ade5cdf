//! Benchmark runs against in-process simulated backends and a canned SSE server.

use super::*;
use crate::{Backend, BackendSpec, Faults, Profile};

async fn sim(faults: Faults) -> Backend {
    let spec = BackendSpec {
        speed: 50.0,
        faults,
        ..BackendSpec::new("b", Profile::builtin("h100").expect("built in"))
    };
    Backend::start(spec).await.expect("sim starts")
}

fn small_shared_prefix() -> Workload {
    Workload::SharedPrefix(SharedPrefix {
        groups: 2,
        prompts_per_group: 4,
        system_prompt_len: 320,
        question_len: 16,
        output_len: 6,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_prefix_run_measures_every_request_and_sees_cache_hits() {
    let b = sim(Faults::default()).await;
    let config = BenchConfig {
        max_concurrency: Some(1),
        ..BenchConfig::new(&b.info().base_url, small_shared_prefix())
    };
    let r = run(config).await.expect("runs");
    assert_eq!((r.requests, r.errors), (8, 0));
    assert_eq!(r.output_tokens, 8 * 6);
    assert!(r.ttft_ms.p50 > 0.0 && r.itl_ms.p50 > 0.0 && r.e2e_ms.p99 >= r.ttft_ms.p99);
    // One request per group misses; the other three hit the 320-token system prompt.
    assert!(r.prefix_cache_hit_rate > 0.6, "{}", r.prefix_cache_hit_rate);
    assert!(r.output_tokens_per_s > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let b = sim(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let r = run(BenchConfig::new(&b.info().base_url, small_shared_prefix()))
        .await
        .expect("runs");
    assert_eq!((r.requests, r.errors), (8, 8));
    assert_eq!(r.error_kinds.get("http 500"), Some(&8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_history_hits_the_cache_and_limits_hold() {
    let b = sim(Faults::default()).await;
    let w = Workload::MultiTurn(MultiTurn {
        conversations: 2,
        turns: 3,
        system_prompt_len: 64,
        question_len: 8,
        output_len: 20,
    });
    let r = run(BenchConfig::new(&b.info().base_url, w.clone()))
        .await
        .expect("runs");
    assert_eq!((r.requests, r.errors), (6, 0));
    assert!(
        r.cached_tokens >= 4 * 64,
        "later turns reuse the history: {}",
        r.cached_tokens
    );
    let limited = BenchConfig {
        max_requests: Some(3),
        api: Api::Completions,
        ..BenchConfig::new(&b.info().base_url, w)
    };
    assert_eq!(run(limited).await.expect("runs").requests, 3);
}

/// Serves `body` as the SSE answer to every chat request, with the backend header;
/// returns the base URL and the server task.
async fn canned(body: &'static str) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            (
                [
                    (BACKEND_HEADER, "gpu-7"),
                    ("content-type", "text/event-stream"),
                ],
                body,
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_header_is_counted() {
    let (url, server) = canned(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
         data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n",
    )
    .await;
    let r = run(BenchConfig::new(url, small_shared_prefix()))
        .await
        .expect("runs");
    server.abort();
    assert_eq!(r.backends.get("gpu-7"), Some(&8));
    assert_eq!(r.output_tokens, 16, "counted chunks without usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_with_crlf_comments_and_multi_line_data_is_read_whole() {
    // CRLF line ends, a keep-alive comment, an `id:` field, no space after `data:`, and
    // one event's JSON split over two `data:` lines (joined with a newline, as SSE says).
    let (url, server) = canned(
        ": keep-alive\r\n\r\n\
         id: 1\r\ndata:{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
         data: {\"choices\":[{\"delta\":\r\ndata: {\"content\":\"b\"}}]}\r\n\r\n\
         data: [DONE]\r\n\r\n",
    )
    .await;
    let r = run(BenchConfig::new(url, small_shared_prefix()))
        .await
        .expect("runs");
    server.abort();
    assert_eq!(r.errors, 0, "{r:?}");
    assert_eq!(r.output_tokens, 16, "two content chunks per request: {r:?}");
}

#[test]
fn a_timed_immediate_run_needs_a_concurrency_bound() {
    let c = BenchConfig {
        duration: Some(Duration::from_secs(1)),
        ..BenchConfig::new("http://x", small_shared_prefix())
    };
    assert!(matches!(c.validate(), Err(Error::Config(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_share_the_sessions_round_robin() {
    let (a, b) = (sim(Faults::default()).await, sim(Faults::default()).await);
    let config = BenchConfig {
        urls: vec![a.info().base_url.clone(), b.info().base_url.clone()],
        ..BenchConfig::new("", small_shared_prefix())
    };
    assert_eq!(run(config).await.expect("runs").errors, 0);
    for backend in [&a, &b] {
        let text = reqwest::get(format!("{}/metrics", backend.info().base_url))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body");
        let served = text
            .lines()
            .find(|l| l.starts_with("vllm:request_success_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(served, Some(4.0), "{}", backend.info().name);
    }
}

/// A llama.cpp-like backend with `slots` slots.
async fn slot_sim(slots: usize) -> Backend {
    let spec = BackendSpec {
        speed: 50.0,
        cache: crate::CacheModel::Slots {
            slots,
            ctx_per_slot: 4096,
            slot_prompt_similarity: crate::DEFAULT_SIMILARITY,
        },
        ..BackendSpec::new("s", Profile::builtin("h100").expect("built in"))
    };
    Backend::start(spec).await.expect("sim starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_groups_keep_their_home_and_hit_where_round_robin_misses() {
    let w = Workload::GroupedChat(GroupedChat {
        head_len: 10,
        groups: 2,
        doc_len_min: 300,
        doc_len_max: 300,
        conversations: 3,
        turns: 2,
        question_len: 10,
        output_len: 4,
    });
    let mut rates = Vec::new();
    for pin_groups in [false, true] {
        // One slot per backend: a backend serving both groups evicts one for the other.
        let (a, b) = (slot_sim(1).await, slot_sim(1).await);
        let config = BenchConfig {
            urls: vec![a.info().base_url.clone(), b.info().base_url.clone()],
            max_concurrency: Some(1),
            pin_groups,
            ..BenchConfig::new("", w.clone())
        };
        let r = run(config).await.expect("runs");
        assert_eq!((r.requests, r.errors), (12, 0));
        rates.push(r.prefix_cache_hit_rate);
    }
    // Pinned: everything but the two first prompts (one per group) hits its document.
    assert!(rates[1] > 0.75, "{rates:?}");
    assert!(rates[0] < rates[1] - 0.1, "{rates:?}");
}
