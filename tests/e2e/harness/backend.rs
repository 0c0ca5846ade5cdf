//! [`TestBackend`]: an in-process OpenAI-compatible backend (chat and completions,
//! streaming and not, `/metrics` in vLLM format) with fault knobs.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// How the backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Serves normally.
    Ok = 0,
    /// Completion endpoints answer 500; health stays fine.
    Fail500 = 1,
    /// Completion endpoints never answer.
    Hang = 2,
    /// Streams `die_after` chunks (default 2), then the connection breaks and the
    /// backend goes `Down`; a non-streamed answer breaks halfway through its body.
    DieMidStream = 3,
    /// Every endpoint, health included, answers 503.
    Down = 4,
    /// Streams `die_after` chunks, then an engine error event, then ends the stream.
    ErrorEventMidStream = 5,
    /// Streams `die_after` chunks, then sends nothing more (the connection stays open).
    StallMidStream = 6,
}

#[derive(Debug, Default)]
struct Knobs {
    /// The backend's name, in its stream ids.
    name: String,
    mode: AtomicU8,
    /// Completion requests received.
    requests: AtomicU64,
    /// Completion responses whose body was sent to the end.
    completed: AtomicU64,
    /// Completion requests whose handler or body was dropped before the end.
    cancelled: AtomicU64,
    in_flight: AtomicI64,
    chunk_delay_ms: AtomicU64,
    /// Chunks a faulty stream sends before its fault; 0 means the default, 2.
    die_after: AtomicU64,
    /// The last completion request body received.
    last_body: Mutex<Option<serde_json::Value>>,
}

/// A running test backend; stops when dropped.
pub struct TestBackend {
    /// Its name in router configs.
    pub name: String,
    /// Base URL.
    pub url: String,
    knobs: Arc<Knobs>,
    task: tokio::task::JoinHandle<()>,
}

/// Counts a request in flight; on drop, counts it completed or cancelled.
struct Tracker {
    knobs: Arc<Knobs>,
    finished: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.knobs.in_flight.fetch_sub(1, Ordering::SeqCst);
        let counter = if self.finished {
            &self.knobs.completed
        } else {
            &self.knobs.cancelled
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

impl TestBackend {
    /// Starts a backend named `name` on 127.0.0.1:0.
    pub async fn start(name: &str) -> TestBackend {
        let knobs = Arc::new(Knobs {
            name: name.into(),
            ..Knobs::default()
        });
        let app = Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .with_state(knobs.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestBackend {
            name: name.into(),
            url,
            knobs,
            task,
        }
    }

    /// Changes the behaviour.
    pub fn set_mode(&self, mode: Mode) {
        self.knobs.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Delay between streamed chunks (and before a non-streaming answer).
    pub fn set_chunk_delay(&self, d: Duration) {
        self.knobs
            .chunk_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Chunks a faulty stream sends before its fault (default 2).
    pub fn set_die_after(&self, chunks: u64) {
        self.knobs.die_after.store(chunks, Ordering::SeqCst);
    }

    /// The last completion request body received.
    pub fn last_body(&self) -> Option<serde_json::Value> {
        self.knobs
            .last_body
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Completion requests received so far.
    pub fn requests(&self) -> u64 {
        self.knobs.requests.load(Ordering::SeqCst)
    }

    /// Completion responses sent to the end.
    pub fn completed(&self) -> u64 {
        self.knobs.completed.load(Ordering::SeqCst)
    }

    /// Completion requests abandoned by the router before the end.
    pub fn cancelled(&self) -> u64 {
        self.knobs.cancelled.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn mode(k: &Knobs) -> Mode {
    match k.mode.load(Ordering::SeqCst) {
        1 => Mode::Fail500,
        2 => Mode::Hang,
        3 => Mode::DieMidStream,
        4 => Mode::Down,
        5 => Mode::ErrorEventMidStream,
        6 => Mode::StallMidStream,
        _ => Mode::Ok,
    }
}

async fn health(State(k): State<Arc<Knobs>>) -> StatusCode {
    if mode(&k) == Mode::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn metrics(State(k): State<Arc<Knobs>>) -> Response {
    if mode(&k) == Mode::Down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let running = k.in_flight.load(Ordering::SeqCst).max(0);
    format!(
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name=\"{m}\"}} {running}\n\
         # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"{m}\"}} 0\n\
         # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{model_name=\"{m}\"}} 0.1\n\
         # TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"16\",num_gpu_blocks=\"100\"}} 1\n",
        m = super::MODEL
    )
    .into_response()
}

async fn models() -> Json<serde_json::Value> {
    Json(serde_json::json!({"object": "list", "data": [{"id": super::MODEL, "object": "model"}]}))
}

async fn chat(State(k): State<Arc<Knobs>>, body: Bytes) -> Response {
    serve(k, body, true).await
}

async fn completions(State(k): State<Arc<Knobs>>, body: Bytes) -> Response {
    serve(k, body, false).await
}

/// The text every answer is made of, one word a token.
pub const WORDS: [&str; 4] = ["Hello", " from", " the", " backend"];

/// Words of [`WORDS`] the request already holds: a chat continuation's trailing
/// assistant message (`continue_final_message: true`) or the end of a completion prompt.
fn words_done(req: &serde_json::Value, is_chat: bool) -> usize {
    let done = |text: &str, whole: bool| {
        (1..=WORDS.len())
            .rev()
            .find(|&k| {
                let prefix = WORDS[..k].concat();
                if whole {
                    text == prefix
                } else {
                    text.ends_with(&prefix)
                }
            })
            .unwrap_or(0)
    };
    if is_chat {
        let last = req["messages"].as_array().and_then(|m| m.last());
        match last {
            Some(m) if m["role"] == "assistant" && req["continue_final_message"] == true => {
                done(m["content"].as_str().unwrap_or_default(), true)
            }
            _ => 0,
        }
    } else {
        done(req["prompt"].as_str().unwrap_or_default(), false)
    }
}

async fn serve(k: Arc<Knobs>, body: Bytes, is_chat: bool) -> Response {
    k.requests.fetch_add(1, Ordering::SeqCst);
    k.in_flight.fetch_add(1, Ordering::SeqCst);
    let mut tracker = Tracker {
        knobs: k.clone(),
        finished: false,
    };
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    *k.last_body.lock().unwrap_or_else(|e| e.into_inner()) = Some(req.clone());
    let stream = req["stream"].as_bool().unwrap_or(false);
    let delay = Duration::from_millis(k.chunk_delay_ms.load(Ordering::SeqCst));
    let fault = mode(&k);
    match fault {
        Mode::Fail500 => {
            tracker.finished = true;
            return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
        }
        Mode::Down => {
            tracker.finished = true;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Mode::Hang => {
            // Until the router gives up; the tracker then counts a cancellation.
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    if !stream {
        tokio::time::sleep(delay).await;
        let text: String = WORDS.concat();
        let choice = if is_chat {
            serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        } else {
            serde_json::json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"})
        };
        let mut answer = serde_json::json!({
            "id": "cmpl-test", "object": if is_chat { "chat.completion" } else { "text_completion" },
            "created": 0, "model": super::MODEL, "choices": [choice],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        });
        if req["kv_transfer_params"]["do_remote_decode"] == true {
            // A P/D prefill leg: where the decode backend would pull the KV cache from.
            answer["kv_transfer_params"] = serde_json::json!({"remote_engine_id": k.name});
        }
        let answer = answer.to_string();
        if fault == Mode::DieMidStream {
            // Half the body, then the connection breaks.
            k.mode.store(Mode::Down as u8, Ordering::SeqCst);
            let half = Bytes::from(answer[..answer.len() / 2].to_owned());
            // NB: the pause lets the headers and the first half reach the router.
            let parts = futures::StreamExt::chain(
                futures::stream::once(async move { Ok::<_, std::io::Error>(half) }),
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("backend killed"))
                }),
            );
            return Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(parts))
                .expect("response");
        }
        tracker.finished = true;
        return ([("content-type", "application/json")], answer).into_response();
    }
    let from = words_done(&req, is_chat);
    let max = req["max_tokens"]
        .as_u64()
        .or(req["max_completion_tokens"].as_u64())
        .unwrap_or(u64::MAX) as usize;
    let to = WORDS.len().min(from.saturating_add(max));
    let usage = req["stream_options"]["include_usage"] == true;
    let die_after = match k.die_after.load(Ordering::SeqCst) {
        0 => 2,
        n => n as usize,
    };
    let (obj, id) = if is_chat {
        ("chat.completion.chunk", format!("chatcmpl-{}", k.name))
    } else {
        ("text_completion", format!("cmpl-{}", k.name))
    };
    let created = u64::from(k.name.bytes().map(u32::from).sum::<u32>());
    let event = move |v: serde_json::Value| Bytes::from(format!("data: {v}\n\n"));
    let chunk = |i: usize| {
        let finish = (i + 1 == to).then(|| if to == WORDS.len() { "stop" } else { "length" });
        let choice = if is_chat {
            serde_json::json!({"index": 0, "delta": {"content": WORDS[i]}, "finish_reason": finish})
        } else {
            serde_json::json!({"index": 0, "text": WORDS[i], "finish_reason": finish})
        };
        event(
            serde_json::json!({"id": id, "object": obj, "created": created, "model": super::MODEL, "choices": [choice]}),
        )
    };
    let mut events: Vec<Bytes> = (from..to).map(chunk).collect();
    if usage {
        let n = to - from;
        events.push(event(serde_json::json!({"id": id, "object": obj, "created": created, "model": super::MODEL, "choices": [],
            "usage": {"prompt_tokens": 5 + from, "completion_tokens": n, "total_tokens": 5 + from + n}})));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let stream = futures::stream::unfold(
        (0usize, events.into_iter(), tracker, k),
        move |(i, mut events, mut tracker, k)| async move {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            if i == die_after {
                match mode(&k) {
                    Mode::DieMidStream => {
                        k.mode.store(Mode::Down as u8, Ordering::SeqCst);
                        let e = Err(std::io::Error::other("backend killed"));
                        return Some((e, (i + 1, events, tracker, k)));
                    }
                    Mode::ErrorEventMidStream => {
                        tracker.finished = true;
                        let e = event(
                            serde_json::json!({"error": {"message": "engine failed", "type": "InternalServerError", "code": 500}}),
                        );
                        return Some((Ok(e), (i + 1, Vec::new().into_iter(), tracker, k)));
                    }
                    Mode::StallMidStream => std::future::pending::<()>().await,
                    _ => {}
                }
            }
            match events.next() {
                Some(e) => {
                    if events.len() == 0 {
                        tracker.finished = true;
                    }
                    Some((Ok(e), (i + 1, events, tracker, k)))
                }
                None => None,
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}
