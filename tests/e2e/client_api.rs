//! The client API: happy paths (streaming and not, headers, models, metrics) and every
//! bad-input case with its status and error body.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    ExternalBackend, Fleet, MODEL, Mode, Switchyard, TestBackend, chat, client, free_port,
};

async fn error_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body: Value = r.json().await.expect("error body is JSON");
    let e = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(e.get(field).is_some(), "error body lacks `{field}`: {body}");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_stream_and_not() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a, &b]).yaml()).await;
    let c = client();

    let r = c
        .post(format!("{}/v1/chat/completions", sy.url))
        .header("x-request-id", "req-42")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert!(
        r.headers().contains_key("content-length"),
        "a non-streamed answer is sent whole, with its length: {:?}",
        r.headers()
    );
    let backend = r.headers()["x-switchyard-backend"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(backend == "a" || backend == "b", "{backend}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the backend"
    );

    let r = c
        .post(format!("{}/v1/completions", sy.url))
        .json(&json!({"model": MODEL, "prompt": "Once upon", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a generated uuid: {id}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["text"], "Hello from the backend");

    // Streaming arrives as separate SSE events, ending with [DONE].
    let mut r = c
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "{text}");
    assert_eq!(events[4], "data: [DONE]");
    assert!(events[0].contains("\"Hello\""), "{}", events[0]);

    let models: Value = c
        .get(format!("{}/v1/models", sy.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"].as_array().unwrap().len(), 1);

    let metrics = sy.metrics().await;
    assert!(
        metrics.contains("switchyard_requests_total{tenant=\"default\",backend=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_backend_healthy{backend=\"a\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_ttfb_seconds"), "{metrics}");
    assert_eq!(a.requests() + b.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_openai_errors() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.proxy.push_str("  max_body_bytes: 2000\n");
    fleet.extra = "auth:\n  require_api_key: true\ntenants:\n  default:\n    api_keys: [good-key]\n  tiny:\n    api_keys: [tiny-key]\n    max_concurrent: 1\n    requests_per_s: 1\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let c = client();
    let url = format!("{}/v1/chat/completions", sy.url);
    let post = |body: String| {
        c.post(&url)
            .bearer_auth("good-key")
            .header("content-type", "application/json")
            .body(body)
    };

    let (s, b) = error_of(post("{not json".into()).send().await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );

    let (s, b) = error_of(
        post(json!({"messages": []}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("model"))
    );

    let (s, b) = error_of(
        post(json!({"model": MODEL}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("messages"))
    );

    let mut other = chat(false);
    other["model"] = json!("no-such-model");
    let (s, b) = error_of(post(other.to_string()).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model"),
        "{b}"
    );

    let mut big = chat(false);
    big["messages"][0]["content"] = json!("x".repeat(5000));
    let (s, b) = error_of(post(big.to_string()).send().await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );

    let (s, b) = error_of(
        c.post(&url)
            .bearer_auth("wrong")
            .json(&chat(false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["type"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("authentication_error"))
    );
    let (s, _) = error_of(c.post(&url).json(&chat(false)).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Tenant `tiny` may make one request per second.
    let ok = c
        .post(&url)
        .bearer_auth("tiny-key")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let r = c
        .post(&url)
        .bearer_auth("tiny-key")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("retry-after").is_some(),
        "429 carries Retry-After"
    );
    let (s, b) = error_of(r).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limit_exceeded"))
    );

    let r = c
        .get(format!("{}/v2/nothing", sy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_is_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    a.set_mode(Mode::Down);
    let sy = Switchyard::start_unready(dir.path(), &Fleet::new(&[&a]).yaml()).await;
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    let (s, b) = error_of(r).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("no_healthy_backend"))
    );
    let ready = client()
        .get(format!("{}/ready", sy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_failed_is_502_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a, &b]).yaml()).await;
    a.set_mode(Mode::Fail500);
    b.set_mode(Mode::Fail500);
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    let (s, body) = error_of(r).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("backend a returned 500") && msg.contains("backend b returned 500"),
        "{msg}"
    );
    assert_eq!(
        (a.requests(), b.requests()),
        (1, 1),
        "one attempt per backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let err = Switchyard::start_failing(
        dir.path(),
        "listen: 127.0.0.1:0\nbackends:\n  - name: a\n    url: http://127.0.0.1:1\n    models: [m]\n    engine: tgi\n",
    );
    assert!(err.contains("config.yaml: backends[0].engine"), "{err}");
    assert!(err.contains("tgi"), "{err}");
}

/// Any OpenAI-compatible server can be a backend (`engine: openai`, health via
/// `/v1/models`, no scraping): here a second router, started as an external command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_openai_server_is_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let port = free_port();
    let inner_config = dir.path().join("inner.yaml");
    std::fs::write(
        &inner_config,
        format!("listen: 127.0.0.1:{port}\nbackends:\n  - {{name: a, url: \"{}\", models: [{MODEL}], engine: vllm}}\n", a.url),
    )
    .unwrap();
    let config_arg = inner_config.display().to_string();
    let inner = ExternalBackend::start(
        "inner",
        port,
        &crate::harness::switchyard_binary(),
        &["serve", "--config", &config_arg],
        "/ready",
    )
    .await;
    let mut fleet = Fleet::new(&[]);
    fleet
        .backends
        .push((inner.name.clone(), inner.url.clone(), "openai"));
    let outer_dir = tempfile::tempdir().unwrap();
    let sy = Switchyard::start(outer_dir.path(), &fleet.yaml()).await;
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-backend"], "inner");
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!(a.requests(), 1);
    assert_eq!(
        sy.backend("inner").await["metrics_stale"],
        false,
        "openai backends are not scraped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_header_cannot_select_a_tenant_that_has_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "auth:\n  require_api_key: false\n  tenant_header: x-tenant\ntenants:\n  acme:\n    api_keys: [acme-key]\n  open: {}\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let c = client();
    let send = |tenant: &'static str, key: Option<&'static str>| {
        let mut r = c
            .post(format!("{}/v1/chat/completions", sy.url))
            .header("x-tenant", tenant)
            .json(&chat(false));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };

    let (status, body) = error_of(send("acme", None).await.unwrap()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("acme"),
        "{body}"
    );
    assert_eq!(send("acme", Some("acme-key")).await.unwrap().status(), 200);
    assert_eq!(send("open", None).await.unwrap().status(), 200);

    let metrics = sy.metrics().await;
    assert!(
        metrics.contains("switchyard_requests_total{tenant=\"\",backend=\"\",status=\"401\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tenant=\"acme\",backend=\"a\",status=\"200\"} 2"),
        "the header never served as acme: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_limit_counts_max_completion_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "tenants:\n  default:\n    tokens_per_s: 1000\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let mut body = chat(false);
    body["max_tokens"] = json!(1);
    body["max_completion_tokens"] = json!(100_000);
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(r).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kv_transfer_params_never_reach_an_engine() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a]).yaml()).await;
    let c = client();
    let mut body = chat(false);
    body["kv_transfer_params"] = json!({
        "do_remote_prefill": true,
        "remote_host": "10.9.9.9",
        "remote_block_ids": [1, 2, 3]
    });
    let r = c
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = a.last_body().expect("a got the request");
    assert_eq!(sent["messages"], body["messages"], "{sent}");
    assert!(sent.get("kv_transfer_params").is_none(), "{sent}");
    let metrics = sy.metrics().await;
    assert!(
        metrics.contains("switchyard_client_fields_stripped_total{field=\"kv_transfer_params\"} 1"),
        "{metrics}"
    );
}
