//! Stream resumption: a stream whose backend fails mid-stream (killed, an engine error
//! event, a stall) or is drained past its deadline goes on on another backend, and the
//! client's stream continues unbroken: same id, no duplicated or lost text, usage over
//! the whole generation; a non-resumable request and an exhausted `max_resumes` end with
//! a clean error event; a non-streamed answer cut short is retried whole.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Fleet, LEAST_LOAD, MODEL, Mode, Switchyard, TestBackend, WORDS, client, eventually,
    served_backend,
};

/// Posts `body` to `path` and reads the whole stream: (status, backend header, events).
async fn stream(sy: &Switchyard, path: &str, body: &Value) -> (u16, String, Vec<String>) {
    let mut r = client()
        .post(format!("{}{path}", sy.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let backend = served_backend(&r);
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    (status, backend, data_events(&text))
}

/// The `data:` payloads of an SSE body, in order; panics on any other event.
fn data_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?} in {text}"))
                .to_owned()
        })
        .collect()
}

fn chat_body(extra: Value) -> Value {
    let mut b = serde_json::json!({
        "model": MODEL, "stream": true, "max_tokens": 8,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Say hello to the router."}]
    });
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

/// The text of `events` (chat deltas or completion texts), asserting every chunk is
/// well formed and carries `id`; returns (text, last finish_reason, usage).
fn whole(events: &[String], id: &str) -> (String, Option<String>, Option<Value>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("{e}"));
        assert!(v.get("error").is_none(), "an error event: {events:?}");
        assert_eq!(v["id"], id, "{e}");
        if let Some(c) = v["choices"].get(0) {
            text.push_str(
                c["delta"]["content"]
                    .as_str()
                    .or(c["text"].as_str())
                    .unwrap_or_default(),
            );
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, finish, usage)
}

/// The error event ending `events`, which holds no `[DONE]`.
fn error_event(events: &[String]) -> Value {
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().expect("events")).unwrap();
    assert_eq!(last["error"]["code"], "backend_failed", "{events:?}");
    last
}

/// The upper bound of the seam histogram's bucket holding quantile `q`, milliseconds.
fn seam_ms(metrics: &str, q: f64) -> f64 {
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("switchyard_stream_resume_seam_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), n.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// Two backends, `a` first (idle backends tie; the lower index wins), a long health
/// interval so only requests can mark a backend down, and a breaker that stays closed.
async fn two(
    a_mode: Mode,
    proxy: &str,
) -> (TestBackend, TestBackend, Switchyard, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let mut fleet = Fleet::new(&[&a, &b]);
    fleet.pool =
        "  health_interval_ms: 60000\n  scrape_interval_ms: 50\n  breaker_failures: 1000\n".into();
    fleet.proxy.push_str(proxy);
    fleet.extra = LEAST_LOAD.into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    a.set_mode(a_mode);
    (a, b, sy, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_chat_resumes_on_another_backend_unbroken() {
    let (a, b, sy, _dir) = two(Mode::DieMidStream, "").await;
    let (status, backend, events) = stream(
        &sy,
        "/v1/chat/completions",
        &chat_body(serde_json::json!({})),
    )
    .await;
    assert_eq!((status, backend.as_str()), (200, "a"));
    let (text, finish, usage) = whole(&events, "chatcmpl-a");
    assert_eq!(text, WORDS.concat(), "{events:?}");
    assert_eq!(finish.as_deref(), Some("stop"));
    let usage = usage.expect("usage");
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64(),
            usage["total_tokens"].as_u64()
        ),
        (Some(5), Some(4), Some(9)),
        "usage covers the whole generation: {usage}"
    );
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["created"], 97, "a's `created` kept after the seam: {e}");
    }
    // The continuation b received: the text so far as the assistant message to continue,
    // the continuation flags, max_tokens less the two tokens sent.
    let sent = b.last_body().expect("b got the continuation");
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1],
        serde_json::json!({"role": "assistant", "content": "Hello from"})
    );
    assert_eq!(sent["continue_final_message"], true);
    assert_eq!(sent["add_generation_prompt"], false);
    assert_eq!(sent["max_tokens"], 6);
    assert_eq!((a.requests(), b.requests()), (1, 1));

    // The decision lists both legs.
    let decisions = sy.admin_get("/admin/decisions?limit=1").await;
    let legs = &decisions[0]["stream_legs"];
    assert_eq!(legs[0]["backend"], "a", "{decisions}");
    assert_eq!(legs[0]["tokens"], 2, "{decisions}");
    assert_eq!(legs[0]["ended"], "transport", "{decisions}");
    assert_eq!(legs[1]["backend"], "b", "{decisions}");
    assert_eq!(legs[1]["tokens"], 2, "{decisions}");
    assert_eq!(legs[1]["ended"], "finished", "{decisions}");
    assert!(legs[0].get("seam_ms").is_none(), "{decisions}");
    assert!(
        legs[1]["seam_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "the seam that opened leg 2: {decisions}"
    );
    let m = sy.metrics().await;
    assert!(
        m.contains(r#"switchyard_stream_resumes_total{from="a",to="b",reason="transport"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("switchyard_stream_resume_seam_seconds_count 1"),
        "{m}"
    );
    // The KV index (approximate mode here) learned the prompt on both: a served the
    // first leg, b the resumed one.
    let kv = sy.admin_get("/admin/kv").await;
    let recorded = |name: &str| {
        kv.as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name))
            .and_then(|s| s["decisions"].as_u64())
    };
    assert_eq!((recorded("a"), recorded("b")), (Some(1), Some(1)), "{kv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_completion_resumes_with_the_prompt_extended() {
    let (_a, b, sy, _dir) = two(Mode::DieMidStream, "").await;
    let body = serde_json::json!({
        "model": MODEL, "stream": true, "max_tokens": 8, "prompt": "Once upon",
        "stream_options": {"include_usage": true}
    });
    let (status, _, events) = stream(&sy, "/v1/completions", &body).await;
    assert_eq!(status, 200);
    let (text, finish, usage) = whole(&events, "cmpl-a");
    assert_eq!(text, WORDS.concat(), "{events:?}");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert_eq!(usage.expect("usage")["completion_tokens"], 4);
    let sent = b.last_body().expect("b got the continuation");
    assert_eq!(sent["prompt"], "Once uponHello from");
    assert_eq!(sent["max_tokens"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_error_event_mid_stream_resumes_without_reaching_the_client() {
    // a keeps failing (an error event is no transport failure: it stays up); a high
    // breaker threshold keeps it in the fleet, so each stream that starts on a resumes
    // once on b. Least-load starts most on a; one started while a still counted the
    // previous stream in flight starts on b and needs no resume.
    let (_a, b, sy, _dir) = two(Mode::ErrorEventMidStream, "").await;
    let mut resumed = 0;
    for _ in 0..50 {
        let (status, first, events) = stream(
            &sy,
            "/v1/chat/completions",
            &chat_body(serde_json::json!({})),
        )
        .await;
        assert_eq!(status, 200);
        let (text, finish, _) = whole(&events, &format!("chatcmpl-{first}"));
        assert_eq!(text, WORDS.concat(), "{events:?}");
        assert_eq!(finish.as_deref(), Some("stop"));
        resumed += usize::from(first == "a");
    }
    assert!(resumed >= 25, "only {resumed} of 50 streams started on a");
    assert_eq!(b.requests(), 50, "a continuation or a whole request each");
    let m = sy.metrics().await;
    assert!(
        m.contains(&format!(
            r#"switchyard_stream_resumes_total{{from="a",to="b",reason="engine_error"}} {resumed}"#
        )),
        "{m}"
    );
    eprintln!(
        "test backends, 50 engine-error resumes: seam p50 <= {:.1} ms, p99 <= {:.1} ms",
        seam_ms(&m, 0.5),
        seam_ms(&m, 0.99)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_stream_resumes_after_the_idle_timeout() {
    let (a, b, sy, _dir) = two(Mode::StallMidStream, "  stream_idle_timeout_ms: 300\n").await;
    let started = std::time::Instant::now();
    let (status, _, events) = stream(
        &sy,
        "/v1/chat/completions",
        &chat_body(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (text, _, _) = whole(&events, "chatcmpl-a");
    assert_eq!(text, WORDS.concat(), "{events:?}");
    assert_eq!(b.requests(), 1);
    eventually(5, "the stalled request is cancelled at a", || async {
        a.cancelled() == 1
    })
    .await;
    let m = sy.metrics().await;
    assert!(
        m.contains(r#"switchyard_stream_resumes_total{from="a",to="b",reason="idle"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_max_resumes_ends_with_a_clean_error_event() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let mut fleet = Fleet::new(&[&a, &b, &c]);
    fleet.pool = "  health_interval_ms: 60000\n  scrape_interval_ms: 50\n".into();
    fleet.proxy.push_str("  max_resumes: 1\n");
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    for x in [&a, &b, &c] {
        x.set_mode(Mode::DieMidStream);
        x.set_die_after(1);
    }
    let (status, _, events) = stream(
        &sy,
        "/v1/chat/completions",
        &chat_body(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        events.len(),
        3,
        "one token from each leg, then the error: {events:?}"
    );
    let err = error_event(&events);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_resumes (1) reached"), "{message}");
    let decisions = sy.admin_get("/admin/decisions?limit=1").await;
    let legs = decisions[0]["stream_legs"]
        .as_array()
        .expect("legs")
        .clone();
    assert_eq!(legs.len(), 2, "{decisions}");
    assert!(
        legs[1]["detail"].as_str().unwrap().contains("max_resumes"),
        "{decisions}"
    );
    assert_eq!(a.requests() + b.requests() + c.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_resumable_request_ends_with_the_error_event_naming_why() {
    let (_a, b, sy, _dir) = two(Mode::DieMidStream, "").await;
    let (status, _, events) = stream(
        &sy,
        "/v1/chat/completions",
        &chat_body(serde_json::json!({"logprobs": true})),
    )
    .await;
    assert_eq!(status, 200);
    let err = error_event(&events);
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("not resumed: logprobs"), "{message}");
    assert_eq!(b.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_answer_cut_short_is_retried_whole_elsewhere() {
    let (a, b, sy, _dir) = two(Mode::DieMidStream, "").await;
    let r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&crate::harness::chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-backend"], "b");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], WORDS.concat());
    assert_eq!((a.requests(), b.requests()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_moves_twenty_streams_and_cuts_none() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    a.set_chunk_delay(Duration::from_millis(150));
    b.set_chunk_delay(Duration::from_millis(20));
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a, &b]).yaml()).await;
    let post = |path: String| sy.admin_call(reqwest::Method::POST, &path).send();
    // Every stream starts on a.
    assert!(
        post("/admin/backends/b/drain".into())
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let url = sy.url.clone();
            tokio::spawn(async move {
                let mut r = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&chat_body(serde_json::json!({})))
                    .send()
                    .await
                    .unwrap();
                let mut text = String::new();
                while let Some(chunk) = r.chunk().await.unwrap() {
                    text.push_str(std::str::from_utf8(&chunk).unwrap());
                }
                text
            })
        })
        .collect();
    eventually(10, "20 streams running on a", || async {
        sy.backend("a").await["streams"] == 20
    })
    .await;
    assert!(
        post("/admin/backends/b/undrain".into())
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let r = post("/admin/backends/a/drain?deadline_ms=200".into())
        .await
        .unwrap();
    assert!(r.status().is_success());
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["draining"], true);
    assert_eq!(status["streams"], 20, "streams left at the drain: {status}");
    for s in streams {
        let text = s.await.unwrap();
        let events = data_events(&text);
        let (whole_text, finish, usage) = whole(&events, "chatcmpl-a");
        assert_eq!(whole_text, WORDS.concat(), "{events:?}");
        assert_eq!(finish.as_deref(), Some("stop"));
        assert_eq!(usage.expect("usage")["completion_tokens"], 4);
    }
    let a_status = sy.backend("a").await;
    assert_eq!(a_status["streams"], 0, "{a_status}");
    assert_eq!(a_status["streams_moved"], 20, "{a_status}");
    assert_eq!(b.requests(), 20);
    assert_eq!(a.completed(), 0, "every stream left a before its end");
    let m = sy.metrics().await;
    assert!(
        m.contains(r#"switchyard_stream_resumes_total{from="a",to="b",reason="drained"} 20"#),
        "{m}"
    );
    eprintln!(
        "test backends, 20 drained streams: seam p50 <= {:.1} ms, p99 <= {:.1} ms",
        seam_ms(&m, 0.5),
        seam_ms(&m, 0.99)
    );
}

/// Runs `tests/py/resume_client.py` (the real `openai` client) for a `kind` (`chat` or
/// `completion`) stream of `max_tokens` through the router at `url`; with `kill` given,
/// SIGKILLs the serving backend after `kill_after` chunks. Returns the client's summary.
async fn resume_client(
    url: &str,
    kind: &str,
    max_tokens: u32,
    kill_after: u32,
    mut kill: impl FnMut(&str),
) -> Value {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/resume_client.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .args([
            url,
            MODEL,
            kind,
            &max_tokens.to_string(),
            &kill_after.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut summary = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(backend) = line.strip_prefix("KILL ") {
            kill(backend);
            stdin.write_all(b"go\n").await.unwrap();
            stdin.flush().await.unwrap();
        } else {
            summary = serde_json::from_str::<Value>(&line).ok();
        }
    }
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai client failed:\n{stderr}");
    summary.unwrap_or_else(|| panic!("no summary from the client:\n{stderr}"))
}

/// A stream of 200 tokens from a real `llama-server` (temperature 0, a fixed seed) whose
/// server is SIGKILLed after 30 tokens: the `openai` client gets one unbroken stream with
/// a normal finish and all 200 tokens. With `exact`, its text is the uninterrupted run's;
/// without, the texts agree up to the seam and past it at least until the first token
/// the engine tokenizes differently when it reads the text so far back (a completion's
/// random-weight gibberish is full of such pieces): asserts the first difference, if
/// any, comes after the seam.
async fn llama_server_killed_mid_stream(kind: &str, exact: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sy) = crate::llamacpp::fleet(dir.path()).await;
    let plain = resume_client(&sy.url, kind, 200, 0, |_| unreachable!()).await;
    let mut servers = [Some(a), Some(b)];
    let mut killed = String::new();
    let resumed = resume_client(&sy.url, kind, 200, 30, |backend| {
        for s in &mut servers {
            if s.as_ref().is_some_and(|s| s.name == backend) {
                s.take().unwrap().kill();
                killed = backend.to_owned();
            }
        }
    })
    .await;
    assert!(
        !killed.is_empty(),
        "the serving server was killed: {resumed}"
    );
    let m = sy.metrics().await;
    assert!(
        m.contains(&format!(
            r#"switchyard_stream_resumes_total{{from="{killed}""#
        )),
        "a resume away from {killed}: {m}"
    );
    let decisions = sy.admin_get("/admin/decisions?limit=1").await;
    let legs = decisions[0]["stream_legs"]
        .as_array()
        .expect("legs")
        .clone();
    assert_eq!(legs.len(), 2, "{decisions}");
    let before = legs[0]["tokens"].as_u64().unwrap() as usize;
    assert!(
        before >= 30,
        "killed after the client saw 30 tokens: {decisions}"
    );
    assert_eq!(
        resumed["ids"].as_array().map(Vec::len),
        Some(1),
        "one id: {resumed}"
    );
    assert_eq!(
        resumed["finish_reason"], plain["finish_reason"],
        "{resumed}"
    );
    let seam: usize = resumed["pieces"].as_array().unwrap()[..before]
        .iter()
        .map(|p| p.as_str().unwrap().len())
        .sum();
    let (got, want) = (
        resumed["text"].as_str().unwrap(),
        plain["text"].as_str().unwrap(),
    );
    let first_difference = got
        .bytes()
        .zip(want.bytes())
        .position(|(x, y)| x != y)
        .or((got.len() != want.len()).then(|| got.len().min(want.len())));
    eprintln!(
        "llama.cpp {kind}: seam after {before} tokens (byte {seam}); first difference: {first_difference:?}; \
         seam {:.1} ms",
        seam_sum_ms(&m)
    );
    if exact {
        assert_eq!(got, want, "the text of the uninterrupted run");
        assert_eq!(resumed["chunks"], plain["chunks"], "{resumed}");
        assert_eq!(
            resumed["usage"]["completion_tokens"], plain["usage"]["completion_tokens"],
            "usage over the whole generation: {resumed}"
        );
    } else if let Some(at) = first_difference {
        assert!(
            at >= seam,
            "first difference at byte {at}, before the seam at {seam}"
        );
    }
}

/// The seam histogram's sum, milliseconds (one resume: the seam).
fn seam_sum_ms(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_stream_resume_seam_seconds_sum "))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |s| s * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_llama_server_mid_chat_stream_resumes_on_the_other() {
    llama_server_killed_mid_stream("chat", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_llama_server_mid_completion_stream_resumes_on_the_other() {
    llama_server_killed_mid_stream("completion", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_decode_leg_of_a_split_resumes_on_another_decode_backend() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let p = TestBackend::start("p").await;
    // `pd-split` decodes on a (ties go to the lower index) and prefills on the much
    // faster p; b is the other decode backend.
    let backend = |t: &TestBackend, role: &str, prefill: u32| {
        format!(
            "  - name: {}\n    url: {}\n    models: [{MODEL}]\n    engine: vllm\n    role: {role}\n    \
             capability: {{prefill_tokens_per_s: {prefill}, decode_tokens_per_s: 100, \
             kv_link_gbytes_per_s: 100, kv_bytes_per_token: 1000}}\n",
            t.name, t.url
        )
    };
    let config = format!(
        "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {}\n\
         pool:\n  health_interval_ms: 60000\n  scrape_interval_ms: 50\n\
         proxy:\n  attempt_timeout_ms: 5000\nbackends:\n{}{}{}\
         tenants:\n  default:\n    pipeline:\n      placer: {{policy: pd-split, config: {{min_uncached_tokens: 1}}}}\n",
        crate::harness::TOKEN,
        backend(&a, "decode", 10),
        backend(&b, "decode", 10),
        backend(&p, "prefill", 1_000_000),
    );
    let sy = Switchyard::start(dir.path(), &config).await;
    a.set_mode(Mode::DieMidStream);
    let mut r = client()
        .post(format!("{}/v1/chat/completions", sy.url))
        .json(&chat_body(serde_json::json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-backend"], "a");
    assert_eq!(r.headers()["x-switchyard-prefill-backend"], "p", "a split");
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = data_events(&text);
    let (whole_text, finish, _) = whole(&events, "chatcmpl-a");
    assert_eq!(whole_text, WORDS.concat(), "{events:?}");
    assert_eq!(finish.as_deref(), Some("stop"));
    assert!(
        a.last_body().unwrap()["kv_transfer_params"].is_object(),
        "a served the decode leg"
    );
    let sent = b.last_body().expect("the decode leg resumed on b");
    assert!(
        sent.get("kv_transfer_params").is_none(),
        "served whole: {sent}"
    );
    assert_eq!(sent["continue_final_message"], true);
    assert_eq!(p.requests(), 1, "the prefill leg ran once, on p");
}
