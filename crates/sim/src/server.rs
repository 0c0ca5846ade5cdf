//! The OpenAI-compatible HTTP face of a simulated backend: chat and text completions
//! (streaming and not), `/v1/models`, `/health`, `/metrics`, `/reset_prefix_cache`.
//!
//! A request is parsed, passed through fault injection, tokenized, given a deterministic
//! output (seeded by the backend seed, the request seed and the prompt), handed to the
//! engine loop and answered from the tokens the engine releases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use xxhash_rust::xxh3::xxh3_64;

use super::engine::{EngineHandle, StreamEvent};
use super::metrics::Metrics;
use super::scheduler::{SeqId, Submission, Usage};
use super::spec::{CacheModel, Faults};
use super::tokenizer::{ChatMessage, Tokenizer, render_chat};
use switchyard_openai::{Prompt, Request};

/// Longest prompt plus output a request may ask for (Llama-3.1's context).
const MAX_MODEL_LEN: usize = 131_072;

/// A failed request, answered in OpenAI's error shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid request.
    #[error("{0}")]
    BadRequest(String),
    /// Fault injection chose to fail this request.
    #[error("injected fault")]
    Injected,
    /// The engine stopped (the backend crashed or is shutting down).
    #[error("engine stopped")]
    EngineStopped,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequestError"),
            ApiError::Injected => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            ApiError::EngineStopped => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableError"),
        };
        let body =
            json!({"error": {"message": self.to_string(), "type": kind, "code": status.as_u16()}});
        (status, axum::Json(body)).into_response()
    }
}

/// State shared by the handlers of one backend.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) model: String,
    pub(crate) engine: EngineHandle,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) faults: Faults,
    pub(crate) speed: f64,
    pub(crate) seed: u64,
    pub(crate) default_max_tokens: u32,
    /// Most prompt plus output tokens one request may hold in the KV cache.
    pub(crate) max_tokens_total: usize,
    pub(crate) next_id: AtomicU64,
    pub(crate) fault_rng: std::sync::Mutex<ChaCha8Rng>,
    pub(crate) crash: watch::Sender<bool>,
    /// Host and port reported in `kv_transfer_params`.
    pub(crate) http_addr: std::net::SocketAddr,
    /// The KV cache model; a slot cache also serves llama.cpp's `/props` and `/slots`.
    pub(crate) cache: CacheModel,
}

/// The backend's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .route("/props", get(props))
        .route("/slots", get(slots))
        .with_state(shared)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Completion,
}

/// A parsed request, ready for the engine.
struct Job {
    api: Api,
    id: SeqId,
    prompt: Vec<u32>,
    output_ids: Vec<u32>,
    output_text: Vec<String>,
    stream: bool,
    include_usage: bool,
    remote_decode: bool,
    remote_prefill: bool,
    cache_salt: Option<String>,
}

async fn chat(State(app): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    generate(app, Api::Chat, body).await
}

async fn completions(State(app): State<Arc<Shared>>, body: Bytes) -> Result<Response, ApiError> {
    generate(app, Api::Completion, body).await
}

async fn models(State(app): State<Arc<Shared>>) -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": app.model, "object": "model", "owned_by": "switchyard-sim", "max_model_len": MAX_MODEL_LEN}],
    }))
}

async fn metrics(State(app): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.encode(),
    )
}

/// The slot count and context of a slot-cache backend, or 404 (a vLLM has no `/props`).
fn slot_geometry(app: &Shared) -> Result<(usize, usize), StatusCode> {
    match app.cache {
        CacheModel::Slots {
            slots,
            ctx_per_slot,
            ..
        } => Ok((slots, ctx_per_slot)),
        CacheModel::Blocks => Err(StatusCode::NOT_FOUND),
    }
}

/// llama.cpp's `/props`, the fields a router reads: `total_slots` and
/// `default_generation_settings.n_ctx` (per slot).
async fn props(State(app): State<Arc<Shared>>) -> Result<axum::Json<Value>, StatusCode> {
    let (slots, n_ctx) = slot_geometry(&app)?;
    Ok(axum::Json(json!({
        "default_generation_settings": {"n_ctx": n_ctx, "params": {}},
        "total_slots": slots,
        "model_alias": app.model,
        "model_path": app.model,
    })))
}

/// llama.cpp's `/slots`: each slot's `id`, `n_ctx` and `is_processing`.
async fn slots(State(app): State<Arc<Shared>>) -> Result<axum::Json<Value>, StatusCode> {
    let (_, n_ctx) = slot_geometry(&app)?;
    let snapshot = app
        .engine
        .snapshot()
        .await
        .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
    let slots: Vec<Value> = snapshot
        .slots_processing
        .iter()
        .enumerate()
        .map(|(id, busy)| json!({"id": id, "n_ctx": n_ctx, "is_processing": busy}))
        .collect();
    Ok(axum::Json(Value::Array(slots)))
}

async fn reset_prefix_cache(State(app): State<Arc<Shared>>) -> StatusCode {
    app.engine.reset_prefix_cache();
    StatusCode::OK
}

async fn generate(app: Arc<Shared>, api: Api, body: Bytes) -> Result<Response, ApiError> {
    let req: Request = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    app.inject_faults().await?;
    let job = app.parse(api, req)?;
    let rx = app.engine.submit(Submission {
        id: job.id,
        prompt: job.prompt.clone(),
        output: job.output_ids.clone(),
        remote_prefill: job.remote_prefill,
        cache_salt: job.cache_salt.clone(),
    });
    let guard = AbortGuard {
        engine: app.engine.clone(),
        id: job.id,
        armed: true,
    };
    if job.stream {
        Ok(Sse::new(sse_stream(app, job, rx, guard)).into_response())
    } else {
        complete(app, job, rx, guard).await
    }
}

/// Aborts the request in the engine if the client goes away first.
struct AbortGuard {
    engine: EngineHandle,
    id: SeqId,
    armed: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            self.engine.abort(self.id);
        }
    }
}

impl Shared {
    /// Applies the configured faults: crash, hang, error, added latency.
    async fn inject_faults(&self) -> Result<(), ApiError> {
        let n = self.next_id.load(Ordering::Relaxed);
        if self.faults.crash_after.is_some_and(|limit| n >= limit) {
            let _ = self.crash.send(true);
            return Err(ApiError::EngineStopped);
        }
        let (error, hang) = {
            let mut rng = self.fault_rng.lock().unwrap_or_else(|e| e.into_inner());
            (
                rng.random_bool(self.faults.error_rate),
                rng.random_bool(self.faults.hang_rate),
            )
        };
        if error {
            return Err(ApiError::Injected);
        }
        if hang {
            futures::future::pending::<()>().await;
        }
        if self.faults.added_latency_ms > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(
                self.faults.added_latency_ms / 1e3 / self.speed,
            ))
            .await;
        }
        Ok(())
    }

    /// Tokenizes the prompt and draws the output.
    fn parse(&self, api: Api, req: Request) -> Result<Job, ApiError> {
        let bad = |m: &str| ApiError::BadRequest(m.to_owned());
        let encode = |text: &str| {
            self.tokenizer
                .encode(text)
                .map_err(|e| ApiError::BadRequest(format!("{e:#}")))
        };
        let prompt = match (api, req.messages, req.prompt) {
            (Api::Chat, Some(messages), _) => {
                let messages: Vec<ChatMessage> = messages
                    .into_iter()
                    .map(|m| ChatMessage {
                        content: m.text_content(),
                        role: m.role,
                    })
                    .collect();
                encode(&render_chat(&messages))?
            }
            (Api::Chat, None, _) => return Err(bad("`messages` is required")),
            (Api::Completion, _, Some(Prompt::Tokens(ids))) => ids,
            (Api::Completion, _, Some(Prompt::TokenLists(_))) => {
                return Err(bad("a batch of prompts is not supported"));
            }
            (Api::Completion, _, Some(text)) => encode(&text.text())?,
            (Api::Completion, _, None) => return Err(bad("`prompt` is required")),
        };
        if prompt.is_empty() {
            return Err(bad("the prompt is empty"));
        }
        // NB: the router's precedence (`switchyard_openai::output_tokens`); 0 or absent
        // means the default.
        let max_tokens =
            match switchyard_openai::output_tokens(req.max_tokens, req.max_completion_tokens) {
                0 => self.default_max_tokens,
                n => n,
            };
        let total = prompt.len() + max_tokens as usize;
        let limit = self.max_tokens_total.min(MAX_MODEL_LEN);
        if total > limit {
            return Err(ApiError::BadRequest(format!(
                "this model's maximum context length is {limit} tokens; the request asks for {total}"
            )));
        }
        let prompt_hash = xxh3_64(
            &prompt
                .iter()
                .flat_map(|t| t.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ prompt_hash ^ req.seed.unwrap_or(0));
        let (output_ids, output_text) = (0..max_tokens)
            .map(|_| {
                let (id, text) = self.tokenizer.sample(&mut rng);
                (id, text.to_owned())
            })
            .unzip();
        let kv = req.kv_transfer_params.unwrap_or_default();
        Ok(Job {
            api,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            prompt,
            output_ids,
            output_text,
            stream: req.stream.unwrap_or(false),
            include_usage: req.stream_options.is_some_and(|o| o.include_usage),
            remote_decode: kv.do_remote_decode,
            remote_prefill: kv.do_remote_prefill,
            cache_salt: req.cache_salt,
        })
    }

    fn object(api: Api, chunk: bool) -> &'static str {
        match (api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completion, _) => "text_completion",
        }
    }

    fn response_id(job: &Job) -> String {
        match job.api {
            Api::Chat => format!("chatcmpl-{}", job.id),
            Api::Completion => format!("cmpl-{}", job.id),
        }
    }

    /// vLLM NixlConnector's answer to `do_remote_decode`: where the decode side pulls the
    /// prompt's KV blocks from.
    fn kv_transfer_params(&self, prompt_blocks: &[u32]) -> Value {
        json!({
            "do_remote_prefill": true,
            "do_remote_decode": false,
            "remote_block_ids": prompt_blocks,
            "remote_engine_id": self.name,
            "remote_host": self.http_addr.ip().to_string(),
            "remote_port": self.http_addr.port(),
            "tp_size": 1,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage_json(u: &Usage) -> Value {
    let wire = switchyard_openai::Usage::new(
        u.prompt_tokens as u64,
        u.cached_tokens as u64,
        u.completion_tokens as u64,
    );
    serde_json::to_value(wire).expect("usage serializes")
}

/// Answers a non-streaming request once the engine finishes it.
async fn complete(
    app: Arc<Shared>,
    job: Job,
    mut rx: mpsc::UnboundedReceiver<StreamEvent>,
    mut guard: AbortGuard,
) -> Result<Response, ApiError> {
    let (usage, prompt_blocks) = loop {
        match rx.recv().await {
            Some(StreamEvent::Tokens { .. }) => {}
            Some(StreamEvent::Finished {
                usage,
                prompt_blocks,
            }) => break (usage, prompt_blocks),
            None => return Err(ApiError::EngineStopped),
        }
    };
    guard.armed = false;
    let text: String =
        job.output_text[..usage.completion_tokens.min(job.output_text.len())].concat();
    let choice = match job.api {
        Api::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length",
        }),
        Api::Completion => json!({"index": 0, "text": text, "finish_reason": "length"}),
    };
    let mut body = json!({
        "id": Shared::response_id(&job),
        "object": Shared::object(job.api, false),
        "created": unix_now(),
        "model": app.model,
        "choices": [choice],
        "usage": usage_json(&usage),
    });
    if job.remote_decode {
        body["kv_transfer_params"] = app.kv_transfer_params(&prompt_blocks);
    }
    Ok(axum::Json(body).into_response())
}

/// The SSE events of a streaming request, one per token.
fn sse_stream(
    app: Arc<Shared>,
    job: Job,
    rx: mpsc::UnboundedReceiver<StreamEvent>,
    guard: AbortGuard,
) -> impl Stream<Item = Result<Event, std::io::Error>> {
    // NB: chunks differ only in the token text, so the JSON around it is built once.
    let head = format!(
        r#"{{"id":"{}","object":"{}","created":{},"model":{},"choices":[{{"index":0,"#,
        Shared::response_id(&job),
        Shared::object(job.api, true),
        unix_now(),
        serde_json::Value::from(app.model.as_str()),
    );
    let state = SseState {
        app,
        job,
        rx,
        guard,
        head,
        sent: 0,
        pending: Vec::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(event) = st.pending.pop() {
            return Some((Ok(event), st));
        }
        if st.done {
            return None;
        }
        match st.rx.recv().await {
            Some(StreamEvent::Tokens { through }) => {
                let data = st.content_chunk(through + 1);
                Some((Ok(Event::default().data(data)), st))
            }
            Some(StreamEvent::Finished { usage, .. }) => {
                st.guard.armed = false;
                st.done = true;
                // Events are popped from the back.
                st.pending.push(Event::default().data("[DONE]"));
                if st.job.include_usage {
                    st.pending
                        .push(Event::default().data(st.usage_chunk(&usage)));
                }
                let unsent = st.sent < usage.completion_tokens;
                let last = match st.job.api {
                    Api::Chat => {
                        format!(r#"{}"delta":{{}},"finish_reason":"length"}}]}}"#, st.head)
                    }
                    Api::Completion => {
                        format!(r#"{}"text":"","finish_reason":"length"}}]}}"#, st.head)
                    }
                };
                if unsent {
                    // Tokens held back by the stream interval go out before the end.
                    st.pending.push(Event::default().data(last));
                    let data = st.content_chunk(usage.completion_tokens);
                    return Some((Ok(Event::default().data(data)), st));
                }
                Some((Ok(Event::default().data(last)), st))
            }
            // The engine stopped: fail the body so the client sees a broken stream.
            None => Some((
                Err(std::io::Error::other("engine stopped")),
                SseState { done: true, ..st },
            )),
        }
    })
}

struct SseState {
    app: Arc<Shared>,
    job: Job,
    rx: mpsc::UnboundedReceiver<StreamEvent>,
    guard: AbortGuard,
    /// The chunk JSON up to the choice's fields.
    head: String,
    /// Output tokens already sent.
    sent: usize,
    pending: Vec<Event>,
    done: bool,
}

impl SseState {
    /// A chunk carrying the output tokens from the last one sent up to `end` (exclusive).
    fn content_chunk(&mut self, end: usize) -> String {
        let end = end.min(self.job.output_text.len()).max(self.sent);
        let text = serde_json::Value::from(self.job.output_text[self.sent..end].concat());
        let role = if self.sent == 0 && self.job.api == Api::Chat {
            r#""role":"assistant","#
        } else {
            ""
        };
        self.sent = end;
        match self.job.api {
            Api::Chat => format!(
                r#"{}"delta":{{{role}"content":{text}}},"finish_reason":null}}]}}"#,
                self.head
            ),
            Api::Completion => format!(r#"{}"text":{text},"finish_reason":null}}]}}"#, self.head),
        }
    }

    fn usage_chunk(&self, usage: &Usage) -> String {
        json!({
            "id": Shared::response_id(&self.job),
            "object": Shared::object(self.job.api, true),
            "created": unix_now(),
            "model": self.app.model,
            "choices": [],
            "usage": usage_json(usage),
        })
        .to_string()
    }
}
