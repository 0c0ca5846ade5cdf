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
    /// Streams two chunks, then the connection breaks and the backend goes `Down`.
    DieMidStream = 3,
    /// Every endpoint, health included, answers 503.
    Down = 4,
}

#[derive(Debug, Default)]
struct Knobs {
    mode: AtomicU8,
    /// Completion requests received.
    requests: AtomicU64,
    /// Completion responses whose body was sent to the end.
    completed: AtomicU64,
    /// Completion requests whose handler or body was dropped before the end.
    cancelled: AtomicU64,
    in_flight: AtomicI64,
    chunk_delay_ms: AtomicU64,
    /// The body of the last completion request received.
    last_request: Mutex<serde_json::Value>,
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
        let knobs = Arc::new(Knobs::default());
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

    /// Completion requests received so far.
    pub fn requests(&self) -> u64 {
        self.knobs.requests.load(Ordering::SeqCst)
    }

    /// The body of the last completion request received (`null` before the first).
    pub fn last_request(&self) -> serde_json::Value {
        self.knobs
            .last_request
            .lock()
            .expect("last request")
            .clone()
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

const WORDS: [&str; 4] = ["Hello", " from", " the", " backend"];

async fn serve(k: Arc<Knobs>, body: Bytes, is_chat: bool) -> Response {
    k.requests.fetch_add(1, Ordering::SeqCst);
    k.in_flight.fetch_add(1, Ordering::SeqCst);
    let mut tracker = Tracker {
        knobs: k.clone(),
        finished: false,
    };
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    k.last_request
        .lock()
        .expect("last request")
        .clone_from(&req);
    let stream = req["stream"].as_bool().unwrap_or(false);
    let delay = Duration::from_millis(k.chunk_delay_ms.load(Ordering::SeqCst));
    match mode(&k) {
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
        Mode::Ok | Mode::DieMidStream => {}
    }
    let die = mode(&k) == Mode::DieMidStream;
    if !stream {
        tokio::time::sleep(delay).await;
        tracker.finished = true;
        let text: String = WORDS.concat();
        let choice = if is_chat {
            serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        } else {
            serde_json::json!({"index": 0, "text": text, "logprobs": null, "finish_reason": "stop"})
        };
        return Json(serde_json::json!({
            "id": "cmpl-test", "object": if is_chat { "chat.completion" } else { "text_completion" },
            "created": 0, "model": super::MODEL, "choices": [choice],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        }))
        .into_response();
    }
    let chunk = move |i: usize| {
        let choice = if is_chat {
            serde_json::json!({"index": 0, "delta": {"content": WORDS[i]}, "finish_reason": null})
        } else {
            serde_json::json!({"index": 0, "text": WORDS[i], "finish_reason": null})
        };
        let obj = if is_chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        Bytes::from(format!(
            "data: {}\n\n",
            serde_json::json!({"id": "cmpl-test", "object": obj, "created": 0, "model": super::MODEL, "choices": [choice]})
        ))
    };
    let stream = futures::stream::unfold(
        (0usize, tracker, k),
        move |(i, mut tracker, k)| async move {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            if die && i == 2 {
                k.mode.store(Mode::Down as u8, Ordering::SeqCst);
                return Some((
                    Err(std::io::Error::other("backend killed")),
                    (i + 1, tracker, k),
                ));
            }
            match i {
                _ if i < WORDS.len() => Some((Ok(chunk(i)), (i + 1, tracker, k))),
                _ if i == WORDS.len() => {
                    tracker.finished = true;
                    Some((
                        Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                        (i + 1, tracker, k),
                    ))
                }
                _ => None,
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}
